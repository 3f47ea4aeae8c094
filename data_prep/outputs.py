"""The build's files beside the shards, and its summary: labels.txt,
stats.json, manifest.json and manifest_files.tsv, all written atomically.

Paths in them are escaped text (`data_prep.names`): lossless, one line each.
"""

from __future__ import annotations

import collections
import dataclasses
import json
import os
from typing import TextIO

from alexnet_tf import fileio
from alexnet_tf.data import records
from alexnet_tf.data.dataset_stats import STATS_FILENAME, rgb_stats_to_json, split_counts_to_json
from alexnet_tf.data.labels import LABELS_FILENAME
from alexnet_tf.data.records_check import MANIFEST_FILENAME
from data_prep import duplicates, layouts, stats, writer
from data_prep.names import escape, printable

FILES_FILENAME = "manifest_files.tsv"
NAMES = (MANIFEST_FILENAME, FILES_FILENAME, LABELS_FILENAME, STATS_FILENAME)


@dataclasses.dataclass
class BuildSummary:
    output_dir: str
    layout: str
    found: int
    written: int
    skipped: list[tuple[str, str, str]]  # (split, escaped path, reason)
    per_split: dict[str, dict[str, int]]  # split -> {"found", "written", "skipped"}
    shards_written: int
    shards_kept: int
    seconds: float
    images_per_second: float  # over the images converted in this run
    leaks: list[duplicates.Leak] = dataclasses.field(default_factory=list)  # train = validation
    on_leak: str = duplicates.DEFAULT_ON_LEAK  # what was done with them
    duplicates: dict[str, list[list[str]]] = dataclasses.field(default_factory=dict)  # kept

    @property
    def ok(self) -> bool:
        return not self.skipped


def split_of(prefix: str) -> str:
    return layouts.TRAIN if prefix == records.TRAIN_PREFIX else layouts.VALIDATION


def finish(config, listing: layouts.Listing, results: list[writer.ShardResult],
           about: dict, leaks: list[duplicates.Leak]) -> tuple[list, dict, dict]:
    """Writes labels.txt, stats.json, the TSV and the manifest (`about`: the
    build's settings, recorded as they are; `leaks`: inputs in both splits).
    Returns (skipped, per_split, duplicates within a split)."""
    out = config.output_dir
    results.sort(key=lambda r: (r.prefix != records.TRAIN_PREFIX, r.name))
    skipped = list(listing.problems)
    per_split = {split: {"found": listing.found_in(split), "written": 0, "skipped": 0}
                 for split in dict.fromkeys([*listing.splits, *(s for s, _, _ in skipped)])}
    for split, _, _ in skipped:
        per_split[split]["skipped"] += 1
    class_counts = {split: collections.Counter() for split in per_split}
    moments = stats.PixelMoments()
    for r in results:
        split = split_of(r.prefix)
        per_split[split]["written"] += r.records
        per_split[split]["skipped"] += len(r.skipped)
        class_counts[split].update(r.class_counts)
        skipped += [(split, p, reason) for p, reason in r.skipped]
        if r.moments is not None:
            moments.merge(r.moments)

    listing.label_map.write(os.path.join(out, LABELS_FILENAME))
    _write_stats(config, listing, per_split, class_counts, moments)
    _write_files_tsv(out, listing, results)
    repeated = duplicates.within_splits(
        [(split_of(r.prefix), writer.part_path(out, r.name)) for r in results])
    manifest = {
        **about, "layout": listing.layout, "input_dir": escape(os.path.abspath(config.input_dir)),
        "found": listing.found, "written": sum(r.records for r in results),
        "skipped": len(skipped), "per_split": per_split,
        "shards": [{"name": r.name, "records": r.records, "bytes": r.bytes,
                    "sha256": r.sha256} for r in results],
        "skipped_files": [{"split": s, "path": p, "reason": reason}
                          for s, p, reason in skipped],
        "on_leak": config.on_leak,
        "leaks": duplicates.leaks_to_json(leaks, config.on_leak),
        "duplicates": duplicates.duplicates_to_json(repeated),
        "files": FILES_FILENAME,
    }
    fileio.write_json(os.path.join(out, MANIFEST_FILENAME), manifest)
    return skipped, per_split, repeated


def _write_stats(config, listing: layouts.Listing, per_split: dict, class_counts: dict,
                 moments: stats.PixelMoments) -> None:
    stats_json = {
        "image_size": config.image_size,
        "splits": {split: split_counts_to_json(
            per_split[split]["written"],
            {w: class_counts[split].get(w, 0) for w in listing.label_map.wnids})
                   for split in per_split},
        "num_classes": len(listing.label_map),
    }
    if moments.count >= 2:
        stats_json["rgb"] = rgb_stats_to_json(moments.rgb_stats())
        stats_json["rgb"]["pixels_sampled"] = moments.count
        stats_json["rgb"]["sampling"] = (
            f"training images as stored ({config.image_size}x{config.image_size}, before "
            f"JPEG encoding), every {config.pixel_stride}th row and column")
    fileio.write_json(os.path.join(config.output_dir, STATS_FILENAME), stats_json)


def _write_files_tsv(out: str, listing: layouts.Listing,
                     results: list[writer.ShardResult]) -> None:
    """One line per entry found: split, shard (or -), status, path, reason;
    streamed from the `.parts` records, shard by shard."""
    with fileio.atomic_path(os.path.join(out, FILES_FILENAME)) as tmp:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write("split\tshard\tstatus\tpath\treason\n")
            for split, p, reason in listing.problems:
                f.write(f"{split}\t-\tskipped\t{p}\t{_field(reason)}\n")
            for r in results:
                with open(writer.part_path(out, r.name), encoding="utf-8") as part:
                    full = json.load(part)
                split = split_of(r.prefix)
                for p in full["converted"]:
                    f.write(f"{split}\t{r.name}\tconverted\t{p}\t\n")
                for p, reason in full["skipped"]:
                    f.write(f"{split}\t{r.name}\tskipped\t{p}\t{_field(reason)}\n")


def _field(text: str) -> str:
    """Reasons are prose (paths in them are escaped already): one TSV field."""
    return printable(text)


def print_summary(summary: BuildSummary, log: TextIO) -> None:
    print(f"found {summary.found} = written {summary.written} + skipped "
          f"{len(summary.skipped)}; shards: {summary.shards_written} written, "
          f"{summary.shards_kept} kept from an earlier run; {summary.seconds:.1f} s, "
          f"{summary.images_per_second:.0f} images/s", file=log)
    for split, counts in summary.per_split.items():
        print(f"  {split}: found {counts['found']}, written {counts['written']}, "
              f"skipped {counts['skipped']}", file=log)
    for split, path, reason in summary.skipped[:20]:
        print(f"  skipped ({split}) {path}: {reason}", file=log)
    if len(summary.skipped) > 20:
        print(f"  ... and {len(summary.skipped) - 20} more: see {MANIFEST_FILENAME}", file=log)
    duplicates.print_findings(summary.leaks, summary.on_leak, summary.duplicates, log)
    log.flush()

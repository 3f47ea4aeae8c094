r"""Builds the TFRecord shards of an image dataset, the paper's way (section 2).

    python -m data_prep.build_tfrecords --input_dir=/data/imagenet --output_dir=/data/records

Every image is converted to RGB, its shorter side scaled to --image_size
(antialiased), centre-cropped to --image_size squared and stored as JPEG in
`train-?????-of-NNNNN` / `validation-?????-of-NNNNN` shards (schema:
`alexnet_tf.records`). Also written: `labels.txt`, `stats.json` (counts per
split and class, mean RGB and RGB PCA of the training pixels) and
`manifest.json` + `manifest_files.tsv` (per shard: count, bytes, sha256; per
input file: converted or skipped, and why).

Interrupt it at any moment and run the same command again: complete shards
are kept, the rest are redone. `--overwrite` rebuilds everything.

Memory: pixels are streamed, one image at a time per worker; what grows with
the dataset is only the parent's list of input names (about 250 bytes per
image, some 320 MB for ILSVRC-2012's 1.28 million), needed to shuffle the
training images across shards.
"""

from __future__ import annotations

import collections
import concurrent.futures
import dataclasses
import glob
import json
import multiprocessing
import os
import shutil
import sys
import time
from typing import TextIO

from absl import app, flags

from alexnet_tf.data import records
from alexnet_tf.data.dataset_stats import STATS_FILENAME, rgb_stats_to_json, split_counts_to_json
from alexnet_tf.data.labels import LABELS_FILENAME
from data_prep import convert, layouts, sharding, stats, writer

MANIFEST_FILENAME = "manifest.json"
FILES_FILENAME = "manifest_files.tsv"
CONFIG_FILENAME = "config.json"  # inside writer.PARTS_DIR


class BuildError(ValueError):
    """Bad settings, or an output folder this build must not touch."""


@dataclasses.dataclass(frozen=True)
class BuildConfig:
    """The tool's settings; the absl flags map one to one onto these fields."""

    input_dir: str
    output_dir: str
    layout: str = "auto"
    train_shards: int = 1024
    validation_shards: int = 128
    num_workers: int = 0  # 0: one per CPU core
    image_size: int = convert.DEFAULT_SIZE
    quality: int = convert.DEFAULT_QUALITY
    strict: bool = False
    overwrite: bool = False
    seed: int = sharding.DEFAULT_SEED
    pixel_stride: int = stats.DEFAULT_PIXEL_STRIDE
    max_pixels: int = convert.DEFAULT_MAX_PIXELS
    progress_seconds: float = 0.0  # 0: every second on a terminal, every 15 s otherwise
    # Fewer images than this per worker: use fewer workers (starting the
    # worker processes costs seconds, more than converting a small dataset).
    min_images_per_worker: int = 500

    def settings(self) -> writer.ConvertSettings:
        return writer.ConvertSettings(self.image_size, self.quality, self.max_pixels,
                                      self.pixel_stride)

    def validate(self) -> None:
        if not 1 <= self.quality <= 100:
            raise BuildError(f"--quality must be in 1..100, got {self.quality}")
        if self.image_size < 1:
            raise BuildError(f"--image_size must be positive, got {self.image_size}")
        if self.train_shards < 1 or self.validation_shards < 1:
            raise BuildError("--train_shards and --validation_shards must be >= 1")
        if self.num_workers < 0:
            raise BuildError(f"--num_workers must be >= 0, got {self.num_workers}")
        if self.pixel_stride < 1:
            raise BuildError(f"--pixel_stride must be >= 1, got {self.pixel_stride}")


@dataclasses.dataclass
class BuildSummary:
    output_dir: str
    layout: str
    found: int
    written: int
    skipped: list[tuple[str, str, str]]  # (split, path, reason)
    per_split: dict[str, dict[str, int]]  # split -> {"found", "written", "skipped"}
    shards_written: int
    shards_kept: int
    seconds: float
    images_per_second: float  # over the images converted in this run

    @property
    def ok(self) -> bool:
        return not self.skipped


def build(config: BuildConfig, log: TextIO | None = None) -> BuildSummary:
    """Runs the whole build; returns the summary (also printed to `log`)."""
    log = log if log is not None else sys.stderr
    config.validate()
    start = time.monotonic()
    listing = layouts.list_inputs(config.input_dir, config.layout)
    os.makedirs(config.output_dir, exist_ok=True)
    if config.overwrite:
        _remove_outputs(config.output_dir)
    _check_same_build(config, listing.layout)

    plans = _plan(listing, config)
    tasks = [writer.ShardTask(p, config.output_dir, config.settings(), listing.label_map,
                              collect_stats=p.prefix == records.TRAIN_PREFIX) for p in plans]
    _remove_strays(config.output_dir)
    print(f"{listing.layout}: {listing.found} files found "
          + ", ".join(f"{split} {len(files)}" for split, files in listing.splits.items())
          + f", {len(listing.label_map)} classes -> {len(tasks)} shards in {config.output_dir}",
          file=log, flush=True)

    progress = _Progress(sum(len(t.plan.files) for t in tasks), log, config.progress_seconds)
    results = _run(tasks, _num_workers(config, progress.total), progress)
    progress.finish()

    summary = _finish(config, listing, results, time.monotonic() - start, progress)
    _print_summary(summary, log)
    return summary


# ---------------------------------------------------------------- planning

def _plan(listing: layouts.Listing, config: BuildConfig) -> list[sharding.ShardPlan]:
    plans = []
    if layouts.TRAIN in listing.splits:
        plans += sharding.plan_shards(listing.splits[layouts.TRAIN], records.TRAIN_PREFIX,
                                      config.train_shards, shuffle=True, seed=config.seed)
    if layouts.VALIDATION in listing.splits:
        plans += sharding.plan_shards(listing.splits[layouts.VALIDATION],
                                      records.VALIDATION_PREFIX, config.validation_shards,
                                      shuffle=False)
    return plans


def _build_identity(config: BuildConfig, layout: str) -> dict:
    """What must match for an earlier run's shards to be reusable."""
    return {"input_dir": os.path.abspath(config.input_dir), "layout": layout,
            "train_shards": config.train_shards,
            "validation_shards": config.validation_shards, "seed": config.seed,
            "settings": json.loads(config.settings().key())}


def _check_same_build(config: BuildConfig, layout: str) -> None:
    """Refuses to mix with an earlier build of other settings (whose shard
    names could differ and linger); records this build's identity."""
    parts = os.path.join(config.output_dir, writer.PARTS_DIR)
    path = os.path.join(parts, CONFIG_FILENAME)
    identity = _build_identity(config, layout)
    existing_shards = _our_shards(config.output_dir)
    if os.path.exists(path):
        with open(path, encoding="utf-8") as f:
            earlier = json.load(f)
        if earlier != identity:
            diffs = [k for k in identity if earlier.get(k) != identity[k]]
            raise BuildError(
                f"{config.output_dir} holds a build with other settings "
                f"({', '.join(diffs)} differ): pass --overwrite to rebuild it")
    elif existing_shards:
        raise BuildError(f"{config.output_dir} already holds shards of an unknown build "
                         f"(e.g. {os.path.basename(existing_shards[0])}): pass --overwrite")
    os.makedirs(parts, exist_ok=True)
    writer.write_json_atomic(path, identity)


def _our_shards(output_dir: str) -> list[str]:
    return sorted(glob.glob(records.shard_pattern(output_dir, records.TRAIN_PREFIX))
                  + glob.glob(records.shard_pattern(output_dir, records.VALIDATION_PREFIX)))


def _remove_strays(output_dir: str) -> None:
    """Temporary files of killed runs."""
    for pattern in (records.TRAIN_PREFIX, records.VALIDATION_PREFIX):
        for tmp in glob.glob(records.shard_pattern(output_dir, pattern) + writer.TMP_SUFFIX):
            os.remove(tmp)


def _remove_outputs(output_dir: str) -> None:
    """--overwrite: removes what this tool writes, and nothing else."""
    for path in _our_shards(output_dir):
        os.remove(path)
    shutil.rmtree(os.path.join(output_dir, writer.PARTS_DIR), ignore_errors=True)
    for name in (MANIFEST_FILENAME, FILES_FILENAME, LABELS_FILENAME, STATS_FILENAME):
        if os.path.exists(os.path.join(output_dir, name)):
            os.remove(os.path.join(output_dir, name))


# ---------------------------------------------------------------- running

def _num_workers(config: BuildConfig, num_images: int) -> int:
    workers = config.num_workers or os.cpu_count() or 1
    if config.min_images_per_worker > 0:
        workers = min(workers, max(1, num_images // config.min_images_per_worker))
    return workers


def _run(tasks: list[writer.ShardTask], num_workers: int,
         progress: "_Progress") -> list[writer.ShardResult]:
    """Produces every shard, in worker processes when num_workers > 1.

    Results lose their per-file lists as they arrive (they stay on disk in
    the `.parts` records), so the parent's memory does not grow with them.
    """
    results = []
    if num_workers == 1 or len(tasks) <= 1:
        for task in tasks:
            result = writer.produce_shard(task, progress.tick)
            progress.shard_done(task, result)
            results.append(_slim(result))
        return results
    # A fork server imports TensorFlow (for the record writer) once and forks
    # every worker from that clean process: no per-worker import, and no fork
    # of a parent whose TensorFlow runtime may already be running threads.
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(["data_prep.writer"])
    counter = context.Value("q", 0)
    with concurrent.futures.ProcessPoolExecutor(
            max_workers=min(num_workers, len(tasks)), mp_context=context,
            initializer=writer.init_worker, initargs=(counter,)) as pool:
        pending = {pool.submit(writer.produce_shard, t, writer.count_image): t
                   for t in tasks}
        try:
            while pending:
                done, _ = concurrent.futures.wait(
                    pending, timeout=0.5, return_when=concurrent.futures.FIRST_COMPLETED)
                progress.update(counter.value)
                for future in done:
                    task = pending.pop(future)
                    result = future.result()
                    progress.shard_done(task, result)
                    results.append(_slim(result))
        except BaseException:
            for future in pending:
                future.cancel()
            raise
    return results


def _slim(result: writer.ShardResult) -> writer.ShardResult:
    return dataclasses.replace(result, converted=[])


class _Progress:
    """A throttled one-line progress report with images/s and ETA."""

    def __init__(self, total: int, log: TextIO, every: float):
        self.total, self.log = total, log
        self.tty = hasattr(log, "isatty") and log.isatty()
        self.every = every or (1.0 if self.tty else 15.0)
        self.start = self.last = time.monotonic()
        self.converted = 0  # images processed in this run
        self.kept = 0  # images in shards kept from an earlier run
        self.shards = 0
        self._local = 0

    def tick(self) -> None:
        self._local += 1
        self.update(self._local)

    def update(self, processed: int) -> None:
        self.converted = processed
        now = time.monotonic()
        if now - self.last >= self.every:
            self.last = now
            self._print(now)

    def shard_done(self, task: writer.ShardTask, result: writer.ShardResult) -> None:
        self.shards += 1
        if result.kept:
            self.kept += len(task.plan.files)

    def _print(self, now: float, end: str = "") -> None:
        elapsed = max(now - self.start, 1e-9)
        rate = self.converted / elapsed
        remaining = max(self.total - self.kept - self.converted, 0)
        eta = remaining / rate if rate > 0 else float("inf")
        line = (f"{self.converted + self.kept}/{self.total} images "
                f"({self.kept} kept), {self.shards} shards done, {rate:.0f} images/s, "
                f"ETA {_duration(eta)}")
        if self.tty:
            print("\r" + line.ljust(100), end=end, file=self.log, flush=True)
        else:
            print(line, file=self.log, flush=True)

    def finish(self) -> None:
        self._print(time.monotonic(), end="\n")

    @property
    def rate(self) -> float:
        return self.converted / max(time.monotonic() - self.start, 1e-9)


def _duration(seconds: float) -> str:
    if seconds == float("inf"):
        return "?"
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


# ---------------------------------------------------------------- outputs

def _finish(config: BuildConfig, listing: layouts.Listing,
            results: list[writer.ShardResult], seconds: float,
            progress: _Progress) -> BuildSummary:
    """Writes labels.txt, stats.json and the manifest; builds the summary."""
    out = config.output_dir
    results.sort(key=lambda r: (r.prefix != records.TRAIN_PREFIX, r.name))
    skipped = [(s, p, r) for s, p, r in listing.problems]
    per_split: dict[str, dict[str, int]] = {}
    class_counts: dict[str, collections.Counter] = {}
    moments = stats.PixelMoments()
    for split in listing.splits:
        per_split[split] = {"found": len(listing.splits[split]), "written": 0, "skipped": 0}
        class_counts[split] = collections.Counter()
    for split, _, _ in listing.problems:
        per_split.setdefault(split, {"found": 0, "written": 0, "skipped": 0})
        per_split[split]["found"] += 1
        per_split[split]["skipped"] += 1
    for r in results:
        split = _split_of(r.prefix)
        per_split[split]["written"] += r.records
        per_split[split]["skipped"] += len(r.skipped)
        class_counts[split].update(r.class_counts)
        skipped += [(split, p, reason) for p, reason in r.skipped]
        if r.moments is not None:
            moments.merge(r.moments)

    listing.label_map.write(os.path.join(out, LABELS_FILENAME))
    stats_json = {
        "image_size": config.image_size,
        "splits": {split: split_counts_to_json(
            per_split[split]["written"],
            {w: class_counts.get(split, {}).get(w, 0) for w in listing.label_map.wnids})
                   for split in per_split},
        "num_classes": len(listing.label_map),
    }
    if moments.count >= 2:
        stats_json["rgb"] = rgb_stats_to_json(moments.rgb_stats())
        stats_json["rgb"]["pixels_sampled"] = moments.count
        stats_json["rgb"]["sampling"] = (
            f"training images as stored ({config.image_size}x{config.image_size}, before "
            f"JPEG encoding), every {config.pixel_stride}th row and column")
    writer.write_json_atomic(os.path.join(out, STATS_FILENAME), stats_json, indent=1)

    _write_files_tsv(out, listing, results)
    manifest = {
        "layout": listing.layout, "input_dir": os.path.abspath(config.input_dir),
        "settings": json.loads(config.settings().key()), "seed": config.seed,
        "found": listing.found, "written": sum(r.records for r in results),
        "skipped": len(skipped), "per_split": per_split,
        "shards": [{"name": r.name, "records": r.records, "bytes": r.bytes,
                    "sha256": r.sha256} for r in results],
        "skipped_files": [{"split": s, "path": p, "reason": reason}
                          for s, p, reason in skipped],
        "files": FILES_FILENAME,
    }
    writer.write_json_atomic(os.path.join(out, MANIFEST_FILENAME), manifest, indent=1)
    return BuildSummary(
        output_dir=out, layout=listing.layout, found=listing.found,
        written=manifest["written"], skipped=skipped, per_split=per_split,
        shards_written=sum(not r.kept for r in results),
        shards_kept=sum(r.kept for r in results), seconds=seconds,
        images_per_second=progress.rate)


def _split_of(prefix: str) -> str:
    return layouts.TRAIN if prefix == records.TRAIN_PREFIX else layouts.VALIDATION


def _write_files_tsv(out: str, listing: layouts.Listing,
                     results: list[writer.ShardResult]) -> None:
    """One line per input file: split, shard (or -), status, path, reason;
    streamed from the `.parts` records, shard by shard."""
    path = os.path.join(out, FILES_FILENAME)
    with open(path + writer.TMP_SUFFIX, "w", encoding="utf-8") as f:
        f.write("split\tshard\tstatus\tpath\treason\n")
        for split, p, reason in listing.problems:
            f.write(f"{split}\t-\tskipped\t{_tsv(p)}\t{_tsv(reason)}\n")
        for r in results:
            with open(writer.part_path(out, r.name), encoding="utf-8") as part:
                full = json.load(part)
            split = _split_of(r.prefix)
            for p in full["converted"]:
                f.write(f"{split}\t{r.name}\tconverted\t{_tsv(p)}\t\n")
            for p, reason in full["skipped"]:
                f.write(f"{split}\t{r.name}\tskipped\t{_tsv(p)}\t{_tsv(reason)}\n")
    os.replace(path + writer.TMP_SUFFIX, path)


def _tsv(text: str) -> str:
    return text.replace("\t", " ").replace("\n", " ")


def _print_summary(summary: BuildSummary, log: TextIO) -> None:
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
    log.flush()


# ---------------------------------------------------------------- command line

FLAGS = flags.FLAGS


def define_flags() -> None:
    """The command line's flags: defined only when run as a program, so
    importing this module (the quickstart does) adds no global flags."""
    flags.DEFINE_string("input_dir", None, "Folder holding the dataset in one of the layouts.")
    flags.DEFINE_string("output_dir", None, "Folder for the shards, labels.txt, stats.json, manifest.")
    flags.DEFINE_enum("layout", "auto", ("auto",) + layouts.LAYOUTS,
                      "Input layout; auto detects it from the folder's contents.")
    flags.DEFINE_integer("train_shards", 1024, "Number of training shards.")
    flags.DEFINE_integer("validation_shards", 128, "Number of validation shards.")
    flags.DEFINE_integer("num_workers", 0, "Worker processes; 0 = one per CPU core.")
    flags.DEFINE_integer("quality", convert.DEFAULT_QUALITY, "JPEG quality of the stored images (1-100).")
    flags.DEFINE_integer("image_size", convert.DEFAULT_SIZE,
                         "Stored image side: shorter side scaled to this, then centre-cropped square.")
    flags.DEFINE_boolean("strict", False, "Exit non-zero if any input file was skipped.")
    flags.DEFINE_boolean("overwrite", False, "Rebuild from scratch instead of resuming.")
    flags.DEFINE_integer("seed", sharding.DEFAULT_SEED, "Seed of the training shuffle across shards.")
    flags.DEFINE_integer("pixel_stride", stats.DEFAULT_PIXEL_STRIDE,
                         "RGB statistics sample every Nth row and column of each training image.")
    flags.DEFINE_integer("max_pixels", convert.DEFAULT_MAX_PIXELS,
                         "Decompression-bomb guard: images with more pixels are skipped.")
    flags.DEFINE_integer("min_images_per_worker", 500,
                         "Use fewer workers when each would get fewer images than this "
                         "(starting a worker costs seconds); 0 = always --num_workers.")
    flags.DEFINE_float("progress_seconds", 0.0,
                       "Seconds between progress lines; 0 = 1 on a terminal, 15 otherwise.")
    flags.mark_flags_as_required(["input_dir", "output_dir"])


def config_from_flags() -> BuildConfig:
    return BuildConfig(**{f.name: getattr(FLAGS, f.name)
                          for f in dataclasses.fields(BuildConfig)})


def main(argv) -> int:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    try:
        summary = build(config_from_flags())
    except (layouts.LayoutError, BuildError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if FLAGS.strict and not summary.ok:
        print(f"--strict: {len(summary.skipped)} input files were skipped", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    define_flags()
    app.run(main)

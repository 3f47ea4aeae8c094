"""Images that are in the data set twice: in train and in validation (a
leak, which inflates validation accuracy), or twice within one split.

Leaks are found before any shard is planned (`find_leaks`), since dropping
one changes the training shards:
- the same file: one (device, inode) in both splits, whatever the names (a
  hard link, links to one file, a file in one split and a link in the other);
- the same bytes: equal SHA-256 of the image's bytes (a copy, an archive
  member equal to a file). Equal bytes have equal sizes, so only the inputs
  whose size occurs in both splits are read for it, in threads (hashing and
  reading release the GIL): one extra read of those inputs, no other.
`--on_leak` decides (`apply`): drop_from_train (the default: the training
copy is listed as skipped, with the validation file it equals), fail (one
line naming the first pair, nothing written), or report (both kept).
Either way every pair is in the summary and manifest.json. The decision is
taken again, from the same files, by a resumed build: the same files give
the same decision, hence the same training shards (a file changed since
changes its shard, as any input does).

Within a split, duplicates are counted and listed, never dropped (ILSVRC-2012's
training set holds some): each worker takes the SHA-256 of the bytes it
converts anyway (`writer.write_shard`), kept in the shard's `.parts` record
(so a kept shard needs no reread); `within_splits` groups them after the
build, two passes over the records holding only a 64-bit prefix per image.
"""

from __future__ import annotations

import collections
import dataclasses
import hashlib
import json
import os
import threading
from typing import Sequence, TextIO

import numpy as np

from data_prep.output_dir import BuildError
from data_prep.sources import TRAIN, VALIDATION, Listing, SourceFile

ON_LEAK = ("drop_from_train", "fail", "report")
DEFAULT_ON_LEAK = "drop_from_train"
ANNOUNCE_READS = 1000  # a leak check reading this many inputs says so first (it takes a while)


@dataclasses.dataclass(frozen=True)
class Leak:
    """A training input equal to a validation input (escaped paths)."""

    train: str
    validation: str
    same: str  # "file" (one inode) or "bytes" (equal SHA-256)


def content_sha256(data: bytes) -> str:
    """The digest both checks compare: SHA-256 of an input's bytes, as read."""
    return hashlib.sha256(data).hexdigest()


def find_leaks(listing: Listing, threads: int, log: TextIO | None = None) -> list[Leak]:
    """Every training input that is also a validation input, in listing order."""
    train, val = listing.splits.get(TRAIN, []), listing.splits.get(VALIDATION, [])
    if not train or not val:
        return []
    val_files: dict[tuple[int, int], SourceFile] = {}
    for f in val:
        if f.file_id is not None:
            val_files.setdefault(f.file_id, f)
    same_file = {f: val_files[f.file_id] for f in train
                 if f.file_id is not None and f.file_id in val_files}
    val_sizes = {f.content_size for f in val}
    train_candidates = [f for f in train
                        if f not in same_file and f.content_size in val_sizes]
    train_sizes = {f.content_size for f in train_candidates}
    val_candidates = [f for f in val if f.content_size in train_sizes]
    to_read = val_candidates + train_candidates
    if len(to_read) >= ANNOUNCE_READS and log is not None:
        megabytes = sum(f.content_size for f in to_read) / 2**20
        print(f"leak check: reading {len(to_read)} inputs whose size occurs in both splits "
              f"({megabytes:.0f} MiB)", file=log, flush=True)
    digests = _digests(to_read, threads)
    first_val: dict[str, SourceFile] = {}
    for f, digest in zip(val_candidates, digests):
        if digest is not None:
            first_val.setdefault(digest, f)
    same_bytes = {f: first_val[d] for f, d in zip(train_candidates, digests[len(val_candidates):])
                  if d is not None and d in first_val}
    leaks = []
    for f in train:
        if f in same_file:
            leaks.append(Leak(f.display, same_file[f].display, "file"))
        elif f in same_bytes:
            leaks.append(Leak(f.display, same_bytes[f].display, "bytes"))
    return leaks


def _digests(files: Sequence[SourceFile], threads: int) -> list[str | None]:
    """`content_sha256` of each input (None if it cannot be read: its
    conversion will say why), `threads` at a time; an interrupt stops them
    after their current file."""
    out: list[str | None] = [None] * len(files)
    stop = threading.Event()
    threads = max(1, min(threads, len(files)))

    def work(start: int) -> None:
        for i in range(start, len(files), threads):
            if stop.is_set():
                return
            try:
                out[i] = content_sha256(files[i].read())
            except Exception:  # noqa: BLE001 - unreadable now: the build reports it
                out[i] = None

    workers = [threading.Thread(target=work, args=(k,), daemon=True,
                                name=f"data_prep-leak-check-{k}") for k in range(threads)]
    for t in workers:
        t.start()
    try:
        for t in workers:
            t.join()
    except BaseException:
        stop.set()
        for t in workers:
            t.join()
        raise
    return out


def leak_reason(leak: Leak) -> str:
    same = "the same file as" if leak.same == "file" else "the same bytes as"
    return (f"{same} validation's {leak.validation}: dropped from train "
            "(--on_leak=drop_from_train)")


def apply(listing: Listing, leaks: list[Leak], on_leak: str) -> None:
    """Carries out `--on_leak`: drop the training copies (listed as skipped,
    with their reason), fail in one line, or keep both (report)."""
    if not leaks or on_leak == "report":
        return
    if on_leak == "fail":
        first = leaks[0]
        raise BuildError(
            f"{len(leaks)} training input(s) are also in validation, e.g. {first.train} "
            f"is the same {first.same} as {first.validation} (--on_leak=fail; "
            "drop_from_train drops them, report keeps and lists them)")
    dropped = {leak.train: leak for leak in leaks}
    listing.splits[TRAIN] = [f for f in listing.splits[TRAIN] if f.display not in dropped]
    listing.problems.extend((TRAIN, leak.train, leak_reason(leak)) for leak in leaks)


def leaks_to_json(leaks: list[Leak], on_leak: str) -> list[dict]:
    action = "kept in both (--on_leak=report)" if on_leak == "report" else "dropped from train"
    return [{"train": leak.train, "validation": leak.validation, "same": leak.same,
             "action": action} for leak in leaks]


# ---------------------------------------------------------------- within a split

def within_splits(parts: Sequence[tuple[str, str]]) -> dict[str, list[list[str]]]:
    """Groups of equal inputs written into the same split, from the shards'
    records: `parts` lists (split, path of a `.parts` record). Returns
    split -> groups (each a sorted list of escaped paths, 2 or more),
    sorted by first path; only splits with duplicates appear."""
    prefixes: dict[str, list[np.ndarray]] = collections.defaultdict(list)
    for split, path in parts:
        digests = _read_part(path)[1]
        prefixes[split].append(np.fromiter((int(d[:16], 16) for d in digests), np.uint64,
                                           len(digests)))
    repeated = {}
    for split, arrays in prefixes.items():
        values, counts = np.unique(np.concatenate(arrays), return_counts=True)
        repeated[split] = set(values[counts > 1].tolist())
    groups: dict[str, dict[str, list[str]]] = collections.defaultdict(
        lambda: collections.defaultdict(list))
    for split, path in parts:
        if not repeated[split]:
            continue
        converted, digests = _read_part(path)
        for name, digest in zip(converted, digests):
            if int(digest[:16], 16) in repeated[split]:
                groups[split][digest].append(name)
    return {split: sorted(sorted(g) for g in by_digest.values() if len(g) > 1)
            for split, by_digest in groups.items()
            if any(len(g) > 1 for g in by_digest.values())}


def _read_part(path: str) -> tuple[list[str], list[str]]:
    with open(path, encoding="utf-8") as f:
        record = json.load(f)
    return record["converted"], record.get("digests", [])


def duplicates_to_json(groups: dict[str, list[list[str]]]) -> dict:
    return {split: {"groups": len(g), "files": sum(map(len, g)), "sets": g}
            for split, g in groups.items()}


def print_findings(leaks: list[Leak], on_leak: str, groups: dict[str, list[list[str]]],
                   log: TextIO, most: int = 10) -> None:
    """The summary's lines on leaks and duplicates (all of them in the manifest)."""
    if leaks:
        files = sum(leak.same == "file" for leak in leaks)
        action = ("kept in both splits (--on_leak=report)" if on_leak == "report"
                  else "dropped from train")
        print(f"  leak: {len(leaks)} training input(s) also in validation ({files} the same "
              f"file, {len(leaks) - files} the same bytes): {action}", file=log)
        for leak in leaks[:most]:
            print(f"    {leak.train} = {leak.validation} (same {leak.same})", file=log)
        if len(leaks) > most:
            print(f"    ... and {len(leaks) - most} more: see manifest.json", file=log)
    for split, g in groups.items():
        print(f"  duplicates within {split} (all kept): {len(g)} group(s) of equal bytes, "
              f"{sum(map(len, g))} files", file=log)
        for group in g[:most]:
            shown = " = ".join(group[:3]) + (f" (+{len(group) - 3} more)" if len(group) > 3
                                             else "")
            print(f"    {shown}", file=log)
        if len(g) > most:
            print(f"    ... and {len(g) - most} more groups: see manifest.json", file=log)


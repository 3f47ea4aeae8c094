"""Training's check of a records folder before anything is written.

Data prep finishes a build by writing manifest.json (per shard: records,
bytes, sha256) and stats.json (the training set's mean, std and PCA). A
folder missing shards, or either file, is an incomplete or foreign build:
training on it would silently use fewer images or the wrong statistics.
Records made by other tools have neither file; they train only when asked
to use the published ILSVRC-2012 statistics (`published_stats`), and then
each split's `-of-N` shard set must hold every index 0..N-1. Data prep
removes the manifest when a build starts; a folder with its `.parts/` but
no manifest is its unfinished build (old and new shards mixed) and is
refused even with `published_stats`. Training validates at each epoch end,
so the validation split must be there too, and labels.txt must name at
least two classes.
"""

from __future__ import annotations

import collections
import hashlib
import json
import os
import re

from alexnet_tf.data import records
from alexnet_tf.data.dataset_stats import STATS_FILENAME
from alexnet_tf.data.labels import LABELS_FILENAME, LabelMap
from alexnet_tf.errors import InputError

# The folder's contract with data prep, which imports these names: a finished
# build has a manifest; every build keeps its per-shard records in PARTS_DIR.
MANIFEST_FILENAME = "manifest.json"
PARTS_DIR = ".parts"
_HASH_BLOCK = 8 << 20
_SHARD_NAME = re.compile(r"^(?P<split>[a-z]+)-(?P<index>\d{5})-of-(?P<count>\d{5})$")
_SHOWN = 5


class RecordsError(InputError):
    """The records folder is incomplete, changed since it was built, or foreign."""


def check_records_dir(data_dir: str, *, verify_sha256: bool = False,
                      published_stats: bool = False, require_validation: bool = True,
                      partial_shard_sets: bool = False) -> dict:
    """Refuses a records folder that is not a complete data prep build.

    Returns the manifest (an empty dict for foreign records accepted with
    `published_stats`). Checks: the folder and labels.txt exist and
    labels.txt names at least two classes; train shards (and validation
    shards unless `require_validation` is False) are there and not all
    empty; every shard the manifest lists is there with its size (and
    sha256 when asked); without a manifest, every shard of each `-of-N` set
    (unless `partial_shard_sets`);
    stats.json exists unless `published_stats`.
    """
    if not os.path.isdir(data_dir):
        raise RecordsError(f"records folder {data_dir} not found (or not a folder)")
    labels_path = os.path.join(data_dir, LABELS_FILENAME)
    if not os.path.exists(labels_path):
        raise RecordsError(f"{data_dir} has no {LABELS_FILENAME}: not a data prep records "
                           "folder, or the build did not finish")
    num_classes = len(LabelMap.read(labels_path))
    if num_classes < 2:
        raise RecordsError(f"{labels_path} names {num_classes} class: a classifier needs at "
                           "least 2 (build the records from a folder with two or more class "
                           "folders)")
    splits = records.SPLITS if require_validation else (records.TRAIN_PREFIX,)
    for split in splits:
        _require_shards(data_dir, split)
    manifest_path = os.path.join(data_dir, MANIFEST_FILENAME)
    if not os.path.exists(manifest_path):
        if os.path.isdir(os.path.join(data_dir, PARTS_DIR)):
            raise RecordsError(
                f"{data_dir} is a data prep build that did not finish (it has {PARTS_DIR}/ "
                f"but no {MANIFEST_FILENAME}; its shards may mix two builds): rerun data prep")
        if published_stats:
            if not partial_shard_sets:
                _refuse_problems(data_dir, _shard_set_problems(data_dir),
                                 f"has no {MANIFEST_FILENAME} and incomplete shard sets",
                                 "(a partial copy, or a build that did not finish): complete "
                                 "the copy, or set partial_shard_sets to train on these shards")
            for split in splits:
                if all(os.path.getsize(p) == 0 for p in records.list_shards(data_dir, split)):
                    raise RecordsError(f"{data_dir}: every {split} shard is empty")
            return {}
        raise RecordsError(
            f"{data_dir} has no {MANIFEST_FILENAME}: the build did not finish, or the "
            "records come from another tool (then set published_stats to train with "
            "the published ILSVRC-2012 statistics)")
    manifest = _read_manifest(manifest_path)
    _refuse_problems(data_dir, _shard_problems(data_dir, manifest, verify_sha256),
                     f"does not match its {MANIFEST_FILENAME}", "Rerun data prep to complete "
                     "the build")
    for split in splits:
        listed = [s for s in manifest["shards"] if _split_of(s.get("name", "")) == split]
        if listed and all(s.get("records") == 0 for s in listed):
            raise RecordsError(f"{data_dir}: its {MANIFEST_FILENAME} lists {len(listed)} "
                               f"{split} shard(s) and no {split} records")
    if not published_stats and not os.path.exists(os.path.join(data_dir, STATS_FILENAME)):
        raise RecordsError(
            f"{data_dir} has no {STATS_FILENAME} (the training set's mean, std and PCA "
            "lighting figures): rerun data prep, or set published_stats to use the "
            "published ILSVRC-2012 statistics")
    _check_class_count(data_dir, num_classes)
    return manifest


def _require_shards(data_dir: str, split: str) -> None:
    if records.list_shards(data_dir, split, required=False):
        return
    pattern = records.shard_pattern(data_dir, split)
    if split == records.VALIDATION_PREFIX:
        raise RecordsError(
            f"{data_dir} has no validation shards ({pattern}): training validates at each "
            "epoch end; build the records from a folder with a val/ (or validation/) split "
            "beside train/")
    raise RecordsError(f"{data_dir} has no {split} shards ({pattern}, e.g. "
                       f"{records.shard_name(split, 0, 1024)}): run data prep first, or "
                       "check the data dir")


def _refuse_problems(data_dir: str, problems: list[str], what: str, advice: str) -> None:
    if not problems:
        return
    shown = "; ".join(problems[:_SHOWN]) + (f"; and {len(problems) - _SHOWN} more"
                                            if len(problems) > _SHOWN else "")
    raise RecordsError(f"{data_dir} {what} ({len(problems)} problem(s)): {shown}. {advice}")


def _split_of(name: str) -> str | None:
    match = _SHARD_NAME.match(name)
    return match["split"] if match else None


def _shard_set_problems(data_dir: str) -> list[str]:
    """Without a manifest, the names are all there is: each split must be one
    `-of-N` set holding every index 0..N-1."""
    problems = []
    for split in records.SPLITS:
        sets = collections.defaultdict(set)
        for path in records.list_shards(data_dir, split, required=False):
            match = _SHARD_NAME.match(os.path.basename(path))
            if match:
                sets[int(match["count"])].add(int(match["index"]))
        if len(sets) > 1:
            problems.append(f"{split} shards of {len(sets)} builds (" + ", ".join(
                f"-of-{n:05d}" for n in sorted(sets)) + ")")
        for count, present in sorted(sets.items()):
            missing = sorted(set(range(count)) - present)
            names = [records.shard_name(split, i, count) for i in missing]
            problems += [f"{name} is missing" for name in names]
            problems += [f"{records.shard_name(split, i, count)} is not a shard of a set of "
                         f"{count}" for i in sorted(present) if i >= count]
    return problems


def _check_class_count(data_dir: str, num_classes: int) -> None:
    """stats.json (data prep writes the class count there) against labels.txt:
    labels.txt from another build would mislabel every record."""
    path = os.path.join(data_dir, STATS_FILENAME)
    if not os.path.exists(path):
        return
    try:
        with open(path, encoding="utf-8") as f:
            stats = json.load(f)
    except (OSError, json.JSONDecodeError) as e:
        raise RecordsError(f"{path}: cannot read it ({e})") from None
    counted = stats.get("num_classes") if isinstance(stats, dict) else None
    if isinstance(counted, int) and counted != num_classes:
        raise RecordsError(f"{path} counts {counted} classes, {LABELS_FILENAME} names "
                           f"{num_classes}: the two files come from different builds; rerun "
                           "data prep")


def _read_manifest(path: str) -> dict:
    try:
        with open(path, encoding="utf-8") as f:
            manifest = json.load(f)
    except (OSError, json.JSONDecodeError) as e:
        raise RecordsError(f"{path}: cannot read it ({e})") from None
    if not isinstance(manifest, dict) or not isinstance(manifest.get("shards"), list):
        raise RecordsError(f"{path}: no 'shards' list: not a data prep manifest")
    return manifest


def _shard_problems(data_dir: str, manifest: dict, verify_sha256: bool) -> list[str]:
    problems = []
    listed = {shard.get("name") for shard in manifest["shards"]}
    for split in records.SPLITS:  # the reader globs: a shard left from another build would count
        for path in records.list_shards(data_dir, split, required=False):
            if os.path.basename(path) not in listed:
                problems.append(f"{os.path.basename(path)} is not in the manifest (left from "
                                "another build?)")
    for shard in manifest["shards"]:
        if not isinstance(shard, dict) or not {"name", "bytes"} <= set(shard):
            problems.append(f"manifest entry {shard!r} has no name or size")
            continue
        path = os.path.join(data_dir, shard["name"])
        if not os.path.exists(path):
            problems.append(f"{shard['name']} is missing")
            continue
        size = os.path.getsize(path)
        if size != shard["bytes"]:
            problems.append(f"{shard['name']} has {size} bytes, the manifest says "
                            f"{shard['bytes']}")
        elif verify_sha256 and _sha256(path) != shard["sha256"]:
            problems.append(f"{shard['name']}'s sha256 differs from the manifest's")
    return problems


def _sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(_HASH_BLOCK), b""):
            digest.update(block)
    return digest.hexdigest()

"""Training's check of a records folder before anything is written.

Data prep finishes a build by writing manifest.json (per shard: records,
bytes, sha256) and stats.json (the training set's mean, std and PCA). A
folder missing shards, or either file, is an incomplete or foreign build:
training on it would silently use fewer images or the wrong statistics.
Records made by other tools have neither file; they train only when asked
to use the published ILSVRC-2012 statistics (`published_stats`).
"""

from __future__ import annotations

import hashlib
import json
import os

from alexnet_tf.data import records
from alexnet_tf.data.dataset_stats import STATS_FILENAME
from alexnet_tf.data.labels import LABELS_FILENAME
from alexnet_tf.errors import InputError

MANIFEST_FILENAME = "manifest.json"
_HASH_BLOCK = 8 << 20


class RecordsError(InputError):
    """The records folder is incomplete, changed since it was built, or foreign."""


def check_records_dir(data_dir: str, *, verify_sha256: bool = False,
                      published_stats: bool = False) -> dict:
    """Refuses a records folder that is not a complete data prep build.

    Returns the manifest (an empty dict for foreign records accepted with
    `published_stats`). Checks: the folder and labels.txt exist; every shard
    the manifest lists is there with its size (and sha256 when asked);
    stats.json exists unless `published_stats`.
    """
    if not os.path.isdir(data_dir):
        raise RecordsError(f"records folder {data_dir} not found (or not a folder)")
    if not os.path.exists(os.path.join(data_dir, LABELS_FILENAME)):
        raise RecordsError(f"{data_dir} has no {LABELS_FILENAME}: not a data prep records "
                           "folder, or the build did not finish")
    records.list_shards(data_dir, records.TRAIN_PREFIX)  # an error naming the pattern
    manifest_path = os.path.join(data_dir, MANIFEST_FILENAME)
    if not os.path.exists(manifest_path):
        if published_stats:
            return {}
        raise RecordsError(
            f"{data_dir} has no {MANIFEST_FILENAME}: the build did not finish, or the "
            "records come from another tool (then set published_stats to train with "
            "the published ILSVRC-2012 statistics)")
    manifest = _read_manifest(manifest_path)
    problems = _shard_problems(data_dir, manifest, verify_sha256)
    if problems:
        shown = "; ".join(problems[:5]) + (f"; and {len(problems) - 5} more"
                                            if len(problems) > 5 else "")
        raise RecordsError(f"{data_dir} does not match its {MANIFEST_FILENAME} "
                           f"({len(problems)} problem(s)): {shown}. Rerun data prep to "
                           "complete the build")
    if not published_stats and not os.path.exists(os.path.join(data_dir, STATS_FILENAME)):
        raise RecordsError(
            f"{data_dir} has no {STATS_FILENAME} (the training set's mean, std and PCA "
            "lighting figures): rerun data prep, or set published_stats to use the "
            "published ILSVRC-2012 statistics")
    return manifest


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

"""Which input image goes into which shard, and how many shards.

Training images are shuffled with a fixed seed before being cut into
contiguous runs, so every shard mixes all classes (a reader that interleaves
a few shards already sees a class mix) and a rerun assigns exactly the same
images to the same shards, which is what makes resuming possible.

Validation images of a class-folder layout are put in a seeded, stratified,
class-mixed order (`class_mixed_order`) before the same contiguous cut, so
any prefix of the split read in shard order, and any prefix of each shard,
holds the classes in proportion. Validation images of the ILSVRC layouts
keep their order (ILSVRC2012_val_00000001 first), which is already mixed.

Shard counts default to about `IMAGES_PER_SHARD` images per shard, at least
one, at most ImageNet's figures (`MAX_TRAIN_SHARDS`, `MAX_VALIDATION_SHARDS`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import random
from typing import Sequence

from alexnet_tf.data import records
from data_prep.sources import SourceFile

DEFAULT_SEED = 0
IMAGES_PER_SHARD = 1000
MAX_TRAIN_SHARDS = 1024
MAX_VALIDATION_SHARDS = 128


@dataclasses.dataclass(frozen=True)
class ShardPlan:
    """One output shard and the inputs that belong in it, in write order."""

    prefix: str  # records.TRAIN_PREFIX or records.VALIDATION_PREFIX
    index: int
    num_shards: int
    files: tuple[SourceFile, ...]

    @property
    def name(self) -> str:
        return records.shard_name(self.prefix, self.index, self.num_shards)

    def digest(self, settings: str) -> str:
        """Identifies the shard's content before it is written: the settings
        that shape every image plus each input's identity (raw path bytes,
        size and modification time when listed), place and label."""
        h = hashlib.sha256(settings.encode())
        for f in self.files:
            h.update(b"\0" + os.fsencode(f.path) + b"\0" + os.fsencode(f.member))
            h.update(f"\0{f.offset}\0{f.size}\0{f.st_size}\0{f.st_mtime_ns}\0{f.wnid}".encode())
        return h.hexdigest()


def auto_num_shards(num_files: int, most: int) -> int:
    """About IMAGES_PER_SHARD images per shard, at least 1, at most `most`."""
    return max(1, min(most, -(-num_files // IMAGES_PER_SHARD)))


def class_mixed_order(files: Sequence[SourceFile], seed: int = DEFAULT_SEED) -> list[SourceFile]:
    """A seeded order in which every prefix holds each class in proportion.

    Class c's n_c images (shuffled within the class) are placed at
    (j + u_j) / n_c, j = 0 .. n_c-1, each u_j seeded in [0, 1) (jittered
    strata), and everything is sorted by place: among the first k images,
    class c has k n_c / N of them, give or take about two, and no period
    repeats. Deterministic: same files (in any order) and seed, same order.
    """
    rng = random.Random(f"validation order {seed}")  # str seeds hash the same in every process
    by_class: dict[str, list[SourceFile]] = {}
    for f in files:
        by_class.setdefault(f.wnid, []).append(f)
    placed = []
    for wnid in sorted(by_class):
        members = sorted(by_class[wnid], key=lambda f: (os.fsencode(f.path), f.member))
        rng.shuffle(members)
        n = len(members)
        placed += [((j + rng.random()) / n, f) for j, f in enumerate(members)]
    placed.sort(key=lambda p: p[0])  # stable: equal places keep the class order
    return [f for _, f in placed]


def plan_shards(files: Sequence[SourceFile], prefix: str, num_shards: int,
                order: str = "keep", seed: int = DEFAULT_SEED) -> list[ShardPlan]:
    """Splits `files` into `num_shards` near-equal contiguous runs, after
    putting them in `order`: "keep", "shuffle" (seeded) or "class_mixed"
    (`class_mixed_order`). Shards may be empty when there are fewer files
    than shards: the names stay those of an `num_shards` split."""
    if num_shards < 1:
        raise ValueError(f"{prefix}: number of shards must be >= 1, got {num_shards}")
    if order == "shuffle":
        ordered = list(files)
        random.Random(seed).shuffle(ordered)
    elif order == "class_mixed":
        ordered = class_mixed_order(files, seed)
    elif order == "keep":
        ordered = list(files)
    else:
        raise ValueError(f"unknown order {order!r}")
    n = len(ordered)
    bounds = [i * n // num_shards for i in range(num_shards + 1)]
    return [ShardPlan(prefix, i, num_shards, tuple(ordered[bounds[i]:bounds[i + 1]]))
            for i in range(num_shards)]

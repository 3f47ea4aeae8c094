"""Which input image goes into which shard.

Training images are shuffled with a fixed seed before being cut into
contiguous runs, so every shard mixes all classes (a reader that interleaves
a few shards already sees a class mix) and a rerun assigns exactly the same
images to the same shards, which is what makes resuming possible.
Validation images keep their order (ILSVRC2012_val_00000001 first).
"""

from __future__ import annotations

import dataclasses
import hashlib
import random
from typing import Sequence

from alexnet_tf.data import records
from data_prep.layouts import SourceFile

DEFAULT_SEED = 0


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
        that shape every image plus each input's identity, place and label."""
        h = hashlib.sha256(settings.encode())
        for f in self.files:
            h.update(f"\0{f.path}\0{f.member}\0{f.offset}\0{f.size}\0{f.wnid}".encode())
        return h.hexdigest()


def plan_shards(files: Sequence[SourceFile], prefix: str, num_shards: int,
                shuffle: bool, seed: int = DEFAULT_SEED) -> list[ShardPlan]:
    """Splits `files` into `num_shards` near-equal contiguous runs (after a
    seeded shuffle when `shuffle`). Shards may be empty when there are fewer
    files than shards: the names stay those of an `num_shards` split."""
    if num_shards < 1:
        raise ValueError(f"{prefix}: number of shards must be >= 1, got {num_shards}")
    order = list(files)
    if shuffle:
        random.Random(seed).shuffle(order)
    n = len(order)
    bounds = [i * n // num_shards for i in range(num_shards + 1)]
    return [ShardPlan(prefix, i, num_shards, tuple(order[bounds[i]:bounds[i + 1]]))
            for i in range(num_shards)]

"""Writing one shard, safely, and recognising a shard that is already done.

A shard is written under `<name>.tmp`, synced, then renamed: a reader or a
rerun never sees half a shard under its real name. Once renamed, a small
record of the shard (`.parts/<name>.json`: what went in, what was skipped and
why, record count, bytes, sha256, class counts, pixel moments) is written,
also atomically. A rerun keeps a shard only if that record exists, was made
from exactly the same inputs and settings (`digest`), and the file on disk
still has the recorded size and sha256; anything else is rewritten.

Every record goes through `alexnet_tf.records`, the one schema module.
"""

from __future__ import annotations

import collections
import dataclasses
import hashlib
import json
import os
from typing import Callable

import tensorflow as tf

from alexnet_tf.data import records
from alexnet_tf.data.labels import LabelMap
from data_prep import convert
from data_prep.sharding import ShardPlan
from data_prep.stats import DEFAULT_PIXEL_STRIDE, PixelMoments

PARTS_DIR = ".parts"
TMP_SUFFIX = ".tmp"
# Bump when the conversion changes its output: old shards are then redone.
CONVERTER_VERSION = 1


@dataclasses.dataclass(frozen=True)
class ConvertSettings:
    """Everything that shapes a stored image."""

    image_size: int = convert.DEFAULT_SIZE
    quality: int = convert.DEFAULT_QUALITY
    max_pixels: int = convert.DEFAULT_MAX_PIXELS
    pixel_stride: int = DEFAULT_PIXEL_STRIDE

    def key(self) -> str:
        return json.dumps({"converter_version": CONVERTER_VERSION,
                           **dataclasses.asdict(self)}, sort_keys=True)


@dataclasses.dataclass(frozen=True)
class ShardTask:
    """What a worker needs to produce one shard."""

    plan: ShardPlan
    output_dir: str
    settings: ConvertSettings
    label_map: LabelMap
    collect_stats: bool  # training shards feed the RGB statistics

    @property
    def digest(self) -> str:
        return self.plan.digest(self.settings.key() + "\0" + "\0".join(self.label_map.wnids))

    @property
    def path(self) -> str:
        return os.path.join(self.output_dir, self.plan.name)

    @property
    def part_path(self) -> str:
        return part_path(self.output_dir, self.plan.name)


@dataclasses.dataclass
class ShardResult:
    name: str
    prefix: str
    digest: str
    records: int
    bytes: int
    sha256: str
    class_counts: dict[str, int]
    moments: PixelMoments | None
    converted: list[str]
    skipped: list[tuple[str, str]]  # (input path, reason)
    kept: bool = False  # found complete from an earlier run

    def to_json(self) -> dict:
        data = dataclasses.asdict(self)
        data["moments"] = self.moments.to_json() if self.moments else None
        del data["kept"]
        return data

    @classmethod
    def from_json(cls, data: dict) -> "ShardResult":
        data = dict(data)
        data["moments"] = PixelMoments.from_json(data["moments"]) if data["moments"] else None
        data["skipped"] = [tuple(s) for s in data["skipped"]]
        return cls(**data)


# Worker processes count converted images into a counter the parent reads
# for its progress line (set by `init_worker`, the pool's initializer).
_counter = None


def init_worker(counter) -> None:
    global _counter
    _counter = counter


def count_image() -> None:
    with _counter.get_lock():
        _counter.value += 1


def part_path(output_dir: str, shard_name: str) -> str:
    return os.path.join(output_dir, PARTS_DIR, shard_name + ".json")


def produce_shard(task: ShardTask, on_image: Callable[[], None] | None = None) -> ShardResult:
    """The shard of `task`: kept if already complete, else (re)written."""
    kept = reuse_shard(task)
    if kept is not None:
        return kept
    return write_shard(task, on_image)


def reuse_shard(task: ShardTask) -> ShardResult | None:
    """The earlier run's result if its shard is complete and matches `task`."""
    try:
        with open(task.part_path, encoding="utf-8") as f:
            result = ShardResult.from_json(json.load(f))
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if result.digest != task.digest or not os.path.isfile(task.path):
        return None
    if os.path.getsize(task.path) != result.bytes or file_sha256(task.path) != result.sha256:
        return None
    result.kept = True
    return result


def write_shard(task: ShardTask, on_image: Callable[[], None] | None = None) -> ShardResult:
    """Converts the shard's inputs and writes them as one TFRecord file."""
    os.makedirs(os.path.dirname(task.part_path), exist_ok=True)
    if os.path.exists(task.part_path):
        os.remove(task.part_path)  # the old record no longer describes the shard
    settings = task.settings
    moments = PixelMoments() if task.collect_stats else None
    counts: collections.Counter = collections.Counter()
    converted, skipped = [], []
    tmp_path = task.path + TMP_SUFFIX
    with tf.io.TFRecordWriter(tmp_path) as writer:
        for source in task.plan.files:
            try:
                image = convert.convert(source.read(), settings.image_size,
                                        settings.quality, settings.max_pixels)
            except convert.ConversionError as e:
                skipped.append((source.display, str(e)))
            except OSError as e:
                skipped.append((source.display, f"cannot read: {e}"))
            except Exception as e:  # noqa: BLE001 - one odd file must not stop the run
                skipped.append((source.display, f"unexpected {type(e).__name__}: {e}"))
            else:
                writer.write(records.serialize(records.ImageRecord(
                    encoded=image.encoded, height=settings.image_size,
                    width=settings.image_size, label=task.label_map.index(source.wnid),
                    synset=source.wnid, text=task.label_map.name(task.label_map.index(source.wnid)),
                    filename=source.filename)))
                if moments is not None:
                    moments.add_image(image.pixels, settings.pixel_stride)
                counts[source.wnid] += 1
                converted.append(source.display)
            if on_image is not None:
                on_image()
    _fsync(tmp_path)
    result = ShardResult(
        name=task.plan.name, prefix=task.plan.prefix, digest=task.digest,
        records=len(converted), bytes=os.path.getsize(tmp_path), sha256=file_sha256(tmp_path),
        class_counts=dict(sorted(counts.items())), moments=moments,
        converted=converted, skipped=skipped)
    os.replace(tmp_path, task.path)
    write_json_atomic(task.part_path, result.to_json())
    return result


def file_sha256(path: str, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def write_json_atomic(path: str, data, indent: int | None = None) -> None:
    tmp = path + TMP_SUFFIX
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(data, f, indent=indent)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _fsync(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)

"""Writing one shard, safely, and recognising a shard that is already done.

A worker writes a shard under `<name>.tmp` and syncs it (`write_shard`); the
build itself then writes a small record of it atomically (`.parts/<name>.json`:
what went in, what was skipped and why, record count, bytes, sha256, class
counts, pixel moments) and only then renames it to its name (`publish`). So
a reader or a rerun never sees half a shard under its real name, and a worker
that outlives a killed build can never publish one. A rerun keeps a shard
only if that record exists, was made from exactly the same inputs (paths,
sizes, modification times) and settings (`digest`), and the file on disk
still has the recorded size and sha256; anything else is rewritten.

Records are serialized deterministically (features in key order), so equal
inputs and settings give byte-identical shards in any process. Every record
goes through `alexnet_tf.data.records`, the one schema module, into a file
that `alexnet_tf.data.record_file` writes: no TensorFlow in data prep.
"""

from __future__ import annotations

import collections
import dataclasses
import hashlib
import json
import os
import signal
from typing import Callable

from alexnet_tf import fileio
from alexnet_tf.data import records
from alexnet_tf.data.record_file import RecordFileWriter
from alexnet_tf.data.labels import LabelMap
from data_prep import convert, duplicates, lifeline
from data_prep.names import printable
from data_prep.output_dir import PARTS_DIR, SHARD_TMP_SUFFIX as TMP_SUFFIX
from data_prep.sharding import ShardPlan
from data_prep.stats import DEFAULT_PIXEL_STRIDE, PixelMoments

# Bump when the conversion changes its output: old shards are then redone.
# 2: escaped file names, deterministic serialization.
CONVERTER_VERSION = 2


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
    hash_inputs: bool = True  # record each input's SHA-256 (duplicates within a split)

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
    converted: list[str]  # escaped input paths (data_prep.names)
    skipped: list[tuple[str, str]]  # (escaped input path, reason)
    # SHA-256 of each converted input's bytes, as `converted` (data_prep.duplicates);
    # empty when the task did not ask for them.
    digests: list[str] = dataclasses.field(default_factory=list)
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
    """Runs first in every worker process: it dies with the fork server, and
    ignores Ctrl-C (the terminal sends SIGINT to the whole process group):
    the build stops its workers itself (`data_prep.pool`), without a
    traceback from each."""
    global _counter
    _counter = counter
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # The pid is inherited from the fork server's memory, so a fork server
    # gone before this line is caught by the comparison. Without it (a fork
    # server user code started without the preload) the worker dies with
    # that fork server, whatever it is.
    lifeline.die_with_parent(lifeline.FORKSERVER_PID or os.getppid())


def count_image() -> None:
    with _counter.get_lock():
        _counter.value += 1


def part_path(output_dir: str, shard_name: str) -> str:
    return os.path.join(output_dir, PARTS_DIR, shard_name + ".json")


def produce_shard(task: ShardTask, on_image: Callable[[], None] | None = None) -> ShardResult:
    """The shard of `task`: kept if already complete (`kept`), else written
    under its temporary name, for the build to `publish`."""
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
    if task.hash_inputs and len(result.digests) != len(result.converted):
        return None  # written without the inputs' digests: they are needed now
    if os.path.getsize(task.path) != result.bytes or file_sha256(task.path) != result.sha256:
        return None
    result.kept = True
    return result


def write_shard(task: ShardTask, on_image: Callable[[], None] | None = None) -> ShardResult:
    """Converts the shard's inputs and writes them as one TFRecord file, under
    `task.path + TMP_SUFFIX` (synced); `publish` gives it its name."""
    os.makedirs(os.path.dirname(task.part_path), exist_ok=True)
    if os.path.exists(task.part_path):
        os.remove(task.part_path)  # the old record no longer describes the shard
    settings = task.settings
    moments = PixelMoments() if task.collect_stats else None
    counts: collections.Counter = collections.Counter()
    converted, skipped, digests = [], [], []
    tmp_path = task.path + TMP_SUFFIX
    with RecordFileWriter(tmp_path) as writer:
        for source in task.plan.files:
            try:
                data = source.read()
                image = convert.convert(data, settings.image_size,
                                        settings.quality, settings.max_pixels)
            except convert.ConversionError as e:
                skipped.append((source.display, printable(str(e))))
            except OSError as e:
                skipped.append((source.display, f"cannot read: {printable(e.strerror or str(e))}"))
            except Exception as e:  # noqa: BLE001 - one odd file must not stop the run
                skipped.append((source.display,
                                printable(f"unexpected {type(e).__name__}: {e}")))
            else:
                label = task.label_map.index(source.wnid)
                writer.write(records.serialize(records.ImageRecord(
                    encoded=image.encoded, height=settings.image_size,
                    width=settings.image_size, label=label, synset=source.wnid,
                    text=task.label_map.name(label), filename=source.filename)))
                if moments is not None:
                    moments.add_image(image.pixels, settings.pixel_stride)
                counts[source.wnid] += 1
                converted.append(source.display)
                if task.hash_inputs:
                    digests.append(duplicates.content_sha256(data))
            if on_image is not None:
                on_image()
    _fsync(tmp_path)
    return ShardResult(
        name=task.plan.name, prefix=task.plan.prefix, digest=task.digest,
        records=len(converted), bytes=os.path.getsize(tmp_path), sha256=file_sha256(tmp_path),
        class_counts=dict(sorted(counts.items())), moments=moments,
        converted=converted, skipped=skipped, digests=digests)


def publish(task: ShardTask, result: ShardResult) -> None:
    """Records a written shard, then gives it its real name: run by the
    build's own process only. In this order a kill between the two leaves a
    record without its shard (redone on the rerun), never a published shard
    without its record."""
    if result.kept:
        return
    fileio.write_json(task.part_path, result.to_json())
    os.replace(task.path + TMP_SUFFIX, task.path)


def file_sha256(path: str, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def _fsync(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)

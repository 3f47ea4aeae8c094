"""tf.data input pipelines over the TFRecord shards (training and evaluation).

Training (section 4.1 augmentation): seeded file-level shuffle -> parallel
interleave of the shards -> shuffle buffer -> parse + random 224 crop decoded
with `decode_and_crop_jpeg` + random flip (uint8) -> batch (drop_remainder)
-> the PCA lighting's per-image RGB shifts drawn per batch -> prefetch,
AUTOTUNE throughout and repeated forever. Batches leave as uint8 crops plus
their [B, 3] shifts; the train step adds them (`training_images`), so the
float cast and the add run on the accelerator, not in the input threads.

Evaluation: the shards in file order, not shuffled nor repeated, parse +
`eval_image` (centre crop) or `ten_crops` (section 4.1's test-time crops),
the last partial batch kept so every image is counted once.

Per-image work is TF ops only (no py_function), so it runs in tf.data's
threads without the GIL; `preprocessing.py` holds those ops and the serving
signature uses the same ones.

Distribution. `batch_size` is always the GLOBAL batch. With a
`tf.distribute.InputContext` (from `strategy.distribute_datasets_from_function`)
the dataset yields `input_context.get_per_replica_batch_size(batch_size)` and
reads only this input pipeline's part of the data:
  * by file, when there are at least as many shards as input pipelines
    (each worker reads whole shards: no wasted reads);
  * by record otherwise (every worker reads every shard in the same fixed
    order and keeps every n-th record), so a tiny data set still splits
    into disjoint parts.
tf.data's own auto-sharding is then switched off. Without an input context
the dataset yields global batches and is left to tf.distribute's
auto-sharding (`experimental_distribute_dataset`).
"""

from __future__ import annotations

import contextlib
import logging
import os

import tensorflow as tf

from alexnet_tf import defaults
from alexnet_tf.data import dataset_stats, preprocessing, records, service
from alexnet_tf.data.decode import graph_code  # the map functions skip autograph
from alexnet_tf.errors import InputError

AUTOTUNE = tf.data.AUTOTUNE
DEFAULT_SHUFFLE_BUFFER = defaults.SHUFFLE_BUFFER
# Shards read at once: enough to mix classes and hide file latency.
DEFAULT_CYCLE_LENGTH = 16
_READ_BUFFER_BYTES = 8 << 20
_READ_BLOCK = 16  # records handed over at a time by each shard reader
_ACROSS_BUFFER_BYTES = 256 << 10

# Keys of a training batch's features (see make_train_dataset).
IMAGE = "image"
LIGHTING = "lighting"



def list_shards(data_dir, split: str) -> list[str]:
    """The split's shards that hold records: data prep writes a file for every
    shard, and a small data set leaves some empty (opening them costs time)."""
    files = records.list_shards(data_dir, split)
    nonempty = [f for f in files if tf.io.gfile.stat(f).length > 0]
    if not nonempty:
        raise FileNotFoundError(f"all {len(files)} {split} shards in {data_dir} are empty")
    return nonempty


def count_records(data_dir: str, split: str) -> int:
    """Number of examples in a split: from stats.json when it says, else by
    reading the shards (slow on full ImageNet, fine on small sets)."""
    count = _count_from_stats(os.fspath(data_dir), split)
    if count is not None:
        return count
    files = list_shards(data_dir, split)
    logging.info("stats.json has no %s count; counting the records of %d shards",
                 split, len(files))
    return int(tf.data.TFRecordDataset(files).reduce(
        tf.constant(0, tf.int64), lambda n, _: n + 1))


def _count_from_stats(data_dir: str, split: str) -> int | None:
    path = os.path.join(data_dir, dataset_stats.STATS_FILENAME)
    if not tf.io.gfile.exists(path):
        return None
    return dataset_stats.split_image_count(dataset_stats.read_stats(path), split)


def resolve_rgb_stats(data_dir: str, rgb_stats=None) -> dataset_stats.RGBStats:
    """The PCA lighting figures: as given, else the data dir's stats.json, else
    the published ILSVRC-2012 figures (with a warning)."""
    if rgb_stats is not None:
        return rgb_stats
    path = os.path.join(os.fspath(data_dir), dataset_stats.STATS_FILENAME)
    if tf.io.gfile.exists(path):
        return dataset_stats.read_rgb_stats(path)
    logging.warning("%s not found: PCA lighting uses the ILSVRC-2012 eigen"
                    "values/vectors", path)
    return dataset_stats.RGBStats()


def per_replica_batch_size(batch_size: int, input_context=None) -> int:
    if input_context is None:
        return batch_size
    return input_context.get_per_replica_batch_size(batch_size)


def _shard_files(files, input_context):
    """(files this pipeline reads, record-level (count, index) or None)."""
    if input_context is None or input_context.num_input_pipelines == 1:
        return files, None
    n, i = input_context.num_input_pipelines, input_context.input_pipeline_id
    if len(files) >= n:
        return files[i::n], None
    return files, (n, i)


def _read_records(files, *, shuffle_files: bool, seed, cycle_length: int,
                  deterministic: bool, repeat: bool, read_block: int = _READ_BLOCK,
                  read_buffer: int = _READ_BUFFER_BYTES):
    """(shard path, serialized record) pairs; the path is kept for errors."""
    dataset = tf.data.Dataset.from_tensor_slices(files)
    if shuffle_files:
        dataset = dataset.shuffle(len(files), seed=seed, reshuffle_each_iteration=True)
    if repeat:  # before interleave, so epochs blend without a pause at the seam
        dataset = dataset.repeat()

    @graph_code
    def read(path):
        shard = tf.data.TFRecordDataset(path, buffer_size=read_buffer)
        # Handed over in small blocks: the parallel interleave's per-element
        # thread hand-off then costs little next to the decoding.
        return shard.batch(read_block).map(lambda block: (
            tf.fill(tf.shape(block), path), block))

    return dataset.interleave(
        read, cycle_length=max(1, min(cycle_length, len(files))), block_length=1,
        num_parallel_calls=AUTOTUNE, deterministic=deterministic).unbatch()


def _parse(path, serialized, *, label_offset: int, num_classes: int | None):
    """-> (encoded image bytes, int32 label), checking the label's range."""
    parsed = records.parse_example(serialized, label_offset=label_offset)
    label = parsed[records.LABEL]
    if num_classes is not None:
        in_range = tf.logical_and(label >= 0, label < num_classes)
        tf.debugging.Assert(in_range, [
            f"label out of range [0, {num_classes}) (label_offset={label_offset};"
            " tensorflow/models' 1-based records need label_offset=1): label",
            label, "record", parsed[records.FILENAME], "in shard", path])
    return parsed[records.ENCODED], tf.cast(label, tf.int32)


def _finish(dataset, *, deterministic: bool, own_sharding: bool):
    options = tf.data.Options()
    options.deterministic = deterministic
    if own_sharding:
        options.experimental_distribute.auto_shard_policy = (
            tf.data.experimental.AutoShardPolicy.OFF)
    return dataset.prefetch(AUTOTUNE).with_options(options)


def make_train_dataset(data_dir, batch_size: int, *, rgb_stats=None,
                       label_offset: int = 0,
                       shuffle_buffer: int = DEFAULT_SHUFFLE_BUFFER, seed=None,
                       input_context=None, crop_size: int = preprocessing.CROP_SIZE,
                       num_classes: int | None = None,
                       lighting_stddev: float = 0.1,
                       cycle_length: int = DEFAULT_CYCLE_LENGTH,
                       data_service: str = "", service_run: str = "") -> tf.data.Dataset:
    """The training input, repeated: (features, int32 labels [B]) with
    features {IMAGE: uint8 [B, crop, crop, 3], LIGHTING: float32 [B, 3]}, the
    crops and their PCA lighting shifts in 0..255 pixel units. Turn them into
    the model's float32 input with `training_images` (in the train step).

    Args:
        data_dir: folder with `train-?????-of-?????` shards (and stats.json).
        batch_size: the global batch; per replica with an `input_context`.
        rgb_stats: `RGBStats` for the PCA lighting; default: data_dir's
            stats.json, else the ILSVRC-2012 figures. `lighting_stddev=0`
            turns the lighting off.
        label_offset: subtracted from stored labels (1 for tensorflow/models).
        seed: makes the file order and the shuffle reproducible (the
            per-image crop/flip/lighting draws are not: they run in parallel).
        num_classes: when given, a label outside [0, num_classes) stops the
            pipeline with an error naming the record and shard.
        data_service: HOST:PORT of a tf.data service dispatcher: its workers
            run this pipeline and split the files among themselves (the
            input context then only sets the batch size); `service_run`
            names the run, so a run's trainers share one job (see service.py).
    """
    files = list_shards(data_dir, "train")
    if data_service:  # the workers read these paths: make a local one absolute
        files, record_shard = [f if "://" in f else os.path.abspath(f) for f in files], None
    else:
        files, record_shard = _shard_files(files, input_context)
    deterministic = seed is not None or record_shard is not None
    # Record-level sharding needs every worker to see the same record order.
    dataset = _read_records(files, shuffle_files=record_shard is None, seed=seed,
                            cycle_length=cycle_length, deterministic=deterministic,
                            repeat=record_shard is None)
    if record_shard is not None:
        # Shard one pass, then repeat: sharding the repeated stream would hand
        # each worker different records every epoch (overlapping parts).
        dataset = dataset.shard(*record_shard).repeat()
    if shuffle_buffer > 1:
        dataset = dataset.shuffle(shuffle_buffer, seed=seed)

    stats = resolve_rgb_stats(data_dir, rgb_stats) if lighting_stddev > 0 else None

    @graph_code
    def crop_and_flip(path, serialized):
        encoded, label = _parse(path, serialized, label_offset=label_offset,
                                num_classes=num_classes)
        return preprocessing.random_crop_and_flip(encoded, crop_size), label

    @graph_code
    def add_lighting(images, labels_):
        count = tf.shape(images)[0]
        shifts = (tf.zeros([count, 3]) if stats is None else preprocessing.lighting_shifts(
            count, stats.eigval, stats.eigvec, lighting_stddev))
        return {IMAGE: images, LIGHTING: shifts}, labels_

    dataset = dataset.map(crop_and_flip, num_parallel_calls=AUTOTUNE,
                          deterministic=deterministic)
    dataset = dataset.batch(per_replica_batch_size(batch_size, input_context),
                            drop_remainder=True)
    dataset = dataset.map(add_lighting, num_parallel_calls=AUTOTUNE,
                          deterministic=deterministic)
    dataset = _finish(dataset, deterministic=deterministic,
                      own_sharding=input_context is not None)
    if not data_service:
        return dataset
    settings = {"data_dir": os.fspath(data_dir), "files": len(files), "crop": crop_size,
                "batch": per_replica_batch_size(batch_size, input_context),
                "label_offset": label_offset, "shuffle_buffer": shuffle_buffer, "seed": seed,
                "classes": num_classes, "lighting": lighting_stddev, "cycle": cycle_length}
    return service.through_service(dataset, data_service,
                                   service.job_name(service_run, settings))


def training_images(features) -> tf.Tensor:
    """A training batch's features -> the model's float32 input: the crops
    with their lighting shifts added, section 4.1's training view."""
    return preprocessing.apply_lighting(features[IMAGE], features[LIGHTING])


def make_eval_dataset(data_dir, batch_size: int, *, crops: int = 1,
                      split: str = "validation", label_offset: int = 0,
                      input_context=None, num_classes: int | None = None,
                      crop_size: int = preprocessing.CROP_SIZE,
                      across_shards: bool = False) -> tf.data.Dataset:
    """The evaluation input, once through in file order, last batch kept.

    `across_shards=True` reads one record of each shard in turn (still a fixed
    order), so any prefix of the split, as training's per-epoch validation
    subset takes, draws from every shard rather than the first ones.

    crops=1 -> (float32 [B, crop, crop, 3], int32 [B]): the centre crop.
    crops=10 -> (float32 [B, 10, crop, crop, 3], int32 [B]): four corners,
    centre and their mirror images; average the softmax over axis 1.
    """
    if crops not in (1, 10):
        raise ValueError(f"crops must be 1 or 10, got {crops}")
    files = list_shards(data_dir, split)
    files, record_shard = _shard_files(files, input_context)
    dataset = _read_records(files, shuffle_files=False, seed=None,
                            cycle_length=len(files) if across_shards else 1,
                            deterministic=True, repeat=False,
                            read_block=1 if across_shards else _READ_BLOCK,
                            # every shard open at once: a small buffer each
                            read_buffer=_ACROSS_BUFFER_BYTES if across_shards
                            else _READ_BUFFER_BYTES)
    if record_shard is not None:
        dataset = dataset.shard(*record_shard)
    view = preprocessing.eval_image if crops == 1 else preprocessing.ten_crops

    @graph_code
    def prepare(path, serialized):
        encoded, label = _parse(path, serialized, label_offset=label_offset,
                                num_classes=num_classes)
        return view(encoded, crop_size=crop_size), label

    dataset = dataset.map(prepare, num_parallel_calls=AUTOTUNE, deterministic=True)
    dataset = dataset.batch(per_replica_batch_size(batch_size, input_context),
                            drop_remainder=False)
    return _finish(dataset, deterministic=True, own_sharding=input_context is not None)


@contextlib.contextmanager
def bad_records_as_input_errors():
    """A record the input pipeline refuses (a label out of range: often
    tensorflow/models' 1-based labels read without label_offset=1) as one
    InputError line, not TensorFlow's op traceback."""
    try:
        yield
    except tf.errors.InvalidArgumentError as e:
        lines = [line for line in e.message.splitlines() if "label out of range" in line]
        if not lines:
            raise
        raise InputError(lines[0].replace("assertion failed: ", "").replace("] [", " ")
                         .replace("\\'", "'").strip(" []")) from None

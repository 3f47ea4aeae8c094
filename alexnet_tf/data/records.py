"""The TFRecord schema: the one place that knows how an example is laid out.

Data prep writes records with `make_example`, the input pipeline, evaluation
and the export's `classify` signature read them with `parse_example`. Keys
follow tensorflow/models' ImageNet records, but labels here are 0-based in
sorted-wnid order (tensorflow/models' files are 1-based: readers correct that
with `label_offset`).
"""

from __future__ import annotations

import dataclasses
import os
import re

import tensorflow as tf

from alexnet_tf import fileio
from alexnet_tf.errors import InputError

ENCODED = "image/encoded"
FORMAT = "image/format"
HEIGHT = "image/height"
WIDTH = "image/width"
CHANNELS = "image/channels"
COLORSPACE = "image/colorspace"
LABEL = "image/class/label"
SYNSET = "image/class/synset"
TEXT = "image/class/text"
FILENAME = "image/filename"

TRAIN_PREFIX = "train"
VALIDATION_PREFIX = "validation"

FEATURE_SPEC = {
    ENCODED: tf.io.FixedLenFeature([], tf.string),
    FORMAT: tf.io.FixedLenFeature([], tf.string, default_value="JPEG"),
    HEIGHT: tf.io.FixedLenFeature([], tf.int64, default_value=0),
    WIDTH: tf.io.FixedLenFeature([], tf.int64, default_value=0),
    CHANNELS: tf.io.FixedLenFeature([], tf.int64, default_value=3),
    COLORSPACE: tf.io.FixedLenFeature([], tf.string, default_value="RGB"),
    LABEL: tf.io.FixedLenFeature([], tf.int64, default_value=-1),
    SYNSET: tf.io.FixedLenFeature([], tf.string, default_value=""),
    TEXT: tf.io.FixedLenFeature([], tf.string, default_value=""),
    FILENAME: tf.io.FixedLenFeature([], tf.string, default_value=""),
}


@dataclasses.dataclass(frozen=True)
class ImageRecord:
    """One converted image, as data prep writes it."""

    encoded: bytes
    height: int
    width: int
    label: int
    synset: str
    text: str
    filename: str
    channels: int = 3
    image_format: str = "JPEG"
    colorspace: str = "RGB"


def _bytes(value: bytes) -> tf.train.Feature:
    return tf.train.Feature(bytes_list=tf.train.BytesList(value=[value]))


def _int64(value: int) -> tf.train.Feature:
    return tf.train.Feature(int64_list=tf.train.Int64List(value=[int(value)]))


def make_example(record: ImageRecord) -> tf.train.Example:
    """Builds the tf.train.Example for one image."""
    feature = {
        ENCODED: _bytes(record.encoded),
        FORMAT: _bytes(record.image_format.encode()),
        HEIGHT: _int64(record.height),
        WIDTH: _int64(record.width),
        CHANNELS: _int64(record.channels),
        COLORSPACE: _bytes(record.colorspace.encode()),
        LABEL: _int64(record.label),
        SYNSET: _bytes(record.synset.encode()),
        TEXT: _bytes(record.text.encode()),
        FILENAME: _bytes(record.filename.encode()),
    }
    return tf.train.Example(features=tf.train.Features(feature=feature))


def serialize(record: ImageRecord) -> bytes:
    """The record's bytes, the same in every process: protobuf writes a map's
    entries (the features) in an arbitrary order unless asked for a fixed one."""
    return make_example(record).SerializeToString(deterministic=True)


def parse_example(serialized: tf.Tensor, label_offset: int = 0) -> dict:
    """Parses one serialized example (scalar string tensor) into a dict.

    `label_offset` is subtracted from the stored label: pass 1 to read
    tensorflow/models' 1-based records as 0-based labels.
    """
    parsed = tf.io.parse_single_example(serialized, FEATURE_SPEC)
    if label_offset:
        parsed[LABEL] = parsed[LABEL] - label_offset
    return parsed


def parse_examples(serialized: tf.Tensor, label_offset: int = 0) -> dict:
    """Batched form of `parse_example` (a 1-D string tensor)."""
    parsed = tf.io.parse_example(serialized, FEATURE_SPEC)
    if label_offset:
        parsed[LABEL] = parsed[LABEL] - label_offset
    return parsed


def shard_name(prefix: str, index: int, num_shards: int) -> str:
    """`train-00000-of-01024`, as tensorflow/models names its shards."""
    return f"{prefix}-{index:05d}-of-{num_shards:05d}"


def shard_pattern(data_dir: str, prefix: str) -> str:
    """A glob matching every shard of one split in `data_dir`."""
    return f"{data_dir.rstrip('/')}/{prefix}-?????-of-?????"


SPLITS = (TRAIN_PREFIX, VALIDATION_PREFIX)


def list_shards(data_dir, split: str, *, required: bool = True) -> list[str]:
    """Every shard of one split ('train' or 'validation') in `data_dir`
    (`<split>-NNNNN-of-NNNNN`), in name order (gfile: any file system). None
    found is an error naming the pattern, unless `required=False`."""
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}: expected one of {SPLITS}")
    data_dir = os.fspath(data_dir)
    if not fileio.is_utf8_path(data_dir):
        raise InputError(f"{os.fsencode(data_dir)!r}: {fileio.NOT_UTF8}")
    # Names matched here, not by a glob of the whole path: a folder named
    # "runs [2]" or "a*b" is a folder, not a pattern.
    try:
        names = tf.io.gfile.listdir(data_dir)
    except tf.errors.OpError:  # not there, or not a folder
        names = []
    shard = re.compile(rf"{re.escape(split)}-\d{{5}}-of-\d{{5}}")
    files = sorted(os.path.join(data_dir, n) for n in names if shard.fullmatch(n))
    pattern = shard_pattern(data_dir, split)
    if required and not files:
        raise FileNotFoundError(
            f"no {split} TFRecord shards match {pattern} (expected files like "
            f"{shard_name(split, 0, 1024)}; run data prep first, or check the data dir)")
    return files

"""The TFRecord schema: the one place that knows how an example is laid out.

Data prep writes records with `serialize`, the input pipeline, evaluation
and the export's `classify` signature read them with `parse_example`. Keys
follow tensorflow/models' ImageNet records, but labels here are 0-based in
sorted-wnid order (tensorflow/models' files are 1-based: readers correct that
with `label_offset`).

Writing needs no TensorFlow (data prep never loads it): the Example is
declared here with the protobuf runtime. TensorFlow is imported by the
functions that read.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import re

from alexnet_tf import fileio, proto_messages
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

# key -> (type, default when absent); None: the key is required.
FEATURES = {
    ENCODED: ("string", None),
    FORMAT: ("string", "JPEG"),
    HEIGHT: ("int64", 0),
    WIDTH: ("int64", 0),
    CHANNELS: ("int64", 3),
    COLORSPACE: ("string", "RGB"),
    LABEL: ("int64", -1),
    SYNSET: ("string", ""),
    TEXT: ("string", ""),
    FILENAME: ("string", ""),
}

# tf.train.Example's messages (tensorflow/core/example/example.proto and
# feature.proto: names, numbers, proto3's packed int64s), as far as written
# here. Features' `map<string, Feature> feature = 1` is, on the wire, a
# repeated entry message of key (1) and value (2).
_MESSAGES = proto_messages.message_classes("alexnet_tf_example.proto", "tensorflow", {
    "BytesList": ["repeated bytes value 1"],
    "Int64List": ["repeated int64 value 1"],
    "Feature": ["BytesList bytes_list 1", "Int64List int64_list 3"],
    "FeatureEntry": ["string key 1", "Feature value 2"],
    "Features": ["repeated FeatureEntry feature 1"],
    "Example": ["Features features 1"],
}, syntax="proto3")


@functools.cache
def feature_spec() -> dict:
    """FEATURES as `tf.io.parse_example` takes them."""
    import tensorflow as tf
    return {key: tf.io.FixedLenFeature([], getattr(tf, kind), **(
        {} if default is None else {"default_value": default}))
        for key, (kind, default) in FEATURES.items()}


def __getattr__(name):
    if name == "FEATURE_SPEC":  # the name readers used before feature_spec()
        return feature_spec()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


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


def serialize(record: ImageRecord) -> bytes:
    """The record as a serialized tf.train.Example, the same bytes in every
    process: features in key order, as protobuf's deterministic
    serialization writes a map (tests/test_records.py compares them)."""
    values = {
        ENCODED: record.encoded,
        FORMAT: record.image_format.encode(),
        HEIGHT: record.height,
        WIDTH: record.width,
        CHANNELS: record.channels,
        COLORSPACE: record.colorspace.encode(),
        LABEL: record.label,
        SYNSET: record.synset.encode(),
        TEXT: record.text.encode(),
        FILENAME: record.filename.encode(),
    }
    example = _MESSAGES["Example"]()
    for key in sorted(values):
        feature = example.features.feature.add(key=key).value
        if FEATURES[key][0] == "int64":
            feature.int64_list.value.append(int(values[key]))
        else:
            feature.bytes_list.value.append(values[key])
    return example.SerializeToString()


def make_example(record: ImageRecord):
    """The record as a tf.train.Example message (loads TensorFlow; `serialize`
    gives its bytes without)."""
    import tensorflow as tf
    return tf.train.Example.FromString(serialize(record))


def parse_example(serialized, label_offset: int = 0) -> dict:
    """Parses one serialized example (scalar string tensor) into a dict.

    `label_offset` is subtracted from the stored label: pass 1 to read
    tensorflow/models' 1-based records as 0-based labels.
    """
    import tensorflow as tf
    parsed = tf.io.parse_single_example(serialized, feature_spec())
    if label_offset:
        parsed[LABEL] = parsed[LABEL] - label_offset
    return parsed


def parse_examples(serialized, label_offset: int = 0) -> dict:
    """Batched form of `parse_example` (a 1-D string tensor)."""
    import tensorflow as tf
    parsed = tf.io.parse_example(serialized, feature_spec())
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
    import tensorflow as tf
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

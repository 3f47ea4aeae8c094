"""alexnet_tf.data.records: the one TFRecord schema; alexnet_tf.data.record_file:
its files, written without TensorFlow, byte for byte as TensorFlow writes them."""

import os
import subprocess
import sys

import pytest
import numpy as np
import tensorflow as tf

from alexnet_tf.data import record_file, records


def _record(label=3, **kwargs):
    fields = dict(encoded=b"\xff\xd8jpeg-bytes", height=256, width=256, label=label,
                  synset="n01440764", text="tench, Tinca tinca", filename="a.JPEG")
    fields.update(kwargs)
    return records.ImageRecord(**fields)


def test_keys_are_those_of_tensorflow_models():
    assert set(records.FEATURE_SPEC) == set(records.feature_spec()) == set(records.FEATURES) == {
        "image/encoded", "image/format", "image/height", "image/width", "image/channels",
        "image/colorspace", "image/class/label", "image/class/synset", "image/class/text",
        "image/filename"}


def _tensorflows_example(record: records.ImageRecord) -> bytes:
    """The record as tf.train.Example would serialize it (deterministic: map
    entries in key order)."""
    def text(value): return tf.train.Feature(bytes_list=tf.train.BytesList(value=[value]))
    def number(value): return tf.train.Feature(int64_list=tf.train.Int64List(value=[value]))
    return tf.train.Example(features=tf.train.Features(feature={
        records.ENCODED: text(record.encoded), records.FORMAT: text(record.image_format.encode()),
        records.HEIGHT: number(record.height), records.WIDTH: number(record.width),
        records.CHANNELS: number(record.channels),
        records.COLORSPACE: text(record.colorspace.encode()), records.LABEL: number(record.label),
        records.SYNSET: text(record.synset.encode()), records.TEXT: text(record.text.encode()),
        records.FILENAME: text(record.filename.encode()),
    })).SerializeToString(deterministic=True)


VARIED_RECORDS = [
    _record(),
    _record(encoded=b"", label=0, synset="", text="", filename=""),  # empty values, zero
    _record(label=-1, text="pot'ter's wheel é", filename="x\\xff.JPEG"),  # negative: 10 bytes
    _record(encoded=bytes(range(256)) * 700, height=2**40, width=1, label=2**63 - 1),
    _record(image_format="PNG", colorspace="CMYK", channels=4),
]


@pytest.mark.parametrize("index", range(len(VARIED_RECORDS)))
def test_serialize_writes_tensorflows_bytes(index):
    record = VARIED_RECORDS[index]
    assert records.serialize(record) == _tensorflows_example(record)
    assert records.make_example(record) == tf.train.Example.FromString(_tensorflows_example(record))


def test_record_files_are_tensorflows_byte_for_byte(tmp_path):
    """Length and data each with their masked CRC-32C: the same file as
    tf.io.TFRecordWriter's, which TensorFlow's reader (it checks both sums)
    reads back."""
    data = [records.serialize(r) for r in VARIED_RECORDS] + [b"", b"\x00" * 70_000]
    ours, theirs = tmp_path / "ours", tmp_path / "theirs"
    with record_file.RecordFileWriter(ours) as writer:
        for value in data:
            writer.write(value)
    with tf.io.TFRecordWriter(str(theirs)) as writer:
        for value in data:
            writer.write(value)
    assert ours.read_bytes() == theirs.read_bytes()
    assert [r.numpy() for r in tf.data.TFRecordDataset(str(ours))] == data
    assert record_file.masked_crc32c(b"") == 0xA282EAD8  # CRC-32C of nothing is 0
    assert record_file.masked_crc32c(b"123456789") != record_file.masked_crc32c(b"123456780")


def test_a_corrupted_byte_is_caught_by_tensorflows_reader(tmp_path):
    path = tmp_path / "shard"
    with record_file.RecordFileWriter(path) as writer:
        writer.write(records.serialize(_record()))
    raw = bytearray(path.read_bytes())
    raw[20] ^= 1  # inside the data
    path.write_bytes(bytes(raw))
    with pytest.raises(tf.errors.DataLossError):
        list(tf.data.TFRecordDataset(str(path)))


def test_data_prep_loads_no_tensorflow():
    """The command line, the fork server's preload and so every worker:
    writing records needs no TensorFlow (seconds and ~500 MB a process)."""
    code = ("import sys, data_prep.build_tfrecords, data_prep.forkserver_preload, "
            "data_prep.make_synthetic\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('tensorflow', 'keras')))")
    found = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                           cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    assert found.stdout.strip() == "[]", found.stderr


def test_serialize_parse_round_trip():
    parsed = records.parse_example(tf.constant(records.serialize(_record())))
    assert parsed[records.ENCODED].numpy() == b"\xff\xd8jpeg-bytes"
    assert parsed[records.FORMAT].numpy() == b"JPEG"
    assert parsed[records.COLORSPACE].numpy() == b"RGB"
    assert int(parsed[records.HEIGHT]) == 256 and int(parsed[records.WIDTH]) == 256
    assert int(parsed[records.CHANNELS]) == 3
    assert int(parsed[records.LABEL]) == 3
    assert parsed[records.SYNSET].numpy() == b"n01440764"
    assert parsed[records.TEXT].numpy().decode() == "tench, Tinca tinca"
    assert parsed[records.FILENAME].numpy() == b"a.JPEG"


def test_non_ascii_text_survives():
    parsed = records.parse_example(tf.constant(records.serialize(_record(text="pot'ter's wheel é"))))
    assert parsed[records.TEXT].numpy().decode() == "pot'ter's wheel é"


def test_label_offset_reads_one_based_records():
    one_based = tf.constant(records.serialize(_record(label=1)))
    assert int(records.parse_example(one_based, label_offset=1)[records.LABEL]) == 0
    batch = tf.constant([records.serialize(_record(label=i)) for i in (1, 5, 1000)])
    labels = records.parse_examples(batch, label_offset=1)[records.LABEL].numpy()
    np.testing.assert_array_equal(labels, [0, 4, 999])
    np.testing.assert_array_equal(records.parse_examples(batch)[records.LABEL].numpy(), [1, 5, 1000])


def test_missing_fields_take_defaults():
    minimal = tf.train.Example(features=tf.train.Features(feature={
        records.ENCODED: tf.train.Feature(bytes_list=tf.train.BytesList(value=[b"x"]))}))
    parsed = records.parse_example(tf.constant(minimal.SerializeToString()))
    assert int(parsed[records.LABEL]) == -1
    assert parsed[records.FORMAT].numpy() == b"JPEG"


def test_shard_names_and_pattern(tmp_path):
    assert records.shard_name("train", 0, 1024) == "train-00000-of-01024"
    assert records.shard_name("validation", 127, 128) == "validation-00127-of-00128"
    for name in ("train-00000-of-00002", "train-00001-of-00002", "train-00000-of-00002.tmp",
                 "validation-00000-of-00001", "labels.txt"):
        (tmp_path / name).write_bytes(b"")
    matched = sorted(p.split("/")[-1] for p in tf.io.gfile.glob(
        records.shard_pattern(str(tmp_path) + "/", records.TRAIN_PREFIX)))
    assert matched == ["train-00000-of-00002", "train-00001-of-00002"]


def test_atomic_writes_replace_whole_files_with_ordinary_permissions(tmp_path):
    import os
    import stat
    from alexnet_tf import fileio
    path = tmp_path / "labels.txt"
    fileio.write_text(str(path), "old\n")
    fileio.write_text(str(path), "new\n")
    assert path.read_text() == "new\n"
    mask = os.umask(0)
    os.umask(mask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~mask
    try:
        with fileio.atomic_path(str(path)) as tmp:
            with open(tmp, "w") as f:
                f.write("half")
            raise RuntimeError("killed mid-write")
    except RuntimeError:
        pass
    assert path.read_text() == "new\n" and os.listdir(tmp_path) == ["labels.txt"]


@pytest.mark.parametrize("folder", ["runs [2]", "a*b", "what?", "plain"])
def test_list_shards_reads_a_folder_whose_name_looks_like_a_pattern(tmp_path, folder):
    data = tmp_path / folder
    data.mkdir()
    for name in ("train-00001-of-00002", "train-00000-of-00002", "train-00000-of-00002.tmp",
                 "train-0000x-of-00002", "validation-00000-of-00001"):
        (data / name).write_bytes(b"")
    assert records.list_shards(str(data), "train") == [
        str(data / "train-00000-of-00002"), str(data / "train-00001-of-00002")]
    assert records.list_shards(str(data / "nowhere"), "train", required=False) == []
    with pytest.raises(FileNotFoundError, match="no validation TFRecord shards"):
        records.list_shards(str(tmp_path), "validation")

"""Issue 17's data prep side: a class-mixed validation order (any prefix a
fair sample), shard counts that follow the data's size, and one count."""

import collections
import glob
import io
import os
import re

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from alexnet_tf.data import records
from data_prep import build_tfrecords, sharding
from data_prep.sources import SourceFile

# Unequal validation classes, as real folder data sets have.
VAL_SIZES = {"c0": 12, "c1": 6, "c2": 3, "c3": 9}


def _tiny_jpeg(path, value):
    """Its path in a JPEG comment: equal pixels, never equal bytes (no leak)."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    buffer = io.BytesIO()
    Image.fromarray(np.full((8, 8, 3), value, np.uint8)).save(
        buffer, "JPEG", comment=os.fsencode(os.path.abspath(path)))
    with open(path, "wb") as f:
        f.write(buffer.getvalue())


@pytest.fixture(scope="module")
def folder_records(tmp_path_factory):
    root = tmp_path_factory.mktemp("folders")
    for c, (wnid, n) in enumerate(VAL_SIZES.items()):
        for i in range(3):
            _tiny_jpeg(root / "in" / "train" / wnid / f"t{i}.jpg", 60 * c)
        for i in range(n):
            _tiny_jpeg(root / "in" / "val" / wnid / f"v{i:02d}.jpg", 60 * c)
    out = root / "out"
    summary = build_tfrecords.build(build_tfrecords.BuildConfig(
        str(root / "in"), str(out), num_workers=1, image_size=8, validation_shards=3),
        log=open(os.devnull, "w"))
    assert summary.ok
    return out


def _labels(dataset):
    return [int(records.parse_example(s)[records.LABEL]) for s in dataset]


def _worst_prefix_deviation(labels):
    """max over prefixes k and classes c of |count_c(k) - k n_c / N|."""
    sizes = collections.Counter(labels)
    seen, worst = collections.Counter(), 0.0
    for k, label in enumerate(labels, 1):
        seen[label] += 1
        worst = max(worst, max(abs(seen[c] - k * n / len(labels)) for c, n in sizes.items()))
    return worst


def test_validation_prefixes_are_fair_samples_in_either_reading_order(folder_records):
    files = sorted(glob.glob(records.shard_pattern(str(folder_records), "validation")))
    assert len(files) == 3
    in_order = _labels(tf.data.TFRecordDataset(files))
    across = _labels(tf.data.Dataset.from_tensor_slices(files).interleave(
        tf.data.TFRecordDataset, cycle_length=len(files), block_length=1))
    expected = {c: n for c, n in enumerate(VAL_SIZES.values())}
    for labels in (in_order, across):
        assert collections.Counter(labels) == expected
        assert _worst_prefix_deviation(labels) <= 2.0
        # The first two batches of 5: 10 of 30 images, a third of each class.
        first = collections.Counter(labels[:10])
        for c, n in expected.items():
            assert abs(first[c] - n / 3) <= 1.5, (c, first)
    # Class by class (the old order), a prefix of 10 saw one class only.
    assert _worst_prefix_deviation(sorted(in_order)) > 5


def test_class_mixed_order_is_deterministic_and_seeded():
    files = [SourceFile(f"/x/{c}/{i}", c) for c, n in VAL_SIZES.items() for i in range(n)]
    order = sharding.class_mixed_order(files, seed=0)
    assert sorted(order, key=lambda f: f.path) == sorted(files, key=lambda f: f.path)
    assert sharding.class_mixed_order(list(reversed(files)), seed=0) == order
    assert sharding.class_mixed_order(files, seed=1) != order
    big = [SourceFile(f"/x/{c}/{i}", f"n{c:04d}") for c in range(100) for i in range(50)]
    labels = [int(f.wnid[1:]) for f in sharding.class_mixed_order(big, seed=3)]
    assert _worst_prefix_deviation(labels) <= 3.0  # ILSVRC-like: 100 classes x 50


@pytest.mark.parametrize("num_files, most, expected", [
    (0, 1024, 1), (20, 1024, 1), (1000, 1024, 1), (1001, 1024, 2), (9469, 1024, 10),
    (1_281_167, 1024, 1024), (50_000, 128, 50), (500_000, 128, 128)])
def test_automatic_shard_counts(num_files, most, expected):
    assert sharding.auto_num_shards(num_files, most) == expected


def test_a_small_data_set_gets_a_shard_per_split_by_default(tmp_path):
    """The README's defaults used to give a 20-image data set 1,152 shards."""
    for i in range(20):
        _tiny_jpeg(tmp_path / "in" / ("train" if i < 16 else "val") / f"c{i % 2}" / f"{i}.jpg",
                   100 * (i % 2))
    summary = build_tfrecords.build(build_tfrecords.BuildConfig(
        str(tmp_path / "in"), str(tmp_path / "out"), image_size=8), log=open(os.devnull, "w"))
    assert summary.written == 20 and summary.shards_written == 2
    assert sorted(os.path.basename(p) for p in glob.glob(str(tmp_path / "out" / "*-of-*"))) == [
        "train-00000-of-00001", "validation-00000-of-00001"]


def test_the_header_and_the_summary_give_one_count(tmp_path):
    """The header counted validation images before the unusable entries (a
    class with no training images, a stray file) the summary adds back."""
    for i in range(4):
        _tiny_jpeg(tmp_path / "in" / "train" / "cat" / f"{i}.jpg", 50)
    for i in range(6):
        _tiny_jpeg(tmp_path / "in" / "val" / "cat" / f"{i}.jpg", 50)
    _tiny_jpeg(tmp_path / "in" / "val" / "dog" / "0.jpg", 150)  # no training dogs
    _tiny_jpeg(tmp_path / "in" / "val" / "dog" / "1.jpg", 150)
    _tiny_jpeg(tmp_path / "in" / "val" / "stray.jpg", 0)  # not in a class folder
    log = io.StringIO()
    summary = build_tfrecords.build(build_tfrecords.BuildConfig(
        str(tmp_path / "in"), str(tmp_path / "out"), num_workers=1, image_size=8), log=log)
    text = log.getvalue()
    header = re.search(r"entries found \(train (\d+), validation (\d+)\)", text)
    in_summary = re.search(r"validation: found (\d+), written (\d+), skipped (\d+)", text)
    assert header and in_summary, text
    assert int(header.group(2)) == int(in_summary.group(1)) == 9
    assert summary.per_split["validation"] == {"found": 9, "written": 6, "skipped": 3}
    assert text.startswith(f"imagefolder: {summary.found} entries found")


def test_trainings_validation_subset_covers_the_classes_in_proportion(folder_records):
    # What training's --validation_steps reads: the first batches of the
    # evaluation input, across the shards.
    from alexnet_tf.data import input_pipeline
    dataset = input_pipeline.make_eval_dataset(str(folder_records), 5, across_shards=True,
                                               crop_size=8)
    first = collections.Counter(np.concatenate([y.numpy() for _, y in dataset.take(2)]))
    for c, n in enumerate(VAL_SIZES.values()):
        assert abs(first[c] - n / 3) <= 1.5, (c, first)

"""data_prep.build_tfrecords end to end: synthetic, real ImageNet photos,
the ILSVRC archives, CIFAR-10 at 32x32, the command line."""

import csv
import glob
import io
import json
import os
import tarfile

import numpy as np
import pytest
import tensorflow as tf

from alexnet_tf.data import record_file, records
from alexnet_tf.data.dataset_stats import read_rgb_stats, read_stats
from alexnet_tf.data.labels import LabelMap
from data_prep import build_tfrecords, convert, layouts, make_synthetic, writer
from launchers import run_launcher
from tree_data import write_two_class_tree

def _quiet():
    return open(os.devnull, "w")


def _read_split(out, prefix):
    files = sorted(glob.glob(records.shard_pattern(str(out), prefix)))
    return [records.parse_example(s) for s in tf.data.TFRecordDataset(files)]


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    root = tmp_path_factory.mktemp("synthetic")
    made = make_synthetic.make_synthetic(make_synthetic.SyntheticConfig(
        str(root), num_classes=4, train_per_class=8, val_per_class=3, seed=3))
    return root, made


@pytest.fixture(scope="module")
def synthetic_build(synthetic, tmp_path_factory):
    """Built with two worker processes and every pixel in the statistics."""
    root, _ = synthetic
    out = tmp_path_factory.mktemp("records")
    summary = build_tfrecords.build(build_tfrecords.BuildConfig(
        str(root), str(out), train_shards=3, validation_shards=2, num_workers=2,
        min_images_per_worker=0, image_size=64, pixel_stride=1), log=_quiet())
    return out, summary


def test_synthetic_summary_counts_every_file(synthetic, synthetic_build):
    _, made = synthetic
    out, summary = synthetic_build
    assert summary.found == made["train"] + made["validation"]
    assert summary.found == summary.written + len(summary.skipped)
    (skipped,) = summary.skipped  # only the corrupt file; the other awkward ones convert
    assert skipped[0] == "train" and skipped[1].endswith("awkward_corrupt.JPEG")
    assert "truncated" in skipped[2]
    assert summary.per_split["validation"] == {"found": 12, "written": 12, "skipped": 0}
    assert summary.shards_written == 5


def test_synthetic_records_labels_and_images(synthetic, synthetic_build):
    root, _ = synthetic
    out, _ = synthetic_build
    label_map = LabelMap.read(str(out))
    assert label_map.wnids == tuple(make_synthetic.class_wnid(c) for c in range(4))
    assert label_map.names == tuple(make_synthetic.class_name(c) for c in range(4))
    train = _read_split(out, records.TRAIN_PREFIX)
    assert len(train) == 4 * 8 + 3  # + grayscale, CMYK and PNG-named-.JPEG
    for example in train:
        wnid = example[records.SYNSET].numpy().decode()
        assert int(example[records.LABEL]) == label_map.index(wnid)
        assert example[records.TEXT].numpy().decode() == label_map.name(label_map.index(wnid))
        name = example[records.FILENAME].numpy().decode()
        assert os.path.exists(root / "train" / wnid / name)
        image = tf.io.decode_jpeg(example[records.ENCODED])
        assert image.shape == (64, 64, 3)
        assert (int(example[records.HEIGHT]), int(example[records.WIDTH])) == (64, 64)
        assert example[records.COLORSPACE].numpy() == b"RGB"
    # Training shards mix classes; so does validation (class folders are
    # written in a class-mixed order: test_data_prep_splits checks how fair).
    first_shard = _read_split(out, records.TRAIN_PREFIX)[:10]
    assert len({int(e[records.LABEL]) for e in first_shard}) > 1
    val_labels = [int(e[records.LABEL]) for e in _read_split(out, records.VALIDATION_PREFIX)]
    assert val_labels != sorted(val_labels) and sorted(val_labels) == [0, 0, 0, 1, 1, 1,
                                                                      2, 2, 2, 3, 3, 3]
    assert len(set(val_labels[:4])) == 4


def test_stats_equal_numpy_on_the_same_pixels(synthetic, synthetic_build):
    """stats.json's mean and PCA against numpy over the very pixels stored
    (before encoding: converted again here), with every pixel sampled."""
    root, _ = synthetic
    out, _ = synthetic_build
    pixels = []
    for path in sorted(glob.glob(str(root / "train" / "*" / "*"))):
        try:
            pixels.append(convert.convert(open(path, "rb").read(), size=64).pixels.reshape(-1, 3))
        except convert.ConversionError:
            continue
    pixels = np.concatenate(pixels).astype(np.float64)
    rgb = read_rgb_stats(str(out))
    np.testing.assert_allclose(rgb.mean_rgb, pixels.mean(axis=0), rtol=1e-9)
    eigval = np.linalg.eigvalsh(np.cov(pixels, rowvar=False))[::-1]
    np.testing.assert_allclose(np.asarray(rgb.eigval) * 255, eigval, rtol=1e-7)
    stats = read_stats(str(out))
    assert stats["rgb"]["pixels_sampled"] == len(pixels)
    assert stats["splits"]["train"]["images"] == 35
    assert sum(stats["splits"]["train"]["per_class"].values()) == 35
    assert stats["splits"]["validation"]["per_class"] == {
        make_synthetic.class_wnid(c): 3 for c in range(4)}


def test_manifest_lists_shards_and_every_file(synthetic_build):
    out, summary = synthetic_build
    manifest = json.loads((out / build_tfrecords.MANIFEST_FILENAME).read_text())
    assert manifest["found"] == summary.found and manifest["written"] == summary.written
    for shard in manifest["shards"]:
        path = out / shard["name"]
        assert path.stat().st_size == shard["bytes"]
        assert writer.file_sha256(str(path)) == shard["sha256"]
        assert shard["records"] == sum(1 for _ in tf.data.TFRecordDataset(str(path)))
    assert [s["reason"] for s in manifest["skipped_files"]] == [summary.skipped[0][2]]
    with open(out / build_tfrecords.FILES_FILENAME, newline="") as f:
        rows = list(csv.DictReader(f, delimiter="\t"))
    assert len(rows) == summary.found
    assert sum(r["status"] == "converted" for r in rows) == summary.written
    assert len({r["path"] for r in rows}) == summary.found


def test_imagenet_sample_slice_as_imagefolder(imagenet_sample, tmp_path):
    """20 real photos arranged into train/<wnid>/ by their file-name prefix,
    5 of them also into val/ (the sample has one photo per class: a leak,
    kept here with --on_leak=report, and reported); labels follow sorted wnids."""
    photos = sorted(imagenet_sample.glob("*.JPEG"))[::50][:20]
    for split, chosen in (("train", photos), ("val", photos[::4])):
        for photo in chosen:
            target = tmp_path / "in" / split / photo.name.split("_")[0]
            target.mkdir(parents=True)
            os.symlink(photo, target / photo.name)
    summary = build_tfrecords.build(build_tfrecords.BuildConfig(
        str(tmp_path / "in"), str(tmp_path / "out"), train_shards=2, validation_shards=1,
        num_workers=1, on_leak="report"), log=_quiet())
    assert summary.ok and summary.written == 25
    assert sorted(os.path.basename(leak.train) for leak in summary.leaks) == sorted(
        p.name for p in photos[::4])
    assert {leak.same for leak in summary.leaks} == {"file"}  # links to one file
    label_map = LabelMap.read(str(tmp_path / "out"))
    wnids = sorted(p.name.split("_")[0] for p in photos)
    assert label_map.wnids == tuple(wnids)
    for example in _read_split(tmp_path / "out", records.TRAIN_PREFIX):
        name = example[records.FILENAME].numpy().decode()
        assert int(example[records.LABEL]) == wnids.index(name.split("_")[0])
        assert tf.io.decode_jpeg(example[records.ENCODED]).shape == (256, 256, 3)
    assert summary.per_split["validation"] == {"found": 5, "written": 5, "skipped": 0}


def _jpeg(class_index, seed):
    buffer = io.BytesIO()
    make_synthetic.draw(class_index, np.random.default_rng(seed)).save(buffer, "JPEG")
    return buffer.getvalue()


def _add(tar, name, data):
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def test_ilsvrc_archives_with_devkit_order(tmp_path):
    """Nested training tar + validation tar + devkit whose ids are not in
    sorted-wnid order: records carry sorted-wnid labels."""
    import scipy.io
    wnids = ["n01000001", "n02000002", "n03000003"]
    with tarfile.open(tmp_path / layouts.TRAIN_TAR, "w") as outer:
        for c, wnid in enumerate(wnids):
            inner = io.BytesIO()
            with tarfile.open(fileobj=inner, mode="w") as tar:
                for i in range(3):
                    _add(tar, f"{wnid}_{i}.JPEG", _jpeg(c, i))
            _add(outer, f"{wnid}.tar", inner.getvalue())
    truth = [3, 1, 2, 3]  # devkit ids: 1 -> n02..., 2 -> n03..., 3 -> n01...
    devkit_wnid = {1: "n02000002", 2: "n03000003", 3: "n01000001"}
    with tarfile.open(tmp_path / layouts.VAL_TAR, "w") as tar:
        for n, ilsvrc_id in enumerate(truth, 1):
            _add(tar, f"ILSVRC2012_val_{n:08d}.JPEG", _jpeg(wnids.index(devkit_wnid[ilsvrc_id]), 50 + n))
    data = tmp_path / "ILSVRC2012_devkit_t12" / "data"
    data.mkdir(parents=True)
    synsets = np.array([(i, w, f"words {w}") for i, w in devkit_wnid.items()],
                       dtype=[("ILSVRC2012_ID", "O"), ("WNID", "O"), ("words", "O")])
    scipy.io.savemat(data / layouts.DEVKIT_META, {"synsets": synsets})
    (data / layouts.DEVKIT_GROUND_TRUTH).write_text("".join(f"{i}\n" for i in truth))

    summary = build_tfrecords.build(build_tfrecords.BuildConfig(
        str(tmp_path), str(tmp_path / "out"), train_shards=2, validation_shards=1,
        num_workers=1, image_size=32), log=_quiet())
    assert summary.layout == "ilsvrc_tar" and summary.ok and summary.written == 13
    label_map = LabelMap.read(str(tmp_path / "out"))
    assert label_map.wnids == tuple(wnids)
    assert label_map.names == tuple(f"words {w}" for w in wnids)
    val = _read_split(tmp_path / "out", records.VALIDATION_PREFIX)
    assert [int(e[records.LABEL]) for e in val] == [wnids.index(devkit_wnid[i]) for i in truth]
    assert [e[records.FILENAME].numpy().decode() for e in val] == [
        f"ILSVRC2012_val_{n:08d}.JPEG" for n in range(1, 5)]


def test_cifar10_subset_at_32_pixels(cifar10, tmp_path):
    """CIFAR-10's train/<class>/ + test/<class>/ layout, stored at 32x32 for
    the ReLU/tanh experiment."""
    for split in ("train", "test"):
        for name in ("airplane", "cat", "truck"):
            target = tmp_path / "in" / split / name
            target.mkdir(parents=True)
            for photo in sorted((cifar10 / split / name).glob("*.jpg"))[:4]:
                os.symlink(photo, target / photo.name)
    summary = build_tfrecords.build(build_tfrecords.BuildConfig(
        str(tmp_path / "in"), str(tmp_path / "out"), train_shards=1, validation_shards=1,
        num_workers=1, image_size=32), log=_quiet())
    assert summary.ok and summary.written == 24
    assert LabelMap.read(str(tmp_path / "out")).wnids == ("airplane", "cat", "truck")
    for example in _read_split(tmp_path / "out", records.VALIDATION_PREFIX):
        assert tf.io.decode_jpeg(example[records.ENCODED]).shape == (32, 32, 3)


def test_cli_flagfile_and_strict_exit_code(synthetic, tmp_path):
    """The command line: --flagfile works; --strict fails on the corrupt file."""
    root, made = synthetic
    found = made["train"] + made["validation"]
    flagfile = tmp_path / "flags.txt"
    flagfile.write_text(f"--input_dir={root}\n--output_dir={tmp_path / 'out'}\n"
                        "--train_shards=2\n--validation_shards=1\n--num_workers=1\n"
                        "--image_size=32\n")
    run = run_launcher("data_prep.build_tfrecords", f"--flagfile={flagfile}", "--strict")
    assert run.returncode == 1, run.stderr
    assert f"found {found} = written {found - 1} + skipped 1" in run.stderr
    assert "awkward_corrupt.JPEG" in run.stderr and "--strict" in run.stderr
    assert f"{found}/{found} images" in run.stderr and "images/s, ETA" in run.stderr
    again = run_launcher("data_prep.build_tfrecords", f"--flagfile={flagfile}")
    assert again.returncode == 0, again.stderr
    assert "3 kept from an earlier run" in again.stderr


@pytest.mark.parametrize("fast", [True, False])
def test_slow_checksums_are_said_at_start(tmp_path, monkeypatch, fast):
    """Where google-crc32c has no C extension, its pure Python costs more than
    the conversion: the build's first lines say so (and only then)."""
    write_two_class_tree(tmp_path / "in", 1)
    monkeypatch.setattr(record_file, "FAST_CHECKSUMS", fast)
    log = io.StringIO()
    build_tfrecords.build(build_tfrecords.BuildConfig(
        str(tmp_path / "in"), str(tmp_path / "out"), num_workers=1, image_size=32), log=log)
    warned = [line for line in log.getvalue().splitlines() if "google-crc32c" in line]
    assert warned == ([] if fast else [
        "warning: google-crc32c has no C extension here: record checksums are computed in "
        "pure Python, slower than the conversion itself"])

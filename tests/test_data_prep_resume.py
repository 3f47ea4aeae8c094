"""Resume trusts what it checked (each input's size and mtime), and equal
inputs and settings give byte-identical shards, in any process."""

import glob
import io
import json
import os
import shutil

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from alexnet_tf.data import records
from data_prep import build_tfrecords, make_synthetic, writer


@pytest.fixture
def synthetic(tmp_path):
    root = tmp_path / "in"
    make_synthetic.make_synthetic(make_synthetic.SyntheticConfig(
        str(root), num_classes=3, train_per_class=4, val_per_class=2, seed=5))
    return root


def _build(root, out, **kwargs):
    kwargs = {"train_shards": 3, "validation_shards": 2, "num_workers": 1, **kwargs}
    return build_tfrecords.build(build_tfrecords.BuildConfig(
        str(root), str(out), image_size=32, **kwargs), log=open(os.devnull, "w"))


def _hashes(out):
    return {os.path.basename(p): writer.file_sha256(p)
            for p in glob.glob(records.shard_pattern(str(out), "train"))
            + glob.glob(records.shard_pattern(str(out), "validation"))}


def _shard_of(out, filename):
    for path in glob.glob(records.shard_pattern(str(out), "train")):
        for s in tf.data.TFRecordDataset(path):
            example = records.parse_example(s)
            if example[records.FILENAME].numpy().decode() == filename:
                return os.path.basename(path), tf.io.decode_jpeg(example[records.ENCODED]).numpy()
    return None, None


def _solid_jpeg(colour):
    buffer = io.BytesIO()
    Image.fromarray(np.full((50, 60, 3), colour, np.uint8)).save(buffer, "JPEG", quality=95)
    return buffer.getvalue()


def test_a_replaced_input_redoes_its_shard_and_nothing_else(synthetic, tmp_path):
    out = tmp_path / "out"
    _build(synthetic, out)
    before = _hashes(out)
    victim = sorted((synthetic / "train" / make_synthetic.class_wnid(1)).glob("n9*.JPEG"))[0]
    shard, _ = _shard_of(out, victim.name)
    victim.write_bytes(_solid_jpeg((0, 255, 0)))  # new pixels, new size and mtime

    again = _build(synthetic, out)
    assert (again.shards_written, again.shards_kept) == (1, 4)
    after = _hashes(out)
    assert [n for n in after if after[n] != before[n]] == [shard]
    new_shard, pixels = _shard_of(out, victim.name)
    assert new_shard == shard
    assert abs(pixels.reshape(-1, 3).mean(0) - (0, 255, 0)).max() < 8  # the new pixels


def test_a_fixed_input_loses_its_old_skip_reason(synthetic, tmp_path):
    out = tmp_path / "out"
    first = _build(synthetic, out)
    ((_, corrupt, reason),) = first.skipped
    assert "truncated" in reason
    with open(corrupt, "wb") as f:
        f.write(_solid_jpeg((10, 20, 200)))
    fixed = _build(synthetic, out)
    assert fixed.ok and fixed.written == first.written + 1
    assert (fixed.shards_written, fixed.shards_kept) == (1, 4)


def test_only_a_new_mtime_redoes_the_shard_with_the_same_bytes(synthetic, tmp_path):
    """Size and mtime are the identity (no content hash): a touched file
    redoes its shard, and deterministic serialization gives the same bytes."""
    out = tmp_path / "out"
    _build(synthetic, out)
    before = _hashes(out)
    victim = sorted((synthetic / "train" / make_synthetic.class_wnid(2)).glob("n9*.JPEG"))[0]
    st = victim.stat()
    os.utime(victim, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    again = _build(synthetic, out)
    assert (again.shards_written, again.shards_kept) == (1, 4)
    assert _hashes(out) == before


def test_an_interrupted_rebuild_leaves_no_manifest_to_vouch_for_old_shards(
        synthetic, tmp_path, monkeypatch):
    out = tmp_path / "out"
    _build(synthetic, out)
    victim = sorted((synthetic / "train" / make_synthetic.class_wnid(0)).glob("n9*.JPEG"))[0]
    victim.write_bytes(_solid_jpeg((255, 0, 0)))

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt  # as Ctrl-C in the middle of the shard

    monkeypatch.setattr(writer.convert, "convert", interrupted)
    with pytest.raises(KeyboardInterrupt):
        _build(synthetic, out)
    assert not (out / build_tfrecords.MANIFEST_FILENAME).exists()
    monkeypatch.undo()
    again = _build(synthetic, out)
    assert (again.shards_written, again.shards_kept) == (1, 4)
    assert (out / build_tfrecords.MANIFEST_FILENAME).exists()


def test_builds_in_other_processes_give_byte_identical_shards(synthetic, tmp_path):
    """Before deterministic serialization every process ordered the
    tf.train.Example map its own way: equal records, different bytes. One
    build serializes in this process (one worker), the other in two worker
    processes (forked from a fork server: a fresh interpreter of its own)."""
    manifests = []
    for n, workers in enumerate((1, 2)):
        out = tmp_path / f"out{n}"
        _build(synthetic, out, num_workers=workers, min_images_per_worker=0)
        manifests.append(json.loads((out / build_tfrecords.MANIFEST_FILENAME).read_text()))
        assert {s["name"]: s["sha256"] for s in manifests[-1]["shards"]} == _hashes(out)
    assert manifests[0]["shards"] == manifests[1]["shards"]
    assert sum(s["records"] for s in manifests[0]["shards"]) == 3 * 4 + 3 + 3 * 2


def test_automatic_shard_counts_resume_and_refuse_a_changed_count(tmp_path):
    """Default shard counts follow the data (about 1,000 per shard); the same
    command resumes; an explicit count equal to the automatic one is the same
    build; a count changed by new data asks for --overwrite."""
    root = tmp_path / "in"
    for i in range(2001):  # not images: each is found and skipped, quickly
        path = root / "train" / f"c{i % 2}" / f"{i:05d}.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"not an image")
    out = tmp_path / "out"
    first = build_tfrecords.build(build_tfrecords.BuildConfig(str(root), str(out), num_workers=1),
                                  log=open(os.devnull, "w"))
    assert first.found == 2001 and first.shards_written == 3  # ceil(2001 / 1000)
    assert sorted(os.path.basename(p) for p in glob.glob(str(out / "train-*"))) == [
        f"train-{i:05d}-of-00003" for i in range(3)]
    again = build_tfrecords.build(build_tfrecords.BuildConfig(str(root), str(out), num_workers=1),
                                  log=open(os.devnull, "w"))
    assert (again.shards_written, again.shards_kept) == (0, 3)
    explicit = build_tfrecords.build(build_tfrecords.BuildConfig(
        str(root), str(out), num_workers=1, train_shards=3), log=open(os.devnull, "w"))
    assert explicit.shards_kept == 3
    for i in range(1000):
        (root / "train" / "c0" / f"new{i:04d}.jpg").write_bytes(b"not an image")
    with pytest.raises(build_tfrecords.BuildError,
                       match=r"train_shards: 4 now, 3 before.*--overwrite"):
        build_tfrecords.build(build_tfrecords.BuildConfig(str(root), str(out), num_workers=1),
                              log=open(os.devnull, "w"))
    shutil.rmtree(out)

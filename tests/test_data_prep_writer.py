"""data_prep.sharding + data_prep.writer: shard assignment, safe writes, resume."""

import glob
import os

import pytest
import tensorflow as tf

from alexnet_tf.data import records
from alexnet_tf.data.labels import LabelMap
from data_prep import build_tfrecords, make_synthetic, sharding, writer
from data_prep.layouts import SourceFile


def _files(n):
    return [SourceFile(f"/data/{i:03d}.jpg", f"n{i % 3}") for i in range(n)]


# ---------------------------------------------------------------- sharding

def test_training_shards_are_a_seeded_shuffle_of_every_file():
    files = _files(103)
    plans = sharding.plan_shards(files, "train", 8, order="shuffle", seed=7)
    assert [p.name for p in plans] == [f"train-{i:05d}-of-00008" for i in range(8)]
    flat = [f for p in plans for f in p.files]
    assert sorted(flat, key=lambda f: f.path) == files and flat != files
    sizes = [len(p.files) for p in plans]
    assert max(sizes) - min(sizes) <= 1
    again = sharding.plan_shards(files, "train", 8, order="shuffle", seed=7)
    assert [p.files for p in again] == [p.files for p in plans]
    other = sharding.plan_shards(files, "train", 8, order="shuffle", seed=8)
    assert [p.files for p in other] != [p.files for p in plans]


def test_validation_shards_keep_the_order():
    files = _files(10)
    plans = sharding.plan_shards(files, "validation", 3, order="keep")
    assert [f for p in plans for f in p.files] == files


def test_more_shards_than_files_gives_empty_shards():
    plans = sharding.plan_shards(_files(2), "train", 4, order="shuffle")
    assert sum(len(p.files) for p in plans) == 2 and len(plans) == 4
    with pytest.raises(ValueError, match="shards must be >= 1"):
        sharding.plan_shards(_files(2), "train", 0, order="shuffle")


def test_digest_depends_on_inputs_and_settings():
    (plan,) = sharding.plan_shards(_files(4), "train", 1)
    (fewer,) = sharding.plan_shards(_files(3), "train", 1)
    assert plan.digest("a") == plan.digest("a")
    assert plan.digest("a") != plan.digest("b")
    assert plan.digest("a") != fewer.digest("a")


# ---------------------------------------------------------------- one shard

@pytest.fixture(scope="module")
def tiny_dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("synthetic")
    make_synthetic.make_synthetic(make_synthetic.SyntheticConfig(
        str(root), num_classes=3, train_per_class=4, val_per_class=2, seed=1))
    return root


def _task(tiny_dataset, out, **settings):
    folder = tiny_dataset / "train" / make_synthetic.class_wnid(0)
    wnid = make_synthetic.class_wnid(0)
    files = tuple(SourceFile(str(p), wnid) for p in sorted(folder.iterdir()))
    plan = sharding.ShardPlan("train", 0, 1, files)
    return writer.ShardTask(plan, str(out), writer.ConvertSettings(image_size=32, **settings),
                            LabelMap.from_wnids([wnid], {wnid: "red disc"}), collect_stats=True)


def test_write_shard_then_reuse_it(tiny_dataset, tmp_path):
    task = _task(tiny_dataset, tmp_path)
    seen = []
    result = writer.produce_shard(task, lambda: seen.append(1))
    assert not result.kept
    # Written under the temporary name: only the build's own process publishes it.
    assert not os.path.exists(task.path) and os.path.exists(task.path + writer.TMP_SUFFIX)
    assert writer.reuse_shard(task) is None
    writer.publish(task, result)
    assert len(seen) == len(task.plan.files) == result.records + len(result.skipped)
    # With 3 classes, class 0 holds the grayscale and the corrupt awkward file.
    (skipped,) = result.skipped
    assert skipped[0].endswith("awkward_corrupt.JPEG") and "truncated" in skipped[1]
    assert os.path.getsize(task.path) == result.bytes
    assert writer.file_sha256(task.path) == result.sha256
    assert not glob.glob(str(tmp_path / "*.tmp"))

    parsed = [records.parse_example(s) for s in tf.data.TFRecordDataset(task.path)]
    assert len(parsed) == result.records
    assert {int(p[records.LABEL]) for p in parsed} == {0}
    assert {p[records.TEXT].numpy() for p in parsed} == {b"red disc"}
    assert all(tf.io.decode_jpeg(p[records.ENCODED]).shape == (32, 32, 3) for p in parsed)

    kept = writer.produce_shard(task)
    assert kept.kept and kept.sha256 == result.sha256
    assert kept.moments.count == result.moments.count


def test_changed_shard_or_settings_are_not_reused(tiny_dataset, tmp_path):
    task = _task(tiny_dataset, tmp_path)
    writer.publish(task, writer.write_shard(task))
    assert writer.reuse_shard(task) is not None
    assert writer.reuse_shard(_task(tiny_dataset, tmp_path, quality=80)) is None
    with open(task.path, "r+b") as f:  # same size, one byte different
        f.seek(20)
        byte = f.read(1)
        f.seek(20)
        f.write(bytes([byte[0] ^ 0xFF]))
    assert writer.reuse_shard(task) is None
    os.remove(task.path)
    assert writer.reuse_shard(task) is None


# ---------------------------------------------------------------- resume

def _build(tiny_dataset, out, **kwargs):
    config = build_tfrecords.BuildConfig(
        str(tiny_dataset), str(out), train_shards=3, validation_shards=2, num_workers=1,
        image_size=32, **kwargs)
    return build_tfrecords.build(config, log=open(os.devnull, "w"))


def _shard_hashes(out):
    return {os.path.basename(p): writer.file_sha256(p)
            for p in glob.glob(str(out / "*-of-*")) if not p.endswith(".tmp")}


def test_resume_after_a_kill_keeps_complete_shards_and_redoes_the_rest(tiny_dataset, tmp_path):
    first = _build(tiny_dataset, tmp_path)
    assert first.shards_written == 5 and first.shards_kept == 0
    hashes = _shard_hashes(tmp_path)
    assert len(hashes) == 5

    # The state a kill leaves: one shard half-written under its temporary
    # name, one finished but without its record, one damaged, no manifest.
    os.replace(tmp_path / "train-00001-of-00003", tmp_path / "train-00001-of-00003.tmp")
    with open(tmp_path / "train-00001-of-00003.tmp", "r+b") as f:
        f.truncate(100)
    os.remove(writer.part_path(str(tmp_path), "train-00002-of-00003"))
    with open(tmp_path / "train-00000-of-00003", "ab") as f:
        f.write(b"garbage")
    for name in ("manifest.json", "stats.json", "labels.txt"):
        os.remove(tmp_path / name)

    second = _build(tiny_dataset, tmp_path)
    assert (second.shards_written, second.shards_kept) == (3, 2)
    assert _shard_hashes(tmp_path) == hashes  # the same bytes as an uninterrupted run
    assert not glob.glob(str(tmp_path / "*.tmp"))
    assert second.found == second.written + len(second.skipped) == first.found
    assert (tmp_path / "stats.json").exists() and (tmp_path / "manifest.json").exists()

    third = _build(tiny_dataset, tmp_path)
    assert (third.shards_written, third.shards_kept) == (0, 5)
    forced = _build(tiny_dataset, tmp_path, overwrite=True)
    assert (forced.shards_written, forced.shards_kept) == (5, 0)


def test_other_settings_need_overwrite(tiny_dataset, tmp_path):
    _build(tiny_dataset, tmp_path)
    with pytest.raises(build_tfrecords.BuildError, match="quality.*--overwrite|--overwrite"):
        _build(tiny_dataset, tmp_path, quality=70)
    rebuilt = _build(tiny_dataset, tmp_path, quality=70, overwrite=True)
    assert rebuilt.shards_written == 5


def test_unknown_shards_in_output_dir_are_not_mixed_in(tiny_dataset, tmp_path):
    (tmp_path / "train-00000-of-00009").write_bytes(b"")
    with pytest.raises(build_tfrecords.BuildError, match="unknown build"):
        _build(tiny_dataset, tmp_path)
    _build(tiny_dataset, tmp_path, overwrite=True)
    assert not (tmp_path / "train-00000-of-00009").exists()

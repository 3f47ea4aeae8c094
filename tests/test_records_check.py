"""Training refuses an incomplete or foreign records folder before writing
anything, naming what is missing; foreign records train with the published
statistics only when asked."""

import json
import os
import shutil

import pytest

from alexnet_tf.data import records_check
from alexnet_tf.data.records_check import RecordsError, check_records_dir
from alexnet_tf.training.config import TrainConfig
from alexnet_tf.training.loop import train
from tiny_data import TINY_MODEL, write_tiny_dataset


@pytest.fixture(scope="module")
def complete(tmp_path_factory):
    return write_tiny_dataset(tmp_path_factory.mktemp("records"), num_classes=2,
                              train_per_class=4, val_per_class=2, train_shards=4)


def _copy(complete, tmp_path):
    target = tmp_path / "records"
    shutil.copytree(complete, target)
    return str(target)


def test_a_complete_build_passes_and_sha256_is_checked_on_request(complete, tmp_path):
    assert len(check_records_dir(complete, verify_sha256=True)["shards"]) == 5
    data = _copy(complete, tmp_path)
    shard = os.path.join(data, "train-00001-of-00004")
    with open(shard, "r+b") as f:  # same size, other bytes
        f.seek(20)
        byte = f.read(1)
        f.seek(20)
        f.write(bytes([byte[0] ^ 0xFF]))
    check_records_dir(data)  # sizes still match
    with pytest.raises(RecordsError, match="train-00001-of-00004's sha256 differs"):
        check_records_dir(data, verify_sha256=True)


def _edit_json(path, edit):
    with open(path) as f:
        values = json.load(f)
    edit(values)
    with open(path, "w") as f:
        json.dump(values, f)


def _train_only(d):
    """What data prep writes for an input folder with train/ only."""
    os.remove(os.path.join(d, "validation-00000-of-00001"))
    _edit_json(os.path.join(d, "manifest.json"), lambda m: m.update(shards=[
        s for s in m["shards"] if not s["name"].startswith("validation-")]))


def _empty_validation(d):
    open(os.path.join(d, "validation-00000-of-00001"), "w").close()
    _edit_json(os.path.join(d, "manifest.json"), lambda m: [
        s.update(bytes=0, records=0) for s in m["shards"] if s["name"].startswith("validation-")])


@pytest.mark.parametrize("damage, message", [
    (lambda d: [os.remove(os.path.join(d, f"train-0000{i}-of-00004")) for i in (2, 3)],
     r"2 problem\(s\)\): train-00002-of-00004 is missing; train-00003-of-00004 is missing"),
    (lambda d: open(os.path.join(d, "train-00000-of-00004"), "ab").write(b"x"),
     r"train-00000-of-00004 has \d+ bytes, the manifest says \d+"),
    (lambda d: os.remove(os.path.join(d, "stats.json")), "has no stats.json"),
    (lambda d: os.remove(os.path.join(d, "manifest.json")),
     "has no manifest.json: the build did not finish"),
    (lambda d: os.remove(os.path.join(d, "labels.txt")), "has no labels.txt"),
    (lambda d: open(os.path.join(d, "manifest.json"), "w").write("{"), "cannot read it"),
    (lambda d: shutil.copy(os.path.join(d, "train-00000-of-00004"),
                           os.path.join(d, "train-00000-of-00003")),
     r"train-00000-of-00003 is not in the manifest \(left from another build\?\)"),
    (_train_only, r"has no validation shards .*training validates at each epoch end"),
    (_empty_validation, r"lists 1 validation shard\(s\) and no validation records"),
    (lambda d: open(os.path.join(d, "labels.txt"), "w").write("0\tn00000000\tcolour 0\n"),
     r"labels.txt names 1 class: a classifier needs at least 2"),
    (lambda d: _edit_json(os.path.join(d, "stats.json"), lambda v: v.update(num_classes=3)),
     r"stats.json counts 3 classes, labels.txt names 2"),
])
def test_an_incomplete_folder_is_refused_naming_what_is_missing(complete, tmp_path, damage,
                                                                message):
    data = _copy(complete, tmp_path)
    damage(data)
    with pytest.raises(RecordsError, match=message):
        check_records_dir(data)
    # Training refuses it before anything lands in the model_dir.
    model_dir = tmp_path / "run"
    with pytest.raises(RecordsError, match=message):
        train(TrainConfig(data, str(model_dir), model=TINY_MODEL, max_steps=1))
    assert not model_dir.exists()


@pytest.mark.slow  # trains
def test_foreign_records_train_only_with_the_published_statistics(complete, tmp_path):
    """And a partial copy of them only when asked too: one training shows both."""
    data = _copy(complete, tmp_path)  # as tensorflow/models' files: no manifest, no stats
    os.remove(os.path.join(data, "manifest.json"))
    os.remove(os.path.join(data, "stats.json"))
    with pytest.raises(RecordsError, match="set published_stats"):
        check_records_dir(data)
    assert check_records_dir(data, published_stats=True) == {}
    os.remove(os.path.join(data, "train-00003-of-00004"))  # a partial copy
    with pytest.raises(RecordsError, match="set partial_shard_sets to train on these shards"):
        check_records_dir(data, published_stats=True)
    assert check_records_dir(data, published_stats=True, partial_shard_sets=True) == {}
    summary = train(TrainConfig(data, str(tmp_path / "run"), published_stats=True,
                                partial_shard_sets=True, batch_size=4, max_steps=2,
                                steps_per_epoch=2, model={**TINY_MODEL, "dropout": 0.0}))
    assert summary["step"] == 2
    with open(tmp_path / "run" / "model_config.json") as f:
        saved = json.load(f)
    from alexnet_tf.data.dataset_stats import IMAGENET_MEAN_RGB
    assert saved["mean_rgb"] == pytest.approx(list(IMAGENET_MEAN_RGB))


@pytest.mark.parametrize("damage, message", [
    # 6 of 8 train shards: a partial copy.
    (lambda d: [os.remove(os.path.join(d, f"train-0000{i}-of-00008")) for i in (6, 7)],
     r"incomplete shard sets \(2 problem\(s\)\): train-00006-of-00008 is missing; "
     r"train-00007-of-00008 is missing"),
    (lambda d: shutil.copy(os.path.join(d, "validation-00000-of-00001"),
                           os.path.join(d, "validation-00001-of-00003")),
     r"validation shards of 2 builds \(-of-00001, -of-00003\); "
     r"validation-00000-of-00003 is missing; validation-00002-of-00003 is missing"),
    (lambda d: [open(os.path.join(d, f"train-0000{i}-of-00008"), "w").close()
                for i in range(8)], "every train shard is empty"),
])
def test_foreign_records_need_every_shard_of_each_set(tmp_path, damage, message):
    data = write_tiny_dataset(tmp_path / "foreign", num_classes=2, train_per_class=4,
                              val_per_class=2, train_shards=8)
    os.remove(os.path.join(data, "manifest.json"))
    os.remove(os.path.join(data, "stats.json"))
    check_records_dir(data, published_stats=True)  # complete: accepted
    damage(data)
    with pytest.raises(RecordsError, match=message):
        check_records_dir(data, published_stats=True)
    model_dir = tmp_path / "run"
    with pytest.raises(RecordsError, match=message):
        train(TrainConfig(data, str(model_dir), published_stats=True, model=TINY_MODEL,
                          max_steps=1))
    assert not model_dir.exists()


def test_a_one_class_build_is_refused_before_writing(tmp_path):
    data = write_tiny_dataset(tmp_path / "one", num_classes=1, train_per_class=4,
                              val_per_class=2)
    model_dir = tmp_path / "run"
    with pytest.raises(RecordsError, match=r"one/labels.txt names 1 class"):
        train(TrainConfig(data, str(model_dir), model=TINY_MODEL, max_steps=1))
    assert not model_dir.exists()


def test_manifest_name_is_the_data_preps():
    from data_prep import build_tfrecords
    assert records_check.MANIFEST_FILENAME == build_tfrecords.MANIFEST_FILENAME


def test_an_unfinished_data_prep_build_is_refused_even_with_published_stats(tmp_path):
    """A rebuild removes the manifest first and replaces shards one by one: killed
    halfway, the folder holds a complete -of-N set mixing two builds."""
    from tree_data import build_quietly, write_jpeg
    for i, cls in enumerate(("a", "b")):
        write_jpeg(str(tmp_path / "in" / "train" / cls / f"{i}.jpg"))
        write_jpeg(str(tmp_path / "in" / "val" / cls / f"{i}.jpg"))
    out = tmp_path / "records"
    assert build_quietly(tmp_path / "in", out).ok
    check_records_dir(str(out))  # finished: accepted
    os.remove(out / "manifest.json")  # as a rebuild does when it starts
    for published in (False, True):
        with pytest.raises(RecordsError, match=r"records is a data prep build that did not "
                                               r"finish \(it has .parts/ but no manifest.json"):
            check_records_dir(str(out), published_stats=published)

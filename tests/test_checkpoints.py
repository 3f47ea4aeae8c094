"""Checkpoints: a resume restores everything (weights, momentum slots, step,
epoch, learning-rate schedule), the best checkpoint is kept, and
fine-tuning copies compatible layers and re-initializes the classifier."""

import os

import keras
import numpy as np
import pytest
import tensorflow as tf

from alexnet_tf.training import checkpoints, schedules
from alexnet_tf.figures import tb_logs
from alexnet_tf.training.config import TrainConfig
from alexnet_tf.model.alexnet import build_alexnet
from alexnet_tf.data.dataset_stats import read_rgb_stats
from alexnet_tf.errors import InputError
from alexnet_tf.training import fine_tune, model_dir as model_dir_files
from alexnet_tf.training.loop import make_optimizer, train
from tiny_data import TINY_MODEL, tiny_train_config, write_tiny_dataset


def _config(data_dir, model_dir, **overrides):
    """The settings conftest's tiny_training ran with (two epochs of two
    steps, plateau patience 1)."""
    return tiny_train_config(data_dir, model_dir, **{"epochs": 2, "plateau_patience": 1,
                                                     **overrides})


@pytest.fixture
def run(tiny_training):
    return tiny_training.data_dir, tiny_training.model_dir, tiny_training.summary


def _fresh_state(model_dir, config):
    model = checkpoints.build_model_from_config(model_dir_files.read_model_config(model_dir))
    optimizer = make_optimizer(config)
    optimizer.build(model.trainable_variables)
    return model, optimizer, schedules.make_schedule(config)


def test_restore_brings_back_every_saved_value(run, tmp_path):
    data_dir, model_dir, summary = run
    config = _config(data_dir, model_dir)
    model, optimizer, schedule = _fresh_state(model_dir, config)
    state = checkpoints.TrainingCheckpoints(model_dir, model, optimizer, schedule,
                                            write_dir=str(tmp_path))
    restored = state.restore_latest()
    assert restored.endswith("ckpt-4")
    assert int(state.step.numpy()) == 4 and int(state.epoch.numpy()) == 2
    assert int(optimizer.iterations.numpy()) == 4
    assert any(np.abs(v.numpy()).max() > 0 for v in optimizer.velocities)  # momentum slots
    history = [h["val_top1_error"] for h in summary["history"]]
    expected_lr = 0.01 if history[1] < history[0] else 0.001  # patience 1
    assert schedule.current() == pytest.approx(expected_lr)
    assert float(optimizer.learning_rate.numpy()) == pytest.approx(expected_lr)
    assert float(schedule.best_error.numpy()) == pytest.approx(min(history))

    # Saving the restored state again reproduces the checkpoint value for value,
    # so nothing (weights, slots, counters, schedule) was left at its default.
    again = state.save()
    original, copy = tf.train.load_checkpoint(restored), tf.train.load_checkpoint(again)
    keys = [k for k, _ in tf.train.list_variables(restored)
            if k not in ("_CHECKPOINTABLE_OBJECT_GRAPH", "save_counter/.ATTRIBUTES/VARIABLE_VALUE")]
    assert len(keys) > 60
    for key in keys:
        np.testing.assert_array_equal(copy.get_tensor(key), original.get_tensor(key), err_msg=key)


def test_best_checkpoint_is_the_lowest_validation_error(run):
    data_dir, model_dir, summary = run
    info = model_dir_files.read_best_info(model_dir)
    errors = [h["val_top1_error"] for h in summary["history"]]
    assert info["val_top1_error"] == pytest.approx(min(errors))
    assert info["epoch"] == 1 + errors.index(min(errors))  # the first of equals wins
    best = checkpoints.restore_model(model_dir, "best")
    assert os.path.dirname(best.checkpoint_path) == os.path.join(model_dir, "best")
    assert best.checkpoint_path.endswith(f"ckpt-{info['step']}")
    latest = checkpoints.restore_model(model_dir, "latest")
    assert latest.checkpoint_path.endswith("ckpt-4")
    assert best.count_params() == latest.count_params()
    with pytest.raises(FileNotFoundError, match="no latest checkpoint in"):
        checkpoints.checkpoint_path(data_dir, "latest")
    with pytest.raises(FileNotFoundError, match="model_config.json not found"):
        checkpoints.restore_model(data_dir)


def test_fine_tuning_to_new_classes_reinitializes_only_the_classifier(run):
    _, model_dir, _ = run
    source = checkpoints.restore_model(model_dir, "latest")
    target = build_alexnet(num_classes=5, **TINY_MODEL)
    fresh_fc8 = target.get_layer("fc8_a").get_weights()[0].copy()
    report = fine_tune.copy_matching_weights(target, fine_tune.load_source_model(model_dir))
    assert sorted(report["reinitialized"]) == ["fc8_a", "fc8_b"]
    assert {"conv1_a", "conv1_b", "conv5_b", "fc6_a", "fc7_b"} <= set(report["kept"])
    for name in report["kept"]:
        for mine, theirs in zip(target.get_layer(name).get_weights(),
                                source.get_layer(name).get_weights()):
            np.testing.assert_array_equal(mine, theirs, err_msg=name)
    np.testing.assert_array_equal(target.get_layer("fc8_a").get_weights()[0], fresh_fc8)


def test_fine_tuning_from_a_keras_file_keeps_every_layer(run, tmp_path):
    _, model_dir, _ = run
    source = checkpoints.restore_model(model_dir, "best")
    path = str(tmp_path / "source.keras")
    source.save(path)
    # The input constants (mean, std) belong to the target's data, not to
    # the weights; the same ones here, so the outputs must match.
    target = build_alexnet(num_classes=3, mean_rgb=source.mean_rgb, std_rgb=source.std_rgb,
                           **TINY_MODEL)
    report = fine_tune.copy_matching_weights(target, fine_tune.load_source_model(path))
    assert report["reinitialized"] == []
    x = np.random.default_rng(0).uniform(0, 255, (2, 67, 67, 3)).astype(np.float32)
    # fc6 and the output: a tiny fresh net's softmax is near uniform, its fc6 is not.
    def outputs(model):
        return keras.Model(model.input, [model.get_layer("fc6").output, model.output])(x)
    expected_fc6, expected = (t.numpy() for t in outputs(source))
    assert np.abs(expected_fc6[0] - expected_fc6[1]).max() > 1e-2  # the net reads its input
    target_fc6, target_out = outputs(target)
    np.testing.assert_allclose(target_fc6, expected_fc6, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(target_out, expected, rtol=1e-5, atol=1e-6)


@pytest.mark.slow  # three trainings (about 4 CPU-s each)
def test_train_with_init_from_starts_from_the_source_weights(run, tmp_path, capsys):
    _, model_dir, _ = run
    data5 = write_tiny_dataset(tmp_path / "data5", num_classes=5, train_per_class=4,
                               val_per_class=1)
    tuned_dir = str(tmp_path / "tuned")
    summary = train(_config(data5, tuned_dir, epochs=1, steps_per_epoch=1,
                            init_from=os.path.join(model_dir, "best")))
    assert summary["step"] == 1 and summary["resumed_from"] is None
    # The run's header names the input normalization it starts with.
    assert "input normalization: the source model's input mean and std" in \
        capsys.readouterr().out
    tuned = model_dir_files.read_model_config(tuned_dir)
    assert tuned["num_classes"] == 5
    # A trained conv1 expects its own input normalization: kept by default...
    source = model_dir_files.read_model_config(model_dir)
    data_mean = read_rgb_stats(os.path.join(data5, "stats.json")).mean_rgb
    assert np.abs(np.subtract(source["mean_rgb"], data_mean)).max() > 1.0  # they differ here
    assert (tuned["mean_rgb"], tuned["std_rgb"]) == (source["mean_rgb"], source["std_rgb"])
    # ... and a resume keeps it too (model_config.json agrees with the first run).
    # Training again resumes where it stopped: the step, the epoch, the
    # optimizer's own counter and the logged steps run on from the checkpoint.
    again = train(_config(data5, tuned_dir, epochs=2, steps_per_epoch=1,
                          init_from=os.path.join(model_dir, "best")))
    assert again["step"] == 2 and again["resumed_from"].endswith("ckpt-1")
    reader = tf.train.load_checkpoint(tf.train.latest_checkpoint(tuned_dir))
    assert reader.get_tensor("optimizer/_iterations/.ATTRIBUTES/VARIABLE_VALUE") == 2
    assert reader.get_tensor("epoch/.ATTRIBUTES/VARIABLE_VALUE") == 2
    logged = tb_logs.read_scalars(os.path.join(tuned_dir, "logs"))["train"]["loss"]
    assert [step for step, _ in logged] == [1, 2]
    # The other choice: this data's statistics. No model settings in this
    # run: it takes the source's architecture (width, input size, fc units).
    train(TrainConfig(data5, str(tmp_path / "tuned_data"), batch_size=8, epochs=1,
                      steps_per_epoch=1, init_from=os.path.join(model_dir, "best"),
                      init_normalization="data"))
    assert "input normalization: this data's mean and std" in capsys.readouterr().out
    by_data = model_dir_files.read_model_config(str(tmp_path / "tuned_data"))
    np.testing.assert_allclose(by_data["mean_rgb"], data_mean)
    assert (by_data["width"], by_data["image_size"], tuple(by_data["fc_units"])) == (
        TINY_MODEL["width"], TINY_MODEL["image_size"], TINY_MODEL["fc_units"])
    with pytest.raises(InputError, match="init_from .*nothing-here: no checkpoint"):
        fine_tune.load_source_model(str(tmp_path / "nothing-here"))


def test_model_config_from_before_standardization_builds_mean_only_input():
    config = {"num_classes": 3, "mean_rgb": [1.0, 2.0, 3.0], "init": "caffe", **TINY_MODEL}
    model = checkpoints.build_model_from_config(config)  # no "std_rgb": the first release
    assert model.get_layer("mean_subtraction").std is None


def test_a_model_config_from_before_fc_units_is_the_papers_widths(run, tmp_path):
    """model_config.json files written before fc_units was a setting hold no
    fc_units: they load (and resume) as the paper's 4,096 + 4,096."""
    from alexnet_tf.model.alexnet import FC_UNITS, saved_config_defaults
    _, model_dir, _ = run
    saved = model_dir_files.read_model_config(model_dir)
    assert tuple(saved["fc_units"]) == TINY_MODEL["fc_units"]  # written since
    old = {k: v for k, v in saved.items() if k != "fc_units"}
    assert saved_config_defaults(old)["fc_units"] == FC_UNITS == (4096, 4096)
    old_dir = tmp_path / "old"
    old_dir.mkdir()
    model_dir_files.write_model_config(str(old_dir), old)
    # A resume with the paper's widths spelled out is the same model...
    model_dir_files.refuse_changed_model_config(str(old_dir), {**old, "fc_units": [4096, 4096]})
    # ... and the tiny widths are not.
    with pytest.raises(InputError, match="fc_units"):
        model_dir_files.refuse_changed_model_config(str(old_dir), saved)


def test_a_linked_checkpoint_restores_and_survives_the_original(tmp_path):
    """link_checkpoint (the Caffe import's best/): one copy on disk, a
    second name that tools find and that outlives the first."""
    from alexnet_tf.training.checkpoints import link_checkpoint
    weights = tf.Variable(np.arange(6, dtype=np.float32))
    prefix = tf.train.Checkpoint(w=weights).save(str(tmp_path / "ckpt"))
    link_checkpoint(prefix, str(tmp_path / "staged"))
    os.rename(tmp_path / "staged", tmp_path / "best")  # as the import's hidden folder is
    linked = tf.train.latest_checkpoint(str(tmp_path / "best"))
    assert linked == str(tmp_path / "best" / os.path.basename(prefix))
    data = [n for n in os.listdir(tmp_path / "best") if ".data-" in n]
    assert os.stat(tmp_path / "best" / data[0]).st_nlink == 2
    for name in os.listdir(tmp_path):
        if name.startswith(os.path.basename(prefix) + "."):
            os.remove(tmp_path / name)
    restored = tf.Variable(np.zeros(6, np.float32))
    tf.train.Checkpoint(w=restored).restore(linked).assert_consumed()
    np.testing.assert_array_equal(restored.numpy(), np.arange(6))

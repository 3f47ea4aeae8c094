"""The training loop on tiny synthetic records: it learns, it logs, and a
non-finite loss stops it at once naming the step."""

import math

import numpy as np
import pytest
import tensorflow as tf

from alexnet_tf.training import model_dir as model_dir_files
from alexnet_tf.figures import tb_logs
from alexnet_tf.training.config import ModelConfig, TrainConfig
from alexnet_tf.training.loop import NonFiniteLossError, train
from conftest import copy_tree
from tiny_data import TINY_LEARNING_RATE, tiny_train_config, write_tiny_dataset


@pytest.fixture
def data_dir(tiny_records):
    return tiny_records


def _config(data_dir, model_dir, **overrides):
    # The default (He) init, no dropout: the colours are learnt within a few
    # dozen steps.
    return tiny_train_config(data_dir, model_dir, **{
        "steps_per_epoch": 30, "log_every_steps": 5, "seed": 1, "learning_rate": 0.001,
        **overrides})


@pytest.mark.slow  # a 40-step train() of its own (~6 CPU-s)
def test_loss_falls_and_the_run_is_logged(tmp_path, capsys):
    # Images at the input size, light noise, no PCA lighting: little left to
    # chance, so the run learns the same way every time.
    data_dir = write_tiny_dataset(tmp_path / "data", num_classes=3, size=67, noise=10.0)
    model_dir = tmp_path / "run"
    summary = train(_config(data_dir, model_dir, steps_per_epoch=40,
                            learning_rate=TINY_LEARNING_RATE,
                            lighting_stddev=0.0))

    assert summary["step"] == 40
    curve = tb_logs.read_scalars(str(model_dir / "logs"))
    losses = [v for _, v in curve["train"]["loss"]]
    assert [s for s, _ in curve["train"]["loss"]] == list(range(5, 41, 5))
    chance = math.log(3)
    # Well below the loss of a chance-level guess, and far below the start.
    assert losses[-1] < 0.5 * chance < losses[0], losses
    assert summary["val_top1_error"] < 0.5  # chance is 2/3
    for tag in ("top1_error", "top5_error", "learning_rate", "images_per_second"):
        assert tag in curve["train"], tag
    assert set(curve["validation"]) >= {"loss", "top1_error", "top5_error"}

    # The model_dir holds what evaluation and export need.
    config = model_dir_files.read_model_config(str(model_dir))
    assert config["num_classes"] == 3 and config["image_size"] == 67
    assert (model_dir / "labels.txt").exists() and (model_dir / "stats.json").exists()
    assert tf.train.latest_checkpoint(str(model_dir)).endswith("ckpt-40")
    out = capsys.readouterr().out
    assert "step 40/40" in out and "Training finished" in out


@pytest.mark.slow  # two train() runs of its own (~5 CPU-s)
def test_non_finite_loss_stops_naming_the_step_and_keeps_the_last_good_checkpoint(
        data_dir, tiny_training, tmp_path):
    # lr 1e30: the first update pushes the weights past float32's range, while
    # that step's loss (computed before the update) is still finite. A loop of
    # two steps (steps_per_loop 4, a checkpoint every 2) names both steps.
    bad_dir = tmp_path / "bad"
    with pytest.raises(NonFiniteLossError, match=r"at step [12]\b") as info:
        train(_config(data_dir, bad_dir, learning_rate=1e30, checkpoint_every_steps=2,
                      log_every_steps=10, steps_per_loop=1))
    assert "Last good checkpoint: none" in str(info.value)
    assert tf.train.latest_checkpoint(str(bad_dir)) is None  # nothing saved after it
    # From a good start (the shared tiny training, ckpt-4), resumed with the
    # rate allowed to change: stopped in its next loop, the good checkpoint kept.
    model_dir = copy_tree(tiny_training.model_dir, tmp_path / "good")
    with pytest.raises(NonFiniteLossError, match="in steps 5-6") as info:
        train(_resume_config(tiny_training, model_dir, learning_rate=1e30,
                             allow_changes=["learning_rate"], checkpoint_every_steps=2,
                             log_every_steps=10, steps_per_loop=4))
    latest = tf.train.latest_checkpoint(model_dir)
    assert f"Last good checkpoint: {latest}" in str(info.value) and latest.endswith("ckpt-4")
    reader = tf.train.load_checkpoint(latest)
    assert reader.get_tensor("step/.ATTRIBUTES/VARIABLE_VALUE") == 4
    assert all(np.all(np.isfinite(reader.get_tensor(k))) for k, _ in
               tf.train.list_variables(latest) if k.startswith("model/"))


# bfloat16 also shows an epoch to be a full pass with the last partial batch
# rounded up: 48 training images at batch 10 are 5 steps, not 4.
@pytest.mark.slow  # a train() each (XLA's compile: ~11 CPU-s for float16, ~4 bfloat16)
@pytest.mark.parametrize("precision, jit, run", [
    ("mixed_float16", True, {"steps_per_epoch": 2}),
    ("mixed_bfloat16", False, {"batch_size": 10, "steps_per_epoch": None})])
def test_half_precision_trains_with_lrn(data_dir, tmp_path, precision, jit, run):
    """XLA's float16 LRN mixed precisions and TensorFlow has no bfloat16 LRN:
    both train now that LRN runs in float32; float16 with loss scaling."""
    summary = train(_config(data_dir, tmp_path / "run", validation_steps=1,
                            mixed_precision=precision, jit_compile=jit, **run))
    assert math.isfinite(summary["train_loss"])
    if precision == "mixed_bfloat16":
        assert summary["steps_per_epoch"] == 5 and summary["step"] == 5
    else:
        assert summary["step"] == 2
        latest = tf.train.latest_checkpoint(str(tmp_path / "run"))
        reader = tf.train.load_checkpoint(latest)
        scale_keys = [k for k, _ in tf.train.list_variables(latest) if "dynamic_scale" in k]
        assert scale_keys  # the loss scale is part of the checkpoint
        assert all(reader.get_tensor(k).dtype == "float32" for k in scale_keys)


def test_model_input_is_standardized_with_the_data_stats_unless_turned_off(tmp_path):
    from alexnet_tf.data import dataset_stats, labels
    from alexnet_tf.training.loop import model_kwargs_for
    rgb = dataset_stats.RGBStats((10.0, 20.0, 30.0), (4.0, 1.0, 0.5),
                                 ((1.0, 0.0, 0.0), (0.0, 1.0, 0.0), (0.0, 0.0, 1.0)))
    label_map = labels.LabelMap(("n01", "n02"), ("a", "b"))
    on = model_kwargs_for(TrainConfig(data_dir="d", model_dir="m"), label_map, rgb)
    assert on["mean_rgb"] == [10.0, 20.0, 30.0] and on["num_classes"] == 2
    np.testing.assert_allclose(on["std_rgb"], np.sqrt([4.0 * 255, 1.0 * 255, 0.5 * 255]))
    off = model_kwargs_for(TrainConfig(data_dir="d", model_dir="m", model=ModelConfig(
        init="paper", standardize=False)), label_map, rgb)
    assert off["std_rgb"] is None and off["init"] == "paper" and "standardize" not in off


def _resume_config(run, model_dir, **overrides):
    """The shared tiny training's own settings (conftest.tiny_training), one
    epoch more (epochs and max_steps may change on a resume)."""
    return tiny_train_config(run.data_dir, model_dir, **{
        "epochs": 3, "plateau_patience": 1, **overrides})


@pytest.mark.slow  # a resumed train() (~5 CPU-s)
def test_a_resume_accepts_spelled_out_defaults_and_refuses_a_changed_structure(
        tiny_training, tmp_path):
    from alexnet_tf.errors import InputError
    model_dir = copy_tree(tiny_training.model_dir, tmp_path / "run")
    # Resuming with another architecture is refused up front.
    with pytest.raises(ValueError, match="model_config.json differs"):
        train(_resume_config(tiny_training, model_dir, model={"width": 0.125}))
    # towers=2 and lrn=True are the model's defaults: the same model.
    # (A changed learning_rate is refused unless allowed: test_resume_changes.py.)
    again = train(_resume_config(tiny_training, model_dir, max_steps=5,
                                 model={"towers": 2, "lrn": True}))
    assert again["step"] == 5 and again["resumed_from"]
    # A loss-scaled optimizer cannot restore a plain one's checkpoint, even when
    # the change is allowed: one clear error.
    with pytest.raises(InputError, match="does not match this run's settings"):
        train(_resume_config(tiny_training, model_dir, max_steps=6,
                             mixed_precision="mixed_float16", allow_changes=["mixed_precision"]))


@pytest.mark.slow  # a train() of its own, up to the bad record (~3 CPU-s)
def test_labels_out_of_range_are_one_error_naming_the_record(data_dir, tmp_path):
    import os
    import shutil
    from alexnet_tf.errors import InputError
    from alexnet_tf.training.config import ConfigError
    # A data prep build's labels are 0-based: label_offset is refused up front.
    with pytest.raises(ConfigError, match=r"data prep build .* 0-based already") as info:
        train(_config(data_dir, tmp_path / "run", max_steps=2, label_offset=1))
    assert info.value.field == "label_offset" and not (tmp_path / "run").exists()
    # The same records as foreign ones (no manifest): the input pipeline finds
    # label -1 and names the record.
    foreign = tmp_path / "foreign"
    shutil.copytree(data_dir, foreign)
    os.remove(foreign / "manifest.json")
    with pytest.raises(InputError, match=r"label out of range \[0, 3\) .* label -1 record "
                                         r"\S+\.JPEG in shard \S+train-0000"):
        train(_config(str(foreign), tmp_path / "run2", max_steps=2, label_offset=1,
                      published_stats=True))

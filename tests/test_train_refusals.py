"""Settings that need the strategy, the devices or the init_from source are
refused as one user error (InputError / ConfigError, naming the field)
before anything is written to the model_dir; fine-tuning inherits the
source's init when the run leaves it unset."""

import json
import logging
import os

import pytest

from alexnet_tf.errors import InputError
from alexnet_tf.training import model_dir as model_dir_files
from alexnet_tf.training.config import ConfigError, TrainConfig
from alexnet_tf.training.loop import train
from launchers import run_launcher
from tiny_data import TINY_MODEL, tiny_flags, write_tiny_dataset


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return write_tiny_dataset(tmp_path_factory.mktemp("data"), num_classes=2,
                              train_per_class=4, val_per_class=2)


def _config(data_dir, model_dir, **overrides):
    values = dict(batch_size=4, epochs=1, steps_per_epoch=1, max_steps=1, seed=0,
                  model={**TINY_MODEL, "dropout": 0.0})
    values.update(overrides)
    return TrainConfig(data_dir=str(data_dir), model_dir=str(model_dir), **values)


@pytest.mark.parametrize("overrides, field, message", [
    (dict(strategy="towers", tower_devices=("/CPU:0", "/GPU:7")), "tower_devices",
     r"tower device '/GPU:7' is not among this process's devices"),
    (dict(strategy="towers", tower_devices=("/CPU:0", "/CPU:1"),
          model={**TINY_MODEL, "towers": 1}), "tower_devices",
     r"the model has one column \(towers=1\): nothing to place"),
    (dict(strategy="mirrored", devices=("/CPU:0", "/GPU:5")), "devices",
     r"device '/GPU:5' is not among this process's devices"),
    (dict(strategy="mirrored", devices=("/CPU:0", "/CPU:1"), batch_size=7), "batch_size",
     r"must be divisible by the 2 replicas of strategy mirrored"),
])
def test_strategy_and_device_mistakes_are_refused_before_writing(data_dir, tmp_path,
                                                                 overrides, field, message):
    model_dir = tmp_path / "run"
    with pytest.raises(ConfigError, match=message) as info:
        train(_config(data_dir, model_dir, **overrides))
    assert info.value.field == field
    assert not model_dir.exists()


def test_the_launcher_refuses_a_missing_tower_device_in_one_line(data_dir, tmp_path):
    model_dir = tmp_path / "run"
    result = run_launcher(
        "launch.train", f"--data_dir={data_dir}", f"--model_dir={model_dir}",
        "--strategy=towers", "--tower_devices=/CPU:0,/GPU:7", *tiny_flags(), "--max_steps=1",
        "--batch_size=4", cwd=tmp_path)
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2, result.stderr
    assert len(lines) == 1 and lines[0].startswith(
        "launch.train: error: --tower_devices=/CPU:0,/GPU:7: tower device '/GPU:7' is not "
        "among"), result.stderr
    assert not model_dir.exists()


def test_a_stats_file_without_rgb_figures_is_one_error(data_dir, tmp_path):
    import shutil
    data = tmp_path / "data"
    shutil.copytree(data_dir, data)
    with open(data / "stats.json", "w") as f:
        json.dump({"splits": {}}, f)
    with pytest.raises(InputError, match=r"stats.json: cannot use it .*no valid 'rgb'"):
        train(_config(data, tmp_path / "run"))
    assert not (tmp_path / "run").exists()


def test_an_init_from_file_keras_cannot_load_is_one_error(data_dir, tmp_path):
    bad = tmp_path / "model.keras"
    bad.write_text("not a zip")
    with pytest.raises(InputError, match=r"init_from .*model.keras: not a Keras model file"):
        train(_config(data_dir, tmp_path / "run", init_from=str(bad)))
    assert not (tmp_path / "run").exists()
    import keras
    other = tmp_path / "sequential.keras"  # loads, but is not an AlexNet
    keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)]).save(other)
    with pytest.raises(InputError, match=r"sequential.keras: a Sequential, not an AlexNet"):
        train(_config(data_dir, tmp_path / "run", init_from=str(other)))
    assert not (tmp_path / "run").exists()


@pytest.mark.slow  # a train() of its own (~5 CPU-s)
def test_fine_tuning_inherits_the_source_init_unless_the_run_sets_it(data_dir, tmp_path,
                                                                     caplog):
    # A source as the Caffe import makes it: init "caffe", mean-only input.
    from alexnet_tf.model.alexnet import build_alexnet
    source = tmp_path / "source.keras"
    model = build_alexnet(num_classes=3, init="caffe", std_rgb=None, dropout=0.0, **TINY_MODEL)
    model.save(source)
    caplog.set_level(logging.WARNING, logger="alexnet_tf")
    tuned = tmp_path / "tuned"
    train(TrainConfig(str(data_dir), str(tuned), batch_size=4, epochs=1, steps_per_epoch=1,
                      max_steps=1, init_from=str(source)))  # no model settings
    saved = model_dir_files.read_model_config(str(tuned))
    assert saved["init"] == "caffe" and saved["std_rgb"] is None
    assert saved["image_size"] == TINY_MODEL["image_size"]
    assert not [r for r in caplog.records if "std_rgb" in r.getMessage()], caplog.text
    # A run that sets init keeps its own: the model settings the run writes to
    # model_config.json (above), resolved without a second training.
    from alexnet_tf.data import dataset_stats, labels
    from alexnet_tf.training.loop import model_kwargs_for
    paper = TrainConfig(str(data_dir), str(tmp_path / "tuned_paper"), init_from=str(source),
                        model={"init": "paper"})
    kwargs = model_kwargs_for(
        paper, labels.LabelMap.read(os.path.join(data_dir, labels.LABELS_FILENAME)),
        dataset_stats.read_rgb_stats(os.path.join(data_dir, dataset_stats.STATS_FILENAME)),
        model)
    assert kwargs["init"] == "paper" and kwargs["image_size"] == TINY_MODEL["image_size"]


def test_a_data_dir_whose_name_is_not_utf8_is_refused_by_name(data_dir, tmp_path):
    """Data prep writes into such a folder; TensorFlow's file functions cannot
    open it (a UnicodeEncodeError traceback), so training says so in one line."""
    import shutil
    odd = os.fsdecode(os.path.join(os.fsencode(str(tmp_path)), b"records\xff"))
    shutil.copytree(data_dir, odd)
    model_dir = tmp_path / "run"
    with pytest.raises(InputError, match=r"data_dir='.*records\\+xff': TensorFlow's file "
                                         "functions take UTF-8 names only"):
        train(_config(odd, model_dir))
    assert not model_dir.exists()

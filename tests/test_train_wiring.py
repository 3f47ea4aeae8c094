"""What `train()` passes to its input pipelines: the shuffle buffer sized
to the data, the validation subset read across shards. (The fine-tuning
header naming its input normalization: test_checkpoints.py, in the
init_from runs.)"""

import shutil

import pytest

from alexnet_tf.data import input_pipeline
from alexnet_tf.training.config import TrainConfig
from alexnet_tf.training.loop import train
from tiny_data import tiny_train_config, write_tiny_dataset


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    # 3 classes x 4 training images: far fewer than the default shuffle buffer.
    return write_tiny_dataset(tmp_path_factory.mktemp("data"), num_classes=3,
                              train_per_class=4, val_per_class=2)


def _config(data_dir, model_dir, **overrides):
    return tiny_train_config(data_dir, model_dir, **{
        "batch_size": 4, "steps_per_epoch": 1, "seed": 1, "learning_rate": 0.001,
        "shuffle_buffer": TrainConfig.shuffle_buffer, **overrides})


@pytest.fixture
def pipeline_calls(monkeypatch):
    """The keyword arguments of every train and eval pipeline `train()` builds."""
    calls = {"train": [], "eval": []}
    real_train, real_eval = input_pipeline.make_train_dataset, input_pipeline.make_eval_dataset

    def spy_train(*args, **kwargs):
        calls["train"].append(kwargs)
        return real_train(*args, **kwargs)

    def spy_eval(*args, **kwargs):
        calls["eval"].append(kwargs)
        return real_eval(*args, **kwargs)

    monkeypatch.setattr(input_pipeline, "make_train_dataset", spy_train)
    monkeypatch.setattr(input_pipeline, "make_eval_dataset", spy_eval)
    return calls


@pytest.mark.slow  # trains
def test_the_shuffle_buffer_and_the_validation_read_follow_the_data(
        data_dir, tmp_path, pipeline_calls):
    """The buffer never exceeds the training set (12 images here); a
    validation subset is read across shards, the whole split in order."""
    assert TrainConfig(data_dir="d", model_dir="m").shuffle_buffer > 12
    train(_config(data_dir, tmp_path / "defaults", validation_steps=1))
    assert [c["shuffle_buffer"] for c in pipeline_calls["train"]] == [12]
    assert [c["across_shards"] for c in pipeline_calls["eval"]] == [True]
    shutil.rmtree(tmp_path / "defaults")  # each run's checkpoints take about 0.5 GB
    train(_config(data_dir, tmp_path / "set", shuffle_buffer=5))
    assert pipeline_calls["train"][-1]["shuffle_buffer"] == 5  # a smaller setting stays
    assert pipeline_calls["eval"][-1]["across_shards"] is False
    shutil.rmtree(tmp_path / "set")

"""A truthful run record (issue 21, item 4): a resume with settings other
than the recorded ones is refused listing each, unless allowed; an allowed
change is applied (the optimizer runs at the new rate), printed, and
recorded with the step it took effect.

The refusals are checked on a copy of the shared `tiny_training` (nothing
trains); the rates on one run of this module's own settings, resumed twice
from the same checkpoint (plainly, and at an allowed new rate)."""

import contextlib
import dataclasses
import hashlib
import io
import os
import shutil

import numpy as np
import pytest
import tensorflow as tf

from alexnet_tf.errors import InputError
from alexnet_tf.training import loop, model_dir as model_dir_files, run_record
from alexnet_tf.training.config import ConfigError, ModelConfig, TrainConfig
from alexnet_tf.training.steps import TrainSteps
from conftest import copy_tree
from tiny_data import TINY_MODEL, tiny_train_config, write_tiny_dataset


def _config(data_dir, model_dir, **overrides):
    # Two epochs of one step; plateau_min_delta=1 means no error ever counts as an
    # improvement after the first, so the rate drops exactly once, at the end of
    # epoch 2 (0.01 -> 0.001). Momentum and weight decay 0 make a step's weight
    # change exactly -rate * gradient.
    values = dict(batch_size=8, epochs=2, steps_per_epoch=1, validation_steps=1,
                  log_every_steps=1, checkpoint_every_steps=100, shuffle_buffer=16, seed=1,
                  learning_rate=0.01, plateau_patience=1, plateau_min_delta=1.0,
                  momentum=0.0, weight_decay=0.0, lighting_stddev=0.0,
                  model=ModelConfig(**TINY_MODEL, dropout=0.0))
    values.update(overrides)
    return TrainConfig(data_dir=str(data_dir), model_dir=str(model_dir), **values)


@pytest.fixture(scope="module")
def first_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("record")
    # noise=0: every image of a class is one colour, so a batch's crops and flips
    # (drawn in a parallel map, in no fixed order) cannot differ between runs.
    data_dir = write_tiny_dataset(root / "data", num_classes=3, train_per_class=8,
                                  val_per_class=2, noise=0.0)
    summary = loop.train(_config(data_dir, root / "run"))
    assert summary["step"] == 2 and summary["learning_rate"] == pytest.approx(0.001)
    return data_dir, str(root / "run")


@dataclasses.dataclass
class Resumed:
    model_dir: str
    summary: dict
    rates: list  # the optimizer's learning rate at each call of the compiled loop
    out: str     # what the run printed


def _resume(first_run, folder, **overrides) -> Resumed:
    """first_run copied to `folder` and resumed for one more epoch (step 3),
    with the rate each call of the compiled training loop really ran at."""
    data_dir, model_dir = first_run
    shutil.copytree(model_dir, folder)
    rates, real = [], TrainSteps.train_loop

    def spy(self, iterator, n):
        rates.append(float(self.optimizer.learning_rate.numpy()))
        return real(self, iterator, n)

    out = io.StringIO()
    with pytest.MonkeyPatch.context() as patch, contextlib.redirect_stdout(out):
        patch.setattr(TrainSteps, "train_loop", spy)
        summary = loop.train(_config(data_dir, folder, epochs=3, **overrides))
    return Resumed(str(folder), summary, rates, out.getvalue())


@pytest.fixture(scope="module")
def plain_resume(first_run, tmp_path_factory):
    return _resume(first_run, tmp_path_factory.mktemp("plain") / "run")


@pytest.fixture(scope="module")
def allowed_resume(first_run, tmp_path_factory):
    return _resume(first_run, tmp_path_factory.mktemp("allowed") / "run", learning_rate=0.1,
                   allow_changes=["learning_rate"])


@pytest.fixture
def copy(tiny_training, tmp_path):
    """A writable copy of the shared tiny run (2 epochs of 2 steps, seed 3,
    learning rate 0.01), with the settings it was trained with."""
    copied = copy_tree(tiny_training.model_dir, tmp_path / "run")
    return tiny_training.data_dir, copied


def _tiny_config(data_dir, model_dir, **overrides):
    return tiny_train_config(data_dir, model_dir, **{"epochs": 2, "plateau_patience": 1,
                                                     **overrides})


def _snapshot(folder):
    files = {}
    for root, _, names in os.walk(folder):
        for name in names:
            path = os.path.join(root, name)
            with open(path, "rb") as f:
                files[os.path.relpath(path, folder)] = hashlib.sha256(f.read()).hexdigest()
    return files


def test_changed_settings_are_refused_listing_each_and_nothing_is_written(copy):
    data_dir, model_dir = copy
    before = _snapshot(model_dir)
    # max_steps and epochs extend the run: free. The other two are not.
    with pytest.raises(InputError) as refused:
        loop.train(_tiny_config(data_dir, model_dir, epochs=3, max_steps=3, learning_rate=0.05,
                                seed=2))
    message = str(refused.value)
    assert "\n" not in message
    assert "learning_rate 0.01 -> 0.05; seed 3 -> 2;" in message
    assert "pass --allow_changes=learning_rate,seed to apply them" in message
    assert "epochs" not in message and "max_steps" not in message
    assert _snapshot(model_dir) == before  # no lock, config, history or checkpoint left


def test_a_setting_the_checkpoint_depends_on_cannot_be_allowed(copy):
    data_dir, model_dir = copy
    with pytest.raises(InputError, match=r"lr_schedule plateau -> step \(cannot change on a "
                                         r"resume: the checkpoint holds"):
        loop.train(_tiny_config(data_dir, model_dir, epochs=3, lr_schedule="step",
                                allow_changes=["lr_schedule"]))


def test_a_resume_that_fails_to_restore_leaves_the_record(copy):
    data_dir, model_dir = copy
    before = _snapshot(model_dir)
    # Allowed, but a loss-scaled optimizer cannot restore a plain one's checkpoint.
    with pytest.raises(InputError, match="does not match this run's settings"):
        loop.train(_tiny_config(data_dir, model_dir, epochs=3, mixed_precision="mixed_float16",
                                allow_changes=["mixed_precision"]))
    after = _snapshot(model_dir)
    for name in (model_dir_files.TRAIN_CONFIG_FILENAME, run_record.HISTORY_FILENAME):
        assert after[name] == before[name], name


def test_allow_changes_names_settings_only():
    with pytest.raises(ConfigError, match="learning_rat: not a run setting") as refused:
        _config("d", "m", allow_changes=["learning_rat"])
    assert refused.value.field == "allow_changes"
    # a stray comma or space, as typed on a command line, is not a setting's name
    assert _config("d", "m", allow_changes=["learning_rate", "", " seed "]).allow_changes == (
        "learning_rate", "seed")


@pytest.mark.slow  # this module's own training and a resume of it (about 4 CPU-s each)
def test_a_plain_resume_runs_at_the_restored_rate(plain_resume):
    assert plain_resume.summary["step"] == 3
    # The drop made in the first run holds: the config's 0.01 is the initial rate.
    assert plain_resume.rates == [pytest.approx(0.001)]
    assert "settings changed from step 2: epochs 2 -> 3" in plain_resume.out
    assert "rate in force" not in plain_resume.out
    history = run_record.read_history(plain_resume.model_dir)
    assert [(h["event"], h["step"]) for h in history] == [("start", 0), ("resume", 2)]
    assert history[1]["changes"] == [{"setting": "epochs", "old": 2, "new": 3}]


@pytest.mark.slow  # a resume of this module's own training (about 4 CPU-s)
def test_an_allowed_rate_is_applied_printed_and_recorded(first_run, allowed_resume):
    data_dir, model_dir = first_run[0], allowed_resume.model_dir
    assert allowed_resume.summary["step"] == 3
    # The new initial rate, with the first run's one drop kept: 0.1 / 10.
    assert allowed_resume.rates == [pytest.approx(0.01)]
    assert ("settings changed from step 2: epochs 2 -> 3; learning_rate 0.01 -> 0.1; "
            "rate in force 0.001 -> 0.01") in allowed_resume.out
    recorded = model_dir_files.read_train_config(model_dir)
    assert recorded["learning_rate"] == 0.1 and "allow_changes" not in recorded
    last = run_record.read_history(model_dir)[-1]
    assert last["event"] == "resume" and last["step"] == 2
    assert {"setting": "learning_rate", "old": 0.01, "new": 0.1} in last["changes"]
    assert last["rate_in_force"] == {"old": pytest.approx(0.001), "new": pytest.approx(0.01)}
    # The checkpoint the resumed step ended with carries the rate it ran at.
    reader = tf.train.load_checkpoint(tf.train.latest_checkpoint(model_dir))
    saved = reader.get_tensor("optimizer/_learning_rate/.ATTRIBUTES/VARIABLE_VALUE")
    assert float(saved) == pytest.approx(0.001)  # after epoch 3's drop
    # The same command again: the record now holds 0.1, nothing to allow (what a
    # resume checks before it writes anything).
    again = run_record.check_resume(_config(data_dir, model_dir, epochs=4, learning_rate=0.1))
    assert again == [{"setting": "epochs", "old": 3, "new": 4}]


@pytest.mark.slow  # uses the two resumes above
def test_the_weights_move_by_the_allowed_rate(plain_resume, allowed_resume):
    """One resumed step from the same checkpoint at two rates in force, ten
    times apart (the restored 0.001, the allowed 0.01): with momentum 0 the
    weight change is -rate * gradient, on the same batch, so it is ten times
    larger, weight for weight."""
    deltas = []
    for resumed in (plain_resume, allowed_resume):
        before = tf.train.load_checkpoint(os.path.join(resumed.model_dir, "ckpt-2"))
        after = tf.train.load_checkpoint(os.path.join(resumed.model_dir, "ckpt-3"))
        keys = sorted(k for k, _ in tf.train.list_variables(resumed.model_dir)  # the weights
                      if k.startswith("optimizer/_trainable_variables/"))
        assert len(keys) == 32
        deltas.append(np.concatenate([(after.get_tensor(k) - before.get_tensor(k)).ravel()
                                      for k in keys]))
    plain, allowed = deltas
    moved = np.abs(plain) > 1e-6
    assert moved.sum() > 1000
    ratio = allowed[moved] / plain[moved]
    assert np.median(ratio) == pytest.approx(10.0, rel=1e-3)
    assert np.linalg.norm(allowed) / np.linalg.norm(plain) == pytest.approx(10.0, rel=1e-2)


def test_without_a_record_nothing_is_compared_and_paths_compare_as_folders(copy):
    data_dir, model_dir = copy
    # One folder spelt two ways is the same data_dir.
    spelt = _tiny_config(os.path.join(data_dir, ".", ""), model_dir)
    assert run_record.check_resume(spelt) == []
    with pytest.raises(InputError, match="learning_rate 0.01 -> 0.05"):
        run_record.check_resume(_tiny_config(data_dir, model_dir, learning_rate=0.05))
    os.remove(os.path.join(model_dir, model_dir_files.TRAIN_CONFIG_FILENAME))
    assert run_record.check_resume(_tiny_config(data_dir, model_dir, learning_rate=0.05)) == []

"""The learning-rate schedules: the paper's divide-by-10-on-plateau rule, the
step option, and their state surviving a checkpoint."""

import pytest
import tensorflow as tf

from alexnet_tf.training import schedules
from alexnet_tf.training.config import TrainConfig


def test_plateau_divides_by_ten_after_patience_epochs_without_improvement():
    schedule = schedules.PlateauSchedule(0.01, patience=2, max_drops=3)
    lrs = [schedule.update(e, err) for e, err in enumerate([0.60, 0.50, 0.52, 0.51, 0.49])]
    # 0.50 is the best; 0.52 and 0.51 are two epochs without improvement.
    assert lrs == pytest.approx([0.01, 0.01, 0.01, 0.001, 0.001])
    assert float(schedule.best_error.numpy()) == pytest.approx(0.49)
    assert int(schedule.bad_epochs.numpy()) == 0


def test_plateau_counts_patience_afresh_after_a_drop_and_stops_at_max_drops():
    schedule = schedules.PlateauSchedule(0.01, patience=1, max_drops=3)
    lrs = [schedule.update(e, 0.5) for e in range(6)]  # never improves after epoch 0
    assert lrs == pytest.approx([0.01, 0.001, 1e-4, 1e-5, 1e-5, 1e-5])
    assert int(schedule.drops.numpy()) == 3


def test_plateau_min_delta_ignores_tiny_improvements():
    schedule = schedules.PlateauSchedule(0.01, patience=1, min_delta=0.01)
    schedule.update(0, 0.500)
    assert schedule.update(1, 0.495) == pytest.approx(0.001)


def test_step_schedule_divides_at_the_given_epochs():
    schedule = schedules.StepSchedule(0.01, boundaries=(2, 4))
    lrs = [schedule.update(e, 0.5) for e in range(5)]  # rate of epochs 1..5
    assert lrs == pytest.approx([0.01, 0.001, 0.001, 1e-4, 1e-4])


def test_schedule_state_round_trips_through_a_checkpoint(tmp_path):
    schedule = schedules.PlateauSchedule(0.01, patience=1)
    for e, err in enumerate([0.5, 0.6]):
        schedule.update(e, err)
    path = tf.train.Checkpoint(schedule=schedule).save(str(tmp_path / "ckpt"))
    restored = schedules.PlateauSchedule(0.01, patience=1)
    tf.train.Checkpoint(schedule=restored).restore(path).assert_consumed()
    assert restored.current() == pytest.approx(0.001)
    assert float(restored.best_error.numpy()) == pytest.approx(0.5)
    assert int(restored.drops.numpy()) == 1


def test_make_schedule_follows_the_config():
    plateau = schedules.make_schedule(TrainConfig("d", "m", plateau_patience=5))
    assert isinstance(plateau, schedules.PlateauSchedule) and plateau.patience == 5
    step = schedules.make_schedule(TrainConfig("d", "m", lr_schedule="step", step_epochs=(1, 2)))
    assert isinstance(step, schedules.StepSchedule) and step.boundaries == (1, 2)

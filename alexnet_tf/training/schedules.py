"""Learning-rate schedules whose state lives in checkpointed variables.

Section 5: "The heuristic which we followed was to divide the learning rate
by 10 when the validation error rate stopped improving with the current
learning rate. The learning rate was initialized at 0.01 and reduced three
times prior to termination." `PlateauSchedule` automates that rule;
`StepSchedule` divides at fixed epochs instead. Both are `tf.Module`s, so a
`tf.train.Checkpoint` saves their state and a resumed run continues with the
same learning rate, best error and patience count. A resume with a changed
initial rate (allowed by the user, see `run_record`) re-derives the rate in
force with `rebase`, keeping the drops made so far.
"""

from __future__ import annotations

from typing import Sequence

import tensorflow as tf


class PlateauSchedule(tf.Module):
    """Divides the learning rate by `factor` when the validation top-1 error
    has not improved by more than `min_delta` for `patience` epochs, at most
    `max_drops` times."""

    def __init__(self, initial_lr: float, patience: int = 3, max_drops: int = 3,
                 factor: float = 10.0, min_delta: float = 0.0, name: str = "plateau"):
        super().__init__(name=name)
        self.initial_lr = initial_lr
        self.patience = patience
        self.max_drops = max_drops
        self.factor = factor
        self.min_delta = min_delta
        self.learning_rate = tf.Variable(initial_lr, dtype=tf.float32, trainable=False,
                                         name="learning_rate")
        self.best_error = tf.Variable(float("inf"), dtype=tf.float64, trainable=False,
                                      name="best_error")
        self.bad_epochs = tf.Variable(0, dtype=tf.int64, trainable=False, name="bad_epochs")
        self.drops = tf.Variable(0, dtype=tf.int64, trainable=False, name="drops")

    def update(self, epoch: int, val_error: float) -> float:
        """Called once per epoch with that epoch's validation top-1 error;
        returns the learning rate for the next epoch."""
        del epoch  # the rule depends on the error history only
        if val_error < float(self.best_error.numpy()) - self.min_delta:
            self.best_error.assign(val_error)
            self.bad_epochs.assign(0)
        else:
            self.bad_epochs.assign_add(1)
            if (int(self.bad_epochs.numpy()) >= self.patience
                    and int(self.drops.numpy()) < self.max_drops):
                self.learning_rate.assign(self.learning_rate / self.factor)
                self.drops.assign_add(1)
                self.bad_epochs.assign(0)
        return self.current()

    def current(self) -> float:
        return float(self.learning_rate.numpy())

    def rebase(self, epoch: int) -> None:
        """On a resume: the rate in force from this run's initial rate, keeping
        the drops made so far (the restored state is the rule's, not the rate's)."""
        del epoch
        self.learning_rate.assign(self.initial_lr / self.factor ** int(self.drops.numpy()))

    def describe(self) -> str:
        return (f"plateau: lr {self.current():g}, best val top-1 error "
                f"{float(self.best_error.numpy()):.4f}, {int(self.bad_epochs.numpy())} epoch(s) "
                f"without improvement, {int(self.drops.numpy())}/{self.max_drops} drops")


class StepSchedule(tf.Module):
    """Divides the initial learning rate by `factor` at each epoch in
    `boundaries` (epochs counted from 0: boundary 30 starts at the 31st)."""

    def __init__(self, initial_lr: float, boundaries: Sequence[int] = (30, 60, 80),
                 factor: float = 10.0, name: str = "step"):
        super().__init__(name=name)
        self.initial_lr = initial_lr
        self.boundaries = tuple(boundaries)
        self.factor = factor
        self.learning_rate = tf.Variable(initial_lr, dtype=tf.float32, trainable=False,
                                         name="learning_rate")

    def lr_at_epoch(self, epoch: int) -> float:
        drops = sum(1 for b in self.boundaries if epoch >= b)
        return self.initial_lr / self.factor ** drops

    def update(self, epoch: int, val_error: float) -> float:
        """Called at the end of `epoch` (0-based); sets the rate of the next."""
        del val_error
        self.learning_rate.assign(self.lr_at_epoch(epoch + 1))
        return self.current()

    def current(self) -> float:
        return float(self.learning_rate.numpy())

    def rebase(self, epoch: int) -> None:
        """On a resume after `epoch` whole epochs: the rate from this run's
        initial rate and boundaries."""
        self.learning_rate.assign(self.lr_at_epoch(epoch))

    def describe(self) -> str:
        return f"step: lr {self.current():g}, divided by {self.factor:g} at epochs {self.boundaries}"


def rebase(schedule, epoch: int) -> tuple[float, float] | None:
    """Re-derives a restored schedule's rate in force from this run's settings
    (a changed learning_rate or step_epochs applies from here; unchanged ones
    give the restored rate back). The same on every worker, as it depends on
    the checkpoint and the settings only. Returns (restored, now) when the
    rate changed, else None."""
    before = schedule.current()
    schedule.rebase(epoch)
    after = schedule.current()
    return (before, after) if abs(after - before) > 1e-6 * before else None


def make_schedule(config) -> PlateauSchedule | StepSchedule:
    """The schedule a `TrainConfig` asks for."""
    if config.lr_schedule == "plateau":
        return PlateauSchedule(config.learning_rate, config.plateau_patience,
                               config.max_lr_drops, min_delta=config.plateau_min_delta)
    if config.lr_schedule == "step":
        return StepSchedule(config.learning_rate, config.step_epochs)
    raise ValueError(f"unknown lr_schedule {config.lr_schedule!r}")

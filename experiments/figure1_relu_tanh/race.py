"""Training runs and the learning-rate race: which rate reaches the target
training error in the fewest epochs."""

from __future__ import annotations

import dataclasses
import logging
import math
import time

import numpy as np
import tensorflow as tf
import keras

from alexnet_tf import defaults
from experiments.figure1_relu_tanh.config import ReluTanhConfig
from experiments.figure1_relu_tanh.data import InputNormalization
from experiments.figure1_relu_tanh.small_cnn import build_small_cnn

MOMENTUM = defaults.MOMENTUM


class _OneTracePerRun(logging.Filter):
    """Each run builds a new network, so its train step traces once by design;
    on small data (a few steps per slice) TensorFlow's frequent-retracing
    notice would fire for what is not a mistake."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "triggered tf.function retracing" not in record.getMessage()


_RETRACING_FILTER = _OneTracePerRun()


@dataclasses.dataclass
class Run:
    """One training run: the error curve and when it crossed the target."""

    condition: str
    activation: str
    learning_rate: float
    epochs: list = dataclasses.field(default_factory=list)    # x of each point
    errors: list = dataclasses.field(default_factory=list)    # training error
    seconds: list = dataclasses.field(default_factory=list)   # training time so far
    epochs_to_target: float | None = None
    seconds_to_target: float | None = None
    # "reached target", "max epochs", "diverged", "no progress",
    # "cannot beat best", "pruned at epoch N", "interrupted at epoch N"
    stopped: str = ""


def epochs_to_target(epochs, errors, target: float) -> tuple[int, float] | None:
    """First point whose training error is <= target: (index, epoch), or None.

    No interpolation: the answer is an epoch at which an error was measured.
    """
    if len(epochs) != len(errors):
        raise ValueError(f"{len(epochs)} epochs but {len(errors)} errors")
    for i, (epoch, error) in enumerate(zip(epochs, errors)):
        if error <= target:
            return i, float(epoch)
    return None


class TrainingRun:
    """One network and its optimizer, trained a slice of an epoch at a time.

    The learning-rate sweep advances several of these in lock-step (a race),
    so it can stop every candidate as soon as one reaches the target.
    """

    def __init__(self, images: np.ndarray, labels: np.ndarray, *, activation: str,
                 condition: str, learning_rate: float,
                 batch_size: int = ReluTanhConfig.batch_size,
                 evals_per_epoch: int = ReluTanhConfig.evals_per_epoch, seed: int = 0,
                 normalization: InputNormalization | None = None, num_classes: int = 10):
        norm = normalization or InputNormalization.fit(images, condition)
        keras.utils.set_random_seed(seed)
        self.model = build_small_cnn(activation, init=condition, num_classes=num_classes,
                                     image_size=images.shape[1], seed=seed)
        self.optimizer = keras.optimizers.SGD(learning_rate, momentum=MOMENTUM)
        self._mean = tf.constant(norm.mean_image)
        self._inv_scale = tf.constant(1.0 / norm.scale)
        # No tensor-dependent Python control flow in the step, so no autograph
        # (which would also re-read this file's source when it traces).
        self._train_step = tf.function(self._step, autograph=False)
        tf.get_logger().addFilter(_RETRACING_FILTER)  # once: a filter is added only once
        self.images, self.labels = images, labels
        self.batch_size = min(batch_size, len(images))
        self.steps_per_epoch = len(images) // self.batch_size
        self.slices = [s for s in np.array_split(np.arange(self.steps_per_epoch),
                                                 evals_per_epoch) if len(s)]
        self._rng = np.random.default_rng(seed)
        self._order = None
        self._slice = 0
        self._steps_done = 0
        self.elapsed = 0.0
        self.record = Run(condition, activation, float(learning_rate))

    def _step(self, x, y):
        x = (tf.cast(x, tf.float32) - self._mean) * self._inv_scale
        with tf.GradientTape() as tape:
            logits = self.model(x, training=True)
            loss = tf.reduce_mean(keras.losses.sparse_categorical_crossentropy(
                y, logits, from_logits=True))
        variables = self.model.trainable_variables
        self.optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables))
        wrong = tf.reduce_sum(tf.cast(
            tf.argmax(logits, -1, output_type=tf.int32) != y, tf.int32))
        return loss, wrong

    @property
    def epoch(self) -> float:
        return self._steps_done / self.steps_per_epoch

    @property
    def at_epoch_end(self) -> bool:
        return self._slice == 0

    def advance(self) -> tuple[float, bool]:
        """Trains one slice; appends (epoch, error, seconds); returns (error, finite)."""
        if self._slice == 0:
            self._order = self._rng.permutation(len(self.images))
        wrong = seen = 0
        finite = True
        start = time.perf_counter()
        for step in self.slices[self._slice]:
            idx = self._order[step * self.batch_size:(step + 1) * self.batch_size]
            loss, w = self._train_step(self.images[idx], self.labels[idx])
            wrong += int(w)
            seen += len(idx)
            finite = finite and math.isfinite(float(loss))
        self.elapsed += time.perf_counter() - start
        self._steps_done += len(self.slices[self._slice])
        self._slice = (self._slice + 1) % len(self.slices)
        error = wrong / seen
        self.record.epochs.append(round(self.epoch, 4))
        self.record.errors.append(error)
        self.record.seconds.append(round(self.elapsed, 2))
        return error, finite


def _no_progress(run: TrainingRun, num_classes: int) -> bool:
    """Still at chance after two epochs (dead units or a far too small rate)."""
    chance_error = 1.0 - 1.0 / num_classes
    return run.epoch >= 2 and run.record.errors[-1] >= 0.95 * chance_error


def train_until_target(images, labels, *, learning_rate: float,
                       max_epochs: float = ReluTanhConfig.max_epochs,
                       target_error: float = ReluTanhConfig.target_error, log=print,
                       **kwargs) -> Run:
    """Trains one network until its training error reaches `target_error`."""
    return race_learning_rates(images, labels, learning_rates=[learning_rate],
                               max_epochs=max_epochs, target_error=target_error,
                               log=log, **kwargs).runs[0]


@dataclasses.dataclass
class Sweep:
    """Every learning rate tried for one activation, and the fastest."""

    runs: list
    best: Run | None  # None when no learning rate reached the target


def race_learning_rates(images, labels, *, activation: str, condition: str,
                        learning_rates, max_epochs: float,
                        target_error: float = ReluTanhConfig.target_error,
                        num_classes: int = 10, log=print, on_slice=None,
                        prune_after_epochs: float | None = None, **kwargs) -> Sweep:
    """Trains every candidate rate side by side; the first to the target wins.

    All candidates advance one slice at a time, so when one reaches the target
    the others have trained exactly as long and cannot be faster: they stop
    there ("cannot beat best"), which bounds the sweep's cost by
    len(learning_rates) x the winner's epochs. Ties at the same slice go to
    the lower error. Runs also stop on a non-finite loss ("diverged"), on
    chance-level error after two epochs ("no progress") and at `max_epochs`.

    `prune_after_epochs` makes it cheaper (successive halving in one round):
    at that epoch only the candidate with the lowest recent training error
    goes on, the others stop ("pruned"). The sweep then costs about
    len(learning_rates) x prune_after_epochs + the winner's epochs, at the
    risk of dropping a rate that starts slower but would have got there first.
    """
    runs = [TrainingRun(images, labels, activation=activation, condition=condition,
                        learning_rate=lr, num_classes=num_classes, **kwargs)
            for lr in learning_rates]
    active = list(runs)
    winners = []
    while active and not winners:
        for run in list(active):
            error, finite = run.advance()
            rec = run.record
            if not finite:
                rec.stopped = "diverged"
            elif error <= target_error:
                rec.stopped = "reached target"
                rec.epochs_to_target, rec.seconds_to_target = run.epoch, run.elapsed
                winners.append(run)
            elif _no_progress(run, num_classes):
                rec.stopped = "no progress"
            elif run.epoch >= max_epochs - 1e-9:
                rec.stopped = "max epochs"
            if rec.stopped:
                active.remove(run)
        if (prune_after_epochs is not None and len(active) > 1 and not winners
                and all(r.epoch >= prune_after_epochs - 1e-9 for r in active)):
            leader = min(active, key=lambda r: r.record.errors[-1])
            for run in active:
                if run is not leader:
                    run.record.stopped = f"pruned at epoch {run.epoch:g}"
            active = [leader]
        if on_slice is not None:
            on_slice([r.record for r in runs])
        if not active or winners or any(r.at_epoch_end for r in active):
            # The run furthest along is the one still training (pruned runs stopped).
            log(f"{condition}/{activation} epoch {max(r.epoch for r in runs):.1f}: " + ", ".join(
                f"lr {r.record.learning_rate:g} error {r.record.errors[-1]:.4f}"
                + (f" [{r.record.stopped}]" if r.record.stopped else "")
                for r in runs))
    for run in active:
        run.record.stopped = "cannot beat best"
    best = min(winners, key=lambda r: r.record.errors[-1]).record if winners else None
    return Sweep([r.record for r in runs], best)

"""The paper's Figure 1 experiment: epochs to 25% training error, ReLU vs tanh.

Section 3.1: "a four-layer convolutional network with ReLUs reaches a 25%
training error rate on CIFAR-10 six times faster than an equivalent network
with tanh neurons", each with its learning rate "chosen independently to make
training as fast as possible", and "no regularization of any kind".

What this module does, for each condition ("paper" or "modern", see
`alexnet_tf.small_cnn`) and each activation:
  * trains `build_small_cnn` with SGD, momentum 0.9, batch 128, from each
    candidate learning rate, and keeps the one that reaches the target
    training error in the fewest epochs;
  * measures the training error as cuda-convnet reported it: the error of the
    minibatches as they are trained on (forward pass before each update),
    averaged over a slice of the epoch (`evals_per_epoch` slices; 5 gives
    cuda-convnet's 10,000-image data batches on CIFAR-10's 50,000).
Inputs are mean-subtracted with the training set's mean image (cuda-convnet
did this on CIFAR-10); the "modern" condition also divides by the per-channel
pixel standard deviation, because He/Glorot init assume unit-scale inputs.
"""

from __future__ import annotations

import dataclasses
import glob
import json
import math
import os
import time

import numpy as np
import tensorflow as tf
import keras

from alexnet_tf.data import preprocessing, records
from experiments.figure1_relu_tanh.small_cnn import build_small_cnn

ACTIVATIONS = ("relu", "tanh")
CONDITIONS = ("paper", "modern")
PAPER_RATIO = 6.0  # Figure 1: ReLU reaches 25% "six times faster"
MOMENTUM = 0.9
RESULTS_JSON = "results.json"
RESULTS_MD = "results.md"
FIGURE_PNG = "figure1.png"


# --------------------------------------------------------------------- data

def load_split(records_dir: str, prefix: str = records.TRAIN_PREFIX, *,
               image_size: int = 32, max_images: int | None = None,
               seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Decodes one split of the data prep's TFRecords into memory.

    Returns uint8 [N, S, S, 3] images and int32 [N] labels. CIFAR-10 is small
    (150 MB as uint8), so every epoch then trains from memory, not from JPEG.
    `max_images` keeps a random subset (the records may be in class order).
    """
    files = sorted(glob.glob(records.shard_pattern(records_dir, prefix)))
    if not files:
        raise FileNotFoundError(
            f"no '{prefix}' TFRecord shards in {records_dir} "
            f"(expected {records.shard_name(prefix, 0, 1)}...)")
    encoded, labels, names = [], [], []
    for batch in tf.data.TFRecordDataset(files).batch(4096):
        parsed = records.parse_examples(batch)
        encoded.extend(parsed[records.ENCODED].numpy())
        labels.extend(parsed[records.LABEL].numpy())
        names.extend(parsed[records.FILENAME].numpy())
    labels = np.asarray(labels, np.int64)
    if max_images is not None and max_images < len(encoded):
        keep = np.sort(np.random.default_rng(seed).permutation(len(encoded))[:max_images])
        encoded = [encoded[i] for i in keep]
        names = [names[i] for i in keep]
        labels = labels[keep]
    if np.any(labels < 0):
        bad = names[int(np.argmax(labels < 0))].decode()
        raise ValueError(f"{records_dir}: record {bad!r} has no label")

    images = np.empty((len(encoded), image_size, image_size, 3), np.uint8)
    decoded = tf.data.Dataset.from_tensor_slices(encoded).map(
        preprocessing.decode_rgb, num_parallel_calls=tf.data.AUTOTUNE)
    for i, image in enumerate(decoded.as_numpy_iterator()):
        if image.shape != images.shape[1:]:
            raise ValueError(
                f"{records_dir}: image {names[i].decode()!r} is {image.shape}, "
                f"expected {images.shape[1:]} (build the records with --image_size={image_size})")
        images[i] = image
    return images, labels.astype(np.int32)


@dataclasses.dataclass(frozen=True)
class InputNormalization:
    """x -> (x - mean_image) / scale, with scale per channel (1 = no scaling)."""

    mean_image: np.ndarray  # float32 [S, S, 3], 0..255 scale
    scale: np.ndarray       # float32 [3]

    @classmethod
    def fit(cls, images: np.ndarray, condition: str) -> "InputNormalization":
        mean = images.mean(axis=0, dtype=np.float64)
        if condition == "paper":
            scale = np.ones(3)
        else:
            centred = images.astype(np.float32) - mean.astype(np.float32)
            scale = np.sqrt((centred.astype(np.float64) ** 2).mean(axis=(0, 1, 2)))
        return cls(mean.astype(np.float32), scale.astype(np.float32))


# ----------------------------------------------------------------- training

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
                 condition: str, learning_rate: float, batch_size: int = 128,
                 evals_per_epoch: int = 5, seed: int = 0,
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


def train_until_target(images, labels, *, learning_rate: float, max_epochs: float = 30,
                       target_error: float = 0.25, log=print, **kwargs) -> Run:
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
                        learning_rates, max_epochs: float, target_error: float = 0.25,
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


def run_experiment(images, labels, *, conditions=CONDITIONS, activations=ACTIVATIONS,
                   learning_rates: dict,
                   target_error: float = 0.25, max_epochs: float = 30,
                   batch_size: int = 128, evals_per_epoch: int = 5, seed: int = 0,
                   prune_after_epochs: float | None = None, log=print,
                   on_progress=None) -> dict:
    """Both activations under each condition; returns the results.json dict.

    `on_progress(result)` is called after every slice with the partial result
    (`"complete": False`), so a long run can save what it has so far.
    """
    for activation in activations:
        if activation not in ACTIVATIONS:
            raise ValueError(f"unknown activation {activation!r}; choose from {ACTIVATIONS}")
    for condition in conditions:
        if condition not in CONDITIONS:
            raise ValueError(f"unknown condition {condition!r}; choose from {CONDITIONS}")
        if not learning_rates.get(condition):
            raise ValueError(f"no learning rates given for condition {condition!r}")
    num_classes = int(labels.max()) + 1
    result = {"target_error": target_error, "max_epochs": max_epochs,
              "batch_size": batch_size, "momentum": MOMENTUM, "seed": seed,
              "train_images": int(len(images)), "num_classes": num_classes,
              "evals_per_epoch": evals_per_epoch, "paper_ratio": PAPER_RATIO,
              "prune_after_epochs": prune_after_epochs,
              "complete": False, "conditions": {}}
    for condition in conditions:
        norm = InputNormalization.fit(images, condition)
        section = {"learning_rates": [float(lr) for lr in learning_rates[condition]]}
        result["conditions"][condition] = section
        for activation in activations:
            sweep = race_learning_rates(
                images, labels, activation=activation, condition=condition,
                learning_rates=learning_rates[condition], max_epochs=max_epochs,
                target_error=target_error, batch_size=batch_size,
                evals_per_epoch=evals_per_epoch, seed=seed, normalization=norm,
                num_classes=num_classes, prune_after_epochs=prune_after_epochs, log=log,
                on_slice=None if on_progress is None else _progress_hook(
                    result, section, activation, on_progress))
            section[activation] = _sweep_json(sweep)
        if all(a in section for a in ACTIVATIONS):
            section["ratio_epochs"] = _ratio(section, "epochs_to_target")
            section["ratio_seconds"] = _ratio(section, "seconds_to_target")
    result["complete"] = True
    return result


def _progress_hook(result: dict, section: dict, activation: str, on_progress):
    def hook(runs):
        section[activation] = {"in_progress": True,
                               "runs": [dataclasses.asdict(r) for r in runs]}
        on_progress(result)
    return hook


def _sweep_json(sweep: Sweep) -> dict:
    best = sweep.best
    return {"best_learning_rate": best.learning_rate if best else None,
            "epochs_to_target": best.epochs_to_target if best else None,
            "seconds_to_target": round(best.seconds_to_target, 2) if best else None,
            "runs": [dataclasses.asdict(r) for r in sweep.runs]}


def _ratio(section: dict, key: str) -> float | None:
    """tanh / ReLU: how many times faster ReLU was (None if either missed)."""
    relu, tanh = section["relu"][key], section["tanh"][key]
    return None if relu is None or tanh is None else round(tanh / relu, 3)


def finalize_partial(result: dict) -> dict:
    """A result saved mid-run (e.g. stopped at a time limit), summarized as far
    as it got: runs still going are marked "interrupted"; an activation that
    never started is left out (the table says "not run")."""
    result = json.loads(json.dumps(result))  # deep copy
    for section in result["conditions"].values():
        for activation in ACTIVATIONS:
            sweep = section.get(activation)
            if sweep is None or not sweep.get("in_progress"):
                continue
            for run in sweep["runs"]:
                run["stopped"] = run["stopped"] or (
                    f"interrupted at epoch {run['epochs'][-1] if run['epochs'] else 0:g}")
            reached = [r for r in sweep["runs"] if r["epochs_to_target"] is not None]
            best = min(reached, key=lambda r: (r["epochs_to_target"], r["errors"][-1]),
                       default=None)
            section[activation] = {
                "best_learning_rate": best["learning_rate"] if best else None,
                "epochs_to_target": best["epochs_to_target"] if best else None,
                "seconds_to_target": round(best["seconds_to_target"], 2) if best else None,
                "runs": sweep["runs"]}
        if all(a in section for a in ACTIVATIONS):
            section["ratio_epochs"] = _ratio(section, "epochs_to_target")
            section["ratio_seconds"] = _ratio(section, "seconds_to_target")
    return result


def merge_results(parts: list) -> dict:
    """One result from runs of different conditions (e.g. run in parallel).

    Every setting must agree, or the conditions are not comparable.
    """
    if not parts:
        raise ValueError("nothing to merge")
    merged = {k: v for k, v in parts[0].items() if k != "conditions"}
    merged["conditions"] = {}
    for part in parts:
        settings = {k: v for k, v in part.items() if k not in ("conditions", "complete")}
        expected = {k: v for k, v in merged.items() if k not in ("conditions", "complete")}
        if settings != expected:
            diff = sorted(k for k in set(settings) | set(expected)
                          if settings.get(k) != expected.get(k))
            raise ValueError(f"results differ in {', '.join(diff)}: cannot merge")
        overlap = set(part["conditions"]) & set(merged["conditions"])
        if overlap:
            raise ValueError(f"condition {sorted(overlap)[0]!r} appears twice")
        merged["conditions"].update(part["conditions"])
    merged["complete"] = all(p.get("complete") for p in parts)
    return merged


# ------------------------------------------------------------------ outputs

def write_results(result: dict, out_dir: str) -> dict:
    """Writes results.json, results.md and figure1.png; returns their paths."""
    os.makedirs(out_dir, exist_ok=True)
    paths = {"json": os.path.join(out_dir, RESULTS_JSON),
             "markdown": os.path.join(out_dir, RESULTS_MD),
             "figure": os.path.join(out_dir, FIGURE_PNG)}
    _atomic_write(paths["json"], json.dumps(result, indent=2))
    _atomic_write(paths["markdown"], results_table(result))
    plot_figure1(result, paths["figure"])
    return paths


def results_table(result: dict) -> str:
    """The Markdown table of results.md."""
    target = result["target_error"]
    lines = [f"Epochs (and training seconds) to {target:.0%} training error on "
             f"{result['train_images']:,} CIFAR-10 training images; batch "
             f"{result['batch_size']}, momentum {result['momentum']}, no regularization, "
             f"at most {result['max_epochs']:g} epochs per run.", "",
             "| condition | activation | learning rates tried | best | "
             f"epochs to {target:.0%} | seconds to {target:.0%} |",
             "|---|---|---|---|---|---|"]
    for condition, section in result["conditions"].items():
        tried = ", ".join(f"{lr:g}" for lr in section["learning_rates"])
        for activation in ACTIVATIONS:
            s = section.get(activation)
            if s is None or s.get("in_progress"):
                lines.append(f"| {condition} | {activation} | {tried} | - | not run | - |")
                continue
            best = "-" if s["best_learning_rate"] is None else f"{s['best_learning_rate']:g}"
            epochs = (f"{s['epochs_to_target']:.1f}" if s["epochs_to_target"] is not None
                      else f"not reached by epoch {_last_epoch(s):g}")
            seconds = "-" if s["seconds_to_target"] is None else f"{s['seconds_to_target']:.0f}"
            lines.append(f"| {condition} | {activation} | {tried} | {best} | {epochs} | {seconds} |")
    lines.append("")
    for condition, section in result["conditions"].items():
        lines.append(f"- {condition}: ReLU faster than tanh by "
                     f"{_fmt_ratio(section, 'ratio_epochs')} in epochs, "
                     f"{_fmt_ratio(section, 'ratio_seconds')} in seconds "
                     f"(paper, Figure 1: about {result['paper_ratio']:g}x).")
    return "\n".join(lines) + "\n"


def _last_epoch(sweep: dict) -> float:
    return max((r["epochs"][-1] for r in sweep["runs"] if r["epochs"]), default=0)


def _fmt_ratio(section: dict, key: str) -> str:
    if section.get(key) is not None:
        return f"{section[key]:.2f}x"
    if not all(a in section and "epochs_to_target" in section[a] for a in ACTIVATIONS):
        return "n/a (not run)"
    relu, tanh = (section[a]["epochs_to_target"] is not None for a in ACTIVATIONS)
    if relu:  # tanh was still above the target when it stopped: a lower bound
        if key == "ratio_epochs":
            bound = _last_epoch(section["tanh"]) / section["relu"]["epochs_to_target"]
        else:
            bound = (max(r["seconds"][-1] for r in section["tanh"]["runs"] if r["seconds"])
                     / section["relu"]["seconds_to_target"])
        return f"more than {bound:.2f}x (tanh did not reach the target)"
    return "n/a (ReLU did not reach the target)" if tanh else "n/a (neither reached the target)"


def plot_figure1(result: dict, path: str) -> None:
    """Training error vs epochs, best run per activation: ReLU solid, tanh dashed."""
    import matplotlib
    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    conditions = list(result["conditions"])
    fig, axes = plt.subplots(1, len(conditions), figsize=(5 * len(conditions), 4),
                             squeeze=False)
    for ax, condition in zip(axes[0], conditions):
        section = result["conditions"][condition]
        for activation, style in (("relu", "-"), ("tanh", "--")):
            if activation not in section or "best_learning_rate" not in section[activation]:
                continue
            run = _run_to_plot(section[activation])
            if run is None:
                continue
            reached = "" if section[activation]["best_learning_rate"] is not None else (
                f", did not reach {result['target_error']:.0%}")
            ax.plot(run["epochs"], run["errors"], style, color="black",
                    label=f"{activation} (lr {run['learning_rate']:g}{reached})")
        ax.axhline(result["target_error"], color="gray", linewidth=0.8)
        ax.set(title=f"{condition} condition", xlabel="Epochs",
               ylabel="Training error rate", ylim=(0, 1))
        ax.legend()
    fig.tight_layout()
    tmp = f"{path}.tmp.png"
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    os.replace(tmp, path)


def _run_to_plot(sweep: dict) -> dict | None:
    """The best run; if none reached the target, the one that got lowest."""
    runs = sweep["runs"]
    if not runs:
        return None
    if sweep["best_learning_rate"] is not None:
        return next(r for r in runs if r["learning_rate"] == sweep["best_learning_rate"])
    return min(runs, key=lambda r: min(r["errors"]) if r["errors"] else 1.0)


def _atomic_write(path: str, text: str) -> None:
    tmp = f"{path}.tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(tmp, path)

"""The paper's Figure 1 experiment: epochs to 25% training error, ReLU vs tanh.

Section 3.1: "a four-layer convolutional network with ReLUs reaches a 25%
training error rate on CIFAR-10 six times faster than an equivalent network
with tanh neurons", each with its learning rate "chosen independently to make
training as fast as possible", and "no regularization of any kind".

What this module does, for each condition ("paper" or "modern", see
`small_cnn.py`) and each activation:
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

from alexnet_tf.errors import InputError
from experiments.figure1_relu_tanh.config import ReluTanhConfig
from experiments.figure1_relu_tanh.data import InputNormalization, load_split  # noqa: F401
from experiments.figure1_relu_tanh.race import (  # noqa: F401
    MOMENTUM, Run, Sweep, TrainingRun, epochs_to_target, race_learning_rates,
    train_until_target)
from experiments.figure1_relu_tanh.results import (  # noqa: F401
    ACTIVATIONS, CONDITIONS, FIGURE_PNG, RESULTS_JSON, RESULTS_MD, finalize_partial, merge_results,
    plot_figure1, ratio, results_table, write_results)

PAPER_RATIO = 6.0  # Figure 1: ReLU reaches 25% "six times faster"


def run_experiment(images, labels, *, conditions=CONDITIONS, activations=ACTIVATIONS,
                   learning_rates: dict,
                   target_error: float = ReluTanhConfig.target_error,
                   max_epochs: float = ReluTanhConfig.max_epochs,
                   batch_size: int = ReluTanhConfig.batch_size,
                   evals_per_epoch: int = ReluTanhConfig.evals_per_epoch,
                   seed: int = ReluTanhConfig.init_seed,
                   prune_after_epochs: float | None = None, log=print,
                   on_progress=None) -> dict:
    """Both activations under each condition; returns the results.json dict.

    `on_progress(result)` is called after every slice with the partial result
    (`"complete": False`), so a long run can save what it has so far.
    """
    for activation in activations:
        if activation not in ACTIVATIONS:
            raise InputError(f"unknown activation {activation!r}; choose from {ACTIVATIONS}")
    for condition in conditions:
        if condition not in CONDITIONS:
            raise InputError(f"unknown condition {condition!r}; choose from {CONDITIONS}")
        if not learning_rates.get(condition):
            raise InputError(f"no learning rates given for condition {condition!r}")
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
            section["ratio_epochs"] = ratio(section, "epochs_to_target")
            section["ratio_seconds"] = ratio(section, "seconds_to_target")
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

"""The Figure 1 experiment's settings: `launch.reproduce_relu_tanh`'s flags
are defined from these fields, and the experiment's functions (`relu_tanh`,
`race`) take their defaults from them."""

from __future__ import annotations

import dataclasses
from typing import Optional, Sequence

from alexnet_tf import defaults
from alexnet_tf.options import option
from experiments.figure1_relu_tanh.results import ACTIVATIONS, CONDITIONS


@dataclasses.dataclass
class ReluTanhConfig:
    out_dir: str = option(help="Where results.json, results.md, figure1.png go.")
    data_dir: Optional[str] = option(
        None, "CIFAR-10 TFRecords dir, or a raw folder with train/<class>/*.jpg (converted "
        "into <out_dir>/records first by data_prep.build_tfrecords).")
    conditions: Sequence[str] = option(
        CONDITIONS, "Which conditions to run: 'paper' (N(0,0.01) init, 0..255 inputs minus "
        "the mean image) and/or 'modern' (He/Glorot init, standardized inputs).")
    activations: Sequence[str] = option(
        ACTIVATIONS, "Which activations to train (e.g. one per run, to repeat a winning "
        "learning rate with another --init_seed).")
    paper_learning_rates: Sequence[float] = option(
        (0.003, 0.01), "Candidate learning rates for the 'paper' condition (both "
        "activations).")
    modern_learning_rates: Sequence[float] = option(
        (0.01, 0.03), "Candidate learning rates for the 'modern' condition (both "
        "activations).")
    target_error: float = option(0.25, "Training error to reach (Figure 1: 25%).")
    max_epochs: float = option(20.0, "Epoch cap per run; a run that misses it counts as not "
                               "reaching the target.")
    batch_size: int = option(defaults.BATCH_SIZE, "Minibatch size (the paper's 128).",
                             lower_bound=1)
    evals_per_epoch: int = option(5, "Training-error measurements per epoch (5 = "
                                  "cuda-convnet's 10,000-image batches on 50,000 images).",
                                  lower_bound=1)
    prune_after_epochs: Optional[float] = option(
        None, "If set, after this many epochs only the learning rate with the lowest "
        "training error trains on (a cheaper sweep); default: every rate races to the "
        "target.")
    max_train_images: Optional[int] = option(
        None, "Use a random subset of this many training images (quick runs); default: all.",
        lower_bound=1)
    init_seed: int = option(0, "Seed of the weight init, the minibatch order and the "
                            "--max_train_images subset (the same for every run).")
    image_size: int = option(32, "Side of the stored images (CIFAR-10: 32); passed to the "
                             "data prep when converting a raw folder.", lower_bound=1)
    train_shards: int = option(16, "Training shards when converting a raw folder.",
                               lower_bound=1)
    validation_shards: int = option(4, "Validation shards when converting a raw folder.",
                                    lower_bound=1)
    overwrite: bool = option(False, "Convert a raw folder into <out_dir>/records from "
                             "scratch instead of resuming (data prep's --overwrite).")
    merge_from: Optional[Sequence[str]] = option(
        None, "Instead of training: merge the results.json of these out_dirs, or these .json "
        "files (e.g. one per --conditions, run in parallel; "
        "docs/figures/figure1_relu_tanh.json redraws the published figure) into --out_dir "
        "and redraw the table and figure; a results.json saved mid-run counts as far as it "
        "got (unfinished runs marked 'interrupted').")

"""Typed configuration of a training run (tensorflow/models `official/` style).

Every default is written here once (or, when the library below uses it too,
in `alexnet_tf.defaults`). `launch.train` defines its flags from
these fields (name, type, default and the `help` metadata), and library
users build the dataclasses directly. The defaults are the paper's
(section 5): batch 128, SGD with momentum 0.9 and weight decay 0.0005,
learning rate 0.01 divided by 10 when the validation error stops improving
(at most three times), 90 epochs. Named presets are in `presets.py`.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any, Optional, Sequence

from alexnet_tf import defaults, fileio
from alexnet_tf.data import service_address
from alexnet_tf.errors import ConfigError
from alexnet_tf.options import option  # noqa: F401  (re-exported for launchers)

STRATEGIES = ("default", "towers", "mirrored", "multi_worker")
LR_SCHEDULES = ("plateau", "step")
MIXED_PRECISION = ("", "mixed_float16", "mixed_bfloat16")
ACTIVATIONS = ("relu", "tanh")
INITS = ("he", "paper", "caffe")
INIT_NORMALIZATIONS = ("source", "data")


@dataclasses.dataclass
class ModelConfig:
    """Keyword arguments of `build_alexnet` that a run may override.

    `None` keeps the model's own default, so the model module stays the one
    source of truth for the architecture. `num_classes` comes from the data's
    labels.txt and `mean_rgb` / `std_rgb` from its stats.json, not from here;
    `standardize=False` leaves `std_rgb` out (the paper's mean-only input).
    """

    activation: Optional[str] = option(None, "Activation (model default relu).",
                                       choices=ACTIVATIONS)
    lrn: Optional[bool] = option(None, "Local response normalization (model default on).")
    overlapping_pool: Optional[bool] = option(
        None, "3x3/2 pooling, else 2x2/2 (model default on).")
    towers: Optional[int] = option(None, "2 towers as the paper, or 1 column (model default 2).")
    width: Optional[float] = option(None, "Scales the conv1-conv4 kernel counts "
                                    "(model default 1).")
    fc_units: Optional[Sequence[int]] = option(
        None, "Neurons of fc6,fc7 summed over the towers (model default 4096,4096).")
    dropout: Optional[float] = option(None, "Dropout rate of fc6/fc7 (model default 0.5).")
    extra_conv: Optional[bool] = option(None, "Section 6's sixth convolutional layer "
                                        "(model default off).")
    init: Optional[str] = option(None, "Weight initialization: he, paper or caffe (model "
                                 "default he: see alexnet_tf.model).", choices=INITS)
    image_size: Optional[int] = option(None, "Input size (model default 224).")
    standardize: Optional[bool] = option(
        None, "Divide the mean-subtracted input by the training set's per-channel std "
        "(stats.json), as 'he' init assumes (default on). --init=paper --nostandardize "
        "is the paper's set-up.")

    def to_kwargs(self) -> dict[str, Any]:
        """build_alexnet kwargs, without `standardize` (see model_dir.model_kwargs_for)."""
        return {k: v for k, v in dataclasses.asdict(self).items()
                if v is not None and k != "standardize"}


@dataclasses.dataclass
class TrainConfig:
    """One training run. `data_dir` holds the data prep's shards, labels.txt,
    stats.json and manifest.json; `model_dir` receives checkpoints, logs and
    the config."""

    data_dir: str = option(None, "Folder with the data prep's TFRecord shards, labels.txt, "
                           "stats.json and manifest.json.")
    model_dir: str = option(None, "Folder for checkpoints, TensorBoard logs (logs/train, "
                            "logs/validation) and model_config.json; an existing one is "
                            "resumed.")
    # Section 5: the optimizer.
    batch_size: int = option(defaults.BATCH_SIZE, "Global batch size (summed over replicas).")
    epochs: int = option(90, "Training epochs.")
    learning_rate: float = option(defaults.LEARNING_RATE, "Initial learning rate.")
    momentum: float = option(defaults.MOMENTUM, "SGD momentum.")
    weight_decay: float = option(defaults.WEIGHT_DECAY, "Weight decay, applied as the paper's "
                                 "rule v <- 0.9 v - wd * lr * w - lr * grad.")
    # The paper lowered the rate by hand, three times, when the validation
    # error stopped improving; "plateau" makes that a rule.
    lr_schedule: str = option("plateau", "plateau: divide the rate by 10 when the validation "
                              "top-1 error stops improving; step: at --step_epochs.",
                              choices=LR_SCHEDULES)
    plateau_patience: int = option(3, "Epochs without a better validation top-1 error "
                                   "before the rate is divided by 10.")
    plateau_min_delta: float = option(0.0, "Smallest drop of the validation error that "
                                      "counts as an improvement.")
    max_lr_drops: int = option(3, "At most this many divisions by 10 (the paper: 3).")
    step_epochs: Sequence[int] = option((30, 60, 80), "Epochs where the step schedule divides "
                                        "the rate by 10.")
    # Run length; None means "from the data" (a full pass per epoch).
    steps_per_epoch: Optional[int] = option(None, "Steps per epoch; default: training images "
                                            "/ batch_size rounded up (one full pass).")
    max_steps: Optional[int] = option(None, "Stop after this many steps in total (short runs).")
    validation_steps: Optional[int] = option(
        None, "Validation batches per epoch, read across all validation shards; default: "
        "the whole validation split.")
    steps_per_loop: int = option(10, "Training steps run inside one tf.function call "
                                 "(one host sync per loop; a loop never crosses a log, "
                                 "checkpoint or epoch boundary).")
    # Checkpoints and logging.
    checkpoint_every_steps: int = option(1000, "Checkpoint interval in steps (a checkpoint "
                                         "is also written at each epoch end).")
    keep_checkpoints: int = option(3, "Latest checkpoints kept (plus the best).")
    log_every_steps: int = option(100, "Progress line and TensorBoard interval.")
    # Parallelism and numerics.
    strategy: str = option("default", "default: one device; towers: the paper's two-tower "
                           "model parallelism; mirrored: data parallel over local GPUs; "
                           "multi_worker: MultiWorkerMirroredStrategy from TF_CONFIG.",
                           choices=STRATEGIES)
    devices: Sequence[str] = option((), "mirrored: the devices to use (default: all local "
                                    "GPUs).")
    tower_devices: Sequence[str] = option((), "towers: the two devices of towers A and B "
                                          "(default: /GPU:0,/GPU:1 when visible).")
    mixed_precision: str = option("", "Keras dtype policy; mixed_float16 adds loss scaling. "
                                  "Off by default (CPU).", choices=MIXED_PRECISION)
    jit_compile: bool = option(False, "XLA-compile the training step.")
    # Data.
    label_offset: int = option(0, "Subtracted from stored labels: 1 reads tensorflow/models' "
                               "1-based records.")
    lighting_stddev: float = option(0.1, "Std of the PCA lighting's alpha (section 4.1); 0 "
                                    "turns the colour augmentation off.")
    shuffle_buffer: int = option(defaults.SHUFFLE_BUFFER, "Training examples in the shuffle "
                                 "buffer (at most the training split's size).")
    seed: Optional[int] = option(None, "Seeds the weight init, the file order and the "
                                 "shuffle buffer.")
    data_service: str = option("", "grpc://HOST:PORT of a tf.data service dispatcher "
                               "(launch.data_service): its workers read, decode, augment and "
                               "batch the training input (see docs/distributed.md). Default: "
                               "this process does.")
    verify_records: bool = option(False, "Before training, also check every shard's sha256 "
                                  "against manifest.json (reads all the data once).")
    published_stats: bool = option(
        False, "Train on records without data prep's manifest.json and stats.json (e.g. "
        "tensorflow/models' files, with --label_offset=1), using the published ILSVRC-2012 "
        "mean, std and PCA figures.")
    partial_shard_sets: bool = option(
        False, "With published_stats: train even when a split's -of-N shard set is "
        "incomplete (e.g. a few of tensorflow/models' 1,024 shards copied for a quick run).")
    # Fine-tuning (section 6): a checkpoint prefix/dir or a .keras file.
    init_from: str = option("", "Start from this checkpoint (model_dir, best/ or prefix) or "
                            ".keras file: compatible layers are copied, the classifier "
                            "re-initialized when the class count differs.")
    init_normalization: str = option(
        "source", "With --init_from: 'source' keeps the source model's input mean and std "
        "(its conv1 was trained on them); 'data' uses this data's stats.json.",
        choices=INIT_NORMALIZATIONS)
    # A resume keeps the recorded settings (train_config.json) unless told.
    allow_changes: Sequence[str] = option(
        (), "On a resume, the settings that may differ from the model_dir's "
        "train_config.json (e.g. learning_rate,seed); they apply from the checkpoint's step "
        "and are recorded in run_history.jsonl. Run length, logging, checkpoint and device "
        "settings change without it (docs/training.md).")
    model: ModelConfig = dataclasses.field(default_factory=ModelConfig)

    def __post_init__(self):
        if isinstance(self.model, dict):
            self.model = ModelConfig(**self.model)
        if self.model.fc_units is not None:  # a JSON list or a flag's tuple
            self.model.fc_units = tuple(self.model.fc_units)
        try:
            self.step_epochs = tuple(int(e) for e in self.step_epochs)
        except (TypeError, ValueError):
            raise ConfigError("step_epochs", self.step_epochs, "must be whole epochs") from None
        self.devices = tuple(self.devices)
        # a stray comma (--allow_changes=learning_rate,) names no setting
        self.allow_changes = tuple(n.strip() for n in self.allow_changes if n.strip())
        self.tower_devices = tuple(self.tower_devices)
        self.validate()

    def validate(self) -> None:
        """Refuses settings that cannot run, naming the field."""
        def need(ok: bool, field: str, why: str, owner=self):
            if not ok:
                raise ConfigError(field, getattr(owner, field), why, type(owner).__name__)

        need(bool(self.data_dir), "data_dir", "must be set")
        need(bool(self.model_dir), "model_dir", "must be set")
        for field in ("data_dir", "model_dir", "init_from"):
            path = getattr(self, field) or ""
            if not fileio.is_utf8_path(path):  # shown with \xHH escapes
                raise ConfigError(field, os.fsencode(path).decode("ascii", "backslashreplace"),
                                  fileio.NOT_UTF8)
        need(self.batch_size > 0, "batch_size", "must be positive")
        need(self.epochs > 0, "epochs", "must be positive")
        # `x > 0` is False for NaN, so NaN is refused too.
        need(self.learning_rate > 0 and self.learning_rate != float("inf"), "learning_rate",
             "must be a positive finite number")
        need(0 <= self.momentum < 1, "momentum", "must be in [0, 1)")
        need(0 <= self.weight_decay < float("inf"), "weight_decay", "must be finite and >= 0")
        need(self.lr_schedule in LR_SCHEDULES, "lr_schedule", f"must be one of {LR_SCHEDULES}")
        need(self.plateau_patience >= 1, "plateau_patience", "must be >= 1")
        need(0 <= self.plateau_min_delta < float("inf"), "plateau_min_delta",
             "must be finite and >= 0")
        need(self.max_lr_drops >= 0, "max_lr_drops", "must be >= 0")
        need(all(0 < a < b for a, b in zip(self.step_epochs, self.step_epochs[1:]))
             and all(e > 0 for e in self.step_epochs), "step_epochs",
             "must be positive and increasing")
        need(self.seed is None or 0 <= self.seed < 2**32, "seed", "must be in [0, 2**32)")
        for name in ("steps_per_epoch", "max_steps", "validation_steps"):
            value = getattr(self, name)
            need(value is None or value > 0, name, "must be positive or None")
        need(self.steps_per_loop >= 1, "steps_per_loop", "must be >= 1")
        need(self.checkpoint_every_steps > 0, "checkpoint_every_steps", "must be positive")
        need(self.keep_checkpoints >= 1, "keep_checkpoints", "must be >= 1")
        need(self.log_every_steps > 0, "log_every_steps", "must be positive")
        need(self.strategy in STRATEGIES, "strategy", f"must be one of {STRATEGIES}")
        need(self.strategy != "towers" or len(self.tower_devices) in (0, 2),
             "tower_devices", "towers needs exactly two devices (or none for two GPUs)")
        need(self.mixed_precision in MIXED_PRECISION, "mixed_precision",
             f"must be one of {MIXED_PRECISION}")
        need(self.label_offset >= 0, "label_offset", "must be >= 0")
        need(0 <= self.lighting_stddev < float("inf"), "lighting_stddev",
             "must be finite and >= 0")
        need(all(self.devices) and all(self.tower_devices), "devices",
             "device names must not be empty")
        need(self.shuffle_buffer >= 0, "shuffle_buffer", "must be >= 0")
        if self.data_service:
            service_address.parse_address(self.data_service, "data_service", "TrainConfig")
        need(self.init_normalization in INIT_NORMALIZATIONS, "init_normalization",
             f"must be one of {INIT_NORMALIZATIONS}")
        settings = {f.name for f in dataclasses.fields(self)} - {"model_dir", "model",
                                                                 "allow_changes"}
        unknown = sorted(set(self.allow_changes) - settings)
        need(not unknown, "allow_changes", f"{', '.join(unknown)}: not a run setting "
             "(the model's settings never change on a resume)")
        model = self.model
        need(model.activation in (None, *ACTIVATIONS), "activation",
             f"must be one of {ACTIVATIONS}", model)
        need(model.init in (None, *INITS), "init", f"must be one of {INITS}", model)
        # The model's own limits, checked before anything is written.
        need(model.towers in (None, 1, 2), "towers", "must be 1 or 2", model)
        need(model.image_size is None or model.image_size >= 67, "image_size",
             "must be at least 67 (pool5 is empty below)", model)
        need(model.width is None or 0 < model.width <= 1, "width", "must be in (0, 1]", model)
        need(model.fc_units is None or (
            len(model.fc_units) == 2 and all(isinstance(u, int) and u >= (model.towers or 2)
                                             for u in model.fc_units)),
             "fc_units", "must be two whole numbers (fc6, fc7), at least one per tower", model)
        need(model.dropout is None or 0 <= model.dropout < 1, "dropout", "must be in [0, 1)",
             model)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "TrainConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown TrainConfig fields: {unknown}")
        return cls(**values)


@dataclasses.dataclass
class EvaluateConfig:
    """An evaluation (`launch.evaluate`'s flags); `alexnet_tf.training.
    evaluate.evaluate` takes the same settings, with these defaults."""

    data_dir: str = option(help="Folder with the TFRecord shards and labels.txt.")
    model_dir: Sequence[str] = option(help="A training model_dir; repeat the flag to average "
                                      "several models' softmax outputs.", multi=True)
    crops: int = option(10, "1: the centre crop; 10: four corners, centre and their mirror "
                        "images, softmax averaged (section 4.1).", choices=(1, 10))
    which: str = option("best", "Checkpoint of each model_dir: the best by validation top-1 "
                        "error, or the latest.", choices=("best", "latest"))
    split: str = option("validation", "Split to evaluate.", choices=("validation", "train"))
    batch_size: int = option(defaults.BATCH_SIZE, "Images per batch (times 10 with "
                             "--crops=10).", lower_bound=1)
    label_offset: int = option(0, "Subtracted from stored labels: 1 reads tensorflow/models' "
                               "1-based records.", lower_bound=0)
    max_batches: Optional[int] = option(None, "Evaluate only this many batches.",
                                        lower_bound=1)
    output_json: Optional[str] = option(None, "Where the figures go; default "
                                        "<first model_dir>/eval_<split>_<crops>crop.json.")

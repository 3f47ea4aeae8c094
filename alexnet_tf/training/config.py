"""Typed configuration of a training run (tensorflow/models `official/` style).

Every default is the paper's (section 5): batch 128, SGD with momentum 0.9
and weight decay 0.0005, learning rate 0.01 divided by 10 when the validation
error stops improving (at most three times), 90 epochs. The launcher maps its
flags onto these dataclasses; library users build them directly.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Optional, Sequence

STRATEGIES = ("default", "towers", "mirrored", "multi_worker")
LR_SCHEDULES = ("plateau", "step")
MIXED_PRECISION = ("", "mixed_float16", "mixed_bfloat16")


@dataclasses.dataclass
class ModelConfig:
    """Keyword arguments of `build_alexnet` that a run may override.

    `None` keeps the model's own default, so the model module stays the one
    source of truth for the architecture. `num_classes` comes from the data's
    labels.txt and `mean_rgb` / `std_rgb` from its stats.json, not from here;
    `standardize=False` leaves `std_rgb` out (the paper's mean-only input).
    """

    activation: Optional[str] = None
    lrn: Optional[bool] = None
    overlapping_pool: Optional[bool] = None
    towers: Optional[int] = None
    width: Optional[float] = None
    dropout: Optional[float] = None
    extra_conv: Optional[bool] = None
    init: Optional[str] = None
    image_size: Optional[int] = None
    standardize: Optional[bool] = None  # None: True (the model's default)

    def to_kwargs(self) -> dict[str, Any]:
        """build_alexnet kwargs, without `standardize` (see train.model_kwargs_for)."""
        return {k: v for k, v in dataclasses.asdict(self).items()
                if v is not None and k != "standardize"}


@dataclasses.dataclass
class TrainConfig:
    """One training run. `data_dir` holds the data prep's shards, labels.txt
    and stats.json; `model_dir` receives checkpoints, logs and the config."""

    data_dir: str
    model_dir: str
    # Section 5: the optimizer.
    batch_size: int = 128           # global batch, summed over replicas
    epochs: int = 90
    learning_rate: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 0.0005
    # Learning-rate schedule: "plateau" divides by 10 when the validation
    # top-1 error has not improved for `plateau_patience` epochs (the paper
    # did it by hand, three times); "step" divides by 10 at `step_epochs`.
    lr_schedule: str = "plateau"
    plateau_patience: int = 3
    plateau_min_delta: float = 0.0
    max_lr_drops: int = 3
    step_epochs: Sequence[int] = (30, 60, 80)
    # Run length; None means "from the data" (a full pass per epoch).
    steps_per_epoch: Optional[int] = None
    max_steps: Optional[int] = None
    validation_steps: Optional[int] = None
    # Checkpoints and logging.
    checkpoint_every_steps: int = 1000
    keep_checkpoints: int = 3
    log_every_steps: int = 100
    # Parallelism and numerics.
    strategy: str = "default"
    devices: Sequence[str] = ()     # mirrored: devices to use (default: all GPUs)
    tower_devices: Sequence[str] = ()  # towers: the two devices (default: 2 GPUs)
    mixed_precision: str = ""
    jit_compile: bool = False
    # Data.
    label_offset: int = 0
    lighting_stddev: float = 0.1    # section 4.1's PCA lighting; 0 turns it off
    shuffle_buffer: int = 10_000
    seed: Optional[int] = None      # seeds weight init, file order and shuffle
    # Fine-tuning (section 6): a checkpoint prefix/dir or a .keras file.
    init_from: str = ""
    model: ModelConfig = dataclasses.field(default_factory=ModelConfig)

    def __post_init__(self):
        if isinstance(self.model, dict):
            self.model = ModelConfig(**self.model)
        self.step_epochs = tuple(int(e) for e in self.step_epochs)
        self.devices = tuple(self.devices)
        self.tower_devices = tuple(self.tower_devices)
        self.validate()

    def validate(self) -> None:
        """Refuses settings that cannot run, naming the field."""
        def need(ok: bool, field: str, why: str):
            if not ok:
                raise ValueError(f"TrainConfig.{field}={getattr(self, field)!r}: {why}")

        need(bool(self.data_dir), "data_dir", "must be set")
        need(bool(self.model_dir), "model_dir", "must be set")
        need(self.batch_size > 0, "batch_size", "must be positive")
        need(self.epochs > 0, "epochs", "must be positive")
        need(self.learning_rate > 0, "learning_rate", "must be positive")
        need(0 <= self.momentum < 1, "momentum", "must be in [0, 1)")
        need(self.weight_decay >= 0, "weight_decay", "must be >= 0")
        need(self.lr_schedule in LR_SCHEDULES, "lr_schedule", f"must be one of {LR_SCHEDULES}")
        need(self.plateau_patience >= 1, "plateau_patience", "must be >= 1")
        need(self.max_lr_drops >= 0, "max_lr_drops", "must be >= 0")
        need(list(self.step_epochs) == sorted(self.step_epochs), "step_epochs",
             "must be increasing")
        for name in ("steps_per_epoch", "max_steps", "validation_steps"):
            value = getattr(self, name)
            need(value is None or value > 0, name, "must be positive or None")
        need(self.checkpoint_every_steps > 0, "checkpoint_every_steps", "must be positive")
        need(self.keep_checkpoints >= 1, "keep_checkpoints", "must be >= 1")
        need(self.log_every_steps > 0, "log_every_steps", "must be positive")
        need(self.strategy in STRATEGIES, "strategy", f"must be one of {STRATEGIES}")
        need(self.strategy != "towers" or len(self.tower_devices) in (0, 2),
             "tower_devices", "towers needs exactly two devices (or none for two GPUs)")
        need(self.mixed_precision in MIXED_PRECISION, "mixed_precision",
             f"must be one of {MIXED_PRECISION}")
        need(self.mixed_precision != "mixed_bfloat16" or self.model.lrn is False,
             "mixed_precision", "TensorFlow's LRN op has no bfloat16 kernel: use "
             "mixed_float16, or lrn=False")
        need(self.label_offset >= 0, "label_offset", "must be >= 0")
        need(self.lighting_stddev >= 0, "lighting_stddev", "must be >= 0")
        need(self.shuffle_buffer >= 0, "shuffle_buffer", "must be >= 0")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "TrainConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown TrainConfig fields: {unknown}")
        return cls(**values)

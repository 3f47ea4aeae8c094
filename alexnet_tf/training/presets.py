"""Named training presets: one per experiment, with the exact command and the
result it gave (big_vision's habit). `launch.train --config=NAME` starts from
a preset; flags given on the command line (or in a --flagfile) override it.

A preset only lists what differs from `TrainConfig`'s defaults; model
switches use ModelConfig's field names.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping

from alexnet_tf.training.config import ModelConfig, TrainConfig


@dataclasses.dataclass(frozen=True)
class Preset:
    name: str
    summary: str
    command: str
    expected: str
    overrides: Mapping[str, Any]


PRESETS = {p.name: p for p in (
    Preset(
        name="default",
        summary="the paper's optimizer, schedule and augmentation with He init on "
                "standardized input (the library defaults)",
        command="python -m launch.train --data_dir=/data/records --model_dir=runs/alexnet",
        expected="not trained on full ImageNet here (no GPU); the paper's single CNN: "
                 "40.7% top-1, 18.2% top-5 validation error (Table 2)",
        overrides={}),
    Preset(
        name="paper",
        summary="section 5 exactly: N(0, 0.01) init with biases 1 in conv2, conv4, conv5, "
                "fc6, fc7; mean subtraction only",
        command="python -m launch.train --config=paper --data_dir=/data/records "
                "--model_dir=runs/alexnet_paper",
        expected="the paper's Table 2 (40.7% / 18.2%); here the paper's init stayed at "
                 "chance in a 25-step check on Imagenette (docs/benchmarks.md)",
        overrides={"model": {"init": "paper", "standardize": False}}),
    Preset(
        name="imagenette",
        summary="what benchmarks/bench_learn.py runs: Imagenette's 10 classes, 15 epochs",
        command="python -m launch.train --config=imagenette --data_dir=<imagenette records> "
                "--model_dir=runs/imagenette",
        expected="best validation top-1 error within 15 epochs 37.2-41.6% (median 39.4%, "
                 "7 seeds, centre crop; docs/benchmarks.md)",
        overrides={"epochs": 15, "log_every_steps": 5, "keep_checkpoints": 1}),
    Preset(
        name="quickstart",
        summary="what `make quickstart` trains: 8 short epochs on the synthetic set",
        command="python -m launch.train --config=quickstart --data_dir=quickstart_out/records "
                "--model_dir=runs/quickstart",
        expected="best validation top-1 error 0.0-2.2% (chance 83.3%) on the synthetic set "
                 "(three measured runs; docs/benchmarks.md)",
        overrides={"batch_size": 32, "epochs": 8, "checkpoint_every_steps": 100,
                   "log_every_steps": 10, "seed": 0, "shuffle_buffer": 2000}),
)}


def preset_values(name: str) -> dict[str, Any]:
    """A preset's overrides (model switches under "model"); a clear error if unknown."""
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}: choose from {', '.join(PRESETS)}")
    values = dict(PRESETS[name].overrides)
    values["model"] = dict(values.get("model", {}))
    return values


def make_config(name: str = "default", **values: Any) -> TrainConfig:
    """The preset with `values` on top (model switches under "model")."""
    merged = preset_values(name)
    model = {**merged.pop("model"), **dict(values.pop("model", {}) or {})}
    merged.update(values)
    return TrainConfig(**merged, model=ModelConfig(**model))

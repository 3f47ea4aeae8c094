"""The paper's figures for a trained model (Figures 3 and 4, training curves).

    python -m launch.figures --model_dir=runs/alexnet --data_dir=data/records \
        --out_dir=runs/alexnet/figures
"""

from __future__ import annotations

import dataclasses
from typing import Optional

from alexnet_tf.cli import config_flags, terminal
from alexnet_tf.options import option


@dataclasses.dataclass
class FiguresConfig:
    """The flags, defined from these fields."""

    model_dir: str = option(help="Training model_dir (model_config.json, checkpoints, logs).")
    data_dir: str = option(help="TFRecord folder written by data_prep.build_tfrecords.")
    out_dir: Optional[str] = option(None, "Where the PNGs go (default <model_dir>/figures).")
    checkpoint: str = option("latest", "Which checkpoint to draw.", choices=("latest", "best"))
    max_train_images: Optional[int] = option(
        None, "Cap on training images whose fc7 features are extracted for the "
        "nearest-neighbour figure (default: the whole split).", lower_bound=1)


def define_flags() -> None:
    """Defined only when run as a program (no clash with other tools' flags)."""
    config_flags.define_flags(FiguresConfig)


def main(argv):
    del argv
    config = config_flags.from_flags(FiguresConfig)
    from alexnet_tf.figures import paper_figures  # TensorFlow loads after flags are parsed
    from alexnet_tf.training import checkpoints
    model = checkpoints.restore_model(config.model_dir, config.checkpoint)
    out_dir = config.out_dir or f"{config.model_dir.rstrip('/')}/figures"
    written = paper_figures.render(model, config.data_dir, out_dir, config.model_dir,
                                   max_train_images=config.max_train_images)
    for name, path in written.items():
        print(f"{name}: {path}")
    print(f"figures also in TensorBoard: {config.model_dir}/logs/figures")


if __name__ == "__main__":
    define_flags()
    terminal.run(main)

"""Top-1 / top-5 error of trained models, printed as the paper's Table 2.

    python -m launch.evaluate --data_dir=/data/imagenet-records \
        --model_dir=runs/a --model_dir=runs/b --crops=10

Several --model_dir average their softmax outputs (the paper's "5 CNNs").
The figures and the checkpoints they came from go to --output_json.
"""

from __future__ import annotations

import os

from alexnet_tf.cli import config_flags, terminal
from alexnet_tf.training.config import EvaluateConfig


def define_flags() -> None:
    """Defined only when run as a program, so importing this module cannot
    clash with another tool's flags in the same process. Every flag is a
    field of `alexnet_tf.training.config.EvaluateConfig`."""
    config_flags.define_flags(EvaluateConfig)


def main(argv):
    del argv
    from alexnet_tf.training.evaluate import evaluate
    config = config_flags.from_flags(EvaluateConfig)
    output = config.output_json or os.path.join(
        config.model_dir[0], f"eval_{config.split}_{config.crops}crop.json")
    result = evaluate(config.data_dir, config.model_dir, crops=config.crops,
                      which=config.which, batch_size=config.batch_size, split=config.split,
                      label_offset=config.label_offset, max_batches=config.max_batches,
                      output_json=output)
    print(result["table"])
    print(f"Wrote {output}")


if __name__ == "__main__":
    define_flags()
    terminal.run(main)

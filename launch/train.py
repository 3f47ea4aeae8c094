"""Trains AlexNet as the paper did (section 5).

    python -m launch.train --data_dir=/data/imagenet-records --model_dir=runs/alexnet

Defaults are the paper's: batch 128, SGD momentum 0.9, weight decay 0.0005,
learning rate 0.01 divided by 10 when the validation error stops improving
(at most 3 times), 90 epochs. `--config=NAME` starts from a named preset
(`--config=list` prints them); flags override it. Running the same command
again resumes from the latest checkpoint in --model_dir. `--flagfile=run.flags`
reads flags from a file. `--verbosity=0` also shows TensorFlow's INFO lines.

SIGTERM or Ctrl-C finishes the steps in progress, saves a checkpoint, prints
one line (the step and the command that resumes) and exits 143 (SIGTERM) or
130 (SIGINT); see docs/training.md, "Preemption".

Every flag but --config is a field of `alexnet_tf.training.config.TrainConfig`
(or its `model`), defined from it: name, type, default and help.
"""

from __future__ import annotations

import shlex
import sys

from absl import flags

from alexnet_tf.data import service_address
from alexnet_tf.training import presets
from alexnet_tf.training.config import TrainConfig
from alexnet_tf.cli import config_flags, terminal

FLAGS = flags.FLAGS


def define_flags() -> None:
    """Defined only when run as a program, so importing this module cannot
    clash with another tool's flags in the same process."""
    flags.DEFINE_enum("config", "default", [*presets.PRESETS, "list"],
                      "Named preset to start from (flags override it); 'list' prints them.")
    config_flags.define_flags(TrainConfig)


def config_from_flags() -> TrainConfig:
    return config_flags.from_flags(TrainConfig, presets.preset_values(FLAGS.config))


def print_presets() -> None:
    for preset in presets.PRESETS.values():
        print(f"{preset.name}: {preset.summary}\n  command:  {preset.command}\n"
              f"  expected: {preset.expected}")


def main(argv):
    del argv
    if FLAGS.config == "list":
        print_presets()
        return
    config = config_from_flags()
    if config.data_service:  # before anything is written (TensorFlow would wait an hour)
        service_address.probe_dispatcher(config.data_service)
    from alexnet_tf.training.loop import train  # TensorFlow loads after flags are parsed
    from alexnet_tf.training.preemption import TrainingPreempted
    try:
        train(config)
    except TrainingPreempted as stopped:
        print(f"{terminal.program_name()}: {stopped}; resume with: {resume_command()}",
              file=sys.stderr, flush=True)
        sys.exit(stopped.exit_code)


def resume_command() -> str:
    """This very command: run again, it resumes from the latest checkpoint."""
    return shlex.join([sys.executable, "-m", terminal.program_name(), *sys.argv[1:]])


if __name__ == "__main__":
    define_flags()
    terminal.run(main)

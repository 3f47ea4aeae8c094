"""`python tests/signal_probe.py MOMENT SIGNAL [launch.train flags]`: runs
launch.train as `python -m launch.train` would, and sends this process SIGNAL
(TERM or INT) at one exact MOMENT of the run, so a test hits that moment
every time instead of guessing it with a timer:

    setup       while the checkpoints are restored (before the first step)
    chunk:K     as the K-th compiled chunk of steps starts (the chunk runs on)
    save:K      inside the K-th save of a latest checkpoint, before TensorFlow writes
    best:K      inside the K-th write of a best checkpoint (into best.tmp/)
    none        no signal

The signal is a real one (os.kill): the launcher's handlers receive it
exactly as they would a scheduler's.
"""

import os
import runpy
import signal
import sys

import tensorflow as tf

from alexnet_tf.training import checkpoints
from alexnet_tf.training.steps import TrainSteps

moment, name = sys.argv[1], sys.argv[2]
kind, _, count = moment.partition(":")
target = int(count or 1)
calls = {"n": 0}


def maybe_signal(this_kind: str) -> None:
    if this_kind != kind:
        return
    calls["n"] += 1
    if calls["n"] == target:
        os.kill(os.getpid(), getattr(signal, f"SIG{name}"))


def wrap(owner, attribute, this_kind, when=lambda *a, **k: True):
    real = getattr(owner, attribute)

    def wrapped(*args, **kwargs):
        if when(*args, **kwargs):
            maybe_signal(this_kind)
        return real(*args, **kwargs)
    setattr(owner, attribute, wrapped)


def _is_best(manager, *args, **kwargs) -> bool:
    return manager.directory.endswith(checkpoints.STAGING_SUFFIX)


wrap(checkpoints.TrainingCheckpoints, "restore_latest", "setup")
wrap(TrainSteps, "train_loop", "chunk")
wrap(tf.train.CheckpointManager, "save", "save", lambda m, *a, **k: not _is_best(m))
wrap(tf.train.CheckpointManager, "save", "best", _is_best)

sys.argv = ["launch.train", *sys.argv[3:]]
runpy.run_module("launch.train", run_name="__main__", alter_sys=True)

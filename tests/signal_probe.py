"""`python tests/signal_probe.py MOMENT SIGNAL [launch.train flags]`: runs
launch.train as `python -m launch.train` would, and sends this process SIGNAL
(TERM, INT or KILL) at one exact MOMENT of the run, so a test hits that
moment every time instead of guessing it with a timer:

    setup       while the checkpoints are restored (before the first step)
    chunk:K     as the K-th compiled chunk of steps starts (the chunk runs on)
    save:K      inside the K-th save of a latest checkpoint, before TensorFlow writes
    best:K      inside the K-th write of a best checkpoint (into best.tmp/)
    none        no signal

The signal is a real one (os.kill): the launcher's handlers receive it
exactly as they would a scheduler's. In a multi_worker run, the moment is
when TensorFlow's preemption handler has taken it too (its watcher thread
polls once a second, and ends once it has reported the signal), so the run
stops at the same step every time.

Several runs in one process (one TensorFlow start for all of them):

    signal_probe.py MOMENT SIGNAL [flags] --then MOMENT SIGNAL [flags] ...

Every run but the last runs in this process through tests/launchers.py's
`run_launcher` and appends {"moment", "returncode", "stdout", "stderr"} as one
JSON line to the file named by $PROBE_RESULTS, with what it left in its
model_dir: "latest" checkpoint and the "latest_step" saved in it,
"leftovers" (temporary files) and "best_step"; the last one is this
process (its output and exit status are the process's own).

$PROBE_KEEP_WORKER_DIR: a multi-worker non-chief writes its checkpoints there
and keeps them (instead of a temporary folder it deletes), so a test can
compare its weights with the chief's.
"""

import json
import os
import runpy
import signal
import sys
import threading

import tensorflow as tf

from alexnet_tf.training import checkpoints, distribute, model_dir as model_dir_files
from alexnet_tf.training.steps import TrainSteps
from launchers import run_launcher
from tiny_data import temporary_leftovers

current = {"kind": "none", "target": 1, "signal": None, "calls": 0}
watchers = set()  # multi_worker: the threads that call the handler's termination_watcher_fn


def maybe_signal(this_kind: str) -> None:
    if this_kind != current["kind"]:
        return
    current["calls"] += 1
    if current["calls"] == current["target"]:
        os.kill(os.getpid(), current["signal"])
        for thread in watchers:
            # The watcher polls the stop request once a second and ends once it has
            # reported a stop: the moment is now, not whenever the next poll comes.
            thread.join(timeout=300)
            assert not thread.is_alive(), "signal not taken by the preemption handler"


def watch_watchers(cls):
    """TerminationConfig (public): its termination_watcher_fn notes the
    thread that polls it."""
    real = cls.__init__

    def init(self, *args, termination_watcher_fn=None, **kwargs):
        def watcher():
            watchers.add(threading.current_thread())
            return termination_watcher_fn()
        real(self, *args, termination_watcher_fn=termination_watcher_fn and watcher, **kwargs)
    cls.__init__ = init


def wrap(owner, attribute, this_kind, when=lambda *a, **k: True):
    real = getattr(owner, attribute)

    def wrapped(*args, **kwargs):
        if when(*args, **kwargs):
            maybe_signal(this_kind)
        return real(*args, **kwargs)
    setattr(owner, attribute, wrapped)


def _is_best(manager, *args, **kwargs) -> bool:
    return manager.directory.endswith(checkpoints.STAGING_SUFFIX)


def arm(moment: str, name: str) -> None:
    kind, _, count = moment.partition(":")
    current.update(kind=kind, target=int(count or 1), calls=0,
                   signal=getattr(signal, f"SIG{name}"))


def left_in(flags: list[str]) -> dict:
    """What a run left in its --model_dir, for the test to check after the
    next runs have changed it."""
    model_dir = [f for f in flags if f.startswith("--model_dir=")][-1].split("=", 1)[1]
    best = model_dir_files.read_best_info(model_dir)
    latest = tf.train.latest_checkpoint(model_dir)
    step = None if latest is None else int(tf.train.load_checkpoint(latest).get_tensor(
        "step/.ATTRIBUTES/VARIABLE_VALUE"))
    return {"latest": latest, "latest_step": step,
            "leftovers": temporary_leftovers(model_dir),
            "best_step": best.get("step")}


def split_runs(argv: list[str]) -> list[list[str]]:
    runs = [[]]
    for arg in argv:
        if arg == "--then":
            runs.append([])
        else:
            runs[-1].append(arg)
    return runs


watch_watchers(tf.distribute.experimental.TerminationConfig)
wrap(checkpoints.TrainingCheckpoints, "restore_latest", "setup")
wrap(TrainSteps, "train_loop", "chunk")
wrap(tf.train.CheckpointManager, "save", "save", lambda m, *a, **k: not _is_best(m))
wrap(tf.train.CheckpointManager, "save", "best", _is_best)

keep_dir = os.environ.get("PROBE_KEEP_WORKER_DIR")
if keep_dir:
    distribute.write_dir = lambda d, s: d if distribute.is_chief(s) else keep_dir
    distribute.cleanup_write_dir = lambda path, d: None

*earlier, last = split_runs(sys.argv[1:])
for moment, name, *flags in earlier:
    arm(moment, name)
    result = run_launcher("launch.train", *flags)
    with open(os.environ["PROBE_RESULTS"], "a") as f:
        f.write(json.dumps({"moment": moment, "returncode": result.returncode,
                            "stdout": result.stdout, "stderr": result.stderr,
                            **left_in(flags)}) + "\n")
moment, name, *flags = last
arm(moment, name)
sys.argv = ["launch.train", *flags]
runpy.run_module("launch.train", run_name="__main__", alter_sys=True)

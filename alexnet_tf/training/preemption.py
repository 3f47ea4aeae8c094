"""Stopping a training run cleanly on SIGTERM or SIGINT (preemption).

A scheduler ends a job with SIGTERM and, after a grace period, SIGKILL; a
user presses Ctrl-C. Either way the run finishes the compiled chunk of steps
it is in (a signal cannot interrupt TensorFlow's C++ call anyway, and the
step's bookkeeping, e.g. an epoch end's validation, finishes too), saves a
complete checkpoint and raises `TrainingPreempted`; `launch.train` prints one
line with the step and the command that resumes, and exits with
`exit_code`: 128 + the signal's number (143 for SIGTERM, 130 for SIGINT),
the shell's own code for "ended by that signal". A worker of a multi-worker
run stopped by ANOTHER worker's signal exits 143.

- One process (`default`, `towers`, `mirrored`): `LocalPreemption` checks the
  request after each chunk's bookkeeping.
- `multi_worker`: `ClusterPreemption` hands the chunks to TensorFlow's
  `tf.distribute.experimental.PreemptionCheckpointHandler`, which agrees on
  the step with every worker through the coordination service; every worker
  then saves that same step (our checkpoints, through `save_fn`) and stops.

The signal handlers only set a flag, so a signal during a checkpoint save
never cuts it short.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from typing import Callable, Optional

import tensorflow as tf

from alexnet_tf.errors import Stopped

try:  # the handler reads its own deprecated counter when it saves; not the user's concern
    from tensorflow.python.util.deprecation import silence as _silence_deprecations
except ImportError:  # pragma: no cover - a TensorFlow without it
    _silence_deprecations = contextlib.nullcontext

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)
PEER_EXIT_CODE = 128 + signal.SIGTERM  # stopped because another worker was preempted


def exit_code_for(signum: Optional[int]) -> int:
    """128 + the signal's number, as a shell reports a process it ended."""
    return 128 + int(signum) if signum else PEER_EXIT_CODE


class TrainingPreempted(Stopped):
    """A signal stopped training after a checkpoint of `step` was saved."""

    def __init__(self, step: int, checkpoint: Optional[str], signum: Optional[int]):
        self.step, self.checkpoint, self.signum = step, checkpoint, signum
        self.exit_code = exit_code_for(signum)
        cause = (signal.Signals(signum).name if signum
                 else "another worker's preemption")
        super().__init__(f"stopped by {cause} at step {step}, checkpoint "
                         f"{checkpoint or 'none'} saved")


class StopRequest:
    """SIGTERM and SIGINT set a flag instead of ending the process.

    Use as a context manager; `install()` again after creating a
    MultiWorkerMirroredStrategy: TensorFlow's coordination service puts its
    own C++ SIGTERM handler in place then (and does nothing with it).
    """

    def __init__(self):
        self.event = threading.Event()
        self.signum: Optional[int] = None
        self._previous: dict = {}

    @property
    def requested(self) -> bool:
        return self.event.is_set()

    def _handle(self, signum, frame):
        del frame
        if self.signum is None:
            self.signum = signum
        self.event.set()

    def install(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return  # Python delivers signals to the main thread only
        for signum in STOP_SIGNALS:
            previous = signal.signal(signum, self._handle)
            self._previous.setdefault(signum, previous)

    def restore(self) -> None:
        for signum, previous in self._previous.items():
            signal.signal(signum, previous if previous is not None else signal.SIG_DFL)
        self._previous.clear()

    def __enter__(self) -> "StopRequest":
        self.install()
        return self

    def __exit__(self, *exc) -> None:
        self.restore()


class LocalPreemption:
    """One process: the loop calls `stop_if_requested` after each chunk."""

    def __init__(self, request: StopRequest, save: Callable[[], Optional[str]]):
        self.request, self._save = request, save

    def run(self, chunk: Callable):
        return chunk()

    def stop_if_requested(self, step: int) -> None:
        if self.request.requested:
            raise TrainingPreempted(step, self._save(), self.request.signum)

    def close(self) -> None:
        pass


class ClusterPreemption:
    """multi_worker: TensorFlow's PreemptionCheckpointHandler runs the chunks.

    Its termination watcher polls our StopRequest (so SIGINT counts as well
    as SIGTERM); once any worker reports one, each worker finishes the
    agreed number of chunks, saves through `save` and raises
    TrainingPreempted from the handler's exit_fn.

    The handler is given a CheckpointManager of its own over an empty
    checkpoint in a folder that never holds one: it then restores nothing and
    counts its calls from 0 on every worker at every start (the counts must
    agree between workers; the restored step lives in our own checkpoints,
    as TensorFlow's docs advise instead of its deprecated `total_run_calls`).
    """

    def __init__(self, request: StopRequest, save: Callable[[], Optional[str]],
                 step: Callable[[], int], cluster_resolver, scratch_dir: str,
                 model_dir: str):
        self.request, self._save, self._step = request, save, step
        self._model_dir = model_dir
        self._saved: Optional[str] = None
        config = tf.distribute.experimental.TerminationConfig(
            termination_watcher_fn=request.event.is_set, exit_fn=self._exit,
            grace_period=0, save_fn=self._save_now)
        bookkeeping = tf.train.CheckpointManager(tf.train.Checkpoint(), scratch_dir,
                                                 max_to_keep=1)
        self.handler = tf.distribute.experimental.PreemptionCheckpointHandler(
            cluster_resolver, bookkeeping, termination_config=config)

    def _save_now(self, *args, **kwargs) -> None:
        # Other workers save into a throwaway folder; the chief's copy is the one kept.
        saved = self._save()
        self._saved = saved and os.path.join(self._model_dir, os.path.basename(saved))

    def _exit(self) -> None:
        raise TrainingPreempted(self._step(), self._saved, self.request.signum)

    def run(self, chunk: Callable):
        with _silence_deprecations():
            return self.handler.run(chunk)

    def stop_if_requested(self, step: int) -> None:
        del step  # the handler decides, at the start of the next chunk

    def close(self) -> None:
        # Stops the handler's watcher threads now rather than at garbage collection.
        if self.handler is not None:
            self.handler.__del__()
            self.handler = None


def make_preemption(request: StopRequest, strategy: tf.distribute.Strategy,
                    save: Callable[[], Optional[str]], step: Callable[[], int],
                    scratch_dir: str, model_dir: str):
    """ClusterPreemption for a multi-worker strategy, LocalPreemption otherwise."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy) and resolver is not None \
            and resolver.cluster_spec().jobs:
        request.install()  # after the strategy: see StopRequest
        return ClusterPreemption(request, save, step, resolver, scratch_dir, model_dir)
    return LocalPreemption(request, save)

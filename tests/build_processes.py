"""Real build processes for the data prep tests whose subject is the process
boundary (Ctrl-C to the process group, kill -9, a second build on the
folder): start one through tests/build_probe.py, wait for what it does,
leave nothing running."""

import contextlib
import glob
import os
import signal
import subprocess
import sys
import time

import psutil

TESTS_DIR = os.path.dirname(os.path.abspath(__file__))
REPO_ROOT = os.path.dirname(TESTS_DIR)
ENV = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")


def start_held_build(input_dir, out, *flags, workers: int, hold_after: int, gate=None):
    """`data_prep.build_tfrecords` in a process group of its own, each of its
    converting processes holding after `hold_after` images until `gate`
    exists (tests/build_probe.py); stderr is piped."""
    env = dict(ENV, PYTHONPATH=os.pathsep.join(filter(None, [REPO_ROOT,
                                                             ENV.get("PYTHONPATH")])),
               BUILD_PROBE_HOLD_AFTER=str(hold_after))
    if gate is not None:
        env["BUILD_PROBE_GATE"] = str(gate)
    return subprocess.Popen(
        [sys.executable, os.path.join(TESTS_DIR, "build_probe.py"), f"--input_dir={input_dir}",
         f"--output_dir={out}", f"--num_workers={workers}", "--min_images_per_worker=0",
         "--image_size=32", *flags],
        cwd=REPO_ROOT, env=env, start_new_session=True,
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


@contextlib.contextmanager
def session(process):
    """Kills whatever is left of the process's session at the end."""
    try:
        yield process
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=30)


def wait_for(condition, timeout, what):
    """Polls `condition` until true; fails naming `what` (text, or a function
    that says it at that moment) after `timeout` s."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what() if callable(what) else what}")
        time.sleep(0.02)


def published(out) -> list[str]:
    """The training shards published in `out` (not the .tmp ones)."""
    return sorted(glob.glob(os.path.join(glob.escape(str(out)), "train-?????-of-?????")))


def alive(process: psutil.Process) -> bool:
    try:
        return process.is_running() and process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False

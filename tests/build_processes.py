"""Real build processes for the data prep tests whose subject is the process
boundary (Ctrl-C to the process group, kill -9, a second build on the
folder): start one through the warm server of tests/build_probe.py, wait
for what it does, leave nothing running."""

import contextlib
import glob
import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time

import psutil
import pytest

from warm_launchers import Forked

TESTS_DIR = os.path.dirname(os.path.abspath(__file__))
REPO_ROOT = os.path.dirname(TESTS_DIR)
ENV = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")


class BuildServer:
    """One warm process per test module that forks each held build (and,
    with `call`, other programs that build): their imports are paid once,
    not per process. Each build runs the
    command line as `python -m data_prep.build_tfrecords` would, its fork
    server a fresh interpreter."""

    def __init__(self, folder):
        self._folder, self._count = str(folder), 0
        env = dict(ENV, PYTHONPATH=os.pathsep.join(filter(None, [REPO_ROOT,
                                                                 ENV.get("PYTHONPATH")])))
        self._process = subprocess.Popen(
            [sys.executable, os.path.join(TESTS_DIR, "build_probe.py"), "--serve"],
            cwd=REPO_ROOT, env=env, start_new_session=True, stdin=subprocess.PIPE,
            stdout=subprocess.PIPE, text=True)
        self._exits, self._pids = {}, queue.SimpleQueue()
        self._changed = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        assert self._pids.get(timeout=300), "the build server did not start"  # imports done

    def _read(self):
        for line in self._process.stdout:
            message = json.loads(line)
            if "exit" in message:
                with self._changed:
                    self._exits[message["exit"]] = message["code"]
                    self._changed.notify_all()
            else:
                self._pids.put(message["pid"] if "pid" in message else message["ready"])
        self._pids.put(None)  # the server ended: no answer will come

    def start_held_build(self, input_dir, out, *flags, workers: int, hold_after: int,
                         gate=None) -> Forked:
        """`data_prep.build_tfrecords`, each of its converting processes
        holding after `hold_after` images until `gate` exists."""
        env = {"BUILD_PROBE_HOLD_AFTER": str(hold_after)}
        if gate is not None:
            env["BUILD_PROBE_GATE"] = str(gate)
        flags = [f"--input_dir={input_dir}", f"--output_dir={out}", f"--num_workers={workers}",
                 "--min_images_per_worker=0", "--image_size=32", *flags]
        return self._fork({"flags": flags, "env": env})[0]

    def _fork(self, request: dict, stdout: bool = False) -> tuple[Forked, str]:
        self._count += 1
        base = os.path.join(self._folder, f"process{self._count}")
        request["stderr"] = base + ".stderr"
        if stdout:
            request["stdout"] = base + ".stdout"
        for path in (request["stderr"], request.get("stdout")):
            if path:  # there before the process starts: readable at once
                open(path, "w").close()
        self._process.stdin.write(json.dumps(request) + "\n")
        self._process.stdin.flush()
        pid = self._pids.get(timeout=60)
        assert pid, "the build server ended"
        return Forked(self, pid, request["stderr"]), request.get("stdout")

    def call(self, module: str, function: str, *args) -> tuple[Forked, str]:
        """`module.function(*args)` in a process forked warm, in a session
        of its own; the process and the file its stdout goes to."""
        return self._fork({"call": [module, function, list(args)], "env": {}},
                          stdout=True)

    def exit_code(self, pid, timeout):
        with self._changed:
            self._changed.wait_for(lambda: pid in self._exits, timeout)
            return self._exits.get(pid)

    def close(self):
        self._process.stdin.close()  # its loop ends; so does it
        try:
            self._process.wait(timeout=30)
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self._process.pid, signal.SIGKILL)
            self._process.wait(timeout=30)


@pytest.fixture(scope="module")
def build_server(tmp_path_factory):
    """The module's warm build server (import it into the test module)."""
    server = BuildServer(tmp_path_factory.mktemp("build_server"))
    yield server
    server.close()


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


def loading(pid: int, library: str) -> bool:
    """Whether the process has begun loading `library` (one of its native
    files is mapped: e.g. "numpy", which data prep's imports load first)."""
    try:
        with open(f"/proc/{pid}/maps") as maps:
            return f"/{library}" in maps.read()
    except OSError:
        return False


def alive(process: psutil.Process) -> bool:
    try:
        return process.is_running() and process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False

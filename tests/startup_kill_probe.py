"""kill -9 of the build while its fork server is still starting: nothing may
survive it. Real processes, real SIGKILLs (the test:
test_data_prep_processes.py).

The fork server used to run its preload's imports before asking to die
with its parent; a build killed in that window left it, and the worker it
then forked for the build's queued request, running for good, reparented
to init.

The harness (`run`), forked warm by the test module's build server
(tests/build_probe.py), makes itself a child subreaper, so every orphan of a
build is re-parented to it and can be counted. For each moment it forks a
process that runs the command line (`python -m data_prep.build_tfrecords`,
2 workers) without importing the build's modules again, kills that build
process alone at the moment, and reports which descendants are still alive
over the next seconds (and kills them, so a failure leaks nothing and the
next moment starts clean). The fork server each build starts is a fresh
interpreter, its imports and start-up as in any build.
"""

import contextlib
import ctypes
import json
import os
import runpy
import signal
import sys
import time

from build_processes import REPO_ROOT, alive, loading

_PR_SET_CHILD_SUBREAPER = 36
FORKSERVER_MARK = "multiprocessing.forkserver"


def _start_build(input_dir: str, out: str) -> int:
    """A forked child of this (warm) process that runs the command line as
    `python -m data_prep.build_tfrecords ...` would; its pid."""
    flags = [f"--input_dir={input_dir}", f"--output_dir={out}", "--num_workers=2",
             "--min_images_per_worker=0", "--train_shards=8", "--image_size=32"]
    pid = os.fork()
    if pid:
        return pid
    code = 1
    try:
        devnull = os.open(os.devnull, os.O_RDWR)
        os.dup2(devnull, 1)
        os.dup2(devnull, 2)
        sys.argv = ["data_prep/build_tfrecords.py", *flags]
        runpy.run_module("data_prep.build_tfrecords", run_name="__main__", alter_sys=True)
        code = 0
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else 1
    finally:
        os._exit(code)  # never back into the harness's loop


def _ended(pid: int) -> bool:
    """Whether the build has ended (reaped here, once)."""
    return os.waitpid(pid, os.WNOHANG)[0] == pid


def _harness(input_dir: str, out: str, event: str, delay: float, watch: float) -> dict:
    import psutil

    started = time.monotonic()
    build = _start_build(input_dir, out)
    me = psutil.Process(build)

    def forkserver():
        for child in _children(me, recursive=False):
            if FORKSERVER_MARK in " ".join(_cmdline(child)):
                return child
        return None

    seen_at, servers, ended = None, set(), False
    while not ended and time.monotonic() - started < 60:
        server = forkserver()
        if server is not None:
            servers.add(server.pid)
        if event == "start" or server is not None and (
                event == "forkserver" or (event == "preload" and loading(server.pid, "numpy"))
                or (event == "worker" and _children(server, False))):
            seen_at = time.monotonic()
            break
        time.sleep(0.005)
        ended = _ended(build)
    if seen_at is None:
        os.kill(build, signal.SIGKILL) if not ended else None
        return {"error": f"build ended ({ended}) or was slow before the {event} event"}
    while time.monotonic() < seen_at + delay:
        time.sleep(0.005)
    servers |= {p.pid for p in [forkserver()] if p is not None}
    alive_before = [_describe(p, servers) for p in _children(me, recursive=True)]
    running = not _ended(build)
    if running:  # (once reaped, its pid could be another process's)
        os.kill(build, signal.SIGKILL)
        os.waitpid(build, 0)
    killed_at = time.monotonic()

    survivors = []
    while True:
        _reap()
        survivors = [_describe(p, servers)
                     for p in _children(psutil.Process(), recursive=True)]
        if not survivors or time.monotonic() - killed_at > watch:
            break
        time.sleep(0.05)
    report = {"kill_after_start": round(killed_at - started, 2),
              "build_was_running": running, "helpers_at_kill": alive_before,
              "survivors": survivors,
              "cleared_after": round(time.monotonic() - killed_at, 2)}
    for p in _children(psutil.Process(), recursive=True):  # leave nothing behind
        with contextlib.suppress(Exception):
            p.kill()
    time.sleep(0.2)
    _reap()
    return report


def _harness_all(input_dir: str, out: str, moments: list, watch: float) -> dict:
    """Each moment's report, one build after another, keyed by its id."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "PR_SET_CHILD_SUBREAPER")
    sys.path.insert(0, REPO_ROOT)
    import data_prep.build_tfrecords  # noqa: F401 - once, before the builds are forked

    return {moment_id(event, delay): _harness(input_dir, os.path.join(out, str(i)), event,
                                              delay, watch)
            for i, (event, delay) in enumerate(moments)}


def moment_id(event: str, delay: float) -> str:
    return f"{event}+{delay}s"


def _children(process, recursive):
    import psutil

    try:
        return [c for c in process.children(recursive=recursive) if alive(c)]
    except psutil.NoSuchProcess:
        return []


def _cmdline(process) -> list[str]:
    try:
        return process.cmdline()
    except Exception:  # noqa: BLE001 - gone, or not readable yet
        return []


def _describe(process, servers: set[int]) -> str:
    """pid and role: a worker is forked from the fork server (same command line)."""
    cmd = " ".join(_cmdline(process))
    kind = ("fork server" if process.pid in servers else "worker" if FORKSERVER_MARK in cmd
            else "resource tracker" if "resource_tracker" in cmd else cmd[:60])
    return f"{process.pid} {kind}"


def _reap() -> None:
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def run(input_dir: str, out: str, moments: list, watch: float) -> None:
    """Prints every moment's report as one JSON line (the server's `call`)."""
    print(json.dumps(_harness_all(input_dir, out, moments, watch)), flush=True)

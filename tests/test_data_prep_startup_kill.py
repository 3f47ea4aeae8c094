"""kill -9 of the build while its fork server is still starting: nothing may
survive it. Real processes, real SIGKILLs.

The fork server used to import TensorFlow (seconds) before asking to die
with its parent; a build killed in that window left it, and the worker it
then forked for the build's queued request, running for good (hundreds of
MB each), reparented to init.

Each case runs a harness process (this file run as a script) that makes
itself a child subreaper, so every orphan of the build is re-parented to it
and can be counted; it starts a 2-worker build, kills the build process
alone at the given moment, then reports which descendants are still alive
over the next seconds (and kills them, so a failure leaks nothing).
"""

import contextlib
import ctypes
import json
import os
import signal
import subprocess
import sys
import time

from build_processes import REPO_ROOT, alive

_PR_SET_CHILD_SUBREAPER = 36
FORKSERVER_MARK = "multiprocessing.forkserver"


# ---------------------------------------------------------------- the harness


def _harness(input_dir: str, out: str, event: str, delay: float, watch: float) -> dict:
    import psutil

    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "PR_SET_CHILD_SUBREAPER")
    started = time.monotonic()
    build = subprocess.Popen(
        [sys.executable, "-m", "data_prep.build_tfrecords", f"--input_dir={input_dir}",
         f"--output_dir={out}", "--num_workers=2", "--min_images_per_worker=0",
         "--train_shards=8", "--image_size=32"],
        cwd=REPO_ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
    me = psutil.Process(build.pid)

    def forkserver():
        for child in _children(me, recursive=False):
            if FORKSERVER_MARK in " ".join(_cmdline(child)):
                return child
        return None

    seen_at, servers = None, set()
    while build.poll() is None and time.monotonic() - started < 60:
        server = forkserver()
        if server is not None:
            servers.add(server.pid)
        if event == "start" or (event == "forkserver" and server is not None) or (
                event == "worker" and server is not None and _children(server, False)):
            seen_at = time.monotonic()
            break
        time.sleep(0.005)
    if seen_at is None:
        return {"error": f"build ended (rc {build.poll()}) before the {event} event"}
    while time.monotonic() < seen_at + delay:
        time.sleep(0.005)
    servers |= {p.pid for p in [forkserver()] if p is not None}
    alive_before = [_describe(p, servers) for p in _children(me, recursive=True)]
    running = build.poll() is None
    if running:  # (once reaped, its pid could be another process's)
        os.kill(build.pid, signal.SIGKILL)
    killed_at = time.monotonic()
    build.wait()

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


if __name__ == "__main__":
    print(json.dumps(_harness(sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4]),
                              float(sys.argv[5]))), flush=True)
    sys.exit(0)


# ---------------------------------------------------------------- the tests

import pytest  # noqa: E402

from tree_data import write_linked_tree  # noqa: E402

pytestmark = [pytest.mark.slow,  # subprocess builds, killed
              pytest.mark.skipif(not sys.platform.startswith("linux"),
                                 reason="PR_SET_PDEATHSIG and subreapers are Linux's")]


@pytest.fixture(scope="module")
def small_tree(tmp_path_factory):
    """A build that outlasts the latest kill moment: its workers convert for a
    few seconds after the fork server's ~1.5-3 s of imports."""
    return write_linked_tree(tmp_path_factory.mktemp("startup"))


# (event, seconds after it): the kill lands while the fork server starts
# Python, while it imports TensorFlow (its preload: ~1.5-3 s here), as it
# forks the first worker, and at the audit's fixed moment after start.
KILL_MOMENTS = [("forkserver", 0.0), ("forkserver", 0.3), ("forkserver", 1.0),
                ("forkserver", 2.0), ("worker", 0.0), ("start", 3.0)]


@pytest.mark.parametrize("event,delay", KILL_MOMENTS,
                         ids=[f"{e}+{d}s" for e, d in KILL_MOMENTS])
def test_no_descendant_survives_a_kill_during_start_up(small_tree, tmp_path, event, delay):
    harness = subprocess.Popen(
        [sys.executable, os.path.abspath(__file__), str(small_tree), str(tmp_path / "out"),
         event, str(delay), "10"],
        cwd=REPO_ROOT, start_new_session=True, stdout=subprocess.PIPE, text=True)
    try:
        stdout, _ = harness.communicate(timeout=90)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(harness.pid, signal.SIGKILL)
        harness.wait(timeout=30)
    report = json.loads(stdout.strip().splitlines()[-1])
    assert "error" not in report, report
    if event == "start" and not report["build_was_running"]:
        pytest.skip(f"this machine finished the build within {delay} s: {report}")
    assert report["build_was_running"], report
    assert report["survivors"] == [], report

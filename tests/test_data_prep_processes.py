"""One build at a time per output folder, workers that die with the build,
and Ctrl-C in one line that leaves what a rerun resumes: real build
processes, real SIGKILLs and SIGINTs; kill -9 during the build's start-up
leaves nothing running (tests/startup_kill_probe.py). Each build but the
one stopped by Ctrl-C during start-up is forked by the module's warm server
(tests/build_probe.py), once the build's modules are imported: the held ones hold
part-way until the test has done what it checks."""

import glob
import json
import os
import signal
import subprocess
import sys

import psutil
import pytest

from build_processes import (ENV, REPO_ROOT, alive, build_server,  # noqa: F401
                             loading, published, session, wait_for)
from data_prep import build_tfrecords, output_dir, writer
from launchers import run_launcher
from startup_kill_probe import moment_id
from tree_data import build_quietly, write_linked_tree, write_two_class_tree

pytestmark = pytest.mark.slow  # subprocess builds, killed and interrupted

SHARDS = 4


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    """Two shards' worth of tiny images a class: 8 in 4 training shards."""
    return write_linked_tree(tmp_path_factory.mktemp("linked"), per_class=4, side=48)


def test_a_second_build_stops_at_once_naming_the_holder(build_server, tree, tmp_path):
    """Two builds into one folder used to end with a manifest that disagreed
    with the shards. Now the second (the command line, here in this process)
    stops in one line before reading anything; the first, let go, ends with
    a manifest that matches every shard."""
    out, gate = tmp_path / "out", tmp_path / "gate"
    holder = build_server.start_held_build(tree, out, f"--train_shards={SHARDS}", workers=1,
                                           hold_after=2, gate=gate)
    with session(holder):
        wait_for(lambda: len(published(out)) == 1, 120, "the first build's first shard")
        second = run_launcher("data_prep.build_tfrecords", f"--input_dir={tree}",
                              f"--output_dir={out}", f"--train_shards={SHARDS}",
                              "--image_size=32")
        assert (second.returncode, second.stderr) == (2, (
            f"error: {out} is being written by another build (pid {holder.pid}, lock "
            f"{output_dir.LOCK_FILENAME}): wait for it to end or stop it\n"))
        # Refused while the first build, held at its gate, still runs: the
        # second did not wait for the lock (it would wait for ever).
        assert holder.poll() is None
        gate.touch()
        assert holder.wait(timeout=120) == 0, holder.stderr.read()
    manifest = json.loads((out / build_tfrecords.MANIFEST_FILENAME).read_text())
    assert manifest["found"] == manifest["written"] == 8
    for shard in manifest["shards"]:
        path = out / shard["name"]
        assert path.stat().st_size == shard["bytes"]
        assert writer.file_sha256(str(path)) == shard["sha256"]


def test_killing_the_build_alone_kills_its_workers_and_frees_the_folder(build_server, tree,
                                                                         tmp_path):
    """kill -9 of the parent used to leave the fork server and workers
    running (and publishing shards). Now they exit within seconds, nothing is
    published after the kill, and the next build takes the lock over and
    resumes."""
    out = tmp_path / "out"
    build = build_server.start_held_build(tree, out, f"--train_shards={SHARDS}", workers=2,
                                          hold_after=2)
    with session(build):
        wait_for(lambda: len(published(out)) >= 1, 120, "a first published shard")
        helpers = psutil.Process(build.pid).children(recursive=True)
        assert len(helpers) >= 3  # fork server and two workers (and the resource tracker)
        os.kill(build.pid, signal.SIGKILL)
        build.wait(timeout=10)
        shards = published(out)  # the build, the only one that publishes, is gone
        wait_for(lambda: not any(alive(p) for p in helpers), 5,
                 lambda: f"helpers to exit: {[(p.pid, _status(p)) for p in helpers if alive(p)]}")
        assert len(shards) < SHARDS
        assert not (out / build_tfrecords.MANIFEST_FILENAME).exists()  # an unfinished build
        assert published(out) == shards  # nothing published by a helper after the kill

    resumed = build_tfrecords.build(build_tfrecords.BuildConfig(
        str(tree), str(out), num_workers=1, train_shards=SHARDS, image_size=32),
        log=open(os.devnull, "w"))
    assert resumed.found == resumed.written == 8
    assert resumed.shards_kept >= len(shards) and resumed.shards_written + \
        resumed.shards_kept == SHARDS
    assert not glob.glob(str(out / "*.tmp"))


def _status(process: psutil.Process) -> str:
    try:
        return process.status()
    except psutil.NoSuchProcess:
        return "gone"


# ---------------------------------------------------------------- Ctrl-C

def test_ctrl_c_during_start_up_is_one_line_too(tmp_path):
    """While the build's modules load, before it has begun: a fresh
    `python -m` process, not one of the warm server's."""
    root = tmp_path / "in"
    write_two_class_tree(root, 1)
    out = tmp_path / "out"
    build = subprocess.Popen(
        [sys.executable, "-m", "data_prep.build_tfrecords", f"--input_dir={root}",
         f"--output_dir={out}", "--image_size=32"],
        cwd=REPO_ROOT, env=ENV, start_new_session=True,
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    with session(build):
        wait_for(lambda: loading(build.pid, "numpy"), 120, "the build's imports to start")
        os.killpg(build.pid, signal.SIGINT)
        assert build.wait(timeout=60) == build_tfrecords.INTERRUPTED_EXIT_CODE
        stderr = build.stderr.read()
    assert "Traceback" not in stderr and "KeyboardInterrupt" not in stderr, stderr
    last = stderr.strip().splitlines()[-1]
    # Almost always still loading; on a fast machine the build may have begun.
    assert last in ("interrupted: nothing was written", build_tfrecords.interrupted_line(str(out)))
    if last == "interrupted: nothing was written":
        assert not out.exists()


@pytest.mark.parametrize("workers", [1, 2])
def test_ctrl_c_stops_the_build_in_one_line_and_a_rerun_resumes(build_server, tree, tmp_path,
                                                                 workers):
    """Ctrl-C used to print a KeyboardInterrupt traceback (one per worker
    too). The terminal sends SIGINT to the whole process group; so does this,
    while the build holds part-way (tests/build_probe.py)."""
    out = tmp_path / "out"
    build = build_server.start_held_build(tree, out, "--train_shards=4", workers=workers,
                                          hold_after=2)
    with session(build):
        wait_for(lambda: len(published(out)) >= 1, 240, "a first published shard")
        helpers = psutil.Process(build.pid).children(recursive=True)
        os.killpg(build.pid, signal.SIGINT)
        assert build.wait(timeout=60) == build_tfrecords.INTERRUPTED_EXIT_CODE
        stderr = build.stderr.read()
        wait_for(lambda: not any(alive(p) for p in helpers), 10, "the workers to exit")
    assert "Traceback" not in stderr and "KeyboardInterrupt" not in stderr, stderr
    assert stderr.strip().splitlines()[-1] == build_tfrecords.interrupted_line(str(out))
    shards = published(out)
    assert 1 <= len(shards) < 4
    assert not glob.glob(str(out / "*.tmp"))  # the workers' unfinished shards removed
    assert not (out / build_tfrecords.MANIFEST_FILENAME).exists()  # not a finished build

    resumed = build_quietly(tree, out, train_shards=4)
    assert resumed.found == resumed.written == 8
    assert resumed.shards_kept >= len(shards)
    assert resumed.duplicates["train"] and len(resumed.duplicates["train"][0]) == 8


# ---------------------------------------------------------------- kill -9 during start-up

@pytest.fixture(scope="module")
def small_tree(tmp_path_factory):
    """A build that outlasts the latest kill moment: its workers convert for a
    few seconds after the fork server's imports (a fraction of one)."""
    return write_linked_tree(tmp_path_factory.mktemp("startup"))


# (event, seconds after it): the kill lands while the fork server starts
# Python (before its preload arms the death signal), once its preload is
# importing the writer (after; numpy seen in its memory maps, not guessed
# from a delay), as it forks the first worker, and at the audit's fixed
# moment after start.
KILL_MOMENTS = [("forkserver", 0.0), ("preload", 0.0), ("worker", 0.0), ("start", 1.0)]


@pytest.fixture(scope="module")
def reports(build_server, small_tree, tmp_path_factory) -> dict:
    """Every moment's report, from one harness run (tests/startup_kill_probe.py,
    forked warm by the build server; the moments one after another, each
    with a build of its own)."""
    harness, stdout = build_server.call(
        "startup_kill_probe", "run", str(small_tree),
        str(tmp_path_factory.mktemp("startup_out")), KILL_MOMENTS, 10)
    with session(harness):
        assert harness.wait(timeout=400) == 0, harness.stderr.read()[-3000:]
    with open(stdout) as lines:
        return json.loads(lines.read().strip().splitlines()[-1])


@pytest.mark.skipif(not sys.platform.startswith("linux"),
                    reason="PR_SET_PDEATHSIG and subreapers are Linux's")
@pytest.mark.timeout(600)  # the first case waits for the harness's whole run
@pytest.mark.parametrize("event,delay", KILL_MOMENTS,
                         ids=[moment_id(e, d) for e, d in KILL_MOMENTS])
def test_no_descendant_survives_a_kill_during_start_up(reports, event, delay):
    report = reports[moment_id(event, delay)]
    assert "error" not in report, report
    if event == "start" and not report["build_was_running"]:
        pytest.skip(f"this machine finished the build within {delay} s: {report}")
    assert report["build_was_running"], report
    assert report["survivors"] == [], report

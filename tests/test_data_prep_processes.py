"""One build at a time per output folder, and workers that die with the
build: real build processes, real SIGKILLs. Each build holds part-way
(tests/build_probe.py) until the test has done what it checks."""

import glob
import json
import os
import signal
import time

import psutil
import pytest

from build_processes import alive, build_server, published, session, wait_for  # noqa: F401
from data_prep import build_tfrecords, output_dir, writer
from launchers import run_launcher
from tree_data import write_linked_tree

pytestmark = pytest.mark.slow  # subprocess builds, killed

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
        started = time.monotonic()
        second = run_launcher("data_prep.build_tfrecords", f"--input_dir={tree}",
                              f"--output_dir={out}", f"--train_shards={SHARDS}",
                              "--image_size=32")
        assert time.monotonic() - started < 5
        assert (second.returncode, second.stderr) == (2, (
            f"error: {out} is being written by another build (pid {holder.pid}, lock "
            f"{output_dir.LOCK_FILENAME}): wait for it to end or stop it\n"))
        assert holder.poll() is None  # refused while the first build was still running
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

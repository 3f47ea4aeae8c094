"""One build at a time per output folder, and workers that die with the
build: real subprocesses, real SIGKILLs."""

import contextlib
import glob
import json
import os
import signal
import subprocess
import sys
import time

import psutil
import pytest

from data_prep import build_tfrecords, output_dir, writer
from tree_data import write_slow_tree

pytestmark = pytest.mark.slow  # subprocess builds, killed

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENV = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")


@pytest.fixture(scope="module")
def slow_tree(tmp_path_factory):
    return write_slow_tree(tmp_path_factory.mktemp("slow"))


def _start_build(input_dir, out, workers=2):
    return subprocess.Popen(
        [sys.executable, "-m", "data_prep.build_tfrecords", f"--input_dir={input_dir}",
         f"--output_dir={out}", f"--num_workers={workers}", "--min_images_per_worker=0",
         "--train_shards=16", "--image_size=64"],
        cwd=REPO_ROOT, env=ENV, start_new_session=True,
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def _published(out):
    return sorted(p for p in glob.glob(str(out / "train-?????-of-?????")))


def _wait_for(condition, timeout, what):
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def _lock_pid(out):
    try:
        return (out / output_dir.LOCK_FILENAME).read_text().strip()
    except FileNotFoundError:
        return ""


@contextlib.contextmanager
def _session(process):
    """Kills whatever is left of the process's session at the end."""
    try:
        yield process
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=30)


def _quiet():
    return open(os.devnull, "w")


def test_a_second_build_stops_at_once_naming_the_holder(slow_tree, tmp_path):
    """Two builds into one folder used to end with a manifest that disagreed
    with the shards. Now the second stops before reading anything; the
    first ends with a manifest that matches every shard."""
    out = tmp_path / "out"
    with _session(_start_build(slow_tree, out)) as holder:
        _wait_for(lambda: _lock_pid(out) == str(holder.pid), 60, "the first build's lock")
        started = time.monotonic()
        with pytest.raises(build_tfrecords.BuildError,
                           match=rf"being written by another build \(pid {holder.pid}"):
            build_tfrecords.build(build_tfrecords.BuildConfig(
                str(slow_tree), str(out), num_workers=1, train_shards=16, image_size=64),
                log=_quiet())
        assert time.monotonic() - started < 5
        assert holder.poll() is None  # refused while the first build was still running
        assert holder.wait(timeout=120) == 0, holder.stderr.read()
    manifest = json.loads((out / build_tfrecords.MANIFEST_FILENAME).read_text())
    assert manifest["found"] == manifest["written"] == 160
    for shard in manifest["shards"]:
        path = out / shard["name"]
        assert path.stat().st_size == shard["bytes"]
        assert writer.file_sha256(str(path)) == shard["sha256"]


def test_the_command_line_refuses_a_held_folder_in_one_line(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from data_prep.output_dir import OutputLock; "
         "OutputLock(sys.argv[1]).__enter__(); print('locked', flush=True); time.sleep(120)",
         str(out)], cwd=REPO_ROOT, env=ENV, start_new_session=True,
        stdout=subprocess.PIPE, text=True)
    with _session(holder):
        assert holder.stdout.readline().strip() == "locked"
        (tmp_path / "in" / "train" / "a").mkdir(parents=True)
        run = subprocess.run(
            [sys.executable, "-m", "data_prep.build_tfrecords",
             f"--input_dir={tmp_path / 'in'}", f"--output_dir={out}"],
            cwd=REPO_ROOT, env=ENV, capture_output=True, text=True, timeout=300)
    assert run.returncode == 2
    assert _our_lines(run.stderr) == [
        f"error: {out} is being written by another build (pid {holder.pid}, lock "
        f"{output_dir.LOCK_FILENAME}): wait for it to end or stop it"]


def test_killing_the_build_alone_kills_its_workers_and_frees_the_folder(slow_tree, tmp_path):
    """kill -9 of the parent used to leave the fork server and workers
    running (and publishing shards). Now they exit within seconds, nothing is
    published after the kill, and the next build takes the lock over and
    resumes."""
    out = tmp_path / "out"
    with _session(_start_build(slow_tree, out)) as build:
        _wait_for(lambda: len(_published(out)) >= 1, 120, "a first published shard")
        helpers = psutil.Process(build.pid).children(recursive=True)
        assert len(helpers) >= 3  # fork server and two workers (and the resource tracker)
        os.kill(build.pid, signal.SIGKILL)
        build.wait(timeout=10)
        _wait_for(lambda: not any(_alive(p) for p in helpers), 5,
                  f"helpers to exit: {[(p.pid, _status(p)) for p in helpers if _alive(p)]}")
        published = _published(out)
        assert len(published) < 16
        assert not (out / build_tfrecords.MANIFEST_FILENAME).exists()  # an unfinished build
        time.sleep(2)
        assert _published(out) == published  # nothing published after the kill

    resumed = build_tfrecords.build(build_tfrecords.BuildConfig(
        str(slow_tree), str(out), num_workers=1, train_shards=16, image_size=64), log=_quiet())
    assert resumed.found == resumed.written == 160
    assert resumed.shards_kept >= len(published) and resumed.shards_written + \
        resumed.shards_kept == 16
    assert not glob.glob(str(out / "*.tmp"))


def _our_lines(stderr: str) -> list[str]:
    """stderr without TensorFlow's C++ start-up log lines."""
    return [line for line in stderr.strip().splitlines()
            if not line.startswith("WARNING: All log messages before absl")
            and not (line[:1] in "IWE" and line[1:5].isdigit())]


def _alive(process: psutil.Process) -> bool:
    try:
        return process.is_running() and process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _status(process: psutil.Process) -> str:
    try:
        return process.status()
    except psutil.NoSuchProcess:
        return "gone"

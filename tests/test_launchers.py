"""The in-process launcher harness (tests/launchers.py) answers as the
program does in its own process, and leaves the test's process as it was."""

import logging
import os
import signal
import subprocess
import sys

from absl import flags
from absl import logging as absl_logging

from conftest import REPO_ROOT
from launchers import run_launcher
from tree_data import write_two_class_tree
from alexnet_tf.cli import terminal


def _in_own_process(module, *args, cwd):
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    return subprocess.run([sys.executable, "-m", module, *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=120)


def test_a_usage_error_reads_the_same_as_in_its_own_process(tmp_path):
    for args in (["--bogus=1"], ["--untrained", "--model_dir=x"], ["stray"]):
        mine = run_launcher("launch.export", *args, cwd=tmp_path)
        theirs = _in_own_process("launch.export", *args, cwd=tmp_path)
        assert (mine.returncode, mine.stdout, mine.stderr) == \
            (theirs.returncode, theirs.stdout, theirs.stderr), args
        assert mine.returncode == 2 and mine.stderr.startswith("launch.export: error: ")


def test_two_runs_in_a_row_then_the_process_is_as_before(tmp_path):
    """The same launcher twice (its flags defined again, its SIGINT handler
    set again), the second run resuming what the first wrote. A data prep
    build: tiny, and it changes every kind of state the harness puts back."""
    write_two_class_tree(tmp_path / "in", 2)
    before, cwd = set(flags.FLAGS), os.getcwd()
    project = logging.getLogger("data_prep")
    state = (project.handlers[:], project.propagate, project.level)
    sigint, verbosity = signal.getsignal(signal.SIGINT), absl_logging.get_verbosity()
    for shards in ("2 written, 0 kept", "0 written, 2 kept"):
        result = run_launcher("data_prep.build_tfrecords", f"--input_dir={tmp_path / 'in'}",
                              f"--output_dir={tmp_path / 'out'}", "--image_size=32",
                              "--train_shards=2", cwd=tmp_path)
        assert result.returncode == 0, result.stderr
        assert f"shards: {shards} from an earlier run" in result.stderr
    assert set(flags.FLAGS) == before
    assert (project.handlers, project.propagate, project.level) == state
    assert signal.getsignal(signal.SIGINT) is sigint
    assert absl_logging.get_verbosity() == verbosity
    assert terminal.quiet_native_logs.__name__ == "quiet_native_logs"
    assert os.getcwd() == cwd  # each run went to tmp_path and came back

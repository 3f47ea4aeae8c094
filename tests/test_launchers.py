"""The in-process launcher harness (tests/launchers.py) answers as the
program does in its own process, and leaves the test's process as it was."""

import logging
import os
import subprocess
import sys

from absl import flags

from conftest import REPO_ROOT
from launchers import run_launcher
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


def test_two_runs_in_a_row_then_the_process_is_as_before(tiny_model_dir, tmp_path):
    before, cwd = set(flags.FLAGS), os.getcwd()
    project = logging.getLogger("alexnet_tf")
    state = (project.handlers[:], project.propagate, project.level)
    base = tmp_path / "exports"
    for version in (1, 2):
        result = run_launcher("launch.export", f"--model_dir={tiny_model_dir}",
                              f"--export_dir={base}", "--nowarmup", cwd=tmp_path)
        assert result.returncode == 0, result.stderr
        assert f"to {base / str(version)}" in result.stdout
    assert set(flags.FLAGS) == before
    assert (project.handlers, project.propagate, project.level) == state
    assert terminal.quiet_native_logs.__name__ == "quiet_native_logs"
    assert os.getcwd() == cwd  # each run went to tmp_path and came back

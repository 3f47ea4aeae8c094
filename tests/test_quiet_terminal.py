"""The launchers' terminal: the project's own lines, no TensorFlow or absl
INFO chatter (--verbosity=0 bringing it back: test_terminal.py); a user's
mistake is one line, exit 2.

The clean terminal is the native-log filter's doing (a process in front of
fd 2) and absl's and TensorFlow's loggers' levels: an export runs as a real
process, and a fresh process checks that no launcher loads TensorFlow before
its filter starts. A mistake's line and exit status, and what a launcher
prints, are the launcher's own, checked in this process (tests/launchers.py)."""

import os
import re
import subprocess
import sys

import pytest

from conftest import copy_tree
from launchers import run_launcher
from tiny_data import write_tiny_dataset

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CHATTER = re.compile(r"Sharding callback|oneDNN custom operations|cpu_feature_guard|"
                     r"signature_serialization|^[IW]\d{4} \d\d:\d\d:\d+\.\d+ +\d+ ", re.M)


LAUNCHERS = sorted(name[:-3] for name in os.listdir(os.path.join(REPO, "launch"))
                   if name.endswith(".py") and name != "__init__.py"
                   and "define_flags" in open(os.path.join(REPO, "launch", name)).read())
# Each launcher imported and its flags defined (then removed, so the next
# can define its own), as `python -m launch.X` does before terminal.run.
IMPORT_CHECK = f"""
import importlib, sys
from absl import flags
for name in {LAUNCHERS!r}:
    before = set(flags.FLAGS)
    importlib.import_module("launch." + name).define_flags()
    print(name + (":ok" if "tensorflow" not in sys.modules else ":loaded TensorFlow"))
    for flag in set(flags.FLAGS) - before:
        delattr(flags.FLAGS, flag)
"""


def _run(*args, timeout=600):
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    return subprocess.run([sys.executable, "-m", *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=timeout)


def _one_error_line(result, tool) -> str:
    assert result.returncode == 2, (result.stdout, result.stderr)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith(f"{tool}: error: "), result.stderr
    return lines[0]


@pytest.mark.slow  # a launcher process: TensorFlow's start and an export, ~10 CPU-s
def test_a_launcher_process_prints_only_the_projects_lines(tiny_model_dir, tmp_path):
    """An export in its own process: TensorFlow's C++ notices at start (the
    filter's) and the INFO records of its SavedModel code (absl's and the
    tensorflow logger's: signature renames, sharding callbacks, assets,
    fingerprints) stay hidden. In the test's process those records bypass the
    captured stderr, so a real process is the only place to see them. Train
    and evaluate share the mechanism; what differs per launcher, loading
    TensorFlow before the filter starts, is the next test's."""
    export = _run("launch.export", f"--model_dir={tiny_model_dir}",
                  f"--export_dir={tmp_path / 'saved_models' / 'tiny'}")
    assert export.returncode == 0, export.stderr
    output = export.stdout + export.stderr
    assert not CHATTER.findall(output), CHATTER.findall(output)
    assert "exported 3-class model to" in export.stdout


def test_no_launcher_loads_tensorflow_before_its_filter_starts():
    """terminal.run starts the filter first thing; a launcher that loaded
    TensorFlow on import or while defining its flags would print the C++
    notices before it. A fresh process, as `python -m launch.X` is."""
    check = subprocess.run([sys.executable, "-c", IMPORT_CHECK], cwd=REPO,
                           capture_output=True, text=True, timeout=120)
    assert check.returncode == 0, check.stderr
    assert check.stdout.split() == [f"{name}:ok" for name in LAUNCHERS], check.stdout


@pytest.mark.slow  # traces the evaluation: ~2 CPU-s
def test_evaluate_prints_the_table_and_where_it_wrote(tiny_training, tmp_path):
    output = tmp_path / "eval.json"
    result = run_launcher("launch.evaluate", f"--data_dir={tiny_training.data_dir}",
                          f"--model_dir={tiny_training.model_dir}", "--crops=1",
                          f"--output_json={output}", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "Top-1" in result.stdout and f"Wrote {output}" in result.stdout
    assert output.exists()


@pytest.mark.parametrize("flag, message", [
    ("--batch_size=0", "--batch_size=0: must be positive"),
    ("--learning_rate=nan", "--learning_rate=nan: must be a positive finite number"),
    ("--learning_rate=-0.1", "--learning_rate=-0.1: must be a positive finite number"),
    ("--mixed_precision=mixed_float32", "--mixed_precision=mixed_float32: value should be one of"),
    ("--model_dir={data}/labels.txt", "labels.txt is a file, not a folder"),
    ("--data_dir={root}/nowhere", "nowhere not found"),
    ("--data_dir={bad_labels}", r"labels.txt:2: wnid 'n00000000' repeats line 1"),
    ("--init_from={root}/nowhere", "init_from .*nowhere: no checkpoint found there"),
])
def test_a_users_mistake_is_one_line_and_exit_2_and_writes_nothing(tiny_records, tmp_path,
                                                                  flag, message):
    bad_labels = tmp_path / "bad_labels"
    if "bad_labels" in flag:
        copy_tree(tiny_records, bad_labels)
        (bad_labels / "labels.txt").write_text("0\tn00000000\ta\n1\tn00000000\tb\n"
                                               "2\tn00000002\tc\n")
    model_dir = tmp_path / "model"
    args = [f"--data_dir={tiny_records}", f"--model_dir={model_dir}", "--max_steps=1",
            flag.format(data=tiny_records, root=tmp_path, bad_labels=bad_labels)]
    line = _one_error_line(run_launcher("launch.train", *args, cwd=tmp_path), "launch.train")
    assert re.search(message, line), line
    assert not model_dir.exists()


@pytest.fixture(scope="module")
def four_classes(tmp_path_factory):
    return write_tiny_dataset(tmp_path_factory.mktemp("four_classes"), num_classes=4,
                              train_per_class=1, val_per_class=1)


@pytest.mark.parametrize("tool, flags, message", [
    ("launch.evaluate", ["--data_dir={data}", "--model_dir={model_dir}", "--batch_size=0"],
     "flag --batch_size=0: 0 is not a positive integer"),
    ("launch.evaluate", ["--data_dir={other}", "--model_dir={model_dir}"],
     "the model has 3 classes but the data's labels.txt has 4"),
    ("launch.figures", ["--data_dir={other}", "--model_dir={model_dir}",
                        "--out_dir={tmp}/figures"],
     "the model has 3 classes but the data's labels.txt has 4"),
    ("launch.export", ["--model_dir={model_dir}", "--export_dir={data}/labels.txt"],
     "--export_dir=.*labels.txt: export base .*labels.txt is a file .*not a folder"),
])
def test_the_other_launchers_refuse_a_mistake_in_one_line(tiny_training, four_classes,
                                                          tmp_path, tool, flags, message):
    args = [f.format(data=tiny_training.data_dir, model_dir=tiny_training.model_dir,
                     other=four_classes, tmp=tmp_path) for f in flags]
    line = _one_error_line(run_launcher(tool, *args, cwd=tmp_path), tool)
    assert re.search(message, line), line
    assert not (tmp_path / "figures").exists()

"""The launchers' terminal: the project's own lines, no TensorFlow or absl
INFO chatter (--verbosity=0 bringing it back: test_terminal.py); a user's
mistake is one line, exit 2.

The clean terminal is the native-log filter's doing (a process in front of
fd 2), so train, evaluate and export run as real processes; a mistake's
line and exit status are the launcher's own, checked in this process
(tests/launchers.py)."""

import os
import re
import subprocess
import sys

import pytest

from conftest import copy_tree
from launchers import run_launcher
from tiny_data import tiny_flags, write_tiny_dataset

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CHATTER = re.compile(r"Sharding callback|oneDNN custom operations|cpu_feature_guard|"
                     r"signature_serialization|^[IW]\d{4} \d\d:\d\d:\d+\.\d+ +\d+ ", re.M)


def _run(*args, timeout=600):
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    return subprocess.run([sys.executable, "-m", *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=timeout)


def _one_error_line(result, tool) -> str:
    assert result.returncode == 2, (result.stdout, result.stderr)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith(f"{tool}: error: "), result.stderr
    return lines[0]


@pytest.mark.slow  # three launcher processes: the filter is part of each
def test_train_evaluate_and_export_print_only_the_projects_lines(tmp_path):
    data = write_tiny_dataset(tmp_path / "data", num_classes=3, train_per_class=4,
                              val_per_class=2)
    model_dir = str(tmp_path / "run")
    train = _run("launch.train", f"--data_dir={data}", f"--model_dir={model_dir}",
                 "--batch_size=4", "--epochs=1", "--steps_per_epoch=2",
                 "--checkpoint_every_steps=1", *tiny_flags())
    assert train.returncode == 0, train.stderr
    evaluate = _run("launch.evaluate", f"--data_dir={data}", f"--model_dir={model_dir}",
                    "--crops=1")
    export = _run("launch.export", f"--model_dir={model_dir}",
                  f"--export_dir={tmp_path / 'saved_models' / 'tiny'}")
    for result in (evaluate, export):
        assert result.returncode == 0, result.stderr
    output = "\n".join(r.stdout + r.stderr for r in (train, evaluate, export))
    assert not CHATTER.findall(output), CHATTER.findall(output)
    assert "Training finished" in train.stdout and "step 2/2" in train.stdout
    assert "Top-1" in evaluate.stdout
    assert "exported 3-class model to" in export.stdout


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

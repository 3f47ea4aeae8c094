"""An imported model_dir works with every other tool's default flags, run
for real as a user runs them: launch.evaluate (1 and 10 crops),
launch.export (all four signatures), launch.predict, launch.figures.
(launch.train --init_from: tests/test_caffe_full.py, on the full-size net
whose layers the default model shares.)

The narrow synthetic AlexNet of test_caffe_import (99x99 input, 10
classes) over tiny records with the same 10 classes."""

import json
import os
import subprocess
import sys

import pytest
import tensorflow as tf

import caffe_fixtures as fx
import caffe_reference as ref
from conftest import REPO_ROOT
from tiny_data import write_tiny_dataset

pytestmark = pytest.mark.slow  # starts a dozen subprocesses

MINI = ref.NetSpec(width=0.0625, num_classes=10, pool5=2)


def launch(tool: str, *args, cwd, timeout=600) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    result = subprocess.run([sys.executable, "-m", f"launch.{tool}", *args], cwd=cwd, env=env,
                            capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, f"launch.{tool} {args}:\n{result.stdout}\n{result.stderr}"
    return result


@pytest.fixture(scope="module")
def imported(tmp_path_factory):
    """(records dir, model_dir imported by the launcher with the records' labels)."""
    folder = tmp_path_factory.mktemp("tools")
    records = write_tiny_dataset(folder / "records", num_classes=10, train_per_class=2,
                                 val_per_class=1, size=128, train_shards=1)
    weights, biases = fx.alexnet_weights(MINI, seed=7)
    source = fx.write_caffemodel(folder / "mini.caffemodel", MINI, weights, biases, v1=True)
    model_dir = str(folder / "bvlc_mini")
    result = launch("import_caffe", f"--caffemodel={source}", f"--model_dir={model_dir}",
                    f"--labels={records}/labels.txt", cwd=folder)
    assert "21,058,082 parameters, 10 classes, 99x99 input, conv1 padding 0" in result.stdout
    return records, model_dir, folder


@pytest.mark.parametrize("crops", ["1", "10"])
def test_evaluate(imported, crops):
    records, model_dir, folder = imported
    result = launch("evaluate", f"--data_dir={records}", f"--model_dir={model_dir}",
                    f"--crops={crops}", cwd=folder)
    assert "1 CNN  bvlc_mini (ckpt-0)" in result.stdout
    with open(os.path.join(model_dir, f"eval_validation_{crops}crop.json")) as f:
        figures = json.load(f)
    assert figures["images"] == 10 and figures["crops"] == int(crops)
    assert figures["models"][0]["checkpoint"].endswith(os.path.join("best", "ckpt-0"))


def test_export_then_predict(imported):
    records, model_dir, folder = imported
    export_dir = folder / "export"
    launch("export", f"--model_dir={model_dir}", f"--export_dir={export_dir}", cwd=folder)
    loaded = tf.saved_model.load(str(export_dir / "1"))
    assert set(loaded.signatures) == {"serving_default", "predict_images", "classify",
                                      "features"}
    photo = folder / "photo.jpg"
    photo.write_bytes(tf.io.encode_jpeg(tf.cast(fx.generated_crops(300, 1)[0], tf.uint8))
                      .numpy())
    result = launch("predict", f"--saved_model={export_dir / '1'}", str(photo), cwd=folder)
    wnids = [line.split()[1] for line in result.stdout.splitlines()
             if line.strip()[:2] in ("1.", "2.", "3.", "4.", "5.")]
    assert len(wnids) == 5 and all(w.startswith("n000000") for w in wnids)  # the records' wnids


def test_figures(imported):
    records, model_dir, folder = imported
    result = launch("figures", f"--model_dir={model_dir}", f"--data_dir={records}", cwd=folder)
    for name in ("figure3_kernels", "figure4_top5", "figure4_neighbours"):
        assert os.path.getsize(os.path.join(model_dir, "figures", f"{name}.png")) > 1000
        assert name in result.stdout


def test_training_in_the_imported_model_dir(imported):
    """Default flags: refused in one line (the settings differ from the
    import's). The import's own settings: it resumes from step 0."""
    import shutil
    records, model_dir, folder = imported
    copy = str(folder / "resumed")
    shutil.copytree(model_dir, copy)
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    run = ["--data_dir=" + records, "--model_dir=" + copy, "--epochs=1", "--max_steps=1",
           "--batch_size=4", "--validation_steps=1"]
    refused = subprocess.run([sys.executable, "-m", "launch.train", *run], cwd=folder, env=env,
                             capture_output=True, text=True, timeout=600)
    assert refused.returncode == 2
    assert "model_config.json differs from this run's model settings" in refused.stderr
    same = ["--init_from=" + model_dir, "--width=0.0625", "--towers=2", "--init=caffe"]
    result = launch("train", *run, *same, cwd=folder)
    assert "resuming at step 0" in result.stdout
    with open(os.path.join(copy, "train_summary.json")) as f:
        assert json.load(f)["step"] == 1

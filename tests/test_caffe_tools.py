"""An imported model_dir works with every other tool's default flags, run
as a user runs them (in this process, tests/launchers.py: the same flags,
printed lines and exit status): launch.evaluate (1 and 10 crops),
launch.export (all four signatures; its predict_images computes Caffe's
forward pass), launch.predict, launch.figures, and launch.train: resumed in
the imported model_dir, and fine-tuning from it (--init_from) with default
model flags.

The narrow synthetic AlexNet (caffe_fixtures.MINI: Caffe's geometry, 99x99
input, 10 classes), imported by the launcher from the old V1 format with the
labels of tiny records of the same 10 classes."""

import json
import os
import shutil

import numpy as np
import pytest
import tensorflow as tf

import caffe_fixtures as fx
import caffe_reference as ref
from launchers import run_launcher
from tiny_data import write_tiny_dataset
from alexnet_tf.training import checkpoints, model_dir as model_dir_files

pytestmark = pytest.mark.slow  # runs every launcher

MINI = fx.MINI
PROB_ATOL = 1e-5


def launch(tool: str, *args, cwd):
    """`python -m launch.<tool> <args>` in this process; it must succeed."""
    result = run_launcher(f"launch.{tool}", *args, cwd=cwd)
    assert result.returncode == 0, f"launch.{tool} {args}:\n{result.stdout}\n{result.stderr}"
    return result


@pytest.fixture(scope="module")
def imported(tmp_path_factory):
    """(records dir, model_dir imported by the launcher with the records'
    labels, the module's folder, Caffe's weights and biases)."""
    with fx.module_folder(tmp_path_factory, "tools") as folder:
        records = write_tiny_dataset(folder / "records", num_classes=10, train_per_class=1,
                                     val_per_class=1, size=128, train_shards=1)
        weights, biases = fx.alexnet_weights(MINI, seed=7)
        source = fx.write_caffemodel(folder / "mini.caffemodel", MINI, weights, biases, v1=True)
        model_dir = str(folder / "bvlc_mini")
        result = launch("import_caffe", f"--caffemodel={source}", f"--model_dir={model_dir}",
                        f"--labels={records}/labels.txt", cwd=folder)
        assert "1,422,882 parameters, 10 classes, 99x99 input, conv1 padding 0" \
            in result.stdout, result.stdout
        yield records, model_dir, folder, weights, biases


@pytest.fixture(scope="module")
def exported(imported):
    """(the version folder `launch.export` wrote with its default flags, it loaded)."""
    _, model_dir, folder, _, _ = imported
    export_dir = folder / "export"
    launch("export", f"--model_dir={model_dir}", f"--export_dir={export_dir}", cwd=folder)
    return str(export_dir / "1"), tf.saved_model.load(str(export_dir / "1"))


@pytest.mark.parametrize("crops", ["1", "10"])
def test_evaluate(imported, crops):
    records, model_dir, folder, _, _ = imported
    result = launch("evaluate", f"--data_dir={records}", f"--model_dir={model_dir}",
                    f"--crops={crops}", cwd=folder)
    assert "1 CNN  bvlc_mini (ckpt-0)" in result.stdout
    with open(os.path.join(model_dir, f"eval_validation_{crops}crop.json")) as f:
        figures = json.load(f)
    assert figures["images"] == 10 and figures["crops"] == int(crops)
    assert figures["models"][0]["checkpoint"].endswith(os.path.join("best", "ckpt-0"))


def test_export_then_predict(imported, exported):
    _, _, folder, _, _ = imported
    path, loaded = exported
    assert set(loaded.signatures) == {"serving_default", "predict_images", "classify",
                                      "features"}
    photo = folder / "photo.jpg"
    photo.write_bytes(tf.io.encode_jpeg(tf.cast(fx.generated_crops(300, 1)[0], tf.uint8))
                      .numpy())
    result = launch("predict", f"--saved_model={path}", str(photo), cwd=folder)
    wnids = [line.split()[1] for line in result.stdout.splitlines()
             if line.strip()[:2] in ("1.", "2.", "3.", "4.", "5.")]
    assert len(wnids) == 5 and all(w.startswith("n000000") for w in wnids)  # the records' wnids


def test_predict_images_of_the_export_computes_caffes_forward_pass(imported, exported):
    _, model_dir, _, weights, biases = imported
    signature = exported[1].signatures["predict_images"]
    crops = fx.generated_crops(MINI.input_size)
    probabilities = signature(images=tf.constant(crops))["probabilities"].numpy()
    # No --mean: the import took Caffe's published channel means.
    mean_bgr = np.array(model_dir_files.read_model_config(model_dir)["mean_rgb"][::-1])
    want = np.stack([ref.softmax(ref.forward(MINI, weights, biases, ref.caffe_input(c, mean_bgr)))
                     for c in crops])
    assert want.max() > 0.5  # a peaked softmax: a near-uniform one would pass 1e-5 regardless
    assert np.abs(probabilities - want).max() <= PROB_ATOL
    # It takes the imported model's size (99 here, 227 for bvlc_alexnet), not 224.
    with pytest.raises(tf.errors.InvalidArgumentError, match="99"):
        signature(images=tf.zeros([1, 224, 224, 3]))


def test_figures(imported):
    records, model_dir, folder, _, _ = imported
    result = launch("figures", f"--model_dir={model_dir}", f"--data_dir={records}", cwd=folder)
    for name in ("figure3_kernels", "figure4_top5", "figure4_neighbours"):
        assert os.path.getsize(os.path.join(model_dir, "figures", f"{name}.png")) > 1000
        assert name in result.stdout


def test_training_in_the_imported_model_dir(imported, tmp_path):
    """Default flags: refused in one line (the settings differ from the
    import's). The import's own settings: it resumes from step 0."""
    records, model_dir, _, _, _ = imported
    copy = str(tmp_path / "resumed")
    shutil.copytree(model_dir, copy)
    run = ["--data_dir=" + records, "--model_dir=" + copy, "--epochs=1", "--max_steps=1",
           "--batch_size=4", "--validation_steps=1"]
    refused = run_launcher("launch.train", *run, cwd=tmp_path)
    assert refused.returncode == 2
    assert "model_config.json differs from this run's model settings" in refused.stderr
    same = ["--init_from=" + model_dir, "--width=0.0625", "--towers=2", "--init=caffe"]
    result = launch("train", *run, *same, cwd=tmp_path)
    assert "resuming at step 0" in result.stdout
    with open(os.path.join(copy, "train_summary.json")) as f:
        assert json.load(f)["step"] == 1


def test_fine_tuning_from_the_import_with_default_model_flags(imported, tmp_path):
    """`launch.train --init_from=<imported>` on 3-class records: every layer
    but the classifier is copied, and the model keeps Caffe's LRN constants,
    geometry, mean and init (the source's), and its width and fc sizes."""
    _, model_dir, _, _, _ = imported
    records = write_tiny_dataset(tmp_path / "records", num_classes=3, train_per_class=4,
                                 val_per_class=2, size=128, train_shards=1)
    tuned = tmp_path / "tuned"
    result = launch("train", f"--data_dir={records}", f"--model_dir={tuned}",
                    f"--init_from={model_dir}", "--epochs=1", "--max_steps=1", "--batch_size=4",
                    "--validation_steps=1", "--strategy=towers", cwd=tmp_path)
    assert "re-initialized ['fc8_a', 'fc8_b']" in result.stdout, result.stdout
    source = model_dir_files.read_model_config(model_dir)
    mine = checkpoints.build_model_from_config(
        model_dir_files.read_model_config(str(tuned))).get_config()
    for key in ("image_size", "conv1_padding", "lrn_size", "lrn_k", "lrn_alpha", "lrn_beta",
                "lrn_across_towers", "mean_rgb", "std_rgb", "init", "width", "fc_units",
                "towers"):
        assert mine[key] == source[key], key
    # The import's init (caffe, for the mean-only input) is fc8's: no mismatch warning.
    assert model_dir_files.read_model_config(str(tuned))["init"] == "caffe"
    assert "std_rgb" not in result.stderr, result.stderr
    assert mine["num_classes"] == 3
    with open(tuned / "train_summary.json") as f:
        assert json.load(f)["step"] == 1

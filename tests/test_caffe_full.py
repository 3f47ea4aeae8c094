"""The full-size synthetic bvlc_alexnet (61M parameters, a 244 MB
caffemodel, written once per session): imported by the launcher in a child
process with its peak memory measured, then held to Caffe's forward pass
(NumPy reference) as a Keras model and through the exported
`predict_images`; the old format and caffe-tensorflow's .npy give the same
weights; the two towers keep their placement; `launch.train --init_from`
fine-tunes from it with default model flags."""

import json
import os
import shutil
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

import caffe_fixtures as fx
import caffe_reference as ref
from conftest import REPO_ROOT, SHARED_DATA
from tiny_data import write_tiny_dataset
from alexnet_tf.training import checkpoints, model_dir as model_dir_files

pytestmark = pytest.mark.slow

BVLC = ref.NetSpec()  # 96..256 kernels, 6x6 pool5, 227x227, 1000 classes
# Peak RSS of one import in a child process: 1.6 GB measured here (TensorFlow,
# the Caffe blobs and the model's weights, briefly together).
IMPORT_PEAK_BOUND = 2.2e9
PROB_ATOL = 1e-5

# Runs the launcher, then writes the process's peak RSS (bytes) to argv[1].
# VmHWM, not getrusage's ru_maxrss: that one carries over, through exec, the
# peak of the (large) test process the child was forked from. alter_sys: the
# launcher's config dataclass resolves its type hints through sys.modules["__main__"].
_MEASURED = """
import runpy, sys
out = sys.argv.pop(1)
try:
    runpy.run_module("launch.import_caffe", run_name="__main__", alter_sys=True)
finally:
    with open("/proc/self/status") as status:
        kib = next(int(l.split()[1]) for l in status if l.startswith("VmHWM:"))
    with open(out, "w") as f:
        f.write(str(kib * 1024))
"""


@pytest.fixture(scope="session")
def full_net(tmp_path_factory):
    folder = tmp_path_factory.mktemp("bvlc_full")
    weights, biases = fx.alexnet_weights(BVLC, seed=11)
    files = {"layer": fx.write_caffemodel(folder / "bvlc.caffemodel", BVLC, weights, biases),
             "layers_v1": fx.write_caffemodel(folder / "bvlc_v1.caffemodel", BVLC, weights,
                                              biases, v1=True),
             "npy": fx.write_caffe_tensorflow_npy(folder / "bvlc.npy", BVLC, weights, biases)}
    return weights, biases, files, folder


def import_in_child(source_flag: str, model_dir, *extra, cwd) -> tuple[str, float]:
    """(stdout, peak RSS in bytes) of `launch.import_caffe` in its own process."""
    peak_file = os.path.join(cwd, "peak_rss")
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    result = subprocess.run(
        [sys.executable, "-c", _MEASURED, peak_file, source_flag, f"--model_dir={model_dir}",
         *extra], cwd=cwd, env=env, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr
    with open(peak_file) as f:
        return result.stdout, float(f.read())


@pytest.fixture(scope="session")
def imported(full_net):
    _, _, files, folder = full_net
    model_dir = folder / "bvlc_alexnet"
    mean = SHARED_DATA / "caffe" / "ilsvrc_2012_mean.npy"
    extra = [f"--mean={mean}"] if mean.exists() else []
    stdout, peak = import_in_child(f"--caffemodel={files['layer']}", model_dir, *extra,
                                   cwd=folder)
    print(f"import peak RSS {peak / 1e9:.2f} GB")
    return str(model_dir), stdout, peak


def photo_crops():
    folder = SHARED_DATA / "imagenet-sample"
    if folder.is_dir():
        return fx.centre_crops([folder / "n01440764_tench.JPEG",
                                folder / "n04285008_sports_car.JPEG"], 227)
    return fx.generated_crops(227, 2)  # no shared photos: stand-ins


def reference(full_net, crops, model_dir):
    weights, biases, _, _ = full_net
    mean_bgr = np.array(model_dir_files.read_model_config(model_dir)["mean_rgb"][::-1])
    logits = np.stack([ref.forward(BVLC, weights, biases, ref.caffe_input(c, mean_bgr))
                       for c in crops])
    return logits, np.stack([ref.softmax(l) for l in logits])


def test_the_launcher_imports_the_full_net_in_bounded_memory(imported):
    model_dir, stdout, peak = imported
    assert "60,965,224 parameters, 1000 classes, 227x227 input, conv1 padding 0" in stdout
    assert "LRN k=1 alpha=2e-05 (Caffe's alpha / 5) beta=0.75" in stdout
    assert peak < IMPORT_PEAK_BOUND, f"peak RSS {peak / 1e9:.2f} GB"
    config = model_dir_files.read_model_config(model_dir)
    assert (config["image_size"], config["towers"], config["width"]) == (227, 2, 1.0)


def test_full_model_computes_caffes_forward_pass(full_net, imported):
    model_dir = imported[0]
    model = checkpoints.restore_model(model_dir, "best")
    assert model.count_params() == 60_965_224
    crops = photo_crops()
    both = keras.Model(model.input, [model.get_layer("fc8").output, model.output])
    logits, probabilities = (t.numpy() for t in both(crops, training=False))
    want_logits, want = reference(full_net, crops, model_dir)
    assert np.abs(probabilities - want).max() <= PROB_ATOL
    assert np.abs(logits - want_logits).max() <= 1e-4 * np.abs(want_logits).max()
    assert want.max() > 0.5 and want_logits.std(axis=1).min() > 1.0  # a peaked softmax


def test_exported_predict_images_computes_caffes_forward_pass(full_net, imported, tmp_path):
    from alexnet_tf.data.labels import LabelMap
    from alexnet_tf.serving import export
    model_dir = imported[0]
    model = checkpoints.restore_model(model_dir, "best")
    path = export.export_saved_model(model, LabelMap.read(model_dir), str(tmp_path),
                                     warmup=False)
    del model
    loaded = tf.saved_model.load(path)
    signature = loaded.signatures["predict_images"]
    crops = photo_crops()
    probabilities = signature(images=tf.constant(crops))["probabilities"].numpy()
    _, want = reference(full_net, crops, model_dir)
    assert np.abs(probabilities - want).max() <= PROB_ATOL
    # serving_default crops what the model reads: the centre 227 of a 256x256 image.
    stored = fx.generated_crops(256, 1, seed=3)[0].round().astype(np.uint8)
    png = tf.io.encode_png(stored).numpy()
    served = loaded.signatures["serving_default"](image_bytes=tf.constant([png]))
    centre = stored[14:241, 14:241].astype(np.float32)[None]
    np.testing.assert_allclose(served["probabilities"].numpy(),
                               signature(images=tf.constant(centre))["probabilities"].numpy(),
                               atol=1e-6)


def test_old_format_and_npy_give_the_same_weights(full_net, imported):
    _, _, files, folder = full_net
    model = checkpoints.restore_model(imported[0], "best")
    for source, flag in (("layers_v1", "caffemodel"), ("npy", "npy")):
        other_dir = folder / f"from_{source}"
        _, peak = import_in_child(f"--{flag}={files[source]}", other_dir, cwd=folder)
        assert peak < IMPORT_PEAK_BOUND, (source, peak)
        other = checkpoints.restore_model(str(other_dir), "best")
        assert other.get_config() == {**model.get_config(),
                                      "mean_rgb": other.get_config()["mean_rgb"]}
        for mine, theirs in zip(model.weights, other.weights):
            np.testing.assert_array_equal(mine.numpy(), theirs.numpy(), err_msg=mine.path)
        shutil.rmtree(other_dir)  # 0.5 GB of checkpoints


def test_towers_keep_their_placement(imported):
    if len(tf.config.list_logical_devices("CPU")) < 2:
        pytest.skip("needs the two logical CPUs conftest makes before TF starts")
    model_dir = imported[0]
    config = model_dir_files.read_model_config(model_dir)
    placed = checkpoints.build_model_from_config(config, tower_devices=("/CPU:0", "/CPU:1"))
    assert placed.count_params() == 60_965_224
    checkpoints.restore_weights(placed, checkpoints.checkpoint_path(model_dir, "best"))
    for layer in ("conv1", "conv2", "conv5", "fc6", "fc8"):
        for tower, device in (("a", "CPU:0"), ("b", "CPU:1")):
            weights = placed.get_layer(f"{layer}_{tower}").weights
            assert all(w.value.device.endswith(device) for w in weights), (layer, tower)
    crop = photo_crops()[:1]
    unplaced = checkpoints.restore_model(model_dir, "best")
    np.testing.assert_allclose(placed(crop).numpy(), unplaced(crop).numpy(), atol=1e-6)


def test_fine_tuning_from_the_import_with_default_model_flags(imported, tmp_path):
    """`launch.train --init_from=<imported>` on 3-class records: every layer
    but the classifier is copied, and the model keeps Caffe's LRN constants,
    geometry, mean and init (the source's)."""
    model_dir = imported[0]
    records = write_tiny_dataset(tmp_path / "records", num_classes=3, train_per_class=4,
                                 val_per_class=2, size=256, train_shards=1)
    tuned = tmp_path / "tuned"
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    result = subprocess.run(
        [sys.executable, "-m", "launch.train", f"--data_dir={records}", f"--model_dir={tuned}",
         f"--init_from={model_dir}", "--epochs=1", "--max_steps=1", "--batch_size=4",
         "--validation_steps=1", "--strategy=towers"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "re-initialized ['fc8_a', 'fc8_b']" in result.stdout, result.stdout
    source = model_dir_files.read_model_config(model_dir)
    mine = checkpoints.build_model_from_config(
        model_dir_files.read_model_config(str(tuned))).get_config()
    for key in ("image_size", "conv1_padding", "lrn_size", "lrn_k", "lrn_alpha", "lrn_beta",
                "lrn_across_towers", "mean_rgb", "std_rgb", "init"):
        assert mine[key] == source[key], key
    # The import's init (caffe, for the mean-only input) is fc8's: no mismatch warning.
    assert model_dir_files.read_model_config(str(tuned))["init"] == "caffe"
    assert "std_rgb" not in result.stderr, result.stderr
    assert mine["num_classes"] == 3
    with open(tuned / "train_summary.json") as f:
        assert json.load(f)["step"] == 1

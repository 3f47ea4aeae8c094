"""alexnet_tf.caffe: a synthetic Caffe AlexNet (old and new formats, and
caffe-tensorflow's .npy), imported, computes what Caffe computes: held to
the NumPy reference (tests/caffe_reference.py) on real photos, as a Keras
model (its exported `predict_images`: tests/test_caffe_tools.py, through
launch.export); the four sources give the same weights, bit for bit.

These use the narrow AlexNet of caffe_fixtures.MINI (a sixteenth of
conv1-conv4's kernels, 768-unit fc6/fc7, a 2x2 pool5, 99x99 input, 10
classes) that exercises every mapping rule; tests/test_caffe_full.py does
the full-size net (slow)."""

import dataclasses
import json
import os

import keras
import numpy as np
import pytest

import caffe_fixtures as fx
import caffe_reference as ref
from conftest import SHARED_DATA
from launchers import run_launcher
from alexnet_tf.caffe import convert, importer
from alexnet_tf.caffe.mean import CAFFE_ILSVRC_MEAN_BGR
from alexnet_tf.data.labels import LabelMap
from alexnet_tf.training import checkpoints, model_dir as model_dir_files

MINI = fx.MINI
MEAN_BGR = np.array([104.0, 117.0, 123.0])
PHOTOS = ("n01440764_tench.JPEG", "n02123045_tabby.JPEG", "n03417042_garbage_truck.JPEG")
PROB_ATOL = 1e-5
LOGIT_RTOL = 1e-4  # of the largest |logit|


@pytest.fixture(scope="module")
def mini_net(tmp_path_factory):
    """Weights, and the same net written in each format the importer reads."""
    with fx.module_folder(tmp_path_factory, "mini") as folder:
        weights, biases = fx.alexnet_weights(MINI, seed=0)
        files = {
            "layer": fx.write_caffemodel(folder / "new.caffemodel", MINI, weights, biases),
            "layers_v1": fx.write_caffemodel(folder / "v1.caffemodel", MINI, weights, biases,
                                             v1=True),
            "npy": fx.write_caffe_tensorflow_npy(folder / "tf.npy", MINI, weights, biases),
            "npy_dicts": fx.write_caffe_tensorflow_npy(folder / "tf_dicts.npy", MINI, weights,
                                                       biases, as_dicts=True),
        }
        yield weights, biases, files


def import_kwargs(files, source):
    return {"npy" if source.startswith("npy") else "caffemodel": files[source]}


@pytest.fixture(scope="module")
def imported(mini_net, tmp_path_factory):
    """model_dir per source format (imported once per module); the .npy
    through the launcher (`--npy`, `--mean`), in this process."""
    _, _, files = mini_net
    with fx.module_folder(tmp_path_factory, "imported") as folder:
        mean = folder / "mean.npy"
        np.save(mean, np.broadcast_to(MEAN_BGR[:, None, None], (3, 256, 256)))
        dirs = {source: str(folder / source) for source in files}
        for source in ("layer", "layers_v1", "npy_dicts"):
            importer.import_alexnet(dirs[source], mean=str(mean), **import_kwargs(files, source))
        result = run_launcher("launch.import_caffe", f"--npy={files['npy']}", f"--mean={mean}",
                              f"--model_dir={dirs['npy']}", cwd=folder)
        assert result.returncode == 0, result.stderr
        assert "(caffe-tensorflow .npy (BVLC's LRN constants and geometry assumed))" \
            in result.stdout, result.stdout
        yield dirs


@pytest.fixture(scope="module")
def models(imported):
    """Each source's imported model, restored once (its best/ checkpoint);
    the tests only read them."""
    return {source: checkpoints.restore_model(model_dir, "best")
            for source, model_dir in imported.items()}


@pytest.fixture(params=["photos", "generated"])
def crops(request):
    if request.param == "photos":
        folder = SHARED_DATA / "imagenet-sample"
        if not folder.is_dir():
            pytest.skip(f"{folder} not found (the shared photos are beside the checkout in CI)")
        return fx.centre_crops([folder / name for name in PHOTOS], MINI.input_size)
    return fx.generated_crops(MINI.input_size)


def reference(weights, biases, crops, spec=MINI, mean=MEAN_BGR):
    logits = np.stack([ref.forward(spec, weights, biases, ref.caffe_input(c, mean))
                       for c in crops])
    return logits, np.stack([ref.softmax(l) for l in logits])


def keras_outputs(model, crops):
    both = keras.Model(model.input, [model.get_layer("fc8").output, model.output])
    logits, probabilities = both(crops, training=False)
    return logits.numpy(), probabilities.numpy()


def assert_matches_caffe(logits, probabilities, want_logits, want_probabilities):
    assert np.abs(probabilities - want_probabilities).max() <= PROB_ATOL
    scale = np.abs(want_logits).max()
    assert np.abs(logits - want_logits).max() <= LOGIT_RTOL * scale
    # A strong check: the softmax is peaked (a near-uniform one would pass 1e-5
    # almost regardless) and the images get different answers.
    assert want_logits.std(axis=1).min() > 1.0 and want_probabilities.max() > 0.5
    assert np.abs(want_probabilities[0] - want_probabilities[1]).max() > 0.05


@pytest.mark.parametrize("source", ["layer", "layers_v1", "npy", "npy_dicts"])
def test_imported_model_computes_caffes_forward_pass(mini_net, models, crops, source):
    weights, biases, _ = mini_net
    assert_matches_caffe(*keras_outputs(models[source], crops),
                         *reference(weights, biases, crops))


def test_every_source_gives_the_same_model_and_weights(models):
    """The old V1 `layers`, caffe-tensorflow's .npy (lists or dicts) and the
    new `layer` format: one model config and the same float32 weights."""
    want = models["layer"]
    for source in ("layers_v1", "npy", "npy_dicts"):
        model = models[source]
        assert model.get_config() == want.get_config(), source
        assert len(model.weights) == len(want.weights) == 32  # 8 layers x 2 towers x 2
        for mine, theirs in zip(want.weights, model.weights):
            assert mine.path == theirs.path
            np.testing.assert_array_equal(theirs.numpy(), mine.numpy(),
                                          err_msg=f"{source} {mine.path}")


def test_each_mapping_rule_is_needed(mini_net, models):
    """The comparison above fails when any one rule is left out: each
    mistake moves the probabilities by far more than its 1e-5."""
    weights, biases, _ = mini_net
    good = models["layer"]
    crops = fx.generated_crops(MINI.input_size)
    _, want = reference(weights, biases, crops)
    config = {k: v for k, v in good.get_config().items() if k not in ("name", "trainable")}

    def wrong(**changes):
        model = checkpoints.build_model_from_config({**config, **changes})
        model.set_weights(good.get_weights())
        return model

    def swapped(layer, edit):
        model = wrong()
        for tower in convert.tower_layers(model, layer):
            kernel, bias = tower.get_weights()
            tower.set_weights([edit(kernel), bias])
        return model

    mistakes = {
        "LRN within each tower": wrong(lrn_across_towers=False),
        "Caffe's alpha not divided by n": wrong(lrn_alpha=1e-4),
        "the paper's k=2": wrong(lrn_k=2.0),
        "conv1 left in BGR": swapped("conv1", lambda k: k[:, :, ::-1, :]),
        "fc6 rows in Caffe's (C, H, W) order": swapped(
            "fc6", lambda k: k.reshape(2, 2, 256, -1).transpose(2, 0, 1, 3).reshape(k.shape)),
        "std division": wrong(std_rgb=[58.0, 57.0, 57.5]),
    }
    np.testing.assert_allclose(good(crops).numpy(), want, atol=PROB_ATOL)
    for mistake, model in mistakes.items():
        assert np.abs(model(crops).numpy() - want).max() > 100 * PROB_ATOL, mistake


def test_one_group_net_imports_as_one_column(tmp_path):
    spec = dataclasses.replace(MINI, num_classes=6, groups=1)
    weights, biases = fx.alexnet_weights(spec, seed=6)
    path = fx.write_caffemodel(tmp_path / "one.caffemodel", spec, weights, biases)
    importer.import_alexnet(str(tmp_path / "run"), caffemodel=path)
    model = checkpoints.restore_model(str(tmp_path / "run"), "best")
    assert model.get_config()["towers"] == 1
    crops = fx.generated_crops(spec.input_size)
    mean = np.array(CAFFE_ILSVRC_MEAN_BGR)  # no --mean: Caffe's published values
    assert_matches_caffe(*keras_outputs(model, crops),
                         *reference(weights, biases, crops, spec, mean))


def test_model_dir_is_what_the_other_tools_read(imported, mini_net):
    model_dir = imported["layer"]
    config = model_dir_files.read_model_config(model_dir)
    assert config["image_size"] == 99 and config["conv1_padding"] == 0
    assert config["lrn_alpha"] == pytest.approx(2e-5) and config["lrn_k"] == 1.0
    assert config["std_rgb"] is None and config["init"] == "caffe"
    assert config["mean_rgb"] == pytest.approx(list(MEAN_BGR[::-1]))
    latest = checkpoints.restore_model(model_dir, "latest")
    best = checkpoints.restore_model(model_dir, "best")
    assert latest.checkpoint_path.endswith("ckpt-0")
    assert os.path.dirname(best.checkpoint_path) == os.path.join(model_dir, "best")
    for a, b in zip(latest.get_weights(), best.get_weights()):
        np.testing.assert_array_equal(a, b)
    labels = LabelMap.read(model_dir)
    assert labels.wnids[0] == "caffe_class_0000" and len(labels) == 10
    with open(os.path.join(model_dir, "best", "best.json")) as f:
        assert "val_top1_error" not in json.load(f)  # none was measured
    with open(os.path.join(model_dir, importer.IMPORT_INFO_FILENAME)) as f:
        info = json.load(f)
    assert info["caffe_layers"]["fc8"] == "fc8" and not info["is_bvlc_alexnet_caffemodel"]
    assert [n for n in os.listdir(os.path.dirname(model_dir)) if n.startswith(".")] == []


def test_labels_out_of_sorted_order_are_flagged(mini_net, tmp_path):
    _, _, files = mini_net
    labels = tmp_path / "synset_words.txt"
    labels.write_text("".join(f"n{i:08d} class {i}\n" for i in reversed(range(10))))
    result = importer.import_alexnet(str(tmp_path / "run"), caffemodel=files["layer"],
                                     labels=str(labels))
    assert result["labels_sorted"] is False  # the launcher prints a warning
    assert LabelMap.read(str(tmp_path / "run")).wnids[0] == "n00000009"  # file order kept

"""The SavedModel export, loaded the way TF Serving loads it.

Three module-scoped exports keep this fast:
- `probe_export`: `export_probe`'s stand-in whose `features` output is the
  serving graph's own input pixels (parity, signatures, classify). Bad
  requests: test_serving_requests.py; memory per request: test_serving_limits.py.
- `versioned`: one export base holding a 227x227 probe (the next free
  version) and, as a chosen version, `alexnet_and_export`: the real
  `build_alexnet` in the suite's tiny configuration (10 classes) placed on
  two towers: exported unplaced, weights stored once, no device pins, no
  XLA, shapes of all four signatures, parity with Keras.
launch.export runs in this process (tests/launchers.py).
"""

import glob
import os
import sys
import types

import numpy as np
import pytest
import tensorflow as tf

from alexnet_tf.errors import InputError
from alexnet_tf.serving import export
import export_probe
from serving_session import ServingSession
from alexnet_tf.data import preprocessing, records
from alexnet_tf.figures.features import feature_model
from alexnet_tf.data.input_pipeline import make_eval_dataset
from alexnet_tf.data.labels import LabelMap
from alexnet_tf.model.alexnet import build_alexnet
from data_prep import convert
from launchers import run_launcher
from tiny_data import TINY_MODEL

SIZE = preprocessing.CROP_SIZE
LABELS = LabelMap(
    ("n01440764", "n02102040", "n02979186", "n03000684", "n03028079",
     "n03394916", "n03417042", "n03425413", "n03445777", "n03888257"),
    ("tench", "English springer", "cassette player", "chain saw", "church",
     "French horn", "garbage truck", "gas pump", "golf ball", "parachute"))
try:
    import tensorflow_serving.apis  # noqa: F401  the optional 'serving' extra
    SERVING_API = True
except ImportError:
    SERVING_API = False


def sample_jpegs(directory, count, start=0):
    files = sorted(glob.glob(os.path.join(directory, "*.JPEG")))[start:start + count]
    contents = []
    for name in files:
        with open(name, "rb") as f:
            contents.append(f.read())
    return contents


@pytest.fixture(scope="module")
def probe_export(tmp_path_factory):
    base = tmp_path_factory.mktemp("probe_export")
    return export.export_saved_model(export_probe.build_probe_model(len(LABELS)), LABELS,
                                     str(base))


@pytest.fixture(scope="module")
def probe(probe_export):
    session = ServingSession(probe_export)
    yield session
    session.close()


@pytest.fixture(scope="module")
def versioned(tmp_path_factory):
    """One export base beside a version "7" and a folder that is not a
    version, exported into twice (each export traces four signatures, so
    the tests below share them): a 3-class probe reading 227x227 as the
    next free version, then the real `build_alexnet` in the suite's tiny
    configuration, placed on two towers, as version 3: 10 classes, with
    distinct random weights per tower (seeded, He-scaled), so every unit
    matters in the comparisons with Keras."""
    base = tmp_path_factory.mktemp("versioned")
    (base / "7").mkdir()
    (base / "notes").mkdir()  # not a version: ignored
    labels = LabelMap(("n1", "n2", "n3"), ("a", "b", "c"))
    next_free = export.next_version(str(base))
    probe_227 = export_probe.build_probe_model(3, image_size=227)
    newest = export.export_saved_model(probe_227, labels, str(base), warmup=False)
    placed = build_alexnet(len(LABELS), init="he", tower_devices=["/CPU:0", "/CPU:1"],
                           **TINY_MODEL)
    rng = np.random.default_rng(0)
    placed.set_weights([rng.normal(0, np.sqrt(2.0 / max(1, np.prod(w.shape[:-1]))),
                                   w.shape).astype(np.float32) if w.ndim > 1 else w
                        for w in placed.get_weights()])
    chosen = export.export_saved_model(placed, LABELS, str(base), version=3, warmup=False)
    return types.SimpleNamespace(base=base, labels=labels, next_free=next_free,
                                 probe_227=probe_227, newest=newest, placed=placed,
                                 chosen=chosen)


@pytest.fixture(scope="module")
def alexnet_and_export(versioned):
    """The tiny AlexNet (placed on two towers) and its export."""
    return versioned.placed, versioned.chosen


@pytest.fixture(scope="module")
def alexnet_session(alexnet_and_export):
    session = ServingSession(alexnet_and_export[1])
    yield session
    session.close()


@pytest.fixture(scope="module")
def probe_227_session(versioned):
    session = ServingSession(versioned.newest)
    yield session
    session.close()


# -- layout, versions, atomic write -------------------------------------------

def test_layout_and_label_asset(probe_export):
    assert os.path.basename(probe_export) == "1"
    assert sorted(os.listdir(os.path.dirname(probe_export))) == ["1"]  # no temp left
    for name in ("saved_model.pb", "fingerprint.pb", "variables/variables.index",
                 "assets/labels.txt"):
        assert os.path.exists(os.path.join(probe_export, name)), name
    warmup = os.path.join(probe_export, "assets.extra", "tf_serving_warmup_requests")
    assert os.path.exists(warmup) == SERVING_API, "warm-up file iff tensorflow-serving-api"
    assert LabelMap.read(os.path.join(probe_export, "assets")) == LABELS


def test_versions_are_next_free_integer_and_never_overwritten(versioned):
    base = versioned.base
    assert versioned.next_free == 8
    assert versioned.newest == str(base / "8")
    with pytest.raises(FileExistsError, match="8"):
        export.export_saved_model(versioned.probe_227, versioned.labels, str(base), version=8,
                                  warmup=False)
    assert versioned.chosen == str(base / "3")
    assert export.existing_versions(str(base)) == [3, 7, 8]
    assert sorted(os.listdir(base)) == ["3", "7", "8", "notes"]


def test_an_export_base_tensorflow_cannot_use_is_refused_by_name(tmp_path):
    model = export_probe.build_probe_model(2, image_size=8)
    labels = LabelMap(("n1", "n2"), ("one", "two"))
    (tmp_path / "file").write_text("x")
    os.symlink(tmp_path / "gone", tmp_path / "dangling")
    for name in ("file", "dangling"):
        with pytest.raises(NotADirectoryError, match=f"{name} is a file .*not a folder"):
            export.export_saved_model(model, labels, str(tmp_path / name), warmup=False)
    odd = os.fsdecode(os.path.join(os.fsencode(str(tmp_path)), b"models\xff"))
    with pytest.raises(InputError, match=r"models\\xff'?: TensorFlow's file functions"):
        export.export_saved_model(model, labels, odd, warmup=False)
    assert sorted(os.listdir(tmp_path)) == ["dangling", "file"]


def test_failed_export_leaves_nothing_behind(tmp_path):
    model = export_probe.build_probe_model(3, image_size=8)
    with pytest.raises(ValueError, match="3 classes but the label map"):
        export.export_saved_model(model, LabelMap(("n1", "n2"), ("a", "b")), str(tmp_path))
    assert os.listdir(tmp_path) == []


def test_fingerprint_matches_rewritten_saved_model(probe_export):
    from tensorflow.core.protobuf import fingerprint_pb2
    from tensorflow.python.saved_model.pywrap_saved_model import fingerprinting
    with open(os.path.join(probe_export, "fingerprint.pb"), "rb") as f:
        written = fingerprint_pb2.FingerprintDef.FromString(f.read())
    fresh = fingerprint_pb2.FingerprintDef.FromString(
        fingerprinting.CreateFingerprintDef(probe_export))
    assert written.saved_model_checksum == fresh.saved_model_checksum != 0
    written.ClearField("uuid")  # random per write
    fresh.ClearField("uuid")
    assert written == fresh


# -- signatures, the TF Serving way ---------------------------------------------

def test_classify_method_name_and_signature_keys(probe_export):
    meta_graph = export.read_saved_model_proto(probe_export).meta_graphs[0]
    signatures = meta_graph.signature_def
    assert signatures["classify"].method_name == "tensorflow/serving/classify"
    for name in ("serving_default", "predict_images", "features"):
        assert signatures[name].method_name == "tensorflow/serving/predict"
    assert set(signatures["classify"].inputs) == {"inputs"}
    assert set(signatures["classify"].outputs) == {"classes", "scores"}
    assert set(signatures["serving_default"].inputs) == {"image_bytes"}
    assert set(signatures["serving_default"].outputs) == set(export.PREDICT_OUTPUTS)
    # TF Serving's REST layer base64-encodes outputs named *_bytes.
    assert not [k for s in signatures.values() for k in s.outputs if k.endswith("_bytes")]


def test_all_four_signatures_run_in_tf1_session(probe):
    images = [export.warmup_image_bytes(), export.warmup_image_bytes(120, 90)]
    out = probe.run("serving_default", image_bytes=images)
    assert out["probabilities"].shape == (2, 10)
    np.testing.assert_allclose(out["probabilities"].sum(axis=1), 1.0, rtol=1e-5)
    assert out["top_k_indices"].shape == out["top_k_scores"].shape == (2, 5)
    np.testing.assert_allclose(
        out["top_k_scores"], np.take_along_axis(out["probabilities"], out["top_k_indices"], 1))
    assert np.all(np.diff(out["top_k_scores"], axis=1) <= 0)
    wnids = np.array(LABELS.wnids, dtype=object)[out["top_k_indices"]]
    assert (out["top_k_wnids"].astype(str) == wnids.astype(str)).all()
    names = np.array(LABELS.names)[out["top_k_indices"]]
    assert (np.char.decode(out["top_k_names"].astype(bytes)) == names).all()

    pixels = probe.run("features", image_bytes=images)["features"]
    assert pixels.shape == (2, SIZE * SIZE * 3)
    by_array = probe.run("predict_images", images=pixels.reshape(2, SIZE, SIZE, 3))
    np.testing.assert_allclose(by_array["probabilities"], out["probabilities"], atol=1e-6)

    examples = [records.serialize(records.ImageRecord(image, 1, 1, 0, "", "", ""))
                for image in images]
    classified = probe.run("classify", inputs=examples)
    assert classified["classes"].shape == classified["scores"].shape == (2, 5)
    np.testing.assert_allclose(classified["scores"], out["top_k_scores"], atol=1e-6)
    assert (classified["classes"] == out["top_k_wnids"]).all()


def test_classify_without_encoded_image_names_the_field(probe):
    empty = tf.train.Example().SerializeToString()
    with pytest.raises(tf.errors.InvalidArgumentError, match="image/encoded"):
        probe.run("classify", inputs=[empty])


def test_warmup_requests_replay_against_the_export(probe_export, probe):
    prediction_log_pb2 = pytest.importorskip("tensorflow_serving.apis.prediction_log_pb2")
    path = os.path.join(probe_export, "assets.extra", "tf_serving_warmup_requests")
    kinds = []
    for serialized in tf.data.TFRecordDataset(path).as_numpy_iterator():
        log = prediction_log_pb2.PredictionLog.FromString(serialized)
        kinds.append(log.WhichOneof("log_type"))
        if kinds[-1] == "predict_log":
            request = log.predict_log.request
            inputs = {k: tf.make_ndarray(v) for k, v in request.inputs.items()}
        else:
            request = log.classify_log.request
            inputs = {"inputs": [e.SerializeToString()
                                 for e in request.input.example_list.examples]}
        out = probe.run(request.model_spec.signature_name, **inputs)
        batch = len(next(iter(inputs.values())))
        assert batch in (1, 8) and {len(v) for v in out.values()} == {batch}
    assert kinds.count("predict_log") == 4 and kinds.count("classify_log") == 2


def test_tf2_loader_runs_the_same_signatures(probe_export, probe):
    loaded = tf.saved_model.load(probe_export)
    assert set(loaded.signatures) == set(export.SIGNATURES)
    image = export.warmup_image_bytes()
    tf2 = loaded.signatures["serving_default"](image_bytes=tf.constant([image]))
    tf1 = probe.run("serving_default", image_bytes=[image])
    np.testing.assert_allclose(tf2["probabilities"].numpy(), tf1["probabilities"], atol=1e-7)


# -- train/serve parity on real images --------------------------------------------

def test_parity_a_serving_equals_eval_pipeline_on_data_prep_records(
        probe, imagenet_sample, tmp_path):
    originals = sample_jpegs(imagenet_sample, 8)
    converted = [convert.convert(data) for data in originals]
    shard = os.path.join(tmp_path, records.shard_name(records.VALIDATION_PREFIX, 0, 1))
    with tf.io.TFRecordWriter(shard) as writer:
        for i, c in enumerate(converted):
            writer.write(records.serialize(records.ImageRecord(
                c.encoded, 256, 256, i, LABELS.wnids[i], LABELS.names[i], f"{i}.JPEG")))
    evaluated, _ = next(iter(make_eval_dataset(str(tmp_path), batch_size=8)))
    served = probe.run("features", image_bytes=[c.encoded for c in converted])["features"]
    np.testing.assert_allclose(served.reshape(-1, SIZE, SIZE, 3), evaluated.numpy(), atol=1e-5)


def test_parity_b_original_jpegs_close_to_data_prep_path(probe, imagenet_sample):
    """Full-size photos straight into the serving graph vs data prep's 256x256
    record then evaluation's centre crop, and vs data prep's pixels before
    its JPEG encoding. The bounds are the figures
    benchmarks/parity_serving_vs_dataprep.py measures (README, Benchmarks)
    with a small margin: the first is set by the record's own JPEG loss,
    the second by rounding alone."""
    originals = sample_jpegs(imagenet_sample, 24, start=100)
    served = probe.run("features", image_bytes=originals)["features"].reshape(-1, SIZE, SIZE, 3)
    to_record, to_pixels = [], []
    for data, image in zip(originals, served):
        converted = convert.convert(data)
        prepped = preprocessing.eval_image(tf.constant(converted.encoded)).numpy()
        to_record.append(np.mean(np.abs(image - prepped)))
        to_pixels.append(np.mean(np.abs(image - converted.pixels[16:240, 16:240])))
    assert np.mean(to_record) < 2.6, to_record
    assert max(to_record) < 5.0, to_record
    assert np.mean(to_pixels) < 0.15, to_pixels
    assert max(to_pixels) < 0.2, to_pixels


def test_parity_real_model_serving_equals_keras_on_eval_image(alexnet_and_export, alexnet_session,
                                                             imagenet_sample):
    model, _ = alexnet_and_export
    originals = sample_jpegs(imagenet_sample, 4, start=500)
    served = alexnet_session.run("serving_default", image_bytes=originals)
    features = alexnet_session.run("features", image_bytes=originals)["features"]
    size = export.crop_size(model)
    images = tf.stack([preprocessing.eval_image(tf.constant(b), size) for b in originals])
    np.testing.assert_allclose(served["probabilities"], model(images, training=False).numpy(),
                               atol=1e-5)
    fc7 = feature_model(model)(images, training=False).numpy()
    np.testing.assert_allclose(features, fc7, rtol=1e-4, atol=1e-4)
    assert features.shape == (4, TINY_MODEL["fc_units"][1])


# -- the real AlexNet: size, placement, XLA, saved_model_cli ------------------------

def test_variables_hold_each_weight_once(alexnet_and_export):
    model, path = alexnet_and_export
    param_bytes = sum(int(np.prod(w.shape)) * 4 for w in model.weights)
    variables = os.path.join(path, "variables")
    stored = sum(os.path.getsize(os.path.join(variables, f)) for f in os.listdir(variables))
    # A second copy of the weights (e.g. the towers' OnDevice wrappers
    # tracked twice) would double this.
    assert param_bytes <= stored < 1.5 * param_bytes, (stored, param_bytes)


def test_no_device_pins_and_no_xla(alexnet_and_export):
    _, path = alexnet_and_export
    meta_graph = export.read_saved_model_proto(path).meta_graphs[0]
    nodes = export.serving_node_defs(meta_graph)
    assert len(nodes) > 100 and any(n.op == "Conv2D" for n in nodes)
    assert [(n.name, n.device) for n in nodes if n.device] == []
    assert export.xla_compiled_nodes(meta_graph) == []


def test_tower_placed_model_exports_unpinned(alexnet_and_export, alexnet_session):
    placed, path = alexnet_and_export
    assert placed.tower_devices  # the model itself is placed; its export is not
    meta_graph = export.read_saved_model_proto(path).meta_graphs[0]
    assert export.pinned_devices(meta_graph) == []
    images = np.random.default_rng(2).uniform(0, 255, (2, 67, 67, 3)).astype(np.float32)
    served = alexnet_session.run("predict_images", images=images)["probabilities"]
    np.testing.assert_allclose(served, placed(images, training=False).numpy(), atol=1e-5)


def test_saved_model_cli_lists_four_signatures(alexnet_and_export):
    _, path = alexnet_and_export
    # TensorFlow's saved_model_cli, in this process (tests/launchers.py)
    result = run_launcher("tensorflow.python.tools.saved_model_cli", "show", "--all",
                          "--dir", path)
    assert result.returncode == 0, result.stderr[-3000:]
    shown = result.stdout
    blocks = {b.split("']")[0]: b for b in shown.split("signature_def['")[1:]}
    assert set(export.SIGNATURES) <= set(blocks)

    def io(block, key):
        part = block.split(f"['{key}'] tensor_info:")[1]
        return part.split("dtype: ")[1].split()[0], part.split("shape: ")[1].split("\n")[0]

    assert io(blocks["serving_default"], "image_bytes") == ("DT_STRING", "(-1)")
    assert io(blocks["serving_default"], "probabilities") == ("DT_FLOAT", "(-1, 10)")
    for key, dtype in (("top_k_indices", "DT_INT32"), ("top_k_scores", "DT_FLOAT"),
                       ("top_k_wnids", "DT_STRING"), ("top_k_names", "DT_STRING")):
        assert io(blocks["serving_default"], key) == (dtype, "(-1, 5)")
        assert io(blocks["predict_images"], key) == (dtype, "(-1, 5)")
    size = TINY_MODEL["image_size"]
    assert io(blocks["predict_images"], "images") == ("DT_FLOAT", f"(-1, {size}, {size}, 3)")
    assert io(blocks["classify"], "inputs") == ("DT_STRING", "(-1)")
    assert io(blocks["classify"], "classes") == ("DT_STRING", "(-1, 5)")
    assert io(blocks["classify"], "scores") == ("DT_FLOAT", "(-1, 5)")
    assert "Method name is: tensorflow/serving/classify" in blocks["classify"]
    assert io(blocks["features"], "image_bytes") == ("DT_STRING", "(-1)")
    features = TINY_MODEL["fc_units"][1]
    assert io(blocks["features"], "features") == ("DT_FLOAT", f"(-1, {features})")


def test_top_k_shrinks_to_class_count(probe_227_session):
    # 3 classes, the default top_k 5
    out = probe_227_session.run("serving_default", image_bytes=[export.warmup_image_bytes()])
    assert out["top_k_indices"].shape == (1, 3)
    assert sorted(out["top_k_indices"][0]) == [0, 1, 2]


# -- launch.export --------------------------------------------------------------

@pytest.mark.slow  # two models built and one exported of its own, through the launcher
def test_launch_export_from_model_dir_best_checkpoint(tmp_path):
    """The CLI on a training-style model_dir: model_config.json, labels.txt,
    a latest and a best checkpoint with different weights; --checkpoint=best
    exports the best one."""
    from alexnet_tf.training import model_dir as model_dir_files
    model_dir = tmp_path / "run"
    (model_dir / "best").mkdir(parents=True)
    config = {"num_classes": 3, **TINY_MODEL, "towers": 1, "dropout": 0.0,
              "std_rgb": [60.0, 62.0, 64.0]}
    model_dir_files.write_model_config(str(model_dir), config)
    LabelMap(("n1", "n2", "n3"), ("one", "two", "three")).write(str(model_dir / "labels.txt"))
    best = build_alexnet(**config)
    tf.train.Checkpoint(model=best).save(str(model_dir / "best" / "ckpt"))
    latest = build_alexnet(**config)
    tf.train.Checkpoint(model=latest).save(str(model_dir / "ckpt"))

    export_dir = tmp_path / "saved_models" / "alexnet"
    result = run_launcher("launch.export", f"--model_dir={model_dir}",
                          f"--export_dir={export_dir}", "--checkpoint=best", "--version=4",
                          "--nowarmup", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"exported 3-class model to {export_dir / '4'}" in result.stdout
    images = np.random.default_rng(3).uniform(0, 255, (2, 67, 67, 3)).astype(np.float32)
    served = tf.saved_model.load(str(export_dir / "4")).signatures["predict_images"](
        images=tf.constant(images))["probabilities"].numpy()
    np.testing.assert_allclose(served, best(images, training=False).numpy(), atol=1e-5)
    assert not np.allclose(served, latest(images, training=False).numpy(), atol=1e-5)
    assert LabelMap.read(str(export_dir / "4" / "assets")).names == ("one", "two", "three")
    again = run_launcher("launch.export", f"--model_dir={model_dir}",
                         f"--export_dir={export_dir}", "--version=4", "--nowarmup", cwd=tmp_path)
    assert again.returncode == 2 and again.stderr.count("\n") == 1, again.stderr
    assert again.stderr.startswith(
        f"launch.export: error: --version=4: {export_dir / '4'} already exists")


def test_launch_export_needs_exactly_one_source(tmp_path):
    result = run_launcher("launch.export", f"--export_dir={tmp_path}", cwd=tmp_path)
    assert result.returncode == 2 and result.stderr.count("\n") == 1, result.stderr
    assert "exactly one of --model_dir, --keras_model, --untrained" in result.stderr
    from launch import export as launch_export
    assert launch_export.ExportConfig.top_k == export.DEFAULT_TOP_K  # one home: alexnet_tf.defaults


def test_warmup_skipped_with_a_message_without_serving_api(tmp_path, monkeypatch, caplog):
    monkeypatch.setitem(sys.modules, "tensorflow_serving.apis", None)  # import fails
    with caplog.at_level("INFO"):
        assert export.write_warmup_requests(str(tmp_path)) is None
    assert not (tmp_path / "assets.extra").exists()
    assert "tensorflow-serving-api is not installed" in caplog.text


def test_a_227_model_is_served_227_crops_of_the_256_square(versioned, probe_227_session):
    """Caffe's AlexNet reads 227x227: the export crops what the model reads
    (export.crop_size(model), its input size) from the same 256x256 view,
    and predict_images takes [N, 227, 227, 3]."""
    assert export.crop_size(versioned.probe_227) == 227
    path = versioned.newest
    signature_def = export.read_saved_model_proto(path).meta_graphs[0].signature_def
    shape = signature_def["predict_images"].inputs["images"].tensor_shape
    assert [d.size for d in shape.dim] == [-1, 227, 227, 3]
    image = export.warmup_image_bytes(300, 400)
    view = preprocessing.stored_view(tf.constant(image)).numpy()
    session = probe_227_session
    pixels = session.run("features", image_bytes=[image])["features"].reshape(227, 227, 3)
    np.testing.assert_array_equal(pixels, view[14:241, 14:241])  # (256 - 227) // 2 = 14
    by_array = session.run("predict_images", images=pixels[np.newaxis])
    by_bytes = session.run("serving_default", image_bytes=[image])
    np.testing.assert_allclose(by_array["probabilities"], by_bytes["probabilities"], atol=1e-6)
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"\[N, 227, 227, 3\]"):
        session.run("predict_images", images=np.zeros((1, 224, 224, 3), np.float32))

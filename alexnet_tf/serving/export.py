"""Export a trained AlexNet as a SavedModel that TensorFlow Serving loads as is.

`export_saved_model` writes `<export_base>/<version>/` with four signatures:

- `serving_default`: `image_bytes` (encoded JPEG/PNG/GIF/BMP strings, [N]) ->
  `probabilities`, `top_k_indices`, `top_k_scores`, `top_k_wnids`,
  `top_k_names`. Decoding runs `preprocessing.eval_image` in the graph, the
  function evaluation uses (shorter side 256, centre 224 crop, section 4.1).
- `predict_images`: float32 [N, 224, 224, 3] RGB 0..255 -> the same outputs.
- `classify`: TF Serving's Classify API (`inputs`: serialized tf.Example with
  `image/encoded` -> `classes` [N, k] strings, `scores` [N, k]).
- `features`: `image_bytes` -> `features`, the 4,096-d post-ReLU fc7
  activations that section 6.1 uses for retrieval.

The label map ships as `assets/labels.txt`; its wnids and names are also baked
into the graph as constants so the signatures need no table initialisation.
The model's variables are tracked once (Keras 3's `model.export` stored every
weight twice), no op is pinned to a device and nothing is XLA-compiled, so the
export loads on a CPU-only and on a one-GPU server.

TF2's `tf.saved_model.save` writes every SignatureDef with the Predict method
name; TF Serving's Classify API refuses those. After saving, the `classify`
SignatureDef's method name is rewritten in `saved_model.pb` (and the
fingerprint recomputed), before the version directory is published.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import tempfile

import keras
import numpy as np
import tensorflow as tf
from tensorflow.core.protobuf import saved_model_pb2

from alexnet_tf.data import preprocessing, records
from alexnet_tf.data.labels import LABELS_FILENAME, LabelMap

SERVING_DEFAULT = "serving_default"
PREDICT_IMAGES = "predict_images"
CLASSIFY = "classify"
FEATURES = "features"
SIGNATURES = (SERVING_DEFAULT, PREDICT_IMAGES, CLASSIFY, FEATURES)

IMAGE_BYTES = "image_bytes"
IMAGES = "images"
CLASSIFY_INPUTS = tf.saved_model.CLASSIFY_INPUTS                # "inputs"
CLASSIFY_CLASSES = tf.saved_model.CLASSIFY_OUTPUT_CLASSES       # "classes"
CLASSIFY_SCORES = tf.saved_model.CLASSIFY_OUTPUT_SCORES         # "scores"
CLASSIFY_METHOD_NAME = tf.saved_model.CLASSIFY_METHOD_NAME      # "tensorflow/serving/classify"
PREDICT_OUTPUTS = ("probabilities", "top_k_indices", "top_k_scores",
                   "top_k_wnids", "top_k_names")

FEATURES_LAYER = "fc7"
DEFAULT_TOP_K = 5
WARMUP_DIRNAME = "assets.extra"
WARMUP_FILENAME = "tf_serving_warmup_requests"
SAVED_MODEL_FILENAME = "saved_model.pb"

_VERSION_DIR = re.compile(r"^\d+$")


class _Untracked:
    """Holds an object out of sight of tf.Module's attribute tracking."""

    def __init__(self, obj):
        self.obj = obj


class ServingModule(tf.Module):
    """The exported object: the model (tracked once), the label asset and
    the four signature functions."""

    def __init__(self, model: keras.Model, label_map: LabelMap, labels_path: str,
                 top_k: int = DEFAULT_TOP_K, classify_classes: str = "wnids"):
        super().__init__(name="alexnet_serving")
        num_classes = int(model.output.shape[-1])
        if num_classes != len(label_map):
            raise ValueError(f"model has {num_classes} classes but the label map "
                             f"{labels_path} has {len(label_map)}")
        if classify_classes not in ("wnids", "names"):
            raise ValueError(f"classify_classes must be 'wnids' or 'names', got {classify_classes!r}")
        # One functional view sharing the model's layers (and so its
        # variables): probabilities and fc7 from a single forward pass.
        self._model = _Untracked(keras.Model(
            model.input,
            {"probabilities": model.output,
             FEATURES: model.get_layer(FEATURES_LAYER).output},
            name=f"{model.name}_serving"))
        # The tf.Variables under the Keras variables, tracked once and
        # directly. Tracking the Keras model instead saves wrapper variables
        # that the TF1 loader (TF Serving's) restores while the signatures
        # read the inner ones: "Could not find variable fc7/kernel".
        self.model_variables = [v.value for v in self._model.obj.variables]
        self.labels = tf.saved_model.Asset(labels_path)
        self._wnids = tuple(label_map.wnids)
        self._names = tuple(label_map.names)
        self._top_k = min(top_k, num_classes)
        # Evaluation's view at the model's input size (224 for the paper's
        # net): shorter side to 256, centre crop.
        self.image_size = int(model.input.shape[1])
        self._classify_classes = classify_classes

    # -- shared pieces -------------------------------------------------------

    def _decode(self, image_bytes):
        """[N] encoded strings -> float32 [N, 224, 224, 3], per image exactly
        what evaluation feeds the model."""
        size = self.image_size
        return tf.map_fn(lambda b: preprocessing.eval_image(b, crop_size=size), image_bytes,
                         fn_output_signature=tf.TensorSpec([size, size, 3], tf.float32))

    def _forward(self, images):
        return self._model.obj(images, training=False)

    def _predictions(self, probabilities):
        scores, indices = tf.math.top_k(probabilities, k=self._top_k)
        return {
            "probabilities": probabilities,
            "top_k_indices": indices,
            "top_k_scores": scores,
            "top_k_wnids": tf.gather(tf.constant(self._wnids), indices),
            "top_k_names": tf.gather(tf.constant(self._names), indices),
        }

    # -- signatures ----------------------------------------------------------

    def _serving_default(self, image_bytes):
        return self._predictions(self._forward(self._decode(image_bytes))["probabilities"])

    def _predict_images(self, images):
        return self._predictions(self._forward(images)["probabilities"])

    def _classify(self, inputs):
        encoded = records.parse_examples(inputs)[records.ENCODED]
        probabilities = self._forward(self._decode(encoded))["probabilities"]
        scores, indices = tf.math.top_k(probabilities, k=self._top_k)
        labels = self._wnids if self._classify_classes == "wnids" else self._names
        return {CLASSIFY_CLASSES: tf.gather(tf.constant(labels), indices),
                CLASSIFY_SCORES: scores}

    def _features(self, image_bytes):
        return {FEATURES: self._forward(self._decode(image_bytes))[FEATURES]}

    def signatures(self) -> dict:
        """Signature name -> concrete function; the input names come from
        the TensorSpec names. No jit_compile anywhere: XLA-compiled graphs
        do not load in TF Serving."""
        strings = lambda name: tf.TensorSpec([None], tf.string, name=name)
        images = tf.TensorSpec([None, self.image_size, self.image_size, 3], tf.float32,
                               name=IMAGES)
        specs = {
            SERVING_DEFAULT: (self._serving_default, strings(IMAGE_BYTES)),
            PREDICT_IMAGES: (self._predict_images, images),
            CLASSIFY: (self._classify, strings(CLASSIFY_INPUTS)),
            FEATURES: (self._features, strings(IMAGE_BYTES)),
        }
        return {name: tf.function(fn, input_signature=[spec]).get_concrete_function()
                for name, (fn, spec) in specs.items()}


# -- versioned, atomic write ------------------------------------------------

def existing_versions(export_base: str) -> list[int]:
    """Integer version directories under `export_base`, ascending."""
    if not os.path.isdir(export_base):
        return []
    return sorted(int(d) for d in os.listdir(export_base)
                  if _VERSION_DIR.match(d) and os.path.isdir(os.path.join(export_base, d)))


def next_version(export_base: str) -> int:
    versions = existing_versions(export_base)
    return versions[-1] + 1 if versions else 1


def unplaced(model: keras.Model) -> keras.Model:
    """`model`, or when its towers are pinned to devices (`tower_devices`), a
    copy rebuilt without placement carrying the same weights: placement
    belongs to the training process, never to the export."""
    if not getattr(model, "tower_devices", None):
        return model
    copy = type(model).from_config(model.get_config())  # config drops tower_devices
    copy.set_weights(model.get_weights())
    logging.info("rebuilt %s without tower placement for export", model.name)
    return copy


def export_saved_model(model: keras.Model, label_map: LabelMap, export_base: str,
                       version: int | None = None, *, top_k: int = DEFAULT_TOP_K,
                       classify_classes: str = "wnids", warmup: bool = True) -> str:
    """Writes `<export_base>/<version>/` and returns its path.

    `version` defaults to the next free integer. The SavedModel is written to
    a hidden temporary directory in `export_base` and renamed into place when
    complete, so a server polling `export_base` never sees half a model (TF
    Serving only looks at all-digit directory names). An existing version is
    never overwritten.

    A model whose towers are pinned (`tower_devices`) is rebuilt unplaced
    first; any other op still pinned to a device, or any XLA-compiled
    function, makes the export fail rather than publish a model that a
    CPU-only or one-GPU server could not load.
    """
    version = next_version(export_base) if version is None else int(version)
    if version < 0:
        raise ValueError(f"version must be a non-negative integer, got {version}")
    final_dir = os.path.join(export_base, str(version))
    if os.path.exists(final_dir):
        raise FileExistsError(f"{final_dir} already exists: pick another --version "
                              "or leave it unset for the next free one")
    os.makedirs(export_base, exist_ok=True)
    tmp_dir = tempfile.mkdtemp(prefix=f".tmp-{version}-", dir=export_base)
    try:
        # The label file is written first so the Asset copies it into assets/.
        labels_path = os.path.join(tempfile.mkdtemp(dir=tmp_dir), LABELS_FILENAME)
        label_map.write(labels_path)
        module = ServingModule(unplaced(model), label_map, labels_path, top_k, classify_classes)
        saved_dir = os.path.join(tmp_dir, "saved_model")
        tf.saved_model.save(module, saved_dir, signatures=module.signatures())
        _finalize_saved_model_proto(saved_dir)
        if warmup:
            write_warmup_requests(saved_dir)
        os.rename(saved_dir, final_dir)
    finally:
        shutil.rmtree(tmp_dir, ignore_errors=True)
    logging.info("exported SavedModel version %d to %s", version, final_dir)
    return final_dir


# -- saved_model.pb post-processing -----------------------------------------

def read_saved_model_proto(saved_dir: str) -> saved_model_pb2.SavedModel:
    proto = saved_model_pb2.SavedModel()
    with open(os.path.join(saved_dir, SAVED_MODEL_FILENAME), "rb") as f:
        proto.ParseFromString(f.read())
    return proto


def serving_node_defs(meta_graph):
    """Every NodeDef a signature can run, plus every variable: the outer-graph
    nodes the signatures' outputs depend on and the bodies of all functions
    they call, transitively. The checkpoint save/restore functions TF adds
    are left out: TF pins those to the CPU in every SavedModel, and every
    server has a CPU."""
    nodes = {n.name: n for n in meta_graph.graph_def.node}
    functions = {f.signature.name: f for f in meta_graph.graph_def.library.function}
    pending = [t.name.split(":")[0] for sig in meta_graph.signature_def.values()
               for t in sig.outputs.values()]
    pending += [name for name, n in nodes.items() if n.op in ("VarHandleOp", "VariableV2")]
    seen, called = set(), []
    while pending:
        name = pending.pop()
        if name in seen or name not in nodes:
            continue
        seen.add(name)
        node = nodes[name]
        called += _called_functions(node)
        pending += [i.lstrip("^").split(":")[0] for i in node.input]
    result = [nodes[name] for name in sorted(seen)]
    done = set()
    while called:
        name = called.pop()
        if name in done or name not in functions:
            continue
        done.add(name)
        for node in functions[name].node_def:
            result.append(node)
            called += _called_functions(node)
    return result


def _called_functions(node) -> list[str]:
    names = []
    for value in node.attr.values():
        if value.func.name:
            names.append(value.func.name)
        names += [f.name for f in value.list.func]
    return names


def pinned_devices(meta_graph) -> list[tuple[str, str]]:
    """(node name, device) for every serving node with a non-empty device."""
    return [(n.name, n.device) for n in serving_node_defs(meta_graph) if n.device]


def xla_compiled_nodes(meta_graph) -> list[str]:
    """Names of functions/nodes anywhere in the graph asking for XLA."""
    found = [f.signature.name for f in meta_graph.graph_def.library.function
             if "_XlaMustCompile" in f.attr and f.attr["_XlaMustCompile"].b]
    all_nodes = list(meta_graph.graph_def.node) + [
        n for f in meta_graph.graph_def.library.function for n in f.node_def]
    found += [n.name for n in all_nodes
              if "_XlaMustCompile" in n.attr and n.attr["_XlaMustCompile"].b]
    return found


def _finalize_saved_model_proto(saved_dir: str) -> None:
    """Sets the classify method name, refuses device pins and XLA, rewrites
    `saved_model.pb` and its fingerprint."""
    proto = read_saved_model_proto(saved_dir)
    for meta_graph in proto.meta_graphs:
        pins = pinned_devices(meta_graph)
        if pins:
            raise ValueError(
                f"{len(pins)} ops are pinned to devices (e.g. {pins[0]}): build the "
                "exported model with tower_devices=None (checkpoints.restore_model does)")
        xla = xla_compiled_nodes(meta_graph)
        if xla:
            raise ValueError(f"XLA-compiled functions in the export: {xla[:3]}; "
                             "export a model whose call is not jit-compiled")
        if CLASSIFY in meta_graph.signature_def:
            meta_graph.signature_def[CLASSIFY].method_name = CLASSIFY_METHOD_NAME
    path = os.path.join(saved_dir, SAVED_MODEL_FILENAME)
    with open(path, "wb") as f:
        f.write(proto.SerializeToString(deterministic=True))
    _rewrite_fingerprint(saved_dir)


def _rewrite_fingerprint(saved_dir: str) -> None:
    """`fingerprint.pb` holds a checksum of `saved_model.pb`: recompute it
    with TF's own writer so it matches the edited proto."""
    try:
        from tensorflow.python.saved_model import fingerprinting_utils
    except ImportError:  # no writer in this TF: a stale fingerprint would lie
        stale = os.path.join(saved_dir, "fingerprint.pb")
        if os.path.exists(stale):
            os.remove(stale)
        logging.warning("could not recompute fingerprint.pb; removed it")
        return
    fingerprinting_utils.write_fingerprint(saved_dir)


# -- TF Serving warm-up -------------------------------------------------------

def warmup_image_bytes(height: int = 300, width: int = 400) -> bytes:
    """A deterministic synthetic JPEG (colour gradients) for warm-up requests;
    its size makes the graph run the resize branch, as a real photo does."""
    y = np.linspace(0, 255, height, dtype=np.float32)[:, None]
    x = np.linspace(0, 255, width, dtype=np.float32)[None, :]
    image = np.stack([np.broadcast_to(y, (height, width)),
                      np.broadcast_to(x, (height, width)),
                      np.broadcast_to((y + x) / 2, (height, width))], axis=-1)
    return tf.io.encode_jpeg(image.astype(np.uint8), quality=90).numpy()


def write_warmup_requests(saved_dir: str, batch_sizes=(1, 8)) -> str | None:
    """Writes `assets.extra/tf_serving_warmup_requests`: PredictionLogs that TF
    Serving replays on load (`--enable_model_warmup`) so the first real
    request does not pay for graph initialisation. Needs the
    tensorflow-serving-api package; without it, logs why and skips."""
    try:
        from tensorflow_serving.apis import (classification_pb2, predict_pb2,
                                             prediction_log_pb2)
    except ImportError:
        logging.info("tensorflow-serving-api is not installed: no warm-up file written "
                     "(install the 'serving' extra to get %s/%s)", WARMUP_DIRNAME, WARMUP_FILENAME)
        return None
    image = warmup_image_bytes()
    logs = []
    for batch in batch_sizes:
        for signature in (SERVING_DEFAULT, FEATURES):
            request = predict_pb2.PredictRequest()
            request.model_spec.signature_name = signature
            request.inputs[IMAGE_BYTES].CopyFrom(
                tf.make_tensor_proto([image] * batch, dtype=tf.string, shape=[batch]))
            logs.append(prediction_log_pb2.PredictionLog(
                predict_log=prediction_log_pb2.PredictLog(request=request)))
        request = classification_pb2.ClassificationRequest()
        request.model_spec.signature_name = CLASSIFY
        example = records.make_example(records.ImageRecord(
            encoded=image, height=300, width=400, label=-1, synset="", text="", filename=""))
        for _ in range(batch):
            request.input.example_list.examples.add().CopyFrom(example)
        logs.append(prediction_log_pb2.PredictionLog(
            classify_log=prediction_log_pb2.ClassifyLog(request=request)))
    path = os.path.join(saved_dir, WARMUP_DIRNAME, WARMUP_FILENAME)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with tf.io.TFRecordWriter(path) as writer:
        for log in logs:
            writer.write(log.SerializeToString())
    return path

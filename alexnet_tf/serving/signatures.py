"""The exported object and its four signatures.

- `serving_default`: `image_bytes` (encoded JPEG/PNG/GIF/BMP strings, [N]) ->
  `probabilities`, `top_k_indices`, `top_k_scores`, `top_k_wnids`,
  `top_k_names`. Each image goes through `preprocessing.eval_image`, the
  function evaluation uses (data prep's 256x256 centre square, then the
  centre crop the model reads, section 4.1).
- `predict_images`: float32 [N, S, S, 3] RGB 0..255 -> the same outputs; S
  is the model's input size (224 for ours, 227 for Caffe's AlexNet).
- `classify`: TF Serving's Classify API (`inputs`: serialized tf.Example with
  `image/encoded` -> `classes` [N, k] strings, `scores` [N, k]).
- `features`: `image_bytes` -> `features`, the 4,096-d post-ReLU fc7
  activations that section 6.1 uses for retrieval.

Every input is checked first (`requests`): a bad request gets
InvalidArgumentError naming the input, the item of the batch, and what is
wrong. Each string's length is checked against `max_image_bytes` (an
export setting, `budget`) before anything copies it. `predict_images` is traced for any shape so that its own check, not
a reshape deep in the model, answers a wrong size; its SignatureDef still
advertises [-1, S, S, 3] (`saved_model_proto`).
"""

from __future__ import annotations

import functools

import keras
import tensorflow as tf

from alexnet_tf import defaults
from alexnet_tf.data import preprocessing
from alexnet_tf.data.labels import LabelMap
from alexnet_tf.model.alexnet import FEATURES_LAYER
from alexnet_tf.serving import budget, requests

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
PREDICT_OUTPUTS = ("probabilities", "top_k_indices", "top_k_scores",
                   "top_k_wnids", "top_k_names")
DEFAULT_TOP_K = defaults.TOP_K


def crop_size(model: keras.Model) -> int:
    """The square input size a model reads: what serving and evaluation crop."""
    return int(model.input_shape[1])


@functools.lru_cache(maxsize=None)
def _view_function(crop_size: int):
    """One image's bytes -> float32 [S, S, 3], exactly what evaluation feeds
    the model: one function per crop size that every signature of every
    export calls, so the decode and its header checks are traced once per
    process, not once per signature (an export took 5.4 CPU s, 4 of them
    tracing the same decode three times)."""
    return tf.function(lambda image_bytes: preprocessing.eval_image(image_bytes, crop_size),
                       input_signature=[tf.TensorSpec([], tf.string)], autograph=False)


class _Untracked:
    """Holds an object out of sight of tf.Module's attribute tracking."""

    def __init__(self, obj):
        self.obj = obj


class ServingModule(tf.Module):
    """The exported object: the model (tracked once), the label asset and
    the four signature functions."""

    def __init__(self, model: keras.Model, label_map: LabelMap, labels_path: str,
                 top_k: int = DEFAULT_TOP_K, classify_classes: str = "wnids",
                 max_image_bytes: int = budget.DEFAULT_MAX_IMAGE_BYTES):
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
        self.image_size = crop_size(model)
        self._classify_classes = classify_classes
        self.max_image_bytes = budget.check_max_image_bytes(max_image_bytes)

    # -- shared pieces -------------------------------------------------------

    def _view(self, image_bytes):
        """One image's bytes -> float32 [S, S, 3] (`_view_function`)."""
        return _view_function(self.image_size)(image_bytes)

    def _decode(self, image_bytes, name):
        """[N] encoded strings -> float32 [N, S, S, 3]."""
        size = self.image_size
        return requests.decode_images(image_bytes, self._view, [size, size, 3], name,
                                      self.max_image_bytes)

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
        images = self._decode(image_bytes, IMAGE_BYTES)
        return self._predictions(self._forward(images)["probabilities"])

    def _predict_images(self, images):
        images = requests.check_images(images, self.image_size, IMAGES)
        return self._predictions(self._forward(images)["probabilities"])

    def _classify(self, inputs):
        size = self.image_size
        images = requests.decode_examples(inputs, self._view, [size, size, 3], CLASSIFY_INPUTS,
                                          self.max_image_bytes)
        probabilities = self._forward(images)["probabilities"]
        scores, indices = tf.math.top_k(probabilities, k=self._top_k)
        labels = self._wnids if self._classify_classes == "wnids" else self._names
        return {CLASSIFY_CLASSES: tf.gather(tf.constant(labels), indices),
                CLASSIFY_SCORES: scores}

    def _features(self, image_bytes):
        return {FEATURES: self._forward(self._decode(image_bytes, IMAGE_BYTES))[FEATURES]}

    def signatures(self) -> dict:
        """Signature name -> concrete function; the input names come from
        the TensorSpec names. No jit_compile anywhere: XLA-compiled graphs
        do not load in TF Serving."""
        strings = lambda name: tf.TensorSpec([None], tf.string, name=name)  # noqa: E731
        specs = {
            SERVING_DEFAULT: (self._serving_default, strings(IMAGE_BYTES)),
            PREDICT_IMAGES: (self._predict_images, tf.TensorSpec(None, tf.float32, name=IMAGES)),
            CLASSIFY: (self._classify, strings(CLASSIFY_INPUTS)),
            FEATURES: (self._features, strings(IMAGE_BYTES)),
        }
        # autograph=False: the request code uses explicit tf.cond/tf.data;
        # converting it would only re-parse it (seconds per export).
        return {name: tf.function(fn, input_signature=[spec], autograph=False)
                .get_concrete_function() for name, (fn, spec) in specs.items()}

    def advertised_input_shapes(self) -> dict:
        """Signature -> input -> the shape its SignatureDef states."""
        return {PREDICT_IMAGES: {IMAGES: [-1, self.image_size, self.image_size, 3]}}

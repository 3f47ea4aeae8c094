"""The small Keras layers AlexNet needs beyond Keras' own.

* `LocalResponseNormalization`: the brightness normalization of section 3.3.
* `MeanSubtraction`: the fixed training-set mean RGB, part of the model so
  training, evaluation and serving cannot disagree on it.
* `OnDevice`: runs one tower's layer (its variables and its ops) on a device.

No Lambda layers: every layer here serialises through `get_config` and loads
with Keras' safe mode on.
"""

from __future__ import annotations

import contextlib
from typing import Optional, Sequence

import keras
import tensorflow as tf
from keras import ops

from alexnet_tf.data.dataset_stats import IMAGENET_MEAN_RGB

_register = keras.saving.register_keras_serializable(package="alexnet_tf")


@_register
class LocalResponseNormalization(keras.layers.Layer):
    """Local response normalization across channels (paper section 3.3).

        b_i = a_i / (k + alpha * sum_{j=max(0, i-n/2)}^{min(N-1, i+n/2)} a_j^2) ** beta

    with the paper's k=2, n=5, alpha=1e-4, beta=0.75. TensorFlow's op sums
    `depth_radius` channels on each side and does not divide alpha by n
    (Caffe and PyTorch do), so the paper's constants map to depth_radius=2,
    bias=2.0, alpha=1e-4, beta=0.75 unchanged.
    """

    def __init__(self, depth_radius: int = 2, bias: float = 2.0,
                 alpha: float = 1e-4, beta: float = 0.75, **kwargs):
        super().__init__(**kwargs)
        self.depth_radius = int(depth_radius)
        self.bias = float(bias)
        self.alpha = float(alpha)
        self.beta = float(beta)

    @classmethod
    def from_paper_constants(cls, size: int = 5, k: float = 2.0, alpha: float = 1e-4,
                             beta: float = 0.75, **kwargs) -> "LocalResponseNormalization":
        """From section 3.3's n, k, alpha, beta (alpha not divided by n). For
        Caffe's LRN (local_size n, alpha, beta, k) pass alpha = Caffe's alpha / n."""
        if not isinstance(size, int) or size < 1 or size % 2 == 0:
            raise ValueError(f"LRN size n must be an odd integer >= 1 (a window centred "
                             f"on the channel), got {size!r}")
        if not (k > 0 and alpha >= 0 and beta >= 0):
            raise ValueError(f"LRN constants must have k > 0, alpha >= 0, beta >= 0; got "
                             f"k={k!r}, alpha={alpha!r}, beta={beta!r}")
        return cls(depth_radius=(size - 1) // 2, bias=k, alpha=alpha, beta=beta, **kwargs)

    def call(self, inputs):
        # In float32 under mixed precision: a float16 sum of squares overflows
        # (max 65504) once activations pass about 114, TensorFlow has no
        # bfloat16 LRN kernel, and XLA's float16 LRN mixes precisions.
        normalized = tf.nn.local_response_normalization(
            tf.cast(inputs, tf.float32), depth_radius=self.depth_radius, bias=self.bias,
            alpha=self.alpha, beta=self.beta)
        return tf.cast(normalized, inputs.dtype)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "depth_radius": self.depth_radius,
                "bias": self.bias, "alpha": self.alpha, "beta": self.beta}


@_register
class CrossTowerLRN(LocalResponseNormalization):
    """LRN over the towers' maps joined, as Caffe's AlexNet does (its conv
    outputs are one blob; the paper normalized within each GPU), computed in
    one tower: called on [tower A's maps, tower B's maps], it returns tower
    `tower`'s normalized maps, reading from the other tower only the
    `depth_radius` maps next to its own (the only ones its sums reach)."""

    def __init__(self, tower: int = 0, **kwargs):
        super().__init__(**kwargs)
        self.tower = int(tower)

    def call(self, inputs):
        own, radius = inputs[self.tower], self.depth_radius
        before = [_halo(inputs[self.tower - 1], -radius, None)] if self.tower and radius else []
        after = ([_halo(inputs[self.tower + 1], 0, radius)]
                 if self.tower + 1 < len(inputs) and radius else [])
        joined = tf.concat(before + [own] + after, axis=-1)
        start = before[0].shape[-1] if before else 0
        return super().call(joined)[..., start:start + own.shape[-1]]

    def compute_output_shape(self, input_shape):
        return input_shape[self.tower]

    def get_config(self):
        return {**super().get_config(), "tower": self.tower}


def _halo(maps, start, stop):
    """maps[..., start:stop], sliced on the device that made `maps`, so only
    the slice crosses to the other tower's device."""
    with device_scope(getattr(maps, "device", None)):
        return maps[..., start:stop]


@_register
class MeanSubtraction(keras.layers.Layer):
    """Subtracts a fixed per-channel mean (the training set's mean RGB,
    0..255) and, when `std` is given, divides by a fixed per-channel std.

    Mean subtraction is the paper's only preprocessing besides resizing
    (section 2); the division gives the unit-scale input that He
    initialization assumes (see `AlexNet`'s `std_rgb`). The values are
    constants stored in the config, not variables: they travel with the
    `.keras` file and are baked into an exported SavedModel graph, and they
    never show up among the weights a checkpoint restores.
    """

    def __init__(self, mean: Sequence[float] = IMAGENET_MEAN_RGB,
                 std: Optional[Sequence[float]] = None, **kwargs):
        super().__init__(**kwargs)
        self.mean = tuple(float(m) for m in mean)
        self.std = None if std is None else tuple(float(v) for v in std)
        if self.std is not None and (len(self.std) != len(self.mean)
                                     or min(self.std) <= 0):
            raise ValueError(f"{self.name}: std must be {len(self.mean)} positive "
                             f"values, got {self.std}")

    def build(self, input_shape):
        if input_shape[-1] != len(self.mean):
            raise ValueError(f"{self.name}: input has {input_shape[-1]} channels but "
                             f"the mean has {len(self.mean)} values {self.mean}")
        self.built = True

    def call(self, inputs):
        inputs = ops.cast(inputs, self.compute_dtype)
        centred = inputs - ops.convert_to_tensor(self.mean, dtype=self.compute_dtype)
        if self.std is None:
            return centred
        inverse = tuple(1.0 / v for v in self.std)
        return centred * ops.convert_to_tensor(inverse, dtype=self.compute_dtype)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "mean": list(self.mean),
                "std": None if self.std is None else list(self.std)}


def device_scope(device: Optional[str]):
    """`tf.device(device)`, or no scope at all for None so that an outer
    scope (e.g. a distribution strategy's replica device) still applies."""
    return tf.device(device) if device else contextlib.nullcontext()


@_register
class OnDevice(keras.layers.Wrapper):
    """Runs the wrapped layer on `device`: variables created and ops run there.

    Keras 3 does not keep a `tf.device` scope that merely surrounds the
    construction of a functional model: the ops are created later, when the
    model is called. So the scope is entered where the work happens, in
    `build` (variables) and `call` (forward ops). Backward ops need
    `alexnet_tf.placement.colocated_gradients`.

    The device is a property of this process, not of the architecture: it is
    left out of `get_config`, and the wrapper is the same with or without a
    device, so variable names and weight order are identical either way and
    weights move freely between a placed and an unplaced build.
    """

    def __init__(self, layer: keras.layers.Layer, device: Optional[str] = None,
                 **kwargs):
        kwargs.setdefault("name", layer.name)
        super().__init__(layer, **kwargs)
        self.device = device

    def build(self, input_shape=None):
        with device_scope(self.device):
            super().build(input_shape)
        self.built = True

    def call(self, inputs, training=None):
        with device_scope(self.device):
            return self.layer(inputs, training=training)

    def compute_output_shape(self, input_shape):
        return self.layer.compute_output_shape(input_shape)

    def get_config(self):
        return super().get_config()  # `device` deliberately not serialised

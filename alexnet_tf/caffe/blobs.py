"""AlexNet's learned layers in Caffe's layout: what both sources (a
`.caffemodel`, a caffe-tensorflow `.npy`) are read into, and what
`convert.py` maps onto the Keras model.

Caffe's layout: convolution weights (out, in / groups, kh, kw) over BGR input
for conv1; inner-product weights (out, in), fc6's `in` being pool5 flattened
in (channel, height, width) order; one bias vector per layer.
"""

from __future__ import annotations

import dataclasses
from typing import Optional

import numpy as np

from alexnet_tf.caffe.errors import CaffeFormatError

CONV_LAYERS = ("conv1", "conv2", "conv3", "conv4", "conv5")
FC_LAYERS = ("fc6", "fc7", "fc8")
LEARNED_LAYERS = CONV_LAYERS + FC_LAYERS
# Which convolutions read their own tower only (Caffe: group 2); conv1 and
# conv3 read every channel of their input (group 1).
GROUPED = ("conv2", "conv4", "conv5")
# BVLC's reference AlexNet (models/bvlc_alexnet/*.prototxt), in Caffe's terms:
# the LRN's local_size, alpha (Caffe divides it by local_size), beta and k.
BVLC_LRN = {"local_size": 5, "alpha": 1e-4, "beta": 0.75, "k": 1.0}
BVLC_CONV1_PADDING = 0


@dataclasses.dataclass
class AlexNetBlobs:
    """`weights[layer]`, `biases[layer]` for the eight LEARNED_LAYERS, in
    Caffe's layout, plus the constants the net computes with."""

    weights: dict[str, np.ndarray]
    biases: dict[str, np.ndarray]
    names: dict[str, str]           # paper layer -> the source's own layer name
    lrn: dict = dataclasses.field(default_factory=lambda: dict(BVLC_LRN))
    conv1_padding: int = BVLC_CONV1_PADDING
    input_size: Optional[int] = None  # as declared by the net, if it says
    mean_bgr: tuple = ()            # a data layer's mean_value, if any
    ceil_pooling: bool = True       # Caffe's default output size rule for pooling

    def describe(self, layer: str) -> str:
        name = self.names.get(layer, layer)
        return name if name == layer else f"{name} ({layer})"

    @property
    def num_classes(self) -> int:
        return int(self.weights["fc8"].shape[0])

    def groups(self, layer: str) -> int:
        """Groups of a convolution, from its blob: the input channels its
        bottom has over the channels each kernel reads."""
        index = CONV_LAYERS.index(layer)
        channels_in = 3 if index == 0 else self.weights[CONV_LAYERS[index - 1]].shape[0]
        per_group = self.weights[layer].shape[1]
        if per_group == 0 or channels_in % per_group:
            raise CaffeFormatError(
                f"{self.describe(layer)}: weight {shape_text(self.weights[layer])} reads "
                f"{per_group} channels per group, which does not divide the {channels_in} "
                "channels of its input")
        return channels_in // per_group

    def pool5_size(self) -> int:
        """Side of pool5's output, from fc6's input length over conv5's channels."""
        channels = self.weights["conv5"].shape[0]
        inputs = self.weights["fc6"].shape[1]
        side = int(round((inputs / channels) ** 0.5)) if channels else 0
        if side < 1 or side * side * channels != inputs:
            raise CaffeFormatError(
                f"{self.describe('fc6')}: weight {shape_text(self.weights['fc6'])} reads "
                f"{inputs} values, not {channels} channels (conv5's) times a square pool5")
        return side

    def check_shapes(self) -> None:
        """Each layer's weight and bias fit its neighbours (4-D kernels, bias
        per output, each layer reading what the previous one gives)."""
        previous_out = None
        for layer in LEARNED_LAYERS:
            weight, bias = self.weights[layer], self.biases[layer]
            rank = 4 if layer in CONV_LAYERS else 2
            if weight.ndim != rank:
                raise CaffeFormatError(f"{self.describe(layer)}: weight {shape_text(weight)}, "
                                       f"expected {rank} dimensions")
            if bias.shape != (weight.shape[0],):
                raise CaffeFormatError(f"{self.describe(layer)}: bias {shape_text(bias)} for "
                                       f"weight {shape_text(weight)} ({weight.shape[0]} outputs)")
            if layer in ("fc7", "fc8") and weight.shape[1] != previous_out:
                raise CaffeFormatError(f"{self.describe(layer)}: weight {shape_text(weight)} "
                                       f"reads {weight.shape[1]} values, the layer before "
                                       f"gives {previous_out}")
            previous_out = weight.shape[0]
        if self.weights["conv1"].shape[1:] != (3, 11, 11):
            raise CaffeFormatError(f"{self.describe('conv1')}: weight "
                                   f"{shape_text(self.weights['conv1'])}; AlexNet's conv1 reads "
                                   "3 colour channels with 11x11 kernels (96x3x11x11)")
        for layer in LEARNED_LAYERS:
            for kind, values in (("weight", self.weights[layer]), ("bias", self.biases[layer])):
                if not np.all(np.isfinite(values)):
                    raise CaffeFormatError(f"{self.describe(layer)}: {kind} "
                                           f"{shape_text(values)} holds NaN or infinity")


def shape_text(array: np.ndarray) -> str:
    """96x3x11x11: a blob's shape as Caffe prints it."""
    return "x".join(str(d) for d in array.shape) or "scalar"



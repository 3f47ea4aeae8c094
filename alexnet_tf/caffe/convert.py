"""AlexNet's Caffe blobs (`blobs.AlexNetBlobs`) -> the two-tower Keras model:
its `build_alexnet` config and its weights.

- Groups come from the blob shapes: conv2's (256, 48, 5, 5) over conv1's 96
  channels is two groups; output channels 0-127 (reading input channels
  0-47) become tower A's conv2_a, 128-255 (reading 48-95) tower B's conv2_b.
  conv1 and conv3 (one group) are split the same way by output channel, each
  tower reading all of its input.
- Kernels (out, in, kh, kw) become Keras' (kh, kw, in, out); conv1's input
  channels are reversed (Caffe's input is BGR, this model's RGB).
- fc6's (4096, 9216) reads pool5 flattened as (C, H, W); Keras flattens
  (H, W, C), so its columns are permuted. Output rows are split between the
  towers (0-2047 fc6_a, 2048-4095 fc6_b; fc7 likewise; fc8 500 and 500).
- Caffe's LRN is x / (k + (alpha / n) * sum of n squares) ** beta: the model's
  lrn_alpha is Caffe's alpha / n, lrn_k Caffe's k.
- Geometry: Caffe rounds pooling sizes up, Keras' 'valid' pooling down; the
  input size is chosen (or the net's declared one checked) so that every
  layer has the same size in both, else the import is refused.
"""

from __future__ import annotations

import math

import keras
import numpy as np

from alexnet_tf.caffe.blobs import (AlexNetBlobs, CONV_LAYERS, FC_LAYERS, GROUPED,
                                    shape_text)
from alexnet_tf.caffe.errors import CaffeFormatError
from alexnet_tf.model.alexnet import CONV_FILTERS

_POOLED = ("pool1", "pool2", "pool5")


def _float32(value: float) -> float:
    """A float32 constant as the shortest decimal that gives it back (Caffe's
    1e-4 is stored as 9.99999975e-05)."""
    return float(str(np.float32(value)))


def feature_sides(image_size: int, conv1_padding: int, round_up: bool) -> dict[str, int]:
    """Side of conv1 and each pooling output at `image_size`: rounding up
    as Caffe's pooling does (`round_up`), or down as Keras' 'valid' pooling."""
    conv1 = (image_size + 2 * conv1_padding - 11) // 4 + 1
    sides, side = {"conv1": conv1}, conv1
    for pool in _POOLED:  # conv2..conv5 keep the side (stride 1, 'same' padding)
        steps = (side - 3) / 2
        side = (math.ceil(steps) if round_up else math.floor(steps)) + 1
        sides[pool] = side
    return sides


def image_size_for(blobs: AlexNetBlobs) -> int:
    """The input side: the net's declared one, else the smallest that gives
    the pool5 side fc6 reads. Refuses a size where Caffe's and this model's
    layer sizes differ."""
    pool5, padding = blobs.pool5_size(), blobs.conv1_padding
    size = blobs.input_size
    if size is None:  # the smallest where both agree (227 for fc6's 6x6 pool5)
        size = next((s for s in range(max(11 - 2 * padding, 1), 32 * pool5 + 64)
                     if feature_sides(s, padding, blobs.ceil_pooling)
                     == feature_sides(s, padding, False)
                     and feature_sides(s, padding, False)["pool5"] == pool5), None)
        if size is None:
            raise CaffeFormatError(f"{blobs.describe('fc6')}: no input size gives its "
                                   f"{pool5}x{pool5} pool5 in both Caffe and this model")
    caffe = feature_sides(size, blobs.conv1_padding, blobs.ceil_pooling)
    if caffe["pool5"] != pool5:
        raise CaffeFormatError(
            f"{blobs.describe('fc6')}: weight {shape_text(blobs.weights['fc6'])} reads a "
            f"{pool5}x{pool5} pool5, but the net's {size}x{size} input gives "
            f"{caffe['pool5']}x{caffe['pool5']}")
    keras_sides = feature_sides(size, blobs.conv1_padding, round_up=False)
    for layer in _POOLED:
        if caffe[layer] != keras_sides[layer]:
            raise CaffeFormatError(
                f"{layer}: at a {size}x{size} input Caffe's pooling gives "
                f"{caffe[layer]}x{caffe[layer]}, this model's {keras_sides[layer]}x"
                f"{keras_sides[layer]}; the model cannot reproduce this net")
    return size


def model_kwargs(blobs: AlexNetBlobs, mean_rgb) -> dict:
    """`build_alexnet` kwargs of the model that computes what the Caffe net
    does: its class count, input size, towers, LRN constants and padding;
    mean subtraction only (no std division), as Caffe's net."""
    towers = blobs.groups("conv2")
    for layer in CONV_LAYERS:
        want = towers if layer in GROUPED else 1
        if blobs.groups(layer) != want or towers not in (1, 2):
            raise CaffeFormatError(
                f"{blobs.describe(layer)}: weight {shape_text(blobs.weights[layer])} means "
                f"{blobs.groups(layer)} group(s); AlexNet has {'/'.join(GROUPED)} in the "
                "same number of groups (2 towers, or 1) and conv1/conv3 reading every channel")
    lrn = blobs.lrn
    return {
        "num_classes": blobs.num_classes,
        "image_size": image_size_for(blobs),
        "conv1_padding": blobs.conv1_padding,
        "mean_rgb": [float(m) for m in mean_rgb],
        "std_rgb": None,
        "towers": towers,
        "width": blobs.weights["conv1"].shape[0] / CONV_FILTERS[0],
        "fc_units": [int(blobs.weights[layer].shape[0]) for layer in ("fc6", "fc7")],
        "lrn_size": int(lrn["local_size"]),
        "lrn_k": _float32(lrn["k"]),
        "lrn_alpha": _float32(lrn["alpha"]) / int(lrn["local_size"]),
        "lrn_beta": _float32(lrn["beta"]),
        "lrn_across_towers": True,  # Caffe's LRN runs over the whole blob
        "init": "caffe",  # N(0, 0.01), biases 0.1: Caffe's, for a re-initialized fc8
    }


def keras_kernels(blobs: AlexNetBlobs, layer: str) -> np.ndarray:
    """The whole layer's kernel in Keras' layout, both towers side by side
    in the last axis (output channel / unit, in Caffe's order)."""
    weight = blobs.weights[layer]
    if layer in CONV_LAYERS:
        kernel = weight.transpose(2, 3, 1, 0)  # (kh, kw, in / groups, out)
        return kernel[:, :, ::-1, :] if layer == "conv1" else kernel  # BGR -> RGB
    if layer == "fc6":
        side, channels = blobs.pool5_size(), blobs.weights["conv5"].shape[0]
        # (out, C, H, W) -> (H, W, C, out) -> rows in Keras' flatten order
        return weight.reshape(-1, channels, side, side).transpose(2, 3, 1, 0).reshape(
            side * side * channels, -1)
    return weight.T


def tower_layers(model: keras.Model, layer: str) -> list:
    """The per-tower layers of a paper layer: conv2_a, conv2_b (or conv2)."""
    names = [layer] if model.towers == 1 else [f"{layer}_a", f"{layer}_b"]
    return [model.get_layer(name) for name in names]


def set_weights(model: keras.Model, blobs: AlexNetBlobs) -> None:
    """Copies every learned layer into `model` (built from `model_kwargs`),
    refusing a blob whose shape does not fit, in Caffe's terms."""
    for layer in CONV_LAYERS + FC_LAYERS:
        kernel, bias = keras_kernels(blobs, layer), blobs.biases[layer]
        towers = tower_layers(model, layer)
        shapes = [tuple(int(d) for d in t.weights[0].shape) for t in towers]
        expected = _caffe_shape(layer, shapes)
        if expected != blobs.weights[layer].shape:
            raise CaffeFormatError(
                f"{blobs.describe(layer)}: weight {shape_text(blobs.weights[layer])}, but the "
                f"AlexNet its conv1 ({blobs.weights['conv1'].shape[0]} kernels) and fc8 "
                f"({blobs.num_classes} classes) imply has {'x'.join(map(str, expected))}")
        start = 0
        for tower, shape in zip(towers, shapes):
            stop = start + shape[-1]
            tower.set_weights([kernel[..., start:stop], bias[start:stop]])
            start = stop


def _caffe_shape(layer: str, keras_shapes: list[tuple]) -> tuple:
    """A layer's Caffe weight shape from its towers' Keras kernel shapes."""
    outputs = sum(shape[-1] for shape in keras_shapes)
    first = keras_shapes[0]
    if layer in CONV_LAYERS:
        return (outputs, first[2], first[0], first[1])
    return (outputs, first[0])

"""Caffe's forward pass of AlexNet in NumPy (float64), independent of
alexnet_tf: the yardstick the imported Keras model is held to.

Written from Caffe's layer definitions, in Caffe's terms: NCHW blobs (one
image, C x H x W), weights (out, in / group, kh, kw) and (out, in), BGR
input with the mean subtracted, grouped convolution, LRN across channels as
x / (k + alpha / n * sum of n squares) ** beta, max pooling whose output
size rounds up (Caffe's default) with the window clipped to the input,
inner products over the (C, H, W)-flattened blob, softmax.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

CONV = ("conv1", "conv2", "conv3", "conv4", "conv5")
FC = ("fc6", "fc7", "fc8")


@dataclasses.dataclass(frozen=True)
class NetSpec:
    """What a synthetic AlexNet computes with: the test's ground truth,
    written into the caffemodel by caffe_fixtures and used here."""

    width: float = 1.0          # kernels of conv1-conv4 relative to AlexNet's
    num_classes: int = 1000
    pool5: int = 6              # pool5's side: 6 at 227x227
    conv1_pad: int = 0
    groups: int = 2             # conv2, conv4, conv5 (conv1, conv3: 1)
    fc_units: tuple = (4096, 4096)  # fc6, fc7 (the importer reads them from the blobs)
    lrn: tuple = (5, 1e-4, 0.75, 1.0)  # Caffe's local_size, alpha, beta, k

    @property
    def input_size(self) -> int:
        """Smallest input giving `pool5` where each pooling's input side is odd:
        there Caffe's rounding up and Keras' rounding down agree (227 for 6)."""
        return next(s for s in range(11, 64 * self.pool5 + 64)
                    if feature_sides(s, self.conv1_pad)[-1] == self.pool5
                    and all(side % 2 for side in feature_sides(s, self.conv1_pad)[:-1]))

    def channels(self) -> list[int]:
        scaled = [max(2, round(f * self.width / 2) * 2) for f in (96, 256, 384, 384)]
        return scaled + [256]

    def conv_geometry(self, layer: str) -> tuple[int, int, int, int]:
        """(kernel, stride, pad, group) of a convolution."""
        return {"conv1": (11, 4, self.conv1_pad, 1), "conv2": (5, 1, 2, self.groups),
                "conv3": (3, 1, 1, 1), "conv4": (3, 1, 1, self.groups),
                "conv5": (3, 1, 1, self.groups)}[layer]

    def blob_shapes(self) -> dict[str, tuple]:
        """Caffe's weight shape per learned layer."""
        channels, shapes, previous = self.channels(), {}, 3
        for layer, out in zip(CONV, channels):
            kernel, _, _, group = self.conv_geometry(layer)
            shapes[layer] = (out, previous // group, kernel, kernel)
            previous = out
        fc6, fc7 = self.fc_units
        shapes["fc6"] = (fc6, channels[-1] * self.pool5 ** 2)
        shapes["fc7"] = (fc7, fc6)
        shapes["fc8"] = (self.num_classes, fc7)
        return shapes


def pooled_side(side: int, kernel: int = 3, stride: int = 2, pad: int = 0) -> int:
    """Caffe's PoolingLayer::Reshape: round up, then drop a last window that
    would start in the padding."""
    out = int(math.ceil((side + 2 * pad - kernel) / stride)) + 1
    if pad and (out - 1) * stride >= side + pad:
        out -= 1
    return out


def feature_sides(size: int, conv1_pad: int) -> list[int]:
    conv1 = (size + 2 * conv1_pad - 11) // 4 + 1
    sides = [conv1]
    for _ in range(3):
        sides.append(pooled_side(sides[-1]))
    return sides


def convolution(x, weight, bias, stride, pad, group):
    channels, kernel = x.shape[0], weight.shape[2]
    x = np.pad(x, ((0, 0), (pad, pad), (pad, pad)))
    windows = sliding_window_view(x, (kernel, kernel), axis=(1, 2))[:, ::stride, ::stride]
    out_h, out_w = windows.shape[1:3]
    per_in, per_out = channels // group, weight.shape[0] // group
    outputs = []
    for g in range(group):
        cols = windows[g * per_in:(g + 1) * per_in]  # (C/g, H', W', k, k)
        cols = cols.transpose(1, 2, 0, 3, 4).reshape(out_h * out_w, -1)
        w = weight[g * per_out:(g + 1) * per_out].reshape(per_out, -1)
        outputs.append((cols @ w.T).T.reshape(per_out, out_h, out_w))
    return np.concatenate(outputs) + bias[:, None, None]


def lrn(x, local_size, alpha, beta, k):
    half = (local_size - 1) // 2
    squares = np.pad(x ** 2, ((half, half), (0, 0), (0, 0)))
    window_sums = sum(squares[i:i + x.shape[0]] for i in range(local_size))
    return x * (k + alpha / local_size * window_sums) ** -beta


def max_pool(x, kernel=3, stride=2, pad=0):
    channels, height, width = x.shape
    out_h, out_w = pooled_side(height, kernel, stride, pad), pooled_side(width, kernel, stride, pad)
    out = np.empty((channels, out_h, out_w))
    for i in range(out_h):
        top = i * stride - pad
        rows = slice(max(top, 0), min(top + kernel, height))
        for j in range(out_w):
            left = j * stride - pad
            out[:, i, j] = x[:, rows, max(left, 0):min(left + kernel, width)].max(axis=(1, 2))
    return out


def forward(spec: NetSpec, weights: dict, biases: dict, data: np.ndarray) -> np.ndarray:
    """fc8's outputs (logits) for one mean-subtracted BGR blob [3, H, W]."""
    x = data.astype(np.float64)
    for layer in CONV:
        kernel, stride, pad, group = spec.conv_geometry(layer)
        x = np.maximum(convolution(x, weights[layer].astype(np.float64),
                                   biases[layer].astype(np.float64), stride, pad, group), 0)
        if layer in ("conv1", "conv2"):
            x = lrn(x, *spec.lrn)
        if layer in ("conv1", "conv2", "conv5"):
            x = max_pool(x)
    x = x.reshape(-1)  # Caffe's (C, H, W) order
    for layer in FC:
        x = weights[layer].astype(np.float64) @ x + biases[layer].astype(np.float64)
        if layer != "fc8":
            x = np.maximum(x, 0)
    return x


def softmax(logits: np.ndarray) -> np.ndarray:
    e = np.exp(logits - logits.max())
    return e / e.sum()


def caffe_input(crop_rgb: np.ndarray, mean_bgr: np.ndarray) -> np.ndarray:
    """An RGB 0..255 crop [S, S, 3] -> Caffe's blob [3, S, S]: BGR, minus the
    mean: per-channel values [3], or Caffe's mean image [3, 256, 256] cut at
    the centre, where Caffe cuts it for a centre crop."""
    bgr = crop_rgb[..., ::-1].transpose(2, 0, 1).astype(np.float64)
    mean_bgr = np.asarray(mean_bgr, np.float64)
    if mean_bgr.ndim == 1:
        return bgr - mean_bgr[:, None, None]
    size = crop_rgb.shape[0]
    top, left = (mean_bgr.shape[1] - size) // 2, (mean_bgr.shape[2] - size) // 2
    return bgr - mean_bgr[:, top:top + size, left:left + size]

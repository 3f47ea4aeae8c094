"""Caffe's mean image -> the per-channel `mean_rgb` the model subtracts.

Caffe's AlexNet subtracts a 256x256 mean image (BGR, 0..255) before taking
its crop; this model subtracts one value per channel. The import uses the
mean image's per-channel means, in RGB order, with no std division. The
docs/reproductions.md gives how far the two differ.
"""

from __future__ import annotations

import math
import os
from typing import Optional

import numpy as np

from alexnet_tf.caffe import netparameter, npy
from alexnet_tf.caffe.errors import CaffeFormatError

# The per-channel means (B, G, R) of Caffe's ILSVRC-2012 mean image
# (python/caffe/imagenet/ilsvrc_2012_mean.npy), as Caffe's examples publish them.
CAFFE_ILSVRC_MEAN_BGR = (104.00698793, 116.66876762, 122.67891434)


def read_mean_image(path: str) -> np.ndarray:
    """A Caffe mean as float64 [3, H, W] (or [3] for per-channel values), BGR,
    from a `.npy` (Caffe's python layout) or a `.binaryproto` (a BlobProto)."""
    if path.endswith(".binaryproto"):
        mean = netparameter.read_blob(path)  # legacy 1x3xHxW, or shape [3, H, W]
    else:
        mean = _read_npy(path)
    mean = np.asarray(mean, dtype=np.float64)
    if mean.ndim == 4 and mean.shape[0] == 1:
        mean = mean[0]
    if not (mean.shape == (3,) or (mean.ndim == 3 and mean.shape[0] == 3)):
        raise CaffeFormatError(f"{path}: mean of shape {mean.shape}; expected Caffe's "
                               "[3, H, W] BGR mean image (or 3 per-channel values)")
    if not np.all(np.isfinite(mean)) or mean.min() < 0 or mean.max() > 255:
        raise CaffeFormatError(f"{path}: mean values must be finite and within 0..255 "
                               f"(pixel scale), got {mean.min():.4g}..{mean.max():.4g}")
    return mean


def _read_npy(path: str) -> np.ndarray:
    """A numeric `.npy`, its header's shape checked against the file's size
    (exact integers) before numpy allocates anything for it."""
    netparameter.check_file(path)
    with open(path, "rb") as f:
        shape, dtype = npy.read_header(f, path)
        stored = os.fstat(f.fileno()).st_size - f.tell()
    if dtype.hasobject:
        raise CaffeFormatError(f"{path}: not a numeric .npy array (it holds Python objects)")
    needed = math.prod(shape) * dtype.itemsize
    if needed != stored:
        raise CaffeFormatError(f"{path}: its header's shape {shape} of {dtype} needs "
                               f"{needed:,} bytes, the file holds {stored:,}")
    try:
        return np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as e:
        raise CaffeFormatError(f"{path}: not a numeric .npy array ({e})") from None


def mean_rgb(path: Optional[str] = None,
             default_bgr: tuple = CAFFE_ILSVRC_MEAN_BGR) -> tuple[float, float, float]:
    """Per-channel mean in RGB order: of the mean file at `path`, else
    `default_bgr` (Caffe's published ILSVRC-2012 values unless the net's data
    layer gave its own mean_value)."""
    if path is None:
        bgr = np.asarray(default_bgr, np.float64)
    else:
        image = read_mean_image(path)
        bgr = image if image.ndim == 1 else image.mean(axis=(1, 2))
    return tuple(float(v) for v in bgr[::-1])

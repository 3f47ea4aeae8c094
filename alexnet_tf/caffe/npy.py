"""Reads caffe-tensorflow's widely shared conversion of bvlc_alexnet (a
`.npy` holding a pickled dict: layer -> [weights, biases], or -> {"weights",
"biases"}) into `blobs.AlexNetBlobs` (Caffe's layout).

Its layout: conv weights (kh, kw, in / groups, out) over BGR input (Caffe's
channel order is kept), fc weights (in, out) with fc6's rows already in
TensorFlow's (H, W, C) flatten order. The file has no LRN or geometry
settings: those are BVLC's (`blobs.BVLC_LRN`, no conv1 padding).

The pickle is read with an unpickler that builds numpy arrays, dicts and
lists only: a `.npy` from the internet cannot run code here.
"""

from __future__ import annotations

import math
import pickle

import numpy as np

from alexnet_tf.caffe import netparameter
from alexnet_tf.caffe.blobs import AlexNetBlobs, CONV_LAYERS, LEARNED_LAYERS, shape_text
from alexnet_tf.caffe.errors import CaffeFormatError

# The globals a pickled dict of numpy arrays needs (numpy 1 and 2 module
# names; _codecs.encode turns text back into bytes in protocol-2 pickles).
_ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
            ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
            ("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode")}


class _CheckedArray(np.ndarray):
    """What the pickle's arrays are rebuilt as: their state's shape is checked
    against the data it carries (exact integers) before numpy allocates."""

    def __setstate__(self, state):
        shape, dtype, data = state[-4], np.dtype(state[-3]), state[-1]
        if not all(isinstance(d, int) and d >= 0 for d in shape):
            raise pickle.UnpicklingError(f"an array of shape {shape}")
        needed = math.prod(shape) * (1 if dtype.hasobject else dtype.itemsize)
        if needed != len(data):  # bytes (or latin-1 text) of values, or a list of objects
            raise pickle.UnpicklingError(f"an array of shape {shape} and {dtype} needs "
                                         f"{needed:,} bytes or items, the pickle has {len(data):,}")
        super().__setstate__(state)


class _ArraysOnly(pickle.Unpickler):
    def find_class(self, module, name):
        if (module, name) not in _ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}: only numpy "
                                         "arrays, dicts and lists are read")
        return _CheckedArray if name == "ndarray" else super().find_class(module, name)


def read_header(f, path: str) -> tuple[tuple, np.dtype]:
    """(shape, dtype) from an open `.npy` file's header; the file is left at its data."""
    try:
        version = np.lib.format.read_magic(f)
        read = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                else np.lib.format.read_array_header_2_0)
        shape, _, dtype = read(f)
    except ValueError as e:
        raise CaffeFormatError(f"{path}: not a .npy file ({e})") from None
    return shape, dtype


def load_pickled_npy(path: str):
    """The object a `.npy` holds: an array, or the pickled object of an
    object array (a dict, for caffe-tensorflow), via `_ArraysOnly`."""
    netparameter.check_file(path)
    with open(path, "rb") as f:
        shape, dtype = read_header(f, path)
        if not dtype.hasobject:
            raise CaffeFormatError(f"{path}: a plain {dtype} array of shape {shape}; "
                                   "expected caffe-tensorflow's dict of layers")
        try:
            # latin1: files pickled by Python 2 (as caffe-tensorflow's were).
            value = _ArraysOnly(f, encoding="latin1").load()
        except MemoryError:  # Python allocates a length from the pickle before reading it
            raise CaffeFormatError(f"{path}: unreadable pickle (a length in it is past any "
                                   "memory: truncated, or not a pickle of arrays)") from None
        except (pickle.UnpicklingError, EOFError, ValueError, TypeError,
                AttributeError, IndexError) as e:
            raise CaffeFormatError(f"{path}: unreadable pickle ({e})") from None
    if isinstance(value, np.ndarray) and value.dtype == object and value.size == 1:
        value = value.item()
    return value


def _pair(path: str, layer: str, entry):
    """(weights, biases) from [w, b], (w, b) or {"weights": w, "biases": b}."""
    if isinstance(entry, dict):
        entry = [entry.get("weights"), entry.get("biases")]
    if not isinstance(entry, (list, tuple)) or len(entry) != 2 or not all(
            isinstance(a, np.ndarray) for a in entry):
        raise CaffeFormatError(f"{path}: layer {layer}: expected [weights, biases] arrays")
    return [np.asarray(a, dtype=np.float32) for a in entry]


def read_npy(path: str) -> AlexNetBlobs:
    """caffe-tensorflow's AlexNet dict -> Caffe's layout."""
    layers = load_pickled_npy(path)
    if not isinstance(layers, dict):
        raise CaffeFormatError(f"{path}: holds a {type(layers).__name__}, expected "
                               "caffe-tensorflow's dict of layers (conv1 ... fc8)")
    missing = [name for name in LEARNED_LAYERS if name not in layers]
    if missing:
        raise CaffeFormatError(f"{path}: not AlexNet: no {', '.join(missing)} among its "
                               f"layers {sorted(layers)}")
    weights, biases = {}, {}
    for name in LEARNED_LAYERS:
        weight, biases[name] = _pair(path, name, layers[name])
        rank = 4 if name in CONV_LAYERS else 2
        if weight.ndim != rank:
            raise CaffeFormatError(f"{path}: {name}: weights {shape_text(weight)}, expected "
                                   f"{rank} dimensions")
        weights[name] = (weight.transpose(3, 2, 0, 1) if name in CONV_LAYERS
                         else weight.T)  # -> (out, in, kh, kw) / (out, in)
    blobs = AlexNetBlobs(weights=weights, biases=biases, names={n: n for n in LEARNED_LAYERS})
    blobs.check_shapes()
    side = blobs.pool5_size()
    channels = weights["conv5"].shape[0]
    # fc6's columns (H, W, C) -> Caffe's (C, H, W)
    by_position = weights["fc6"].reshape(-1, side, side, channels)
    weights["fc6"] = np.ascontiguousarray(by_position.transpose(0, 3, 1, 2)).reshape(
        -1, side * side * channels)
    return blobs

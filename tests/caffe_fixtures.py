"""Writers of synthetic Caffe AlexNets for the importer's tests.

The bytes are encoded here by hand from Caffe's caffe.proto field numbers
(the importer reads them with protobuf's runtime: two independent routes to
the same wire format). Both layer formats: the new `layer` messages (field
100, string types, blob dims in `shape`) and the old V1 `layers` (field 2,
enum types, legacy num/channels/height/width dims). Also caffe-tensorflow's
`.npy` (pickled dict layer -> [weights, biases]).

Weights are random but scaled so the logits spread (a peaked softmax: a
near-uniform one would make a 1e-5 check on probabilities weak).
"""

from __future__ import annotations

import contextlib
import shutil
import struct

import numpy as np

from caffe_reference import CONV, FC, NetSpec

# The narrow net of the tests that need no full size: AlexNet's layers and
# Caffe's geometry (no padding before conv1, pooling that rounds up), the
# tiny configuration's width and fc6/fc7 (tests/tiny_data.py: TINY_MODEL,
# written out here so that this module, which the benchmarks import, loads
# no TensorFlow), a 2x2 pool5 at 99x99 input, 10 classes. The importer reads
# every width and fc size from the file: the same code as for bvlc_alexnet.
MINI = NetSpec(width=0.0625, fc_units=(768, 768), num_classes=10, pool5=2)


@contextlib.contextmanager
def module_folder(tmp_path_factory, name: str):
    """A fixture's folder under the session's base, deleted when the fixture
    ends (a module's big files must not wait for the session's end)."""
    folder = tmp_path_factory.mktemp(name)
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)

# --- protobuf wire format ---------------------------------------------------


def _varint(value: int) -> bytes:
    value &= (1 << 64) - 1  # negatives as two's complement, as protobuf does
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def uint(field: int, value: int) -> bytes:
    return _varint(field << 3) + _varint(value)


def f32(field: int, value: float) -> bytes:
    return _varint(field << 3 | 5) + struct.pack("<f", value)


def message(field: int, payload: bytes) -> bytes:
    return _varint(field << 3 | 2) + _varint(len(payload)) + payload


def string(field: int, text: str) -> bytes:
    return message(field, text.encode("utf-8"))


def packed_varints(field: int, values) -> bytes:
    return message(field, b"".join(_varint(int(v)) for v in values))


def _message_pieces(field: int, pieces: list) -> list:
    """message() of a payload given in pieces (bytes, or views of arrays),
    left unjoined: a full-size fc6 blob is 151 MB, each join a copy."""
    return [_varint(field << 3 | 2) + _varint(sum(len(p) for p in pieces)), *pieces]


def _blob_pieces(array: np.ndarray, legacy: bool) -> list:
    if legacy:
        dims = (1,) * (4 - array.ndim) + array.shape
        head = b"".join(uint(f, d) for f, d in zip((1, 2, 3, 4), dims))
    else:
        head = message(7, packed_varints(1, array.shape))
    return [head, *_message_pieces(5, [memoryview(np.ascontiguousarray(array, "<f4")).cast("B")])]


def blob(array: np.ndarray, legacy: bool) -> bytes:
    """BlobProto: dims in `shape` (7), or legacy num/channels/height/width
    (1-4, left-padded with 1s to 4-D); values packed in `data` (5)."""
    return b"".join(_blob_pieces(array, legacy))


# --- the net ------------------------------------------------------------------

# V1LayerParameter.LayerType values (caffe.proto).
V1_ENUM = {"Data": 5, "Convolution": 4, "ReLU": 18, "LRN": 15, "Pooling": 17,
           "InnerProduct": 14, "Dropout": 6, "Softmax": 20}


def alexnet_weights(spec: NetSpec, seed: int = 0, draws=np.float64) -> tuple[dict, dict]:
    """Random Caffe-layout weights and biases for `spec`: He-scaled kernels
    (on 0..255 input the conv1 maps reach ~100, where Caffe's LRN acts),
    biases spread around +0.1 (so ReLUs stay alive and every bias matters),
    fc8 scaled so the logits spread by ~4-5 (std): on photos the top class
    then takes 0.3-0.95 of the probability (measured), neither uniform nor
    one-hot. (Over fewer fc7 units the spread shrinks about as the square
    root of their number: measured 2 at 768 units with 4096's gain.)
    `draws=np.float32` draws the kernels in float32: 4x faster at full size,
    other values (float64: those the benchmarks' figures were measured with)."""
    rng = np.random.default_rng(seed)
    fc8_gain = (0.025 if spec.num_classes <= 10 else 0.05) * np.sqrt(4096 / spec.fc_units[1])
    weights, biases = {}, {}
    for layer, shape in spec.blob_shapes().items():
        fan_in = int(np.prod(shape[1:]))
        gain = fc8_gain if layer == "fc8" else 1.0
        if draws == np.float64:
            weights[layer] = (rng.standard_normal(shape) * gain * np.sqrt(2.0 / fan_in)).astype(
                np.float32)
        else:
            weights[layer] = rng.standard_normal(shape, dtype=np.float32)
            weights[layer] *= np.float32(gain * np.sqrt(2.0 / fan_in))
        biases[layer] = (0.1 + 0.1 * rng.standard_normal(shape[0])).astype(np.float32)
    return weights, biases


def _layers(spec: NetSpec, weights: dict, biases: dict, input_size: int):
    """(name, type, bottom, top, blobs, params) in Caffe's order: params are
    (field number in LayerParameter, field number in V1LayerParameter, payload)."""
    local_size, alpha, beta, k = spec.lrn
    yield "data", "Data", None, "data", (), [(100, 36, uint(3, input_size))]  # crop_size

    def conv(layer, bottom):
        kernel, stride, pad, group = spec.conv_geometry(layer)
        payload = (uint(1, weights[layer].shape[0]) + uint(3, pad) + uint(4, kernel)
                   + uint(5, group) + uint(6, stride))
        return (layer, "Convolution", bottom, layer, (weights[layer], biases[layer]),
                [(106, 10, payload)])

    def relu(layer):
        return f"relu_{layer}", "ReLU", layer, layer, (), []

    lrn_payload = uint(1, local_size) + f32(2, alpha) + f32(3, beta) + f32(5, k)
    pool_payload = uint(1, 0) + uint(2, 3) + uint(3, 2)
    bottom = "data"
    for index, layer in enumerate(CONV, 1):
        yield conv(layer, bottom)
        yield relu(layer)
        bottom = layer
        if layer in ("conv1", "conv2"):
            yield f"norm{index}", "LRN", bottom, f"norm{index}", (), [(118, 18, lrn_payload)]
            bottom = f"norm{index}"
        if layer in ("conv1", "conv2", "conv5"):
            yield f"pool{index}", "Pooling", bottom, f"pool{index}", (), [(121, 19, pool_payload)]
            bottom = f"pool{index}"
    for layer in FC:
        payload = uint(1, weights[layer].shape[0])
        yield layer, "InnerProduct", bottom, layer, (weights[layer], biases[layer]), [
            (117, 17, payload)]
        bottom = layer
        if layer != "fc8":
            yield relu(layer)
            yield f"drop_{layer}", "Dropout", layer, layer, (), [(108, 12, f32(1, 0.5))]
    yield "prob", "Softmax", "fc8", "prob", (), []


def _layer_pieces(spec: NetSpec, weights: dict, biases: dict, v1: bool, input_size: int):
    """(layer name, its NetParameter field in pieces: `layer` 100 or V1 `layers` 2)."""
    for layer, kind, bottom, top, blobs, params in _layers(spec, weights, biases, input_size):
        if v1:
            if kind == "Data":
                continue  # the input is declared by the net (caffemodel_bytes)
            head = string(4, layer) + uint(5, V1_ENUM[kind])
            head += (string(2, bottom) if bottom else b"") + string(3, top)
            blob_field, field = 6, 2
        else:
            head = string(1, layer) + string(2, kind)
            head += (string(3, bottom) if bottom else b"") + string(4, top)
            head += message(6, f32(3, 1.0))  # a ParamSpec (lr_mult): unread, skipped
            blob_field, field = 7, 100
        blob_pieces = [piece for b in blobs
                       for piece in _message_pieces(blob_field, _blob_pieces(b, legacy=v1))]
        tail = b"".join(message(v1_field if v1 else new_field, payload)
                        for new_field, v1_field, payload in params)
        yield layer, _message_pieces(field, [head, *blob_pieces, tail])


def layer_messages(spec: NetSpec, weights: dict, biases: dict, v1: bool = False,
                   input_size: int | None = None) -> list[tuple[str, bytes]]:
    """(layer name, its NetParameter field: `layer` 100 or V1 `layers` 2) in order."""
    return [(layer, b"".join(pieces)) for layer, pieces in _layer_pieces(
        spec, weights, biases, v1, input_size or spec.input_size)]


def net_header(spec: NetSpec, v1: bool = False, name: str = "AlexNet",
               input_size: int | None = None) -> bytes:
    """The net's name; for V1, a deploy-style input declaration (input / input_dim)."""
    size = input_size or spec.input_size
    header = string(1, name)
    if v1:
        header += string(3, "data") + packed_varints(4, [1, 3, size, size])
    return header


def caffemodel_bytes(spec: NetSpec, weights: dict, biases: dict, v1: bool = False,
                     input_size: int | None = None) -> bytes:
    """A NetParameter: new `layer` messages, or V1 `layers`."""
    messages = layer_messages(spec, weights, biases, v1, input_size)
    return net_header(spec, v1, input_size=input_size) + b"".join(m for _, m in messages)


def write_caffemodel(path, spec: NetSpec, weights: dict, biases: dict, v1: bool = False) -> str:
    """caffemodel_bytes() written piece by piece (no copy of the blobs)."""
    with open(path, "wb") as f:
        f.write(net_header(spec, v1))
        for _, pieces in _layer_pieces(spec, weights, biases, v1, spec.input_size):
            for piece in pieces:
                f.write(piece)
    return str(path)


def write_caffe_tensorflow_npy(path, spec: NetSpec, weights: dict, biases: dict,
                               as_dicts: bool = False) -> str:
    """caffe-tensorflow's layout: conv (kh, kw, in/groups, out), fc (in, out),
    fc6's rows in (H, W, C) order; conv1 stays BGR."""
    layers = {}
    side, channels = spec.pool5, weights["conv5"].shape[0]
    for layer in CONV + FC:
        w = weights[layer]
        if layer in CONV:
            w = w.transpose(2, 3, 1, 0)
        elif layer == "fc6":
            w = w.reshape(-1, channels, side, side).transpose(2, 3, 1, 0).reshape(
                side * side * channels, -1)
        else:
            w = w.T
        pair = [np.ascontiguousarray(w), biases[layer]]
        layers[layer] = {"weights": pair[0], "biases": pair[1]} if as_dicts else pair
    np.save(path, layers, allow_pickle=True)
    return str(path)


# --- input images -------------------------------------------------------------


def centre_crops(paths, size: int) -> np.ndarray:
    """Photos as Caffe's classifier sees them: warped to 256x256, the centre
    size x size cut out; float32 RGB 0..255 [N, size, size, 3]."""
    from PIL import Image
    crops = []
    for path in paths:
        with Image.open(path) as image:
            pixels = np.asarray(image.convert("RGB").resize((256, 256), Image.BILINEAR))
        top = (256 - size) // 2
        crops.append(pixels[top:top + size, top:top + size].astype(np.float32))
    return np.stack(crops)


def generated_crops(size: int, count: int = 3, seed: int = 0) -> np.ndarray:
    """Photo-like stand-ins when ../shared is absent: smooth colour ramps, a
    bright square and pixel noise, float32 RGB 0..255."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:size, 0:size] / size
    images = []
    for _ in range(count):
        a, b, c = rng.uniform(-1, 1, 3)
        base = np.stack([128 + 100 * np.sin(3 * a * x + 2 * b * y + c * k) for k in (1, 2, 3)],
                        axis=-1)
        top, left = rng.integers(0, size // 2, 2)
        base[top:top + size // 3, left:left + size // 3] += rng.uniform(-80, 80, 3)
        images.append(np.clip(base + rng.normal(0, 12, base.shape), 0, 255))
    return np.stack(images).astype(np.float32)

"""Reads Caffe's binary protobuf files with the installed protobuf runtime (no
Caffe): a `.caffemodel` (NetParameter) and a `.binaryproto` mean (BlobProto).

The message classes are built at run time (`proto.py`: only the fields read
here, under caffe.proto's field numbers). Both layer formats:

- `layer` (NetParameter field 100, LayerParameter): string types, e.g.
  "Convolution" (Caffe since 2015);
- `layers` (field 2, V1LayerParameter): enum types, e.g. CONVOLUTION = 4.

Blob dimensions come from `shape` or from the legacy num/channels/height/
width. A blob's `data` (packed float) is declared `bytes`: its payload is then
the little-endian float32 array itself, which numpy reads without a copy.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Optional

import numpy as np
from google.protobuf import message, unknown_fields

from alexnet_tf.caffe import proto as caffe_proto, wire
from alexnet_tf.caffe.errors import CaffeFormatError

_PARAMS = ("convolution_param", "inner_product_param", "lrn_param", "pooling_param",
           "relu_param")
# Protobuf's limit for one message; AlexNet's weights are 244 MB.
MAX_FILE_BYTES = (1 << 31) - 1


@dataclasses.dataclass(frozen=True)
class Layer:
    """One layer as read: `params` holds the parameter messages it has
    (e.g. "convolution_param"), `blobs` its weights in Caffe's shapes."""

    name: str
    type: str
    bottoms: tuple[str, ...]
    tops: tuple[str, ...]
    blobs: tuple[np.ndarray, ...]
    params: dict
    crop_size: int = 0          # transform_param of a data layer
    input_scale: float = 1.0
    mean_bgr: tuple[float, ...] = ()


@dataclasses.dataclass(frozen=True)
class Net:
    name: str
    layer_format: str             # "layer" (new) or "layers (V1)"
    layers: tuple[Layer, ...]
    input_size: Optional[int]     # the declared input's height, if the net says


_CLASSES = caffe_proto.build_classes()


def _parse(kind: str, data: bytes, path: str):
    proto = _CLASSES[kind]()
    try:
        proto.ParseFromString(data)
    except message.DecodeError as e:
        cut = wire.truncated_layer(data) if kind == "NetParameter" else ""
        if cut:
            raise CaffeFormatError(f"{path}: truncated: {cut}") from None
        hint = " (it looks like text: a .prototxt?)" if _looks_like_text(data) else ""
        raise CaffeFormatError(f"{path}: not a binary Caffe {kind}, or truncated{hint}: "
                               f"{e}") from None
    return proto


def _looks_like_text(data: bytes) -> bool:
    head = data[:256]
    return bool(head) and all(32 <= b < 127 or b in b"\t\r\n" for b in head)


def read_file(path: str) -> bytes:
    if os.path.isdir(path):
        raise CaffeFormatError(f"{path} is a folder, not a Caffe file")
    size = os.path.getsize(path)
    if size > MAX_FILE_BYTES:
        raise CaffeFormatError(f"{path}: {size:,} bytes, more than protobuf reads in one "
                               "message (2 GiB); AlexNet's weights are about 244 MB")
    with open(path, "rb") as f:
        return f.read()


def blob_array(blob, where: str) -> np.ndarray:
    """A BlobProto's values (float32) in its shape. A legacy blob keeps its
    4-D num/channels/height/width shape (Caffe pads fewer axes with leading
    1s: a bias is 1x1x1xN); `legacy_fit` matches it to the shape wanted."""
    if blob.HasField("shape"):
        shape = tuple(int(d) for d in blob.shape.dim)
    else:
        shape = tuple(int(d) for d in (blob.num, blob.channels, blob.height, blob.width))
    if any(d < 0 for d in shape):
        raise CaffeFormatError(f"{where}: negative dimension in blob shape {shape}")
    values = _blob_values(blob, where)
    count = int(np.prod(shape, dtype=np.int64))
    if values.size != count:
        raise CaffeFormatError(f"{where}: blob of shape {shape} needs {count} values, the "
                               f"file holds {values.size} (truncated, or not a Caffe blob)")
    return values.reshape(shape)


def _blob_values(blob, where: str) -> np.ndarray:
    for field, dtype in (("data", "<f4"), ("double_data", "<f8")):
        chunks = getattr(blob, field)
        if chunks:
            payload = b"".join(chunks)  # one chunk (Caffe's case): no copy
            if len(payload) % np.dtype(dtype).itemsize:
                raise CaffeFormatError(f"{where}: {field} holds {len(payload)} bytes, not a "
                                       f"whole number of values (truncated?)")
            return np.frombuffer(payload, dtype=dtype).astype(np.float32, copy=False)
    return _unpacked_floats(blob)


def legacy_fit(array: np.ndarray, wanted: tuple) -> np.ndarray:
    """`array` reshaped to `wanted` when it is `wanted` written the legacy way
    (left-padded with 1s to 4-D); otherwise unchanged."""
    if array.ndim == 4 and len(wanted) < 4 and array.shape == (1,) * (4 - len(wanted)) + wanted:
        return array.reshape(wanted)
    return array


def _unpacked_floats(blob) -> np.ndarray:
    """`data` written one fixed32 per value (legal protobuf, not Caffe's way):
    those land among the unknown fields of the bytes-typed declaration."""
    raw = [u.data for u in unknown_fields.UnknownFieldSet(blob)
           if u.field_number == 5 and u.wire_type == 5]
    return np.array(raw, dtype=np.uint32).view(np.float32)


def _layer(proto, layer_type: str, where: str) -> Layer:
    name = proto.name or where
    blobs = tuple(blob_array(b, f"{name}: blob {i}") for i, b in enumerate(proto.blobs))
    params = {p: getattr(proto, p) for p in _PARAMS if proto.HasField(p)}
    transform = proto.transform_param if proto.HasField("transform_param") else None
    return Layer(name=name, type=layer_type, bottoms=tuple(proto.bottom),
                 tops=tuple(proto.top), blobs=blobs, params=params,
                 crop_size=int(transform.crop_size) if transform else 0,
                 input_scale=float(transform.scale) if transform else 1.0,
                 mean_bgr=tuple(float(v) for v in transform.mean_value) if transform else ())


def read_net(path: str) -> Net:
    """The layers of a `.caffemodel` (either format), blobs as float32 arrays."""
    proto = _parse("NetParameter", read_file(path), path)
    if proto.layer and proto.layers:
        raise CaffeFormatError(f"{path}: holds both new-style `layer` and V1 `layers` "
                               "messages; Caffe reads one or the other")
    layers = []
    if proto.layer:
        layer_format = "layer"
        for i, layer in enumerate(proto.layer):
            layers.append(_layer(layer, layer.type, f"layer {i}"))
    else:
        layer_format = "layers (V1)"
        for i, layer in enumerate(proto.layers):
            if layer.v0_layer:
                raise CaffeFormatError(
                    f"{path}: layer {i} is in Caffe's V0 format (before 2014); convert the "
                    "file with Caffe's upgrade_net_proto_binary first")
            kind = caffe_proto.V1_TYPES.get(layer.type, f"V1 type {layer.type}")
            layers.append(_layer(layer, kind, f"layer {i}"))
    if not layers:
        raise CaffeFormatError(f"{path}: no layers: not a Caffe NetParameter (.caffemodel)")
    size = _declared_input_size(proto, proto.layer, path)
    return Net(proto.name, layer_format, tuple(layers), size)


def _declared_input_size(proto, new_layers, path: str) -> Optional[int]:
    """The input side the net declares: an Input layer's shape, the net's
    input_shape / input_dim (N, C, H, W), or a data layer's crop_size."""
    declared = [list(l.input_param.shape[0].dim) for l in new_layers
                if l.HasField("input_param") and l.input_param.shape]
    declared += [list(shape.dim) for shape in proto.input_shape[:1]]
    declared += [list(proto.input_dim[:4])] if len(proto.input_dim) >= 4 else []
    for dims in declared[:1]:
        if len(dims) != 4 or dims[2] != dims[3]:
            raise CaffeFormatError(f"{path}: the net's input is {'x'.join(map(str, dims))}; "
                                   "AlexNet reads square N x 3 x H x W blobs")
        return int(dims[2])
    all_layers = list(new_layers) + list(proto.layers)
    crops = {int(l.transform_param.crop_size) for l in all_layers
             if l.HasField("transform_param") and l.transform_param.crop_size}
    return crops.pop() if len(crops) == 1 else None


def read_blob(path: str) -> np.ndarray:
    """A `.binaryproto` file (one BlobProto, e.g. Caffe's mean image)."""
    data = read_file(path)
    return blob_array(_parse("BlobProto", data, path), path)

"""Caffe's binary files parsed by the protobuf runtime TensorFlow installs (no
Caffe, no generated module): a `.caffemodel` (NetParameter) and a
`.binaryproto` mean (BlobProto), in both layer formats: `layer` (field 100,
LayerParameter, string types) and V1 `layers` (field 2, enum types).

`_SCHEMA` declares at import time the fields read here, under caffe.proto's
names and numbers; other fields are ignored. Declared types differ from
caffe.proto's on purpose in three places: enums are int32 (the same varint);
legacy num/channels/height/width are int64, so a value past int32 is seen as
written, not wrapped; a blob's packed `data` / `double_data` are `bytes`,
whose payload is the little-endian array numpy takes as it is (values written
one tag each, legal but not Caffe's way, are read from the unknown fields).
Every size from the file is checked with exact integers before numpy sees it.
"""

from __future__ import annotations

import dataclasses
import math
import os
from typing import Optional

import numpy as np
from google.protobuf import message, unknown_fields

from alexnet_tf import proto_messages
from alexnet_tf.caffe.errors import CaffeFormatError

# "[repeated] type name number [default]" per field, as in caffe.proto.
_SCHEMA = {
    "BlobShape": ["repeated int64 dim 1"],
    "BlobProto": ["int64 num 1", "int64 channels 2", "int64 height 3", "int64 width 4",
                  "repeated bytes data 5", "BlobShape shape 7", "repeated bytes double_data 8"],
    "ConvolutionParameter": [
        "repeated uint32 pad 3", "repeated uint32 kernel_size 4", "uint32 group 5 1",
        "repeated uint32 stride 6", "uint32 pad_h 9", "uint32 pad_w 10", "uint32 kernel_h 11",
        "uint32 kernel_w 12", "uint32 stride_h 13", "uint32 stride_w 14",
        "repeated uint32 dilation 18"],
    "InnerProductParameter": ["int32 axis 5 1", "bool transpose 6 false"],
    "LRNParameter": ["uint32 local_size 1 5", "float alpha 2 1", "float beta 3 0.75",
                     "int32 norm_region 4 0", "float k 5 1"],
    "PoolingParameter": [
        "int32 pool 1 0", "uint32 kernel_size 2", "uint32 stride 3 1", "uint32 pad 4 0",
        "uint32 kernel_h 5", "uint32 kernel_w 6", "uint32 stride_h 7", "uint32 stride_w 8",
        "uint32 pad_h 9", "uint32 pad_w 10", "bool global_pooling 12 false",
        "int32 round_mode 13 0"],
    "InputParameter": ["repeated BlobShape shape 1"],
    "ReLUParameter": ["float negative_slope 1 0"],
    "TransformationParameter": ["float scale 1 1", "uint32 crop_size 3 0",
                                "repeated float mean_value 5"],
    "LayerParameter": [
        "string name 1", "string type 2", "repeated string bottom 3", "repeated string top 4",
        "repeated BlobProto blobs 7", "TransformationParameter transform_param 100",
        "ConvolutionParameter convolution_param 106",
        "InnerProductParameter inner_product_param 117", "LRNParameter lrn_param 118",
        "PoolingParameter pooling_param 121", "ReLUParameter relu_param 123",
        "InputParameter input_param 143"],
    "V1LayerParameter": [
        "bytes v0_layer 1", "repeated string bottom 2", "repeated string top 3",
        "string name 4", "int32 type 5 0", "repeated BlobProto blobs 6",
        "ConvolutionParameter convolution_param 10",
        "InnerProductParameter inner_product_param 17", "LRNParameter lrn_param 18",
        "PoolingParameter pooling_param 19", "ReLUParameter relu_param 30",
        "TransformationParameter transform_param 36"],
    "NetParameter": ["string name 1", "repeated V1LayerParameter layers 2",
                     "repeated int64 input_dim 4", "repeated BlobShape input_shape 8",
                     "repeated LayerParameter layer 100"],
}

# V1LayerParameter.LayerType -> the new format's type string (Caffe's upgrade table).
V1_TYPES = {
    0: "None", 1: "Accuracy", 2: "BNLL", 3: "Concat", 4: "Convolution", 5: "Data",
    6: "Dropout", 7: "EuclideanLoss", 8: "Flatten", 9: "HDF5Data", 10: "HDF5Output",
    11: "Im2col", 12: "ImageData", 13: "InfogainLoss", 14: "InnerProduct", 15: "LRN",
    16: "MultinomialLogisticLoss", 17: "Pooling", 18: "ReLU", 19: "Sigmoid", 20: "Softmax",
    21: "SoftmaxWithLoss", 22: "Split", 23: "TanH", 24: "WindowData", 25: "Eltwise",
    26: "Power", 27: "SigmoidCrossEntropyLoss", 28: "HingeLoss", 29: "MemoryData",
    30: "ArgMax", 31: "Threshold", 32: "DummyData", 33: "Slice", 34: "MVN", 35: "AbsVal",
    36: "Silence", 37: "ContrastiveLoss", 38: "Exp", 39: "Deconvolution",
}
_PARAMS = ("convolution_param", "inner_product_param", "lrn_param", "pooling_param",
           "relu_param")
# Parsing holds the file's bytes twice at its peak (protobuf's copy, then the
# arrays): bounded by refusing files far above AlexNet's 244 MB.
MAX_FILE_BYTES = 1 << 30
# Caffe's own limits on a blob (blob.hpp kMaxBlobAxes; Blob::Reshape refuses
# a count past INT_MAX).
MAX_BLOB_AXES = 32
MAX_BLOB_VALUES = (1 << 31) - 1


_CLASSES = proto_messages.message_classes("alexnet_tf_caffe.proto", "caffe", _SCHEMA)


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
    input_scale: float = 1.0        # transform_param of a data layer
    mean_bgr: tuple[float, ...] = ()


@dataclasses.dataclass(frozen=True)
class Net:
    name: str
    layer_format: str             # "layer" (new) or "layers (V1)"
    layers: tuple[Layer, ...]
    input_size: Optional[int]     # the declared input's height, if the net says


def check_file(path: str, size: Optional[int] = None) -> None:
    """A file, of a size this importer reads (checked before reading it)."""
    if os.path.isdir(path):
        raise CaffeFormatError(f"{path} is a folder, not a Caffe file")
    size = os.path.getsize(path) if size is None else size
    if size > MAX_FILE_BYTES:
        raise CaffeFormatError(f"{path}: over {MAX_FILE_BYTES:,} bytes, the most this importer "
                               "reads from a Caffe file (AlexNet's weights are 244 MB)")


def read_bounded(path: str) -> bytes:
    """The whole file, refused past MAX_FILE_BYTES (a device or a growing file too)."""
    check_file(path)
    with open(path, "rb") as f:
        data = f.read(MAX_FILE_BYTES + 1)
    check_file(path, len(data))
    return data


def _read(kind: str, path: str):
    """The file parsed as a `kind` message; one line on a file that is not one."""
    data = read_bounded(path)
    proto = _CLASSES[kind]()
    try:
        proto.ParseFromString(data)
    except message.DecodeError as e:
        where = _where_it_breaks(proto) if kind == "NetParameter" else ""
        text = all(32 <= b < 127 or b in b"\t\r\n" for b in data[:256])
        raise CaffeFormatError(f"{path}: " + (where or (
            f"not a binary Caffe {kind}, or truncated"
            + (" (it looks like text: a .prototxt?)" if text else "") + f": {e}"))) from None
    return proto


def _where_it_breaks(net) -> str:
    """Which layer a NetParameter breaks off in, from what protobuf parsed
    before the error (the upb runtime keeps it; "" if nothing was kept)."""
    layers = list(net.layer) or list(net.layers)
    if not layers:
        return ""
    *whole, broken = layers
    return (f"truncated or corrupt: the file ends inside layer {len(whole)}"
            + (f" ({broken.name!r})" if broken.name else "")
            + (f", after {whole[-1].name!r}" if whole else ""))


def blob_array(blob, where: str) -> np.ndarray:
    """A BlobProto's values (float32) in its shape, each size checked first.
    A legacy blob keeps its 4-D num/channels/height/width shape (Caffe pads
    fewer axes with leading 1s: a bias is 1x1x1xN); see `legacy_fit`."""
    dims = (list(blob.shape.dim) if blob.HasField("shape")
            else [blob.num, blob.channels, blob.height, blob.width])
    text = "x".join(map(str, dims)) or "scalar"
    if any(d < 0 for d in dims):
        raise CaffeFormatError(f"{where}: blob shape {text} has a negative dimension")
    count = math.prod(dims)
    if len(dims) > MAX_BLOB_AXES or math.prod(d or 1 for d in dims) > MAX_BLOB_VALUES:
        raise CaffeFormatError(f"{where}: blob shape {text} ({count:,} values) is beyond "
                               f"Caffe's limits ({MAX_BLOB_AXES} axes, "
                               f"{MAX_BLOB_VALUES:,} values)")
    values = _blob_values(blob, where)
    if values.size != count:
        raise CaffeFormatError(f"{where}: blob shape {text} needs {count:,} values, the file "
                               f"holds {values.size:,} (truncated, or not a Caffe blob)")
    return values.reshape(dims)


def _blob_values(blob, where: str) -> np.ndarray:
    for field, dtype in (("data", np.dtype("<f4")), ("double_data", np.dtype("<f8"))):
        payload = b"".join(getattr(blob, field))  # one chunk (Caffe's case): no copy
        if len(payload) % dtype.itemsize:
            raise CaffeFormatError(f"{where}: {field} holds {len(payload):,} bytes, not a "
                                   f"whole number of {dtype.itemsize}-byte values")
        if payload:
            return np.frombuffer(payload, dtype).astype(np.float32, copy=False)
    unpacked = [u.data for u in unknown_fields.UnknownFieldSet(blob)
                if u.field_number == 5 and u.wire_type == 5]  # fixed32 floats, one tag each
    return np.array(unpacked, np.uint32).view(np.float32)


def legacy_fit(array: np.ndarray, wanted: tuple) -> np.ndarray:
    """`array` reshaped to `wanted` when it is `wanted` written the legacy way
    (left-padded with 1s to 4-D); otherwise unchanged."""
    if array.ndim == 4 and len(wanted) < 4 and array.shape == (1,) * (4 - len(wanted)) + wanted:
        return array.reshape(wanted)
    return array


def _layer(proto, layer_type: str, where: str) -> Layer:
    name = proto.name or where
    blobs = tuple(blob_array(b, f"{where} ({name!r}): blob {i}")
                  for i, b in enumerate(proto.blobs))
    transform = proto.transform_param
    return Layer(name=name, type=layer_type, bottoms=tuple(proto.bottom),
                 tops=tuple(proto.top), blobs=blobs,
                 params={p: getattr(proto, p) for p in _PARAMS if proto.HasField(p)},
                 input_scale=float(transform.scale), mean_bgr=tuple(transform.mean_value))


def read_net(path: str) -> Net:
    """The layers of a `.caffemodel` (either format), blobs as float32 arrays."""
    proto = _read("NetParameter", path)
    if proto.layer and proto.layers:
        raise CaffeFormatError(f"{path}: holds both new-style `layer` and V1 `layers` "
                               "messages; Caffe reads one or the other")
    layers = [_layer(layer, layer.type, f"{path}: layer {i}")
              for i, layer in enumerate(proto.layer)]
    for i, layer in enumerate(proto.layers):
        if layer.v0_layer:
            raise CaffeFormatError(f"{path}: layer {i} is in Caffe's V0 format (before 2014); "
                                   "convert the file with Caffe's upgrade_net_proto_binary first")
        layers.append(_layer(layer, V1_TYPES.get(layer.type, f"V1 type {layer.type}"),
                             f"{path}: layer {i}"))
    if not layers:
        raise CaffeFormatError(f"{path}: no layers: not a Caffe NetParameter (.caffemodel)")
    return Net(proto.name, "layer" if proto.layer else "layers (V1)", tuple(layers),
               _declared_input_size(proto, path))


def _declared_input_size(proto, path: str) -> Optional[int]:
    """The input side the net declares: an Input layer's shape, the net's
    input_shape / input_dim (N, C, H, W), or a data layer's crop_size."""
    declared = [list(l.input_param.shape[0].dim) for l in proto.layer
                if l.HasField("input_param") and l.input_param.shape]
    declared += [list(shape.dim) for shape in proto.input_shape[:1]]
    declared += [list(proto.input_dim[:4])] if len(proto.input_dim) >= 4 else []
    for dims in declared[:1]:
        if len(dims) != 4 or dims[2] != dims[3] or min(dims) < 1:
            raise CaffeFormatError(f"{path}: the net's input is {'x'.join(map(str, dims))}; "
                                   "AlexNet reads square N x 3 x H x W blobs")
        return int(dims[2])
    crops = {int(l.transform_param.crop_size) for l in list(proto.layer) + list(proto.layers)
             if l.transform_param.crop_size}
    return crops.pop() if len(crops) == 1 else None


def read_blob(path: str) -> np.ndarray:
    """A `.binaryproto` file (one BlobProto, e.g. Caffe's mean image)."""
    return blob_array(_read("BlobProto", path), path)

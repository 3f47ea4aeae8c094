"""The part of Caffe's `caffe.proto` this importer reads, declared at run
time (field numbers are Caffe's; every other field is skipped as unknown).

Enums are declared int32 (the same varint on the wire). A blob's `data`
(packed float) and `double_data` (packed double) are declared `bytes`: the
payload of a packed field is then the little-endian array itself.
"""

from __future__ import annotations

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

_F = descriptor_pb2.FieldDescriptorProto
_SCALARS = {"string": _F.TYPE_STRING, "bytes": _F.TYPE_BYTES, "int64": _F.TYPE_INT64,
            "int32": _F.TYPE_INT32, "uint32": _F.TYPE_UINT32, "float": _F.TYPE_FLOAT,
            "bool": _F.TYPE_BOOL}

# (field, number, type, repeated, default) per message; enums are read as int32.
_MESSAGES = {
    "BlobShape": [("dim", 1, "int64", True, None)],
    "BlobProto": [("num", 1, "int64", False, None), ("channels", 2, "int64", False, None),
                  ("height", 3, "int64", False, None), ("width", 4, "int64", False, None),
                  ("data", 5, "bytes", True, None), ("shape", 7, "BlobShape", False, None),
                  ("double_data", 8, "bytes", True, None)],
    "ConvolutionParameter": [
        ("num_output", 1, "uint32", False, None), ("bias_term", 2, "bool", False, "true"),
        ("pad", 3, "uint32", True, None), ("kernel_size", 4, "uint32", True, None),
        ("group", 5, "uint32", False, "1"), ("stride", 6, "uint32", True, None),
        ("pad_h", 9, "uint32", False, None), ("pad_w", 10, "uint32", False, None),
        ("kernel_h", 11, "uint32", False, None), ("kernel_w", 12, "uint32", False, None),
        ("stride_h", 13, "uint32", False, None), ("stride_w", 14, "uint32", False, None),
        ("dilation", 18, "uint32", True, None)],
    "InnerProductParameter": [
        ("num_output", 1, "uint32", False, None), ("bias_term", 2, "bool", False, "true"),
        ("axis", 5, "int32", False, "1"), ("transpose", 6, "bool", False, "false")],
    "LRNParameter": [
        ("local_size", 1, "uint32", False, "5"), ("alpha", 2, "float", False, "1"),
        ("beta", 3, "float", False, "0.75"), ("norm_region", 4, "int32", False, "0"),
        ("k", 5, "float", False, "1")],
    "PoolingParameter": [
        ("pool", 1, "int32", False, "0"), ("kernel_size", 2, "uint32", False, None),
        ("stride", 3, "uint32", False, "1"), ("pad", 4, "uint32", False, "0"),
        ("kernel_h", 5, "uint32", False, None), ("kernel_w", 6, "uint32", False, None),
        ("stride_h", 7, "uint32", False, None), ("stride_w", 8, "uint32", False, None),
        ("pad_h", 9, "uint32", False, None), ("pad_w", 10, "uint32", False, None),
        ("global_pooling", 12, "bool", False, "false"), ("round_mode", 13, "int32", False, "0")],
    "InputParameter": [("shape", 1, "BlobShape", True, None)],
    "ReLUParameter": [("negative_slope", 1, "float", False, "0")],
    "TransformationParameter": [
        ("scale", 1, "float", False, "1"), ("crop_size", 3, "uint32", False, "0"),
        ("mean_value", 5, "float", True, None)],
    "LayerParameter": [
        ("name", 1, "string", False, None), ("type", 2, "string", False, None),
        ("bottom", 3, "string", True, None), ("top", 4, "string", True, None),
        ("blobs", 7, "BlobProto", True, None),
        ("transform_param", 100, "TransformationParameter", False, None),
        ("convolution_param", 106, "ConvolutionParameter", False, None),
        ("inner_product_param", 117, "InnerProductParameter", False, None),
        ("lrn_param", 118, "LRNParameter", False, None),
        ("pooling_param", 121, "PoolingParameter", False, None),
        ("relu_param", 123, "ReLUParameter", False, None),
        ("input_param", 143, "InputParameter", False, None)],
    "V1LayerParameter": [
        ("v0_layer", 1, "bytes", False, None), ("bottom", 2, "string", True, None),
        ("top", 3, "string", True, None), ("name", 4, "string", False, None),
        ("type", 5, "int32", False, "0"), ("blobs", 6, "BlobProto", True, None),
        ("convolution_param", 10, "ConvolutionParameter", False, None),
        ("inner_product_param", 17, "InnerProductParameter", False, None),
        ("lrn_param", 18, "LRNParameter", False, None),
        ("pooling_param", 19, "PoolingParameter", False, None),
        ("relu_param", 30, "ReLUParameter", False, None),
        ("transform_param", 36, "TransformationParameter", False, None)],
    "NetParameter": [
        ("name", 1, "string", False, None), ("layers", 2, "V1LayerParameter", True, None),
        ("input", 3, "string", True, None), ("input_dim", 4, "int64", True, None),
        ("input_shape", 8, "BlobShape", True, None), ("layer", 100, "LayerParameter", True, None)],
}

# V1LayerParameter.LayerType -> the string type of the new format (Caffe's
# own upgrade table).
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


def build_classes() -> dict:
    """Message class per name of `_MESSAGES`, from a FileDescriptorProto."""
    file = descriptor_pb2.FileDescriptorProto(name="alexnet_tf_caffe_subset.proto",
                                              package="caffe", syntax="proto2")
    for name, fields in _MESSAGES.items():
        msg = file.message_type.add(name=name)
        for field, number, kind, repeated, default in fields:
            f = msg.field.add(name=field, number=number, label=(
                _F.LABEL_REPEATED if repeated else _F.LABEL_OPTIONAL))
            if kind in _SCALARS:
                f.type = _SCALARS[kind]
            else:
                f.type, f.type_name = _F.TYPE_MESSAGE, f".caffe.{kind}"
            if default is not None:
                f.default_value = default
    pool = descriptor_pool.DescriptorPool()
    pool.Add(file)
    return {name: message_factory.GetMessageClass(pool.FindMessageTypeByName(f"caffe.{name}"))
            for name in _MESSAGES}

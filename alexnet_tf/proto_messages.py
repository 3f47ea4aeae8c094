"""Protobuf message classes declared at import time from a few lines of
schema, with the protobuf runtime alone: no generated module, no TensorFlow.

Each message is a list of "[repeated] type name number [default]" fields;
a type is a scalar (`int64`, `bytes`, ...) or another message of the same
schema. The classes live in a private descriptor pool, so they never clash
with generated classes of the same full name (TensorFlow's, Caffe's).
"""

from __future__ import annotations

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory


def message_classes(file_name: str, package: str, schema: dict[str, list[str]],
                    syntax: str = "proto2") -> dict[str, type]:
    """{message name: class} for every message of `schema`. In proto3
    repeated scalars are packed and fields have no declared defaults."""
    F = descriptor_pb2.FieldDescriptorProto
    file = descriptor_pb2.FileDescriptorProto(name=file_name, package=package, syntax=syntax)
    for name, fields in schema.items():
        declared = file.message_type.add(name=name)
        for spec in fields:
            words = spec.split()
            repeated = words[0] == "repeated"
            kind, field, number, *default = words[repeated:]
            f = declared.field.add(name=field, number=int(number), label=(
                F.LABEL_REPEATED if repeated else F.LABEL_OPTIONAL))
            if kind in schema:
                f.type, f.type_name = F.TYPE_MESSAGE, f".{package}.{kind}"
            else:
                f.type = getattr(F, f"TYPE_{kind.upper()}")
            if default:
                f.default_value = default[0]
    pool = descriptor_pool.DescriptorPool()
    pool.Add(file)
    return {name: message_factory.GetMessageClass(pool.FindMessageTypeByName(f"{package}.{name}"))
            for name in schema}

"""The written `saved_model.pb`, read back, checked and edited before a
version is published.

TF2's `tf.saved_model.save` writes every SignatureDef with the Predict method
name; TF Serving's Classify API refuses those, so the `classify`
SignatureDef's method name is rewritten. Inputs traced with an open shape
(so the graph's own check answers a wrong one) get the shape clients must
send written into their SignatureDef. Then the fingerprint is recomputed.
Any op pinned to a device, or any XLA-compiled function, is refused: a
CPU-only or one-GPU server could not load the model.
"""

from __future__ import annotations

import logging
import os

import tensorflow as tf
from tensorflow.core.protobuf import saved_model_pb2

SAVED_MODEL_FILENAME = "saved_model.pb"
CLASSIFY_METHOD_NAME = tf.saved_model.CLASSIFY_METHOD_NAME      # "tensorflow/serving/classify"


def read_saved_model_proto(saved_dir: str) -> saved_model_pb2.SavedModel:
    proto = saved_model_pb2.SavedModel()
    with open(os.path.join(saved_dir, SAVED_MODEL_FILENAME), "rb") as f:
        proto.ParseFromString(f.read())
    return proto


def serving_node_defs(meta_graph):
    """Every NodeDef a signature can run, plus every variable: the outer-graph
    nodes the signatures' outputs depend on and the bodies of all functions
    they call, transitively. The checkpoint save/restore functions TF adds
    are left out: TF pins those to the CPU in every SavedModel, and every
    server has a CPU."""
    nodes = {n.name: n for n in meta_graph.graph_def.node}
    functions = {f.signature.name: f for f in meta_graph.graph_def.library.function}
    pending = [t.name.split(":")[0] for sig in meta_graph.signature_def.values()
               for t in sig.outputs.values()]
    pending += [name for name, n in nodes.items() if n.op in ("VarHandleOp", "VariableV2")]
    seen, called = set(), []
    while pending:
        name = pending.pop()
        if name in seen or name not in nodes:
            continue
        seen.add(name)
        node = nodes[name]
        called += _called_functions(node)
        pending += [i.lstrip("^").split(":")[0] for i in node.input]
    result = [nodes[name] for name in sorted(seen)]
    done = set()
    while called:
        name = called.pop()
        if name in done or name not in functions:
            continue
        done.add(name)
        for node in functions[name].node_def:
            result.append(node)
            called += _called_functions(node)
    return result


def _called_functions(node) -> list[str]:
    names = []
    for value in node.attr.values():
        if value.func.name:
            names.append(value.func.name)
        names += [f.name for f in value.list.func]
    return names


def pinned_devices(meta_graph) -> list[tuple[str, str]]:
    """(node name, device) for every serving node with a non-empty device."""
    return [(n.name, n.device) for n in serving_node_defs(meta_graph) if n.device]


def xla_compiled_nodes(meta_graph) -> list[str]:
    """Names of functions/nodes anywhere in the graph asking for XLA."""
    found = [f.signature.name for f in meta_graph.graph_def.library.function
             if "_XlaMustCompile" in f.attr and f.attr["_XlaMustCompile"].b]
    all_nodes = list(meta_graph.graph_def.node) + [
        n for f in meta_graph.graph_def.library.function for n in f.node_def]
    found += [n.name for n in all_nodes
              if "_XlaMustCompile" in n.attr and n.attr["_XlaMustCompile"].b]
    return found


def finalize(saved_dir: str, classify_signature: str, input_shapes: dict) -> None:
    """Refuses device pins and XLA, sets `classify_signature`'s method name
    to TF Serving's Classify, writes `input_shapes` (signature -> input ->
    shape, -1 for any) into the SignatureDefs, rewrites `saved_model.pb` and
    its fingerprint."""
    proto = read_saved_model_proto(saved_dir)
    for meta_graph in proto.meta_graphs:
        pins = pinned_devices(meta_graph)
        if pins:
            raise ValueError(
                f"{len(pins)} ops are pinned to devices (e.g. {pins[0]}): build the "
                "exported model with tower_devices=None (checkpoints.restore_model does)")
        xla = xla_compiled_nodes(meta_graph)
        if xla:
            raise ValueError(f"XLA-compiled functions in the export: {xla[:3]}; "
                             "export a model whose call is not jit-compiled")
        signatures = meta_graph.signature_def
        if classify_signature in signatures:
            signatures[classify_signature].method_name = CLASSIFY_METHOD_NAME
        for name, inputs in input_shapes.items():
            for key, dims in inputs.items():
                shape = signatures[name].inputs[key].tensor_shape
                shape.Clear()
                for dim in dims:
                    shape.dim.add(size=dim)
    path = os.path.join(saved_dir, SAVED_MODEL_FILENAME)
    with open(path, "wb") as f:
        f.write(proto.SerializeToString(deterministic=True))
    _rewrite_fingerprint(saved_dir)


def _rewrite_fingerprint(saved_dir: str) -> None:
    """`fingerprint.pb` holds a checksum of `saved_model.pb`: recompute it
    with TF's own writer so it matches the edited proto."""
    try:
        from tensorflow.python.saved_model import fingerprinting_utils
    except ImportError:  # no writer in this TF: a stale fingerprint would lie
        stale = os.path.join(saved_dir, "fingerprint.pb")
        if os.path.exists(stale):
            os.remove(stale)
        logging.warning("could not recompute fingerprint.pb; removed it")
        return
    fingerprinting_utils.write_fingerprint(saved_dir)



"""The three ways `launch.predict` asks an exported model: TF Serving's REST
API, its gRPC API, and the SavedModel in this process. Each takes the
images' encoded bytes and returns one row per image: {"top_k_wnids",
"top_k_names", "top_k_scores", ...} from serving_default, {"classes",
"scores"} from classify.

Errors: ItemError when the model refused the request's contents
(InvalidArgument: a bad image), with the index of the refused image when
the message names one ("image_bytes[2] is an empty string"); PredictError,
one line, for everything else (unreachable server, out of memory, server
failure).

The REST path imports no TensorFlow (a client needs none), so the few names
it shares with `alexnet_tf.serving` are repeated here; a test checks they
agree.
"""

from __future__ import annotations

import base64
import json
import re
import socket
import urllib.error
import urllib.request

SERVING_DEFAULT = "serving_default"          # alexnet_tf.serving.signatures
CLASSIFY = "classify"
IMAGE_BYTES = "image_bytes"
CLASSIFY_INPUTS = "inputs"
ENCODED_FEATURE = "image/encoded"            # alexnet_tf.data.records.ENCODED
SAVED_MODEL_FILENAME = "saved_model.pb"
TOP_K_OUTPUTS = ("top_k_wnids", "top_k_names", "top_k_scores")
DEFAULT_TIMEOUT = 60.0  # seconds to wait for the server

_ITEM = re.compile(r"\b(?:image_bytes|inputs|images)\[(\d+)\]\s*(.*)")
_FRAMING = ("Graph execution error", "Detected at node", "<stack traces", "[[",
            "Instructions for updating")
_ASSERTION = re.compile(r"^assertion failed: \[(.*)\]$")
MAX_MESSAGE = 300


class PredictError(RuntimeError):
    """The server or model failed; the message is one line saying why."""


class ItemError(PredictError):
    """The model refused the request's contents: `index` is the refused
    image when the message names it (else None), `reason` the rest."""

    def __init__(self, message: str):
        line = one_line(message)
        found = _ITEM.search(line)
        self.index = int(found.group(1)) if found else None
        self.reason = found.group(2) if found else line
        super().__init__(line)


def one_line(message: str) -> str:
    """A TF or server message as one line: the graph-execution framing
    dropped, whitespace collapsed, at most MAX_MESSAGE characters."""
    lines = [_ASSERTION.sub(r"\1", l.strip()) for l in str(message).splitlines()]
    kept = [l for l in lines if l and not l.startswith(_FRAMING)]
    text = " ".join(" ".join(kept or lines).split())
    return text if len(text) <= MAX_MESSAGE else text[:MAX_MESSAGE - 3] + "..."


# -- REST ---------------------------------------------------------------------

def rest_request_body(images: list[bytes], signature_name: str = SERVING_DEFAULT) -> dict:
    """TF Serving's REST body: row ("instances") format for predict,
    "examples" for classify; binary values go as {"b64": ...} objects."""
    encoded = [{"b64": base64.b64encode(image).decode("ascii")} for image in images]
    if signature_name == CLASSIFY:
        return {"signature_name": signature_name,
                "examples": [{ENCODED_FEATURE: value} for value in encoded]}
    return {"signature_name": signature_name,
            "instances": [{IMAGE_BYTES: value} for value in encoded]}


def rest_url(server: str, model_name: str, version: int | None = None,
             verb: str = "predict") -> str:
    host = server if "://" in server else f"http://{server}"
    path = f"/v1/models/{urllib.request.quote(model_name, safe='')}"
    if version is not None:
        path += f"/versions/{version}"
    return f"{host}{path}:{verb}"


def rest_predict(server: str, model_name: str, images: list[bytes], *,
                 signature_name: str = SERVING_DEFAULT, version: int | None = None,
                 timeout: float = DEFAULT_TIMEOUT) -> list[dict]:
    """POSTs the images; returns one row per image."""
    verb = "classify" if signature_name == CLASSIFY else "predict"
    body = json.dumps(rest_request_body(images, signature_name)).encode()
    url = rest_url(server, model_name, version, verb)
    request = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            answer = json.load(response)
    except urllib.error.HTTPError as e:
        detail = e.read().decode(errors="replace")
        try:
            detail = json.loads(detail)["error"]
        except (ValueError, KeyError, TypeError):
            pass
        if e.code == 400:
            raise ItemError(detail) from None
        raise PredictError(f"{url}: HTTP {e.code}: {one_line(detail)}") from None
    except urllib.error.URLError as e:
        raise PredictError(f"cannot reach {url}: {e.reason} "
                           "(is `python -m launch.serve` running?)") from None
    except (socket.timeout, TimeoutError):
        raise PredictError(f"{url}: no answer within {timeout:g} s") from None
    except (OSError, ValueError) as e:  # connection reset, not JSON
        raise PredictError(f"{url}: {one_line(e)}") from None
    return _rest_rows(answer, len(images), url, verb)


def _rest_rows(answer, count: int, url: str, verb: str) -> list[dict]:
    rows = answer.get("result" if verb == "classify" else "predictions") \
        if isinstance(answer, dict) else None
    if not isinstance(rows, list) or len(rows) != count:
        raise PredictError(f"unexpected answer from {url}: {one_line(str(answer)[:200])}")
    if verb == "classify":
        return [{"classes": [label for label, _ in row], "scores": [s for _, s in row]}
                for row in rows]
    return rows


# -- gRPC ---------------------------------------------------------------------

def grpc_predict(server: str, model_name: str, images: list[bytes], *,
                 signature_name: str = SERVING_DEFAULT, version: int | None = None,
                 timeout: float = DEFAULT_TIMEOUT) -> list[dict]:
    """The same request through PredictionService (Predict or Classify)."""
    try:
        import grpc
        from tensorflow_serving.apis import (classification_pb2, predict_pb2,
                                             prediction_service_pb2_grpc)
    except ImportError as e:
        raise PredictError(f"--grpc needs the serving extra ({e}); see docs/serving.md: "
                           "pip install --no-deps tensorflow-serving-api") from None
    import tensorflow as tf
    if signature_name == CLASSIFY:
        request = classification_pb2.ClassificationRequest()
        for image in images:
            example = request.input.example_list.examples.add()
            example.features.feature[ENCODED_FEATURE].bytes_list.value.append(image)
    else:
        request = predict_pb2.PredictRequest()
        request.inputs[IMAGE_BYTES].CopyFrom(
            tf.make_tensor_proto(images, dtype=tf.string, shape=[len(images)]))
    request.model_spec.name = model_name
    request.model_spec.signature_name = signature_name
    if version is not None:
        request.model_spec.version.value = version
    with grpc.insecure_channel(server) as channel:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        try:
            if signature_name == CLASSIFY:
                response = stub.Classify(request, timeout=timeout)
            else:
                response = stub.Predict(request, timeout=timeout)
        except grpc.RpcError as e:
            if e.code() == grpc.StatusCode.INVALID_ARGUMENT:
                raise ItemError(e.details() or "") from None
            raise PredictError(f"{server}: {e.code().name}: {one_line(e.details() or '')}") \
                from None
    if signature_name == CLASSIFY:
        return [{"classes": [c.label for c in result.classes],
                 "scores": [c.score for c in result.classes]}
                for result in response.result.classifications]
    outputs = {k: tf.make_ndarray(v) for k, v in response.outputs.items()}
    return _rows(outputs, len(images))


# -- in-process ---------------------------------------------------------------

def saved_model_caller(path: str, *, signature_name: str = SERVING_DEFAULT):
    """Loads the SavedModel once; returns images -> rows."""
    import tensorflow as tf
    try:
        signatures = tf.saved_model.load(path).signatures
    except (OSError, tf.errors.OpError, ValueError) as e:
        raise PredictError(f"cannot load the SavedModel in {path}: {one_line(e)}") from None
    if signature_name not in signatures:
        raise PredictError(f"{path} has no signature {signature_name!r} "
                           f"(it has {sorted(signatures)})")
    signature = signatures[signature_name]

    def call(images: list[bytes]) -> list[dict]:
        try:
            if signature_name == CLASSIFY:
                outputs = signature(**{CLASSIFY_INPUTS: tf.constant(
                    [_example(image) for image in images], tf.string)})
            else:
                outputs = signature(**{IMAGE_BYTES: tf.constant(images, tf.string)})
        except tf.errors.InvalidArgumentError as e:
            raise ItemError(e.message) from None
        except tf.errors.ResourceExhaustedError as e:
            raise PredictError(f"out of memory: {one_line(e.message)}") from None
        except tf.errors.OpError as e:
            raise PredictError(f"{path}: {type(e).__name__}: {one_line(e.message)}") from None
        return _rows({k: v.numpy() for k, v in outputs.items()}, len(images))
    return call


def _example(image: bytes) -> bytes:
    import tensorflow as tf
    example = tf.train.Example()
    example.features.feature[ENCODED_FEATURE].bytes_list.value.append(image)
    return example.SerializeToString()


def _rows(outputs: dict, count: int) -> list[dict]:
    """Column arrays -> one dict per image with JSON-like values."""
    rows = []
    for i in range(count):
        row = {}
        for key, value in outputs.items():
            item = value[i].tolist()
            if isinstance(item, list):
                item = [v.decode() if isinstance(v, bytes) else v for v in item]
            row[key] = item
        rows.append(row)
    return rows


def format_top_k(name: str, row: dict) -> str:
    """The file name, then one line per class: rank, label(s), score."""
    if "classes" in row:
        columns = (row["classes"], row["scores"])
    else:
        missing = [k for k in TOP_K_OUTPUTS if k not in row]
        if missing:
            raise PredictError(f"the signature gives no {missing}: pick one with top-k outputs")
        columns = tuple(row[k] for k in TOP_K_OUTPUTS)
    lines = [name]
    for rank, values in enumerate(zip(*columns), 1):
        *labels, score = values
        text = "  ".join(f"{label:<32s}" if i == len(labels) - 1 and len(labels) > 1
                         else str(label) for i, label in enumerate(labels))
        lines.append(f"  {rank}. {text} {score:.4f}")
    return "\n".join(lines)

"""Classify image files with an exported AlexNet: through TF Serving's REST
API (default), its gRPC PredictionService (--grpc), or in-process from the
SavedModel (--saved_model). All three run the `serving_default` signature on
the files' encoded bytes, so the preprocessing is the server's.

    python -m launch.predict --server=localhost:8501 --model_name=alexnet img1.jpg img2.png
    python -m launch.predict --grpc --server=localhost:8500 --model_name=alexnet img1.jpg
    python -m launch.predict --saved_model=saved_models/alexnet/1 img1.jpg

prints, per image, the top-5 classes with wnid, name and probability.
"""

from __future__ import annotations

import base64
import json
import sys
import urllib.error
import urllib.request

from absl import app, flags

IMAGE_BYTES = "image_bytes"  # alexnet_tf.export.IMAGE_BYTES; not imported: no TF for REST
TOP_K_OUTPUTS = ("top_k_wnids", "top_k_names", "top_k_scores")

FLAGS = flags.FLAGS


def define_flags() -> None:
    """Defined only when run as a program, so that importing this module
    (tests, other tools) cannot clash with another tool's flags."""
    flags.DEFINE_string("server", None, "host:port of TF Serving: its REST port (default "
                        "localhost:8501) or with --grpc its gRPC port (default localhost:8500).")
    flags.DEFINE_string("model_name", "alexnet", "Model name on the server.")
    flags.DEFINE_integer("model_version", None, "Ask for this version (default: the server's latest).")
    flags.DEFINE_string("signature_name", "serving_default", "Signature to run; it must take "
                        "`image_bytes` and give top_k_wnids / top_k_names / top_k_scores.")
    flags.DEFINE_bool("grpc", False, "Use the gRPC PredictionService (needs the "
                      "tensorflow-serving-api package, the 'serving' extra).")
    flags.DEFINE_string("saved_model", None, "Run this SavedModel version directory in-process "
                        "instead of asking a server.")
    flags.DEFINE_float("timeout", 60.0, "Seconds to wait for the server.")


class PredictError(RuntimeError):
    """The server or model refused the request; the message says why."""


def rest_request_body(images: list[bytes], signature_name: str = "serving_default") -> dict:
    """TF Serving's REST predict body, row ("instances") format; binary
    inputs go as {"b64": ...} objects."""
    return {
        "signature_name": signature_name,
        "instances": [{IMAGE_BYTES: {"b64": base64.b64encode(image).decode("ascii")}}
                      for image in images],
    }


def rest_url(server: str, model_name: str, version: int | None = None,
             verb: str = "predict") -> str:
    host = server if "://" in server else f"http://{server}"
    path = f"/v1/models/{model_name}"
    if version is not None:
        path += f"/versions/{version}"
    return f"{host}{path}:{verb}"


def rest_predict(server: str, model_name: str, images: list[bytes], *,
                 signature_name: str = "serving_default", version: int | None = None,
                 timeout: float = 60.0) -> list[dict]:
    """POSTs the images; returns one dict of outputs per image."""
    body = json.dumps(rest_request_body(images, signature_name)).encode()
    request = urllib.request.Request(rest_url(server, model_name, version), data=body,
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            answer = json.load(response)
    except urllib.error.HTTPError as e:
        detail = e.read().decode(errors="replace")
        try:
            detail = json.loads(detail)["error"]
        except (ValueError, KeyError, TypeError):
            pass
        raise PredictError(f"{request.full_url}: HTTP {e.code}: {detail}") from None
    except urllib.error.URLError as e:
        raise PredictError(f"cannot reach {request.full_url}: {e.reason} "
                           "(is `python -m launch.serve` running?)") from None
    predictions = answer.get("predictions")
    if not isinstance(predictions, list) or len(predictions) != len(images):
        raise PredictError(f"unexpected answer from {request.full_url}: {str(answer)[:200]}")
    return predictions


def grpc_predict(server: str, model_name: str, images: list[bytes], *,
                 signature_name: str = "serving_default", version: int | None = None,
                 timeout: float = 60.0) -> list[dict]:
    """The same request through PredictionService.Predict."""
    try:
        import grpc
        from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc
    except ImportError as e:
        raise PredictError(f"--grpc needs the serving extra ({e}); see README: "
                           "pip install --no-deps tensorflow-serving-api") from None
    import tensorflow as tf
    request = predict_pb2.PredictRequest()
    request.model_spec.name = model_name
    request.model_spec.signature_name = signature_name
    if version is not None:
        request.model_spec.version.value = version
    request.inputs[IMAGE_BYTES].CopyFrom(
        tf.make_tensor_proto(images, dtype=tf.string, shape=[len(images)]))
    with grpc.insecure_channel(server) as channel:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        try:
            response = stub.Predict(request, timeout=timeout)
        except grpc.RpcError as e:
            raise PredictError(f"{server}: {e.code().name}: {e.details()}") from None
    outputs = {k: tf.make_ndarray(v) for k, v in response.outputs.items()}
    return _rows(outputs, len(images))


def saved_model_predict(path: str, images: list[bytes], *,
                        signature_name: str = "serving_default") -> list[dict]:
    """Runs the signature in this process, no server."""
    import tensorflow as tf
    signature = tf.saved_model.load(path).signatures[signature_name]
    try:
        outputs = signature(**{IMAGE_BYTES: tf.constant(images, tf.string)})
    except tf.errors.InvalidArgumentError as e:
        raise PredictError(f"{path}: {_reason(e.message)}") from None
    return _rows({k: v.numpy() for k, v in outputs.items()}, len(images))


def _reason(message: str) -> str:
    """The cause in a TF error message, without the graph-execution framing."""
    framing = ("Graph execution error", "Detected at node", "<stack traces", "[[")
    lines = [l.strip() for l in message.splitlines()]
    return " ".join(l for l in lines if l and not l.startswith(framing)) or message


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


def format_top_k(name: str, prediction: dict) -> str:
    missing = [k for k in TOP_K_OUTPUTS if k not in prediction]
    if missing:
        raise PredictError(f"the signature gives no {missing}: pick one with top-k outputs")
    lines = [name]
    for rank, (wnid, label, score) in enumerate(
            zip(*(prediction[k] for k in TOP_K_OUTPUTS)), 1):
        lines.append(f"  {rank}. {wnid}  {label:<32s} {score:.4f}")
    return "\n".join(lines)


def main(argv):
    files = argv[1:]
    if not files:
        raise app.UsageError("name at least one image file")
    images = []
    for name in files:
        with open(name, "rb") as f:
            images.append(f.read())
    kwargs = dict(signature_name=FLAGS.signature_name)
    try:
        if FLAGS.saved_model:
            predictions = saved_model_predict(FLAGS.saved_model, images, **kwargs)
        elif FLAGS.grpc:
            predictions = grpc_predict(FLAGS.server or "localhost:8500", FLAGS.model_name,
                                       images, version=FLAGS.model_version,
                                       timeout=FLAGS.timeout, **kwargs)
        else:
            predictions = rest_predict(FLAGS.server or "localhost:8501", FLAGS.model_name,
                                       images, version=FLAGS.model_version,
                                       timeout=FLAGS.timeout, **kwargs)
    except PredictError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    for name, prediction in zip(files, predictions):
        print(format_top_k(name, prediction))
    return 0


if __name__ == "__main__":
    define_flags()
    app.run(main)

"""The client (launch.predict) against stand-ins for TF Serving that answer
from a real exported SavedModel: a local HTTP server that checks the REST
body against TF Serving's predict format, and an in-process gRPC
PredictionService."""

import base64
import http.server
import json
import os
import re
import subprocess
import sys
import threading
from concurrent import futures

import numpy as np
import pytest
import tensorflow as tf

from alexnet_tf.serving import export
import export_probe
from alexnet_tf.data.labels import LabelMap
from launch import predict

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LABELS = LabelMap(tuple(f"n0{i}000000" for i in range(6)),
                  ("tench", "goldfish", "great white shark", "tiger shark", "hammerhead", "ray"))


@pytest.fixture(scope="module")
def saved_model(tmp_path_factory):
    base = tmp_path_factory.mktemp("predict_export")
    return export.export_saved_model(export_probe.build_probe_model(len(LABELS), image_size=32),
                                     LABELS, str(base), warmup=False)


@pytest.fixture(scope="module")
def signature(saved_model):
    return tf.saved_model.load(saved_model).signatures["serving_default"]


@pytest.fixture(scope="module")
def images():
    return [export.warmup_image_bytes(), export.warmup_image_bytes(64, 48)]


def _json_outputs(outputs, i):
    """Row i of the outputs as TF Serving's REST layer writes them: strings
    as UTF-8 text (no output name ends in _bytes), numbers as numbers."""
    row = {}
    for key, value in outputs.items():
        item = value[i].numpy().tolist()
        row[key] = [v.decode() if isinstance(v, bytes) else v for v in item]
    return row


class FakeRestServing:
    """127.0.0.1 on a free port; POST /v1/models/<name>[/versions/<n>]:predict
    with a TF Serving row-format body -> {"predictions": [...]} from the real
    signature, or HTTP 400 {"error": ...} as TF Serving answers bad requests."""

    def __init__(self, signature, model_name="alexnet"):
        self.requests, self.problems = [], []
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                try:
                    body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                    outer.requests.append((self.path, self.headers["Content-Type"], body))
                    images = outer.check(self.path, body, model_name)
                    outputs = signature(image_bytes=tf.constant(images))
                    answer = {"predictions": [_json_outputs(outputs, i)
                                              for i in range(len(images))]}
                    self._reply(200, answer)
                except (AssertionError, ValueError, KeyError) as e:
                    outer.problems.append(str(e))
                    self._reply(400, {"error": f"malformed request: {e}"})
                except tf.errors.InvalidArgumentError as e:
                    self._reply(400, {"error": e.message})

            def _reply(self, code, payload):
                data = json.dumps(payload).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.address = f"127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @staticmethod
    def check(path, body, model_name):
        assert re.fullmatch(rf"/v1/models/{model_name}(/versions/\d+)?:predict", path), path
        assert set(body) <= {"signature_name", "instances"}, f"keys {sorted(body)}"
        assert body.get("signature_name", "serving_default") == "serving_default"
        instances = body["instances"]
        assert isinstance(instances, list) and instances, "instances must be a non-empty list"
        images = []
        for instance in instances:
            assert set(instance) == {"image_bytes"}, f"instance keys {sorted(instance)}"
            value = instance["image_bytes"]
            assert set(value) == {"b64"}, "binary input must be {'b64': ...}"
            images.append(base64.b64decode(value["b64"], validate=True))
        return images

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def rest_server(signature):
    server = FakeRestServing(signature)
    yield server
    server.close()


def test_rest_body_is_tf_serving_row_format(images):
    body = predict.rest_request_body(images)
    assert body["signature_name"] == "serving_default"
    assert [base64.b64decode(i["image_bytes"]["b64"]) for i in body["instances"]] == images
    json.dumps(body)  # JSON-serialisable as is
    assert predict.rest_url("localhost:8501", "alexnet") == \
        "http://localhost:8501/v1/models/alexnet:predict"
    assert predict.rest_url("h:1", "m", version=3) == "http://h:1/v1/models/m/versions/3:predict"


def test_rest_predict_against_stand_in(rest_server, signature, images):
    rows = predict.rest_predict(rest_server.address, "alexnet", images, version=1)
    assert rest_server.problems == []
    path, content_type, _ = rest_server.requests[-1]
    assert path == "/v1/models/alexnet/versions/1:predict"
    assert content_type == "application/json"
    expected = signature(image_bytes=tf.constant(images))
    assert len(rows) == 2
    for i, row in enumerate(rows):
        np.testing.assert_allclose(row["top_k_scores"], expected["top_k_scores"][i].numpy(),
                                   rtol=1e-6)
        assert row["top_k_names"] == [LABELS.names[j] for j in row["top_k_indices"]]


def test_rest_error_from_server_is_reported(rest_server, images):
    with pytest.raises(predict.PredictError, match="(?s)HTTP 400.*Unknown image file format"):
        predict.rest_predict(rest_server.address, "alexnet", [images[0], b"not an image"])


def test_rest_unreachable_server_says_so():
    with pytest.raises(predict.PredictError, match="cannot reach"):
        predict.rest_predict("127.0.0.1:9", "alexnet", [b"x"], timeout=5)


def test_cli_prints_top5_names_and_probabilities(rest_server, signature, images, tmp_path):
    files = []
    for i, data in enumerate(images):
        files.append(tmp_path / f"image{i}.jpg")
        files[-1].write_bytes(data)
    result = subprocess.run(
        [sys.executable, "-m", "launch.predict", f"--server={rest_server.address}",
         "--model_name=alexnet", *map(str, files)],
        capture_output=True, text=True, cwd=REPO_ROOT, timeout=120)
    assert result.returncode == 0, result.stderr
    assert rest_server.problems == []
    expected = signature(image_bytes=tf.constant(images))
    blocks = result.stdout.strip().split("\n" + str(files[1]))
    assert result.stdout.startswith(str(files[0])) and len(blocks) == 2
    for i, block in enumerate(blocks):
        lines = [l for l in block.splitlines() if re.match(r"\s+\d\. ", l)]
        assert len(lines) == 5
        for rank, line in enumerate(lines):
            j = int(expected["top_k_indices"][i][rank])
            assert LABELS.wnids[j] in line and LABELS.names[j] in line
            assert float(line.split()[-1]) == pytest.approx(
                float(expected["top_k_scores"][i][rank]), abs=1e-4)


def test_saved_model_in_process_matches_server_path(saved_model, rest_server, images):
    local = predict.saved_model_predict(saved_model, images)
    remote = predict.rest_predict(rest_server.address, "alexnet", images)
    for a, b in zip(local, remote):
        assert a["top_k_wnids"] == b["top_k_wnids"]
        np.testing.assert_allclose(a["probabilities"], b["probabilities"], rtol=1e-6)
    with pytest.raises(predict.PredictError, match="empty string|Input is empty"):
        predict.saved_model_predict(saved_model, [b""])


def test_grpc_predict_against_in_process_prediction_service(signature, images):
    grpc = pytest.importorskip("grpc")
    apis = pytest.importorskip("tensorflow_serving.apis.prediction_service_pb2_grpc")
    from tensorflow_serving.apis import predict_pb2
    seen = []

    class Servicer(apis.PredictionServiceServicer):
        def Predict(self, request, context):
            seen.append(request)
            batch = tf.make_ndarray(request.inputs["image_bytes"])
            outputs = signature(image_bytes=tf.constant(batch))
            response = predict_pb2.PredictResponse()
            response.model_spec.CopyFrom(request.model_spec)
            for key, value in outputs.items():
                response.outputs[key].CopyFrom(tf.make_tensor_proto(value.numpy()))
            return response

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    apis.add_PredictionServiceServicer_to_server(Servicer(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        rows = predict.grpc_predict(f"127.0.0.1:{port}", "alexnet", images, version=2)
    finally:
        server.stop(None)
    request = seen[-1]
    assert request.model_spec.name == "alexnet" and request.model_spec.version.value == 2
    assert request.model_spec.signature_name == "serving_default"
    assert list(tf.make_ndarray(request.inputs["image_bytes"])) == images
    expected = signature(image_bytes=tf.constant(images))
    for i, row in enumerate(rows):
        assert row["top_k_wnids"] == [w.decode() for w in expected["top_k_wnids"][i].numpy()]
        np.testing.assert_allclose(row["top_k_scores"], expected["top_k_scores"][i].numpy())

"""The client (launch.predict) against stand-ins for TF Serving that answer
from a real exported SavedModel: a local HTTP server that checks the REST
body against TF Serving's predict and classify formats, and an in-process
gRPC PredictionService; and in-process (--saved_model)."""

import base64
import http.server
import json
import os
import re
import threading
from concurrent import futures

import numpy as np
import pytest
import tensorflow as tf

from alexnet_tf.serving import budget, export
import export_probe
from alexnet_tf.data import records
from alexnet_tf.data.labels import LabelMap
from launch import predict, predict_clients
from launchers import run_launcher

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LABELS = LabelMap(tuple(f"n0{i}000000" for i in range(6)),
                  ("tench", "goldfish", "great white shark", "tiger shark", "hammerhead", "ray"))


@pytest.fixture(scope="module")
def saved_model(tmp_path_factory):
    base = tmp_path_factory.mktemp("predict_export")
    return export.export_saved_model(export_probe.build_probe_model(len(LABELS), image_size=32),
                                     LABELS, str(base), warmup=False)


@pytest.fixture(scope="module")
def loaded(saved_model):
    return tf.saved_model.load(saved_model)


@pytest.fixture(scope="module")
def signatures(loaded):
    return loaded.signatures


@pytest.fixture
def load_once(monkeypatch, saved_model, loaded):
    """The CLI's in-process runs (--saved_model) get the module's loaded
    model instead of loading it again (a load and its first calls, ~2 CPU s
    each time); test_saved_model_in_process_matches_server_path loads it
    for real."""
    real_load = tf.saved_model.load

    def load(path, *args, **kwargs):
        if os.path.realpath(path) == os.path.realpath(saved_model):
            return loaded
        return real_load(path, *args, **kwargs)

    monkeypatch.setattr(tf.saved_model, "load", load)


@pytest.fixture(scope="module")
def signature(signatures):
    return signatures["serving_default"]


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


def _example(image: bytes) -> bytes:
    return records.serialize(records.ImageRecord(image, 1, 1, 0, "", "", ""))


class FakeRestServing:
    """127.0.0.1 on a free port; POST /v1/models/<name>[/versions/<n>]:predict
    (row format) or :classify ("examples") -> the real signature's answer in
    TF Serving's JSON, HTTP 400 {"error": ...} for what the model refuses, or
    `fail_with` (status, message) for every request."""

    def __init__(self, signatures, model_name="alexnet", fail_with=None):
        self.requests, self.problems = [], []
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                try:
                    body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                    outer.requests.append((self.path, self.headers["Content-Type"], body))
                    if fail_with:
                        return self._reply(fail_with[0], {"error": fail_with[1]})
                    verb, images = outer.check(self.path, body, model_name)
                    if verb == "classify":
                        out = signatures["classify"](inputs=tf.constant([_example(i) for i in images]))
                        result = [[[c.decode(), float(s)] for c, s in zip(cs, ss)]
                                  for cs, ss in zip(out["classes"].numpy(), out["scores"].numpy())]
                        return self._reply(200, {"result": result})
                    outputs = signatures["serving_default"](image_bytes=tf.constant(images))
                    self._reply(200, {"predictions": [_json_outputs(outputs, i)
                                                      for i in range(len(images))]})
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
        # shutdown() waits for the next poll: 0.5 s by default, idle in each test
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.02,),
                                       daemon=True)
        self.thread.start()

    @staticmethod
    def check(path, body, model_name):
        verb = re.fullmatch(rf"/v1/models/{model_name}(?:/versions/\d+)?:(predict|classify)", path)
        assert verb, path
        verb = verb.group(1)
        rows_key, input_key = ("examples", "image/encoded") if verb == "classify" else (
            "instances", "image_bytes")
        assert set(body) <= {"signature_name", rows_key}, f"keys {sorted(body)}"
        assert body.get("signature_name", "serving_default") == (
            "classify" if verb == "classify" else "serving_default")
        rows = body[rows_key]
        assert isinstance(rows, list) and rows, f"{rows_key} must be a non-empty list"
        images = []
        for row in rows:
            assert set(row) == {input_key}, f"keys {sorted(row)}"
            value = row[input_key]
            assert set(value) == {"b64"}, "binary input must be {'b64': ...}"
            images.append(base64.b64decode(value["b64"], validate=True))
        return verb, images

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def rest_server(signatures):
    server = FakeRestServing(signatures)
    yield server
    server.close()


def run_cli(*args):
    """`python -m launch.predict <args>`, in this process (tests/launchers.py)."""
    return run_launcher("launch.predict", *args, cwd=REPO_ROOT)


def top5_blocks(stdout):
    """file name -> [(rank line tokens)] from the CLI's output."""
    blocks, current = {}, None
    for line in stdout.splitlines():
        if re.match(r"\s+\d\. ", line):
            blocks[current].append(line.split())
        elif line.strip():
            current = line.strip()
            blocks[current] = []
    return blocks


def test_rest_body_is_tf_serving_row_format(images):
    body = predict_clients.rest_request_body(images)
    assert body["signature_name"] == "serving_default"
    assert [base64.b64decode(i["image_bytes"]["b64"]) for i in body["instances"]] == images
    json.dumps(body)  # JSON-serialisable as is
    classify = predict_clients.rest_request_body(images, "classify")
    assert [base64.b64decode(e["image/encoded"]["b64"]) for e in classify["examples"]] == images
    assert predict_clients.rest_url("localhost:8501", "alexnet") == \
        "http://localhost:8501/v1/models/alexnet:predict"
    assert predict_clients.rest_url("h:1", "m", version=3) == \
        "http://h:1/v1/models/m/versions/3:predict"
    assert predict_clients.rest_url("h:1", "a b/c", verb="classify") == \
        "http://h:1/v1/models/a%20b%2Fc:classify"


def test_client_constants_agree_with_the_library():
    """The REST client imports no TensorFlow, so it repeats these names."""
    assert predict_clients.SERVING_DEFAULT == export.SERVING_DEFAULT
    assert predict_clients.CLASSIFY == export.CLASSIFY
    assert predict_clients.IMAGE_BYTES == export.IMAGE_BYTES
    assert predict_clients.CLASSIFY_INPUTS == export.CLASSIFY_INPUTS
    assert predict_clients.ENCODED_FEATURE == records.ENCODED
    assert set(predict_clients.TOP_K_OUTPUTS) <= set(export.PREDICT_OUTPUTS)


def test_rest_predict_against_stand_in(rest_server, signature, images):
    rows = predict_clients.rest_predict(rest_server.address, "alexnet", images, version=1)
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


def test_rest_refusal_names_the_image_index(rest_server, images):
    with pytest.raises(predict_clients.ItemError) as caught:
        predict_clients.rest_predict(rest_server.address, "alexnet", [images[0], b"not an image"])
    assert caught.value.index == 1
    assert caught.value.reason.startswith("is not a JPEG, PNG, GIF or BMP image")


def test_rest_unreachable_server_says_so():
    with pytest.raises(predict_clients.PredictError, match="cannot reach"):
        predict_clients.rest_predict("127.0.0.1:9", "alexnet", [b"x"], timeout=5)


def test_cli_prints_top5_names_and_probabilities(rest_server, signature, images, tmp_path):
    files = []
    for i, data in enumerate(images):
        files.append(tmp_path / f"image{i}.jpg")
        files[-1].write_bytes(data)
    result = run_cli(f"--server={rest_server.address}", "--model_name=alexnet", *files)
    assert result.returncode == 0, result.stderr
    assert rest_server.problems == []
    assert len(rest_server.requests) == 1  # one batch
    expected = signature(image_bytes=tf.constant(images))
    blocks = top5_blocks(result.stdout)
    assert list(blocks) == [str(f) for f in files]
    for i, f in enumerate(files):
        lines = blocks[str(f)]
        assert len(lines) == 5
        for rank, tokens in enumerate(lines):
            j = int(expected["top_k_indices"][i][rank])
            assert tokens[1] == LABELS.wnids[j] and LABELS.names[j] in " ".join(tokens)
            assert float(tokens[-1]) == pytest.approx(
                float(expected["top_k_scores"][i][rank]), abs=1e-4)


@pytest.fixture
def mixed_files(tmp_path, images):
    """Two good images among a missing file, a folder, a text file, an empty
    file and a truncated JPEG: (paths, {path: expected error text})."""
    good = [tmp_path / "good one.jpg", tmp_path / os.fsdecode(b"caf\xe9 (latin-1).png")]
    good[0].write_bytes(images[0])
    good[1].write_bytes(tf.io.encode_png(np.full((40, 30, 3), 90, np.uint8)).numpy())
    fifo = tmp_path / "a pipe.jpg"
    os.mkfifo(fifo)  # opening it would wait for a writer forever
    folder = tmp_path / "a folder.jpg"
    folder.mkdir()
    text = tmp_path / "notes.txt"
    text.write_text("index\twnid\tname\n")
    empty = tmp_path / "empty.jpg"
    empty.write_bytes(b"")
    truncated = tmp_path / "cut.jpg"
    truncated.write_bytes(images[0][:len(images[0]) // 2])
    missing = tmp_path / "missing.jpg"
    huge = tmp_path / "huge.jpg"
    with open(huge, "wb") as f:
        f.truncate(5 << 30)  # sparse: 5 GB long, no disk used; reading it would take 5 GB
    errors = {missing: "no such file", folder: "is a folder", fifo: "is not a regular file",
              text: "is not a JPEG, PNG, GIF or BMP image",
              empty: "is an empty string", truncated: "corrupt or truncated",
              huge: "is 5 GB (5,368,709,120 bytes), more than the 16 MB (16,777,216 bytes) "
                    "an image may have (--max_image_bytes)"}
    order = [missing, good[0], folder, huge, text, fifo, empty, truncated, good[1]]
    return order, good, errors


@pytest.mark.parametrize("transport", ["rest", "saved_model"])
def test_cli_bad_files_get_one_line_each_and_the_rest_are_classified(
        transport, rest_server, saved_model, signature, mixed_files, load_once):
    order, good, errors = mixed_files
    where = ([f"--server={rest_server.address}"] if transport == "rest"
             else [f"--saved_model={saved_model}"])
    result = run_cli(*where, *order)
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    lines = [l for l in result.stderr.splitlines() if l.startswith("error: ")]
    assert len(lines) == len(errors), result.stderr
    for path, text in errors.items():
        (line,) = [l for l in lines if l.startswith(f"error: {path}")]
        assert text in line, line
        assert saved_model not in line  # names the image, not the model
    blocks = top5_blocks(result.stdout)
    shown = [predict.shown(str(g)) for g in good]
    assert list(blocks) == shown and shown[1].endswith("caf\\xe9 (latin-1).png")
    expected = signature(image_bytes=tf.constant([g.read_bytes() for g in good]))
    for i, g in enumerate(shown):
        assert [t[1] for t in blocks[g]] == [
            w.decode() for w in expected["top_k_wnids"][i].numpy()]


def test_files_longer_than_the_limit_are_refused_from_their_size(tmp_path, saved_model, load_once):
    """The limit is the model's (recorded in its export) or the flag's; a
    file over it is refused by name and never read, whatever its size."""
    assert budget.recorded_max_image_bytes(saved_model) == budget.DEFAULT_MAX_IMAGE_BYTES
    small, sparse = tmp_path / "small.jpg", tmp_path / "sparse.jpg"
    small.write_bytes(b"x" * 100)
    with open(sparse, "wb") as f:
        f.truncate(3 << 30)
    contents, problems = predict.read_files([str(small), str(sparse)], max_bytes=100)
    assert contents == {0: b"x" * 100}
    assert problems == {1: f"{sparse}: is 3 GB (3,221,225,472 bytes), more than the 100 bytes "
                           "an image may have (--max_image_bytes)"}
    contents, problems = predict.read_files([str(small)], max_bytes=99)
    assert contents == {} and "more than the 99 bytes" in problems[0]
    result = run_cli(f"--saved_model={saved_model}", "--max_image_bytes=99", small)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines() == [
        f"error: {small}: is 100 bytes, more than the 99 bytes an image may have "
        "(--max_image_bytes)"]


def test_cli_classify_signature_over_rest_and_in_process(rest_server, saved_model, signatures,
                                                         images, tmp_path, load_once):
    path = tmp_path / "photo.jpg"
    path.write_bytes(images[0])
    expected = signatures["classify"](inputs=tf.constant([_example(images[0])]))
    wanted = [c.decode() for c in expected["classes"][0].numpy()]
    for where in (f"--server={rest_server.address}", f"--saved_model={saved_model}"):
        result = run_cli(where, "--signature_name=classify", path)
        assert result.returncode == 0, result.stderr
        lines = top5_blocks(result.stdout)[str(path)]
        assert [t[1] for t in lines] == wanted
        np.testing.assert_allclose([float(t[-1]) for t in lines],
                                   expected["scores"][0].numpy(), atol=1e-4)
    assert rest_server.requests[-1][0] == "/v1/models/alexnet:classify"


@pytest.mark.parametrize("args, message", [
    (["--signature_name=features"], "--signature_name=features: gives no classes"),
    (["--signature_name=predict_images"], "--signature_name=predict_images: gives no classes"),
    (["--timeout=0"], "--timeout=0.0: must be more than 0"),
    (["--saved_model=/nonexistent/1"], "--saved_model=/nonexistent/1: no saved_model.pb"),
    (["--top_k=5"], "Unknown command line flag 'top_k'"),  # absl's own parse: one line too
    (["--timeout=fast"], "flag --timeout=fast: could not convert string to float"),
])
def test_cli_usage_errors_are_one_line_exit_2(tmp_path, images, args, message):
    path = tmp_path / "photo.jpg"
    path.write_bytes(images[0])
    result = run_cli(*args, path)
    assert result.returncode == 2, result.stderr
    assert result.stderr.count("\n") == 1 and message in result.stderr, result.stderr
    no_files = run_cli(*args)
    assert no_files.returncode == 2 and no_files.stderr.count("\n") == 1


@pytest.mark.parametrize("status, message, expected", [
    (500, "OOM when allocating tensor with shape[1,256,16768000,3] and type float\n"
          "\t [[{{node resize}}]]\nHint: If you want to see a list of allocated tensors",
     "HTTP 500: OOM when allocating tensor with shape[1,256,16768000,3]"),
    (503, "Servable not found for request: Latest(alexnet)", "HTTP 503: Servable not found"),
    (404, "Model not found", "HTTP 404: Model not found"),
])
def test_cli_server_errors_are_one_line(signatures, images, tmp_path, status, message, expected):
    server = FakeRestServing(signatures, fail_with=(status, message))
    try:
        path = tmp_path / "photo.jpg"
        path.write_bytes(images[0])
        result = run_cli(f"--server={server.address}", path, path)
    finally:
        server.close()
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1 and expected in result.stderr, result.stderr
    assert result.stdout == ""


def test_cli_unreachable_server_is_one_line(tmp_path, images):
    path = tmp_path / "photo.jpg"
    path.write_bytes(images[0])
    result = run_cli("--server=127.0.0.1:9", "--timeout=5", path)
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1 and "cannot reach" in result.stderr


def test_in_process_out_of_memory_is_one_line(monkeypatch):
    class Exhausted:
        def __call__(self, **kwargs):
            raise tf.errors.ResourceExhaustedError(
                None, None, "OOM when allocating tensor with shape[9,9]\n\t [[{{node x}}]]")

    class Loaded:
        signatures = {"serving_default": Exhausted()}

    monkeypatch.setattr(tf.saved_model, "load", lambda path: Loaded())
    call = predict_clients.saved_model_caller("/some/model")
    with pytest.raises(predict_clients.PredictError) as caught:
        call([b"x"])
    assert str(caught.value) == "out of memory: OOM when allocating tensor with shape[9,9]"
    assert not isinstance(caught.value, predict_clients.ItemError)


def test_classify_all_resends_without_the_refused_item():
    """A refusal naming an index drops that image; one naming none (an old
    export) makes each image go alone."""
    sent = []

    def call(batch):
        sent.append(list(batch))
        bad = [i for i, b in enumerate(batch) if b.startswith(b"bad")]
        if bad:
            raise predict_clients.ItemError(f"image_bytes[{bad[0]}] is broken" if len(batch) == 4
                                            else "Unknown image file format")
        return [{"ok": b.decode()} for b in batch]

    names = ["a", "b", "c", "d"]
    rows, refused = predict.classify_all(call, dict(enumerate([b"a", b"bad1", b"c", b"bad2"])),
                                         names)
    assert rows == {0: {"ok": "a"}, 2: {"ok": "c"}}
    assert refused == {1: "b is broken", 3: "d: Unknown image file format"}
    assert sent == [[b"a", b"bad1", b"c", b"bad2"], [b"a", b"c", b"bad2"], [b"a"], [b"c"],
                    [b"bad2"]]


def test_saved_model_in_process_matches_server_path(saved_model, rest_server, images):
    call = predict_clients.saved_model_caller(saved_model)  # a load of its own
    local = call(images)
    remote = predict_clients.rest_predict(rest_server.address, "alexnet", images)
    for a, b in zip(local, remote):
        assert a["top_k_wnids"] == b["top_k_wnids"]
        np.testing.assert_allclose(a["probabilities"], b["probabilities"], rtol=1e-6)
    with pytest.raises(predict_clients.ItemError) as caught:
        call([b""])
    assert caught.value.index == 0 and caught.value.reason == "is an empty string"


def test_grpc_predict_and_classify_against_in_process_prediction_service(signatures, images):
    grpc = pytest.importorskip("grpc")
    apis = pytest.importorskip("tensorflow_serving.apis.prediction_service_pb2_grpc")
    from tensorflow_serving.apis import classification_pb2, predict_pb2
    seen = []

    class Servicer(apis.PredictionServiceServicer):
        def Predict(self, request, context):
            seen.append(request)
            batch = tf.make_ndarray(request.inputs["image_bytes"])
            if list(batch) == [b"oom"]:
                context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, "OOM when allocating tensor "
                              "with shape[1,256,16768000,3]\n\t [[{{node resize}}]]")
            try:
                outputs = signatures["serving_default"](image_bytes=tf.constant(batch))
            except tf.errors.InvalidArgumentError as e:
                context.abort(grpc.StatusCode.INVALID_ARGUMENT, e.message)
            response = predict_pb2.PredictResponse()
            response.model_spec.CopyFrom(request.model_spec)
            for key, value in outputs.items():
                response.outputs[key].CopyFrom(tf.make_tensor_proto(value.numpy()))
            return response

        def Classify(self, request, context):
            seen.append(request)
            examples = [e.SerializeToString() for e in request.input.example_list.examples]
            out = signatures["classify"](inputs=tf.constant(examples))
            response = classification_pb2.ClassificationResponse()
            for classes, scores in zip(out["classes"].numpy(), out["scores"].numpy()):
                result = response.result.classifications.add()
                for c, s in zip(classes, scores):
                    result.classes.add(label=c.decode(), score=float(s))
            return response

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    apis.add_PredictionServiceServicer_to_server(Servicer(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    address = f"127.0.0.1:{port}"
    try:
        rows = predict_clients.grpc_predict(address, "alexnet", images, version=2)
        classified = predict_clients.grpc_predict(address, "alexnet", images,
                                                  signature_name="classify")
        with pytest.raises(predict_clients.ItemError) as caught:
            predict_clients.grpc_predict(address, "alexnet", [images[0], b""])
        with pytest.raises(predict_clients.PredictError) as exhausted:
            predict_clients.grpc_predict(address, "alexnet", [b"oom"])
    finally:
        server.stop(None)
    assert not isinstance(exhausted.value, predict_clients.ItemError)
    assert str(exhausted.value) == (f"{address}: RESOURCE_EXHAUSTED: OOM when allocating tensor "
                                    "with shape[1,256,16768000,3]")
    assert caught.value.index == 1 and caught.value.reason == "is an empty string"
    request = seen[0]
    assert request.model_spec.name == "alexnet" and request.model_spec.version.value == 2
    assert request.model_spec.signature_name == "serving_default"
    assert list(tf.make_ndarray(request.inputs["image_bytes"])) == images
    expected = signatures["serving_default"](image_bytes=tf.constant(images))
    for i, row in enumerate(rows):
        assert row["top_k_wnids"] == [w.decode() for w in expected["top_k_wnids"][i].numpy()]
        np.testing.assert_allclose(row["top_k_scores"], expected["top_k_scores"][i].numpy())
    assert seen[1].model_spec.signature_name == "classify"
    assert [r["classes"] for r in classified] == [r["top_k_wnids"] for r in rows]

"""Classify image files with an exported AlexNet: through TF Serving's REST
API (default), its gRPC API (--grpc), or in-process from the SavedModel
(--saved_model). The files' encoded bytes are sent as they are, so the
preprocessing is the server's.

    python -m launch.predict --server=localhost:8501 --model_name=alexnet img1.jpg img2.png
    python -m launch.predict --grpc --server=localhost:8500 --model_name=alexnet img1.jpg
    python -m launch.predict --saved_model=saved_models/alexnet/1 img1.jpg
    python -m launch.predict --signature_name=classify ...      # TF Serving's Classify API

prints, per image, the top-5 classes (wnid, name and probability; with
classify, the export's class labels and scores). A file that is missing, a
folder, or that the model refuses (not an image, corrupt, too large) gets
one line on stderr naming it, and the other files are still classified (a
file longer than the model accepts, --max_image_bytes, is refused from its
size without being read); the exit status is 1 if any file failed, 2 for a
usage error. A server that
cannot be reached, runs out of memory or fails otherwise: one line, status 1.
"""

from __future__ import annotations

import dataclasses
import os
import stat
import sys
from typing import Optional

from alexnet_tf import defaults
from alexnet_tf.cli import config_flags, terminal
from alexnet_tf.serving import budget
from alexnet_tf.options import option
from launch import predict_clients
from launch.predict_clients import CLASSIFY, SERVING_DEFAULT, ItemError, PredictError
from launch.serving_config import GRPC_PORT, REST_PORT

SIGNATURES_WITH_CLASSES = (SERVING_DEFAULT, CLASSIFY)


@dataclasses.dataclass
class PredictConfig:
    """The flags, defined from these fields."""

    server: Optional[str] = option(None, f"host:port of TF Serving: its REST port (default "
                                   f"localhost:{REST_PORT}) or with --grpc its gRPC port "
                                   f"(default localhost:{GRPC_PORT}).")
    # launch.serve names the model after its export_dir: the same default.
    model_name: str = option(os.path.basename(defaults.EXPORT_DIR), "Model name on the server.")
    model_version: Optional[int] = option(None, "Ask for this version (default: the server's "
                                          "latest).", lower_bound=0)
    signature_name: str = option(SERVING_DEFAULT, "serving_default (top-5 wnids, names, "
                                 "probabilities) or classify (TF Serving's Classify API: the "
                                 "export's class labels and scores).")
    grpc: bool = option(False, "Use the gRPC API (needs the tensorflow-serving-api package, "
                        "the 'serving' extra).")
    saved_model: Optional[str] = option(None, "Run this SavedModel version directory "
                                        "in-process instead of asking a server.")
    timeout: float = option(predict_clients.DEFAULT_TIMEOUT, "Seconds to wait for the server.")
    max_image_bytes: Optional[int] = option(None, "Refuse files longer than this, from their "
                                            "size, without reading them; default the "
                                            "--saved_model's recorded limit, else the "
                                            "export's default.", lower_bound=1)


def define_flags() -> None:
    """Defined only when run as a program, so that importing this module
    (tests, other tools) cannot clash with another tool's flags."""
    config_flags.define_flags(PredictConfig)


def shown(name: str) -> str:
    """A file name as it can be printed: bytes that are not UTF-8 (Linux
    hands them over as surrogates) as backslash escapes."""
    return os.fsencode(name).decode("utf-8", "backslashreplace")


def read_files(names: list[str], max_bytes: int = defaults.MAX_IMAGE_BYTES
               ) -> tuple[dict[int, bytes], dict[int, str]]:
    """(index -> bytes of the readable files, index -> why a file is not).
    A file longer than `max_bytes` (what the model accepts) is refused from
    its size, never read."""
    contents, problems = {}, {}
    too_long = f"more than the {budget.describe(max_bytes)} an image may have (--max_image_bytes)"
    for i, name in enumerate(names):
        try:
            if os.path.isdir(name):
                problems[i] = f"{shown(name)}: is a folder, not an image file"
                continue
            if os.path.exists(name) and not stat.S_ISREG(os.stat(name).st_mode):
                problems[i] = f"{shown(name)}: is not a regular file"  # a FIFO would block
                continue
            size = os.stat(name).st_size
            if size > max_bytes:
                problems[i] = f"{shown(name)}: is {budget.describe(size)}, {too_long}"
                continue
            with open(name, "rb") as f:
                data = f.read(max_bytes + 1)  # a file may grow, or lie (/proc) about its size
            if len(data) > max_bytes:
                problems[i] = f"{shown(name)}: is {too_long}"
                continue
            contents[i] = data
        except FileNotFoundError:
            problems[i] = f"{shown(name)}: no such file"
        except OSError as e:
            problems[i] = f"{shown(name)}: cannot be read ({e.strerror or e})"
    return contents, problems


def classify_all(call, images: dict[int, bytes], names: list[str]):
    """(index -> output row, index -> refusal line) for all `images`, sent
    in one batch. A batch the model refuses because of one item (the
    message names it) is resent without that item; when the message names
    none, each image is sent alone. PredictError (the server's own failure)
    is left to the caller."""
    rows, refused = {}, {}
    pending = sorted(images)
    while pending:
        try:
            answers = call([images[i] for i in pending])
        except ItemError as e:
            if e.index is not None and 0 <= e.index < len(pending):
                bad = pending.pop(e.index)
                refused[bad] = f"{shown(names[bad])} {e.reason}"
                continue
            if len(pending) == 1:
                refused[pending[0]] = f"{shown(names[pending[0]])}: {e.reason}"
                break
            for i in pending:
                sub_rows, sub_refused = classify_all(call, {i: images[i]}, names)
                rows.update(sub_rows)
                refused.update(sub_refused)
            break
        rows.update(zip(pending, answers))
        break
    return rows, refused


def make_call(config: PredictConfig):
    """A function list[bytes] -> list[row] for the transport the flags pick."""
    kwargs = dict(signature_name=config.signature_name)
    if config.saved_model:
        return predict_clients.saved_model_caller(config.saved_model, **kwargs)
    remote = dict(model_name=config.model_name, version=config.model_version,
                  timeout=config.timeout, **kwargs)
    if config.grpc:
        return lambda images: predict_clients.grpc_predict(
            config.server or f"localhost:{GRPC_PORT}", images=images, **remote)
    return lambda images: predict_clients.rest_predict(
        config.server or f"localhost:{REST_PORT}", images=images, **remote)


def main(argv):
    names = argv[1:]
    config = config_flags.from_flags(PredictConfig)
    if not names:
        terminal.usage_error("name at least one image file")
    if config.signature_name not in SIGNATURES_WITH_CLASSES:
        terminal.usage_error(f"--signature_name={config.signature_name}: gives no classes to "
                             "print; use serving_default or classify")
    if config.timeout <= 0:
        terminal.usage_error(f"--timeout={config.timeout}: must be more than 0 seconds")
    if config.saved_model and not os.path.isfile(
            os.path.join(config.saved_model, predict_clients.SAVED_MODEL_FILENAME)):
        terminal.usage_error(f"--saved_model={config.saved_model}: no "
                             f"{predict_clients.SAVED_MODEL_FILENAME} there (give a version "
                             "folder, e.g. saved_models/alexnet/1)")
    max_bytes = config.max_image_bytes or (
        config.saved_model and budget.recorded_max_image_bytes(config.saved_model)
    ) or defaults.MAX_IMAGE_BYTES
    images, problems = read_files(names, max_bytes)
    rows = {}
    try:
        if images:
            rows, refused = classify_all(make_call(config), images, names)
            problems.update(refused)
    except PredictError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    for i, name in enumerate(names):
        if i in rows:
            print(predict_clients.format_top_k(shown(name), rows[i]))
        else:
            print(f"error: {problems[i]}", file=sys.stderr)
    sys.stdout.flush()
    return 1 if problems else 0


if __name__ == "__main__":
    define_flags()
    terminal.run(main, takes_arguments=True)

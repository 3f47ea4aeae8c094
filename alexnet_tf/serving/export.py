"""Export a trained AlexNet as a SavedModel that TensorFlow Serving loads as is.

`export_saved_model` writes `<export_base>/<version>/` with the four
signatures of `signatures.ServingModule` (serving_default, predict_images,
classify, features). The label map ships as `assets/labels.txt`; its wnids
and names are also baked into the graph as constants so the signatures need
no table initialisation. The model's variables are tracked once (Keras 3's
`model.export` stored every weight twice), no op is pinned to a device and
nothing is XLA-compiled, so the export loads on a CPU-only and on a one-GPU
server. `saved_model_proto.finalize` edits the written proto (the classify
method name, advertised input shapes) before the version is published.

The names below are re-exported from `signatures` and `warmup`, so callers
need only this module.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import tempfile

import keras
import tensorflow as tf

from alexnet_tf import fileio, run_lock
from alexnet_tf.data.labels import LABELS_FILENAME, LabelMap
from alexnet_tf.errors import InputError
from alexnet_tf.data import decode, image_header
from alexnet_tf.serving import budget, example_wire, requests, saved_model_proto
from alexnet_tf.serving.saved_model_proto import (  # noqa: F401  re-exported
    pinned_devices, read_saved_model_proto, serving_node_defs, xla_compiled_nodes)
from alexnet_tf.serving.signatures import (  # noqa: F401  re-exported
    CLASSIFY, CLASSIFY_CLASSES, CLASSIFY_INPUTS, CLASSIFY_SCORES, DEFAULT_TOP_K, FEATURES,
    IMAGE_BYTES, IMAGES, PREDICT_IMAGES, PREDICT_OUTPUTS, SERVING_DEFAULT, SIGNATURES,
    ServingModule, crop_size)
from alexnet_tf.serving.warmup import (  # noqa: F401  re-exported
    WARMUP_DIRNAME, WARMUP_FILENAME, warmup_image_bytes, write_warmup_requests)

__all__ = [
    "CLASSIFY", "CLASSIFY_CLASSES", "CLASSIFY_INPUTS", "CLASSIFY_SCORES", "DEFAULT_TOP_K",
    "FEATURES", "IMAGE_BYTES", "IMAGES", "PREDICT_IMAGES", "PREDICT_OUTPUTS", "SERVING_DEFAULT",
    "SIGNATURES", "ServingModule", "WARMUP_DIRNAME", "WARMUP_FILENAME", "crop_size",
    "existing_versions", "export_saved_model", "next_version", "pinned_devices",
    "read_saved_model_proto", "serving_node_defs", "unplaced", "warmup_image_bytes",
    "write_warmup_requests", "xla_compiled_nodes"]

_VERSION_DIR = re.compile(r"^\d+$")


def existing_versions(export_base: str) -> list[int]:
    """Integer version directories under `export_base`, ascending."""
    if not os.path.isdir(export_base):
        return []
    return sorted(int(d) for d in os.listdir(export_base)
                  if _VERSION_DIR.match(d) and os.path.isdir(os.path.join(export_base, d)))


def next_version(export_base: str) -> int:
    versions = existing_versions(export_base)
    return versions[-1] + 1 if versions else 1


def unplaced(model: keras.Model) -> keras.Model:
    """`model`, or when its towers are pinned to devices (`tower_devices`), a
    copy rebuilt without placement carrying the same weights: placement
    belongs to the training process, never to the export."""
    if not getattr(model, "tower_devices", None):
        return model
    copy = type(model).from_config(model.get_config())  # config drops tower_devices
    copy.set_weights(model.get_weights())
    logging.info("rebuilt %s without tower placement for export", model.name)
    return copy


def request_limits(max_image_bytes: int) -> dict:
    """Every limit a request of this export is checked against."""
    return {"max_image_bytes": max_image_bytes,
            "example_overhead_bytes": budget.EXAMPLE_OVERHEAD_BYTES,
            "max_batch": requests.MAX_BATCH, "max_pixels": decode.MAX_PIXELS,
            "max_jpeg_scans": image_header.MAX_JPEG_SCANS,
            "jpeg_scan_pixels": decode.JPEG_SCAN_PIXELS,
            "max_png_text_chunks": image_header.MAX_PNG_TEXT_CHUNKS,
            "gif_max_steps": image_header.GIF_MAX_STEPS,
            "max_example_fields": example_wire.MAX_FIELDS}


def export_saved_model(model: keras.Model, label_map: LabelMap, export_base: str,
                       version: int | None = None, *, top_k: int = DEFAULT_TOP_K,
                       classify_classes: str = "wnids", warmup: bool = True,
                       max_image_bytes: int = budget.DEFAULT_MAX_IMAGE_BYTES) -> str:
    """Writes `<export_base>/<version>/` and returns its path.

    `version` defaults to the next free integer. The SavedModel is written to
    a hidden temporary directory in `export_base` and renamed into place when
    complete, so a server polling `export_base` never sees half a model (TF
    Serving only looks at all-digit directory names). An existing version is
    never overwritten. The folder's lock (`alexnet_tf.run_lock`) refuses a
    second export into `export_base` while this one runs.

    A model whose towers are pinned (`tower_devices`) is rebuilt unplaced
    first; any other op still pinned to a device, or any XLA-compiled
    function, makes the export fail rather than publish a model that a
    CPU-only or one-GPU server could not load.

    `max_image_bytes` is the longest image (or classify Example, plus
    budget.EXAMPLE_OVERHEAD_BYTES) a request may hold; the limits of a
    request are recorded in `assets/request_budget.json`.
    """
    max_image_bytes = budget.check_max_image_bytes(max_image_bytes)
    if os.path.lexists(export_base) and not os.path.isdir(export_base):
        raise NotADirectoryError(f"export base {export_base} is a file (or a dangling link), "
                                 "not a folder")
    if not fileio.is_utf8_path(export_base):
        raise InputError(f"export base {os.fsencode(export_base)!r}: {fileio.NOT_UTF8}")
    if version is not None and int(version) < 0:
        raise ValueError(f"version must be a non-negative integer, got {version}")
    with run_lock.hold(export_base, "export"):  # one export into a folder at a time
        return _export_locked(model, label_map, export_base, version, top_k,
                              classify_classes, warmup, max_image_bytes)


def _export_locked(model, label_map, export_base, version, top_k, classify_classes,
                   warmup, max_image_bytes) -> str:
    version = next_version(export_base) if version is None else int(version)
    final_dir = os.path.join(export_base, str(version))
    if os.path.exists(final_dir):
        raise FileExistsError(f"{final_dir} already exists: pick another version "
                              "or leave it unset for the next free one")
    tmp_dir = tempfile.mkdtemp(prefix=f".tmp-{version}-", dir=export_base)
    try:
        # The label file is written first so the Asset copies it into assets/.
        labels_path = os.path.join(tempfile.mkdtemp(dir=tmp_dir), LABELS_FILENAME)
        label_map.write(labels_path)
        module = ServingModule(unplaced(model), label_map, labels_path, top_k, classify_classes,
                               max_image_bytes)
        budget_path = os.path.join(os.path.dirname(labels_path), budget.BUDGET_FILENAME)
        budget.write_record(budget_path, request_limits(max_image_bytes))
        module.request_budget = tf.saved_model.Asset(budget_path)  # copied into assets/
        saved_dir = os.path.join(tmp_dir, "saved_model")
        tf.saved_model.save(module, saved_dir, signatures=module.signatures())
        saved_model_proto.finalize(saved_dir, CLASSIFY, module.advertised_input_shapes())
        if warmup:
            write_warmup_requests(saved_dir)
        os.rename(saved_dir, final_dir)
    finally:
        shutil.rmtree(tmp_dir, ignore_errors=True)
    logging.info("exported SavedModel version %d to %s", version, final_dir)
    return final_dir


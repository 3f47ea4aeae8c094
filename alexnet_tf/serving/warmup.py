"""TF Serving warm-up requests (`assets.extra/tf_serving_warmup_requests`),
replayed by the server on load (`--enable_model_warmup`) so the first real
request does not pay for graph initialisation."""

from __future__ import annotations

import logging
import os

import numpy as np
import tensorflow as tf

from alexnet_tf.data import records
from alexnet_tf.serving.signatures import CLASSIFY, FEATURES, IMAGE_BYTES, SERVING_DEFAULT

WARMUP_DIRNAME = "assets.extra"
WARMUP_FILENAME = "tf_serving_warmup_requests"


def warmup_image_bytes(height: int = 300, width: int = 400) -> bytes:
    """A deterministic synthetic JPEG (colour gradients) for warm-up requests;
    its size makes the graph run the resize branch, as a real photo does."""
    y = np.linspace(0, 255, height, dtype=np.float32)[:, None]
    x = np.linspace(0, 255, width, dtype=np.float32)[None, :]
    image = np.stack([np.broadcast_to(y, (height, width)),
                      np.broadcast_to(x, (height, width)),
                      np.broadcast_to((y + x) / 2, (height, width))], axis=-1)
    return tf.io.encode_jpeg(image.astype(np.uint8), quality=90).numpy()


def write_warmup_requests(saved_dir: str, batch_sizes=(1, 8)) -> str | None:
    """Writes `assets.extra/tf_serving_warmup_requests`: PredictionLogs that TF
    Serving replays on load (`--enable_model_warmup`) so the first real
    request does not pay for graph initialisation. Needs the
    tensorflow-serving-api package; without it, logs why and skips."""
    try:
        from tensorflow_serving.apis import (classification_pb2, predict_pb2,
                                             prediction_log_pb2)
    except ImportError:
        logging.info("tensorflow-serving-api is not installed: no warm-up file written "
                     "(install the 'serving' extra to get %s/%s)", WARMUP_DIRNAME, WARMUP_FILENAME)
        return None
    image = warmup_image_bytes()
    logs = []
    for batch in batch_sizes:
        for signature in (SERVING_DEFAULT, FEATURES):
            request = predict_pb2.PredictRequest()
            request.model_spec.signature_name = signature
            request.inputs[IMAGE_BYTES].CopyFrom(
                tf.make_tensor_proto([image] * batch, dtype=tf.string, shape=[batch]))
            logs.append(prediction_log_pb2.PredictionLog(
                predict_log=prediction_log_pb2.PredictLog(request=request)))
        request = classification_pb2.ClassificationRequest()
        request.model_spec.signature_name = CLASSIFY
        example = records.make_example(records.ImageRecord(
            encoded=image, height=300, width=400, label=-1, synset="", text="", filename=""))
        for _ in range(batch):
            request.input.example_list.examples.add().CopyFrom(example)
        logs.append(prediction_log_pb2.PredictionLog(
            classify_log=prediction_log_pb2.ClassifyLog(request=request)))
    path = os.path.join(saved_dir, WARMUP_DIRNAME, WARMUP_FILENAME)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with tf.io.TFRecordWriter(path) as writer:
        for log in logs:
            writer.write(log.SerializeToString())
    return path

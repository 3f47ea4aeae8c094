"""fc7 feature extraction and nearest-neighbour retrieval (section 6.1,
Figure 4 right): two images are similar when their 4,096-d fc7 activations
are close in Euclidean distance.

Features of a whole split are written once to disk (`<split>_fc7.npy` and an
index `<split>_fc7_index.json` naming each row's shard, position in the
shard, file name and label), so queries reuse them instead of recomputing.
"""

from __future__ import annotations

import json
import os

import keras
import numpy as np
import tensorflow as tf

from alexnet_tf import fileio
from alexnet_tf.data import preprocessing, records
from alexnet_tf.model.alexnet import FEATURES_LAYER


def feature_model(model: keras.Model) -> keras.Model:
    """The trained model cut at fc7 (post-ReLU, before dropout)."""
    return keras.Model(model.input, model.get_layer(FEATURES_LAYER).output,
                       name=f"{model.name}_fc7")


def _indexed_records(files: list[str]) -> tf.data.Dataset:
    """(shard index, position in shard, serialized record), in file order."""
    def per_file(shard, path):
        return tf.data.TFRecordDataset(path).enumerate().map(
            lambda pos, rec: (shard, pos, rec))
    return tf.data.Dataset.from_tensor_slices(
        (tf.range(len(files), dtype=tf.int64), files)).flat_map(per_file)


def extract_features(model: keras.Model, data_dir: str, split: str, out_dir: str,
                     batch_size: int = 64, max_images: int | None = None) -> tuple[str, str]:
    """Writes fc7 features of every image of a split (centre crop, as in
    evaluation); returns the paths of the .npy and the index."""
    files = records.list_shards(data_dir, split)
    extractor = feature_model(model)
    crop_size = model.input_shape[1]

    def prepare(shard, pos, serialized):
        parsed = records.parse_example(serialized)
        return (preprocessing.eval_image(parsed[records.ENCODED], crop_size),
                shard, pos, parsed[records.FILENAME], parsed[records.LABEL])

    ds = _indexed_records(files)
    if max_images:
        ds = ds.take(max_images)
    ds = ds.map(prepare, num_parallel_calls=tf.data.AUTOTUNE).batch(batch_size).prefetch(2)
    feats, index = [], []
    for images, shards, positions, names, labels in ds:
        feats.append(extractor(images, training=False).numpy().astype(np.float32))
        for s, p, n, l in zip(shards.numpy(), positions.numpy(), names.numpy(), labels.numpy()):
            index.append({"shard": os.path.basename(files[s]), "position": int(p),
                          "filename": n.decode(), "label": int(l)})
    os.makedirs(out_dir, exist_ok=True)
    npy_path = os.path.join(out_dir, f"{split}_fc7.npy")
    index_path = os.path.join(out_dir, f"{split}_fc7_index.json")
    with fileio.atomic_path(npy_path, suffix=".npy") as tmp:
        np.save(tmp, np.concatenate(feats) if feats else np.zeros((0, 0), np.float32))
    fileio.write_json(index_path, {"data_dir": os.path.abspath(data_dir), "split": split,
                                   "rows": index})
    return npy_path, index_path


def load_features(out_dir: str, split: str) -> tuple[np.ndarray, list[dict]]:
    feats = np.load(os.path.join(out_dir, f"{split}_fc7.npy"))
    with open(os.path.join(out_dir, f"{split}_fc7_index.json"), encoding="utf-8") as f:
        rows = json.load(f)["rows"]
    if len(rows) != len(feats):
        raise ValueError(f"{out_dir}: {split} index has {len(rows)} rows for {len(feats)} features")
    return feats, rows


def nearest_neighbours(queries: np.ndarray, database: np.ndarray, k: int = 6,
                       chunk: int = 8192) -> tuple[np.ndarray, np.ndarray]:
    """Indices [q, k] and Euclidean distances [q, k] of the k nearest rows of
    `database` for each query, scanning the database in chunks."""
    queries = queries.astype(np.float64)
    q_norm = (queries ** 2).sum(1, keepdims=True)
    best_d = np.full((len(queries), 0), np.inf)
    best_i = np.zeros((len(queries), 0), np.int64)
    for start in range(0, len(database), chunk):
        block = database[start:start + chunk].astype(np.float64)
        d2 = q_norm - 2 * queries @ block.T + (block ** 2).sum(1)[None, :]
        d = np.concatenate([best_d, d2], axis=1)
        i = np.concatenate([best_i, np.broadcast_to(
            np.arange(start, start + len(block)), d2.shape)], axis=1)
        keep = np.argsort(d, axis=1, kind="stable")[:, :k]
        best_d, best_i = np.take_along_axis(d, keep, 1), np.take_along_axis(i, keep, 1)
    return best_i, np.sqrt(np.maximum(best_d, 0))


def read_record_images(data_dir: str, rows: list[dict],
                       crop_size: int = preprocessing.CROP_SIZE) -> np.ndarray:
    """The centre-cropped images of the given index rows, fetched by shard and
    position without scanning the whole split."""
    images = []
    for row in rows:
        path = os.path.join(data_dir, row["shard"])
        serialized = next(iter(tf.data.TFRecordDataset(path).skip(row["position"]).take(1)))
        encoded = records.parse_example(serialized)[records.ENCODED]
        images.append(preprocessing.eval_image(encoded, crop_size).numpy())
    return np.stack(images)

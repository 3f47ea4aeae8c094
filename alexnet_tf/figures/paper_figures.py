"""Renders the paper's figures for a trained model: writes PNGs to `out_dir`
and the same images to TensorBoard (`<model_dir>/logs/figures`).

- figure3_kernels.png: the conv1 kernels, tower A's above tower B's (Figure 3).
- figure4_top5.png: validation images with their top-5 labels (Figure 4 left).
- figure4_neighbours.png: query images and the training images nearest in fc7
  space (Figure 4 right); training features are cached in `out_dir/features`.
- training_curves.png: loss, top-1/top-5 error and learning rate from the logs.
"""

from __future__ import annotations

import logging
import os

import keras
import numpy as np
import tensorflow as tf

from alexnet_tf.figures import features, render as figures, tb_logs
from alexnet_tf.data import input_pipeline, labels
from alexnet_tf.training import evaluate

log = logging.getLogger(__name__)


def conv1_kernels(model: keras.Model) -> list[np.ndarray]:
    """conv1 weights per tower ([11, 11, 3, n] each), tower A first."""
    names = [l.name for l in model.layers]
    towers = [n for n in ("conv1_a", "conv1_b") if n in names] or ["conv1"]
    return [model.get_layer(n).get_weights()[0] for n in towers]


def spread_over_classes(labels: np.ndarray, count: int) -> list[int]:
    """Indices of `count` examples taking the classes in turn (validation
    shards may be sorted by class: the first few images would all be one)."""
    by_class: dict[int, list[int]] = {}
    for i, label in enumerate(labels):
        by_class.setdefault(int(label), []).append(i)
    queues = list(by_class.values())
    chosen = []
    while len(chosen) < min(count, len(labels)):
        for queue in queues:
            if queue and len(chosen) < count:
                chosen.append(queue.pop(0))
    return chosen


def render(model: keras.Model, data_dir: str, out_dir: str, model_dir: str | None = None,
           num_top5: int = 8, num_queries: int = 5, num_neighbours: int = 6,
           max_train_images: int | None = None, candidate_pool: int = 256) -> dict[str, str]:
    """Writes every figure it can; returns {figure name: png path}."""
    data_labels = labels.LabelMap.read(os.path.join(data_dir, labels.LABELS_FILENAME))
    evaluate.check_labels(model_dir or data_dir, data_labels, model.output_shape[-1])
    os.makedirs(out_dir, exist_ok=True)
    label_map = labels.LabelMap.read(os.path.join(model_dir or data_dir, labels.LABELS_FILENAME))
    written = {}

    def emit(name, image):
        path = os.path.join(out_dir, f"{name}.png")
        figures.save_png(image, path)
        written[name] = path
        log.info("wrote %s (%dx%d)", path, image.shape[1], image.shape[0])

    emit("figure3_kernels", figures.kernel_grid(conv1_kernels(model)))

    crop_size = model.input_shape[1]
    pool_images, pool_labels = next(iter(input_pipeline.make_eval_dataset(
        data_dir, candidate_pool, crop_size=crop_size)))
    chosen = spread_over_classes(pool_labels.numpy(), num_top5)
    images, truth = pool_images.numpy()[chosen], pool_labels.numpy()[chosen]
    probs = model(images, training=False).numpy()
    emit("figure4_top5", figures.top5_figure(images, probs, truth, label_map.names))

    feature_dir = os.path.join(out_dir, "features")
    try:
        db, db_rows = features.load_features(feature_dir, "train")
    except FileNotFoundError:
        features.extract_features(model, data_dir, "train", feature_dir,
                                  max_images=max_train_images)
        db, db_rows = features.load_features(feature_dir, "train")
    query_images = images[:num_queries]
    query_feats = features.feature_model(model)(query_images, training=False).numpy()
    nearest, _ = features.nearest_neighbours(query_feats, db, k=min(num_neighbours, len(db)))
    neighbour_images = np.stack([features.read_record_images(
        data_dir, [db_rows[i] for i in row], crop_size)
                                 for row in nearest])
    emit("figure4_neighbours", figures.neighbours_figure(query_images, neighbour_images))

    if model_dir and os.path.isdir(os.path.join(model_dir, "logs")):
        scalars = tb_logs.read_scalars(os.path.join(model_dir, "logs"))
        scalars = {run: series for run, series in scalars.items() if run in ("train", "validation")}
        if scalars:
            emit("training_curves", figures.curves_figure(scalars))

    if model_dir:
        writer = tf.summary.create_file_writer(os.path.join(model_dir, "logs", "figures"))
        with writer.as_default():
            for name, path in written.items():
                image = tf.io.decode_png(tf.io.read_file(path), channels=3)
                tf.summary.image(name, image[None], step=0)
        writer.close()
    return written

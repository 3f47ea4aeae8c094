"""Tiny synthetic data sets and model settings for the training tests.

Each class is a colour (plus noise), so a small AlexNet separates them in a
few dozen steps. The files are what data prep writes: TFRecord shards in the
shared schema, labels.txt and stats.json.
"""

from __future__ import annotations

import hashlib
import json
import os
import re

import numpy as np
import tensorflow as tf

from alexnet_tf.data import dataset_stats, labels, records
from alexnet_tf.data.records_check import MANIFEST_FILENAME

COLOURS = ((220, 40, 40), (40, 200, 40), (40, 40, 220), (220, 220, 40), (40, 220, 220))
# The one tiny configuration of the suite: every layer and name of the
# paper's net at the smallest input the model accepts (67x67: pool5 is 1x1),
# a sixteenth of the conv1-conv4 kernels and 768 fc6/fc7 neurons: 827,675
# parameters for 3 classes (the paper's 60,965,224 are proven in
# test_model.py). Why 768: with the paper's N(0, 0.01) fully connected
# init, narrower fc layers pass too little signal to learn the colours in a
# few dozen steps (64 or 256 units: the loss stays at chance for 40 steps at
# lr 0.01); 768 learns them at lr 0.02 (loss 1.10 -> 0.01 in 40 steps).
TINY_MODEL = {"image_size": 67, "width": 0.0625, "fc_units": (768, 768)}
# The learning rate at which TINY_MODEL learns the colours within ~30 steps.
TINY_LEARNING_RATE = 0.02


def tiny_flags() -> list[str]:
    """TINY_MODEL as the launchers' flags (for the subprocess tests)."""
    return [f"--{key}={','.join(map(str, value)) if isinstance(value, tuple) else value}"
            for key, value in TINY_MODEL.items()]


def tiny_train_config(data_dir, model_dir, model: dict | None = None, **overrides):
    """A TrainConfig of the tiny configuration: TINY_MODEL without dropout
    (the colours are learnt within a few dozen steps), batches of 8, two
    steps an epoch, a loss line every step; `model` and `overrides` change
    any of it."""
    from alexnet_tf.training.config import ModelConfig, TrainConfig
    values = dict(batch_size=8, epochs=1, steps_per_epoch=2, log_every_steps=1,
                  checkpoint_every_steps=100, shuffle_buffer=64, seed=3)
    values.update(overrides)
    return TrainConfig(data_dir=os.fspath(data_dir), model_dir=os.fspath(model_dir),
                       model=ModelConfig(**{**TINY_MODEL, "dropout": 0.0, **(model or {})}),
                       **values)


def write_tiny_dataset(data_dir, num_classes: int = 3, train_per_class: int = 16,
                       val_per_class: int = 4, size: int = 72, train_shards: int = 2,
                       noise: float = 25.0, seed: int = 0) -> str:
    """Writes shards, labels.txt and stats.json; `noise=0` makes every image
    of a class identical (crop and flip then change nothing)."""
    data_dir = os.fspath(data_dir)
    os.makedirs(data_dir, exist_ok=True)
    rng = np.random.default_rng(seed)
    wnids = [f"n{index:08d}" for index in range(num_classes)]
    label_map = labels.LabelMap.from_wnids(wnids, {w: f"colour {i}" for i, w in enumerate(wnids)})
    label_map.write(os.path.join(data_dir, labels.LABELS_FILENAME))
    count, pixel_sum, outer_sum = 0, np.zeros(3), np.zeros((3, 3))
    for prefix, per_class, shards in ((records.TRAIN_PREFIX, train_per_class, train_shards),
                                      (records.VALIDATION_PREFIX, val_per_class, 1)):
        examples = []
        for label, wnid in enumerate(label_map.wnids):
            for i in range(per_class):
                colour = np.array(COLOURS[label % len(COLOURS)], np.float32)
                image = np.clip(colour + rng.normal(0, noise, (size, size, 3)), 0, 255)
                image = image.astype(np.uint8)
                if prefix == records.TRAIN_PREFIX:
                    pixels = image.reshape(-1, 3).astype(np.float64)
                    count += len(pixels)
                    pixel_sum += pixels.sum(0)
                    outer_sum += pixels.T @ pixels
                encoded = tf.io.encode_jpeg(image, quality=95).numpy()
                examples.append(records.ImageRecord(
                    encoded, size, size, label, wnid, label_map.name(label),
                    f"{prefix}_{wnid}_{i}.JPEG"))
        order = rng.permutation(len(examples))
        for shard in range(shards):
            path = os.path.join(data_dir, records.shard_name(prefix, shard, shards))
            with tf.io.TFRecordWriter(path) as writer:
                for j in order[shard::shards]:
                    writer.write(records.serialize(examples[j]))
    write_manifest(data_dir)
    stats = dataset_stats.RGBStats.from_moments(count, pixel_sum, outer_sum)
    with open(os.path.join(data_dir, dataset_stats.STATS_FILENAME), "w") as f:
        json.dump({"rgb": dataset_stats.rgb_stats_to_json(stats),
                   "splits": {"train": {"images": num_classes * train_per_class},
                              "validation": {"images": num_classes * val_per_class}}}, f)
    return data_dir


def write_manifest(data_dir: str) -> None:
    """manifest.json as data prep ends a build: every shard's name, records,
    bytes and sha256 (training refuses a folder whose shards do not match)."""
    shards = []
    for split in (records.TRAIN_PREFIX, records.VALIDATION_PREFIX):
        for path in records.list_shards(data_dir, split):
            with open(path, "rb") as f:
                data = f.read()
            shards.append({"name": os.path.basename(path), "bytes": len(data),
                           "records": sum(1 for _ in tf.data.TFRecordDataset(path)),
                           "sha256": hashlib.sha256(data).hexdigest()})
    with open(os.path.join(data_dir, MANIFEST_FILENAME), "w") as f:
        json.dump({"shards": shards}, f)


def temporary_leftovers(folder) -> list[str]:
    """Every `*_temp` or `*.tmp*` entry under `folder`: what an interrupted
    save would leave (a model_dir must hold none once a run has stopped)."""
    found = []
    for root, dirs, files in os.walk(folder):
        found += [os.path.join(root, n) for n in dirs + files
                  if n.endswith("_temp") or ".tmp" in n]
    return found


_STOPPED = re.compile(r"^launch\.train: stopped by (.+?) at step (\d+), checkpoint (\S+) "
                      r"saved; resume with: (.+)$", re.M)


def stop_lines(stderr: str) -> list[tuple[str, str, str, str]]:
    """launch.train's line on a preemption stop, parsed: (cause, step,
    checkpoint, resume command) for each such line."""
    return _STOPPED.findall(stderr)

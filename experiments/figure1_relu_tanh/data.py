"""CIFAR-10 in memory for the Figure 1 runs, and the input normalizations."""

from __future__ import annotations

import dataclasses

import numpy as np
import tensorflow as tf

from alexnet_tf.data import preprocessing, records
from alexnet_tf.errors import InputError


def load_split(records_dir: str, prefix: str = records.TRAIN_PREFIX, *,
               image_size: int = 32, max_images: int | None = None,
               seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Decodes one split of the data prep's TFRecords into memory.

    Returns uint8 [N, S, S, 3] images and int32 [N] labels. CIFAR-10 is small
    (150 MB as uint8), so every epoch then trains from memory, not from JPEG.
    `max_images` keeps a random subset (the records may be in class order).
    """
    files = records.list_shards(records_dir, prefix)
    encoded, labels, names = [], [], []
    for batch in tf.data.TFRecordDataset(files).batch(4096):
        parsed = records.parse_examples(batch)
        encoded.extend(parsed[records.ENCODED].numpy())
        labels.extend(parsed[records.LABEL].numpy())
        names.extend(parsed[records.FILENAME].numpy())
    labels = np.asarray(labels, np.int64)
    if max_images is not None and max_images < len(encoded):
        keep = np.sort(np.random.default_rng(seed).permutation(len(encoded))[:max_images])
        encoded = [encoded[i] for i in keep]
        names = [names[i] for i in keep]
        labels = labels[keep]
    if np.any(labels < 0):
        bad = names[int(np.argmax(labels < 0))].decode()
        raise InputError(f"{records_dir}: record {bad!r} has no label")

    images = np.empty((len(encoded), image_size, image_size, 3), np.uint8)
    decoded = tf.data.Dataset.from_tensor_slices(encoded).map(
        preprocessing.decode_rgb, num_parallel_calls=tf.data.AUTOTUNE)
    for i, image in enumerate(decoded.as_numpy_iterator()):
        if image.shape != images.shape[1:]:
            raise InputError(
                f"{records_dir}: image {names[i].decode()!r} is {image.shape}, "
                f"expected {images.shape[1:]} (build the records with --image_size={image_size})")
        images[i] = image
    return images, labels.astype(np.int32)


@dataclasses.dataclass(frozen=True)
class InputNormalization:
    """x -> (x - mean_image) / scale, with scale per channel (1 = no scaling)."""

    mean_image: np.ndarray  # float32 [S, S, 3], 0..255 scale
    scale: np.ndarray       # float32 [3]

    @classmethod
    def fit(cls, images: np.ndarray, condition: str) -> "InputNormalization":
        mean = images.mean(axis=0, dtype=np.float64)
        if condition == "paper":
            scale = np.ones(3)
        else:
            centred = images.astype(np.float32) - mean.astype(np.float32)
            scale = np.sqrt((centred.astype(np.float64) ** 2).mean(axis=(0, 1, 2)))
        return cls(mean.astype(np.float32), scale.astype(np.float32))

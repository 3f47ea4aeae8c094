"""Evaluation: 1-crop and 10-crop top-1/top-5 error and the ensemble average,
checked against the same figures computed by hand in numpy."""

import json
import os

import keras
import numpy as np
import pytest
import tensorflow as tf

from alexnet_tf.training import checkpoints, model_dir as model_dir_files
from alexnet_tf.data import input_pipeline, labels, preprocessing
from alexnet_tf.data.dataset_stats import IMAGENET_STD_RGB
from alexnet_tf.training.evaluate import evaluate
from alexnet_tf.model.alexnet import build_alexnet
from tiny_data import TINY_MODEL, write_tiny_dataset

NUM_CLASSES = 6  # more than 5, so top-5 is not trivially right


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("eval")
    data_dir = write_tiny_dataset(root / "data", num_classes=NUM_CLASSES, train_per_class=1,
                                  val_per_class=3, size=80)
    model_dirs = []
    for seed in (1, 2):  # two untrained He-initialized models: varied predictions
        keras.utils.set_random_seed(seed)
        config = {"num_classes": NUM_CLASSES, **TINY_MODEL, "init": "he",
                  "std_rgb": list(IMAGENET_STD_RGB)}
        model = build_alexnet(**config)
        model_dir = str(root / f"model{seed}")
        os.makedirs(os.path.join(model_dir, "best"))
        model_dir_files.write_model_config(model_dir, config)
        tf.train.Checkpoint(model=model).save(os.path.join(model_dir, "best", "ckpt"))
        model_dirs.append(model_dir)
    return data_dir, model_dirs


@pytest.fixture(scope="module")
def restored(setup):
    """The two models as the by-hand computation reads them, restored once."""
    return [checkpoints.restore_model(model_dir, "best") for model_dir in setup[1]]


def _by_hand(data_dir, models, crops):
    """Softmax per model (averaged over crops made here in numpy), then errors.
    The stored view uses the shared op (another JPEG decoder differs by a few
    pixel levels); the crops, averaging and ranking are done here."""
    size = TINY_MODEL["image_size"]
    images, targets = [], []
    raw = tf.data.TFRecordDataset(input_pipeline.list_shards(data_dir, "validation"))
    for record in raw:
        example = tf.train.Example.FromString(record.numpy())
        encoded = example.features.feature["image/encoded"].bytes_list.value[0]
        targets.append(example.features.feature["image/class/label"].int64_list.value[0])
        image = preprocessing.stored_view(encoded, preprocessing.stored_size(size)).numpy()
        h, w = image.shape[:2]
        boxes = [((h - size) // 2, (w - size) // 2)]
        if crops == 10:
            boxes = [(0, 0), (0, w - size), (h - size, 0), (h - size, w - size)] + boxes
        views = [image[t:t + size, l:l + size] for t, l in boxes]
        if crops == 10:
            views += [v[:, ::-1] for v in views]
        images.append(np.stack(views))
    images, targets = np.stack(images), np.array(targets)
    per_model = []
    for model in models:  # called eagerly: no predict function to trace
        probs = model(images.reshape(-1, size, size, 3), training=False).numpy()
        per_model.append(probs.reshape(len(targets), crops, -1).mean(axis=1))

    def errors(probs):
        """(top-1, top-5) error as (low, high) bounds: a class within 1e-6 of
        the true one's probability may rank either way, since the model's
        float sums differ in the last bits between batch sizes; ties count
        in the true class's favour, as tf.math.in_top_k does."""
        gap = 1e-6
        strict = np.array([int(np.sum(p > p[t] + gap)) for p, t in zip(probs, targets)])
        loose = np.array([int(np.sum(p > p[t] - gap)) - 1  # minus the true class itself
                          for p, t in zip(probs, targets)])
        return [(float(np.mean(strict >= k)), float(np.mean(loose >= k))) for k in (1, 5)]
    return [errors(p) for p in per_model], errors(np.mean(per_model, axis=0)), len(targets)


def _assert_within(row, bounds, count):
    for key, (low, high) in zip(("top1_error", "top5_error"), bounds):
        assert high - low <= 1.0 / count + 1e-9, f"{key}: too many near-ties to check"
        assert low - 1e-9 <= row[key] <= high + 1e-9, (key, row[key], low, high)


@pytest.mark.slow  # evaluates twice: the launcher and by hand
@pytest.mark.parametrize("crops", [1, 10])
def test_errors_match_a_by_hand_computation(setup, restored, crops, tmp_path):
    data_dir, model_dirs = setup
    out = str(tmp_path / "eval.json")
    result = evaluate(data_dir, model_dirs, crops=crops, batch_size=5, output_json=out)
    singles, ensemble, count = _by_hand(data_dir, restored, crops)
    assert result["images"] == count == NUM_CLASSES * 3
    for row, bounds in zip(result["models"], singles):
        _assert_within(row, bounds, count)
        assert "/best/ckpt-1" in row["checkpoint"]
    _assert_within(result["ensemble"], ensemble, count)
    assert result["ensemble"]["models"] == 2
    assert "2 CNNs" in result["table"] and "Top-5 (val)" in result["table"]
    with open(out) as f:
        assert json.load(f)["models"][0]["checkpoint"] == result["models"][0]["checkpoint"]


def test_a_model_with_other_classes_is_refused(setup, tmp_path):
    data_dir, model_dirs = setup
    other = labels.LabelMap.from_wnids([f"n9{i:07d}" for i in range(NUM_CLASSES)])
    other.write(os.path.join(model_dirs[0], labels.LABELS_FILENAME))
    try:
        with pytest.raises(ValueError, match="differ from the data's"):
            evaluate(data_dir, model_dirs[:1], crops=1)
    finally:
        os.remove(os.path.join(model_dirs[0], labels.LABELS_FILENAME))

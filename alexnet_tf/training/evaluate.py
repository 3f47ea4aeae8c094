"""Top-1 / top-5 error of one or several trained models (section 6, Table 2).

`crops=1` scores the centre 224x224 crop; `crops=10` the paper's test-time
scheme (section 4.1): "extracting five 224x224 patches (the four corner
patches and the center patch) as well as their horizontal reflections, and
averaging the predictions made by the network's softmax layer on the ten
patches". Several model_dirs average their softmax outputs, as the paper's
"5 CNNs" / "7 CNNs" rows did. The figures are printed in Table 2's form and
returned (and optionally written as JSON) with the checkpoints they came from.
"""

from __future__ import annotations

import os
from typing import Optional, Sequence

import numpy as np
import tensorflow as tf

from alexnet_tf.training import checkpoints
from alexnet_tf.training import model_dir as model_dir_files
from alexnet_tf.training.config import EvaluateConfig
from alexnet_tf.data import input_pipeline, labels
from alexnet_tf.errors import InputError


def check_labels(model_dir: str, data_labels: labels.LabelMap, num_classes: int) -> None:
    """The model (with `num_classes` outputs, trained in `model_dir`) scores
    the classes of the data's labels.txt, or InputError."""
    if num_classes != len(data_labels):
        raise InputError(f"{model_dir}: the model has {num_classes} classes but the data's "
                         f"labels.txt has {len(data_labels)}")
    path = os.path.join(model_dir, labels.LABELS_FILENAME)
    if os.path.exists(path) and labels.LabelMap.read(path).wnids != data_labels.wnids:
        raise InputError(f"{path}: the model's classes (wnids) differ from the data's")


def _correct(probabilities: np.ndarray, labels_: np.ndarray, k: int) -> int:
    """How many labels are among the k most probable classes. Ties count in
    the label's favour, as `tf.math.in_top_k` (used in training) does:
    right when fewer than k classes are strictly more probable."""
    label_probs = probabilities[np.arange(len(labels_)), labels_]
    above = np.sum(probabilities > label_probs[:, None], axis=-1)
    return int(np.sum(above < k))


def evaluate(data_dir: str, model_dirs: Sequence[str], *, crops: int = EvaluateConfig.crops,
             which: str = EvaluateConfig.which, batch_size: int = EvaluateConfig.batch_size,
             split: str = EvaluateConfig.split, label_offset: int = EvaluateConfig.label_offset,
             max_batches: Optional[int] = None, output_json: Optional[str] = None) -> dict:
    """Evaluates each model and, for several, their softmax average.

    Returns {"images", "crops", "split", "models": [{"model_dir",
    "checkpoint", "top1_error", "top5_error"}], "ensemble": {...} (several
    models only), "table": Table 2 text}.
    """
    if not model_dirs:
        raise InputError("evaluate needs at least one model_dir")
    if batch_size < 1:
        raise InputError(f"batch_size must be >= 1, got {batch_size}")
    data_labels = labels.LabelMap.read(os.path.join(data_dir, labels.LABELS_FILENAME))
    models = []
    for model_dir in model_dirs:
        model = checkpoints.restore_model(model_dir, which)
        check_labels(model_dir, data_labels, model.output_shape[-1])
        models.append(model)
    sizes = {model.input_shape[1] for model in models}
    if len(sizes) != 1:
        raise InputError(f"the models take different input sizes {sorted(sizes)}; "
                         "an ensemble needs one")
    image_size = sizes.pop()
    dataset = input_pipeline.make_eval_dataset(
        data_dir, batch_size, crops=crops, split=split, label_offset=label_offset,
        num_classes=len(data_labels), crop_size=image_size)
    if max_batches:
        dataset = dataset.take(max_batches)

    predictors = [tf.function(lambda x, m=model: m(x, training=False), reduce_retracing=True)
                  for model in models]
    top1 = np.zeros(len(models) + 1, np.int64)  # the last entry: the ensemble
    top5 = np.zeros(len(models) + 1, np.int64)
    images = 0
    for batch, labels_ in dataset:
        labels_ = labels_.numpy()
        flat = tf.reshape(batch, [-1, image_size, image_size, 3])
        all_probs = []
        for predictor in predictors:
            probs = predictor(flat).numpy().astype(np.float64)
            all_probs.append(probs.reshape(len(labels_), crops, -1).mean(axis=1))
        all_probs.append(np.mean(all_probs, axis=0))
        for i, probs in enumerate(all_probs):
            top1[i] += _correct(probs, labels_, 1)
            top5[i] += _correct(probs, labels_, 5)
        images += len(labels_)
    if images == 0:
        raise ValueError(f"no {split} images in {data_dir}")

    def figures(i):
        return {"top1_error": 1.0 - top1[i] / images, "top5_error": 1.0 - top5[i] / images}

    result = {
        "data_dir": data_dir, "split": split, "crops": crops, "which": which,
        "images": images,
        "models": [{"model_dir": d, "checkpoint": m.checkpoint_path, **figures(i)}
                   for i, (d, m) in enumerate(zip(model_dirs, models))],
    }
    if len(models) > 1:
        result["ensemble"] = {"models": len(models), **figures(len(models))}
    result["table"] = format_table(result)
    if output_json:
        model_dir_files.write_json(output_json, result)
    return result


def format_table(result: dict) -> str:
    """The figures as the paper's Table 2: one row per CNN, then the average."""
    crops = "10 crops" if result["crops"] == 10 else "centre crop"
    header = f"{'Model':<44}{'Top-1 (' + result['split'][:3] + ')':>14}" \
             f"{'Top-5 (' + result['split'][:3] + ')':>14}"
    lines = [f"{result['images']} images, {crops}, {result['which']} checkpoints", header,
             "-" * len(header)]
    for row in result["models"]:
        name = f"1 CNN  {os.path.basename(os.path.normpath(row['model_dir']))}" \
               f" ({os.path.basename(row['checkpoint'])})"
        lines.append(f"{name[:43]:<44}{row['top1_error']:>13.1%} {row['top5_error']:>13.1%}")
    if "ensemble" in result:
        e = result["ensemble"]
        lines.append(f"{str(e['models']) + ' CNNs':<44}{e['top1_error']:>13.1%} "
                     f"{e['top5_error']:>13.1%}")
    return "\n".join(lines)

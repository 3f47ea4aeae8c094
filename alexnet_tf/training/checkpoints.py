"""Checkpoints of a training run, the best-by-validation checkpoint, and
loading a trained model for evaluation, export or fine-tuning.

Layout of a `model_dir`:
    model_config.json   build_alexnet kwargs (the model is rebuilt from it)
    labels.txt, stats.json   copied from the data dir
    ckpt-<n>.*, checkpoint   the last k tf.train.Checkpoints (model,
                        optimizer with its momentum slots, step, epoch,
                        learning-rate schedule state)
    best/ckpt-<n>.*, best/best.json   the checkpoint with the lowest
                        validation top-1 error so far, and that error
"""

from __future__ import annotations

import json
import logging
import os
from typing import Optional

import keras
import numpy as np
import tensorflow as tf

MODEL_CONFIG_FILENAME = "model_config.json"
BEST_DIR = "best"
BEST_INFO_FILENAME = "best.json"
CHECKPOINT_NAME = "ckpt"

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------
# model_config.json

def write_json_atomic(path: str, values: dict) -> None:
    tmp = f"{path}.tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(values, f, indent=2, sort_keys=True)
        f.write("\n")
    os.replace(tmp, path)


def write_model_config(model_dir: str, kwargs: dict) -> None:
    write_json_atomic(os.path.join(model_dir, MODEL_CONFIG_FILENAME), _jsonable(kwargs))


def read_model_config(model_dir: str) -> dict:
    path = os.path.join(model_dir, MODEL_CONFIG_FILENAME)
    if not os.path.exists(path):
        raise FileNotFoundError(
            f"{path} not found: {model_dir} is not a model_dir written by training")
    with open(path, encoding="utf-8") as f:
        config = json.load(f)
    if not isinstance(config, dict) or "num_classes" not in config:
        raise ValueError(f"{path}: expected an object with build_alexnet kwargs incl. num_classes")
    return config


def _jsonable(value):
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    return value


def build_model_from_config(config: dict, tower_devices=None) -> keras.Model:
    """`build_alexnet(**config)`, placed on `tower_devices` or nowhere."""
    from alexnet_tf.model.alexnet import build_alexnet, saved_config_defaults  # the one source
    kwargs = saved_config_defaults(config)
    kwargs.pop("tower_devices", None)  # placement is never part of a saved config
    if tower_devices:
        kwargs["tower_devices"] = list(tower_devices)
    return build_alexnet(**kwargs)


# --------------------------------------------------------------------------
# Checkpoints during training

class TrainingCheckpoints:
    """The latest-k checkpoints plus the best one, for one training run.

    `write_dir` is where files go: the model_dir on the chief; a throwaway
    temp dir on the other workers of a multi-worker run (every worker must
    take part in saving mirrored variables, only the chief's copy is kept).
    """

    def __init__(self, model_dir: str, model: keras.Model, optimizer, schedule,
                 keep: int = 3, write_dir: Optional[str] = None):
        self.model_dir = model_dir
        self.write_dir = write_dir or model_dir
        self.step = tf.Variable(0, dtype=tf.int64, trainable=False, name="global_step")
        self.epoch = tf.Variable(0, dtype=tf.int64, trainable=False, name="epoch")
        self.checkpoint = tf.train.Checkpoint(
            model=model, optimizer=optimizer, schedule=schedule,
            step=self.step, epoch=self.epoch)
        self.manager = tf.train.CheckpointManager(
            self.checkpoint, self.write_dir, max_to_keep=keep, checkpoint_name=CHECKPOINT_NAME)
        self.best_manager = tf.train.CheckpointManager(
            self.checkpoint, os.path.join(self.write_dir, BEST_DIR), max_to_keep=1,
            checkpoint_name=CHECKPOINT_NAME)
        self.best_error = read_best_info(model_dir).get("val_top1_error", float("inf"))

    def restore_latest(self) -> Optional[str]:
        """Restores the newest checkpoint of `model_dir`, if any; its path."""
        path = tf.train.latest_checkpoint(self.model_dir)
        if path:
            self.checkpoint.restore(path).assert_existing_objects_matched()
        return path

    def save(self) -> Optional[str]:
        """Saves at the current step (a second save of one step is a no-op)."""
        step = int(self.step.numpy())
        latest = self.manager.latest_checkpoint
        if latest and latest.endswith(f"{CHECKPOINT_NAME}-{step}"):
            return latest
        return self.manager.save(checkpoint_number=step)

    def save_if_best(self, val_top1_error: float, epoch: int) -> bool:
        """Keeps this state in best/ when its validation error is the lowest."""
        if not val_top1_error < self.best_error:
            return False
        self.best_error = float(val_top1_error)
        path = self.best_manager.save(checkpoint_number=int(self.step.numpy()))
        write_json_atomic(os.path.join(self.write_dir, BEST_DIR, BEST_INFO_FILENAME), {
            "val_top1_error": self.best_error, "step": int(self.step.numpy()),
            "epoch": epoch, "checkpoint": os.path.basename(path)})
        return True


def read_best_info(model_dir: str) -> dict:
    path = os.path.join(model_dir, BEST_DIR, BEST_INFO_FILENAME)
    if not os.path.exists(path):
        return {}
    with open(path, encoding="utf-8") as f:
        return json.load(f)


# --------------------------------------------------------------------------
# Loading a trained model

def checkpoint_path(model_dir: str, which: str = "latest") -> str:
    """The checkpoint prefix for "latest" or "best" in a model_dir."""
    if which not in ("latest", "best"):
        raise ValueError(f"which must be 'latest' or 'best', got {which!r}")
    folder = model_dir if which == "latest" else os.path.join(model_dir, BEST_DIR)
    path = tf.train.latest_checkpoint(folder)
    if not path:
        raise FileNotFoundError(f"no {which} checkpoint in {folder}")
    return path


def restore_model(model_dir: str, which: str = "latest") -> keras.Model:
    """The trained model of `model_dir`, built from its model_config.json with
    no device placement, weights from its latest or best checkpoint.
    `model.checkpoint_path` says which file the weights came from."""
    config = read_model_config(model_dir)
    path = checkpoint_path(model_dir, which)
    model = build_model_from_config(config)
    tf.train.Checkpoint(model=model).restore(path).expect_partial().assert_existing_objects_matched()
    model.checkpoint_path = path
    return model


def _resolve_checkpoint(path: str) -> tuple[str, str]:
    """(checkpoint prefix, model_dir holding its model_config.json) for a
    model_dir, a best/ dir or a checkpoint prefix."""
    prefix = tf.train.latest_checkpoint(path) if os.path.isdir(path) else path
    if not prefix or not tf.io.gfile.exists(f"{prefix}.index"):
        raise FileNotFoundError(f"--init_from={path}: no checkpoint found there")
    folder = os.path.dirname(prefix)
    for candidate in (folder, os.path.dirname(folder)):  # model_dir or model_dir/best
        if os.path.exists(os.path.join(candidate, MODEL_CONFIG_FILENAME)):
            return prefix, candidate
    raise FileNotFoundError(
        f"--init_from={path}: no {MODEL_CONFIG_FILENAME} beside the checkpoint or one level up")


def load_source_model(init_from: str) -> keras.Model:
    """The model to copy weights from: a .keras file or a training checkpoint."""
    if init_from.endswith(".keras"):
        if not os.path.exists(init_from):
            raise FileNotFoundError(f"--init_from={init_from}: file not found")
        import alexnet_tf.model.alexnet  # noqa: F401  registers the custom layers
        return keras.saving.load_model(init_from, compile=False)
    prefix, model_dir = _resolve_checkpoint(init_from)
    model = build_model_from_config(read_model_config(model_dir))
    tf.train.Checkpoint(model=model).restore(prefix).expect_partial().assert_existing_objects_matched()
    return model


def init_from_pretrained(model: keras.Model, init_from: str) -> dict[str, list[str]]:
    """Section 6's fine-tuning start: copies every weight of `init_from` whose
    layer name and shapes match; when the class counts differ the classifier
    layers (`model.CLASSIFIER_LAYERS`) keep their fresh initialization.
    Returns {"kept": [...], "reinitialized": [...]} layer names, and logs it."""
    from alexnet_tf.model.alexnet import CLASSIFIER_LAYERS
    source = load_source_model(init_from)
    source_layers = {layer.name: layer for layer in source.layers if layer.weights}
    new_classes = model.output_shape[-1] != source.output_shape[-1]
    kept, reinit = [], []
    for layer in model.layers:
        if not layer.weights:
            continue
        other = source_layers.get(layer.name)
        compatible = (other is not None
                      and not (new_classes and layer.name in CLASSIFIER_LAYERS)
                      and [tuple(w.shape) for w in other.weights]
                      == [tuple(w.shape) for w in layer.weights])
        if compatible:
            layer.set_weights(other.get_weights())
            kept.append(layer.name)
        else:
            reinit.append(layer.name)
    log.info("init_from %s: kept %d layers %s; re-initialized %s", init_from,
             len(kept), kept, reinit or "none")
    return {"kept": kept, "reinitialized": reinit}

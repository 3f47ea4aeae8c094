"""Checkpoint policy of a training run, and loading a trained model back.

A model_dir keeps the last k `tf.train.Checkpoint`s (model, optimizer with
its momentum slots, step, epoch, learning-rate schedule state) as
`ckpt-<n>.*`, and the one with the lowest validation top-1 error so far in
`best/` (its figures in best/best.json, see `model_dir.py`).
"""

from __future__ import annotations

import os
from typing import Optional

import keras
import tensorflow as tf

from alexnet_tf.errors import InputError
from alexnet_tf.training import model_dir as model_dir_files

CHECKPOINT_NAME = "ckpt"


def build_model_from_config(config: dict, tower_devices=None) -> keras.Model:
    """`build_alexnet(**config)`, placed on `tower_devices` or nowhere."""
    from alexnet_tf.model.alexnet import build_alexnet, saved_config_defaults  # the one source
    kwargs = saved_config_defaults(config)
    kwargs.pop("tower_devices", None)  # placement is never part of a saved config
    if tower_devices:
        kwargs["tower_devices"] = list(tower_devices)
    return build_alexnet(**kwargs)


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
            self.checkpoint, os.path.join(self.write_dir, model_dir_files.BEST_DIR),
            max_to_keep=1, checkpoint_name=CHECKPOINT_NAME)
        self.best_error = model_dir_files.read_best_info(model_dir).get(
            "val_top1_error", float("inf"))

    def restore_latest(self) -> Optional[str]:
        """Restores the newest checkpoint of `model_dir`, if any; its path."""
        path = tf.train.latest_checkpoint(self.model_dir)
        if path:
            try:
                self.checkpoint.restore(path).assert_existing_objects_matched()
            except (AssertionError, ValueError, tf.errors.OpError) as e:
                raise InputError(
                    f"{path} does not match this run's settings (mixed_precision or the "
                    "optimizer changed?): resume with the settings it was trained with, or "
                    f"use a new model_dir ({type(e).__name__})") from None
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
        model_dir_files.write_best_info(self.write_dir, {
            "val_top1_error": self.best_error, "step": int(self.step.numpy()),
            "epoch": epoch, "checkpoint": os.path.basename(path)})
        return True


def checkpoint_path(model_dir: str, which: str = "latest") -> str:
    """The checkpoint prefix for "latest" or "best" in a model_dir."""
    if which not in ("latest", "best"):
        raise ValueError(f"which must be 'latest' or 'best', got {which!r}")
    folder = model_dir if which == "latest" else os.path.join(model_dir, model_dir_files.BEST_DIR)
    path = tf.train.latest_checkpoint(folder)
    if not path:
        raise FileNotFoundError(f"no {which} checkpoint in {folder}")
    return path


def restore_weights(model: keras.Model, prefix: str) -> None:
    """The model's weights from a training checkpoint (the optimizer is left out)."""
    tf.train.Checkpoint(model=model).restore(prefix).expect_partial() \
        .assert_existing_objects_matched()


def restore_model(model_dir: str, which: str = "latest") -> keras.Model:
    """The trained model of `model_dir`, built from its model_config.json with
    no device placement, weights from its latest or best checkpoint.
    `model.checkpoint_path` says which file the weights came from."""
    config = model_dir_files.read_model_config(model_dir)
    path = checkpoint_path(model_dir, which)
    model = build_model_from_config(config)
    restore_weights(model, path)
    model.checkpoint_path = path
    return model

"""Checkpoint policy of a training run, and loading a trained model back.

A model_dir keeps the last k `tf.train.Checkpoint`s (model, optimizer with
its momentum slots, step, epoch, learning-rate schedule state) as
`ckpt-<n>.*`, and the one with the lowest validation top-1 error so far in
`best/` (its figures in best/best.json, see `model_dir.py`).

Publishing is atomic, so a kill at any moment leaves the previous state
readable and nothing half-written in use:
- latest: TensorFlow writes `ckpt-<n>_temp/`, renames its parts to
  `ckpt-<n>.*`, and only then rewrites the `checkpoint` state file (written to
  a temporary name and renamed) that `tf.train.latest_checkpoint` reads.
- best: the new best checkpoint and its best.json are written into
  `best.tmp/`, which then replaces `best/` by rename.
`remove_leftovers` (run before a run writes anything) deletes what a killed
save left: `*_temp` folders, `*.tmp*` files, checkpoint files the state file
does not list, and a half-swapped best/ (completed from the staged copy).
"""

from __future__ import annotations

import os
import re
import shutil
from typing import Optional

import keras
import tensorflow as tf

from alexnet_tf.errors import InputError
from alexnet_tf.training import model_dir as model_dir_files

CHECKPOINT_NAME = "ckpt"
STAGING_SUFFIX = ".tmp"  # best.tmp/ is the best checkpoint being written
OLD_SUFFIX = ".old.tmp"  # best.old.tmp/ is the best checkpoint being replaced
_CHECKPOINT_FILE = re.compile(rf"^({CHECKPOINT_NAME}-\d+)\.(index|data-\d+-of-\d+)$")


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
        """Keeps this state in best/ when its validation error is the lowest:
        written whole into best.tmp/ (checkpoint, then best.json), then
        swapped in by renames."""
        if not val_top1_error < self.best_error:
            return False
        step = int(self.step.numpy())
        best_dir = os.path.join(self.write_dir, model_dir_files.BEST_DIR)
        staging, old = best_dir + STAGING_SUFFIX, best_dir + OLD_SUFFIX
        for leftover in (staging, old):
            shutil.rmtree(leftover, ignore_errors=True)
        try:
            path = tf.train.CheckpointManager(self.checkpoint, staging, max_to_keep=1,
                                              checkpoint_name=CHECKPOINT_NAME).save(
                checkpoint_number=step)
            model_dir_files.write_json(os.path.join(staging, model_dir_files.BEST_INFO_FILENAME), {
                "val_top1_error": float(val_top1_error), "step": step, "epoch": epoch,
                "checkpoint": os.path.basename(path)})
            if os.path.isdir(best_dir):
                os.rename(best_dir, old)
            os.rename(staging, best_dir)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        shutil.rmtree(old, ignore_errors=True)
        self.best_error = float(val_top1_error)
        return True


def link_checkpoint(prefix: str, folder: str) -> str:
    """A second name for a written checkpoint: its files hard-linked into
    `folder` (copied where the file system has no hard links) and `folder`'s
    state file pointing at them. Nothing writes into a checkpoint's files
    once written (a new best is a new best.tmp/), so the two names cannot
    drift apart. Returns the new prefix."""
    os.makedirs(folder, exist_ok=True)
    name = os.path.basename(prefix)
    for part in os.listdir(os.path.dirname(prefix) or "."):
        if part.startswith(name + "."):
            source, target = os.path.join(os.path.dirname(prefix), part), os.path.join(folder, part)
            try:
                os.link(source, target)
            except OSError:
                shutil.copyfile(source, target)
    # A relative path in the state file, as CheckpointManager writes it: the
    # folder may be renamed (the import writes into a hidden one).
    tf.compat.v1.train.update_checkpoint_state(folder, name)
    return os.path.join(folder, name)


def remove_leftovers(folder: str) -> list[str]:
    """Deletes what an interrupted save left in a model_dir (see the module
    docstring); completes a best/ swap that a kill cut between its renames.
    Returns the paths removed. Call it only while no other run writes here."""
    removed = []
    if not os.path.isdir(folder):
        return removed
    best_dir = os.path.join(folder, model_dir_files.BEST_DIR)
    staging, old = best_dir + STAGING_SUFFIX, best_dir + OLD_SUFFIX
    if not os.path.isdir(best_dir):  # killed between the two renames of save_if_best
        if os.path.exists(os.path.join(staging, model_dir_files.BEST_INFO_FILENAME)):
            os.rename(staging, best_dir)  # complete: best.json is written last
        elif os.path.isdir(old):
            os.rename(old, best_dir)
    for path in (staging, old):
        if os.path.exists(path):
            shutil.rmtree(path)
            removed.append(path)
    for where in (folder, best_dir):
        removed += _remove_unpublished(where)
    return removed


def _remove_unpublished(folder: str) -> list[str]:
    """`*_temp` folders, `*.tmp*` files, and checkpoint files that the state
    file does not list (written, but never published) in `folder`."""
    if not os.path.isdir(folder):
        return []
    state = tf.train.get_checkpoint_state(folder)
    listed = {os.path.basename(p) for p in state.all_model_checkpoint_paths} if state else set()
    if state:
        listed.add(os.path.basename(state.model_checkpoint_path))
    removed = []
    for name in sorted(os.listdir(folder)):
        path = os.path.join(folder, name)
        match = _CHECKPOINT_FILE.match(name)
        if name.endswith("_temp") and os.path.isdir(path):
            shutil.rmtree(path)
        elif ".tmp" in name and os.path.isfile(path):
            os.remove(path)
        elif match and match.group(1) not in listed:
            os.remove(path)
        else:
            continue
        removed.append(path)
    return removed


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

"""The files of a model_dir, read and written in one place.

    model_config.json    build_alexnet kwargs (the model is rebuilt from it)
    train_config.json    the TrainConfig in force; run_history.jsonl when it
                         changed (see `run_record.py`)
    labels.txt, stats.json   copied from the data dir (the label map and the
                         statistics the model was trained with travel with it)
    train_summary.json   the final figures of the last run
    best/best.json       the best checkpoint's validation error, step, epoch
    ckpt-<n>.*, checkpoint, best/ckpt-<n>.*   see `checkpoints.py`
"""

from __future__ import annotations

import json
import os
import shutil

import numpy as np

from alexnet_tf import fileio
from alexnet_tf.data import labels
from alexnet_tf.data.dataset_stats import STATS_FILENAME
from alexnet_tf.errors import InputError

MODEL_CONFIG_FILENAME = "model_config.json"
TRAIN_CONFIG_FILENAME = "train_config.json"
SUMMARY_FILENAME = "train_summary.json"
BEST_DIR = "best"
BEST_INFO_FILENAME = "best.json"


def jsonable(value):
    """Tuples as lists and numpy scalars as Python numbers, recursively."""
    if isinstance(value, dict):
        return {k: jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    return value


def write_json(path: str, values: dict) -> None:
    fileio.write_text(path, json.dumps(jsonable(values), indent=2, sort_keys=True) + "\n")


def check_writable_dir(model_dir: str) -> None:
    """A model_dir must be a folder (or not exist yet): refused before anything is written."""
    if os.path.exists(model_dir) and not os.path.isdir(model_dir):
        raise InputError(f"model_dir {model_dir} is a file, not a folder")


def write_model_config(model_dir: str, kwargs: dict) -> None:
    write_json(os.path.join(model_dir, MODEL_CONFIG_FILENAME), kwargs)


def read_model_config(model_dir: str) -> dict:
    path = os.path.join(model_dir, MODEL_CONFIG_FILENAME)
    if not os.path.exists(path):
        raise FileNotFoundError(
            f"{path} not found: {model_dir} is not a model_dir written by training")
    with open(path, encoding="utf-8") as f:
        config = json.load(f)
    if not isinstance(config, dict) or "num_classes" not in config:
        raise InputError(f"{path}: expected an object with build_alexnet kwargs incl. num_classes")
    return config


def refuse_changed_model_config(model_dir: str, model_kwargs: dict) -> None:
    """On a resume, the model on disk and this run's must be the same."""
    path = os.path.join(model_dir, MODEL_CONFIG_FILENAME)
    if not os.path.exists(path):
        return
    from alexnet_tf.model.alexnet import complete_config  # defaults spelled out or not
    on_disk = jsonable(complete_config(read_model_config(model_dir)))
    wanted = jsonable(complete_config(model_kwargs))
    changed = {k: (on_disk.get(k), wanted.get(k)) for k in set(on_disk) | set(wanted)
               if on_disk.get(k) != wanted.get(k)}
    if changed:
        raise InputError(
            f"{path} differs from this run's model settings {changed} (on disk, now): "
            "use a new model_dir or the same settings to resume")


def write_run_files(model_dir: str, data_dir: str, model_kwargs: dict,
                    train_config: dict | None = None) -> None:
    """model_config.json, the data's labels.txt and stats.json, and
    train_config.json if given (training writes it once the checkpoint is
    restored, see `run_record.record`)."""
    os.makedirs(model_dir, exist_ok=True)
    write_model_config(model_dir, model_kwargs)
    if train_config is not None:
        write_train_config(model_dir, train_config)
    for name in (labels.LABELS_FILENAME, STATS_FILENAME):
        source = os.path.join(data_dir, name)
        if os.path.exists(source):
            with fileio.atomic_path(os.path.join(model_dir, name)) as tmp:
                shutil.copyfile(source, tmp)


def write_train_config(model_dir: str, train_config: dict) -> None:
    write_json(os.path.join(model_dir, TRAIN_CONFIG_FILENAME), train_config)


def read_train_config(model_dir: str) -> dict:
    """The TrainConfig the model_dir's last run wrote ({} if none)."""
    path = os.path.join(model_dir, TRAIN_CONFIG_FILENAME)
    if not os.path.exists(path):
        return {}
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def write_summary(model_dir: str, summary: dict) -> None:
    write_json(os.path.join(model_dir, SUMMARY_FILENAME), summary)


def best_info_path(model_dir: str) -> str:
    return os.path.join(model_dir, BEST_DIR, BEST_INFO_FILENAME)


def read_best_info(model_dir: str) -> dict:
    path = best_info_path(model_dir)
    if not os.path.exists(path):
        return {}
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def write_best_info(model_dir: str, info: dict) -> None:
    write_json(best_info_path(model_dir), info)

"""tf.distribute strategies for `--strategy`, and who writes files.

- `default`: one device, TensorFlow's default strategy (no replication).
- `towers`: the paper's model parallelism (section 3.2): one replica, the
  model built with each tower on its own device; the training step takes
  gradients with `placement.colocated_gradients` so the backward ops run on
  their tower's device too.
- `mirrored`: data parallelism over the local GPUs (or the devices given,
  e.g. two logical CPUs in tests) with `MirroredStrategy`.
- `multi_worker`: `MultiWorkerMirroredStrategy`, cluster from `TF_CONFIG`.

Only the chief writes checkpoints and summaries; the other workers still
run every save (saving mirrored variables is a collective operation) into a
temporary folder they delete afterwards, as the TF multi-worker guide says.
The chief alone holds the model_dir's lock (`model_dir_lock`, see
`alexnet_tf.run_lock`), taken before anything is written.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from typing import Optional, Sequence

import tensorflow as tf

from alexnet_tf import run_lock
from alexnet_tf.errors import InputError
from alexnet_tf.model.placement import check_local_device
from alexnet_tf.training import model_dir as model_dir_files
from alexnet_tf.training.config import ConfigError


def mirrored_strategy(devices: Sequence[str] = ()) -> tf.distribute.MirroredStrategy:
    """A MirroredStrategy whose collective keys cannot collide with an earlier
    one's in this process. Every MirroredStrategy starts its group and instance
    keys at the same numbers, and the collective executor remembers a key's
    tensor shape: a second strategy over the same devices (a second run, a
    test) then fails with "Shape mismatch in the collective instance 100".
    TensorFlow's own tests move the key base the same way."""
    tf.distribute.MirroredStrategy._collective_key_base += 100_000
    return tf.distribute.MirroredStrategy(devices=list(devices) or None)


def make_strategy(name: str, devices: Sequence[str] = ()) -> tf.distribute.Strategy:
    if name in ("default", "towers"):
        return tf.distribute.get_strategy()
    if name == "mirrored":
        check_local_devices(devices)
        return mirrored_strategy(devices)
    if name == "multi_worker":
        if "TF_CONFIG" not in os.environ:
            raise InputError("the multi_worker strategy needs the TF_CONFIG environment variable "
                             "(cluster and task of this worker)")
        return tf.distribute.MultiWorkerMirroredStrategy()
    raise ValueError(f"unknown strategy {name!r}")


def check_local_devices(devices: Sequence[str]) -> None:
    """Every device named for `mirrored` must exist in this process: with soft
    placement, MirroredStrategy would silently run a missing GPU's replica on
    the CPU. Refused naming the `devices` setting."""
    for device in devices:
        try:
            check_local_device(device, "device")
        except ValueError as e:
            raise ConfigError("devices", tuple(devices), str(e)) from None


def task_info(strategy: tf.distribute.Strategy) -> tuple[Optional[str], int]:
    """(task type, task id) of this process; (None, 0) outside a cluster."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not resolver.task_type:
        return None, 0
    return resolver.task_type, int(resolver.task_id or 0)


def is_chief(strategy: tf.distribute.Strategy) -> bool:
    """The chief is the "chief" task, or worker 0 when the cluster has none."""
    task_type, task_id = task_info(strategy)
    return _is_chief_task(task_type, task_id, _tf_config().get("cluster", {}))


def _is_chief_task(task_type: Optional[str], task_id: int, cluster: dict) -> bool:
    if task_type is None or task_type == "chief":
        return True
    return task_type == "worker" and "chief" not in cluster and task_id == 0


def _tf_config() -> dict:
    try:
        value = json.loads(os.environ.get("TF_CONFIG") or "{}")
    except ValueError:
        return {}  # make_strategy's resolver reports it
    return value if isinstance(value, dict) else {}


def will_be_chief(strategy_name: str) -> bool:
    """`is_chief` before the strategy exists, from TF_CONFIG's task (what
    MultiWorkerMirroredStrategy's resolver reads): the writer is known before
    anything is written."""
    if strategy_name != "multi_worker":
        return True
    config = _tf_config()
    task = config.get("task") or {}
    try:
        task_id = int(task.get("index") or 0)
    except (TypeError, ValueError):
        task_id = 0
    return _is_chief_task(task.get("type"), task_id, config.get("cluster") or {})


def model_dir_lock(model_dir: str, strategy_name: str):
    """The model_dir's one-writer lock, held by the chief only (the other
    workers write into their own temporary folders, see `write_dir`)."""
    if not will_be_chief(strategy_name):
        return contextlib.nullcontext()
    model_dir_files.check_writable_dir(model_dir)
    return run_lock.hold(model_dir, "training")


def write_dir(model_dir: str, strategy: tf.distribute.Strategy) -> str:
    """Where this process writes: the model_dir on the chief, a fresh temp
    dir on other workers (delete it with `cleanup_write_dir`)."""
    if is_chief(strategy):
        return model_dir
    task_type, task_id = task_info(strategy)
    return tempfile.mkdtemp(prefix=f"alexnet_{task_type}_{task_id}_")


def cleanup_write_dir(path: str, model_dir: str) -> None:
    if os.path.abspath(path) != os.path.abspath(model_dir):
        tf.io.gfile.rmtree(path)

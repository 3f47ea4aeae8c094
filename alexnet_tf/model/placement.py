"""Which device each of AlexNet's two towers runs on, and gradients that
follow the towers (paper section 3.2: one tower per GPU).

`resolve_tower_devices` picks the devices: the caller's, else `/GPU:0` and
`/GPU:1` when two GPUs are visible, else None (no placement, everything on
the default device). `alexnet_tf.model.layers.OnDevice` applies the choice to the
forward pass. `colocated_gradients` keeps the backward pass there too.
"""

from __future__ import annotations

import logging
from typing import Optional, Sequence, Union

import keras
import tensorflow as tf

log = logging.getLogger(__name__)

AUTO = "auto"
TowerDevices = Optional[tuple]


def resolve_tower_devices(requested: Union[None, str, Sequence[str]] = AUTO,
                          towers: int = 2) -> TowerDevices:
    """Devices for the towers, logged.

    Args:
      requested: "auto" (two visible GPUs -> ("/GPU:0", "/GPU:1"), else None),
        None or "none"/"" (no placement), a comma-separated string or a
        sequence of exactly `towers` device names.
      towers: number of towers of the model (1 never needs placement).

    Returns:
      A tuple of `towers` device names, or None for the default device.
    """
    if requested is None or (isinstance(requested, str)
                             and requested.strip().lower() in ("", "none")):
        log.info("Tower placement: none (all towers on the default device).")
        return None
    if isinstance(requested, str) and requested.strip().lower() == AUTO:
        gpus = tf.config.list_logical_devices("GPU")
        if towers == 2 and len(gpus) >= 2:
            devices = ("/GPU:0", "/GPU:1")
            log.info("Tower placement: %s (two GPUs visible).", devices)
            return devices
        log.info("Tower placement: none (%d GPU(s) visible, %d tower(s)); "
                     "the towers run on the default device.", len(gpus), towers)
        return None
    if isinstance(requested, str):
        requested = [d.strip() for d in requested.split(",")]
    devices = tuple(str(d) for d in requested)
    if len(devices) != towers or not all(devices):
        raise ValueError(f"tower_devices must name {towers} devices, one per tower; "
                         f"got {list(requested)!r}")
    for device in devices:
        check_local_device(device)
    log.info("Tower placement: %s (named by the caller).", devices)
    return devices


def check_local_device(device: str, what: str = "tower device") -> None:
    """A device of this process (no job given) must exist: a typo like
    "/GPU:2" would otherwise only fail, or silently fall back, much later.
    (Also `distribute.check_local_devices`'s check of `--devices`.)"""
    spec = tf.DeviceSpec.from_string(device)
    if spec.job is not None:  # a remote task's device: not ours to list
        return
    if spec.device_type is None:
        raise ValueError(f"{what} {device!r} names no device type (e.g. /GPU:0)")
    known = tf.config.list_logical_devices(spec.device_type.upper())
    indices = {tf.DeviceSpec.from_string(d.name).device_index for d in known}
    if spec.device_index not in indices:
        raise ValueError(f"{what} {device!r} is not among this process's devices "
                         f"{[d.name for d in tf.config.list_logical_devices()]}")


def colocated_gradients(loss: tf.Tensor, variables) -> list:
    """d loss / d variables with every backward op on its forward op's device.

    Must run inside a `tf.function`. `tf.GradientTape` does not carry the
    forward ops' device scopes over to the gradient ops (they come out
    unplaced and would all run on the default device, i.e. one GPU would do
    both towers' backward convolutions); graph-mode
    `tf.compat.v1.gradients(..., colocate_gradients_with_ops=True)` puts each
    gradient op next to the op it differentiates.

    Args:
      loss: scalar loss tensor.
      variables: Keras or TF variables (e.g. `model.trainable_variables`).

    Returns:
      One gradient per variable, in order (None where unconnected).
    """
    if tf.executing_eagerly():
        raise RuntimeError("colocated_gradients needs graph mode: call it inside a "
                           "tf.function (eager execution has no graph to colocate in)")
    tf_variables = [v.value if isinstance(v, keras.Variable) else v for v in variables]
    return tf.compat.v1.gradients(loss, tf_variables,
                                  colocate_gradients_with_ops=True)

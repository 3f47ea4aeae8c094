"""Builds AlexNet's layers tower by tower (Figure 2): `<layer>_a` / `_b` for
two towers, each placed on its device by `OnDevice`, joined where the paper
crosses towers."""

from __future__ import annotations

import math

import keras

from alexnet_tf.model.initializers import initializers
from alexnet_tf.model.layers import CrossTowerLRN, LocalResponseNormalization, OnDevice


def scaled_filters(filters: int, width: float, towers: int) -> int:
    """Kernel count scaled by width, kept divisible by the tower count."""
    return max(towers, int(round(filters * width / towers)) * towers)


def _split(total: int, towers: int) -> list[int]:
    """Units per tower: halves, the first tower taking the odd one."""
    first = math.ceil(total / towers)
    return [first] + [total - first] * (towers - 1)


class TowerBuilder:
    """Makes the per-tower layers: names `<layer>_a` / `_b` for two towers
    (each wrapped in `OnDevice`), plain `<layer>` for one column."""

    def __init__(self, towers, devices, activation, lrn, overlapping_pool, init):
        self.towers = towers
        self.devices = devices
        self.activation = activation
        self.lrn = lrn  # the paper's LRN constants, or None for no LRN
        self.pool_size = 3 if overlapping_pool else 2
        self.init = init

    def _names(self, layer: str) -> list[str]:
        if self.towers == 1:
            return [layer]
        return [f"{layer}_{chr(ord('a') + i)}" for i in range(self.towers)]

    def _apply(self, make, layer: str, xs: list) -> list:
        """make(name) -> layer, applied per tower to that tower's input."""
        outputs = []
        for name, device, x in zip(self._names(layer), self.devices, xs):
            if self.towers == 1:
                outputs.append(make(name)(x))
            else:
                outputs.append(OnDevice(make(name), device, name=name)(x))
        return outputs

    # Initializers are made afresh for every tower: an unseeded Keras
    # initializer instance returns the same values each time it is called, so
    # sharing one would start both towers as identical twins.
    def conv(self, layer, xs, filters, kernel, strides=1, padding="same"):
        # conv6 (extra_conv) is initialised like the conv5 it follows.
        init_layer = "conv5" if layer == "conv6" else layer
        per_tower = filters // self.towers

        def make(name):
            kernel_init, bias_init = initializers(self.init, init_layer)
            return keras.layers.Conv2D(
                per_tower, kernel, strides=strides, padding=padding,
                activation=self.activation, kernel_initializer=kernel_init,
                bias_initializer=bias_init, name=name)
        return self._apply(make, layer, xs)

    def dense(self, layer, x, units, activation):
        sizes = iter(_split(units, self.towers))

        def make(name):
            kernel_init, bias_init = initializers(self.init, layer)
            return keras.layers.Dense(
                next(sizes), activation=activation, kernel_initializer=kernel_init,
                bias_initializer=bias_init, name=name)
        return self._apply(make, layer, [x] * self.towers)

    def pool(self, layer, xs):
        return self._apply(lambda name: keras.layers.MaxPooling2D(
            self.pool_size, strides=2, padding="valid", name=name), layer, xs)

    def normalize_and_pool(self, index: str, xs):
        if self.lrn:
            constants = dict(self.lrn)
            if constants.pop("across_towers"):  # each tower's layer reads both towers
                towers = iter(range(self.towers))
                xs = self._apply(lambda name: CrossTowerLRN.from_paper_constants(
                    **constants, tower=next(towers), name=name), f"lrn{index}",
                    [xs] * self.towers)
            else:
                xs = self._apply(lambda name: LocalResponseNormalization.from_paper_constants(
                    **constants, name=name), f"lrn{index}", xs)
        return self.pool(f"pool{index}", xs)

    def join(self, layer, xs):
        """Where the paper crosses towers: the towers' outputs concatenated
        by a layer named after the paper's layer (one column: nothing to do)."""
        if self.towers == 1:
            return xs[0]
        return keras.layers.Concatenate(axis=-1, name=layer)(xs)

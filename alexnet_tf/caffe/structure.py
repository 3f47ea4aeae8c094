"""Checks that a Caffe net read from a `.caffemodel` is AlexNet, layer by
layer, and takes its weights and constants (`blobs.AlexNetBlobs`).

AlexNet's computing layers, in file order (Caffe nets list layers in the
order they run; layers that only feed data, split blobs, drop out, or score
the output are skipped):

    conv1 relu lrn pool  conv2 relu lrn pool  conv3 relu  conv4 relu  conv5 relu pool
    fc6 relu  fc7 relu  fc8

CaffeNet (bvlc_reference_caffenet: pooling before LRN) and other nets are
refused, naming the first layer that differs.
"""

from __future__ import annotations

from alexnet_tf.caffe import netparameter
from alexnet_tf.caffe.blobs import (AlexNetBlobs, CONV_LAYERS, FC_LAYERS, LEARNED_LAYERS,
                                    shape_text)
from alexnet_tf.caffe.errors import CaffeFormatError
from alexnet_tf.caffe.netparameter import Layer, Net

_C, _R, _L, _P, _I = "Convolution", "ReLU", "LRN", "Pooling", "InnerProduct"
ALEXNET_SEQUENCE = (_C, _R, _L, _P, _C, _R, _L, _P, _C, _R, _C, _R, _C, _R, _P,
                    _I, _R, _I, _R, _I)
# Layer types that leave the classifier's numbers alone at test time.
_PASSIVE = {"Data", "Input", "ImageData", "MemoryData", "DummyData", "HDF5Data",
            "WindowData", "Dropout", "Split", "Softmax", "SoftmaxWithLoss", "Accuracy",
            "Silence", "MultinomialLogisticLoss", "HDF5Output"}
# Kernel, stride and padding of AlexNet's convolutions; conv1's padding
# (None) is whatever the net has: the model takes it as `conv1_padding`.
_CONV_GEOMETRY = {"conv1": (11, 4, None), "conv2": (5, 1, 2), "conv3": (3, 1, 1),
                  "conv4": (3, 1, 1), "conv5": (3, 1, 1)}
_MAX_POOL = 0


def alexnet_blobs(net: Net, path: str) -> AlexNetBlobs:
    """The AlexNet weights and constants of `net`; CaffeFormatError naming the
    layer (and its shapes) where the net is not AlexNet."""
    learned = [layer for layer in net.layers if layer.blobs]
    _check_learned(learned, net, path)
    weights = {p: _fit_weight(layer, p) for p, layer in zip(LEARNED_LAYERS, learned)}
    blobs = AlexNetBlobs(
        weights=weights,
        biases={p: netparameter.legacy_fit(layer.blobs[1], (weights[p].shape[0],))
                for p, layer in zip(LEARNED_LAYERS, learned)},
        names={p: layer.name for p, layer in zip(LEARNED_LAYERS, learned)},
        input_size=net.input_size)
    blobs.check_shapes()
    _check_sequence(net, path)
    conv_params = {paper: layer for paper, layer in zip(CONV_LAYERS, learned)}
    blobs.conv1_padding = _check_convolutions(conv_params, blobs)
    _check_inner_products(learned[len(CONV_LAYERS):])
    blobs.lrn = _lrn_constants([l for l in net.layers if l.type == _L],
                               blobs.weights["conv2"].shape[0])
    blobs.ceil_pooling = _check_pools([l for l in net.layers if l.type == _P])
    _check_input(net)
    blobs.mean_bgr = _mean_value(net)
    return blobs


def _mean_value(net: Net) -> tuple:
    """A data layer's mean_value (B, G, R; one value means all three), if
    the net's data layers agree on one."""
    means = {l.mean_bgr * (3 if len(l.mean_bgr) == 1 else 1) for l in net.layers if l.mean_bgr}
    for mean in means:
        if len(mean) != 3:
            raise CaffeFormatError(f"a data layer's mean_value has {len(mean)} values; a "
                                   "colour net has 1 or 3")
    return means.pop() if len(means) == 1 else ()


def _summary(layers) -> str:
    return ", ".join(f"{l.name} {shape_text(l.blobs[0])}" for l in layers) or "none"


def _check_learned(learned: list[Layer], net: Net, path: str) -> None:
    types = [layer.type for layer in learned]
    expected = [_C] * len(CONV_LAYERS) + [_I] * len(FC_LAYERS)
    if types != expected:
        raise CaffeFormatError(
            f"{path}: not AlexNet: net {net.name!r} has {len(learned)} layers with weights "
            f"({_summary(learned)}); AlexNet has 5 convolutions then 3 inner products "
            "(conv1 96x3x11x11 ... fc8 1000x4096). A truncated file can lose the last layers.")
    for layer in learned:
        if len(layer.blobs) != 2:
            raise CaffeFormatError(f"{layer.name}: {len(layer.blobs)} blobs; AlexNet's "
                                   "layers have a weight and a bias (bias_term: true)")


def _fit_weight(layer: Layer, paper: str):
    """Legacy fc weights are written 1x1xOUTxIN: back to (OUT, IN)."""
    weight = layer.blobs[0]
    if paper in FC_LAYERS and weight.ndim == 4 and weight.shape[:2] == (1, 1):
        return weight.reshape(weight.shape[2:])
    return weight


def _check_sequence(net: Net, path: str) -> None:
    computing = []
    for layer in net.layers:
        if layer.type in _PASSIVE:
            continue
        if layer.type not in (_C, _R, _L, _P, _I):
            raise CaffeFormatError(f"{layer.name}: layer type {layer.type!r} is not in "
                                   "AlexNet (which has Convolution, ReLU, LRN, Pooling, "
                                   "InnerProduct)")
        relu = layer.params.get("relu_param")
        if relu is not None and relu.negative_slope != 0:
            raise CaffeFormatError(f"{layer.name}: leaky ReLU (negative_slope "
                                   f"{relu.negative_slope:g}); AlexNet's ReLU has none")
        computing.append(layer)
    for i, want in enumerate(ALEXNET_SEQUENCE):
        if i >= len(computing) or computing[i].type != want:
            found = (f"{computing[i].name} ({computing[i].type})" if i < len(computing)
                     else "the end of the net")
            after = computing[i - 1].name if i else "the input"
            raise CaffeFormatError(f"{path}: not AlexNet: after {after} comes {found} where "
                                   f"AlexNet has a {want} layer")
    if len(computing) > len(ALEXNET_SEQUENCE):
        extra = computing[len(ALEXNET_SEQUENCE)]
        raise CaffeFormatError(f"{extra.name} ({extra.type}) after fc8: not in AlexNet")
    _check_chain(net, computing)


def _check_chain(net: Net, computing: list[Layer]) -> None:
    """Each layer reads the one before it (through Caffe's Split layers, if any)."""
    alias = {top: layer.bottoms[0] for layer in net.layers
             if layer.type == "Split" and layer.bottoms for top in layer.tops}

    def source(blob):
        while blob in alias:
            blob = alias[blob]
        return blob

    for before, layer in zip(computing, computing[1:]):
        if (len(layer.bottoms) != 1 or not before.tops
                or source(layer.bottoms[0]) != source(before.tops[0])):
            raise CaffeFormatError(f"{layer.name} reads {list(layer.bottoms)}, not the output "
                                   f"of {before.name} ({list(before.tops)}): AlexNet is a chain")


def _one(values, default: int) -> int:
    """A repeated Caffe size field (pad/kernel/stride): one value or none."""
    values = list(values)
    if len(values) > 1 and len(set(values)) > 1:
        raise ValueError(values)
    return int(values[0]) if values else default


def _check_convolutions(layers: dict, blobs: AlexNetBlobs) -> int:
    """Kernel size, stride, padding and groups as AlexNet's; returns conv1's padding."""
    padding = 0
    for paper, layer in layers.items():
        p = layer.params.get("convolution_param")
        weight = blobs.weights[paper]
        if p is None:
            raise CaffeFormatError(f"{layer.name}: no convolution_param")
        try:
            kernel = (_one(p.kernel_size, 0), int(p.kernel_h), int(p.kernel_w))
            stride = (_one(p.stride, 1), int(p.stride_h), int(p.stride_w))
            pad = (_one(p.pad, 0), int(p.pad_h), int(p.pad_w))
        except ValueError as e:
            raise CaffeFormatError(f"{layer.name}: different sizes per axis {e}; AlexNet's "
                                   "convolutions are square") from None
        kernel, stride, pad = (_square(v, layer.name) for v in (kernel, stride, pad))
        if any(d != 1 for d in p.dilation):
            raise CaffeFormatError(f"{layer.name}: dilation {list(p.dilation)}; AlexNet has none")
        want_kernel, want_stride, want_pad = _CONV_GEOMETRY[paper]
        if (kernel, stride) != (want_kernel, want_stride) or (want_pad is not None
                                                              and pad != want_pad):
            raise CaffeFormatError(
                f"{layer.name}: kernel {kernel}, stride {stride}, pad {pad} (weight "
                f"{shape_text(weight)}); AlexNet's {paper} has kernel {want_kernel}, stride "
                f"{want_stride}" + (f", pad {want_pad}" if want_pad is not None else ""))
        if weight.shape[2:] != (kernel, kernel):
            raise CaffeFormatError(f"{layer.name}: weight {shape_text(weight)} for kernel "
                                   f"size {kernel}")
        groups = blobs.groups(paper)
        if int(p.group) != groups:
            raise CaffeFormatError(
                f"{layer.name}: group: {p.group} but its weight {shape_text(weight)} over "
                f"{weight.shape[1] * groups} input channels means {groups} groups")
        if paper == "conv1":
            padding = pad
    return padding


def _square(values: tuple, name: str) -> int:
    """The size from (size, size_h, size_w): _h/_w, if set, must agree."""
    size, height, width = values
    if height or width:
        if height != width or (size and size != height):
            raise CaffeFormatError(f"{name}: non-square sizes {values}; AlexNet's are square")
        return height
    return size


def _check_inner_products(layers) -> None:
    for layer in layers:
        p = layer.params.get("inner_product_param")
        if p is not None and (p.transpose or p.axis != 1):
            raise CaffeFormatError(f"{layer.name}: inner product with transpose="
                                   f"{p.transpose}, axis={p.axis}; AlexNet's has neither")


def _lrn_constants(layers, channels: int) -> dict:
    """The one set of LRN constants; `channels` (conv2's, the widest normalized)
    bounds the window: a wider one is a size from a broken file."""
    constants = set()
    for layer in layers:
        p = layer.params.get("lrn_param")
        if p is not None and p.norm_region != 0:
            raise CaffeFormatError(f"{layer.name}: LRN within channels; AlexNet's "
                                   "normalizes across channels")
        constants.add((5, 1.0, 0.75, 1.0) if p is None else (
            int(p.local_size), float(p.alpha), float(p.beta), float(p.k)))
    if len(constants) != 1:
        raise CaffeFormatError(f"{', '.join(l.name for l in layers)}: different LRN "
                               f"constants {sorted(constants)}; this model has one set")
    size, alpha, beta, k = constants.pop()
    if size % 2 == 0 or size > 2 * channels - 1:
        raise CaffeFormatError(f"{layers[0].name}: LRN local_size {size:,}; Caffe takes odd "
                               f"sizes, and over {channels} channels a window spans at most "
                               f"{2 * channels - 1}")
    return {"local_size": size, "alpha": alpha, "beta": beta, "k": k}


def _check_pools(layers) -> bool:
    """AlexNet's 3x3 stride-2 max pooling; True when all round up (Caffe's default)."""
    for layer in layers:
        p = layer.params.get("pooling_param")
        if p is None:
            raise CaffeFormatError(f"{layer.name}: no pooling_param")
        kernel = _square((int(p.kernel_size or 0), int(p.kernel_h), int(p.kernel_w)),
                         layer.name)
        stride = _square((int(p.stride), int(p.stride_h), int(p.stride_w)), layer.name)
        pad = _square((int(p.pad), int(p.pad_h), int(p.pad_w)), layer.name)
        if (p.pool, kernel, stride, pad, p.global_pooling) != (_MAX_POOL, 3, 2, 0, False):
            raise CaffeFormatError(
                f"{layer.name}: pooling method {p.pool} kernel {kernel} stride {stride} "
                f"pad {pad}; AlexNet's is max pooling (0), kernel 3, stride 2, no padding")
    return all(layer.params["pooling_param"].round_mode == 0 for layer in layers)


def _check_input(net: Net) -> None:
    for layer in net.layers:
        if layer.input_scale != 1.0:
            raise CaffeFormatError(f"{layer.name}: the net scales its input by "
                                   f"{layer.input_scale}; AlexNet reads 0..255 pixels")

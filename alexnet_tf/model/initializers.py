"""The weight initializations a model can start from (`AlexNet(init=...)`)."""

from __future__ import annotations

import keras

INITS = ("paper", "caffe", "he")
# Paper section 5: biases 1 in these layers ("accelerates the early stages of
# learning by providing the ReLUs with positive inputs"), 0 elsewhere.
_POSITIVE_BIAS_LAYERS = ("conv2", "conv4", "conv5", "fc6", "fc7")

# The bias of those layers per init. "caffe" and "he" use Caffe's reference
# AlexNet's 0.1: on "he"'s unit-scale net the paper's 1 keeps the net at
# chance (docs/benchmarks.md).
_POSITIVE_BIAS = {"paper": 1.0, "caffe": 0.1, "he": 0.1}


def initializers(init: str, layer: str):
    """(kernel_initializer, bias_initializer) for one paper layer."""
    if init not in INITS:
        raise ValueError(f"init must be one of {INITS}, got {init!r}")
    bias = keras.initializers.Constant(
        _POSITIVE_BIAS[init] if layer in _POSITIVE_BIAS_LAYERS else 0.0)
    if init == "he" and not layer.startswith("fc"):  # for unit-scale inputs: see std_rgb
        return keras.initializers.HeNormal(), bias
    # N(0, 0.01): the paper's, and "he"'s in the FC layers too. He in the
    # 4,096-wide layers makes fc7's features unit-scale; one SGD step at lr
    # 0.01 then moves the logits by lr * |fc7|^2 (tens) times the softmax
    # error, a loss spike at the start. N(0, 0.01) starts the logits near zero.
    return keras.initializers.RandomNormal(0.0, 0.01), bias

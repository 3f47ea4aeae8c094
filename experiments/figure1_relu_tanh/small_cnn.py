"""The four-layer convolutional network of the paper's Figure 1 (section 3.1).

The paper says only "a four-layer convolutional network" on CIFAR-10, with no
regularization. We read it as the CIFAR-10 network Krizhevsky's cuda-convnet
shipped at the time (the "18% error" layer definition): three convolutional
layers and one fully connected layer, which is four layers with weights:

    conv1  5x5, 32 filters, stride 1, 'same'  -> activation -> 3x3/2 max pool
    conv2  5x5, 32 filters, stride 1, 'same'  -> activation -> 3x3/2 avg pool
    conv3  5x5, 64 filters, stride 1, 'same'  -> activation -> 3x3/2 avg pool
    fc     10 logits (softmax in the loss)

32x32 inputs give 16x16, 8x8 and 4x4 maps after the three (overlapping)
pools. Why this reading: it is the four-layer CIFAR-10 net of the same
author, code and year; the paper's section 3.3 also reports a "four-layer
CNN" on CIFAR-10 with and without response normalization, so the plain
network has none; we leave it out, as that is not what Figure 1 compares.
Figure 1 says no regularization of any kind was used: no dropout, no weight
decay, no data augmentation here.

`activation` is the one thing Figure 1 varies ("relu" solid, "tanh" dashed).
`init` picks the weight initialization:
  * "paper": N(0, 0.01) weights and zero biases for every layer, as section 5
    initializes AlexNet (inputs are then on the 0..255 scale, mean removed).
  * "modern": He-normal weights for ReLU, Glorot-uniform for tanh (and for the
    linear output layer), zero biases (inputs standardized to unit variance).
"""

from __future__ import annotations

import keras

ACTIVATIONS = ("relu", "tanh")
INITS = ("paper", "modern")
CONV_FILTERS = (32, 32, 64)
CONV_KERNEL = 5
POOLS = ("max", "avg", "avg")
PAPER_INIT_STDDEV = 0.01


def _kernel_initializer(init: str, activation: str | None, seed: int | None):
    if init == "paper":
        return keras.initializers.RandomNormal(0.0, PAPER_INIT_STDDEV, seed=seed)
    if activation == "relu":
        return keras.initializers.HeNormal(seed=seed)
    return keras.initializers.GlorotUniform(seed=seed)


def build_small_cnn(activation: str = "relu", *, init: str = "paper",
                    num_classes: int = 10, image_size: int = 32,
                    seed: int | None = None) -> keras.Model:
    """Figure 1's network: float32 [N, S, S, 3] preprocessed images -> logits.

    The output layer ("logits") is linear; the loss applies the softmax.
    """
    if activation not in ACTIVATIONS:
        raise ValueError(f"activation must be one of {ACTIVATIONS}, got {activation!r}")
    if init not in INITS:
        raise ValueError(f"init must be one of {INITS}, got {init!r}")
    # Distinct seeds per layer, so layers do not share identical weights.
    layer_seed = (lambda i: None) if seed is None else (lambda i: seed + i)

    inputs = keras.Input((image_size, image_size, 3), name="images")
    x = inputs
    for i, (filters, pool) in enumerate(zip(CONV_FILTERS, POOLS), start=1):
        x = keras.layers.Conv2D(
            filters, CONV_KERNEL, padding="same", activation=activation,
            kernel_initializer=_kernel_initializer(init, activation, layer_seed(i)),
            bias_initializer="zeros", name=f"conv{i}")(x)
        pool_layer = keras.layers.MaxPooling2D if pool == "max" else keras.layers.AveragePooling2D
        x = pool_layer(3, strides=2, padding="same", name=f"pool{i}")(x)
    x = keras.layers.Flatten(name="flatten")(x)
    logits = keras.layers.Dense(
        num_classes, kernel_initializer=_kernel_initializer(init, None, layer_seed(4)),
        bias_initializer="zeros", name="logits")(x)
    return keras.Model(inputs, logits, name=f"figure1_cnn_{activation}_{init}")

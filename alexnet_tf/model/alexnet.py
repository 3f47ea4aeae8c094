"""AlexNet (Krizhevsky, Sutskever & Hinton 2012, section 3) as a Keras 3
functional model with its two towers as separate per-tower layers.

Layer table for 1,000 classes (two towers, `_a` / `_b`; joins where the paper
crosses towers)::

    image            224x224x3, RGB 0..255
    mean_subtraction fixed training-set mean RGB (section 2), then / std RGB
    conv1_pad        2 px zeros -> 228x228 (see below)
    conv1_a/b        48+48 kernels 11x11x3 stride 4, ReLU   -> 55x55x96
    lrn1_a/b, pool1_a/b  LRN, max pool 3/2                   -> 27x27x96
    conv2_a/b        128+128 kernels 5x5x48 (own tower)      -> 27x27x256
    lrn2_a/b, pool2_a/b                                      -> 13x13x256
    pool2            join: conv3 reads both towers
    conv3_a/b        192+192 kernels 3x3x256                 -> 13x13x384
    conv4_a/b        192+192 kernels 3x3x192 (own tower)     -> 13x13x384
    conv5_a/b        128+128 kernels 3x3x192 (own tower)     -> 13x13x256
    pool5_a/b, pool5 max pool 3/2, join                      -> 6x6x256
    fc6_a/b, fc6     2048+2048, ReLU, join; fc6_dropout
    fc7_a/b, fc7     2048+2048, ReLU, join (features); fc7_dropout
    fc8_a/b, fc8     500+500 logits, join
    probabilities    softmax

60,965,224 parameters. Input size: the paper says 224x224, but an 11x11
stride-4 convolution gives 55x55 only from 227x227 (or 224 plus 2 px of zero
padding on each side, (228 - 11) / 4 + 1 = 55.25 -> 55), which is what this
model does. The paper's neuron count "253,440" for conv1 is a known erratum:
55 * 55 * 96 = 290,400.

Towers are separate layers joined by `Concatenate`, never `Conv2D(groups=2)`:
TensorFlow has no grouped convolution on the CPU, Keras 3 falls back to XLA
for it, and XLA-compiled graphs break TensorFlow Serving.
"""

from __future__ import annotations

import math
from typing import Optional, Sequence

import keras
from absl import logging

from alexnet_tf.model import placement
from alexnet_tf.data.dataset_stats import IMAGENET_MEAN_RGB, IMAGENET_STD_RGB
from alexnet_tf.model.layers import LocalResponseNormalization, MeanSubtraction, OnDevice

# The layers to re-initialise when fine-tuning to a different class count
# (whichever of them the model has: "fc8" for one column, "fc8_a"/"fc8_b" for
# two towers, where "fc8" is the weightless join).
CLASSIFIER_LAYERS = ("fc8", "fc8_a", "fc8_b")

# Kernel / neuron counts of the paper's net, summed over both towers.
CONV_FILTERS = (96, 256, 384, 384, 256)
FC_UNITS = (4096, 4096)
EXTRA_CONV_FILTERS = 256

INITS = ("paper", "caffe", "he")
# Paper section 5: biases 1 in these layers ("accelerates the early stages of
# learning by providing the ReLUs with positive inputs"), 0 elsewhere.
_POSITIVE_BIAS_LAYERS = ("conv2", "conv4", "conv5", "fc6", "fc7")

# The bias of those layers per init. "caffe" and "he" use Caffe's reference
# AlexNet's 0.1: on "he"'s unit-scale net the paper's 1 was still at chance
# after 60 steps (measured).
_POSITIVE_BIAS = {"paper": 1.0, "caffe": 0.1, "he": 0.1}


def _initializers(init: str, layer: str):
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
    # error: measured, the loss jumped from 2.7 to 3.3 in the first steps and
    # the net spent about two epochs shrinking its features to ~0.1. N(0, 0.01)
    # starts fc7 near 0.2 and the logits near zero.
    return keras.initializers.RandomNormal(0.0, 0.01), bias


@keras.saving.register_keras_serializable(package="alexnet_tf")
class AlexNet(keras.Model):
    """The paper's network; the constructor arguments are its whole config.

    Args:
      num_classes: size of the softmax (1,000 in the paper).
      image_size: square input size (224 in the paper; smaller works for
        tests, at least 67 so that pool5 is not empty).
      mean_rgb: per-channel mean (0..255 scale) the model subtracts; pass the
        training set's from the data prep's stats.json.
      std_rgb: per-channel std (0..255 scale) the model then divides by, for
        the unit-scale input "he" initialization assumes; pass
        `RGBStats.std_rgb` of the training set. None: subtract the mean only,
        as the paper did (use it with init="paper" or "caffe").
      activation: "relu" (section 3.1) or "tanh" (Figure 1's comparison).
      lrn: local response normalization after conv1 and conv2 (section 3.3).
      overlapping_pool: 3x3 stride-2 max pooling (section 3.4) or 2x2 stride
        2; both give the same output sizes (55->27->13->6).
      towers: 2 (the paper's two GPU columns, Figure 2) or 1 (one column with
        the same total kernels, every layer reading all of the previous one).
      width: scales the kernels of conv1-conv4. The paper's comparison net
        (section 3.2) is towers=1, width=0.5: half the kernels in each
        convolutional layer except the last, which (with the fully-connected
        layers after it) keeps its size so the two nets have about the same
        number of parameters (the paper's footnote).
      dropout: dropout rate on fc6 and fc7 outputs (section 4.2); 0 disables.
      extra_conv: section 6's variant (Table 2's "1 CNN*"): a sixth
        convolutional layer, 256 kernels 3x3 (128 per tower, own tower), after
        the last pooling layer. The paper gives no size; this is a choice.
      init: "he" (default): He-normal convolutions, N(0, 0.01) fully-
        connected layers, biases 0.1 where the paper has 1 (conv2, conv4,
        conv5, fc6, fc7) and 0 elsewhere, on standardized input (std_rgb).
        "paper": section 5's N(0, 0.01), biases 1 in those five layers, 0
        elsewhere. "caffe": N(0, 0.01) with the 0.1 biases (Caffe's
        reference AlexNet, whose notes say biases of 1 gave a flat loss).
        Why "he" is the default: on Imagenette (10 classes, 2,000 images,
        the paper's SGD at lr 0.01, benchmarks/bench_learn.py) the paper's
        init ended a 25-step check at chance (issue 3's prototype saw about
        10 flat epochs; at init its fc7 features barely depend on the image:
        the biases of 1 dominate while the 0.01 weights shrink the image
        signal layer by layer), "caffe" reached 45.6% validation top-1
        error in 15 epochs and "he" 37.2-41.6% (README, Benchmarks). He
        init on the paper's 0..255 input diverges at lr 0.01: conv1's
        gradient scales with the pixel values, so its effective learning
        rate is std**2 (~5,000) times larger; the model logs a warning for
        that combination.
      tower_devices: None (no placement), "auto" (see
        `placement.resolve_tower_devices`) or one device per tower. Not part
        of `get_config`: placement is a property of the running process, so
        an exported or saved model never pins devices.
    """

    def __init__(self,
                 num_classes: int = 1000,
                 image_size: int = 224,
                 mean_rgb: Sequence[float] = IMAGENET_MEAN_RGB,
                 std_rgb: Optional[Sequence[float]] = IMAGENET_STD_RGB,
                 activation: str = "relu",
                 lrn: bool = True,
                 overlapping_pool: bool = True,
                 towers: int = 2,
                 width: float = 1.0,
                 dropout: float = 0.5,
                 extra_conv: bool = False,
                 init: str = "he",
                 tower_devices=None,
                 name: str = "alexnet",
                 **kwargs):
        _check_config(num_classes, image_size, activation, towers, width, dropout, init)
        if tower_devices is not None:
            if towers == 1 and tower_devices != placement.AUTO:
                raise ValueError(f"tower_devices={tower_devices!r} needs towers=2; "
                                 "one column has nothing to place")
            tower_devices = placement.resolve_tower_devices(tower_devices, towers)
        devices = tower_devices or (None,) * towers
        builder = _Builder(towers, devices, activation, lrn, overlapping_pool, init)

        inputs = keras.Input((image_size, image_size, 3), name="image")
        if (init == "he") != (std_rgb is not None):
            logging.warning("init=%r with std_rgb=%s: 'he' is meant for standardized "
                            "input (std_rgb set), 'paper' and 'caffe' for the paper's "
                            "mean-subtracted 0..255 input (std_rgb=None)", init, std_rgb)
        x = MeanSubtraction(mean_rgb, std_rgb, name="mean_subtraction")(inputs)
        x = keras.layers.ZeroPadding2D(2, name="conv1_pad")(x)
        filters = [_scaled(f, width, towers) for f in CONV_FILTERS[:4]]
        filters.append(CONV_FILTERS[4])
        # conv1: each tower reads the whole image.
        xs = builder.conv("conv1", [x] * towers, filters[0], 11, strides=4, padding="valid")
        xs = builder.normalize_and_pool("1", xs)
        xs = builder.conv("conv2", xs, filters[1], 5)  # own tower
        xs = builder.normalize_and_pool("2", xs)
        x = builder.join("pool2", xs)
        xs = builder.conv("conv3", [x] * towers, filters[2], 3)  # both towers
        xs = builder.conv("conv4", xs, filters[3], 3)  # own tower
        xs = builder.conv("conv5", xs, filters[4], 3)  # own tower
        xs = builder.pool("pool5", xs)
        if extra_conv:
            xs = builder.conv("conv6", xs, EXTRA_CONV_FILTERS, 3)
        x = builder.join("conv6" if extra_conv else "pool5", xs)
        x = keras.layers.Flatten(name="flatten")(x)
        for layer, units in zip(("fc6", "fc7"), FC_UNITS):
            x = builder.join(layer, builder.dense(layer, x, units, activation))
            if dropout:
                x = keras.layers.Dropout(dropout, name=f"{layer}_dropout")(x)
        x = builder.join("fc8", builder.dense("fc8", x, num_classes, None))
        outputs = keras.layers.Activation("softmax", dtype="float32",
                                          name="probabilities")(x)
        super().__init__(inputs=inputs, outputs=outputs, name=name, **kwargs)

        self.num_classes = num_classes
        self.image_size = image_size
        self.mean_rgb = tuple(float(m) for m in mean_rgb)
        self.std_rgb = None if std_rgb is None else tuple(float(v) for v in std_rgb)
        self.activation = activation
        self.lrn = lrn
        self.overlapping_pool = overlapping_pool
        self.towers = towers
        self.width = width
        self.dropout = dropout
        self.extra_conv = extra_conv
        self.init = init
        self.tower_devices = tower_devices

    def get_config(self):
        return {
            "name": self.name,
            "trainable": self.trainable,
            "num_classes": self.num_classes,
            "image_size": self.image_size,
            "mean_rgb": list(self.mean_rgb),
            "std_rgb": None if self.std_rgb is None else list(self.std_rgb),
            "activation": self.activation,
            "lrn": self.lrn,
            "overlapping_pool": self.overlapping_pool,
            "towers": self.towers,
            "width": self.width,
            "dropout": self.dropout,
            "extra_conv": self.extra_conv,
            "init": self.init,
            "tower_devices": None,  # never serialised; see the class docstring
        }

    @classmethod
    def from_config(cls, config):
        return cls(**saved_config_defaults(config))


def saved_config_defaults(config: dict) -> dict:
    """A saved model config with the fields added since it may have been
    written: one without std_rgb predates input standardization (mean only)."""
    return {"std_rgb": None, **config}


def build_alexnet(num_classes: int = 1000, **kwargs) -> AlexNet:
    """The paper's AlexNet; keyword arguments as `AlexNet`'s."""
    model = AlexNet(num_classes=num_classes, **kwargs)
    logging.info("Built %s: %s, %s parameters", model.name,
                 {k: v for k, v in model.get_config().items() if k != "name"},
                 f"{model.count_params():,}")
    return model


def _check_config(num_classes, image_size, activation, towers, width, dropout, init):
    if not isinstance(num_classes, int) or num_classes < towers:
        raise ValueError(f"num_classes must be an integer >= towers ({towers}), "
                         f"got {num_classes!r}")
    if not isinstance(image_size, int) or image_size < 67:
        raise ValueError(f"image_size must be an integer >= 67 (pool5 would be "
                         f"empty below), got {image_size!r}")
    if activation not in ("relu", "tanh"):
        raise ValueError(f"activation must be 'relu' or 'tanh', got {activation!r}")
    if towers not in (1, 2):
        raise ValueError(f"towers must be 1 or 2, got {towers!r}")
    if not 0 < width <= 1:
        raise ValueError(f"width must be in (0, 1], got {width!r}")
    if not 0 <= dropout < 1:
        raise ValueError(f"dropout must be in [0, 1), got {dropout!r}")
    if init not in INITS:
        raise ValueError(f"init must be one of {INITS}, got {init!r}")


def _scaled(filters: int, width: float, towers: int) -> int:
    """Kernel count scaled by width, kept divisible by the tower count."""
    return max(towers, int(round(filters * width / towers)) * towers)


def _split(total: int, towers: int) -> list[int]:
    """Units per tower: halves, the first tower taking the odd one."""
    first = math.ceil(total / towers)
    return [first] + [total - first] * (towers - 1)


class _Builder:
    """Makes the per-tower layers: names `<layer>_a` / `_b` for two towers
    (each wrapped in `OnDevice`), plain `<layer>` for one column."""

    def __init__(self, towers, devices, activation, lrn, overlapping_pool, init):
        self.towers = towers
        self.devices = devices
        self.activation = activation
        self.lrn = lrn
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
            kernel_init, bias_init = _initializers(self.init, init_layer)
            return keras.layers.Conv2D(
                per_tower, kernel, strides=strides, padding=padding,
                activation=self.activation, kernel_initializer=kernel_init,
                bias_initializer=bias_init, name=name)
        return self._apply(make, layer, xs)

    def dense(self, layer, x, units, activation):
        sizes = iter(_split(units, self.towers))

        def make(name):
            kernel_init, bias_init = _initializers(self.init, layer)
            return keras.layers.Dense(
                next(sizes), activation=activation, kernel_initializer=kernel_init,
                bias_initializer=bias_init, name=name)
        return self._apply(make, layer, [x] * self.towers)

    def pool(self, layer, xs):
        return self._apply(lambda name: keras.layers.MaxPooling2D(
            self.pool_size, strides=2, padding="valid", name=name), layer, xs)

    def normalize_and_pool(self, index: str, xs):
        if self.lrn:
            xs = self._apply(lambda name: LocalResponseNormalization(name=name),
                             f"lrn{index}", xs)
        return self.pool(f"pool{index}", xs)

    def join(self, layer, xs):
        """Where the paper crosses towers: the towers' outputs concatenated
        by a layer named after the paper's layer (one column: nothing to do)."""
        if self.towers == 1:
            return xs[0]
        return keras.layers.Concatenate(axis=-1, name=layer)(xs)

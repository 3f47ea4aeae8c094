"""AlexNet (Krizhevsky, Sutskever & Hinton 2012, section 3) as a Keras 3
functional model with its two towers as separate per-tower layers.

Layer table for 1,000 classes (two towers, `_a` / `_b`; joins where the paper
crosses towers)::

    image            224x224x3, RGB 0..255
    mean_subtraction fixed training-set mean RGB (section 2), then / std RGB
    conv1_pad        conv1_padding px of zeros (2) -> 228x228 (see below)
    conv1_a/b        48+48 kernels 11x11x3 stride 4, ReLU   -> 55x55x96
    lrn1_a/b, pool1_a/b  LRN, max pool 3/2                   -> 27x27x96
    conv2_a/b        128+128 kernels 5x5x48 (own tower)      -> 27x27x256
    lrn2_a/b, pool2_a/b                                      -> 13x13x256
    pool2            join: conv3 reads both towers
    conv3_a/b        192+192 kernels 3x3x256                 -> 13x13x384
    conv4_a/b        192+192 kernels 3x3x192 (own tower)     -> 13x13x384
    conv5_a/b        128+128 kernels 3x3x192 (own tower)     -> 13x13x256
    pool5_a/b, pool5 max pool 3/2, join                      -> 6x6x256
    fc6_a/b, fc6     2048+2048 (fc_units[0]), ReLU, join; fc6_dropout
    fc7_a/b, fc7     2048+2048 (fc_units[1]), ReLU, join (features); fc7_dropout
    fc8_a/b, fc8     500+500 logits, join
    probabilities    softmax

60,965,224 parameters. Input size: the paper says 224x224, but an 11x11
stride-4 convolution gives 55x55 only from 227x227 (or 224 plus 2 px of zero
padding on each side, (228 - 11) / 4 + 1 = 55.25 -> 55), which is what this
model does by default (`conv1_padding=2`); Caffe's reference AlexNet reads
227x227 with no padding (`image_size=227, conv1_padding=0`). The paper's
neuron count "253,440" for conv1 is a known erratum: 55 * 55 * 96 = 290,400.

Towers are separate layers joined by `Concatenate`, never `Conv2D(groups=2)`:
TensorFlow has no grouped convolution on the CPU, Keras 3 falls back to XLA
for it, and XLA-compiled graphs break TensorFlow Serving.
"""

from __future__ import annotations

import inspect
import logging
from typing import Optional, Sequence

import keras

from alexnet_tf.defaults import CROP_SIZE
from alexnet_tf.model import placement
from alexnet_tf.data.dataset_stats import IMAGENET_MEAN_RGB, IMAGENET_STD_RGB
from alexnet_tf.model.initializers import INITS
from alexnet_tf.model.layers import MeanSubtraction
from alexnet_tf.model.towers import TowerBuilder, scaled_filters

log = logging.getLogger(__name__)

# Layer names other modules read (declared here only): the 4,096-d feature
# vector of section 6.1, the logits, and the softmax output.
FEATURES_LAYER = "fc7"
LOGITS_LAYER = "fc8"
PROBABILITIES_LAYER = "probabilities"

# The layers to re-initialise when fine-tuning to a different class count
# (whichever of them the model has: "fc8" for one column, "fc8_a"/"fc8_b" for
# two towers, where "fc8" is the weightless join).
CLASSIFIER_LAYERS = ("fc8", "fc8_a", "fc8_b")

# Section 3.3's LRN constants in the paper's form, b = a / (k + alpha * sum
# of n squares) ** beta with alpha NOT divided by n (Caffe divides it), each
# tower normalizing its own maps (one GPU each); and conv1's zero padding
# (module docstring). Saved configs from before these were settings used
# exactly these values, so these defaults load them.
PAPER_LRN = {"lrn_size": 5, "lrn_k": 2.0, "lrn_alpha": 1e-4, "lrn_beta": 0.75,
             "lrn_across_towers": False}
CONV1_PADDING = 2
# Settings a trained model's weights depend on that their shapes do not show
# (no training flag sets them): a model fine-tuned from it keeps its source's.
SOURCE_SETTINGS = ("conv1_padding", *PAPER_LRN)

# Kernel / neuron counts of the paper's net, summed over both towers.
# FC_UNITS is the default of the `fc_units` setting (saved configs from
# before it was a setting used it, so this default loads them).
CONV_FILTERS = (96, 256, 384, 384, 256)
FC_UNITS = (4096, 4096)
EXTRA_CONV_FILTERS = 256

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
      lrn_size, lrn_k, lrn_alpha, lrn_beta: its n, k, alpha and beta in the
        paper's formula (alpha not divided by n); default the paper's 5, 2,
        1e-4, 0.75. Caffe's LRN divides its alpha by n and has k=1: its
        reference AlexNet is lrn_k=1, lrn_alpha=1e-4 / 5.
      lrn_across_towers: False (the paper's GPUs): each tower normalizes over
        its own maps. True (Caffe's one-blob net): over both towers' maps
        joined, so the maps next to the tower boundary see the other tower's.
      overlapping_pool: 3x3 stride-2 max pooling (section 3.4) or 2x2 stride
        2; both give the same output sizes (55->27->13->6).
      towers: 2 (the paper's two GPU columns, Figure 2) or 1 (one column with
        the same total kernels, every layer reading all of the previous one).
      width: scales the kernels of conv1-conv4. The paper's comparison net
        (section 3.2) is towers=1, width=0.5: half the kernels in each
        convolutional layer except the last, which (with the fully-connected
        layers after it) keeps its size so the two nets have about the same
        number of parameters (the paper's footnote).
      fc_units: neurons of fc6 and fc7, summed over the towers (the paper's
        4,096 each). Smaller keeps every layer and name at a fraction of the
        parameters (the tests' tiny model); fc8 always has num_classes.
      dropout: dropout rate on fc6 and fc7 outputs (section 4.2); 0 disables.
      extra_conv: section 6's variant (Table 2's "1 CNN*"): a sixth
        convolutional layer, 256 kernels 3x3 (128 per tower, own tower), after
        the last pooling layer. The paper gives no size; this is a choice.
      conv1_padding: zero padding on each side of the input before conv1
        (2 here, 0 in Caffe's 227x227 net).
      init: "he" (default): He-normal convolutions, N(0, 0.01) fully-
        connected layers, biases 0.1 where the paper has 1 (conv2, conv4,
        conv5, fc6, fc7) and 0 elsewhere, on standardized input (std_rgb).
        "paper": section 5's N(0, 0.01), biases 1 in those five layers, 0
        elsewhere. "caffe": N(0, 0.01) with the 0.1 biases (Caffe's
        reference AlexNet, whose notes say biases of 1 gave a flat loss).
        Why "he" is the default: with the paper's init, fc7's features
        barely depend on the image at the start (the biases of 1 dominate
        while the 0.01 weights shrink the image signal layer by layer), and
        it learns slowest of the three on Imagenette (docs/benchmarks.md).
        He init on the paper's 0..255 input diverges at lr 0.01: conv1's
        gradient scales with the pixel values, so its effective learning
        rate is std**2 times larger; the model logs a warning for that
        combination.
      tower_devices: None (no placement), "auto" (see
        `placement.resolve_tower_devices`) or one device per tower. Not part
        of `get_config`: placement is a property of the running process, so
        an exported or saved model never pins devices.
    """

    def __init__(self,
                 num_classes: int = 1000,
                 image_size: int = CROP_SIZE,
                 mean_rgb: Sequence[float] = IMAGENET_MEAN_RGB,
                 std_rgb: Optional[Sequence[float]] = IMAGENET_STD_RGB,
                 activation: str = "relu",
                 lrn: bool = True,
                 overlapping_pool: bool = True,
                 towers: int = 2,
                 width: float = 1.0,
                 fc_units: Sequence[int] = FC_UNITS,
                 dropout: float = 0.5,
                 extra_conv: bool = False,
                 init: str = "he",
                 conv1_padding: int = CONV1_PADDING,
                 lrn_size: int = PAPER_LRN["lrn_size"],
                 lrn_k: float = PAPER_LRN["lrn_k"],
                 lrn_alpha: float = PAPER_LRN["lrn_alpha"],
                 lrn_beta: float = PAPER_LRN["lrn_beta"],
                 lrn_across_towers: bool = PAPER_LRN["lrn_across_towers"],
                 tower_devices=None,
                 name: str = "alexnet",
                 **kwargs):
        _check_config(num_classes, image_size, activation, towers, width, dropout, init,
                      conv1_padding)
        fc_units = _checked_fc_units(fc_units, towers)
        if tower_devices is not None:
            if towers == 1 and tower_devices != placement.AUTO:
                raise ValueError(f"tower_devices={tower_devices!r} needs towers=2; "
                                 "one column has nothing to place")
            tower_devices = placement.resolve_tower_devices(tower_devices, towers)
        devices = tower_devices or (None,) * towers
        lrn_constants = dict(size=lrn_size, k=lrn_k, alpha=lrn_alpha, beta=lrn_beta,
                             across_towers=bool(lrn_across_towers) and towers > 1)
        builder = TowerBuilder(towers, devices, activation, lrn_constants if lrn else None,
                           overlapping_pool, init)

        inputs = keras.Input((image_size, image_size, 3), name="image")
        if (init == "he") != (std_rgb is not None):
            log.warning("init=%r with std_rgb=%s: 'he' is meant for standardized "
                            "input (std_rgb set), 'paper' and 'caffe' for the paper's "
                            "mean-subtracted 0..255 input (std_rgb=None)", init, std_rgb)
        x = MeanSubtraction(mean_rgb, std_rgb, name="mean_subtraction")(inputs)
        x = keras.layers.ZeroPadding2D(conv1_padding, name="conv1_pad")(x)
        filters = [scaled_filters(f, width, towers) for f in CONV_FILTERS[:4]]
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
        for layer, units in zip(("fc6", "fc7"), fc_units):
            x = builder.join(layer, builder.dense(layer, x, units, activation))
            if dropout:
                x = keras.layers.Dropout(dropout, name=f"{layer}_dropout")(x)
        x = builder.join(LOGITS_LAYER, builder.dense(LOGITS_LAYER, x, num_classes, None))
        outputs = keras.layers.Activation("softmax", dtype="float32",
                                          name=PROBABILITIES_LAYER)(x)
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
        self.fc_units = fc_units
        self.dropout = dropout
        self.extra_conv = extra_conv
        self.init = init
        self.conv1_padding = conv1_padding
        self.lrn_size, self.lrn_k = lrn_size, float(lrn_k)
        self.lrn_alpha, self.lrn_beta = float(lrn_alpha), float(lrn_beta)
        self.lrn_across_towers = bool(lrn_across_towers)
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
            "fc_units": list(self.fc_units),
            "dropout": self.dropout,
            "extra_conv": self.extra_conv,
            "init": self.init,
            "conv1_padding": self.conv1_padding,
            "lrn_size": self.lrn_size,
            "lrn_k": self.lrn_k,
            "lrn_alpha": self.lrn_alpha,
            "lrn_beta": self.lrn_beta,
            "lrn_across_towers": self.lrn_across_towers,
            "tower_devices": None,  # never serialised; see the class docstring
        }

    @classmethod
    def from_config(cls, config):
        return cls(**saved_config_defaults(config))


def saved_config_defaults(config: dict) -> dict:
    """A saved model config with the fields added since it may have been
    written: one without std_rgb predates input standardization (mean only);
    one without the LRN constants, conv1_padding or fc_units used the paper's."""
    return {"std_rgb": None, **PAPER_LRN, "conv1_padding": CONV1_PADDING,
            "fc_units": FC_UNITS, **config}


def complete_config(config: dict) -> dict:
    """Every setting of a model config, the defaults filled in: two configs
    build the same model exactly when their complete configs are equal."""
    defaults = {name: p.default for name, p in inspect.signature(AlexNet.__init__).parameters.items()
                if p.default is not inspect.Parameter.empty}
    complete = {**defaults, **saved_config_defaults(config)}
    for key in ("tower_devices", "name"):  # not part of what is built
        complete.pop(key, None)
    return complete


def build_alexnet(num_classes: int = 1000, **kwargs) -> AlexNet:
    """The paper's AlexNet; keyword arguments as `AlexNet`'s."""
    model = AlexNet(num_classes=num_classes, **kwargs)
    log.debug("Built %s: %s, %s parameters", model.name,
                 {k: v for k, v in model.get_config().items() if k != "name"},
                 f"{model.count_params():,}")
    return model


def _checked_fc_units(fc_units, towers) -> tuple[int, int]:
    """fc_units as a tuple of two whole numbers, each at least one per tower."""
    try:
        units = tuple(fc_units)
    except TypeError:
        units = ()
    if (len(units) != 2 or not all(isinstance(u, int) and not isinstance(u, bool)
                                   and u >= towers for u in units)):
        raise ValueError(f"fc_units must be two integers (fc6, fc7) >= towers ({towers}), "
                         f"got {fc_units!r}")
    return units


def _check_config(num_classes, image_size, activation, towers, width, dropout, init,
                  conv1_padding):
    if not isinstance(num_classes, int) or num_classes < towers:
        raise ValueError(f"num_classes must be an integer >= towers ({towers}), "
                         f"got {num_classes!r}")
    if not isinstance(conv1_padding, int) or conv1_padding < 0:
        raise ValueError(f"conv1_padding must be an integer >= 0, got {conv1_padding!r}")
    smallest = 71 - 2 * conv1_padding  # a 71x71 padded input leaves pool5 1x1
    if not isinstance(image_size, int) or image_size < smallest:
        raise ValueError(f"image_size must be an integer >= {smallest} with conv1_padding="
                         f"{conv1_padding} (pool5 would be empty below), got {image_size!r}")
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

"""The network: layers (LRN, mean subtraction, device placement), AlexNet, tower placement."""

from alexnet_tf.model.alexnet import (  # noqa: F401
    CLASSIFIER_LAYERS, AlexNet, build_alexnet, saved_config_defaults)

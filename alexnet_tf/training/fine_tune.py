"""Section 6's fine-tuning start: weights (and, by default, the input
normalization) from a trained model.

A trained conv1 expects the mean and std it was trained with, so a model
fine-tuned on new data keeps the source model's `mean_rgb` / `std_rgb`
unless asked to use the new data's.
"""

from __future__ import annotations

import os
import zipfile

import keras
import tensorflow as tf

from alexnet_tf.errors import InputError
from alexnet_tf.training import checkpoints, model_dir as model_dir_files

NORMALIZATION_KEYS = ("mean_rgb", "std_rgb")
ARCHITECTURE_SETTINGS = ("image_size", "width", "fc_units", "towers", "extra_conv", "activation", "lrn",
                         "overlapping_pool")
# Inherited like the architecture when the run leaves them unset: the init
# the source was made for (an imported Caffe model's "caffe" goes with its
# mean-only input) is the one for the layers fine-tuning re-initializes.
INHERITED_SETTINGS = (*ARCHITECTURE_SETTINGS, "init")


def _resolve_checkpoint(path: str) -> tuple[str, str]:
    """(checkpoint prefix, model_dir holding its model_config.json) for a
    model_dir, a best/ dir or a checkpoint prefix."""
    prefix = tf.train.latest_checkpoint(path) if os.path.isdir(path) else path
    if not prefix or not tf.io.gfile.exists(f"{prefix}.index"):
        raise InputError(f"init_from {path}: no checkpoint found there")
    folder = os.path.dirname(prefix)
    for candidate in (folder, os.path.dirname(folder)):  # model_dir or model_dir/best
        if os.path.exists(os.path.join(candidate, model_dir_files.MODEL_CONFIG_FILENAME)):
            return prefix, candidate
    raise InputError(f"init_from {path}: no {model_dir_files.MODEL_CONFIG_FILENAME} beside "
                     "the checkpoint or one level up")


def load_source_model(init_from: str) -> keras.Model:
    """The model to copy weights from: a .keras file or a training checkpoint."""
    if init_from.endswith(".keras"):
        if not os.path.exists(init_from):
            raise InputError(f"init_from {init_from}: file not found")
        from alexnet_tf.model.alexnet import AlexNet  # also registers the custom layers
        try:
            model = keras.saving.load_model(init_from, compile=False)
        except (ValueError, OSError, TypeError, KeyError, zipfile.BadZipFile) as e:
            raise InputError(f"init_from {init_from}: not a Keras model file this project "
                             f"can load ({type(e).__name__}: {str(e).splitlines()[0][:200]})"
                             ) from None
        if not isinstance(model, AlexNet):
            raise InputError(f"init_from {init_from}: a {type(model).__name__}, not an AlexNet "
                             "saved by this project (alexnet_tf.AlexNet)")
        return model
    prefix, model_dir = _resolve_checkpoint(init_from)
    model = checkpoints.build_model_from_config(model_dir_files.read_model_config(model_dir))
    checkpoints.restore_weights(model, prefix)
    return model


def normalization_of(source: keras.Model) -> dict:
    """The source model's `mean_rgb` and `std_rgb` (std None: mean only)."""
    config = source.get_config()
    return {key: config.get(key) for key in NORMALIZATION_KEYS}


def source_settings(config, source: keras.Model | None) -> dict:
    """What the source's weights were trained with that their shapes do not
    show (`alexnet.SOURCE_SETTINGS`: LRN constants, conv1 padding; an
    imported Caffe model's differ from the paper's), and its input size,
    architecture and init unless the run sets them. On a resume (no source
    loaded), from the model_dir's model_config.json, which the first run
    wrote."""
    from alexnet_tf.model.alexnet import SOURCE_SETTINGS
    if source is not None:
        saved = source.get_config()
    elif os.path.exists(os.path.join(config.model_dir, model_dir_files.MODEL_CONFIG_FILENAME)):
        saved = model_dir_files.read_model_config(config.model_dir)
    else:
        return {}
    # The architecture (and init) too, where the run leaves it to the model's
    # default: a source of another width or towers would keep none of its
    # conv layers.
    keys = SOURCE_SETTINGS + tuple(key for key in INHERITED_SETTINGS
                                   if getattr(config.model, key) is None)
    return {key: saved[key] for key in keys if key in saved}


def copy_matching_weights(model: keras.Model, source: keras.Model) -> dict[str, list[str]]:
    """Copies every weight of `source` whose layer name and shapes match;
    when the class counts differ the classifier layers keep their fresh
    initialization. Returns {"kept": [...], "reinitialized": [...]}."""
    from alexnet_tf.model.alexnet import CLASSIFIER_LAYERS
    source_layers = {layer.name: layer for layer in source.layers if layer.weights}
    new_classes = model.output_shape[-1] != source.output_shape[-1]
    kept, reinit = [], []
    for layer in model.layers:
        if not layer.weights:
            continue
        other = source_layers.get(layer.name)
        compatible = (other is not None
                      and not (new_classes and layer.name in CLASSIFIER_LAYERS)
                      and [tuple(w.shape) for w in other.weights]
                      == [tuple(w.shape) for w in layer.weights])
        if compatible:
            layer.set_weights(other.get_weights())
            kept.append(layer.name)
        else:
            reinit.append(layer.name)
    return {"kept": kept, "reinitialized": reinit}

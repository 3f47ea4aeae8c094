"""alexnet_tf: the AlexNet paper (Krizhevsky et al., 2012) in TensorFlow 2 / Keras 3.

The public API. Names load on first use, so `import alexnet_tf` (and the
launchers' flag parsing) does not pull in TensorFlow.

    from alexnet_tf import TrainConfig, ModelConfig, train, evaluate
    summary = train(TrainConfig(data_dir="records", model_dir="runs/alexnet"))
    model = restore_model("runs/alexnet", "best")
    export_saved_model(model, label_map, "saved_models/alexnet")
"""

import importlib

# name -> module that defines it (one place each; see the README's layout)
_API = {
    "build_alexnet": "alexnet_tf.model.alexnet",
    "AlexNet": "alexnet_tf.model.alexnet",
    "ModelConfig": "alexnet_tf.training.config",
    "TrainConfig": "alexnet_tf.training.config",
    "train": "alexnet_tf.training.loop",
    "evaluate": "alexnet_tf.training.evaluate",
    "restore_model": "alexnet_tf.training.checkpoints",
    "export_saved_model": "alexnet_tf.serving.export",
    "LabelMap": "alexnet_tf.data.labels",
}

__all__ = sorted(_API)


def __getattr__(name):
    if name not in _API:
        raise AttributeError(f"module 'alexnet_tf' has no attribute {name!r}")
    value = getattr(importlib.import_module(_API[name]), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(_API))

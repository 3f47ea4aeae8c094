"""Export a trained model as a TF Serving SavedModel (issue 5).

    python -m launch.export --model_dir=runs/alexnet --export_dir=saved_models/alexnet \
        [--version=N] [--checkpoint=best]

writes `saved_models/alexnet/<version>/` (the next free integer by default),
atomically. Other sources of weights:
    --keras_model=model.keras --labels=labels.txt     a saved .keras file
    --untrained --labels=labels.txt                   a freshly built AlexNet
                                                      (smoke tests of the kit)
"""

from __future__ import annotations

import dataclasses
import os
import shlex
from typing import Optional

from absl import logging

from alexnet_tf import defaults
from alexnet_tf.cli import config_flags, terminal
from alexnet_tf.data.labels import LABELS_FILENAME, LabelMap
from alexnet_tf.options import option

# TensorFlow is imported only after the flags are checked: a usage error
# answers at once.


@dataclasses.dataclass
class ExportConfig:
    """The export's settings; the flags are defined from these fields."""

    model_dir: Optional[str] = option(None, "Training model_dir (model_config.json, "
                                      "labels.txt, checkpoints); the usual source of the "
                                      "weights.")
    checkpoint: str = option("best", "Which checkpoint of --model_dir: best (by validation "
                             "top-1) or latest.", choices=("latest", "best"))
    keras_model: Optional[str] = option(None, "Export this .keras file instead of a "
                                        "model_dir.")
    untrained: bool = option(False, "Export a freshly initialised AlexNet (sized by "
                             "--labels) instead of trained weights: for trying the serving "
                             "kit.")
    labels: Optional[str] = option(None, "labels.txt (index, wnid, name); default "
                                   "<model_dir>/labels.txt.")
    export_dir: str = option(defaults.EXPORT_DIR, "Model base path: versions go in numbered "
                             "subdirectories, as TF Serving expects.")
    version: Optional[int] = option(None, "Version number; default the next free integer. "
                                    "An existing version is never overwritten.", lower_bound=0)
    top_k: int = option(defaults.TOP_K, "Classes in the top_k_* and classify outputs (fewer "
                        "when the model has fewer classes).", lower_bound=1)
    classify_classes: str = option("wnids", "What the classify signature's `classes` output "
                                   "holds. Names repeat in ILSVRC-2012 (two 'crane's), wnids "
                                   "never do.", choices=("wnids", "names"))
    warmup: bool = option(True, "Write assets.extra/tf_serving_warmup_requests (needs the "
                          "tensorflow-serving-api package).")
    max_image_bytes: int = option(defaults.MAX_IMAGE_BYTES, "Longest image a request may "
                                  "send, in bytes (a classify tf.Example may be 64 KB more); "
                                  "checked before any work. Recorded in "
                                  "assets/request_budget.json.", lower_bound=1)


def define_flags() -> None:
    """Defined only when run as a program, so that importing this module
    (tests, other tools) cannot clash with another tool's flags."""
    config_flags.define_flags(ExportConfig)


def load_model_and_labels(config: ExportConfig):
    """(keras model, LabelMap) from whichever source the flags name."""
    sources = [bool(config.model_dir), bool(config.keras_model), config.untrained]
    if sum(sources) != 1:
        terminal.usage_error("give exactly one of --model_dir, --keras_model, --untrained")
    labels_path = config.labels or (
        os.path.join(config.model_dir, LABELS_FILENAME) if config.model_dir else None)
    if not labels_path:
        terminal.usage_error("--labels is required with --keras_model or --untrained")
    if not os.path.exists(labels_path):
        terminal.usage_error(f"label map {labels_path} not found")
    label_map = LabelMap.read(labels_path)
    if config.model_dir:
        from alexnet_tf.training.checkpoints import restore_model
        model = restore_model(config.model_dir, config.checkpoint)
        logging.info("weights from %s", getattr(model, "checkpoint_path", config.model_dir))
    elif config.keras_model:
        import keras
        import alexnet_tf.model.alexnet  # noqa: F401  registers AlexNet for deserialisation
        if not os.path.exists(config.keras_model):
            terminal.usage_error(f"--keras_model={config.keras_model}: file not found")
        model = keras.saving.load_model(config.keras_model, compile=False)
    else:
        from alexnet_tf.model.alexnet import build_alexnet
        model = build_alexnet(len(label_map))
    return model, label_map


def main(argv):
    del argv
    config = config_flags.from_flags(ExportConfig)
    model, label_map = load_model_and_labels(config)
    from alexnet_tf.serving import export
    try:
        path = export.export_saved_model(
            model, label_map, config.export_dir, config.version, top_k=config.top_k,
            classify_classes=config.classify_classes, warmup=config.warmup,
            max_image_bytes=config.max_image_bytes)
    except NotADirectoryError as e:
        terminal.usage_error(f"--export_dir={config.export_dir}: {e}")
    except FileExistsError as e:  # the version asked for is there already
        terminal.usage_error(f"--version={config.version}: {e}")
    except ValueError as e:  # the model and the label map disagree
        terminal.usage_error(str(e))
    print(f"exported {len(label_map)}-class model to {path}")
    print(f"signatures: {', '.join(export.SIGNATURES)}")
    print(f"requests:   images up to {config.max_image_bytes:,} bytes each")
    print(f"serve it:   python -m launch.serve --export_dir={shlex.quote(config.export_dir)}")


if __name__ == "__main__":
    define_flags()
    terminal.run(main)

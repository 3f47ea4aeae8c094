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

import os
import shlex

from absl import flags, logging

from alexnet_tf.data.labels import LABELS_FILENAME, LabelMap
from alexnet_tf.cli import terminal

# TensorFlow is imported only after the flags are checked: a usage error
# answers at once.
DEFAULT_TOP_K = 5  # alexnet_tf.export.DEFAULT_TOP_K

FLAGS = flags.FLAGS


def define_flags() -> None:
    """Defined only when run as a program, so that importing this module
    (tests, other tools) cannot clash with another tool's flags."""
    flags.DEFINE_string("model_dir", None, "Training model_dir (model_config.json, labels.txt, "
                        "checkpoints); the usual source of the weights.")
    flags.DEFINE_enum("checkpoint", "best", ["latest", "best"],
                      "Which checkpoint of --model_dir: best (by validation top-1) or latest.")
    flags.DEFINE_string("keras_model", None, "Export this .keras file instead of a model_dir.")
    flags.DEFINE_bool("untrained", False, "Export a freshly initialised AlexNet (sized by "
                      "--labels) instead of trained weights: for trying the serving kit.")
    flags.DEFINE_string("labels", None, "labels.txt (index, wnid, name); default "
                        "<model_dir>/labels.txt.")
    flags.DEFINE_string("export_dir", "saved_models/alexnet", "Model base path: versions go "
                        "in numbered subdirectories, as TF Serving expects.")
    flags.DEFINE_integer("version", None, "Version number; default the next free integer. "
                         "An existing version is never overwritten.", lower_bound=0)
    flags.DEFINE_integer("top_k", DEFAULT_TOP_K, "Classes in the top_k_* and classify "
                         "outputs (fewer when the model has fewer classes).", lower_bound=1)
    flags.DEFINE_enum("classify_classes", "wnids", ["wnids", "names"],
                      "What the classify signature's `classes` output holds. Names repeat in "
                      "ILSVRC-2012 (two 'crane's), wnids never do.")
    flags.DEFINE_bool("warmup", True, "Write assets.extra/tf_serving_warmup_requests (needs "
                      "the tensorflow-serving-api package).")


def load_model_and_labels():
    """(keras model, LabelMap) from whichever source the flags name."""
    sources = [bool(FLAGS.model_dir), bool(FLAGS.keras_model), FLAGS.untrained]
    if sum(sources) != 1:
        terminal.usage_error("give exactly one of --model_dir, --keras_model, --untrained")
    labels_path = FLAGS.labels or (
        os.path.join(FLAGS.model_dir, LABELS_FILENAME) if FLAGS.model_dir else None)
    if not labels_path:
        terminal.usage_error("--labels is required with --keras_model or --untrained")
    if not os.path.exists(labels_path):
        terminal.usage_error(f"label map {labels_path} not found")
    label_map = LabelMap.read(labels_path)
    if FLAGS.model_dir:
        from alexnet_tf.training.checkpoints import restore_model
        model = restore_model(FLAGS.model_dir, FLAGS.checkpoint)
        logging.info("weights from %s", getattr(model, "checkpoint_path", FLAGS.model_dir))
    elif FLAGS.keras_model:
        import keras
        import alexnet_tf.model.alexnet  # noqa: F401  registers AlexNet for deserialisation
        if not os.path.exists(FLAGS.keras_model):
            terminal.usage_error(f"--keras_model={FLAGS.keras_model}: file not found")
        model = keras.saving.load_model(FLAGS.keras_model, compile=False)
    else:
        from alexnet_tf.model.alexnet import build_alexnet
        model = build_alexnet(len(label_map))
    return model, label_map


def main(argv):
    model, label_map = load_model_and_labels()
    from alexnet_tf.serving import export
    try:
        path = export.export_saved_model(
            model, label_map, FLAGS.export_dir, FLAGS.version, top_k=FLAGS.top_k,
            classify_classes=FLAGS.classify_classes, warmup=FLAGS.warmup)
    except NotADirectoryError as e:
        terminal.usage_error(f"--export_dir={FLAGS.export_dir}: {e}")
    except FileExistsError as e:  # the version asked for is there already
        terminal.usage_error(f"--version={FLAGS.version}: {e}")
    except ValueError as e:  # the model and the label map disagree
        terminal.usage_error(str(e))
    print(f"exported {len(label_map)}-class model to {path}")
    print(f"signatures: {', '.join(export.SIGNATURES)}")
    print(f"serve it:   python -m launch.serve --export_dir={shlex.quote(FLAGS.export_dir)}")


if __name__ == "__main__":
    define_flags()
    terminal.run(main)

r"""Reproduces the paper's Figure 1: ReLU vs tanh on CIFAR-10 (section 3.1).

    python -m launch.reproduce_relu_tanh --data_dir=../shared/data/cifar10 \
        --out_dir=runs/relu_tanh

`--data_dir` is either the data prep's TFRecords (train-*-of-* shards of
32x32 images) or a raw folder with `train/<class>/*.jpg`; a raw folder is
first converted to 32x32 records under `<out_dir>/records` by
`data_prep.build_tfrecords` (which resumes, so a rerun reuses them).
Writes `results.json`, `results.md` (the table) and `figure1.png`.
"""

from __future__ import annotations

import json
import math
import os

from absl import flags

from alexnet_tf.errors import InputError
from experiments.figure1_relu_tanh.results import ACTIVATIONS, CONDITIONS, RESULTS_JSON
from alexnet_tf.cli import terminal

FLAGS = flags.FLAGS


def _subset_of(choices):
    return lambda values: bool(values) and set(values) <= set(choices)


def _positive_floats(values) -> bool:
    try:
        return bool(values) and all(0 < float(v) < math.inf for v in values)
    except ValueError:
        return False


def define_flags() -> None:
    """Defined only when run as a program (no clash with other tools' flags)."""
    flags.DEFINE_string("data_dir", None, "CIFAR-10 TFRecords dir, or a raw folder with "
                        "train/<class>/*.jpg (converted into <out_dir>/records first by data_prep.build_tfrecords).")
    flags.DEFINE_string("out_dir", None, "Where results.json, results.md, figure1.png go.")
    flags.DEFINE_list("conditions", list(CONDITIONS),
                      "Which conditions to run: 'paper' (N(0,0.01) init, 0..255 inputs "
                      "minus the mean image) and/or 'modern' (He/Glorot init, standardized inputs).")
    flags.DEFINE_list("activations", list(ACTIVATIONS),
                      "Which activations to train (e.g. one per run, to repeat a winning "
                      "learning rate with another --init_seed).")
    flags.DEFINE_list("paper_learning_rates", ["0.003", "0.01"],
                      "Candidate learning rates for the 'paper' condition (both activations).")
    flags.DEFINE_list("modern_learning_rates", ["0.01", "0.03"],
                      "Candidate learning rates for the 'modern' condition (both activations).")
    flags.DEFINE_float("target_error", 0.25, "Training error to reach (Figure 1: 25%).")
    flags.DEFINE_float("max_epochs", 20, "Epoch cap per run; a run that misses it counts "
                       "as not reaching the target.")
    flags.DEFINE_integer("batch_size", 128, "Minibatch size (the paper's 128).", lower_bound=1)
    flags.DEFINE_integer("evals_per_epoch", 5, "Training-error measurements per epoch "
                         "(5 = cuda-convnet's 10,000-image batches on 50,000 images).",
                         lower_bound=1)
    flags.DEFINE_float("prune_after_epochs", None, "If set, after this many epochs only "
                       "the learning rate with the lowest training error trains on (a cheaper "
                       "sweep); default: every rate races to the target.")
    flags.DEFINE_integer("max_train_images", None, "Use a random subset of this many "
                         "training images (quick runs); default: all.", lower_bound=1)
    flags.DEFINE_integer("init_seed", 0, "Seed of the weight init, the minibatch order and "
                         "the --max_train_images subset (the same for every run).")
    flags.DEFINE_integer("image_size", 32, "Side of the stored images (CIFAR-10: 32); passed "
                         "to the data prep when converting a raw folder.", lower_bound=1)
    flags.DEFINE_integer("train_shards", 16, "Training shards when converting a raw folder.",
                         lower_bound=1)
    flags.DEFINE_integer("validation_shards", 4, "Validation shards when converting a raw "
                         "folder.", lower_bound=1)
    flags.DEFINE_bool("overwrite", False, "Convert a raw folder into <out_dir>/records from "
                      "scratch instead of resuming (data prep's --overwrite).")
    flags.DEFINE_list("merge_from", None, "Instead of training: merge the results.json of "
                      "these out_dirs, or these .json files (e.g. one per --conditions, run "
                      "in parallel; docs/figures/figure1_relu_tanh.json redraws the README's "
                      "figure) into "
                      "--out_dir and redraw the table and figure; a results.json saved mid-run "
                      "counts as far as it got (unfinished runs marked 'interrupted').")
    flags.mark_flags_as_required(["out_dir"])
    flags.register_multi_flags_validator(
        ["data_dir", "merge_from"], lambda v: v["data_dir"] is not None or bool(v["merge_from"]),
        message="--data_dir is required (unless --merge_from is given)")
    flags.register_validator("conditions", _subset_of(CONDITIONS),
                             f"--conditions: a comma-separated subset of {','.join(CONDITIONS)}")
    flags.register_validator("activations", _subset_of(ACTIVATIONS),
                             f"--activations: a comma-separated subset of {','.join(ACTIVATIONS)}")
    for name in ("paper_learning_rates", "modern_learning_rates"):
        flags.register_validator(name, _positive_floats,
                                 f"--{name}: comma-separated finite numbers > 0")
    flags.register_validator("target_error", lambda v: 0 < v < 1,
                             "--target_error must be between 0 and 1")
    flags.register_validator("max_epochs", lambda v: v > 0, "--max_epochs must be > 0")
    flags.register_validator("prune_after_epochs", lambda v: v is None or v > 0,
                             "--prune_after_epochs must be > 0")


def has_records(data_dir: str) -> bool:
    from alexnet_tf import fileio
    from alexnet_tf.data import records
    if not fileio.is_utf8_path(data_dir):  # TensorFlow cannot read it; data prep can
        return False
    return bool(records.list_shards(data_dir, records.TRAIN_PREFIX, required=False))


def records_dir_for(data_dir: str, out_dir: str, image_size: int, *,
                    train_shards: int = 16, validation_shards: int = 4,
                    overwrite: bool = False) -> str:
    """The records to train from: `data_dir` itself, or the data prep's
    conversion of it into `<out_dir>/records` (resumed if already there)."""
    if has_records(data_dir):
        return data_dir
    if not os.path.isdir(os.path.join(data_dir, "train")):
        raise FileNotFoundError(
            f"{data_dir} has neither train-*-of-* TFRecord shards nor a train/<class>/ folder")
    from data_prep import build_tfrecords
    target = os.path.join(out_dir, "records")
    print(f"Converting {data_dir} to {image_size}x{image_size} TFRecords in {target}")
    summary = build_tfrecords.build(build_tfrecords.BuildConfig(
        input_dir=data_dir, output_dir=target, image_size=image_size,
        train_shards=train_shards, validation_shards=validation_shards, overwrite=overwrite))
    if not summary.ok:  # a training set with holes would change the experiment
        split, path, reason = summary.skipped[0]
        raise InputError(f"data prep skipped {len(summary.skipped)} file(s) of {data_dir}, "
                         f"e.g. {path} ({split}): {reason}")
    return target


def _save_partial(partial: dict, records_dir: str) -> None:
    """Keeps results.json current during a long run (marked "complete": false)."""
    from alexnet_tf import fileio
    fileio.write_json(os.path.join(FLAGS.out_dir, RESULTS_JSON),
                      dict(partial, records_dir=os.path.abspath(records_dir)))


def read_results(source: str) -> dict:
    """A results.json (its path, or the out_dir holding it), finished or saved
    mid-run, or InputError."""
    from experiments.figure1_relu_tanh import results
    path = source if os.path.isfile(source) else os.path.join(source, RESULTS_JSON)
    with open(path, encoding="utf-8") as f:
        try:
            result = json.load(f)
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise InputError(f"{path} is not valid JSON ({e})") from None
    if not isinstance(result, dict) or not isinstance(result.get("conditions"), dict):
        raise InputError(f"{path} is not a Figure 1 results.json (no 'conditions')")
    try:
        result = results.finalize_partial(result)
        results.results_table(result)  # everything the table and plot read is there
    except (KeyError, TypeError, AttributeError, IndexError, ValueError) as e:
        raise InputError(f"{path} is not a Figure 1 results.json (bad or missing entry "
                         f"{e})") from None
    return result


def merge(out_dirs: list) -> dict:
    from experiments.figure1_relu_tanh import results
    return results.merge_results([read_results(d) for d in out_dirs])


def _write_and_print(result: dict) -> None:
    from experiments.figure1_relu_tanh import relu_tanh
    paths = relu_tanh.write_results(result, FLAGS.out_dir)
    print(relu_tanh.results_table(result))
    for kind, path in paths.items():
        print(f"{kind}: {path}")


def main(argv):
    del argv
    from alexnet_tf import fileio
    if not fileio.is_utf8_path(FLAGS.out_dir):  # it will hold records TensorFlow reads
        raise InputError(f"--out_dir={os.fsencode(FLAGS.out_dir)!r}: {fileio.NOT_UTF8}")
    os.makedirs(FLAGS.out_dir, exist_ok=True)
    if FLAGS.merge_from:
        _write_and_print(merge(FLAGS.merge_from))
        return
    from experiments.figure1_relu_tanh import relu_tanh  # TensorFlow loads after the flags
    records_dir = records_dir_for(
        FLAGS.data_dir, FLAGS.out_dir, FLAGS.image_size, train_shards=FLAGS.train_shards,
        validation_shards=FLAGS.validation_shards, overwrite=FLAGS.overwrite)
    images, labels = relu_tanh.load_split(
        records_dir, image_size=FLAGS.image_size, max_images=FLAGS.max_train_images,
        seed=FLAGS.init_seed)
    print(f"Loaded {len(images)} training images from {records_dir}", flush=True)
    learning_rates = {"paper": [float(x) for x in FLAGS.paper_learning_rates],
                      "modern": [float(x) for x in FLAGS.modern_learning_rates]}
    result = relu_tanh.run_experiment(
        images, labels, conditions=FLAGS.conditions, activations=FLAGS.activations,
        learning_rates=learning_rates,
        target_error=FLAGS.target_error, max_epochs=FLAGS.max_epochs,
        batch_size=FLAGS.batch_size, evals_per_epoch=FLAGS.evals_per_epoch,
        seed=FLAGS.init_seed, prune_after_epochs=FLAGS.prune_after_epochs,
        log=lambda msg: print(msg, flush=True),
        on_progress=lambda partial: _save_partial(partial, records_dir))
    result["records_dir"] = os.path.abspath(records_dir)
    _write_and_print(result)


if __name__ == "__main__":
    define_flags()
    terminal.run(main)

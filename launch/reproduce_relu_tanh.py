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

from alexnet_tf.cli import config_flags, terminal
from alexnet_tf.errors import InputError
from experiments.figure1_relu_tanh.config import ReluTanhConfig
from experiments.figure1_relu_tanh.results import ACTIVATIONS, CONDITIONS, RESULTS_JSON

FLAGS = flags.FLAGS


def _subset_of(choices):
    return lambda values: bool(values) and set(values) <= set(choices)


def _positive_floats(values) -> bool:
    try:
        return bool(values) and all(0 < float(v) < math.inf for v in values)
    except ValueError:
        return False


def define_flags() -> None:
    """Defined only when run as a program (no clash with other tools' flags).
    Every flag is a field of `ReluTanhConfig`; the checks across values are
    absl validators, so a bad value is refused as the flags are parsed."""
    config_flags.define_flags(ReluTanhConfig)
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


def _save_partial(partial: dict, records_dir: str, out_dir: str) -> None:
    """Keeps results.json current during a long run (marked "complete": false)."""
    from alexnet_tf import fileio
    fileio.write_json(os.path.join(out_dir, RESULTS_JSON),
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


def _write_and_print(result: dict, out_dir: str) -> None:
    from experiments.figure1_relu_tanh import relu_tanh
    paths = relu_tanh.write_results(result, out_dir)
    print(relu_tanh.results_table(result))
    for kind, path in paths.items():
        print(f"{kind}: {path}")


def main(argv):
    del argv
    config = config_flags.from_flags(ReluTanhConfig)
    from alexnet_tf import fileio
    if not fileio.is_utf8_path(config.out_dir):  # it will hold records TensorFlow reads
        raise InputError(f"--out_dir={os.fsencode(config.out_dir)!r}: {fileio.NOT_UTF8}")
    os.makedirs(config.out_dir, exist_ok=True)
    if config.merge_from:
        _write_and_print(merge(config.merge_from), config.out_dir)
        return
    from experiments.figure1_relu_tanh import relu_tanh  # TensorFlow loads after the flags
    records_dir = records_dir_for(
        config.data_dir, config.out_dir, config.image_size, train_shards=config.train_shards,
        validation_shards=config.validation_shards, overwrite=config.overwrite)
    images, labels = relu_tanh.load_split(
        records_dir, image_size=config.image_size, max_images=config.max_train_images,
        seed=config.init_seed)
    print(f"Loaded {len(images)} training images from {records_dir}", flush=True)
    learning_rates = {"paper": list(config.paper_learning_rates),
                      "modern": list(config.modern_learning_rates)}
    result = relu_tanh.run_experiment(
        images, labels, conditions=list(config.conditions),
        activations=list(config.activations), learning_rates=learning_rates,
        target_error=config.target_error, max_epochs=config.max_epochs,
        batch_size=config.batch_size, evals_per_epoch=config.evals_per_epoch,
        seed=config.init_seed, prune_after_epochs=config.prune_after_epochs,
        log=lambda msg: print(msg, flush=True),
        on_progress=lambda partial: _save_partial(partial, records_dir, config.out_dir))
    result["records_dir"] = os.path.abspath(records_dir)
    _write_and_print(result, config.out_dir)


if __name__ == "__main__":
    define_flags()
    terminal.run(main)

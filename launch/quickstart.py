"""The whole chain in one command, on the CPU, with no data of your own:

    make_synthetic -> build_tfrecords -> train (short) -> evaluate (1 and 10
    crops) -> export to saved_models/ -> predict through the exported
    serving signature

    python -m launch.quickstart                      # synthetic data
    python -m launch.quickstart --data_dir=~/imagenette   # any layout data prep reads

Each step calls the same library function as its own launcher, prints where
its output went, and the last lines give the figures reached and the command
that serves the export with TensorFlow Serving.
"""

from __future__ import annotations

import dataclasses
import glob
import os
import time
from typing import Optional, Sequence

from alexnet_tf import defaults
from alexnet_tf.cli import config_flags, terminal
from alexnet_tf.options import option
from data_prep.make_synthetic import SyntheticConfig


@dataclasses.dataclass
class QuickstartConfig:
    """The chain's settings; training's own come from the `quickstart` preset
    (`alexnet_tf.training.presets`), unless set here."""

    out_dir: str = option("quickstart_out", "Where data, records, model and figures go.")
    data_dir: Optional[str] = option(None, "A dataset in any layout data prep reads "
                                     "(default: a synthetic one is made in <out_dir>/raw).")
    export_dir: str = option("saved_models/alexnet_quickstart",
                             "SavedModel base folder; the next free version is written under it.")
    epochs: Optional[int] = option(None, "Training epochs (default: the quickstart preset's).")
    steps_per_epoch: Optional[int] = option(None, "Steps per epoch (default: one pass).")
    batch_size: Optional[int] = option(None, "Training batch size (default: the quickstart "
                                       "preset's; the paper's is 128).")
    learning_rate: Optional[float] = option(None, "Initial learning rate (default: the "
                                            "paper's 0.01).")
    image_size: int = option(defaults.CROP_SIZE, "Model input size (the paper's 224); records "
                             "are stored at the matching 256:224 size.")
    width: float = option(1.0, "Kernel-count scale of conv1-conv4 (1 = the paper's net).")
    fc_units: Optional[Sequence[int]] = option(
        None, "Neurons of fc6,fc7 (default: the paper's 4096,4096).")
    num_classes: int = option(SyntheticConfig.num_classes, "Classes of the synthetic data set.")
    train_per_class: int = option(SyntheticConfig.train_per_class,
                                  "Synthetic training images per class.")
    val_per_class: int = option(SyntheticConfig.val_per_class,
                                "Synthetic validation images per class.")
    figures: bool = option(True, "Also draw the paper's figures (needs matplotlib).")
    predict_images: int = option(4, "Images classified through the export at the end.")

    def train_config(self, records_dir: str, model_dir: str):
        from alexnet_tf.training import presets
        given = {k: getattr(self, k) for k in ("epochs", "steps_per_epoch", "batch_size",
                                               "learning_rate") if getattr(self, k) is not None}
        model = {"image_size": self.image_size, "width": self.width}
        if self.fc_units is not None:
            model["fc_units"] = tuple(self.fc_units)
        return presets.make_config("quickstart", data_dir=records_dir, model_dir=model_dir,
                                   model=model, **given)


def define_flags() -> None:
    """Defined only when run as a program, so importing this module (the tests)
    cannot clash with another tool's flags in the same process."""
    config_flags.define_flags(QuickstartConfig)


def _step(number: int, title: str) -> float:
    print(f"\n=== [{number}/6] {title}", flush=True)
    return time.time()


def _done(started: float, where: str) -> None:
    print(f"    -> {where}  ({time.time() - started:.0f} s)", flush=True)


def run(config: QuickstartConfig) -> dict:
    """Runs the chain; returns the figures each step reached."""
    # Imported here so `--help` answers without loading TensorFlow.
    from alexnet_tf.data import labels, preprocessing
    from alexnet_tf.serving import export
    from alexnet_tf.training import checkpoints, evaluate, loop
    from data_prep import build_tfrecords, make_synthetic

    out = os.path.abspath(config.out_dir)
    os.makedirs(out, exist_ok=True)
    results: dict = {}

    t = _step(1, "data: " + ("your data set " + config.data_dir if config.data_dir
                             else "a synthetic data set (make_synthetic)"))
    raw_dir = config.data_dir
    if raw_dir is None:
        raw_dir = os.path.join(out, "raw")
        made = make_synthetic.make_synthetic(make_synthetic.SyntheticConfig(
            output_dir=raw_dir, num_classes=config.num_classes,
            train_per_class=config.train_per_class, val_per_class=config.val_per_class,
            overwrite=True))
        print(f"    {made['train']} training and {made['validation']} validation images, "
              f"{len(made['awkward'])} awkward files on purpose")
    _done(t, raw_dir)

    t = _step(2, "build_tfrecords: shorter side to 256, centre crop, JPEG shards")
    records_dir = os.path.join(out, "records")
    built = build_tfrecords.build(build_tfrecords.BuildConfig(
        input_dir=raw_dir, output_dir=records_dir, train_shards=4, validation_shards=2,
        image_size=preprocessing.stored_size(config.image_size)))
    results["data_prep"] = {"found": built.found, "written": built.written,
                            "skipped": len(built.skipped)}
    _done(t, records_dir)

    model_dir = os.path.join(out, "model")
    train_config = config.train_config(records_dir, model_dir)
    t = _step(3, f"train: the paper's SGD (momentum {train_config.momentum:g}, weight decay "
                 f"{train_config.weight_decay:g}), random crops, flips, PCA lighting")
    summary = loop.train(train_config)
    results["train"] = summary
    _done(t, model_dir)

    t = _step(4, "evaluate: top-1 / top-5 error with 1 and 10 crops")
    num_classes = len(labels.LabelMap.read(records_dir))
    chance = 1.0 - 1.0 / num_classes
    results["evaluate"] = {}
    for crops in (1, 10):
        figures = evaluate.evaluate(records_dir, [model_dir], crops=crops, which="best",
                                    batch_size=train_config.batch_size,
                                    output_json=os.path.join(model_dir, f"eval_{crops}crop.json"))
        results["evaluate"][crops] = figures["models"][0]
        print(figures["table"])
    _done(t, os.path.join(model_dir, "eval_*.json"))

    t = _step(5, "export: SavedModel for TensorFlow Serving")
    model = checkpoints.restore_model(model_dir, "best")
    label_map = labels.LabelMap.read(model_dir)
    export_path = export.export_saved_model(model, label_map, config.export_dir)
    results["export"] = export_path
    _done(t, export_path)

    t = _step(6, "predict: the exported serving signature on a few images")
    import tensorflow as tf
    serving = tf.saved_model.load(export_path).signatures["serving_default"]
    paths = _one_image_per_class(raw_dir, config.predict_images)
    if paths:
        blobs = tf.constant([open(p, "rb").read() for p in paths])
        out_tensors = serving(image_bytes=blobs)
        for path, names, scores in zip(paths, out_tensors["top_k_names"].numpy(),
                                       out_tensors["top_k_scores"].numpy()):
            top = ", ".join(f"{n.decode()} {s:.2f}" for n, s in zip(names[:3], scores[:3]))
            print(f"    {os.path.relpath(path, raw_dir)}: {top}")
    results["predicted"] = len(paths)
    _done(t, export_path)

    if config.figures:
        from alexnet_tf.figures import paper_figures
        fig_dir = os.path.join(out, "figures")
        try:
            results["figures"] = paper_figures.render(model, records_dir, fig_dir, model_dir)
            print(f"\n    figures: {fig_dir}")
        except ImportError as e:  # matplotlib is an optional extra
            print(f"\n    figures skipped: {e}")

    one = results["evaluate"][1]
    ten = results["evaluate"][10]
    print("\n=== Summary")
    print(f"    data prep: {built.found} found, {built.written} written, "
          f"{len(built.skipped)} skipped (each with its reason in "
          f"{os.path.join(records_dir, build_tfrecords.FILES_FILENAME)})")
    print(f"    validation top-1 error: {one['top1_error']:.1%} (1 crop), "
          f"{ten['top1_error']:.1%} (10 crops); chance is {chance:.1%}")
    print(f"    validation top-5 error: {one['top5_error']:.1%} (1 crop), "
          f"{ten['top5_error']:.1%} (10 crops)")
    print(f"    SavedModel: {export_path}")
    base = os.path.abspath(config.export_dir)
    print(f"    serve it:   python -m launch.serve --export_dir={base}")
    print(f"    or without a server: python -m launch.predict --saved_model={export_path} "
          "<image.jpg>")
    return results


def _one_image_per_class(raw_dir: str, count: int) -> list[str]:
    """The first readable validation image of the first `count` classes."""
    chosen = []
    for class_dir in sorted(glob.glob(os.path.join(raw_dir, "val*", "*"))):
        readable = [p for p in sorted(glob.glob(os.path.join(class_dir, "*")))
                    if _readable_image(p)]
        chosen += readable[:1]
        if len(chosen) == count:
            break
    return chosen


def _readable_image(path: str) -> bool:
    """The synthetic set holds a corrupt file on purpose: keep it out of the demo."""
    from PIL import Image
    try:
        with Image.open(path) as im:
            im.verify()
        return True
    except Exception:
        return False


def main(argv):
    del argv
    run(config_flags.from_flags(QuickstartConfig))
    return 0


if __name__ == "__main__":
    define_flags()
    terminal.run(main)

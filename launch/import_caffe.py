"""Imports Caffe's reference AlexNet into a model_dir (issue 15).

    python -m launch.import_caffe --caffemodel=bvlc_alexnet.caffemodel \
        --model_dir=runs/bvlc_alexnet [--mean=ilsvrc_2012_mean.npy] [--labels=synset_words.txt]

or `--npy=bvlc_alexnet.npy` (caffe-tensorflow's conversion) instead of
--caffemodel. The model_dir then works with every other tool's defaults:
launch.evaluate, launch.export, launch.train --init_from=<model_dir>,
launch.figures; launch.predict on the export.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Optional

from alexnet_tf.cli import config_flags, terminal
from alexnet_tf.options import option


@dataclasses.dataclass
class ImportCaffeConfig:
    """The flags, defined from these fields."""

    caffemodel: Optional[str] = option(None, "Caffe's binary weights "
                                       "(bvlc_alexnet.caffemodel), new `layer` or old V1 "
                                       "`layers` format.")
    npy: Optional[str] = option(None, "caffe-tensorflow's bvlc_alexnet.npy instead of "
                                "--caffemodel.")
    model_dir: Optional[str] = option(None, "Folder to create (it must not exist, or be "
                                      "empty).")
    mean: Optional[str] = option(None, "Caffe's mean image (ilsvrc_2012_mean.npy or a "
                                 ".binaryproto): its per-channel means become the model's "
                                 "mean_rgb. Default: Caffe's published ILSVRC-2012 values "
                                 "(B 104.007, G 116.669, R 122.679).")
    labels: Optional[str] = option(None, "The classes: this project's labels.txt (e.g. your "
                                   "ILSVRC-2012 records' own) or Caffe's synset_words.txt. "
                                   "Without it the classes are named caffe_class_0000.. and "
                                   "evaluation on ImageNet records refuses the model (the "
                                   "wnids differ).")


def define_flags() -> None:
    """Defined only when run as a program (no clash with other tools' flags)."""
    config_flags.define_flags(ImportCaffeConfig)


def main(argv):
    del argv
    config = config_flags.from_flags(ImportCaffeConfig)
    if not config.model_dir:
        terminal.usage_error("--model_dir is required")
    if bool(config.caffemodel) == bool(config.npy):
        terminal.usage_error("give exactly one of --caffemodel and --npy")
    from alexnet_tf.caffe.importer import import_alexnet  # TensorFlow loads after the checks
    result = import_alexnet(config.model_dir, caffemodel=config.caffemodel, npy=config.npy,
                            mean=config.mean, labels=config.labels)
    model = result["config"]
    print(f"imported {result['source']} ({result['format']})")
    print(f"  sha1 {result['sha1']}"
          + ("  (BVLC's bvlc_alexnet.caffemodel)" if result["is_bvlc_alexnet_caffemodel"] else ""))
    print(f"  {result['parameters']:,} parameters, {model['num_classes']} classes, "
          f"{model['image_size']}x{model['image_size']} input, conv1 padding "
          f"{model['conv1_padding']}, LRN k={model['lrn_k']:g} alpha={model['lrn_alpha']:g} "
          f"(Caffe's alpha / {model['lrn_size']}) beta={model['lrn_beta']:g}")
    print(f"  mean_rgb {json.dumps([round(m, 3) for m in model['mean_rgb']])} from "
          f"{result['mean']}; labels from {result['labels']}")
    if not result["labels_sorted"]:
        print("  warning: the labels' wnids are not in sorted order, but Caffe's class i is the "
              "i-th wnid in sorted order (ILSVRC-2012's): check the labels file")
    if config.labels is None:
        print("  warning: no --labels: classes are named caffe_class_0000..; pass your "
              "records' labels.txt or Caffe's synset_words.txt to evaluate on ImageNet")
    print(f"wrote {result['model_dir']}")
    print(f"next: python -m launch.export --model_dir={result['model_dir']} "
          "--export_dir=saved_models/bvlc_alexnet")


if __name__ == "__main__":
    define_flags()
    terminal.run(main)

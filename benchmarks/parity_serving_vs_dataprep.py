"""How far the serving graph's 224x224 input on an original photo is from
what evaluation sees after data prep (issue 5, train/serve parity (b); issue
12).

Two paths from the same original JPEG:
  serving:   the exported `features` signature of a probe model
             (`tests/export_probe.py`: its fc7 is the input pixels), i.e.
             the real serving graph: `preprocessing.stored_view` (data
             prep's centre square and filter, in TF ops), centre crop 224.
  data prep: `data_prep.convert.convert` (the 256x256 record, JPEG quality
             95, 4:2:0 chroma) then evaluation's centre crop 224 of it.

Printed, over all images (0..255 scale, mean absolute error):
  serving vs record              the parity figure (docs/benchmarks.md, tests)
  serving vs data prep's pixels  the same, before data prep's JPEG encoding:
                                 how closely the resampling matches
  record's own JPEG loss         data prep's pixels vs its decoded record:
                                 the floor no serving-side resampling can beat

    python -m benchmarks.parity_serving_vs_dataprep \
        --data_dir=../shared/data/imagenet-sample [--limit=1000]
"""

from __future__ import annotations

import glob
import os
import sys
import tempfile
import time

from absl import app, flags
import numpy as np
import tensorflow as tf

from alexnet_tf.data import preprocessing
from alexnet_tf.data.labels import LabelMap
from alexnet_tf.serving import export
from data_prep import convert

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))
import export_probe  # noqa: E402  the test fixture: a model whose fc7 is its input pixels

FLAGS = flags.FLAGS
flags.DEFINE_string("data_dir", "../shared/data/imagenet-sample",
                    "Folder of original JPEG photos (*.JPEG / *.jpg).")
flags.DEFINE_integer("limit", 0, "Use only the first N files in name order (0: all).")


def views(signature, image_bytes: bytes) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(serving graph's input, evaluation's input from the record, data
    prep's pixels before encoding, centre crop), float32 [224, 224, 3] each."""
    size = preprocessing.CROP_SIZE
    served = signature(image_bytes=tf.constant([image_bytes]))[export.FEATURES]
    served = served.numpy().reshape(size, size, 3)
    converted = convert.convert(image_bytes)
    from_record = preprocessing.eval_image(tf.constant(converted.encoded)).numpy()
    offset = (converted.pixels.shape[0] - size) // 2
    pixels = converted.pixels[offset:offset + size, offset:offset + size].astype(np.float32)
    return served, from_record, pixels


def main(argv):
    del argv
    files = sorted(glob.glob(os.path.join(FLAGS.data_dir, "*.JPEG"))
                   + glob.glob(os.path.join(FLAGS.data_dir, "*.jpg")))
    if FLAGS.limit:
        files = files[:FLAGS.limit]
    if not files:
        raise app.UsageError(f"no *.JPEG / *.jpg files in {FLAGS.data_dir}")
    with tempfile.TemporaryDirectory() as tmp:
        labels = LabelMap.from_wnids(["n00000000", "n00000001"])
        path = export.export_saved_model(export_probe.build_probe_model(2), labels, tmp,
                                         warmup=False)
        signature = tf.saved_model.load(path).signatures[export.FEATURES]
        errors, resampling, floor = [], [], []
        start = time.perf_counter()
        for name in files:
            with open(name, "rb") as f:
                served, from_record, pixels = views(signature, f.read())
            errors.append(float(np.mean(np.abs(served - from_record))))
            resampling.append(float(np.mean(np.abs(served - pixels))))
            floor.append(float(np.mean(np.abs(pixels - from_record))))
        seconds = time.perf_counter() - start
    errors = np.array(errors)
    worst = int(np.argmax(errors))
    print(f"images: {len(files)} from {FLAGS.data_dir} ({seconds:.1f} s)")
    print(f"mean absolute pixel error (0..255), serving graph vs data prep + eval crop: "
          f"{errors.mean():.3f}")
    print("per-image MAE percentiles: " + ", ".join(
        f"p{q}={np.percentile(errors, q):.3f}" for q in (50, 90, 99, 100)))
    print(f"worst: {os.path.basename(files[worst])} MAE {errors[worst]:.3f}")
    print(f"serving graph vs data prep's pixels before its JPEG encoding: "
          f"{np.mean(resampling):.3f} (max per image {np.max(resampling):.3f})")
    print(f"the record's own JPEG loss (data prep's pixels vs its decoded record): "
          f"{np.mean(floor):.3f}")


if __name__ == "__main__":
    app.run(main)

"""How far the imported model's per-channel mean is from Caffe's mean image.

    python -m benchmarks.caffe_mean_image [--photos=20]

Caffe's training subtracted a 256x256 mean image (BGR) before cropping; the
import subtracts its per-channel means (as Caffe's own Python examples do).
Prints (1) the difference of the two inputs over the 227x227 centre crop,
which needs no weights, and (2) the difference of the probabilities on real
photos (../shared/data/imagenet-sample) through Caffe's forward pass (the
tests' NumPy reference) with a SYNTHETIC full-size AlexNet (random weights,
tests/caffe_fixtures.py): the real bvlc_alexnet.caffemodel is not available
here, so (2) shows the size of the effect on a net of AlexNet's shape, not
on the trained one.
"""

from __future__ import annotations

import os
import sys

import numpy as np
from absl import app, flags

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))
import caffe_fixtures as fx  # noqa: E402
import caffe_reference as ref  # noqa: E402

SHARED = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "shared", "data")
FLAGS = flags.FLAGS


def define_flags():
    flags.DEFINE_integer("photos", 20, "Photos of imagenet-sample to use (every k-th file).")
    flags.DEFINE_integer("seed", 11, "Seed of the synthetic weights.")


def main(argv):
    del argv
    mean_path = os.path.join(SHARED, "caffe", "ilsvrc_2012_mean.npy")
    photos_dir = os.path.join(SHARED, "imagenet-sample")
    if not (os.path.exists(mean_path) and os.path.isdir(photos_dir)):
        raise app.UsageError(f"needs {mean_path} and {photos_dir}")
    image = np.load(mean_path)
    pixel = image.mean(axis=(1, 2))
    top = (256 - 227) // 2
    centre = image[:, top:top + 227, top:top + 227] - pixel[:, None, None]
    rms = np.sqrt((centre ** 2).mean())
    print(f"mean image minus its channel means, 227x227 centre: RMS {rms:.2f}, "
          f"mean |d| {np.abs(centre).mean():.2f}, max |d| {np.abs(centre).max():.2f} "
          f"(0..255 levels; per channel B/G/R RMS "
          f"{', '.join(f'{np.sqrt((c ** 2).mean()):.2f}' for c in centre)})")

    spec = ref.NetSpec()
    weights, biases = fx.alexnet_weights(spec, seed=FLAGS.seed)
    names = sorted(n for n in os.listdir(photos_dir) if n.endswith(".JPEG"))
    names = names[::max(1, len(names) // FLAGS.photos)][:FLAGS.photos]
    crops = fx.centre_crops([os.path.join(photos_dir, n) for n in names], 227)
    max_diff, l1, top1_same, top5_overlap, top_p = [], [], 0, [], []
    for crop in crops:
        p_pixel = ref.softmax(ref.forward(spec, weights, biases, ref.caffe_input(crop, pixel)))
        p_image = ref.softmax(ref.forward(spec, weights, biases, ref.caffe_input(crop, image)))
        max_diff.append(np.abs(p_pixel - p_image).max())
        l1.append(np.abs(p_pixel - p_image).sum())
        top1_same += int(p_pixel.argmax() == p_image.argmax())
        top5_overlap.append(len(set(np.argsort(p_pixel)[-5:]) & set(np.argsort(p_image)[-5:])))
        top_p.append(p_image.max())
    print(f"synthetic AlexNet (seed {FLAGS.seed}), {len(crops)} photos, centre 227 crop: "
          f"max |dp| per photo median {np.median(max_diff):.4f}, max {np.max(max_diff):.4f}; "
          f"L1 distance median {np.median(l1):.4f}; same top-1 in {top1_same}/{len(crops)}; "
          f"top-5 overlap mean {np.mean(top5_overlap):.2f}/5; top-1 probability median "
          f"{np.median(top_p):.2f}")


if __name__ == "__main__":
    define_flags()
    app.run(main)

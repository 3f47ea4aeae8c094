"""Tiny image trees for the data prep tests: one small JPEG per file."""

import io
import os

import numpy as np
from PIL import Image

from data_prep import build_tfrecords


def write_jpeg(path, colour=(200, 40, 40)):
    """A 48x40 JPEG of one colour at `path` (str, bytes or Path), folders made.
    Its path is in a JPEG comment, so no two such files hold the same bytes
    (the build reports equal inputs: data_prep.duplicates); the pixels are
    the colour's alone."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    buffer = io.BytesIO()
    Image.fromarray(np.full((40, 48, 3), colour, np.uint8)).save(
        buffer, "JPEG", comment=os.fsencode(os.path.abspath(path)))
    with open(path, "wb") as f:
        f.write(buffer.getvalue())


def build_quietly(root, out, **kwargs):
    """One-worker build at 32x32, the summary returned and the log dropped."""
    with open(os.devnull, "w") as log:
        return build_tfrecords.build(build_tfrecords.BuildConfig(
            os.fsdecode(root), str(out), num_workers=1, image_size=32, **kwargs), log=log)


def write_two_class_tree(root, per_class: int) -> None:
    """train/a and train/b with `per_class` small JPEGs each, colours differing."""
    for c in ("a", "b"):
        for i in range(per_class):
            write_jpeg(os.path.join(root, "train", c, f"{i}.jpg"), (30 * i % 256, 80, 200))


def write_linked_tree(root, per_class: int = 80, side: int = 1500) -> str:
    """`per_class` links in each of two classes under `<root>/in` to one
    side x side noise PNG: all of them one duplicate group. At 1500 pixels
    each takes some 30 ms to convert: a build that lasts a few seconds, made
    in a fraction of one. Returns the input folder."""
    noise = np.random.default_rng(0).integers(0, 256, (side, side, 3), dtype=np.uint8)
    Image.fromarray(noise).save(os.path.join(root, "big.png"), compress_level=1)
    for c in ("a", "b"):
        folder = os.path.join(root, "in", "train", c)
        os.makedirs(folder)
        for i in range(per_class):
            os.symlink(os.path.join(root, "big.png"), os.path.join(folder, f"{i:03d}.png"))
    return os.path.join(root, "in")

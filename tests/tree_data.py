"""Tiny image trees for the data prep tests: one small JPEG per file."""

import io
import os

import numpy as np
from PIL import Image

from data_prep import build_tfrecords


def write_jpeg(path, colour=(200, 40, 40)):
    """A 48x40 JPEG of one colour at `path` (str, bytes or Path), folders made."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    buffer = io.BytesIO()
    Image.fromarray(np.full((40, 48, 3), colour, np.uint8)).save(buffer, "JPEG")
    with open(path, "wb") as f:
        f.write(buffer.getvalue())


def build_quietly(root, out, **kwargs):
    """One-worker build at 32x32, the summary returned and the log dropped."""
    with open(os.devnull, "w") as log:
        return build_tfrecords.build(build_tfrecords.BuildConfig(
            os.fsdecode(root), str(out), num_workers=1, image_size=32, **kwargs), log=log)

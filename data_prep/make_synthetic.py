r"""Writes a small, learnable dataset in the `imagefolder` layout.

    python -m data_prep.make_synthetic --output_dir=/tmp/synthetic

Each class has its own colour and pattern (disc, horizontal or vertical
stripes, checkerboard, ring, diagonal stripes) drawn at a random place and
scale over a noisy background, on images of varied sizes and aspect ratios,
so a small network separates them in a few epochs. Class folders are named
like wnids (`n90000000`, ...) and `LOC_synset_mapping.txt` gives their names.

On purpose, the training split also holds the awkward files real datasets
contain: a grayscale JPEG, a CMYK JPEG, a PNG saved with a .JPEG name and a
corrupt (truncated) JPEG, which data prep must skip and report.
"""

from __future__ import annotations

import colorsys
import dataclasses
import io
import os
import shutil
import sys

import numpy as np
from absl import app
from PIL import Image

from alexnet_tf.cli import config_flags
from alexnet_tf.options import option

PATTERNS = ("disc", "hstripes", "vstripes", "checker", "ring", "diagonal")
COLOURS = ("red", "green", "blue", "yellow", "magenta", "cyan", "orange", "purple")
_HUES = (0.0, 0.33, 0.62, 0.16, 0.83, 0.5, 0.08, 0.75)
MAPPING_FILENAME = "LOC_synset_mapping.txt"
MAX_CLASSES = len(PATTERNS) * len(COLOURS)


@dataclasses.dataclass(frozen=True)
class SyntheticConfig:
    """The tool's settings; the command line's flags are defined from these
    fields (name, type, default, help)."""

    output_dir: str = option(help="Folder to write train/, val/ and the class names into.")
    num_classes: int = option(6, f"Number of classes (1..{MAX_CLASSES}).")
    train_per_class: int = option(60, "Training images per class.")
    val_per_class: int = option(15, "Validation images per class.")
    seed: int = option(0, "Random seed: the same seed writes the same files.")
    awkward: bool = option(True, "Add a grayscale, a CMYK, a PNG-named-.JPEG and a corrupt "
                           "file to train/.")
    overwrite: bool = option(False, "Replace a dataset already in --output_dir.")


def class_wnid(index: int) -> str:
    return f"n9{index:07d}"


def class_name(index: int) -> str:
    return f"{COLOURS[index % len(COLOURS)]} {PATTERNS[index % len(PATTERNS)]}"


def make_synthetic(config: SyntheticConfig) -> dict:
    """Writes the dataset; returns {"train": n, "validation": n, "awkward": [paths]}."""
    if not 1 <= config.num_classes <= MAX_CLASSES:
        raise ValueError(f"num_classes must be in 1..{MAX_CLASSES}, got {config.num_classes}")
    if config.train_per_class < 1 or config.val_per_class < 0:
        raise ValueError("train_per_class must be >= 1 and val_per_class >= 0")
    _prepare(config)
    rng = np.random.default_rng(config.seed)
    counts = {"train": 0, "validation": 0}
    for split, per_class in (("train", config.train_per_class), ("val", config.val_per_class)):
        for c in range(config.num_classes):
            folder = os.path.join(config.output_dir, split, class_wnid(c))
            os.makedirs(folder, exist_ok=True)
            for i in range(per_class):
                image = draw(c, rng)
                image.save(os.path.join(folder, f"{class_wnid(c)}_{i:05d}.JPEG"), quality=90)
                counts["train" if split == "train" else "validation"] += 1
    with open(os.path.join(config.output_dir, MAPPING_FILENAME), "w", encoding="utf-8") as f:
        for c in range(config.num_classes):
            f.write(f"{class_wnid(c)} {class_name(c)}\n")
    counts["awkward"] = _write_awkward(config, rng) if config.awkward else []
    counts["train"] += len(counts["awkward"])
    return counts


def _prepare(config: SyntheticConfig) -> None:
    out = config.output_dir
    ours = [os.path.join(out, n) for n in ("train", "val", MAPPING_FILENAME)]
    if any(os.path.exists(p) for p in ours):
        if not config.overwrite:
            raise ValueError(f"{out} already holds a dataset: pass --overwrite to replace it")
        for p in ours:
            if os.path.isdir(p):
                shutil.rmtree(p)
            elif os.path.exists(p):
                os.remove(p)
    os.makedirs(out, exist_ok=True)


def draw(class_index: int, rng: np.random.Generator) -> Image.Image:
    """One RGB image of the class: its pattern in its colour over noise."""
    width = int(rng.integers(96, 400))
    aspect = float(np.exp(rng.uniform(np.log(0.6), np.log(1.7))))
    height = int(np.clip(width / aspect, 64, 480))
    hue = _HUES[class_index % len(_HUES)] + rng.uniform(-0.02, 0.02)
    colour = np.array(colorsys.hsv_to_rgb(hue % 1.0, rng.uniform(0.7, 1.0),
                                          rng.uniform(0.7, 1.0))) * 255
    # A dull, nearly grey background: the saturated colour belongs to the class.
    background = rng.uniform(60, 160) + rng.uniform(-15, 15, size=3)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    # The pattern fills a random square region of 50-90% of the shorter side.
    side = min(height, width) * rng.uniform(0.5, 0.9)
    cy = rng.uniform(side / 2, height - side / 2)
    cx = rng.uniform(side / 2, width - side / 2)
    u, v = (xx - cx) / side, (yy - cy) / side  # -0.5..0.5 inside the region
    inside = (np.abs(u) <= 0.5) & (np.abs(v) <= 0.5)
    period = rng.uniform(0.15, 0.25)
    pattern = PATTERNS[class_index % len(PATTERNS)]
    if pattern == "disc":
        mask = u * u + v * v <= 0.25
    elif pattern == "ring":
        r2 = u * u + v * v
        mask = (r2 <= 0.25) & (r2 >= 0.09)
    elif pattern == "hstripes":
        mask = inside & (np.floor(v / period) % 2 == 0)
    elif pattern == "vstripes":
        mask = inside & (np.floor(u / period) % 2 == 0)
    elif pattern == "checker":
        mask = inside & ((np.floor(u / period) + np.floor(v / period)) % 2 == 0)
    else:  # diagonal
        mask = inside & (np.floor((u + v) / period) % 2 == 0)
    pixels = np.where(mask[..., None], colour, background)
    pixels = pixels + rng.normal(0, 12, size=pixels.shape)
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), "RGB")


def _write_awkward(config: SyntheticConfig, rng: np.random.Generator) -> list[str]:
    """The awkward files, each in a training class folder."""
    def path(c: int, name: str) -> str:
        return os.path.join(config.output_dir, "train", class_wnid(c % config.num_classes), name)

    written = []
    gray = path(0, "awkward_grayscale.JPEG")
    draw(0, rng).convert("L").save(gray, quality=90)
    cmyk = path(1, "awkward_cmyk.JPEG")
    draw(1 % config.num_classes, rng).convert("CMYK").save(cmyk, quality=90)
    png = path(2, "awkward_png_named.JPEG")
    draw(2 % config.num_classes, rng).save(png, format="PNG")
    corrupt = path(3, "awkward_corrupt.JPEG")
    buffer = io.BytesIO()
    draw(3 % config.num_classes, rng).save(buffer, format="JPEG", quality=90)
    with open(corrupt, "wb") as f:
        f.write(buffer.getvalue()[: len(buffer.getvalue()) // 3])  # cut mid-scan
    written += [gray, cmyk, png, corrupt]
    return written


def define_flags() -> None:
    """The command line's flags: defined only when run as a program, so
    importing this module (the quickstart does) adds no global flags."""
    config_flags.define_flags(SyntheticConfig)


def main(argv) -> int:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    config = config_flags.from_flags(SyntheticConfig)
    try:
        counts = make_synthetic(config)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"wrote {counts['train']} training images ({len(counts['awkward'])} awkward on "
          f"purpose) and {counts['validation']} validation images in "
          f"{config.num_classes} classes to {config.output_dir}")
    return 0


if __name__ == "__main__":
    define_flags()
    app.run(main)

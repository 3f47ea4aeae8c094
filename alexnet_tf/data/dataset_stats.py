"""Dataset statistics (`stats.json`): what data prep measures, training reads.

Pixel scale is 0..255 throughout. The model subtracts `mean_rgb` (and, by
default, divides by `std_rgb`, the per-channel standard deviation that the
covariance below gives). The PCA
lighting of section 4.1 needs the eigenvectors p_i and eigenvalues lambda_i of
the 3x3 covariance of the training RGB pixels, and adds sum_i p_i alpha_i
lambda_i to each pixel. That formula is not scale-free (lambda carries pixel
units squared), so the scale must be fixed: `eigval` holds the eigenvalues of
the covariance measured on the 0..1 scale, times 255 -- the shift then lands
on the 0..255 scale at the size it has on the 0..1 scale (a few pixel levels),
which is how the widely used ImageNet figures below are meant.
"""

from __future__ import annotations

import dataclasses
import json
import os

import numpy as np

STATS_FILENAME = "stats.json"

# ILSVRC-2012 training-set figures, 0..255 scale: the mean RGB widely used
# for ImageNet models, and the PCA of the RGB covariance as published with
# fb.resnet.torch (given there on the 0..1 scale: eigenvalues times 255).
IMAGENET_MEAN_RGB = (123.68, 116.78, 103.94)
IMAGENET_EIGVAL = (0.2175 * 255, 0.0188 * 255, 0.0045 * 255)
IMAGENET_EIGVEC = (  # columns are the eigenvectors p_1, p_2, p_3
    (-0.5675, 0.7192, 0.4009),
    (-0.5808, -0.0045, -0.8140),
    (-0.5836, -0.6948, 0.4203),
)


@dataclasses.dataclass(frozen=True)
class RGBStats:
    """Mean and PCA of the training pixels. `eigvec[:, i]` goes with `eigval[i]`;
    `eigval` is on the lighting scale described in the module docstring."""

    mean_rgb: tuple[float, float, float] = IMAGENET_MEAN_RGB
    eigval: tuple[float, float, float] = IMAGENET_EIGVAL
    eigvec: tuple[tuple[float, ...], ...] = IMAGENET_EIGVEC

    @classmethod
    def from_moments(cls, count: int, pixel_sum: np.ndarray,
                     outer_sum: np.ndarray) -> "RGBStats":
        """From running sums over 0..255 pixels: sum of x (3,) and sum of x x^T
        (3, 3). The covariance's eigenvalues are divided by 255 (that is, the
        0..1-scale eigenvalues times 255), see the module docstring."""
        if count < 2:
            raise ValueError("need at least two pixels for an RGB covariance")
        mean = pixel_sum / count
        cov = (outer_sum - count * np.outer(mean, mean)) / (count - 1)
        eigval, eigvec = np.linalg.eigh(cov)
        order = np.argsort(eigval)[::-1]  # largest first, as usually listed
        eigval, eigvec = eigval[order] / 255.0, eigvec[:, order]
        return cls(tuple(float(v) for v in mean),
                   tuple(float(max(v, 0.0)) for v in eigval),
                   tuple(tuple(float(v) for v in row) for row in eigvec))

    @property
    def std_rgb(self) -> tuple[float, float, float]:
        """Per-channel pixel standard deviation, 0..255 scale: the square root
        of the covariance's diagonal, cov = P diag(eigval * 255) P^T."""
        eigvec = np.asarray(self.eigvec, np.float64)
        variance = (eigvec ** 2) @ (np.asarray(self.eigval, np.float64) * 255.0)
        return tuple(float(v) for v in np.sqrt(variance))


# The per-channel std the published PCA figures imply (about 72, 70, 74).
IMAGENET_STD_RGB = RGBStats().std_rgb


def split_counts_to_json(images: int, per_class: dict[str, int]) -> dict:
    """One split's entry of stats.json's "splits" section (data prep writes it)."""
    return {"images": int(images), "per_class": dict(per_class)}


def split_image_count(stats: dict, split: str) -> int | None:
    """Images of `split` ('train' / 'validation') in a stats.json dict, from
    its "splits" section: {"splits": {split: {"images": N, ...}}}; None when
    the file does not say."""
    entry = stats.get("splits", {}).get(split)
    return int(entry["images"]) if isinstance(entry, dict) and "images" in entry else None


def read_stats(path: str) -> dict:
    """The whole stats.json as a dict (counts and RGB figures)."""
    if os.path.isdir(path):
        path = os.path.join(path, STATS_FILENAME)
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def read_rgb_stats(path: str) -> RGBStats:
    """The RGB figures from a stats.json (or the folder holding one)."""
    stats = read_stats(path)
    try:
        rgb = stats["rgb"]
        return RGBStats(tuple(rgb["mean"]), tuple(rgb["eigval"]),
                        tuple(tuple(r) for r in rgb["eigvec"]))
    except (KeyError, TypeError) as e:
        raise ValueError(f"{path}: no valid 'rgb' section ({e})") from None


def rgb_stats_to_json(stats: RGBStats) -> dict:
    """The 'rgb' section of stats.json."""
    return {"mean": list(stats.mean_rgb), "eigval": list(stats.eigval),
            "eigvec": [list(r) for r in stats.eigvec],
            "std": list(stats.std_rgb),  # derived, for readers; not read back
            "scale": "0..255", "eigvec_layout": "columns are eigenvectors"}

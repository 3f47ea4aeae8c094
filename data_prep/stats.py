"""Streaming RGB statistics of the training pixels, for `stats.json`.

The paper subtracts the mean activity over the training set (section 2) and
perturbs colours along the principal components of the training RGB pixels
(section 4.1). Both come from three running sums, so workers accumulate them
while they convert, and the sums of all workers simply add up:
count, sum of x (3,) and sum of x x^T (3, 3), in float64.

Sampling: the pixels measured are those of the stored `size` x `size` image
(after resize and crop, before JPEG encoding), on a regular grid of every
`stride`-th row and column starting at stride // 2. The default stride 8
takes 1,024 of the 65,536 pixels of a 256x256 image, over 1.3 billion pixels
for ILSVRC-2012: far more than a 3x3 covariance needs. Stride 1 measures all.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from alexnet_tf.data.dataset_stats import RGBStats

DEFAULT_PIXEL_STRIDE = 8


def sample_pixels(pixels: np.ndarray, stride: int = DEFAULT_PIXEL_STRIDE) -> np.ndarray:
    """The measured pixels of one uint8 [H, W, 3] image, as float64 [N, 3]."""
    if stride < 1:
        raise ValueError(f"pixel stride must be >= 1, got {stride}")
    start = stride // 2
    grid = pixels[start::stride, start::stride]
    return grid.reshape(-1, 3).astype(np.float64)


@dataclasses.dataclass
class PixelMoments:
    """Running count, sum and sum of outer products of RGB pixels."""

    count: int = 0
    total: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros(3))
    outer: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros((3, 3)))

    def add_pixels(self, rgb: np.ndarray) -> None:
        """Adds float64 [N, 3] pixels."""
        self.count += rgb.shape[0]
        self.total += rgb.sum(axis=0)
        self.outer += rgb.T @ rgb

    def add_image(self, pixels: np.ndarray, stride: int = DEFAULT_PIXEL_STRIDE) -> None:
        self.add_pixels(sample_pixels(pixels, stride))

    def merge(self, other: "PixelMoments") -> None:
        self.count += other.count
        self.total += other.total
        self.outer += other.outer

    def rgb_stats(self) -> RGBStats:
        """Mean and PCA of the pixels seen (raises with fewer than two)."""
        return RGBStats.from_moments(self.count, self.total, self.outer)

    def to_json(self) -> dict:
        return {"count": self.count, "sum": self.total.tolist(),
                "outer_sum": self.outer.tolist()}

    @classmethod
    def from_json(cls, data: dict) -> "PixelMoments":
        return cls(int(data["count"]), np.asarray(data["sum"], np.float64).reshape(3),
                   np.asarray(data["outer_sum"], np.float64).reshape(3, 3))

"""The paper's figures as images: Figure 3 (conv1 kernels), Figure 4 left
(top-5 predictions), Figure 4 right (fc7 nearest neighbours), and training
curves. Functions take arrays and return RGB uint8 images (numpy), so the
same picture goes to a PNG file and to TensorBoard.

matplotlib is an optional extra (`pip install -e .[figures]`); the kernel grid
needs only numpy.
"""

from __future__ import annotations

import io
from typing import Mapping, Sequence

import numpy as np


def _pyplot():
    try:
        import matplotlib
    except ImportError:
        raise ImportError("figures need matplotlib: pip install -e '.[figures]'") from None
    matplotlib.use("Agg")  # files only: no display on servers and CI
    import matplotlib.pyplot as plt
    return plt


def _figure_to_array(fig) -> np.ndarray:
    plt = _pyplot()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=fig.dpi)
    plt.close(fig)
    buf.seek(0)
    rgb = plt.imread(buf, format="png")[..., :3]  # float 0..1
    return np.round(rgb * 255).astype(np.uint8)


def kernel_grid(tower_kernels: Sequence[np.ndarray], columns: int = 16,
                zoom: int = 4, gap: int = 1, tower_gap: int = 4) -> np.ndarray:
    """Figure 3: conv1 kernels as tiles, each tower's block under the previous.

    `tower_kernels`: one [kh, kw, 3, n] array per tower (tower A first). Each
    kernel is contrast-normalized on its own to 0..255, as the paper's figure
    shows them; towers are separated by a wider gap.
    """
    blocks = []
    for kernels in tower_kernels:
        kh, kw, channels, count = kernels.shape
        if channels != 3:
            raise ValueError(f"conv1 kernels must have 3 input channels, got {channels}")
        rows = -(-count // columns)
        tile_h, tile_w = kh * zoom + gap, kw * zoom + gap
        block = np.full((rows * tile_h + gap, columns * tile_w + gap, 3), 255, np.uint8)
        for i in range(count):
            k = kernels[..., i].astype(np.float64)
            span = k.max() - k.min()
            k = (k - k.min()) / span if span > 0 else np.zeros_like(k)
            tile = np.kron(k, np.ones((zoom, zoom, 1)))
            r, c = divmod(i, columns)
            top, left = gap + r * tile_h, gap + c * tile_w
            block[top:top + kh * zoom, left:left + kw * zoom] = np.round(tile * 255)
        blocks.append(block)
    width = max(b.shape[1] for b in blocks)
    separator = np.full((tower_gap, width, 3), 255, np.uint8)
    out = []
    for i, b in enumerate(blocks):
        if i:
            out.append(separator)
        out.append(np.pad(b, ((0, 0), (0, width - b.shape[1]), (0, 0)), constant_values=255))
    return np.concatenate(out, axis=0)


def top5_figure(images: np.ndarray, probabilities: np.ndarray, labels: Sequence[int],
                names: Sequence[str], k: int = 5) -> np.ndarray:
    """Figure 4 left: each image with its true label and the top-k labels as
    bars. When the true label is among them its bar, name and probability are
    red, so it shows even when its bar is too short to see."""
    plt = _pyplot()
    n = len(images)
    cols = min(n, 4)
    rows = -(-n // cols)
    fig, axes = plt.subplots(rows * 2, cols, figsize=(3.2 * cols, 4.6 * rows), dpi=80,
                             gridspec_kw={"height_ratios": [3, 2] * rows}, squeeze=False)
    for i in range(rows * cols):
        ax_img, ax_bar = axes[2 * (i // cols), i % cols], axes[2 * (i // cols) + 1, i % cols]
        ax_img.axis("off")
        if i >= n:
            ax_bar.axis("off")
            continue
        ax_img.imshow(np.clip(images[i], 0, 255).astype(np.uint8))
        ax_img.set_title(names[labels[i]], fontsize=9)
        top = np.argsort(probabilities[i])[::-1][:k]
        colors = ["red" if t == labels[i] else "steelblue" for t in top]
        ax_bar.barh(range(len(top))[::-1], probabilities[i][top], color=colors)
        ax_bar.set_yticks(range(len(top))[::-1])
        ticks = ax_bar.set_yticklabels([names[t][:18] for t in top], fontsize=7)
        for row, (t, tick) in enumerate(zip(top, ticks)):
            if t == labels[i]:
                tick.set_color("red")
                tick.set_fontweight("bold")
                ax_bar.text(probabilities[i][t] + 0.02, len(top) - 1 - row,
                            f"{probabilities[i][t]:.3g}", color="red", fontsize=7,
                            va="center")
        ax_bar.set_xlim(0, 1)
        ax_bar.tick_params(axis="x", labelsize=7)
    fig.tight_layout()
    return _figure_to_array(fig)


def neighbours_figure(queries: np.ndarray, neighbours: np.ndarray) -> np.ndarray:
    """Figure 4 right: one row per query image (first column) followed by its
    nearest training images by fc7 distance. `neighbours`: [q, k, H, W, 3]."""
    q, k = neighbours.shape[:2]
    size = queries.shape[1]
    gap = 4
    canvas = np.full((q * (size + gap), (k + 1) * (size + gap) + gap, 3), 255, np.uint8)
    for r in range(q):
        row = [queries[r]] + list(neighbours[r])
        for c, img in enumerate(row):
            left = c * (size + gap) + (gap if c else 0)  # a wider gap after the query
            canvas[r * (size + gap):r * (size + gap) + size, left:left + size] = (
                np.clip(img, 0, 255).astype(np.uint8))
    return canvas


def curves_figure(scalars: Mapping[str, Mapping[str, Sequence[tuple[int, float]]]]) -> np.ndarray:
    """Training curves: one panel per tag (loss, top-1/top-5 error, learning
    rate), one line per run split ('train', 'validation').

    `scalars[split][tag]` is a list of (step, value)."""
    plt = _pyplot()
    tags = sorted({tag for series in scalars.values() for tag in series})
    if not tags:
        raise ValueError("no scalars to plot")
    fig, axes = plt.subplots(1, len(tags), figsize=(3.6 * len(tags), 3.0), dpi=80, squeeze=False)
    for ax, tag in zip(axes[0], tags):
        for split, series in sorted(scalars.items()):
            if tag in series and series[tag]:
                steps, values = zip(*series[tag])
                ax.plot(steps, values, marker="." if len(steps) < 30 else None, label=split)
        ax.set_title(tag, fontsize=9)
        ax.set_xlabel("step", fontsize=8)
        ax.tick_params(labelsize=7)
        if "learning_rate" in tag:
            rate_axis(ax, [v for series in scalars.values() for _, v in series.get(tag, [])])
        ax.legend(fontsize=7)
    fig.tight_layout()
    return _figure_to_array(fig)


def rate_axis(ax, values: Sequence[float]) -> None:
    """A log axis when the rate changed; for a constant rate a log axis would
    label both ends with the same power of ten, so a linear one with the value."""
    positive = [v for v in values if v > 0]
    if positive and max(positive) > min(positive) * 1.001:
        ax.set_yscale("log")
    elif positive:
        ax.set_ylim(positive[0] * 0.5, positive[0] * 1.5)
        ax.set_yticks([positive[0]])
        ax.set_yticklabels([f"{positive[0]:g}"])


def save_png(image: np.ndarray, path: str) -> None:
    from PIL import Image
    Image.fromarray(image).save(path)

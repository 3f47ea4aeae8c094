import numpy as np
import pytest

from alexnet_tf.figures import render as figures


def test_kernel_grid_puts_tower_a_above_tower_b_and_normalizes_each_kernel():
    rng = np.random.default_rng(0)
    tower_a = rng.normal(size=(11, 11, 3, 48))
    tower_b = rng.normal(size=(11, 11, 3, 48)) * 100  # a different scale
    grid = figures.kernel_grid([tower_a, tower_b], columns=16, zoom=2, gap=1, tower_gap=4)
    tile = 11 * 2 + 1
    block_h = 3 * tile + 1
    assert grid.shape == (2 * block_h + 4, 16 * tile + 1, 3)
    assert grid.dtype == np.uint8
    # the first kernel of each tower, read back: contrast-normalized on its own
    for top, kernels in ((1, tower_a), (block_h + 4 + 1, tower_b)):
        tile_pixels = grid[top:top + 22:2, 1:1 + 22:2].astype(float)
        k = kernels[..., 0]
        expected = np.round((k - k.min()) / (k.max() - k.min()) * 255)
        np.testing.assert_array_equal(tile_pixels, expected)


def test_kernel_grid_rejects_non_rgb_kernels():
    with pytest.raises(ValueError, match="3 input channels"):
        figures.kernel_grid([np.zeros((5, 5, 4, 2))])


def test_top5_and_curves_and_neighbours_render_images():
    pytest.importorskip("matplotlib")
    rng = np.random.default_rng(1)
    images = rng.uniform(0, 255, size=(8, 32, 32, 3))
    probs = rng.dirichlet(np.ones(7), size=8)
    labels = [0, 1, 2, 3, 4, 5, 6, 0]
    names = [f"class {i}" for i in range(7)]
    img = figures.top5_figure(images, probs, labels, names)
    assert img.ndim == 3 and img.shape[2] == 3 and img.shape[0] > 200 and img.shape[1] > 200
    assert img.std() > 0  # something was drawn
    curves = figures.curves_figure({"train": {"loss": [(1, 2.0), (2, 1.5)]},
                                    "validation": {"loss": [(2, 1.8)], "learning_rate": [(2, 0.01)]}})
    assert curves.shape[2] == 3 and curves.shape[1] > curves.shape[0]
    grid = figures.neighbours_figure(images[:2], rng.uniform(0, 255, size=(2, 6, 32, 32, 3)))
    assert grid.shape == (2 * 36, 7 * 36 + 4, 3)
    np.testing.assert_array_equal(grid[:32, :32], np.clip(images[0], 0, 255).astype(np.uint8))


def _red_pixels(image):
    r, g, b = (image[..., c].astype(int) for c in range(3))
    return int(np.sum((r > 180) & (g < 90) & (b < 90)))


def test_a_true_class_ranked_fifth_with_probability_near_0_is_still_marked_red():
    pytest.importorskip("matplotlib")
    images = np.full((1, 32, 32, 3), 128.0)
    probs = np.array([[0.96, 0.02, 0.01, 0.0099, 1e-4, 1e-6]])
    names = [f"class {i}" for i in range(6)]
    marked = figures.top5_figure(images, probs, [4], names)    # 5th, bar invisible
    unmarked = figures.top5_figure(images, probs, [5], names)  # not in the top 5
    assert _red_pixels(marked) > 30 and _red_pixels(unmarked) == 0


def test_the_rate_axis_of_a_constant_rate_names_the_rate_once():
    plt = pytest.importorskip("matplotlib.pyplot")
    fig, (constant, dropped) = plt.subplots(1, 2)
    figures.rate_axis(constant, [0.01, 0.01, 0.01])
    figures.rate_axis(dropped, [0.01, 0.01, 0.001])
    fig.canvas.draw()
    assert [t.get_text() for t in constant.get_yticklabels()] == ["0.01"]
    assert constant.get_yscale() == "linear" and dropped.get_yscale() == "log"
    plt.close(fig)

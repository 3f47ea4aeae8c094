"""data_prep.stats: streaming RGB moments equal numpy on the same pixels."""

import numpy as np
import pytest

from data_prep import stats


def _images(n=5, size=32, seed=0):
    rng = np.random.default_rng(seed)
    # Correlated channels, like real photos, so the PCA is not trivial.
    base = rng.integers(0, 200, size=(n, size, size, 1))
    noise = rng.integers(0, 56, size=(n, size, size, 3))
    return (base + noise).astype(np.uint8)


def test_sample_pixels_takes_a_regular_grid():
    image = np.arange(16 * 16 * 3, dtype=np.uint8).reshape(16, 16, 3)
    sampled = stats.sample_pixels(image, stride=4)
    expected = image[2::4, 2::4].reshape(-1, 3)
    np.testing.assert_array_equal(sampled, expected)
    assert sampled.dtype == np.float64
    np.testing.assert_array_equal(stats.sample_pixels(image, 1), image.reshape(-1, 3))
    with pytest.raises(ValueError, match="stride"):
        stats.sample_pixels(image, 0)


@pytest.mark.parametrize("stride", [1, 3, 8])
def test_moments_equal_numpy_on_the_same_pixels(stride):
    images = _images()
    moments = stats.PixelMoments()
    for image in images:
        moments.add_image(image, stride)
    pixels = np.concatenate([image[stride // 2::stride, stride // 2::stride].reshape(-1, 3)
                             for image in images]).astype(np.float64)
    rgb = moments.rgb_stats()
    np.testing.assert_allclose(rgb.mean_rgb, pixels.mean(axis=0), rtol=1e-10)
    cov = np.cov(pixels, rowvar=False)
    eigval, eigvec = np.linalg.eigh(cov)
    # RGBStats keeps eigenvalues on the lighting scale: covariance eigenvalues / 255.
    np.testing.assert_allclose(np.asarray(rgb.eigval) * 255, eigval[::-1], rtol=1e-8)
    for i in range(3):  # eigenvectors are defined up to sign
        ours = np.asarray(rgb.eigvec)[:, i]
        theirs = eigvec[:, 2 - i]
        assert abs(abs(ours @ theirs) - 1) < 1e-8
    # And the covariance rebuilt from the PCA is numpy's.
    v = np.asarray(rgb.eigvec)
    np.testing.assert_allclose(v @ np.diag(np.asarray(rgb.eigval) * 255) @ v.T, cov,
                               rtol=1e-8, atol=1e-8)
    # The per-channel std the model standardizes with is numpy's.
    np.testing.assert_allclose(rgb.std_rgb, pixels.std(axis=0, ddof=1), rtol=1e-8)


def test_merging_workers_equals_one_pass():
    images = _images(6)
    whole, a, b = stats.PixelMoments(), stats.PixelMoments(), stats.PixelMoments()
    for i, image in enumerate(images):
        whole.add_image(image, 2)
        (a if i % 2 else b).add_image(image, 2)
    a.merge(b)
    assert a.count == whole.count
    np.testing.assert_allclose(a.total, whole.total)
    np.testing.assert_allclose(a.outer, whole.outer)


def test_json_round_trip():
    moments = stats.PixelMoments()
    moments.add_image(_images(1)[0], 1)
    again = stats.PixelMoments.from_json(moments.to_json())
    assert again.count == moments.count
    np.testing.assert_array_equal(again.total, moments.total)
    np.testing.assert_array_equal(again.outer, moments.outer)


def test_too_few_pixels_is_an_error():
    moments = stats.PixelMoments()
    moments.add_pixels(np.ones((1, 3)))
    with pytest.raises(ValueError, match="two pixels"):
        moments.rgb_stats()

"""alexnet_tf.data.dataset_stats: stats.json's RGB section."""

import json

import numpy as np
import pytest

from alexnet_tf.data import dataset_stats
from alexnet_tf.data.dataset_stats import RGBStats


def _moments(pixels):
    pixels = np.asarray(pixels, np.float64)
    return len(pixels), pixels.sum(0), pixels.T @ pixels


def test_from_moments_matches_numpy():
    rng = np.random.default_rng(0)
    pixels = rng.normal(120, 40, size=(5000, 1)) + rng.normal(0, 10, size=(5000, 3))
    stats = RGBStats.from_moments(*_moments(pixels))
    np.testing.assert_allclose(stats.mean_rgb, pixels.mean(0), rtol=1e-12)
    eigval, eigvec = np.linalg.eigh(np.cov(pixels, rowvar=False))
    # Lighting scale: covariance eigenvalues (0..255 pixels) divided by 255.
    np.testing.assert_allclose(np.asarray(stats.eigval), eigval[::-1] / 255, rtol=1e-9)
    v = np.asarray(stats.eigvec)
    assert stats.eigval[0] >= stats.eigval[1] >= stats.eigval[2]
    np.testing.assert_allclose(v.T @ v, np.eye(3), atol=1e-12)  # orthonormal columns
    for i in range(3):
        assert abs(abs(v[:, i] @ eigvec[:, 2 - i]) - 1) < 1e-9


def test_too_few_pixels():
    with pytest.raises(ValueError, match="two pixels"):
        RGBStats.from_moments(*_moments([[1, 2, 3]]))


def test_json_round_trip(tmp_path):
    stats = RGBStats.from_moments(*_moments(np.random.default_rng(1).uniform(0, 255, (100, 3))))
    path = tmp_path / dataset_stats.STATS_FILENAME
    path.write_text(json.dumps({"rgb": dataset_stats.rgb_stats_to_json(stats), "splits": {}}))
    again = dataset_stats.read_rgb_stats(str(tmp_path))
    np.testing.assert_allclose(again.mean_rgb, stats.mean_rgb)
    np.testing.assert_allclose(again.eigval, stats.eigval)
    np.testing.assert_allclose(again.eigvec, stats.eigvec)
    assert dataset_stats.read_stats(str(path))["splits"] == {}


def test_missing_rgb_section_is_a_clear_error(tmp_path):
    (tmp_path / dataset_stats.STATS_FILENAME).write_text(json.dumps({"splits": {}}))
    with pytest.raises(ValueError, match="no valid 'rgb' section"):
        dataset_stats.read_rgb_stats(str(tmp_path))


def test_imagenet_defaults_are_orthonormal():
    v = np.asarray(dataset_stats.IMAGENET_EIGVEC)
    np.testing.assert_allclose(v.T @ v, np.eye(3), atol=2e-3)
    assert RGBStats().mean_rgb == dataset_stats.IMAGENET_MEAN_RGB


def test_split_image_count_reads_the_splits_section():
    from alexnet_tf.data.dataset_stats import split_counts_to_json, split_image_count
    stats = {"splits": {"train": split_counts_to_json(12, {"n1": 5, "n2": 7})}}
    assert split_image_count(stats, "train") == 12
    assert split_image_count(stats, "validation") is None
    assert split_image_count({}, "train") is None

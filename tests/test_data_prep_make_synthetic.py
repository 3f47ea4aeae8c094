"""data_prep.make_synthetic: a small, learnable imagefolder dataset with awkward files."""

import os

import numpy as np
import pytest
from PIL import Image

from data_prep import convert, layouts, make_synthetic


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("synthetic")
    made = make_synthetic.make_synthetic(make_synthetic.SyntheticConfig(
        str(root), num_classes=5, train_per_class=6, val_per_class=2, seed=0))
    return root, made


def test_layout_and_counts(dataset):
    root, made = dataset
    assert made == {"train": 5 * 6 + 4, "validation": 10, "awkward": made["awkward"]}
    listing = layouts.list_inputs(str(root))
    assert listing.layout == "imagefolder"
    assert listing.label_map.wnids == tuple(make_synthetic.class_wnid(c) for c in range(5))
    assert listing.label_map.names[0] == "red disc"
    assert len(listing.splits["train"]) == made["train"]
    assert len(listing.splits["validation"]) == made["validation"]


def test_awkward_files_are_what_they_claim(dataset):
    _, made = dataset
    gray, cmyk, png, corrupt = made["awkward"]
    assert all(p.endswith(".JPEG") for p in made["awkward"])
    assert Image.open(gray).mode == "L"
    with Image.open(cmyk) as image:
        assert (image.format, image.mode) == ("JPEG", "CMYK")
    with open(png, "rb") as f:
        assert convert.sniff_format(f.read()) == "PNG"
    with open(corrupt, "rb") as f, pytest.raises(convert.ConversionError):
        convert.convert(f.read())


def test_sizes_and_aspect_ratios_vary(dataset):
    root, _ = dataset
    sizes = {Image.open(p).size for p in (root / "train").glob("*/n*.JPEG")}
    aspects = [w / h for w, h in sizes]
    assert len(sizes) > 20
    assert min(aspects) < 0.9 and max(aspects) > 1.1


def test_classes_are_visually_distinct():
    """A nearest-centroid rule on the hue histogram of the saturated pixels
    already tells the classes apart: the data set is learnable."""
    rng = np.random.default_rng(1)

    def features(c):
        hsv = np.asarray(make_synthetic.draw(c, rng).convert("HSV")).reshape(-1, 3)
        hue = hsv[hsv[:, 1] > 100, 0]
        hist = np.histogram(hue, bins=24, range=(0, 256))[0].astype(np.float64)
        return hist / max(hist.sum(), 1)

    classes = range(6)
    centroids = np.stack([np.mean([features(c) for _ in range(8)], axis=0) for c in classes])
    correct = sum(int(np.argmin(((centroids - features(c)) ** 2).sum(1)) == c)
                  for c in classes for _ in range(5))
    assert correct >= 0.9 * 30


def test_same_seed_same_files(tmp_path):
    config = dict(num_classes=2, train_per_class=2, val_per_class=1, seed=5, awkward=False)
    make_synthetic.make_synthetic(make_synthetic.SyntheticConfig(str(tmp_path / "a"), **config))
    make_synthetic.make_synthetic(make_synthetic.SyntheticConfig(str(tmp_path / "b"), **config))
    files = sorted(os.path.relpath(p, tmp_path / "a") for p in (tmp_path / "a").rglob("*.JPEG"))
    assert len(files) == 6
    for rel in files:
        assert (tmp_path / "a" / rel).read_bytes() == (tmp_path / "b" / rel).read_bytes()


def test_refuses_to_overwrite_unless_asked(tmp_path):
    config = make_synthetic.SyntheticConfig(str(tmp_path), num_classes=1, train_per_class=1,
                                            val_per_class=0, awkward=False)
    make_synthetic.make_synthetic(config)
    with pytest.raises(ValueError, match="--overwrite"):
        make_synthetic.make_synthetic(config)
    import dataclasses
    make_synthetic.make_synthetic(dataclasses.replace(config, overwrite=True))
    with pytest.raises(ValueError, match="num_classes"):
        make_synthetic.make_synthetic(dataclasses.replace(config, num_classes=0))

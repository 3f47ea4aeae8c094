"""Messy trees: every entry under the split folders counted or reported,
links neither looping nor leaking (data_prep.tree)."""

import csv
import errno
import glob
import os

import pytest
import tensorflow as tf

from alexnet_tf.data import records
from alexnet_tf.data.labels import LabelMap
from data_prep import build_tfrecords, layouts
from tree_data import build_quietly, write_jpeg


@pytest.fixture(scope="module")
def messy(tmp_path_factory):
    """A tree with every kind of entry; returns (input folder, build output)."""
    base = tmp_path_factory.mktemp("messy")
    elsewhere, root = base / "elsewhere", base / "in"  # elsewhere: "another disk"
    for name in ("bird/b1.jpg", "bird/b2.jpg", "more/m1.jpg", "more/m2.jpg", "x.jpg"):
        write_jpeg(elsewhere / name, (40, 40, 200))
    train, val = root / "train", root / "val"
    for name in ("cat/c1.jpg", "cat/c2.jpg"):
        write_jpeg(train / name)
    for name, colour in (("cat/v1.jpg", (200, 40, 40)), ("dog/d1.jpg", (40, 200, 40)),
                         ("bird/vb.jpg", (40, 40, 200))):
        write_jpeg(val / name, colour)
    cat = train / "cat"
    os.symlink(elsewhere / "more", cat / "sub")  # linked sub-folder: read
    os.symlink(elsewhere / "x.jpg", cat / "ext.jpg")  # file link anywhere: read
    os.symlink(val / "cat" / "v1.jpg", cat / "leak.jpg")  # into validation: refused
    os.symlink(base / "nowhere.jpg", cat / "broken.jpg")
    os.mkfifo(cat / "pipe")  # reading it would block for ever
    os.symlink("..", cat / "loop")
    os.symlink(elsewhere / "bird", train / "bird")  # class folder on another disk
    os.symlink(elsewhere / "bird", train / "bird2")  # the same real folder again
    os.symlink("..", train / "n2loop")  # the loop: would duplicate everything
    os.symlink(os.path.join("..", "val", "dog"), train / "dogs")
    (train / "empty").mkdir()
    write_jpeg(train / "stray.jpg")
    out = base / "out"
    return root, out, build_quietly(root, out)


def test_every_entry_is_counted_or_reported(messy):
    root, out, summary = messy
    assert summary.per_split["train"] == {"found": 16, "written": 7, "skipped": 9}
    assert summary.per_split["validation"] == {"found": 3, "written": 2, "skipped": 1}
    assert summary.found == 19 == summary.written + len(summary.skipped)
    reasons = {os.path.relpath(p, root): r for _, p, r in summary.skipped}
    assert set(reasons) == {
        "train/cat/leak.jpg", "train/cat/broken.jpg", "train/cat/pipe", "train/cat/loop",
        "train/bird2", "train/n2loop", "train/dogs", "train/empty", "train/stray.jpg",
        "val/dog/d1.jpg"}
    assert "into the validation folder" in reasons["train/cat/leak.jpg"]
    assert "broken link" in reasons["train/cat/broken.jpg"]
    assert "FIFO" in reasons["train/cat/pipe"]
    assert "loop" in reasons["train/cat/loop"] and "loop" in reasons["train/n2loop"]
    assert "same folder as" in reasons["train/bird2"] and "train/bird" in reasons["train/bird2"]
    assert "validation folder" in reasons["train/dogs"]
    assert "empty class folder" in reasons["train/empty"]
    assert reasons["train/stray.jpg"] == "not inside a class folder"
    # Each entry not written is in the manifest's TSV with its reason.
    with open(out / build_tfrecords.FILES_FILENAME, newline="") as f:
        rows = list(csv.DictReader(f, delimiter="\t"))
    assert len(rows) == 19
    assert {os.path.relpath(r["path"], root): r["reason"] for r in rows
            if r["status"] == "skipped"} == reasons


def test_links_are_followed_but_never_loop_or_leak(messy):
    root, out, _ = messy
    assert LabelMap.read(str(out)).wnids == ("bird", "cat")  # no made-up class from a link
    train = [records.parse_example(s) for s in tf.data.TFRecordDataset(
        sorted(glob.glob(records.shard_pattern(str(out), "train"))))]
    written = sorted((e[records.SYNSET].numpy().decode(), e[records.FILENAME].numpy().decode())
                     for e in train)
    assert written == [("bird", "b1.jpg"), ("bird", "b2.jpg"), ("cat", "c1.jpg"),
                       ("cat", "c2.jpg"), ("cat", "ext.jpg"), ("cat", "m1.jpg"),
                       ("cat", "m2.jpg")]  # v1.jpg (validation) nowhere in train


def test_empty_class_folder_fails_strict(messy):
    _, _, summary = messy
    assert not summary.ok  # --strict exits 1 on it (the CLI test checks the code)


@pytest.fixture
def deny():
    """Makes folders unreadable: chmod 000, or, for root (whom permissions do
    not stop), the very error os.scandir gives, for those folders only."""
    denied = []
    real_scandir = os.scandir

    def scandir(path="."):
        if not isinstance(path, int) and os.fspath(path) in denied:
            raise PermissionError(errno.EACCES, "Permission denied", os.fspath(path))
        return real_scandir(path)

    def deny_(folder):
        denied.append(str(folder))
        if os.geteuid() != 0:
            os.chmod(folder, 0)

    if os.geteuid() == 0:
        os.scandir = scandir
    try:
        yield deny_
    finally:
        os.scandir = real_scandir
        for folder in denied:
            if os.geteuid() != 0:
                os.chmod(folder, 0o755)


def test_unreadable_class_folder_is_an_error_naming_it(tmp_path, deny):
    """Permission denied on a class folder: an error, not a class that quietly
    vanishes from labels.txt. An unreadable sub-folder is reported."""
    write_jpeg(tmp_path / "train" / "cat" / "a.jpg")
    write_jpeg(tmp_path / "train" / "dog" / "a.jpg")
    write_jpeg(tmp_path / "train" / "dog" / "locked" / "b.jpg")
    deny(tmp_path / "train" / "dog" / "locked")
    listing = layouts.list_inputs(str(tmp_path))
    assert listing.label_map.wnids == ("cat", "dog")
    ((split, path, reason),) = listing.problems
    assert path.endswith("dog/locked") and reason == "cannot read folder: Permission denied"
    deny(tmp_path / "train" / "cat")
    with pytest.raises(layouts.LayoutError,
                       match=r"cannot read class folder .*train/cat: Permission denied"):
        layouts.list_inputs(str(tmp_path))


def test_splits_that_are_one_folder_are_refused(tmp_path):
    write_jpeg(tmp_path / "train" / "cat" / "a.jpg")
    os.symlink("train", tmp_path / "val")
    with pytest.raises(layouts.LayoutError, match="same folder"):
        layouts.list_inputs(str(tmp_path))

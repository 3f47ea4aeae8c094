"""Data prep neither leaks nor invents: an image in both splits (hard link,
links to one file, a byte copy) is dropped from train, refused or reported;
duplicates within a split are listed; lookalike class folder names and an
output folder inside the input are refused (data_prep.duplicates,
data_prep.tree). Ctrl-C: test_data_prep_processes.py."""

import csv
import glob
import io
import json
import os
import shutil
import tarfile
import unicodedata

import pytest

from data_prep import build_tfrecords, duplicates, layouts, names
from data_prep.build_tfrecords import BuildError
from launchers import run_launcher
from tree_data import build_quietly, write_jpeg


def _leaky_tree(root):
    """train/{a,b} with 3 images each and val/{a,b}; val holds a hard link to
    train/a/0.jpg, a byte copy of train/b/1.jpg, and a link to a file outside
    the tree that train/a/ext.jpg links to too; train/b holds a byte copy of
    its own 2.jpg and a hard link to it (duplicates within the split)."""
    train, val = root / "train", root / "val"
    for c, colour in (("a", (200, 40, 40)), ("b", (40, 200, 40))):
        for i in range(3):
            write_jpeg(train / c / f"{i}.jpg", colour)
        write_jpeg(val / c / "own.jpg", colour)
    write_jpeg(root.parent / "elsewhere" / "shared.jpg", (40, 40, 200))
    os.link(train / "a" / "0.jpg", val / "a" / "hard.jpg")
    shutil.copyfile(train / "b" / "1.jpg", val / "b" / "copy.jpg")
    os.symlink(root.parent / "elsewhere" / "shared.jpg", train / "a" / "ext.jpg")
    os.symlink(root.parent / "elsewhere" / "shared.jpg", val / "a" / "ext.jpg")
    shutil.copyfile(train / "b" / "2.jpg", train / "b" / "2copy.jpg")
    os.link(train / "b" / "2.jpg", train / "b" / "2hard.jpg")
    return root


def _rel(root, path):
    return os.path.relpath(path, root)


def _manifest(out):
    return json.loads((out / build_tfrecords.MANIFEST_FILENAME).read_text())


def _tsv(out):
    with open(out / build_tfrecords.FILES_FILENAME, newline="") as f:
        return list(csv.DictReader(f, delimiter="\t"))


EXPECTED_LEAKS = [("train/a/0.jpg", "val/a/hard.jpg", "file"),
                  ("train/a/ext.jpg", "val/a/ext.jpg", "file"),
                  ("train/b/1.jpg", "val/b/copy.jpg", "bytes")]


def test_images_in_both_splits_are_dropped_from_train_and_reported(tmp_path):
    root, out = _leaky_tree(tmp_path / "in"), tmp_path / "out"
    summary = build_quietly(root, out)
    # found = written + skipped still holds: the training copies are skipped, with a reason.
    assert summary.per_split["train"] == {"found": 9, "written": 6, "skipped": 3}
    assert summary.per_split["validation"] == {"found": 5, "written": 5, "skipped": 0}
    assert [(_rel(root, x.train), _rel(root, x.validation), x.same)
            for x in summary.leaks] == EXPECTED_LEAKS
    reasons = {_rel(root, p): r for _, p, r in summary.skipped}
    assert set(reasons) == {"train/a/0.jpg", "train/a/ext.jpg", "train/b/1.jpg"}
    assert reasons["train/a/0.jpg"].startswith(
        f"the same file as validation's {root / 'val' / 'a' / 'hard.jpg'}: dropped from train")
    assert "the same bytes as" in reasons["train/b/1.jpg"]

    manifest = _manifest(out)
    assert manifest["on_leak"] == "drop_from_train"
    assert [(_rel(root, x["train"]), _rel(root, x["validation"]), x["same"], x["action"])
            for x in manifest["leaks"]] == [(*leak, "dropped from train")
                                            for leak in EXPECTED_LEAKS]
    assert {_rel(root, s["path"]): s["reason"] for s in manifest["skipped_files"]} == reasons
    rows = {_rel(root, r["path"]): r for r in _tsv(out)}
    assert len(rows) == summary.found == 14
    assert all(rows[p]["status"] == "skipped" and rows[p]["reason"] == reasons[p]
               for p in reasons)
    assert rows["val/a/hard.jpg"]["status"] == rows["val/b/copy.jpg"]["status"] == "converted"


def test_duplicates_within_a_split_are_listed_and_kept(tmp_path):
    root, out = _leaky_tree(tmp_path / "in"), tmp_path / "out"
    summary = build_quietly(root, out)
    group = ["train/b/2.jpg", "train/b/2copy.jpg", "train/b/2hard.jpg"]
    assert {split: [[_rel(root, p) for p in g] for g in groups]
            for split, groups in summary.duplicates.items()} == {"train": [group]}
    assert _manifest(out)["duplicates"]["train"]["groups"] == 1
    assert _manifest(out)["duplicates"]["train"]["files"] == 3
    assert [[_rel(root, p) for p in g] for g in _manifest(out)["duplicates"]["train"]["sets"]] \
        == [group]
    converted = {_rel(root, r["path"]) for r in _tsv(out) if r["status"] == "converted"}
    assert set(group) <= converted  # listed, not dropped


def test_report_keeps_both_copies_and_fail_writes_nothing(tmp_path):
    root = _leaky_tree(tmp_path / "in")
    reported = build_quietly(root, tmp_path / "report", on_leak="report")
    assert reported.ok and reported.written == reported.found == 14
    assert len(reported.leaks) == 3
    assert {x["action"] for x in _manifest(tmp_path / "report")["leaks"]} == {
        "kept in both (--on_leak=report)"}

    out = tmp_path / "fail"
    with pytest.raises(BuildError, match=r"^3 training input\(s\) are also in validation, "
                       rf"e\.g\. {root / 'train' / 'a' / '0.jpg'} is the same file as "
                       rf"{root / 'val' / 'a' / 'hard.jpg'} \(--on_leak=fail"):
        build_quietly(root, out, on_leak="fail")
    assert not out.exists()  # the folder it had made for the build is gone again


def test_a_rerun_reaches_the_same_decision_and_keeps_every_shard(tmp_path):
    root, out = _leaky_tree(tmp_path / "in"), tmp_path / "out"
    first = build_quietly(root, out, train_shards=3)
    first_manifest = _manifest(out)
    again = build_quietly(root, out, train_shards=3)
    assert (again.shards_written, again.shards_kept) == (0, 4)
    assert again.leaks == first.leaks and again.duplicates == first.duplicates
    assert _manifest(out)["leaks"] == first_manifest["leaks"]
    assert _manifest(out)["shards"] == first_manifest["shards"]

    # Another decision changes the training shards' inputs: they are redone, not mixed.
    kept = build_quietly(root, out, train_shards=3, on_leak="report")
    assert kept.written == 14 and kept.shards_written >= 1
    assert {x["action"] for x in _manifest(out)["leaks"]} == {"kept in both (--on_leak=report)"}


def test_the_content_check_reads_only_inputs_of_a_size_found_in_both_splits(tmp_path,
                                                                           monkeypatch):
    root = _leaky_tree(tmp_path / "in")
    write_jpeg(root / "train" / "a" / "big.jpg")
    with open(root / "train" / "a" / "big.jpg", "ab") as f:
        f.write(b"\0" * 5000)  # a size no validation input has
    listing = layouts.list_inputs(str(root))
    read = []
    real_read = layouts.SourceFile.read

    def counting_read(self, *args, **kwargs):
        read.append(_rel(root, self.display))
        return real_read(self, *args, **kwargs)

    monkeypatch.setattr(layouts.SourceFile, "read", counting_read)
    assert len(duplicates.find_leaks(listing, threads=2)) == 3
    assert {"train/b/1.jpg", "val/b/copy.jpg"} <= set(read)
    assert "train/a/big.jpg" not in read  # its size rules it out
    assert "train/a/0.jpg" not in read and "train/a/ext.jpg" not in read  # same inode: no read
    assert len(read) == len(set(read))


def test_an_archive_member_equal_to_a_training_member_is_a_leak(tmp_path):
    """ilsvrc_tar: members share the archive's inode, so only their bytes tell."""
    def jpeg(path):
        write_jpeg(tmp_path / "src" / path)
        return (tmp_path / "src" / path).read_bytes()

    def add(tar, name, data):
        info = tarfile.TarInfo(name)
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))

    root = tmp_path / "in"
    root.mkdir()
    train = {w: [jpeg(f"{w}_{i}.JPEG") for i in range(2)] for w in ("n01", "n02")}
    with tarfile.open(root / layouts.TRAIN_TAR, "w") as outer:
        for wnid, images in train.items():
            inner = io.BytesIO()
            with tarfile.open(fileobj=inner, mode="w") as tar:
                for i, data in enumerate(images):
                    add(tar, f"{wnid}_{i}.JPEG", data)
            add(outer, f"{wnid}.tar", inner.getvalue())
    with tarfile.open(root / layouts.VAL_TAR, "w") as tar:
        add(tar, "ILSVRC2012_val_00000001.JPEG", train["n02"][1])  # the leak
        add(tar, "ILSVRC2012_val_00000002.JPEG", jpeg("v2.JPEG"))
    (root / layouts.VAL_SOLUTION).write_text(
        "ImageId,PredictionString\nILSVRC2012_val_00000001,n02 0 0 1 1\n"
        "ILSVRC2012_val_00000002,n01 0 0 1 1\n")
    summary = build_quietly(root, tmp_path / "out")
    assert summary.layout == "ilsvrc_tar"
    assert [(x.train, x.validation, x.same) for x in summary.leaks] == [
        (f"{root / layouts.TRAIN_TAR}:n02.tar/n02_1.JPEG",
         f"{root / layouts.VAL_TAR}:ILSVRC2012_val_00000001.JPEG", "bytes")]
    assert summary.per_split["train"] == {"found": 4, "written": 3, "skipped": 1}


def test_on_leak_fail_is_one_line_on_the_command_line(tmp_path):
    root = _leaky_tree(tmp_path / "in")
    run = run_launcher("data_prep.build_tfrecords", f"--input_dir={root}",
                       f"--output_dir={tmp_path / 'out'}", "--on_leak=fail", "--image_size=32")
    assert run.returncode == 2
    lines = run.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith(
        "error: 3 training input(s) are also in validation"), run.stderr


# ---------------------------------------------------------------- names

@pytest.mark.parametrize("first, second", [
    ("cls", "cls "), ("cls", " cls"), ("two words", "two  words"), ("cls", "cls\u200b"),
    ("caf\u00e9", "cafe\u0301"), ("cls", "cls\u00a0")],
    ids=["trailing-space", "leading-space", "double-space", "zero-width", "nfc-nfd", "nbsp"])
def test_lookalike_class_folders_are_refused_naming_both(tmp_path, first, second):
    root = tmp_path / "in"
    write_jpeg(os.fsencode(root / "train" / first / "1.jpg"))
    write_jpeg(os.fsencode(root / "train" / second / "2.jpg"), (0, 200, 0))
    with pytest.raises(layouts.LayoutError) as error:
        build_quietly(root, tmp_path / "out")
    message = str(error.value)
    assert message.startswith("class folders ")
    shown = sorted([names.escape(first), names.escape(second)])  # the walk's (sorted) order
    assert (f"{root / 'train' / shown[0]} and {root / 'train' / shown[1]}" in message)
    assert f"({ascii(shown[0])} and {ascii(shown[1])})" in message  # told apart in the text
    assert not glob.glob(str(tmp_path / "out" / "*-of-*"))


def test_lookalike_names_across_the_splits_are_refused(tmp_path):
    root = tmp_path / "in"
    nfc, nfd = "caf\u00e9", unicodedata.normalize("NFD", "caf\u00e9")
    write_jpeg(os.fsencode(root / "train" / nfc / "1.jpg"))
    write_jpeg(os.fsencode(root / "val" / nfd / "2.jpg"))
    with pytest.raises(layouts.LayoutError, match="class folders .* and .*: they would be two "
                       "classes that read as one"):
        layouts.list_inputs(str(root))


def test_distinct_names_are_still_classes(tmp_path):
    """Case, tabs (escaped as \\x09) and the same name in both splits are fine."""
    root = tmp_path / "in"
    for i, c in enumerate(("Dog", "dog", "cls\ttab", "cls tab")):
        write_jpeg(os.fsencode(root / "train" / c / "1.jpg"), (60 * i, 0, 0))
        write_jpeg(os.fsencode(root / "val" / c / "2.jpg"), (60 * i, 0, 0))
    listing = layouts.list_inputs(str(root))
    assert listing.label_map.wnids == ("Dog", "cls tab", "cls\\x09tab", "dog")


# ---------------------------------------------------------------- output folder

def _small_tree(root):
    for c in ("a", "b"):
        write_jpeg(root / "train" / c / "1.jpg")
        write_jpeg(root / "val" / c / "2.jpg")
    return root


@pytest.mark.parametrize("where", ["in-train", "is-val", "in-class", "link-to-train"])
def test_an_output_folder_inside_a_split_folder_is_refused_before_it_is_made(tmp_path,
                                                                               where):
    """It used to become a class "records" (its shards read as images), exit 0."""
    root = _small_tree(tmp_path / "in")
    out = {"in-train": root / "train" / "records", "is-val": root / "val",
           "in-class": root / "train" / "a" / "records", "link-to-train": tmp_path / "link"
           / "records"}[where]
    if where == "link-to-train":
        os.symlink(root / "train", tmp_path / "link")
    with pytest.raises(layouts.LayoutError, match=rf"^the output folder {out} (is|lies inside) "
                       r".*, which is read as input"):
        build_quietly(root, out)
    assert where == "is-val" or not out.exists()  # refused before anything was created


def test_an_output_folder_reached_through_a_link_is_refused(tmp_path):
    """A class folder linked to a folder that holds the output: found by the walk."""
    root = _small_tree(tmp_path / "in")
    outside = tmp_path / "disk"
    write_jpeg(outside / "c1.jpg")
    os.symlink(outside, root / "train" / "c")
    out = outside / "records"
    with pytest.raises(layouts.LayoutError,
                       match=rf"^the output folder {out} lies inside {root / 'train' / 'c'}, "):
        build_quietly(root, out)
    assert not out.exists()  # created for the build, then removed with its lock file
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    with pytest.raises(layouts.LayoutError, match="^the output folder "):
        build_quietly(root, out)
    assert sorted(os.listdir(out)) == [".build.lock", "notes.txt"]  # not created by the build


def test_an_output_folder_beside_the_splits_is_fine(tmp_path):
    """Not read, so not refused: in/records next to in/train and in/val."""
    root = _small_tree(tmp_path / "in")
    summary = build_quietly(root, root / "records")
    assert summary.ok and summary.written == 4
    again = build_quietly(root, root / "records")
    assert again.found == 4 and again.shards_kept == 2

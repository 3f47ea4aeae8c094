"""data_prep.layouts: imagefolder, kaggle and ilsvrc_tar inputs, and labels."""

import builtins
import gzip
import io
import json
import os
import tarfile

import numpy as np
import pytest
import scipy.io

from data_prep import ilsvrc, layouts
from tree_data import build_quietly, write_jpeg

# Devkit ids deliberately not in sorted-wnid order: id 1 is the last wnid.
DEVKIT_IDS = {1: "n03000003", 2: "n01000001", 3: "n02000002"}
NAMES = {"n01000001": "first thing", "n02000002": "crane", "n03000003": "crane"}


def _bytes(tag: int) -> bytes:
    """Distinct small payloads (the layouts do not decode images)."""
    return b"\xff\xd8\xff" + bytes([tag]) * (50 + tag)


def _write(path, data=b"x"):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(data)


def _tar_bytes(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def _meta_mat() -> bytes:
    """A devkit-style meta.mat: a struct array `synsets`."""
    dtype = [("ILSVRC2012_ID", "O"), ("WNID", "O"), ("words", "O")]
    synsets = np.array([(i, w, NAMES[w]) for i, w in DEVKIT_IDS.items()], dtype=dtype)
    buffer = io.BytesIO()
    scipy.io.savemat(buffer, {"synsets": synsets})
    return buffer.getvalue()


# ---------------------------------------------------------------- imagefolder

def test_imagefolder_with_wnids_and_names(tmp_path):
    for wnid in ("n02000002", "n01000001"):
        for i in range(3):
            _write(tmp_path / "train" / wnid / f"{wnid}_{i}.JPEG", _bytes(i))
        _write(tmp_path / "val" / wnid / "v.JPEG")
    with open(tmp_path / layouts.SYNSET_MAPPING, "w") as f:
        f.write("n01000001 first thing, a thing\nn02000002 crane\n")
    listing = layouts.list_inputs(str(tmp_path))
    assert listing.layout == "imagefolder"
    assert listing.label_map.wnids == ("n01000001", "n02000002")
    assert listing.label_map.names == ("first thing, a thing", "crane")
    train = listing.splits["train"]
    assert [f.wnid for f in train] == ["n01000001"] * 3 + ["n02000002"] * 3
    assert train[0].read() == _bytes(0)
    assert train[0].filename == "n01000001_0.JPEG"
    assert len(listing.splits["validation"]) == 2
    assert listing.found == 8 and not listing.problems


def test_imagefolder_cifar_style_test_folder_and_plain_class_names(tmp_path):
    for split in ("train", "test"):
        for name in ("truck", "airplane"):
            _write(tmp_path / split / name / "0001.jpg")
    listing = layouts.list_inputs(str(tmp_path), "imagefolder")
    assert listing.label_map.wnids == ("airplane", "truck")
    assert listing.label_map.names == ("airplane", "truck")
    assert set(listing.splits) == {"train", "validation"}


def test_imagefolder_reports_files_it_cannot_label(tmp_path):
    _write(tmp_path / "train" / "cat" / "a.jpg")
    _write(tmp_path / "train" / "stray.jpg")  # not in a class folder
    _write(tmp_path / "val" / "cat" / "b.jpg")
    _write(tmp_path / "val" / "dog" / "c.jpg")  # class with no training images
    listing = layouts.list_inputs(str(tmp_path))
    reasons = {os.path.basename(p): r for _, p, r in listing.problems}
    assert reasons["stray.jpg"] == "not inside a class folder"
    assert "no train images" in reasons["c.jpg"]
    assert listing.found == 4
    assert [f.filename for f in listing.splits["validation"]] == ["b.jpg"]


def test_imagefolder_validation_only(tmp_path):
    _write(tmp_path / "validation" / "cat" / "a.jpg")
    listing = layouts.list_inputs(str(tmp_path))
    assert list(listing.splits) == ["validation"]
    assert listing.label_map.wnids == ("cat",)


def test_imagefolder_refuses_two_validation_folders(tmp_path):
    _write(tmp_path / "val" / "cat" / "a.jpg")
    _write(tmp_path / "test" / "cat" / "a.jpg")
    with pytest.raises(layouts.LayoutError, match="several validation folders"):
        layouts.list_inputs(str(tmp_path))


def test_detect_layout(tmp_path):
    with pytest.raises(layouts.LayoutError, match="not a directory"):
        layouts.detect_layout(str(tmp_path / "missing"))
    with pytest.raises(layouts.LayoutError, match="cannot tell the layout"):
        layouts.detect_layout(str(tmp_path))
    (tmp_path / "train").mkdir()
    assert layouts.detect_layout(str(tmp_path)) == "imagefolder"
    (tmp_path / "ILSVRC" / "Data" / "CLS-LOC").mkdir(parents=True)
    assert layouts.detect_layout(str(tmp_path)) == "kaggle"
    _write(tmp_path / layouts.VAL_TAR, _tar_bytes({}))
    assert layouts.detect_layout(str(tmp_path)) == "ilsvrc_tar"
    with pytest.raises(layouts.LayoutError, match="unknown --layout"):
        layouts.list_inputs(str(tmp_path), "zip")


# ---------------------------------------------------------------- kaggle

def test_kaggle_layout(tmp_path):
    root = tmp_path / "ILSVRC" / "Data" / "CLS-LOC"
    for wnid in ("n02000002", "n01000001"):
        _write(root / "train" / wnid / f"{wnid}_1.JPEG")
    for i in (3, 1, 2, 4):
        _write(root / "val" / f"ILSVRC2012_val_{i:08d}.JPEG")
    with open(tmp_path / layouts.VAL_SOLUTION, "w") as f:
        f.write("ImageId,PredictionString\n"
                "ILSVRC2012_val_00000001,n02000002 1 2 3 4 n02000002 5 6 7 8\n"
                "ILSVRC2012_val_00000002,n01000001 1 2 3 4\n"
                "ILSVRC2012_val_00000003,n02000002 1 2 3 4\n")
    with open(tmp_path / layouts.SYNSET_MAPPING, "w") as f:
        f.write("n01000001 first thing\nn02000002 crane\n")
    listing = layouts.list_inputs(str(tmp_path))
    assert listing.layout == "kaggle"
    val = listing.splits["validation"]
    assert [f.filename for f in val] == [f"ILSVRC2012_val_{i:08d}.JPEG" for i in (1, 2, 3)]
    assert [f.wnid for f in val] == ["n02000002", "n01000001", "n02000002"]
    assert listing.label_map.names == ("first thing", "crane")
    (problem,) = listing.problems
    assert problem[0] == "validation" and "ILSVRC2012_val_00000004" in problem[2]


def test_validation_without_labels_is_an_error(tmp_path):
    _write(tmp_path / "ILSVRC" / "Data" / "CLS-LOC" / "val" / "ILSVRC2012_val_00000001.JPEG")
    with pytest.raises(layouts.LayoutError, match="validation images need labels"):
        layouts.list_inputs(str(tmp_path))


def _kaggle_tree(tmp_path):
    """Two training classes of real JPEGs, val/ with one image of its own."""
    root = tmp_path / "ILSVRC" / "Data" / "CLS-LOC"
    for n, wnid in enumerate(("n01000001", "n02000002")):
        for i in range(2):
            write_jpeg(str(root / "train" / wnid / f"{wnid}_{i}.JPEG"), (100 * n, 50, 50 * i))
    write_jpeg(str(root / "val" / "ILSVRC2012_val_00000001.JPEG"))
    (tmp_path / layouts.VAL_SOLUTION).write_text(
        "ImageId,PredictionString\n" + "".join(
            f"ILSVRC2012_val_{i:08d},n0{1 + i % 2}00000{1 + i % 2} 1 2 3 4\n"
            for i in range(1, 6)))
    (tmp_path / layouts.SYNSET_MAPPING).write_text("n01000001 first thing\nn02000002 crane\n")
    return root


def test_kaggle_val_links_into_train_are_refused(tmp_path):
    """A file link in the flat val/ pointing into train/ was written into
    validation ("validation: found 2, written 2, skipped 0"). Now it is
    skipped with its reason, however the link is spelt."""
    root = _kaggle_tree(tmp_path)
    val, train = root / "val", root / "train"
    os.symlink(train / "n01000001" / "n01000001_0.JPEG", val / "ILSVRC2012_val_00000002.JPEG")
    os.symlink("../train/n02000002/n02000002_1.JPEG", val / "ILSVRC2012_val_00000003.JPEG")
    os.symlink(tmp_path / "hop", val / "ILSVRC2012_val_00000004.JPEG")  # a chain of links
    os.symlink(train / "n01000001" / "n01000001_1.JPEG", tmp_path / "hop")
    write_jpeg(str(tmp_path / "elsewhere" / "x.JPEG"))  # a link out of both splits is fine
    os.symlink(tmp_path / "elsewhere" / "x.JPEG", val / "ILSVRC2012_val_00000005.JPEG")

    listing = layouts.list_inputs(str(tmp_path))
    assert [f.filename for f in listing.splits["validation"]] == [
        "ILSVRC2012_val_00000001.JPEG", "ILSVRC2012_val_00000005.JPEG"]
    assert sorted((p[0], os.path.basename(p[1]), p[2]) for p in listing.problems) == [
        ("validation", f"ILSVRC2012_val_0000000{i}.JPEG",
         "link into the train folder: not used for validation") for i in (2, 3, 4)]

    summary = build_quietly(tmp_path, tmp_path / "out")
    assert summary.per_split["validation"] == {"found": 5, "written": 2, "skipped": 3}
    assert summary.per_split["train"] == {"found": 4, "written": 4, "skipped": 0}
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    reasons = [s["reason"] for s in manifest["skipped_files"]]
    assert sum(r.startswith("link into the train") for r in reasons) == 3


def test_kaggle_val_folder_inside_train_is_refused(tmp_path):
    """val/ itself a link to a class folder of train/: its plain files lie in
    the train folder, so none is used for validation (and train does not
    read the class folder that is the validation folder)."""
    root = _kaggle_tree(tmp_path)
    (root / "val" / "ILSVRC2012_val_00000001.JPEG").rename(
        root / "train" / "n01000001" / "ILSVRC2012_val_00000001.JPEG")
    (root / "val").rmdir()
    os.symlink(root / "train" / "n01000001", root / "val")
    listing = layouts.list_inputs(str(tmp_path))
    assert listing.splits["validation"] == []
    assert [(p[0], os.path.basename(p[1]), p[2].split(" '")[0]) for p in listing.problems] == [
        ("train", "n01000001", "folder in the validation folder: not read for train"),
        ("validation", "ILSVRC2012_val_00000001.JPEG",
         "lies in the train folder: not used for validation"),
        ("validation", "n01000001_0.JPEG", "no label for"),
        ("validation", "n01000001_1.JPEG", "no label for")]


def test_ilsvrc_tar_archives_must_be_two_files(tmp_path):
    _write(tmp_path / layouts.TRAIN_TAR, _tar_bytes({}))
    os.symlink(tmp_path / layouts.TRAIN_TAR, tmp_path / layouts.VAL_TAR)
    with pytest.raises(layouts.LayoutError, match="are the same file"):
        layouts.list_inputs(str(tmp_path))


def test_bad_solution_row_names_the_line(tmp_path):
    path = tmp_path / "LOC_val_solution.csv"
    path.write_text("ImageId,PredictionString\nILSVRC2012_val_00000001,\n")
    with pytest.raises(layouts.LayoutError, match=r"LOC_val_solution.csv:2"):
        ilsvrc.read_val_solution(str(path))


# ---------------------------------------------------------------- ilsvrc_tar

def _ilsvrc_tree(tmp_path, devkit="folder"):
    """Nested training tar, flat validation tar (out of order) and a devkit."""
    inner = {}
    payloads = {}
    tag = 0
    for wnid in ("n02000002", "n03000003", "n01000001"):
        members = {}
        for i in range(2):
            tag += 1
            members[f"{wnid}_{i}.JPEG"] = payloads[(wnid, i)] = _bytes(tag)
        inner[f"{wnid}.tar"] = _tar_bytes(members)
    _write(tmp_path / layouts.TRAIN_TAR, _tar_bytes(inner))
    # Validation images 1..4; ground-truth ids in devkit (meta.mat) order.
    truth_ids = [1, 2, 3, 1]
    val = {f"ILSVRC2012_val_{i:08d}.JPEG": _bytes(100 + i) for i in (4, 2, 1, 3)}
    _write(tmp_path / layouts.VAL_TAR, _tar_bytes(val))
    truth = "".join(f"{i}\n" for i in truth_ids).encode()
    if devkit == "folder":
        data = tmp_path / "ILSVRC2012_devkit_t12" / "data"
        _write(data / layouts.DEVKIT_META, _meta_mat())
        _write(data / layouts.DEVKIT_GROUND_TRUTH, truth)
    else:
        buffer = io.BytesIO()
        with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
            for name, blob in ((f"ILSVRC2012_devkit_t12/data/{layouts.DEVKIT_META}", _meta_mat()),
                               (f"ILSVRC2012_devkit_t12/data/{layouts.DEVKIT_GROUND_TRUTH}", truth)):
                info = tarfile.TarInfo(name)
                info.size = len(blob)
                tar.addfile(info, io.BytesIO(blob))
        _write(tmp_path / layouts.DEVKIT_TAR, buffer.getvalue())
    return payloads, truth_ids, val


@pytest.mark.parametrize("devkit", ["folder", "tar.gz"])
def test_ilsvrc_tar_reads_nested_tars_and_devkit_order(tmp_path, devkit):
    payloads, truth_ids, val = _ilsvrc_tree(tmp_path, devkit)
    listing = layouts.list_inputs(str(tmp_path))
    assert listing.layout == "ilsvrc_tar"
    # Sorted-wnid labels, whatever order the devkit ids follow.
    assert listing.label_map.wnids == ("n01000001", "n02000002", "n03000003")
    assert listing.label_map.names == ("first thing", "crane", "crane")
    train = listing.splits["train"]
    assert len(train) == 6
    for f in train:
        i = int(f.member.rsplit("_", 1)[1].split(".")[0])
        assert f.member.startswith(f"{f.wnid}.tar/")
        assert f.read() == payloads[(f.wnid, i)]  # bytes straight from the archive
    validation = listing.splits["validation"]
    assert [f.filename for f in validation] == [f"ILSVRC2012_val_{i:08d}.JPEG" for i in (1, 2, 3, 4)]
    assert [f.wnid for f in validation] == [DEVKIT_IDS[i] for i in truth_ids]
    assert [f.read() for f in validation] == [val[f.filename] for f in validation]


def test_ilsvrc_tar_reports_links_in_the_archive(tmp_path):
    """Every member but folders is counted: a link member is reported, not dropped."""
    _ilsvrc_tree(tmp_path)
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        folder = tarfile.TarInfo("val")
        folder.type = tarfile.DIRTYPE
        tar.addfile(folder)
        for i in (1, 2):
            data = _bytes(100 + i)
            info = tarfile.TarInfo(f"val/ILSVRC2012_val_{i:08d}.JPEG")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        link = tarfile.TarInfo("val/ILSVRC2012_val_00000003.JPEG")
        link.type, link.linkname = tarfile.SYMTYPE, "ILSVRC2012_val_00000001.JPEG"
        tar.addfile(link)
    _write(tmp_path / layouts.VAL_TAR, buffer.getvalue())
    listing = layouts.list_inputs(str(tmp_path))
    assert len(listing.splits["validation"]) == 2
    ((split, path, reason),) = listing.problems
    assert split == "validation" and path.endswith("ILSVRC2012_val_00000003.JPEG")
    assert reason == "a link in the archive, not an image"
    assert listing.found_in("validation") == 3


def test_ilsvrc_tar_prefers_the_solution_csv(tmp_path):
    _ilsvrc_tree(tmp_path)
    with open(tmp_path / layouts.VAL_SOLUTION, "w") as f:
        f.write("ImageId,PredictionString\n" + "".join(
            f"ILSVRC2012_val_{i:08d},n01000001 0 0 1 1\n" for i in (1, 2, 3, 4)))
    listing = layouts.list_inputs(str(tmp_path))
    assert {f.wnid for f in listing.splits["validation"]} == {"n01000001"}


def test_devkit_without_scipy_says_what_to_install(tmp_path, monkeypatch):
    real_import = builtins.__import__

    def no_scipy(name, *args, **kwargs):
        if name.startswith("scipy"):
            raise ImportError("No module named 'scipy'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_scipy)
    with pytest.raises(layouts.LayoutError, match=r"alexnet_tf\[devkit\]"):
        ilsvrc.read_meta_mat(_meta_mat())


def test_compressed_archive_is_refused_clearly(tmp_path):
    _write(tmp_path / layouts.TRAIN_TAR, gzip.compress(_tar_bytes({"a.tar": b""})))
    with pytest.raises(layouts.LayoutError, match="not an uncompressed tar"):
        layouts.list_inputs(str(tmp_path))


def test_truncated_archive_member_fails_to_read(tmp_path):
    _ilsvrc_tree(tmp_path)
    listing = layouts.list_inputs(str(tmp_path))
    last = max(listing.splits["train"], key=lambda f: f.offset)
    with open(last.path, "r+b") as f:
        f.truncate(last.offset + 3)
    with pytest.raises(OSError, match="truncated"):
        last.read()


def test_oversized_file_is_refused_unread(tmp_path):
    _write(tmp_path / "big.jpg", b"\xff\xd8\xff" + b"\0" * 1000)
    source = layouts.SourceFile(str(tmp_path / "big.jpg"), "cat")
    assert len(source.read()) == 1003
    with pytest.raises(OSError, match="file too large"):
        source.read(max_bytes=1000)

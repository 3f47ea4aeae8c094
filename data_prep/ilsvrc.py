"""The ILSVRC-2012 files: the archives read in place, validation labels, class names.

- The training tar holds one `<wnid>.tar` per class, the validation tar
  50,000 flat files. Only the tar headers are read here, to record where each
  image's bytes sit (archive path, byte offset, size); workers read those
  bytes directly.
- Validation labels come from `LOC_val_solution.csv` or from the devkit,
  whose ground-truth ids follow `meta.mat` order, not sorted-wnid order.
- Class names come from `LOC_synset_mapping.txt` or the devkit.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import os
import tarfile
from typing import Iterator

from data_prep.names import escape
from data_prep.sources import TRAIN, VALIDATION, LayoutError, SourceFile, stamped

TRAIN_TAR = "ILSVRC2012_img_train.tar"
VAL_TAR = "ILSVRC2012_img_val.tar"
SYNSET_MAPPING = "LOC_synset_mapping.txt"
VAL_SOLUTION = "LOC_val_solution.csv"
DEVKIT_TAR = "ILSVRC2012_devkit_t12.tar.gz"
DEVKIT_META = "meta.mat"
DEVKIT_GROUND_TRUTH = "ILSVRC2012_validation_ground_truth.txt"


def list_archives(input_dir: str,
                  problems: list[tuple[str, str, str]]) -> dict[str, list[SourceFile]]:
    """The images of the training and validation archives present in `input_dir`."""
    splits = {}
    train_tar = os.path.join(input_dir, TRAIN_TAR)
    if os.path.isfile(train_tar):
        archive = os.stat(train_tar)
        files = []
        for inner in _tar_members(train_tar, train_tar, 0):
            wnid, ext = os.path.splitext(inner.name.split("/")[-1])
            if ext != ".tar" or inner.kind:
                problems.append((TRAIN, escape(f"{train_tar}:{inner.name}"),
                                 f"a {inner.kind} in the archive, not a per-class .tar"
                                 if inner.kind else "not a per-class .tar"))
                continue
            for member in _tar_members(train_tar, inner.name, inner.offset):
                if member.kind:
                    problems.append((TRAIN, escape(f"{train_tar}:{inner.name}/{member.name}"),
                                     f"a {member.kind} in the archive, not an image"))
                    continue
                files.append(stamped(train_tar, escape(wnid), archive,
                                     member=f"{inner.name}/{member.name}",
                                     offset=member.offset, size=member.size))
        splits[TRAIN] = files
    val_tar = os.path.join(input_dir, VAL_TAR)
    if os.path.isfile(val_tar):
        labels = validation_labels(input_dir)
        archive = os.stat(val_tar)
        files = []
        for member in _tar_members(val_tar, val_tar, 0):
            name = member.name.split("/")[-1]
            wnid = labels.lookup(name) if not member.kind else None
            if member.kind:
                problems.append((VALIDATION, escape(f"{val_tar}:{member.name}"),
                                 f"a {member.kind} in the archive, not an image"))
            elif wnid is None:
                problems.append((VALIDATION, escape(f"{val_tar}:{member.name}"),
                                 labels.missing_reason(name)))
            else:
                files.append(stamped(val_tar, wnid, archive, member=member.name,
                                     offset=member.offset, size=member.size))
        files.sort(key=lambda f: f.member)  # in order, whatever the archive's order
        splits[VALIDATION] = files
    return splits


@dataclasses.dataclass(frozen=True)
class _Member:
    name: str
    offset: int  # absolute offset of the member's data in the outer file
    size: int
    kind: str = ""  # "" for a regular file, else what it is (reported, not read)


def _tar_members(path: str, what: str, base: int) -> Iterator[_Member]:
    """The members of the uncompressed tar starting at byte `base` of `path`
    but its folders, read header by header (no member list kept in memory)."""
    with open(path, "rb") as f:
        f.seek(base)
        try:
            tar = tarfile.open(fileobj=_Window(f, base), mode="r:")
        except tarfile.ReadError as e:
            raise LayoutError(f"{what}: not an uncompressed tar ({e}); the ILSVRC "
                              "archives are plain tars, read in place") from None
        while True:
            try:
                info = tar.next()
            except tarfile.ReadError as e:
                raise LayoutError(f"{what}: damaged tar header ({e})") from None
            if info is None:
                break
            tar.members.clear()  # tarfile caches every header; we stream
            if info.isfile():
                yield _Member(info.name, base + info.offset_data, info.size)
            elif not info.isdir():
                kind = "link" if info.issym() or info.islnk() else "special file"
                yield _Member(info.name, -1, 0, kind)


class _Window(io.RawIOBase):
    """`f` seen from byte `base` on, so tarfile can read a tar inside a tar."""

    def __init__(self, f, base: int):
        super().__init__()
        self._f, self._base = f, base
        f.seek(base)

    def readable(self):
        return True

    def seekable(self):
        return True

    def readinto(self, buffer):
        data = self._f.read(len(buffer))
        buffer[:len(data)] = data
        return len(data)

    def seek(self, offset, whence=io.SEEK_SET):
        if whence == io.SEEK_SET:
            return self._f.seek(self._base + offset) - self._base
        return self._f.seek(offset, whence) - self._base

    def tell(self):
        return self._f.tell() - self._base



# ---------------------------------------------------------------- validation labels

@dataclasses.dataclass
class _ValidationLabels:
    by_image: dict[str, str]  # image id (file stem) -> wnid
    source: str

    def lookup(self, filename: str) -> str | None:
        return self.by_image.get(os.path.splitext(filename)[0])

    def missing_reason(self, filename: str) -> str:
        return f"no label for '{escape(os.path.splitext(filename)[0])}' in {escape(self.source)}"


def validation_labels(input_dir: str) -> _ValidationLabels:
    """From LOC_val_solution.csv if present, else the devkit."""
    solution = find_file(input_dir, VAL_SOLUTION)
    if solution:
        return _ValidationLabels(read_val_solution(solution), solution)
    devkit = find_devkit(input_dir)
    if devkit:
        ids_to_wnid, _ = read_meta_mat(devkit.meta)
        by_image = {}
        for n, ilsvrc_id in enumerate(devkit.ground_truth, 1):
            if ilsvrc_id not in ids_to_wnid:
                raise LayoutError(f"{devkit.source}: line {n}: ILSVRC2012_ID {ilsvrc_id} "
                                  "is not in meta.mat")
            by_image[f"ILSVRC2012_val_{n:08d}"] = ids_to_wnid[ilsvrc_id]
        return _ValidationLabels(by_image, devkit.source)
    raise LayoutError(
        f"validation images need labels: put {VAL_SOLUTION}, or the devkit "
        f"({DEVKIT_TAR}, or its data/{DEVKIT_META} and data/{DEVKIT_GROUND_TRUTH}), "
        f"in '{escape(input_dir)}'")


def read_val_solution(path: str) -> dict[str, str]:
    """`ImageId,PredictionString` rows -> {image id: wnid of the first box}."""
    labels = {}
    with open(path, newline="", encoding="utf-8") as f:
        for n, row in enumerate(csv.reader(f), 1):
            if n == 1 and row and row[0] == "ImageId":
                continue
            if len(row) < 2 or not row[1].split():
                raise LayoutError(f"{path}:{n}: expected 'ImageId,wnid ...', got {row!r}")
            labels[row[0]] = row[1].split()[0]
    return labels


def read_synset_mapping(path: str) -> dict[str, str]:
    """`n01440764 tench, Tinca tinca` lines -> {wnid: name}."""
    names = {}
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            line = line.strip()
            if not line:
                continue
            wnid, _, name = line.partition(" ")
            if not name:
                raise LayoutError(f"{path}:{n}: expected 'wnid name', got {line!r}")
            names[wnid] = name.strip()
    return names


@dataclasses.dataclass
class Devkit:
    meta: bytes  # meta.mat contents
    ground_truth: list[int]  # ILSVRC2012_ID per validation image, in image order
    source: str


def find_devkit(input_dir: str) -> Devkit | None:
    """The devkit as its tar.gz or unpacked (meta.mat + ground truth), if present."""
    tar_path = os.path.join(input_dir, DEVKIT_TAR)
    if os.path.isfile(tar_path):
        meta = truth = None
        with tarfile.open(tar_path, "r:*") as tar:
            for info in tar:
                base = os.path.basename(info.name)
                if base == DEVKIT_META:
                    meta = tar.extractfile(info).read()
                elif base == DEVKIT_GROUND_TRUTH:
                    truth = tar.extractfile(info).read().decode()
        if meta is None or truth is None:
            raise LayoutError(f"{tar_path}: lacks {DEVKIT_META} or {DEVKIT_GROUND_TRUTH}")
        return Devkit(meta, _parse_ground_truth(truth, tar_path), tar_path)
    meta_path = find_file(input_dir, DEVKIT_META)
    truth_path = find_file(input_dir, DEVKIT_GROUND_TRUTH)
    if meta_path and truth_path:
        with open(meta_path, "rb") as f:
            meta = f.read()
        with open(truth_path, encoding="utf-8") as f:
            return Devkit(meta, _parse_ground_truth(f.read(), truth_path), truth_path)
    return None


def _parse_ground_truth(text: str, source: str) -> list[int]:
    ids = []
    for n, line in enumerate(text.splitlines(), 1):
        if line.strip():
            if not line.strip().isdigit():
                raise LayoutError(f"{source}:{n}: expected an ILSVRC2012_ID, got {line!r}")
            ids.append(int(line))
    return ids


def read_meta_mat(data: bytes) -> tuple[dict[int, str], dict[str, str]]:
    """The devkit's meta.mat -> ({ILSVRC2012_ID: wnid}, {wnid: words})."""
    try:
        import scipy.io
    except ImportError:
        raise LayoutError(
            "reading the devkit's meta.mat needs scipy: pip install 'alexnet_tf[devkit]' "
            f"(or provide {VAL_SOLUTION} instead)") from None
    synsets = scipy.io.loadmat(io.BytesIO(data), squeeze_me=True)["synsets"]
    ids = {int(s["ILSVRC2012_ID"]): str(s["WNID"]) for s in synsets}
    words = {str(s["WNID"]): str(s["words"]) for s in synsets}
    return ids, words


def class_names(input_dir: str) -> dict[str, str]:
    """{wnid: name} from LOC_synset_mapping.txt or the devkit, when present."""
    mapping = find_file(input_dir, SYNSET_MAPPING)
    if mapping:
        return read_synset_mapping(mapping)
    devkit = find_devkit(input_dir)
    if devkit:
        return read_meta_mat(devkit.meta)[1]
    return {}


def find_file(input_dir: str, name: str, max_depth: int = 3) -> str | None:
    """`name` in `input_dir` or a few folders below it (not inside image trees)."""
    for root, dirs, files in os.walk(input_dir):
        depth = os.path.relpath(root, input_dir).count(os.sep) + (root != input_dir)
        if name in files:
            return os.path.join(root, name)
        dirs[:] = sorted(d for d in dirs if depth < max_depth and d not in
                         ("train", "val", "test", "validation", "Data"))
    return None

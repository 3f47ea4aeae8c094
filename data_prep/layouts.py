"""Finding the input images and their classes, for each supported layout.

- `imagefolder`: `<input_dir>/train/<class>/*` and `<input_dir>/{val,validation,test}/<class>/*`
  (either split may be absent). Class folders are usually wnids; any other
  name (CIFAR-10's `airplane`, ...) serves as both key and name.
- `ilsvrc_tar`: the raw ILSVRC-2012 archives, never extracted: the training
  tar holds one `<wnid>.tar` per class, the validation tar 50,000 flat files.
  Only the tar headers are read here, to record where each image's bytes sit
  (archive path, byte offset, size); workers read those bytes directly.
  Validation labels come from `LOC_val_solution.csv` or from the devkit,
  whose ground-truth ids follow `meta.mat` order, not sorted-wnid order.
- `kaggle`: `ILSVRC/Data/CLS-LOC/{train,val}` + `LOC_val_solution.csv` +
  `LOC_synset_mapping.txt`.

Labels are 0-based in sorted-wnid order over the training classes (or, with
no training split, the validation classes). Files that cannot be labelled are
not dropped: they are returned as problems, and the tool lists them as skipped.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import os
import tarfile
from typing import Iterator

from alexnet_tf.data.labels import LabelMap

LAYOUTS = ("imagefolder", "ilsvrc_tar", "kaggle")
TRAIN, VALIDATION = "train", "validation"
VALIDATION_FOLDERS = ("val", "validation", "test")
TRAIN_TAR = "ILSVRC2012_img_train.tar"
VAL_TAR = "ILSVRC2012_img_val.tar"
KAGGLE_ROOT = os.path.join("ILSVRC", "Data", "CLS-LOC")
SYNSET_MAPPING = "LOC_synset_mapping.txt"
VAL_SOLUTION = "LOC_val_solution.csv"
DEVKIT_TAR = "ILSVRC2012_devkit_t12.tar.gz"
DEVKIT_META = "meta.mat"
DEVKIT_GROUND_TRUTH = "ILSVRC2012_validation_ground_truth.txt"
# No real photo comes near this; a bigger input file is refused unread.
MAX_FILE_BYTES = 256 << 20


class LayoutError(ValueError):
    """The input directory does not hold what the layout needs."""


@dataclasses.dataclass(frozen=True, slots=True)
class SourceFile:
    """Where one input image's bytes are, and its class.

    `offset` < 0: the whole file at `path`; otherwise `size` bytes at
    `offset` inside the archive at `path` (`member` names them for humans).
    """

    path: str
    wnid: str
    member: str = ""
    offset: int = -1
    size: int = -1

    @property
    def display(self) -> str:
        return f"{self.path}:{self.member}" if self.member else self.path

    @property
    def filename(self) -> str:
        return os.path.basename(self.member or self.path)

    def read(self, max_bytes: int = MAX_FILE_BYTES) -> bytes:
        """The file's bytes; OSError if unreadable, truncated or over `max_bytes`
        (a bound on what one worker holds in memory at a time)."""
        with open(self.path, "rb") as f:
            size = os.fstat(f.fileno()).st_size if self.offset < 0 else self.size
            if size > max_bytes:
                raise OSError(f"file too large ({size} bytes > {max_bytes})")
            if self.offset < 0:
                return f.read()
            f.seek(self.offset)
            data = f.read(self.size)
        if len(data) != self.size:
            raise OSError(f"archive truncated: {len(data)} of {self.size} bytes")
        return data


@dataclasses.dataclass
class Listing:
    """Everything found in the input directory."""

    layout: str
    label_map: LabelMap
    splits: dict[str, list[SourceFile]]
    # (split, path, reason) for files found but not usable as input.
    problems: list[tuple[str, str, str]] = dataclasses.field(default_factory=list)

    @property
    def found(self) -> int:
        return sum(len(files) for files in self.splits.values()) + len(self.problems)


def detect_layout(input_dir: str) -> str:
    """The layout of `input_dir`, judged from the names of its entries."""
    if not os.path.isdir(input_dir):
        raise LayoutError(f"--input_dir {input_dir!r} is not a directory")
    if any(os.path.isfile(os.path.join(input_dir, n)) for n in (TRAIN_TAR, VAL_TAR)):
        return "ilsvrc_tar"
    if os.path.isdir(os.path.join(input_dir, KAGGLE_ROOT)):
        return "kaggle"
    if any(os.path.isdir(os.path.join(input_dir, n)) for n in (TRAIN,) + VALIDATION_FOLDERS):
        return "imagefolder"
    raise LayoutError(
        f"cannot tell the layout of {input_dir!r}: expected {TRAIN_TAR} / {VAL_TAR} "
        f"(ilsvrc_tar), {KAGGLE_ROOT}/ (kaggle) or train/ and val/ class folders "
        "(imagefolder); pass --layout to say which")


def list_inputs(input_dir: str, layout: str = "auto") -> Listing:
    """Lists the images of `input_dir` in `layout` ("auto" detects it)."""
    if layout == "auto":
        layout = detect_layout(input_dir)
    if layout == "imagefolder":
        return _imagefolder(input_dir)
    if layout == "ilsvrc_tar":
        return _ilsvrc_tar(input_dir)
    if layout == "kaggle":
        return _kaggle(input_dir)
    raise LayoutError(f"unknown --layout {layout!r}: choose auto or one of {', '.join(LAYOUTS)}")


# ---------------------------------------------------------------- imagefolder

def _imagefolder(input_dir: str) -> Listing:
    problems: list[tuple[str, str, str]] = []
    train_dir = os.path.join(input_dir, TRAIN)
    val_dirs = [os.path.join(input_dir, n) for n in VALIDATION_FOLDERS
                if os.path.isdir(os.path.join(input_dir, n))]
    if len(val_dirs) > 1:
        raise LayoutError(f"{input_dir!r} holds several validation folders "
                          f"({', '.join(map(os.path.basename, val_dirs))}): keep one")
    splits = {}
    if os.path.isdir(train_dir):
        splits[TRAIN] = _class_folders(train_dir, TRAIN, problems)
    if val_dirs:
        splits[VALIDATION] = _class_folders(val_dirs[0], VALIDATION, problems)
    if not splits:
        raise LayoutError(f"{input_dir!r} has neither train/ nor a validation folder")
    return _labelled(input_dir, "imagefolder", splits, problems)


def _class_folders(split_dir: str, split: str, problems) -> list[SourceFile]:
    files = []
    for entry in sorted(os.scandir(split_dir), key=lambda e: e.name):
        if entry.is_dir():
            for root, dirs, names in os.walk(entry.path):
                dirs.sort()
                files.extend(SourceFile(os.path.join(root, n), entry.name) for n in sorted(names))
        else:
            problems.append((split, entry.path, "not inside a class folder"))
    return files


# ---------------------------------------------------------------- kaggle

def _kaggle(input_dir: str) -> Listing:
    root = os.path.join(input_dir, KAGGLE_ROOT)
    problems: list[tuple[str, str, str]] = []
    splits = {}
    if os.path.isdir(os.path.join(root, "train")):
        splits[TRAIN] = _class_folders(os.path.join(root, "train"), TRAIN, problems)
    val_dir = os.path.join(root, "val")
    if os.path.isdir(val_dir):
        labels = _validation_labels(input_dir)
        files = []
        for entry in sorted(os.scandir(val_dir), key=lambda e: e.name):
            wnid = labels.lookup(entry.name) if entry.is_file() else None
            if wnid is None:
                problems.append((VALIDATION, entry.path, labels.missing_reason(entry.name)))
            else:
                files.append(SourceFile(entry.path, wnid))
        splits[VALIDATION] = files
    if not splits:
        raise LayoutError(f"{root!r} has neither train/ nor val/")
    return _labelled(input_dir, "kaggle", splits, problems)


# ---------------------------------------------------------------- ilsvrc_tar

def _ilsvrc_tar(input_dir: str) -> Listing:
    problems: list[tuple[str, str, str]] = []
    splits = {}
    train_tar = os.path.join(input_dir, TRAIN_TAR)
    if os.path.isfile(train_tar):
        files = []
        for inner in _tar_members(train_tar, train_tar, 0):
            wnid, ext = os.path.splitext(inner.name.split("/")[-1])
            if ext != ".tar":
                problems.append((TRAIN, f"{train_tar}:{inner.name}", "not a per-class .tar"))
                continue
            for member in _tar_members(train_tar, inner.name, inner.offset):
                files.append(SourceFile(train_tar, wnid, f"{inner.name}/{member.name}",
                                        member.offset, member.size))
        splits[TRAIN] = files
    val_tar = os.path.join(input_dir, VAL_TAR)
    if os.path.isfile(val_tar):
        labels = _validation_labels(input_dir)
        files = []
        for member in _tar_members(val_tar, val_tar, 0):
            name = member.name.split("/")[-1]
            wnid = labels.lookup(name)
            if wnid is None:
                problems.append((VALIDATION, f"{val_tar}:{member.name}",
                                 labels.missing_reason(name)))
            else:
                files.append(SourceFile(val_tar, wnid, member.name, member.offset, member.size))
        files.sort(key=lambda f: f.member)  # in order, whatever the archive's order
        splits[VALIDATION] = files
    if not splits:
        raise LayoutError(f"{input_dir!r} has neither {TRAIN_TAR} nor {VAL_TAR}")
    return _labelled(input_dir, "ilsvrc_tar", splits, problems)


@dataclasses.dataclass(frozen=True)
class _Member:
    name: str
    offset: int  # absolute offset of the member's data in the outer file
    size: int


def _tar_members(path: str, what: str, base: int) -> Iterator[_Member]:
    """Regular-file members of the uncompressed tar starting at byte `base`
    of `path`, read header by header (no member list kept in memory)."""
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
        return f"no label for {os.path.splitext(filename)[0]!r} in {self.source}"


def _validation_labels(input_dir: str) -> _ValidationLabels:
    """From LOC_val_solution.csv if present, else the devkit."""
    solution = _find_file(input_dir, VAL_SOLUTION)
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
        f"in {input_dir!r}")


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
    meta_path = _find_file(input_dir, DEVKIT_META)
    truth_path = _find_file(input_dir, DEVKIT_GROUND_TRUTH)
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


# ---------------------------------------------------------------- classes

def _labelled(input_dir: str, layout: str, splits: dict[str, list[SourceFile]],
              problems: list) -> Listing:
    """Builds the label map and drops (as problems) validation files whose
    class has no training images."""
    reference = TRAIN if splits.get(TRAIN) else VALIDATION
    label_map = LabelMap.from_wnids({f.wnid for f in splits.get(reference, [])},
                                    class_names(input_dir))
    if len(label_map) == 0:
        raise LayoutError(f"{input_dir!r}: no images found in the {layout} layout")
    known = set(label_map.wnids)
    for split, files in splits.items():
        kept = [f for f in files if f.wnid in known]
        if len(kept) != len(files):
            for f in files:
                if f.wnid not in known:
                    problems.append((split, f.display,
                                     f"class {f.wnid!r} has no {reference} images"))
            splits[split] = kept
    return Listing(layout, label_map, splits, problems)


def class_names(input_dir: str) -> dict[str, str]:
    """{wnid: name} from LOC_synset_mapping.txt or the devkit, when present."""
    mapping = _find_file(input_dir, SYNSET_MAPPING)
    if mapping:
        return read_synset_mapping(mapping)
    devkit = find_devkit(input_dir)
    if devkit:
        return read_meta_mat(devkit.meta)[1]
    return {}


def _find_file(input_dir: str, name: str, max_depth: int = 3) -> str | None:
    """`name` in `input_dir` or a few folders below it (not inside image trees)."""
    for root, dirs, files in os.walk(input_dir):
        depth = os.path.relpath(root, input_dir).count(os.sep) + (root != input_dir)
        if name in files:
            return os.path.join(root, name)
        dirs[:] = sorted(d for d in dirs if depth < max_depth and d not in
                         ("train", "val", "test", "validation", "Data"))
    return None

"""Finding the input images and their classes, for each supported layout.

- `imagefolder`: `<input_dir>/train/<class>/...` and
  `<input_dir>/{val,validation,test}/<class>/...` (either split may be
  absent; sub-folders of a class folder are read). Class folders are usually
  wnids; any other name (CIFAR-10's `airplane`, ...) serves as both key and
  name, escaped as `data_prep.names` says. Links: see `data_prep.tree`.
- `ilsvrc_tar`: the raw ILSVRC-2012 archives, never extracted
  (`data_prep.ilsvrc`).
- `kaggle`: `ILSVRC/Data/CLS-LOC/{train,val}` + `LOC_val_solution.csv` +
  `LOC_synset_mapping.txt`.

Labels are 0-based in sorted-wnid order over the training classes (or, with
no training split, the validation classes). Entries that cannot be used are
not dropped: they are returned as problems, and the tool lists them as skipped.
"""

from __future__ import annotations

import os
import stat

from alexnet_tf.data.labels import LabelMap
from data_prep import ilsvrc
from data_prep.ilsvrc import (DEVKIT_GROUND_TRUTH, DEVKIT_META, DEVKIT_TAR,  # noqa: F401
                              SYNSET_MAPPING, TRAIN_TAR, VAL_SOLUTION, VAL_TAR)
from data_prep.names import escape
from data_prep.sources import (MAX_FILE_BYTES, TRAIN, VALIDATION, LayoutError,  # noqa: F401
                               Listing, SourceFile, stamped)
from data_prep.tree import TreeWalk, output_refusal

LAYOUTS = ("imagefolder", "ilsvrc_tar", "kaggle")
VALIDATION_FOLDERS = ("val", "validation", "test")
KAGGLE_ROOT = os.path.join("ILSVRC", "Data", "CLS-LOC")


def detect_layout(input_dir: str) -> str:
    """The layout of `input_dir`, judged from the names of its entries."""
    if not os.path.isdir(input_dir):
        raise LayoutError(f"--input_dir '{escape(input_dir)}' is not a directory")
    if any(os.path.isfile(os.path.join(input_dir, n)) for n in (TRAIN_TAR, VAL_TAR)):
        return "ilsvrc_tar"
    if os.path.isdir(os.path.join(input_dir, KAGGLE_ROOT)):
        return "kaggle"
    if any(os.path.isdir(os.path.join(input_dir, n)) for n in (TRAIN,) + VALIDATION_FOLDERS):
        return "imagefolder"
    raise LayoutError(
        f"cannot tell the layout of '{escape(input_dir)}': expected {TRAIN_TAR} / {VAL_TAR} "
        f"(ilsvrc_tar), {KAGGLE_ROOT}/ (kaggle) or train/ and val/ class folders "
        "(imagefolder); pass --layout to say which")


def list_inputs(input_dir: str, layout: str = "auto", output_dir: str | None = None) -> Listing:
    """Lists the images of `input_dir` in `layout` ("auto" detects it);
    `output_dir`, if given, must lie in no folder read (LayoutError)."""
    layout = _resolve(input_dir, layout)
    if layout == "imagefolder":
        return _imagefolder(input_dir, output_dir)
    if layout == "ilsvrc_tar":
        return _ilsvrc_tar(input_dir)
    return _kaggle(input_dir, output_dir)


def check_output_outside(input_dir: str, layout: str, output_dir: str) -> None:
    """Refuses an output folder inside a split folder (as `list_inputs`
    would), before the build creates it; links further down the tree are
    caught by the walk itself."""
    layout = _resolve(input_dir, layout)
    split_dirs = {"imagefolder": _imagefolder_dirs, "kaggle": _kaggle_dirs}.get(layout)
    output_real = os.path.realpath(output_dir)
    for folder in (split_dirs(input_dir) if split_dirs else {}).values():
        refusal = output_refusal(output_dir, output_real, folder, os.path.realpath(folder))
        if refusal:
            raise LayoutError(refusal)


def _resolve(input_dir: str, layout: str) -> str:
    if layout == "auto":
        return detect_layout(input_dir)
    if layout not in LAYOUTS:
        raise LayoutError(f"unknown --layout {layout!r}: choose auto or one of "
                          f"{', '.join(LAYOUTS)}")
    return layout


# ---------------------------------------------------------------- imagefolder

def _imagefolder(input_dir: str, output_dir: str | None) -> Listing:
    split_dirs = _imagefolder_dirs(input_dir)
    walk = TreeWalk(split_dirs, output_dir=output_dir)
    splits = {split: walk.class_folders(split) for split in split_dirs}
    return _labelled(input_dir, "imagefolder", splits, walk.problems)


def _imagefolder_dirs(input_dir: str) -> dict[str, str]:
    train_dir = os.path.join(input_dir, TRAIN)
    val_dirs = [os.path.join(input_dir, n) for n in VALIDATION_FOLDERS
                if os.path.isdir(os.path.join(input_dir, n))]
    if len(val_dirs) > 1:
        raise LayoutError(f"'{escape(input_dir)}' holds several validation folders "
                          f"({', '.join(map(os.path.basename, val_dirs))}): keep one")
    split_dirs = {}
    if os.path.isdir(train_dir):
        split_dirs[TRAIN] = train_dir
    if val_dirs:
        split_dirs[VALIDATION] = val_dirs[0]
    if not split_dirs:
        raise LayoutError(f"'{escape(input_dir)}' has neither train/ nor a validation folder")
    _check_distinct(split_dirs)
    return split_dirs


def _check_distinct(split_dirs: dict[str, str]) -> None:
    """The training and validation folders must not be one real folder."""
    if len(split_dirs) == 2:
        a, b = split_dirs.values()
        if os.path.realpath(a) == os.path.realpath(b):
            raise LayoutError(f"{escape(a)} and {escape(b)} are the same folder "
                              f"({escape(os.path.realpath(a))}): keep the splits apart")


# ---------------------------------------------------------------- kaggle

def _kaggle(input_dir: str, output_dir: str | None) -> Listing:
    split_dirs = _kaggle_dirs(input_dir)
    walk = TreeWalk(split_dirs, output_dir=output_dir)
    splits = {}
    if TRAIN in split_dirs:
        splits[TRAIN] = walk.class_folders(TRAIN)
    if VALIDATION in split_dirs:
        splits[VALIDATION] = _flat_validation(input_dir, walk)
    return _labelled(input_dir, "kaggle", splits, walk.problems)


def _kaggle_dirs(input_dir: str) -> dict[str, str]:
    root = os.path.join(input_dir, KAGGLE_ROOT)
    split_dirs = {split: os.path.join(root, name)
                  for split, name in ((TRAIN, "train"), (VALIDATION, "val"))
                  if os.path.isdir(os.path.join(root, name))}
    if not split_dirs:
        raise LayoutError(f"'{escape(root)}' has neither train/ nor val/")
    _check_distinct(split_dirs)
    return split_dirs


def _flat_validation(input_dir: str, walk: TreeWalk) -> list[SourceFile]:
    """Kaggle's val/: flat files named by image id, labelled by the solution
    CSV. A file whose real path lies in the train folder (a link into it, or
    a val/ that is itself a link into train/) is refused, as in class folders."""
    labels = ilsvrc.validation_labels(input_dir)
    val_dir, problems = walk.split_dirs[VALIDATION], walk.problems
    val_real = walk.real_folder(VALIDATION)
    walk.check_output(val_dir, val_real)
    files = []
    with os.scandir(val_dir) as it:
        entries = sorted(it, key=lambda e: e.name)
    for entry in entries:
        try:
            st = entry.stat()
        except OSError as e:
            problems.append((VALIDATION, escape(entry.path), f"cannot stat: {e.strerror}"))
            continue
        wnid = labels.lookup(entry.name) if stat.S_ISREG(st.st_mode) else None
        refusal = walk.file_refusal(VALIDATION, entry, val_real) if wnid else None
        if refusal:
            problems.append((VALIDATION, escape(entry.path), refusal))
        elif wnid is None:
            reason = (labels.missing_reason(entry.name) if stat.S_ISREG(st.st_mode)
                      else "not a regular file")
            problems.append((VALIDATION, escape(entry.path), reason))
        else:
            files.append(stamped(entry.path, wnid, st))
    return files


# ---------------------------------------------------------------- ilsvrc_tar

def _ilsvrc_tar(input_dir: str) -> Listing:
    problems: list[tuple[str, str, str]] = []
    archives = [os.path.join(input_dir, n) for n in (TRAIN_TAR, VAL_TAR)]
    if all(os.path.isfile(a) for a in archives) and os.path.samefile(*archives):
        raise LayoutError(f"{escape(archives[0])} and {escape(archives[1])} are the same "
                          f"file ({escape(os.path.realpath(archives[1]))}): keep the "
                          "splits apart")
    splits = ilsvrc.list_archives(input_dir, problems)
    if not splits:
        raise LayoutError(f"'{escape(input_dir)}' has neither {TRAIN_TAR} nor {VAL_TAR}")
    return _labelled(input_dir, "ilsvrc_tar", splits, problems)


# ---------------------------------------------------------------- classes

def _labelled(input_dir: str, layout: str, splits: dict[str, list[SourceFile]],
              problems: list) -> Listing:
    """Builds the label map and drops (as problems) validation files whose
    class has no training images."""
    reference = TRAIN if splits.get(TRAIN) else VALIDATION
    label_map = LabelMap.from_wnids({f.wnid for f in splits.get(reference, [])},
                                    ilsvrc.class_names(input_dir))
    if len(label_map) == 0:
        example = (f" ({len(problems)} entries not usable, e.g. {problems[0][1]}: "
                   f"{problems[0][2]})" if problems else "")
        raise LayoutError(f"'{escape(input_dir)}': no images found in the {layout} "
                          f"layout{example}")
    known = set(label_map.wnids)
    for split, files in splits.items():
        kept = [f for f in files if f.wnid in known]
        if len(kept) != len(files):
            for f in files:
                if f.wnid not in known:
                    problems.append((split, f.display,
                                     f"class '{f.wnid}' has no {reference} images"))
            splits[split] = kept
    return Listing(layout, label_map, splits, problems)



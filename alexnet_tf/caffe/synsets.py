"""The imported model's label map, from the data prep's `labels.txt` or
Caffe's `synset_words.txt`.

Caffe's class i is line i of `synset_words.txt` ("n01440764 tench, Tinca
tinca"): the i-th ILSVRC-2012 wnid in sorted order, which is this project's
label order too. Caffe's `synsets.txt` (wnids only) is read as well, each
name then being its wnid.
"""

from __future__ import annotations

import os

from alexnet_tf.caffe.errors import CaffeFormatError
from alexnet_tf.data.labels import LabelMap

PLACEHOLDER_PREFIX = "caffe_class_"


def _is_labels_txt(first_line: str) -> bool:
    return "\t" in first_line and first_line.split("\t", 1)[0].isdigit()


def read_label_map(path: str) -> LabelMap:
    """Either format, told apart by its first line."""
    if os.path.isdir(path):
        raise CaffeFormatError(f"{path} is a folder, not a labels file")
    try:
        with open(path, encoding="utf-8") as f:
            lines = [line.strip() for line in f]
    except UnicodeDecodeError as e:
        raise CaffeFormatError(f"{path}: not a UTF-8 text file ({e.reason} at byte "
                               f"{e.start})") from None
    lines = [line for line in lines if line]
    if not lines:
        raise CaffeFormatError(f"{path}: no classes")
    if _is_labels_txt(lines[0]):
        return LabelMap.read(path)
    wnids, names, seen = [], [], {}
    for number, line in enumerate(lines, 1):
        wnid, _, name = line.partition(" ")
        if "\t" in wnid:
            raise CaffeFormatError(f"{path}: line {number}: expected 'wnid name' (Caffe's "
                                   f"synset_words.txt) or labels.txt lines, got {line!r}")
        if wnid in seen:
            raise CaffeFormatError(f"{path}: line {number}: wnid {wnid!r} repeats line "
                                   f"{seen[wnid]}")
        seen[wnid] = number
        wnids.append(wnid)
        names.append(name.strip() or wnid)
    return LabelMap(tuple(wnids), tuple(names))


def placeholder_label_map(num_classes: int) -> LabelMap:
    """Classes named by index (caffe_class_0000 ...) when no labels are given."""
    wnids = tuple(f"{PLACEHOLDER_PREFIX}{i:04d}" for i in range(num_classes))
    return LabelMap(wnids, wnids)

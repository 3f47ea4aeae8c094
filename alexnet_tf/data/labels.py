"""The label map: class index <-> wnid <-> human-readable name.

One file format, `labels.txt`, one line per class: `index<TAB>wnid<TAB>name`.
Data prep writes it, training reads its size, the export ships it as an asset.
Classes are keyed on the wnid: some names repeat in ILSVRC-2012 ("crane" is
both 134 and 517), wnids never do.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Iterable, Mapping

from alexnet_tf import fileio
from alexnet_tf.errors import InputError

LABELS_FILENAME = "labels.txt"


@dataclasses.dataclass(frozen=True)
class LabelMap:
    """Classes in label order: `wnids[i]` and `names[i]` belong to label i."""

    wnids: tuple[str, ...]
    names: tuple[str, ...]

    def __post_init__(self):
        if len(self.wnids) != len(self.names):
            raise ValueError(
                f"label map has {len(self.wnids)} wnids but {len(self.names)} names")
        seen = set()
        for wnid in self.wnids:
            if wnid in seen:
                raise ValueError(f"label map repeats wnid {wnid!r}")
            if not wnid or any(c in wnid for c in "\t\n"):
                raise ValueError(f"bad wnid {wnid!r}")
            seen.add(wnid)

    @classmethod
    def from_wnids(cls, wnids: Iterable[str],
                   names: Mapping[str, str] | None = None) -> "LabelMap":
        """Sorted-wnid order (the ILSVRC standard); names default to the wnid."""
        ordered = tuple(sorted(set(wnids)))
        names = names or {}
        return cls(ordered, tuple(names.get(w, w) for w in ordered))

    def __len__(self) -> int:
        return len(self.wnids)

    def index(self, wnid: str) -> int:
        try:
            return self._index[wnid]
        except KeyError:
            raise KeyError(f"wnid {wnid!r} is not in the label map") from None

    @property
    def _index(self) -> dict[str, int]:
        cached = self.__dict__.get("_index_cache")
        if cached is None:
            cached = {w: i for i, w in enumerate(self.wnids)}
            object.__setattr__(self, "_index_cache", cached)
        return cached

    def name(self, label: int) -> str:
        return self.names[label]

    def write(self, path: str) -> None:
        """Writes `labels.txt` (atomically: a reader never sees half a file)."""
        fileio.write_text(path, "".join(
            f"{i}\t{wnid}\t{_clean(name)}\n"
            for i, (wnid, name) in enumerate(zip(self.wnids, self.names))))

    @classmethod
    def read(cls, path: str) -> "LabelMap":
        if os.path.isdir(path):
            path = os.path.join(path, LABELS_FILENAME)
        wnids, names, first_line = [], [], {}
        with open(path, encoding="utf-8") as f:
            for lineno, line in enumerate(f, 1):
                line = line.rstrip("\n")
                if not line:
                    continue
                parts = line.split("\t")
                if len(parts) != 3 or not parts[0].isdigit():
                    raise InputError(
                        f"{path}:{lineno}: expected 'index<TAB>wnid<TAB>name', got {line!r}")
                if int(parts[0]) != len(wnids):
                    raise InputError(
                        f"{path}:{lineno}: index {parts[0]} out of order (expected {len(wnids)})")
                if parts[1] in first_line:
                    raise InputError(f"{path}:{lineno}: wnid {parts[1]!r} repeats line "
                                     f"{first_line[parts[1]]}")
                if not parts[1]:
                    raise InputError(f"{path}:{lineno}: empty wnid")
                first_line[parts[1]] = lineno
                wnids.append(parts[1])
                names.append(parts[2])
        if not wnids:
            raise InputError(f"{path}: no classes")
        return cls(tuple(wnids), tuple(names))


def _clean(name: str) -> str:
    return " ".join(name.replace("\t", " ").split())

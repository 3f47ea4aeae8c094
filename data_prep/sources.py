"""What the layouts find: input images (`SourceFile`) and the whole listing.

Every input carries the size and modification time (ns) of the file its
bytes come from (the archive, for a tar member), taken when it was listed:
they are part of its shard's identity, so a rerun after a file was replaced
or fixed redoes that file's shard.
"""

from __future__ import annotations

import dataclasses
import os

from alexnet_tf.data.labels import LabelMap
from alexnet_tf.errors import InputError
from data_prep import names

TRAIN, VALIDATION = "train", "validation"
# No real photo comes near this; a bigger input file is refused unread.
MAX_FILE_BYTES = 256 << 20


class LayoutError(InputError):
    """The input directory does not hold what the layout needs."""


@dataclasses.dataclass(frozen=True, slots=True)
class SourceFile:
    """Where one input image's bytes are, and its class.

    `offset` < 0: the whole file at `path`; otherwise `size` bytes at
    `offset` inside the archive at `path` (`member` names them for humans).
    `path` is the real name (possibly with surrogate-escaped bytes); `display`
    and `filename` are its escaped text (`data_prep.names`).
    """

    path: str
    wnid: str
    member: str = ""
    offset: int = -1
    size: int = -1
    st_size: int = -1  # of the file at `path`, when listed
    st_mtime_ns: int = -1
    st_dev: int = -1  # with st_ino: which file `path` is (hard links and links share them)
    st_ino: int = -1

    @property
    def display(self) -> str:
        return names.escape(f"{self.path}:{self.member}" if self.member else self.path)

    @property
    def filename(self) -> str:
        return names.escape(os.path.basename(self.member or self.path))

    @property
    def file_id(self) -> tuple[int, int] | None:
        """(device, inode) of a whole file; None for an archive member (all of
        an archive's members share its inode)."""
        return (self.st_dev, self.st_ino) if self.offset < 0 and self.st_ino >= 0 else None

    @property
    def content_size(self) -> int:
        """The byte count of the image as listed (equal bytes, equal sizes)."""
        return self.size if self.offset >= 0 else self.st_size

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


def stamped(path: str, wnid: str, stat: os.stat_result, **member) -> SourceFile:
    return SourceFile(path, wnid, st_size=stat.st_size, st_mtime_ns=stat.st_mtime_ns,
                      st_dev=stat.st_dev, st_ino=stat.st_ino, **member)


@dataclasses.dataclass
class Listing:
    """Everything found in the input directory."""

    layout: str
    label_map: LabelMap
    splits: dict[str, list[SourceFile]]
    # (split, escaped path, reason) for entries found but not usable as input.
    problems: list[tuple[str, str, str]] = dataclasses.field(default_factory=list)

    def found_in(self, split: str) -> int:
        """Entries found under one split: inputs plus those not usable."""
        return (len(self.splits.get(split, ()))
                + sum(1 for s, _, _ in self.problems if s == split))

    @property
    def found(self) -> int:
        return sum(len(files) for files in self.splits.values()) + len(self.problems)

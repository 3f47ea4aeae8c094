"""Walking a split folder of class folders (`<split>/<class>/...`), links and all.

Every entry under the split folder is accounted for: regular files (and
links to them) become inputs, anything else is returned as a problem with
its reason, so the build can say found = written + skipped.

Links (docs/data_prep.md states the same rules):
- a link to a file is followed wherever it points, unless the file's real
  path lies in another split's folder (no validation image leaks into train);
- a link to a folder is followed too (a class folder kept on another disk, a
  linked sub-folder), but each real folder is read once: a link to a folder
  that contains it (a loop), to a folder in another split's folder, or to a
  folder already read is refused, with its reason.
Folders are told apart by (device, inode), so bind mounts count as links.

The build's output folder must not lie in any folder read (its shards would
be read as a class "records"): the walk refuses it, by real path, wherever
a link leads, and so does the build before creating it (`output_refusal`).
Class folders whose names read alike (`names.lookalike_key`, e.g. "cls" and
"cls ") are refused, naming both, in a split or across the splits.

A class folder that cannot be read raises `LayoutError` naming it (its class
would otherwise vanish from labels.txt); an unreadable sub-folder, a broken
link, a FIFO or device, and an empty class folder are problems.
"""

from __future__ import annotations

import dataclasses
import os
import stat

from data_prep.names import escape, lookalike_key
from data_prep.sources import LayoutError, SourceFile, stamped

FolderId = tuple[int, int]  # (st_dev, st_ino)


@dataclasses.dataclass
class TreeWalk:
    """Shared by the splits of one input folder: a folder read for one split
    is not read again for another."""

    split_dirs: dict[str, str]  # split -> its folder, as given
    problems: list[tuple[str, str, str]] = dataclasses.field(default_factory=list)
    visited: dict[FolderId, str] = dataclasses.field(default_factory=dict)
    output_dir: str | None = None  # the build's output folder: never read

    def __post_init__(self):
        self._real = {s: os.path.realpath(d) for s, d in self.split_dirs.items()}
        self._real_folders: dict[str, str] = {}
        self._output_real = os.path.realpath(self.output_dir) if self.output_dir else None
        self._class_names: dict[str, str] = {}  # lookalike key -> first class folder's path

    def class_folders(self, split: str) -> list[SourceFile]:
        """The inputs of `split`, class folder by class folder (sorted names);
        the class key is the folder's escaped name."""
        split_dir = self.split_dirs[split]
        try:
            entries = _entries(split_dir)
            ancestors = _ancestor_ids(self._real[split])
        except OSError as e:
            raise LayoutError(f"cannot read {escape(split_dir)}: {e.strerror}") from None
        self.check_output(split_dir, self._real[split])
        self.visited[_id(os.stat(split_dir))] = escape(split_dir)
        files: list[SourceFile] = []
        for entry in entries:
            st = _stat(entry)
            if st is None or not stat.S_ISDIR(st.st_mode):
                self._problem(split, entry.path, "not inside a class folder"
                              if st is not None else _broken(entry.path))
                continue
            real = (os.path.realpath(entry.path) if entry.is_symlink()
                    else os.path.join(self._real[split], entry.name))
            refusal = self._refusal(split, real, st, ancestors)
            if refusal:
                self._problem(split, entry.path, refusal)
                continue
            self.check_output(entry.path, real)
            self._check_lookalike(entry.path, entry.name)
            self.visited[_id(st)] = escape(entry.path)
            before = len(self.problems)
            found = self._walk_class(split, entry.path, real, ancestors | {_id(st)},
                                     escape(entry.name))
            if not found and len(self.problems) == before:
                self._problem(split, entry.path, "empty class folder: no images, no class")
            files.extend(found)
        return files

    def _walk_class(self, split: str, top: str, top_real: str, ancestors: set[FolderId],
                    wnid: str) -> list[SourceFile]:
        """Depth first in sorted order: a folder's files, then its sub-folders."""
        files: list[SourceFile] = []
        stack = [(top, top_real, ancestors)]
        while stack:
            path, real, ancestors = stack.pop()
            try:
                entries = _entries(path)
            except OSError as e:
                if path == top:
                    raise LayoutError(
                        f"cannot read class folder {escape(path)}: {e.strerror}") from None
                self._problem(split, path, f"cannot read folder: {e.strerror}")
                continue
            folders = []
            for entry in entries:
                st = _stat(entry)
                if st is None:
                    self._problem(split, entry.path, _broken(entry.path))
                elif stat.S_ISDIR(st.st_mode):
                    child = (os.path.realpath(entry.path) if entry.is_symlink()
                             else os.path.join(real, entry.name))
                    refusal = self._refusal(split, child, st, ancestors)
                    if refusal:
                        self._problem(split, entry.path, refusal)
                    else:
                        self.check_output(entry.path, child)
                        self.visited[_id(st)] = escape(entry.path)
                        folders.append((entry.path, child, ancestors | {_id(st)}))
                elif stat.S_ISREG(st.st_mode):
                    # A plain file lies where its folder does (checked); only a
                    # link can lead elsewhere, and only another split matters.
                    refusal = (self.file_refusal(split, entry, real)
                               if entry.is_symlink() else None)
                    if refusal:
                        self._problem(split, entry.path, refusal)
                    else:
                        files.append(stamped(entry.path, wnid, st))
                else:
                    self._problem(split, entry.path, f"not a regular file ({_kind(st)})")
            stack.extend(reversed(folders))
        return files

    def check_output(self, folder: str, real: str) -> None:
        """Refuses to read the folder `folder` (real path `real`) if the
        output folder lies in it."""
        if self._output_real is not None:
            refusal = output_refusal(self.output_dir, self._output_real, folder, real)
            if refusal:
                raise LayoutError(refusal)

    def _check_lookalike(self, path: str, name: str) -> None:
        """Refuses a class folder whose name reads like another's but differs."""
        key = lookalike_key(escape(name))
        first = self._class_names.setdefault(key, path)
        if first != path and escape(os.path.basename(first)) != escape(name):
            raise LayoutError(
                f"class folders {escape(first)} and {escape(path)} have names that differ "
                f"only in spacing, invisible characters or Unicode form "
                # ascii(): 'caf\xe9' and 'cafe\u0301' tell apart what prints alike
                f"({ascii(escape(os.path.basename(first)))} and {ascii(escape(name))}): they "
                "would be two classes that read as one; rename or merge them")

    def _refusal(self, split: str, real: str, st: os.stat_result,
                 ancestors: set[FolderId]) -> str | None:
        """Why the folder at real path `real` must not be read, if it must not."""
        if _id(st) in ancestors:
            return "link to a folder that contains it (a loop): not followed"
        other = self._other_split(split, real)
        if other:
            return f"folder in the {other} folder: not read for {split}"
        if _id(st) in self.visited:
            return f"same folder as {self.visited[_id(st)]}, already read: not followed"
        return None

    def file_refusal(self, split: str, entry: os.DirEntry, folder_real: str) -> str | None:
        """Why the regular file (or link to one) `entry`, in the folder whose
        real path is `folder_real`, must not be used for `split`: its real
        path lies in another split's folder."""
        if len(self._real) < 2:
            return None
        if entry.is_symlink():
            other = self._other_split(split, self._link_real(entry.path, folder_real))
            return other and f"link into the {other} folder: not used for {split}"
        other = self._other_split(split, os.path.join(folder_real, entry.name))
        return other and f"lies in the {other} folder: not used for {split}"

    def real_folder(self, split: str) -> str:
        """The real path of `split`'s folder."""
        return self._real[split]

    def _link_real(self, link: str, folder_real: str) -> str:
        """The real path of the file link `link` in the folder whose real path
        is `folder_real`: os.path.realpath, with the target's folder cached
        (links made by a script mostly point into a few folders)."""
        target = os.path.join(folder_real, os.readlink(link))  # relative to where it is
        head, tail = os.path.split(target)
        if tail in ("", ".", "..") or os.path.islink(target):
            return os.path.realpath(link)  # a chain of links: resolve it all
        real_head = self._real_folders.get(head)
        if real_head is None:
            real_head = self._real_folders[head] = os.path.realpath(head)
        return os.path.join(real_head, tail)

    def _other_split(self, split: str, real: str) -> str | None:
        for other, other_real in self._real.items():
            if other != split and (real == other_real
                                   or real.startswith(other_real.rstrip(os.sep) + os.sep)):
                return other
        return None

    def _problem(self, split: str, path: str, reason: str) -> None:
        self.problems.append((split, escape(path), reason))


def output_refusal(output_dir: str, output_real: str, folder: str, real: str) -> str | None:
    """Why a build into `output_dir` (real path `output_real`) must not read
    `folder` (real path `real`): the output folder is it or lies inside it."""
    if output_real == real or output_real.startswith(real.rstrip(os.sep) + os.sep):
        where = "is" if output_real == real else "lies inside"
        return (f"the output folder {escape(output_dir)} {where} {escape(folder)}, which is "
                "read as input (its files would become images of a class): choose an "
                "output folder outside the input's split folders")
    return None


def _entries(path: str) -> list[os.DirEntry]:
    with os.scandir(path) as it:
        return sorted(it, key=lambda e: e.name)


def _stat(entry: os.DirEntry) -> os.stat_result | None:
    """The entry's stat, following links; None for a broken (or unreadable) link."""
    try:
        return entry.stat()
    except OSError:
        return None


def _broken(path: str) -> str:
    try:
        return f"broken link (to {escape(os.readlink(path))})"
    except OSError as e:
        return f"cannot stat: {e.strerror}"


def _kind(st: os.stat_result) -> str:
    for test, name in ((stat.S_ISFIFO, "FIFO"), (stat.S_ISSOCK, "socket"),
                       (stat.S_ISCHR, "character device"), (stat.S_ISBLK, "block device")):
        if test(st.st_mode):
            return name
    return f"mode {st.st_mode:o}"


def _id(st: os.stat_result) -> FolderId:
    return st.st_dev, st.st_ino


def _ancestor_ids(real: str) -> set[FolderId]:
    """(device, inode) of `real` and of every folder above it."""
    ids = set()
    while True:
        ids.add(_id(os.stat(real)))
        parent = os.path.dirname(real)
        if parent == real:
            return ids
        real = parent

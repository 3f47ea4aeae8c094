"""Atomic file writes: a reader (or a server polling the folder) never sees a
half-written file, and a kill leaves the old version in place.

The text goes to a hidden temporary file in the same folder (so the rename
cannot cross file systems), is flushed and fsynced, then renamed over the
target. Works on local paths; TensorFlow's gfile is not needed here.

`is_utf8_path` says whether TensorFlow's file functions can take a path:
they need UTF-8, and a name from sys.argv may hold other bytes.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from typing import Any, Callable, Iterator


def is_utf8_path(path) -> bool:
    """False for a str path holding bytes that are not UTF-8 (os.fsdecode's
    surrogate escapes), which TensorFlow cannot encode."""
    path = os.fspath(path)
    if not isinstance(path, str) or path.isascii():
        return True
    try:
        path.encode("utf-8")
        return True
    except UnicodeEncodeError:
        return False


NOT_UTF8 = ("TensorFlow's file functions take UTF-8 names only; rename the folder, or link "
            "it under a UTF-8 name")


@contextlib.contextmanager
def atomic_path(path: str, suffix: str = "") -> Iterator[str]:
    """Yields a temporary path to write; on success it replaces `path`.

    `suffix` keeps the extension a writer insists on (np.save adds ".npy",
    matplotlib picks the format from it). On an exception the temporary file
    is removed and `path` is left as it was.
    """
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=f".tmp{suffix}",
                               dir=folder)
    os.fchmod(fd, 0o666 & ~_umask())  # mkstemp makes 0600; a plain open() would not
    os.close(fd)
    try:
        yield tmp
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        with contextlib.suppress(FileNotFoundError):
            os.remove(tmp)
        if isinstance(e, OSError) and e.filename in (None, tmp):
            e.filename = path  # a full disk names the file, not the temporary name
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_text(path: str, text: str) -> None:
    with atomic_path(path) as tmp:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)


def write_json(path: str, value: Any, *, default: Callable | None = None) -> None:
    write_text(path, json.dumps(value, indent=2, default=default) + "\n")

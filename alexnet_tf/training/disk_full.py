"""A full disk while training saves or logs: one line naming the path.

Python reports it as OSError errno ENOSPC; TensorFlow's file system as a
ResourceExhaustedError whose message names the file and says "No space left
on device". Both become `DiskFullError`, an InputError (the user frees space
and runs the same command again, which resumes from the last complete
checkpoint). Whatever the interrupted save had half-written is deleted by the
loop (`checkpoints.remove_leftovers`) before this error reaches the user.
"""

from __future__ import annotations

import contextlib
import errno
import re
from typing import Iterator, Optional

import tensorflow as tf

from alexnet_tf.errors import InputError

_TF_NO_SPACE = re.compile(r"(\S+); No space left on device")
# TensorFlow writes a checkpoint's parts into <prefix>_temp/ first: name the prefix.
_CHECKPOINT_PART = re.compile(r"_temp/[^/]*$")


class DiskFullError(InputError):
    """No space left on the device holding `path`."""

    def __init__(self, path: str):
        self.path = path
        super().__init__(f"no space left on device writing {path}: nothing half-written was "
                         "kept; free some space and run the same command again (it resumes "
                         "from the last complete checkpoint)")


def full_disk_path(error: BaseException, fallback: str) -> Optional[str]:
    """The path `error` failed to write for lack of space; None if it is not
    a full disk."""
    if isinstance(error, OSError) and error.errno == errno.ENOSPC:
        return error.filename or fallback
    if isinstance(error, tf.errors.OpError):
        match = _TF_NO_SPACE.search(error.message or "")
        if match:
            return _CHECKPOINT_PART.sub("", match.group(1))
        if "No space left on device" in (error.message or ""):
            return fallback
    return None


@contextlib.contextmanager
def refused_when_full(fallback_path: str) -> Iterator[None]:
    """Turns a full disk inside the block into DiskFullError."""
    try:
        yield
    except (OSError, tf.errors.OpError) as e:
        path = full_disk_path(e, fallback_path)
        if path is None:
            raise
        raise DiskFullError(path) from None

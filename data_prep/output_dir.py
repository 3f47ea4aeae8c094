"""The output folder: usable or a one-line error, one build at a time, and
only this tool's files touched.

`OutputLock` takes an exclusive `fcntl.flock` on `<output_dir>/.build.lock`
and writes the holder's pid into it. The kernel releases a flock when the
process holding it dies, however it dies, so the lock of a killed build is
simply taken by the next one (the file stays; it is never the lock itself).
A second build into the same folder stops at once, naming the holder's pid.
"""

from __future__ import annotations

import contextlib
import fcntl
import glob
import json
import os
import shutil
import tempfile
import time

from alexnet_tf import fileio
from alexnet_tf.data import records
from alexnet_tf.data.records_check import PARTS_DIR  # per-shard records (data_prep.writer)
from alexnet_tf.errors import InputError
from data_prep.names import escape

LOCK_FILENAME = ".build.lock"
CONFIG_FILENAME = "config.json"  # inside PARTS_DIR: the identity of the build
SHARD_TMP_SUFFIX = ".tmp"


class BuildError(InputError):
    """Bad settings, or an output folder this build cannot or must not touch."""


def prepare(output_dir: str) -> None:
    """Creates the folder if needed and checks that files can be written in it."""
    shown = escape(output_dir)
    if os.path.exists(output_dir) and not os.path.isdir(output_dir):
        raise BuildError(f"the output folder {shown} exists and is not a folder")
    try:
        os.makedirs(output_dir, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".write-probe.", dir=output_dir)
        os.close(fd)
        os.remove(probe)
    except OSError as e:
        raise BuildError(f"cannot write in the output folder {shown}: "
                         f"{e.strerror or e}") from None


class OutputLock:
    """Held for a whole build: `with OutputLock(output_dir): ...`."""

    def __init__(self, output_dir: str):
        self.path = os.path.join(output_dir, LOCK_FILENAME)
        self._fd: int | None = None

    def __enter__(self) -> "OutputLock":
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as e:
            raise BuildError(f"cannot write {escape(self.path)}: {e.strerror}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _holder_pid(fd)
            os.close(fd)
            raise BuildError(
                f"{escape(os.path.dirname(self.path))} is being written by another build "
                f"(pid {holder}, lock {LOCK_FILENAME}): wait for it to end or stop it") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd
        return self

    def discard_folder(self) -> None:
        """Removes the lock file and the output folder if it holds nothing
        else: for a build that found nothing to do in a folder it created.
        Done while the lock is held, so no other build is using either."""
        folder = os.path.dirname(self.path)
        if os.listdir(folder) == [LOCK_FILENAME]:
            os.remove(self.path)
            with contextlib.suppress(OSError):
                os.rmdir(folder)

    def __exit__(self, *exc) -> None:
        if self._fd is not None:
            os.close(self._fd)  # releases the lock
            self._fd = None


def _holder_pid(fd: int, wait: float = 1.0) -> str:
    """The pid the holder wrote (it writes it just after locking: wait a little)."""
    deadline = time.monotonic() + wait
    while True:
        text = os.pread(fd, 32, 0).decode(errors="replace").strip()
        if text or time.monotonic() > deadline:
            return text or "unknown"
        time.sleep(0.02)


def our_shards(output_dir: str) -> list[str]:
    return sorted(path for prefix in (records.TRAIN_PREFIX, records.VALIDATION_PREFIX)
                  for path in glob.glob(records.shard_pattern(glob.escape(output_dir), prefix)))


def check_same_build(output_dir: str, identity: dict) -> None:
    """Refuses to mix with an earlier build of other settings (whose shard
    names could differ and linger); records this build's identity."""
    path = os.path.join(output_dir, PARTS_DIR, CONFIG_FILENAME)
    existing_shards = our_shards(output_dir)
    if os.path.exists(path):
        with open(path, encoding="utf-8") as f:
            earlier = json.load(f)
        if earlier != identity:
            diffs = [f"{k}: {_short(identity.get(k))} now, {_short(earlier.get(k))} before"
                     for k in sorted(set(identity) | set(earlier))
                     if earlier.get(k) != identity.get(k)]
            raise BuildError(
                f"{escape(output_dir)} holds a build with other settings "
                f"({'; '.join(diffs)}): pass --overwrite to rebuild it")
    elif existing_shards:
        raise BuildError(f"{escape(output_dir)} already holds shards of an unknown build "
                         f"(e.g. {os.path.basename(existing_shards[0])}): pass --overwrite")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    fileio.write_json(path, identity)


def _short(value) -> str:
    text = json.dumps(value, sort_keys=True)
    return text if len(text) <= 80 else text[:77] + "..."


def remove_strays(output_dir: str, names: tuple[str, ...]) -> None:
    """Temporary files of killed runs: shards, and atomic writes of `names`."""
    strays = []
    for prefix in (records.TRAIN_PREFIX, records.VALIDATION_PREFIX):
        strays += glob.glob(records.shard_pattern(glob.escape(output_dir), prefix)
                            + SHARD_TMP_SUFFIX)
    for name in names:
        strays += glob.glob(os.path.join(glob.escape(output_dir), f".{name}.*.tmp"))
        strays += glob.glob(os.path.join(glob.escape(output_dir), f"{name}.tmp"))
    strays += glob.glob(os.path.join(glob.escape(output_dir), PARTS_DIR, ".*.tmp"))
    for path in strays:
        with contextlib.suppress(FileNotFoundError):
            os.remove(path)


def remove_outputs(output_dir: str, names: tuple[str, ...], shards: bool = True) -> None:
    """Removes the files `names` and, with `shards` (--overwrite), the shards
    and their records: what this tool writes (but the lock), nothing else."""
    if shards:
        for path in our_shards(output_dir):
            os.remove(path)
        shutil.rmtree(os.path.join(output_dir, PARTS_DIR), ignore_errors=True)
    for name in names:
        with contextlib.suppress(FileNotFoundError):
            os.remove(os.path.join(output_dir, name))

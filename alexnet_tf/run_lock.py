"""One writer per folder: a lock file that names its holder.

    with run_lock.hold(model_dir, "training"):
        ...  # only this process writes into model_dir

The lock is an exclusive `fcntl.flock` on `<folder>/.lock`, and the file
holds the holder's identity as one JSON line: host, pid, the process's start
time (boot id and start tick, so a reused pid is never taken for the holder),
what it is doing and since when.

- A second process refuses at once (`LockedError`, one line naming the
  holder's host and pid).
- Released on every exit path: the `with` block removes the file. When the
  process dies without that (SIGKILL, out of memory, power), the kernel drops
  its flock; the file it leaves names a holder that is gone, and the next run
  takes the lock over, saying whose it was. The flock decides who wins, so of
  two runs racing over a stale lock exactly one gets it.
- The holder removes the file while it still holds the flock; a process that
  locked the removed file finds that the path no longer leads to its inode,
  and tries again on the new file, so two holders of two inodes cannot both
  believe they won.

On NFS, Linux emulates flock with the server's byte-range locks (NFSv4 has
them built in, NFSv3 needs lockd), so the lock excludes runs on other hosts
too; a crashed host's lock is freed when its NFSv4 lease expires. A mount with
`nolock` or `local_lock=flock|all` keeps locks on one host: a second run on
the same host is still refused, one on another host is not. A file system
without locks at all gets a warning, and the run goes on unlocked.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import logging
import os
import socket
import stat
import time
from typing import Iterator, Optional

from alexnet_tf.errors import InputError

LOCK_FILENAME = ".lock"
_READ_LIMIT = 4096
_NO_LOCKS = (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL)

logger = logging.getLogger(__name__)


class LockedError(InputError):
    """The folder is held by another process; `holder` is its identity."""

    def __init__(self, message: str, holder: dict):
        super().__init__(message)
        self.holder = holder


# --------------------------------------------------------------------------
# Who holds it

def _boot_id() -> Optional[str]:
    try:
        with open("/proc/sys/kernel/random/boot_id", encoding="ascii") as f:
            return f.read().strip()
    except OSError:
        return None


def process_start(pid: int) -> Optional[int]:
    """The process's start time in clock ticks since boot (/proc/<pid>/stat
    field 22), or None where there is no /proc or no such process."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return None
    # The command name (field 2) may hold spaces and parentheses: split after its last ')'.
    fields = stat[stat.rindex(b")") + 2:].split()
    return int(fields[19])


def identity(purpose: str) -> dict:
    """This process, as the lock file records it."""
    pid = os.getpid()
    return {"host": socket.gethostname(), "pid": pid, "boot_id": _boot_id(),
            "start_ticks": process_start(pid), "purpose": purpose,
            "since": time.strftime("%Y-%m-%d %H:%M:%S %z")}


def holder_alive(holder: dict) -> Optional[bool]:
    """Whether the process a lock file names still runs: True or False on this
    host (same boot, the pid exists, and it started when the holder did: a
    reused pid is a new process), None for another host (unknowable here)."""
    if holder.get("host") != socket.gethostname():
        return None
    boot = _boot_id()
    if holder.get("boot_id") and boot and holder["boot_id"] != boot:
        return False  # written before a reboot
    try:
        pid = int(holder["pid"])
        if pid <= 0:  # kill(0 or -1) would ask about process groups, not a holder
            return False
        os.kill(pid, 0)
    except (KeyError, TypeError, ValueError, OverflowError, ProcessLookupError):
        return False
    except PermissionError:
        pass  # exists, another user's
    started = holder.get("start_ticks")
    return started is None or process_start(pid) in (None, started)


def describe(holder: dict) -> str:
    if not holder:
        return "a process that has not written its name yet"
    return (f"{holder.get('purpose', 'a run')} on host {holder.get('host', '?')}, "
            f"pid {holder.get('pid', '?')}, since {holder.get('since', '?')}")


def _parse(data: bytes) -> dict:
    try:
        holder = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        return {}
    return holder if isinstance(holder, dict) else {}


def _read_holder(fd: int, wait: float = 2.0) -> dict:
    """The identity in the file. The holder writes it just after locking, so
    an empty file, or one still naming a dead holder, is read again for up to
    `wait` seconds (only the message depends on it)."""
    deadline = time.monotonic() + wait
    while True:
        holder = _parse(os.pread(fd, _READ_LIMIT, 0))
        if (holder and holder_alive(holder) is not False) or time.monotonic() > deadline:
            return holder
        time.sleep(0.02)


# --------------------------------------------------------------------------
# Taking and releasing it

class HeldLock:
    """A lock this process holds. `previous` is the identity a killed holder
    left in the file (empty when the folder was free)."""

    def __init__(self, folder: str, fd: Optional[int], previous: dict, created_folder: bool):
        self.folder = folder
        self.path = os.path.join(folder, LOCK_FILENAME)
        self.previous = previous
        self._fd = fd
        self._created_folder = created_folder

    def release(self) -> None:
        """Removes the file (still holding the flock), then lets go. A folder
        this lock created and nothing else wrote into goes too."""
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        with contextlib.suppress(OSError):
            if os.stat(self.path).st_ino == os.fstat(fd).st_ino:
                os.remove(self.path)
        os.close(fd)
        if self._created_folder:
            with contextlib.suppress(OSError):  # not empty: someone wrote there
                os.rmdir(self.folder)


def acquire(folder: str, purpose: str) -> HeldLock:
    """Takes the folder's lock (creating the folder), or raises LockedError
    naming the holder. `purpose` ("training", "export") goes into the file."""
    folder = os.fspath(folder)
    path = os.path.join(folder, LOCK_FILENAME)
    if os.path.lexists(folder) and not os.path.isdir(folder):
        raise InputError(f"{folder} is a file (or a dangling link), not a folder")
    for _ in range(100):  # another attempt only when the file was replaced under us
        created = not os.path.isdir(folder)
        try:
            os.makedirs(folder, exist_ok=True)
            # O_NOFOLLOW: a .lock that is a link must not make us truncate (and
            # later remove) the file it points to, nor create its target
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o644)
        except FileNotFoundError:  # the folder was removed by a releasing holder
            continue
        except OSError as e:
            why = ("it is a symbolic link; remove it" if e.errno == errno.ELOOP
                   else e.strerror)
            raise InputError(f"cannot write the lock file {path}: {why}") from None
        if not stat.S_ISREG(os.fstat(fd).st_mode):  # a FIFO or device in its place
            os.close(fd)
            raise InputError(f"cannot use the lock file {path}: it is not a regular file; "
                             "remove it")
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_holder(fd)
            os.close(fd)
            raise LockedError(f"{folder} is in use by {describe(holder)} (lock file {path}): "
                              "wait for it to end, or stop that process", holder) from None
        except OSError as e:
            if e.errno not in _NO_LOCKS:
                os.close(fd)
                raise
            logger.warning("cannot lock %s (%s): this file system has no locks, so a second "
                           "run writing into %s at the same time would not be refused",
                           path, e.strerror, folder)
        try:
            same_file = os.stat(path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same_file = False
        if not same_file:  # the holder released and removed it before we locked
            os.close(fd)
            continue
        return _take(folder, fd, purpose, created)
    raise InputError(f"cannot lock {path}: it keeps being replaced")


def _take(folder: str, fd: int, purpose: str, created: bool) -> HeldLock:
    previous = _parse(os.pread(fd, _READ_LIMIT, 0))
    if previous:
        alive = holder_alive(previous)
        how = {False: "which is no longer running", True: "which still runs but let go",
               None: "whose lock was released"}[alive]
        logger.warning("%s was left locked by %s, %s (killed?): taking the lock over",
                       folder, describe(previous), how)
    data = (json.dumps(identity(purpose)) + "\n").encode("utf-8")
    os.ftruncate(fd, 0)
    os.pwrite(fd, data, 0)
    os.fsync(fd)
    return HeldLock(folder, fd, previous, created)


@contextlib.contextmanager
def hold(folder: str, purpose: str) -> Iterator[HeldLock]:
    """`acquire` for a `with` block; released however the block ends."""
    lock = acquire(folder, purpose)
    try:
        yield lock
    finally:
        lock.release()

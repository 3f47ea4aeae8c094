"""Worker processes die with the build (Linux; elsewhere a no-op).

The build's workers are forked by a fork server that the build starts
(multiprocessing's, with this package's preload: `data_prep.pool`). When the build is
killed with SIGKILL it cannot stop them, and the fork server stays up for as
long as a worker holds its "alive" pipe, so without help both would run on
(and hold their memory) after the build died. Each asks the kernel to send
it SIGKILL when its parent dies (prctl PR_SET_PDEATHSIG): the fork server
when the build dies (`data_prep.forkserver_preload`), each worker when the
fork server dies (`data_prep.writer.init_worker`).

The kernel ties the request to the *thread* that started the process, not
to its process: a fork server started by a thread that then ended would be
killed with it (and its workers with it) while the build ran on. So the
build starts the fork server from one daemon thread that lasts as long as
the process (`on_lasting_thread`), whichever thread runs the build: the
guard then holds for builds from any thread, one after another or at once
(they share that fork server), and it fires when the build process dies,
however it dies. A fork server that user code started first, without this
preload, is used as it is: its workers die with it, not with the build.

The request only covers a parent alive when it is made, so each process
compares its parent with the pid it expects, given from outside: a parent
that died earlier has left it re-parented (to init or a subreaper), and the
process exits at once. The fork server learns the build's pid from
`BUILD_PID_ENV` (set by the lasting thread while it starts the fork server:
`announced`) and asks first thing, before its preload's imports; a worker
compares with the fork server's pid, which it inherits.

Shards are published (renamed to their real names) only by the build itself,
so whatever a worker does in the instant before its SIGKILL lands leaves at
most a `.tmp` file, which the next run removes.
"""

from __future__ import annotations

import contextlib
import ctypes
import multiprocessing
import os
import queue
import signal
import sys
import threading
from typing import Callable, Iterator, TypeVar

_PR_SET_PDEATHSIG = 1
BUILD_PID_ENV = "DATA_PREP_BUILD_PID"  # the build's pid, for its fork server
# The fork server's pid, set by its preload (`data_prep.forkserver_preload`)
# and inherited by every worker it forks: a worker that finds another parent
# knows the fork server, hence the build, is gone. None in any other process.
FORKSERVER_PID: int | None = None

T = TypeVar("T")


def die_with_parent(parent: int) -> bool:
    """Asks for SIGKILL when this process's parent dies, then exits at once
    if its parent is not `parent` (the pid it was started by: gone already).
    Returns whether the kernel took the request."""
    armed = False
    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            armed = libc.prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0) == 0
        except (OSError, AttributeError):
            armed = False
    if os.getppid() != parent:  # the parent died before the request took effect
        os._exit(1)
    return armed


def die_with_build() -> bool:
    """`die_with_parent` for the fork server, against the pid in
    `BUILD_PID_ENV`. Without one the fork server was started by other code
    (multiprocessing restarts it on demand): no build to die with, no guard."""
    try:
        parent = int(os.environ[BUILD_PID_ENV])
    except (KeyError, ValueError):
        return False
    return die_with_parent(parent)


@contextlib.contextmanager
def announced() -> Iterator[None]:
    """Sets `BUILD_PID_ENV` to this process's pid while a fork server starts
    (it inherits the environment), then restores it. Used only on the
    lasting thread, so builds in several threads never interleave it."""
    before = os.environ.get(BUILD_PID_ENV)
    os.environ[BUILD_PID_ENV] = str(os.getpid())
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(BUILD_PID_ENV, None)
        else:
            os.environ[BUILD_PID_ENV] = before


def in_forkserver_preload() -> bool:
    """Whether the code running is being imported by multiprocessing's fork
    server itself (its `main`, in the process started to be the fork server),
    and not by an ordinary process nor by a worker the fork server forked
    (whose stack also runs through `main`, but which has a parent process)."""
    if multiprocessing.parent_process() is not None:
        return False
    frame = sys._getframe(1)
    while frame is not None:
        code = frame.f_code
        if code.co_name == "main" and code.co_filename.endswith(
                os.path.join("multiprocessing", "forkserver.py")):
            return True
        frame = frame.f_back
    return False


# ------------------------------------------------------- the lasting thread

_lasting_lock = threading.Lock()
_lasting: tuple[int, threading.Thread, queue.SimpleQueue] | None = None  # (pid, thread, jobs)


def on_lasting_thread(job: Callable[[], T]) -> T:
    """`job()`, run on a daemon thread of this process that never ends
    before the process does (started on first use, and again in a forked
    child, which has no copy of it), so that a process it starts is killed
    by its PR_SET_PDEATHSIG only when this process dies. Blocks until done;
    raises what `job` raised."""
    thread, jobs = _lasting_thread()
    if threading.current_thread() is thread:
        return job()
    done = threading.Event()
    outcome: list = []

    def run() -> None:
        try:
            outcome.append((True, job()))
        except BaseException as e:  # noqa: BLE001 - handed to the caller
            outcome.append((False, e))
        finally:
            done.set()

    jobs.put(run)
    done.wait()
    ok, value = outcome[0]
    if not ok:
        raise value
    return value


def _lasting_thread() -> tuple[threading.Thread, queue.SimpleQueue]:
    global _lasting
    with _lasting_lock:
        if _lasting is None or _lasting[0] != os.getpid() or not _lasting[1].is_alive():
            jobs: queue.SimpleQueue = queue.SimpleQueue()
            thread = threading.Thread(target=_serve, args=(jobs,), daemon=True,
                                      name="data_prep-lifeline")
            thread.start()
            _lasting = (os.getpid(), thread, jobs)
        return _lasting[1], _lasting[2]


def _serve(jobs: queue.SimpleQueue) -> None:
    while True:
        jobs.get()()


def _forget_in_child() -> None:  # a fork may copy the lock held
    global _lasting_lock, _lasting
    _lasting_lock, _lasting = threading.Lock(), None


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_in_child)

"""Worker processes die with the build (Linux; elsewhere a no-op).

The build's workers are forked by a fork server that the build starts. When
the build is killed with SIGKILL it cannot stop them, and the fork server
stays up for as long as a worker holds its "alive" pipe, so without help
both would run on (and hold their memory) after the build died. Each asks
the kernel to send it SIGKILL when its parent dies (prctl PR_SET_PDEATHSIG):
the fork server when the build dies (`data_prep.forkserver_preload`), each
worker when the fork server dies (`data_prep.writer.init_worker`).

The request only covers a parent alive when it is made, so each process
compares its parent with the pid it expects, given from outside: a parent
that died earlier has left it re-parented (to init or a subreaper), and the
process exits at once. The fork server learns the build's pid from
`BUILD_PID_ENV` (set by the build before it starts the pool: `announced`)
and asks first thing, before importing TensorFlow; a worker compares with
the fork server's pid, which it inherits.

Shards are published (renamed to their real names) only by the build itself,
so whatever a worker does in the instant before its SIGKILL lands leaves at
most a `.tmp` file, which the next run removes.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import sys
from typing import Iterator

_PR_SET_PDEATHSIG = 1
BUILD_PID_ENV = "DATA_PREP_BUILD_PID"  # the build's pid, for its fork server


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
    `BUILD_PID_ENV`; without one (a fork server not started through
    `announced`) it exits: it could not know its build was alive."""
    try:
        parent = int(os.environ[BUILD_PID_ENV])
    except (KeyError, ValueError):
        parent = -1
    return die_with_parent(parent)


@contextlib.contextmanager
def announced() -> Iterator[None]:
    """Sets `BUILD_PID_ENV` to this process's pid while a pool may start its
    fork server (which inherits the environment), then restores it."""
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
    server (its `main`), and not by an ordinary process."""
    frame = sys._getframe(1)
    while frame is not None:
        code = frame.f_code
        if code.co_name == "main" and code.co_filename.endswith(
                os.path.join("multiprocessing", "forkserver.py")):
            return True
        frame = frame.f_back
    return False

"""Worker processes die with the build (Linux; elsewhere a no-op).

The build's workers are forked by a fork server that the build starts. When
the build is killed with SIGKILL it cannot stop them, and the fork server
stays up for as long as a worker holds its "alive" pipe, so without help
both would run on (and hold their memory) after the build died. Each asks
the kernel to send it SIGKILL when its parent dies (prctl PR_SET_PDEATHSIG):
the fork server when the build dies (`data_prep.forkserver_preload`), each
worker when the fork server dies (`data_prep.writer.init_worker`).

Shards are published (renamed to their real names) only by the build itself,
so whatever a worker does in the instant before its SIGKILL lands leaves at
most a `.tmp` file, which the next run removes.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys

_PR_SET_PDEATHSIG = 1


def die_with_parent(parent: int | None = None) -> bool:
    """Asks for SIGKILL when this process's parent dies, and exits at once if
    the parent (`parent`, default the current one) is already gone. Returns
    whether the kernel took the request."""
    parent = os.getppid() if parent is None else parent
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

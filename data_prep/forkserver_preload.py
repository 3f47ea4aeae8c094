"""The preload of the build's fork server (`data_prep.pool` starts it inside
`lifeline.announced()` on the lasting thread). Imported anywhere else (a
worker, an ordinary process) it only imports the writer.

It makes the fork server die with the build that started it
(`data_prep.lifeline`) and ignore Ctrl-C, first thing, and then imports what
every worker needs (the shard writer: numpy, OpenCV, Pillow; no TensorFlow)
once, in the fork server, so each worker forked from it starts warm. In the
other order a build killed during those imports left the fork server (and
the worker it went on to fork for the build's queued request) running for
good.
"""

from __future__ import annotations

import os
import signal

from data_prep import lifeline  # light: no TensorFlow

if lifeline.in_forkserver_preload():
    lifeline.die_with_build()
    lifeline.FORKSERVER_PID = os.getpid()  # inherited by every worker it forks
    # Ctrl-C reaches the whole process group: the build handles it. Ignored
    # from here on, it interrupts neither these imports (multiprocessing
    # ignores it only after the preload) nor a worker, which inherits this.
    signal.signal(signal.SIGINT, signal.SIG_IGN)

from data_prep import writer  # noqa: E402,F401 - the writer is the preload

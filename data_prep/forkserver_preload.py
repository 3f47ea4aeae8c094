"""The fork server's preload list: import it only through
`set_forkserver_preload`.

It imports what every worker needs (TensorFlow, through the shard writer)
once, in the fork server, so each worker forked from it starts warm; and it
makes the fork server die with the build that started it (`data_prep.lifeline`).
"""

from __future__ import annotations

import os

from data_prep import lifeline, writer  # noqa: F401 - the writer is the preload

# The fork server's pid, inherited by every worker it forks: a worker that
# finds another parent knows the fork server, hence the build, is gone.
FORKSERVER_PID: int | None = None

if lifeline.in_forkserver_preload():
    lifeline.die_with_parent()
    FORKSERVER_PID = os.getpid()

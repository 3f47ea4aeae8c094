"""`python tests/forked_processes.py SPEC_JSON`: imports what launch.train
needs (TensorFlow and Keras: about 5 CPU-s) once, runs no TensorFlow op, then
forks one real process per entry of SPEC_JSON, a list of

    {"argv": ["-m", "launch.train", ...] or ["path/to/script.py", ...],
     "env": {...}, "stdout": path, "stderr": path}

each running its command line as `python -m ...` / `python script.py` would
(runpy), with its own environment additions (TF_CONFIG: read when the
strategy is made) and output files, and exiting as that process would
(its exit status, atexit handlers, signals sent to its own pid). Prints the
children's exit codes as one JSON list, in SPEC order."""

import json
import os
import runpy
import sys

import keras  # noqa: F401  (imported before the fork: the point of this script)
import tensorflow  # noqa: F401

from alexnet_tf.training import loop  # noqa: F401


def _run(entry: dict) -> None:
    """The child: never returns (SystemExit ends it as it would end a process)."""
    for fd, name in ((1, "stdout"), (2, "stderr")):
        out = os.open(entry[name], os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
        os.dup2(out, fd)
        os.close(out)
    os.environ.update(entry["env"])
    argv = entry["argv"]
    if argv[0] == "-m":
        sys.argv = [argv[1], *argv[2:]]
        sys.path[0] = os.getcwd()  # as `python -m` puts it
        runpy.run_module(argv[1], run_name="__main__", alter_sys=True)
    else:
        sys.argv = list(argv)
        sys.path[0] = os.path.dirname(os.path.abspath(argv[0]))
        runpy.run_path(argv[0], run_name="__main__")
    sys.exit(0)


def main() -> None:
    children = []
    for entry in json.loads(sys.argv[1]):
        pid = os.fork()
        if pid == 0:
            _run(entry)
        children.append(pid)
    print(json.dumps([os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) for pid in children]))


if __name__ == "__main__":
    main()

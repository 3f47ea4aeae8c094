"""Data prep builds held part-way, run as `python -m data_prep.build_tfrecords`
would, except that each process that converts images (the build itself
with one worker, else each worker) converts $BUILD_PROBE_HOLD_AFTER of them,
then holds every further one until the file $BUILD_PROBE_GATE exists
(never, if unset). A test sees a first shard published and acts (Ctrl-C,
kill -9, a second build) while the build is certainly part-way: tiny
images, no race against the build's end.

`python tests/build_probe.py --serve` is a warm server (tests/build_processes.py
drives it): it imports the build's modules once, then
for each JSON line on stdin ({"flags", "env", "stderr"}) forks a build in a
session of its own that runs the command line without importing them again,
answers {"pid"}, and {"exit", "code"} when that build ends. The fork server
each build starts is a fresh interpreter, as in any build. A request with
"call" instead of "flags" runs a function of a tests module in the forked
process, its stdout to a file (tests/startup_kill_probe.py's harness).

Workers run this file's top level too (multiprocessing imports the main
script as __mp_main__ in each), so they hold alike.
"""

import importlib
import json
import os
import runpy
import signal
import sys
import threading
import time
import traceback

from data_prep import convert

_converted = 0
_real_convert = convert.convert


def _held_convert(*args, **kwargs):
    global _converted
    # Read at each call: a build forked by the server sets them after this
    # import. Unset: no hold (a process the server forks for `call`).
    hold_after = os.environ.get("BUILD_PROBE_HOLD_AFTER")
    if hold_after is not None and _converted >= int(hold_after):
        while not (os.environ.get("BUILD_PROBE_GATE")
                   and os.path.exists(os.environ["BUILD_PROBE_GATE"])):
            time.sleep(0.02)  # Ctrl-C reaches the build here (workers ignore it)
    _converted += 1
    return _real_convert(*args, **kwargs)


convert.convert = _held_convert


def _run_build(flags) -> None:
    sys.argv = ["data_prep/build_tfrecords.py", *flags]
    # Not alter_sys: __main__ stays this file, which the workers import.
    runpy.run_module("data_prep.build_tfrecords", run_name="__main__")


def _forked_build(request: dict) -> None:
    """The child: a session of its own (Ctrl-C to its group reaches it
    alone), stdout to /dev/null, stderr to the file asked for; never returns."""
    code = 1
    try:
        os.setsid()
        os.environ.update(request["env"])
        devnull = os.open(os.devnull, os.O_RDWR)
        os.dup2(devnull, 0)
        os.dup2(devnull, 1)
        err = os.open(request["stderr"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
        os.dup2(err, 2)
        if "call" in request:  # {"call": [module, function, args], "stdout": file}
            module, function, args = request["call"]
            out = os.open(request["stdout"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
            os.dup2(out, 1)
            getattr(importlib.import_module(module), function)(*args)
            sys.stdout.flush()
        else:
            _run_build(request["flags"])
        code = 0
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    except BaseException:  # noqa: BLE001 - shown to the test in the build's stderr
        traceback.print_exc()
    finally:
        sys.stderr.flush()
        os._exit(code)  # never back into the server's loop


def _serve() -> None:
    # SIGINT as a terminal's foreground job has it (each build inherits it):
    # pytest may have been started with it ignored, which exec keeps.
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
    signal.signal(signal.SIGINT, signal.default_int_handler)
    import data_prep.build_tfrecords  # noqa: F401 - once, before the builds are forked

    lock = threading.Lock()

    def say(message: dict) -> None:
        with lock:
            print(json.dumps(message), flush=True)

    def reap(pid: int) -> None:
        status = os.waitpid(pid, 0)[1]
        say({"exit": pid, "code": os.waitstatus_to_exitcode(status)})

    say({"ready": os.getpid()})
    for line in sys.stdin:
        with lock:  # no thread mid-print while forking: the child prints too
            pid = os.fork()
        if pid == 0:
            _forked_build(json.loads(line))
        say({"pid": pid})
        threading.Thread(target=reap, args=(pid,), daemon=True).start()


if __name__ == "__main__":
    if sys.argv[1:] == ["--serve"]:
        _serve()
    else:
        _run_build(sys.argv[1:])

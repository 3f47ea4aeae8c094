"""What the user's terminal shows: the project's own lines, and one line per
user error.

- The project's loggers (`alexnet_tf`, `data_prep`, `launch`, `experiments`)
  print plain lines (warnings prefixed "warning:") to stderr.
- absl's and TensorFlow's Python INFO records are hidden unless the user
  passes `--verbosity=0` (or higher); TensorFlow's C++ lines stay hidden
  unless TF_CPP_MIN_LOG_LEVEL is set (see `alexnet_tf/cli/__init__.py`).
- Some of TensorFlow's C++ lines ignore TF_CPP_MIN_LOG_LEVEL (the oneDNN
  notice, logged through absl before its logging is initialized), so
  `quiet_native_logs()` passes the process's stderr through a small filter
  process that drops C++ INFO/WARNING lines in glog format and forwards
  everything else unchanged.
- `run(main)` is `absl.app.run` that turns a user's mistake (a bad setting,
  a missing or wrong file or folder) into `<tool>: error: <message>` on
  stderr and exit status 2, instead of a traceback; a run stopped by a
  signal after saving (`alexnet_tf.errors.Stopped`) into one line and its
  exit status.
"""

from __future__ import annotations

import atexit
import logging
import os
import subprocess
import sys
from typing import Callable

from absl import app, flags
from absl import logging as absl_logging

from alexnet_tf import cli
from alexnet_tf.errors import InputError, Stopped

PROJECT_LOGGERS = ("alexnet_tf", "data_prep", "launch", "experiments")
USAGE_EXIT_CODE = 2


class _PlainFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        if record.levelno >= logging.WARNING:
            return f"{record.levelname.lower()}: {message}"
        return message


# C++ INFO/WARNING lines in glog format ("I1201 06:41:45.099955  123 port.cc:12]
# ...", "W0000 00:00:..."), and absl's notice before the first of them. Python
# records (absl's glog format names a .py file) pass.
# Two ERROR-level lines are notices, not errors: libjpeg's warnings about a
# damaged file (the project's own line names the file and what failed), and
# oneDNN's note that float16 runs without AVX-512 kernels.
_NATIVE_LINE = (rb"^(WARNING: All log messages before absl::InitializeLog\(\) is called"
                rb"|[IW]\d{4} \d\d:\d\d:\d+\.\d+ +\d+ [^ \]]+\.(cc|h|cpp):\d+\] "
                rb"|E\d{4} \d\d:\d\d:\d+\.\d+ +\d+ (jpeg_mem\.cc:\d+\] "
                rb"|util\.cc:\d+\] oneDNN supports DT_HALF only))")
# The filter must outlive the launcher to forward its last lines (it ends when
# every writer has closed the pipe), so the terminal's signals must not stop
# it: it runs in a session of its own, out of the launcher's process group
# that Ctrl-C reaches (from its first instant: ignoring SIGINT only once its
# Python has started left ~50 ms in which a Ctrl-C killed it, and every line
# after with it), and ignores them should they come another way.
_FILTER = f"""
import re, signal, sys
for name in ("SIGINT", "SIGTERM", "SIGHUP", "SIGQUIT"):
    signal.signal(getattr(signal, name), signal.SIG_IGN)
drop = re.compile({_NATIVE_LINE!r})
out = sys.stdout.buffer
for line in sys.stdin.buffer:
    if not drop.match(line):
        out.write(line)
        out.flush()
"""
_filter_process = None


def wants_native_logs() -> bool:
    """The user asked for TensorFlow's own lines: --verbosity >= 0 on the
    command line, or TF_CPP_MIN_LOG_LEVEL set in the environment."""
    if cli.USER_SET_TF_LOG_LEVEL:
        return True
    for i, arg in enumerate(sys.argv[1:], 1):
        value = None
        if arg.startswith(("--verbosity=", "-v=", "--v=")):
            value = arg.split("=", 1)[1]
        elif arg in ("--verbosity", "-v", "--v") and i + 1 < len(sys.argv):
            value = sys.argv[i + 1]
        if value is not None:
            try:
                return int(value) >= 0
            except ValueError:
                return False
    return False


def quiet_native_logs() -> None:
    """Routes fd 2 through the filter process (once; call before TensorFlow
    loads). At exit the original stderr is restored and the filter drained."""
    global _filter_process
    if _filter_process is not None or wants_native_logs():
        return
    sys.stderr.flush()
    original = os.dup(2)
    read_end, write_end = os.pipe()
    _filter_process = subprocess.Popen(
        [sys.executable, "-S", "-c", _FILTER], stdin=read_end, stdout=original,
        close_fds=True, start_new_session=True)
    os.close(read_end)
    os.dup2(write_end, 2)
    os.close(write_end)

    def restore():
        sys.stderr.flush()
        os.dup2(original, 2)  # our end of the pipe closes: the filter sees EOF
        try:
            _filter_process.wait(timeout=5)
        except subprocess.TimeoutExpired:  # a worker still holds the pipe
            pass
    atexit.register(restore)


def configure_logging(verbosity: int | None = None) -> None:
    """Project lines plain on stderr; other libraries' INFO hidden unless asked."""
    flag = flags.FLAGS["verbosity"] if "verbosity" in flags.FLAGS else None
    asked = verbosity if verbosity is not None else (
        flag.value if flag is not None and flag.present else None)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_PlainFormatter())
    for name in PROJECT_LOGGERS:
        logger = logging.getLogger(name)
        logger.handlers[:] = [handler]
        logger.propagate = False
        logger.setLevel(logging.DEBUG if asked and asked > 0 else logging.INFO)
    if asked is None or asked < 0:
        absl_logging.set_verbosity(absl_logging.WARNING)
        logging.getLogger("tensorflow").setLevel(logging.WARNING)
    else:
        absl_logging.set_verbosity(asked)


def program_name() -> str:
    main = sys.modules.get("__main__")
    spec = getattr(main, "__spec__", None)
    return spec.name if spec and spec.name else os.path.basename(sys.argv[0])


def usage_error(message: str) -> None:
    """Prints `<tool>: error: <message>` and exits with status 2."""
    print(f"{program_name()}: error: {message}", file=sys.stderr, flush=True)
    sys.exit(USAGE_EXIT_CODE)


def flag_message(error: Exception) -> str:
    """A library error in the launcher's words: config fields are flags here."""
    field = getattr(error, "field", None)
    if field is not None:
        return f"--{field}={_flag_value(error.value)}: {error.why}"
    return str(error)


def _flag_value(value) -> str:
    if isinstance(value, (list, tuple)):
        return ",".join(str(v) for v in value)
    return str(value)


def run(main: Callable, *, takes_arguments: bool = False) -> None:
    """`app.run(main)` with the quiet terminal and one-line user errors.

    Arguments after the flags are refused unless `takes_arguments` (file
    names, for launch.predict); main's return value is the exit status.

    InputError (bad settings, incomplete records, wrong files) and the
    file-system errors of paths the user gave are the user's to fix; other
    exceptions are bugs and keep their traceback.
    """
    caught = (InputError, FileNotFoundError, NotADirectoryError, IsADirectoryError,
              PermissionError, FileExistsError)

    quiet_native_logs()

    def wrapped(argv):
        configure_logging()
        if len(argv) > 1 and not takes_arguments:
            usage_error(f"unexpected arguments: {' '.join(argv[1:])}")
        try:
            return main(argv)
        except caught as e:
            usage_error(flag_message(e))
        except Stopped as e:  # e.g. training saved and stopped on SIGTERM
            print(f"{program_name()}: {e}", file=sys.stderr, flush=True)
            sys.exit(e.exit_code)

    app.run(wrapped, flags_parser=_parse_flags)


def _parse_flags(argv):
    """absl's parsing, with its errors (unknown flag, bad value) as one line."""
    try:
        return flags.FLAGS(argv)
    except flags.Error as e:
        usage_error(str(e))

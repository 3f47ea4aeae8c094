"""Runs a launcher (`python -m launch.X ...`, `python -m data_prep.X ...`) in
the test's own process: the same flags, one-line errors, printed lines and
exit status, without a second TensorFlow start (about 5 CPU seconds each).

Use it wherever the launcher's behaviour is the subject. What it does not
run, and the tests that keep a real process for it:

- the native-log filter in front of fd 2 (`terminal.quiet_native_logs`):
  test_quiet_terminal.py and test_terminal.py;
- signals, kills, several processes on one folder, environment variables
  read at import: test_preemption.py, test_run_lock.py,
  test_data_prep_processes.py, test_data_prep_threads.py and the other
  *_processes tests.

    result = run_launcher("launch.export", "--model_dir=...", cwd=tmp_path)
    assert result.returncode == 2 and result.stderr == "launch.export: error: ...\\n"
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import logging
import os
import runpy
import signal
import sys
import warnings

from absl import flags
from absl import logging as absl_logging

from alexnet_tf.cli import terminal

_SIGNALS = (signal.SIGINT, signal.SIGTERM)


@dataclasses.dataclass
class Result:
    """What `subprocess.run(..., capture_output=True, text=True)` returns."""
    args: list
    returncode: int
    stdout: str
    stderr: str


def _exit_status(code) -> tuple[int, str]:
    """sys.exit(code) as a process's exit status (and what Python prints)."""
    if code is None:
        return 0, ""
    if isinstance(code, int):
        return code, ""
    return 1, f"{code}\n"


@contextlib.contextmanager
def _process_state(argv: list[str], cwd):
    """Everything a launcher may change for the rest of its process, put back
    when it ends: argv, working folder, flags it defines, loggers, absl's
    verbosity, signal handlers."""
    defined = set(flags.FLAGS)
    saved_argv, saved_cwd = sys.argv[:], os.getcwd()
    loggers = {name: logging.getLogger(name) for name in
               (*terminal.PROJECT_LOGGERS, "tensorflow")}
    logger_state = {name: (lg.handlers[:], lg.propagate, lg.level) for name, lg in loggers.items()}
    verbosity = absl_logging.get_verbosity()
    handlers = {number: signal.getsignal(number) for number in _SIGNALS}
    quiet = terminal.quiet_native_logs
    terminal.quiet_native_logs = lambda: None  # no filter process in front of pytest's fd 2
    flags.FLAGS.unparse_flags()
    sys.argv = argv
    if cwd is not None:
        os.chdir(cwd)
    try:
        yield
    finally:
        terminal.quiet_native_logs = quiet
        os.chdir(saved_cwd)
        sys.argv = saved_argv
        for name in set(flags.FLAGS) - defined:
            delattr(flags.FLAGS, name)
        flags.FLAGS.unparse_flags()
        for name, (handlers_, propagate, level) in logger_state.items():
            loggers[name].handlers[:] = handlers_
            loggers[name].propagate = propagate
            loggers[name].setLevel(level)
        absl_logging.set_verbosity(verbosity)
        for number, handler in handlers.items():
            signal.signal(number, handler)


def run_launcher(module: str, *args, cwd=None) -> Result:
    """`python -m <module> <args>` in this process; returns its exit status
    and what it printed. An exception the launcher lets through is a bug
    and propagates to the test, traceback and all."""
    argv = [module.replace(".", "/") + ".py", *map(os.fspath, args)]
    stdout, stderr = io.StringIO(), io.StringIO()
    with _process_state(argv, cwd), contextlib.redirect_stdout(stdout), \
            contextlib.redirect_stderr(stderr):
        try:
            with warnings.catch_warnings():
                # A test that imported the module (data_prep's do) makes runpy
                # warn that __main__ is a second copy: as `python -m` runs it.
                warnings.filterwarnings("ignore", r"'.*' found in sys\.modules",
                                        RuntimeWarning)
                runpy.run_module(module, run_name="__main__", alter_sys=True)
            code = 0
        except SystemExit as e:
            code, printed = _exit_status(e.code)
            stderr.write(printed)
    return Result([sys.executable, "-m", module, *argv[1:]], code,
                  stdout.getvalue(), stderr.getvalue())

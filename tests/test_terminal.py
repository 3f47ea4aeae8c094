"""alexnet_tf.cli.terminal's stderr filter: it drops TensorFlow's C++ INFO/WARNING
lines and nothing else, a Ctrl-C still shows the launcher's own lines, and
--verbosity=0 turns the quieting off."""

import os
import signal
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Written to fd 2 after the filter starts: as TF's C++ code, absl's Python
# handler and the project would write them.
DRIVER = r"""
import os, signal, sys, time
sys.argv = ["driver"]
# SIGINT as a terminal's foreground job has it: unblocked, Python's handler.
# This test's process may have it ignored (a run started in the background
# by a shell without job control), and exec keeps an ignored signal ignored.
signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
signal.signal(signal.SIGINT, signal.default_int_handler)
from alexnet_tf.cli import terminal
terminal.quiet_native_logs()
lines = [
    b"WARNING: All log messages before absl::InitializeLog() is called are written to STDERR\n",
    b"I0000 00:00:1796115690.998995   16319 port.cc:153] oneDNN custom operations are on.\n",
    b"W1201 10:12:49.600000  1234 cpu_feature_guard.cc:210] This TensorFlow binary\n",
    b"E0000 00:00:1796115690.998995   16319 cuda_dnn.cc:8] a C++ error stays\n",
    b"E0000 00:00:1796125429.032420    6665 jpeg_mem.cc:331] Premature end of JPEG data\n",
    b"E0000 00:00:1796125429.032420    6665 util.cc:131] oneDNN supports DT_HALF only on "
    b"platforms with AVX-512. Falling back to the default Eigen-based implementation\n",
    b"W1201 10:12:49.612345 139746 tmain.py:51] a Python warning stays\n",
    b"launch.train: error: the project's line stays\n",
    bytes(range(1, 10)) + b"\xff junk stays\n",
]
for line in lines:
    os.write(2, line)
if os.environ.get("DRIVER_SLEEP"):
    try:
        print("ready", flush=True)
        # Short waits: a Ctrl-C handled just before a wait starts (CPython
        # notices it only when the wait returns) is seen within 0.1 s.
        while True:
            time.sleep(0.1)
    except KeyboardInterrupt:  # what a launcher prints on Ctrl-C must arrive
        os.write(2, b"the driver saw Ctrl-C\n")
        raise
os.write(2, b"last line without a newline")
"""


def _env(**extra):
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    return {**env, **extra}


def test_the_filter_drops_only_cpp_info_and_warning_lines():
    result = subprocess.run([sys.executable, "-c", DRIVER], cwd=REPO, env=_env(),
                            capture_output=True, timeout=60)
    err = result.stderr
    assert b"oneDNN" not in err and b"cpu_feature_guard" not in err
    assert b"InitializeLog" not in err
    assert b"Premature end of JPEG" not in err and b"DT_HALF" not in err
    for kept in (b"a C++ error stays", b"a Python warning stays", b"the project's line stays",
                 b"\xff junk stays", b"last line without a newline"):
        assert kept in err, (kept, err)


def test_tf_cpp_min_log_level_set_by_the_user_turns_the_filter_off():
    result = subprocess.run([sys.executable, "-c", DRIVER], cwd=REPO,
                            env=_env(TF_CPP_MIN_LOG_LEVEL="0"), capture_output=True, timeout=60)
    assert b"oneDNN custom operations" in result.stderr


def test_ctrl_c_to_the_process_group_still_shows_the_launchers_traceback():
    process = subprocess.Popen([sys.executable, "-c", DRIVER], cwd=REPO,
                               env=_env(DRIVER_SLEEP="1"), stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, start_new_session=True)
    assert process.stdout.readline() == b"ready\n"
    # At once, as a terminal's Ctrl-C to the launcher's process group: the
    # filter may still be starting (it is not in that group, so it lives on).
    os.killpg(process.pid, signal.SIGINT)
    try:
        _, err = process.communicate(timeout=30)
    except subprocess.TimeoutExpired as e:
        os.killpg(process.pid, signal.SIGKILL)
        process.communicate()
        raise AssertionError(f"no exit 30 s after SIGINT; stderr: {e.stderr}")
    assert process.returncode != 0
    assert b"the driver saw Ctrl-C" in err and b"KeyboardInterrupt" in err, err
    assert b"the project's line stays" in err


# A launcher (terminal.run) whose main logs what TensorFlow would: a C++ line
# on fd 2, an absl INFO record and an INFO record of the "tensorflow" logger.
# The test triggers every line itself, so it does not depend on what this
# TensorFlow build happens to print.
LAUNCHER = r"""
import logging, os
from absl import logging as absl_logging
from alexnet_tf.cli import terminal

def main(argv):
    os.write(2, b"I0000 00:00:1796115690.998995   16319 port.cc:153] native info line\n")
    absl_logging.info("absl info line")
    logging.getLogger("tensorflow").info("tensorflow info line")
    logging.getLogger("alexnet_tf").info("the project's line")

terminal.run(main)
"""
TF_LINES = (b"native info line", b"absl info line", b"tensorflow info line")


def test_verbosity_0_shows_tensorflows_lines_again():
    def launch(*flags):
        result = subprocess.run([sys.executable, "-c", LAUNCHER, *flags], cwd=REPO,
                                env=_env(), capture_output=True, timeout=60)
        assert result.returncode == 0, result.stderr
        return result.stderr

    quiet, verbose = launch(), launch("--verbosity=0")
    for line in TF_LINES:
        assert line not in quiet, quiet
        assert line in verbose, (line, verbose)
    assert b"the project's line" in quiet and b"the project's line" in verbose

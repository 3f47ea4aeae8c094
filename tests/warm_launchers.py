"""Launcher processes forked from one warm process, for the tests whose
subject is the process boundary (a kill, a signal, an exit status) of a
program that loads TensorFlow: its import (~5 CPU-s) is paid once per test
module, not once per process.

`python tests/warm_launchers.py MODULE...` imports the MODULEs (before any
TensorFlow op or thread runs: forking is safe there), then for each JSON
line on stdin ({"module", "argv", "env", "log", "err"}) forks a process
that, in a session of its own, its stdout to the log file and its stderr
to the "err" file (or the log too, if null), runs the
command line as `python -m MODULE ARGV...` would (runpy, run_name="__main__")
and exits as that program does (atexit handlers and all); it answers
{"pid"}, and {"exit", "code"} when that process ends. `WarmLaunchers`
drives it (tests/build_probe.py is the same for data prep's builds, which
need no TensorFlow).
"""

import contextlib
import importlib
import io
import json
import os
import runpy
import signal
import subprocess
import sys
import threading

def _run_forked(request: dict) -> None:
    """The child: ends the process with the program's own exit (never back
    into the server's loop)."""
    os.setsid()
    os.environ.update(request["env"])
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    for fd, path in ((1, request["log"]), (2, request["err"] or request["log"])):
        out = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
        os.dup2(out, fd)
        os.close(out)
    os.close(devnull)
    sys.argv = [request["module"], *request["argv"]]
    # Its SystemExit or traceback ends the interpreter as in `python -m`.
    runpy.run_module(request["module"], run_name="__main__", alter_sys=True)


class _ChildExit(BaseException):
    """Carries the child out of the server's loop to the top level."""


def _serve(modules) -> None:
    for name in modules:
        importlib.import_module(name)
    lock = threading.Lock()

    def say(message: dict) -> None:
        with lock:
            print(json.dumps(message), flush=True)

    def reap(pid: int) -> None:
        say({"exit": pid, "code": os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])})

    say({"ready": os.getpid()})
    for line in sys.stdin:
        with lock:  # no thread mid-print while forking
            pid = os.fork()
        if pid == 0:
            raise _ChildExit(json.loads(line))
        say({"pid": pid})
        threading.Thread(target=reap, args=(pid,), daemon=True).start()


class Forked:
    """A process forked by a warm server (tests/build_probe.py: a build or a
    `call`; tests/warm_launchers.py: a launcher): its pid leads a process
    group and session of its own; `wait` and `poll` answer as a Popen's,
    `stderr` is what it wrote there so far. `server.exit_code(pid, timeout)`
    gives its exit status once the server reaped it."""

    def __init__(self, server, pid: int, stderr_path: str):
        self.pid, self._server, self._stderr_path = pid, server, stderr_path

    def poll(self):
        return self._server.exit_code(self.pid, timeout=0)

    def wait(self, timeout):
        code = self._server.exit_code(self.pid, timeout)
        if code is None:
            raise subprocess.TimeoutExpired(f"forked process {self.pid}", timeout)
        return code

    @property
    def stderr(self) -> io.StringIO:
        with open(self._stderr_path) as f:
            return io.StringIO(f.read())


class Launched(Forked):
    """A forked launcher (`Forked`): `send_signal` as a Popen's; `output()` its
    log so far (its stdout, and its stderr unless started with
    `separate_stderr`: then `stderr`)."""

    def __init__(self, launchers: "WarmLaunchers", pid: int, log: str, err: str | None):
        super().__init__(launchers, pid, err or log)
        self.log = log

    def send_signal(self, number) -> None:
        os.kill(self.pid, number)

    def output(self) -> str:
        with open(self.log, errors="replace") as f:
            return f.read()


class WarmLaunchers:
    """The warm process (preloading `modules`) and what it forked; `close()`
    kills each forked session and the server, whatever they are doing."""

    def __init__(self, folder, modules, cwd, env):
        self._folder, self._count, self._pids = str(folder), 0, []
        errors = os.path.join(self._folder, "server.stderr")  # TensorFlow's notices at import
        with open(errors, "w") as stderr:
            self._process = subprocess.Popen(
                [sys.executable, os.path.abspath(__file__), *modules], cwd=cwd, env=env,
                start_new_session=True, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                stderr=stderr, text=True)
        self._exits, self._answers = {}, []
        self._changed = threading.Condition()
        threading.Thread(target=self._read, daemon=True).start()
        if not self._answer(timeout=300):
            self.close()
            with open(errors) as stderr:
                raise AssertionError(f"the warm launcher server did not start:\n{stderr.read()}")

    def _read(self):
        for line in self._process.stdout:
            message = json.loads(line)
            with self._changed:
                if "exit" in message:
                    self._exits[message["exit"]] = message["code"]
                else:
                    self._answers.append(message.get("pid", message.get("ready")))
                self._changed.notify_all()
        with self._changed:
            self._answers.append(None)  # the server ended: no answer will come
            self._changed.notify_all()

    def _answer(self, timeout):
        with self._changed:
            self._changed.wait_for(lambda: self._answers, timeout)
            return self._answers.pop(0) if self._answers else None

    def start(self, module: str, *argv: str, env=None, name=None,
              separate_stderr: bool = False) -> Launched:
        """`python -m module argv...`, forked warm, in the server's working
        folder; stdout and stderr to <folder>/<name>.log (stderr to
        <name>.err if `separate_stderr`)."""
        self._count += 1
        base = os.path.join(self._folder, name or f"process{self._count}")
        log, err = f"{base}.log", (f"{base}.err" if separate_stderr else None)
        for path in filter(None, (log, err)):
            open(path, "w").close()  # there before the process starts: readable at once
        self._process.stdin.write(json.dumps(
            {"module": module, "argv": list(argv), "env": env or {}, "log": log,
             "err": err}) + "\n")
        self._process.stdin.flush()
        pid = self._answer(timeout=60)
        assert pid, "the warm launcher server ended"
        self._pids.append(pid)
        return Launched(self, pid, log, err)

    def exit_code(self, pid, timeout):
        with self._changed:
            self._changed.wait_for(lambda: pid in self._exits, timeout)
            return self._exits.get(pid)

    def close(self):
        with self._changed:  # not the ended ones: their pids may be another's by now
            left = [pid for pid in self._pids if pid not in self._exits]
        for pid in left:
            for kill in (os.killpg, os.kill):  # its session; itself, if not leading one yet
                with contextlib.suppress(ProcessLookupError):
                    kill(pid, signal.SIGKILL)
        for pid in left:  # reaped by the server (else left to init, a zombie)
            self.exit_code(pid, timeout=30)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self._process.pid, signal.SIGKILL)
        self._process.wait(timeout=30)
        with contextlib.suppress(BrokenPipeError):
            self._process.stdin.close()

if __name__ == "__main__":
    sys.path[0] = os.getcwd()  # the modules as `python -m` finds them (not tests/)
    try:
        _serve(sys.argv[1:])
    except _ChildExit as child:
        request = child.args[0]
    else:
        sys.exit(0)
    _run_forked(request)  # outside the except: a traceback shows the program's alone

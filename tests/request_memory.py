"""Peak memory of single serving requests, measured in a child process.

    python tests/request_memory.py <saved_model_dir> <kill_mb> <signature>:<image file>[*N] ...

(for classify the image is wrapped in a tf.Example; `classify+raw:<file>` sends
the file's bytes as the serialized Example itself)

The child loads the SavedModel, answers a warm-up request with a normal
photo, then for each case (one image, or with `*N` a batch of N copies
of it): resets the kernel's peak-RSS counter
(`/proc/self/clear_refs`), runs the signature once, and reads the peak
(`VmHWM`) back, with the CPU seconds (all threads) the call took. A
watchdog thread polls `VmRSS` every 2 ms and kills the child (exit 3)
when it grows too far, so a regression fails the
measurement instead of exhausting the machine. After every case the warm-up
request is repeated and must give the same answer.

It prints a JSON line per case as it is done ({"done": case}), then one:
{"cases": [{"case", "peak_mb", "cpu_s", "error"}, ...],
"answers_after": bool, "peak_above_start_mb"}: each case's peak above its
own starting level, and the highest peak of all above the level before the
first case (freed memory the allocator keeps would hide a later case's
growth from the first figure, never from the second). The watchdog kills
the child once it grows `kill_mb` above that first level, printing
{"killed": case, "rss_mb": ...}. `measure` runs it and parses that line;
tests and benchmarks/bench_serving.py use it.

    python tests/request_memory.py <saved_model_dir> -

reads one batch a line from stdin ({"kill_mb": ..., "cases": [...]}) and
answers each as above, in one process: `MemoryChild` runs many batches
for the price of one TensorFlow start (the tests' watchdog check ends it
with its last batch). Each signature answers a normal photo before the
first batch that uses it, so no case pays for building a signature's graph.
"""

from __future__ import annotations

import json
import os
import re
import queue
import subprocess
import sys
import tempfile
import threading
import time

CHILD = os.path.abspath(__file__)
KILLED = 3
RAW = "+raw"  # "classify+raw:file": the file is a serialized tf.Example, sent as it is


def _status_kb(field: str) -> int:
    with open("/proc/self/status") as f:
        return int(re.search(rf"^{field}:\s+(\d+) kB", f.read(), re.M).group(1))


def _reset_peak() -> None:
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # "5": reset the peak RSS (VmHWM) to the current RSS


class _Watchdog(threading.Thread):
    """Kills the process when its peak RSS passes `limit_kb` (set per
    batch). The peak (VmHWM), not the current RSS: a decode's spike can come
    and go between two polls when the machine is busy."""

    def __init__(self):
        super().__init__(daemon=True)
        self.limit_kb, self.case = None, None

    def run(self):
        while True:
            if self.limit_kb is not None:
                rss = _status_kb("VmHWM")
                if rss > self.limit_kb:
                    print(json.dumps({"killed": self.case, "rss_mb": rss / 1024}), flush=True)
                    os._exit(KILLED)
            time.sleep(0.002)


def _child(saved_model: str, batches) -> None:
    """Answers each (kill_mb, cases) of `batches` in turn (see the module
    docstring)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    # Without oneDNN's CPU allocator, which keeps freed memory in a pool of
    # its own (malloc_trim cannot hand it back): a later case or batch would
    # grow into that pool unseen (with it, a 4,000 x 4,000 PNG decoded after
    # the extreme images raised the peak by 0.3 MB, not 48).
    os.environ["TF_ENABLE_ONEDNN_OPTS"] = "0"
    import numpy as np
    import tensorflow as tf
    sys.path.insert(0, os.path.dirname(os.path.dirname(CHILD)))
    from alexnet_tf.serving import export

    loaded = tf.saved_model.load(saved_model)

    def call(signature, data):
        fn = loaded.signatures[signature]
        if signature == export.CLASSIFY:
            return fn(inputs=tf.constant(data))
        return fn(image_bytes=tf.constant(data))

    normal = [export.warmup_image_bytes()]
    reference = call(export.SERVING_DEFAULT, normal)["probabilities"].numpy()
    warm = {export.SERVING_DEFAULT}
    watchdog = _Watchdog()
    watchdog.start()
    for kill_mb, cases in batches:
        # A signature's first call builds its graph (seconds): done before
        # the measuring, for each signature the batch uses.
        for name in {case.split(":", 1)[0].partition(RAW)[0] for case in cases} - warm:
            call(name, [_example(normal[0])] if name == export.CLASSIFY else normal)
            warm.add(name)
        results, answers = [], True
        _reset_peak()  # the watchdog reads the peak: start it at the level
        base = _status_kb("VmRSS")  # the level before the batch's first case
        watchdog.limit_kb = base + kill_mb * 1024
        highest = base
        for case in cases:
            watchdog.case = case
            signature, path = case.split(":", 1)
            signature, raw, _ = signature.partition(RAW)
            path, _, copies = path.partition("*")
            with open(path, "rb") as f:
                data = f.read()
            if signature == export.CLASSIFY and not raw:
                data = _example(data)
            batch = [data] * int(copies or 1)
            _reset_peak()
            before = _status_kb("VmRSS")
            cpu_before = _cpu_seconds()
            error = None
            try:
                out = call(signature, batch)
                next(iter(out.values())).numpy()
            except tf.errors.OpError as e:
                error = f"{type(e).__name__}: {_reason(e.message)[:300]}"
            cpu = _cpu_seconds() - cpu_before
            peak = _status_kb("VmHWM")
            highest = max(highest, peak)
            del batch, data
            again = call(export.SERVING_DEFAULT, normal)["probabilities"].numpy()
            _release_freed_memory()  # so the next case's peak starts from a true level
            answers = answers and bool(np.array_equal(again, reference))
            results.append({"case": case, "peak_mb": (peak - before) / 1024, "cpu_s": cpu,
                            "error": error})
            print(json.dumps({"done": results[-1]}), flush=True)  # kept if a later case is killed
        watchdog.limit_kb = None
        print(json.dumps({"cases": results, "answers_after": answers,
                          "peak_above_start_mb": (highest - base) / 1024}), flush=True)


def _release_freed_memory() -> None:
    """Hands memory freed by the last case back to the kernel (glibc's
    malloc_trim): otherwise the allocator keeps it, and a later case could
    grow into it without raising the peak RSS that is measured."""
    import ctypes
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def _cpu_seconds() -> float:
    """User + system CPU time of the whole process (all of TF's threads)."""
    times = os.times()
    return times.user + times.system


def _reason(message: str) -> str:
    framing = ("Graph execution error", "Detected at node", "<stack traces", "[[")
    lines = [l.strip() for l in message.splitlines()]
    return " ".join(l for l in lines if l and not l.startswith(framing))


def _example(image: bytes) -> bytes:
    from alexnet_tf.data import records
    return records.serialize(records.ImageRecord(image, 1, 1, 0, "", "", ""))


class MemoryChild:
    """One child that answers many batches (a TensorFlow start, a model load
    and each signature's first call, paid once): `measure(cases, kill_mb)`
    sends a batch and returns its answer, with "returncode" (None while the
    child lives on). A killed child is started again by the next batch."""

    def __init__(self, saved_model: str):
        self.saved_model = saved_model
        self.process = None

    def measure(self, cases: list[tuple[str, str]], kill_mb: float = 2000,
                timeout: float = 600) -> dict:
        """Runs the (signature, image path) cases; returns the child's JSON
        answer. A timeout kills the child and raises subprocess.TimeoutExpired."""
        if self.process is None:
            self._stderr = tempfile.TemporaryFile()
            self.process = subprocess.Popen(
                [sys.executable, CHILD, self.saved_model, "-"], stdin=subprocess.PIPE,
                stdout=subprocess.PIPE, stderr=self._stderr, text=True)
            self._lines = queue.Queue()
            threading.Thread(target=_forward_lines, args=(self.process.stdout, self._lines),
                             daemon=True).start()
        request = {"kill_mb": kill_mb, "cases": [f"{s}:{p}" for s, p in cases]}
        try:
            self.process.stdin.write(json.dumps(request) + "\n")
            self.process.stdin.flush()
            lines = self._read_answer(time.monotonic() + timeout)
        except BrokenPipeError:  # it ended before this batch: its stderr says why
            lines = []
        if not lines:
            returncode = self.close()
            self._stderr.seek(0)
            raise RuntimeError(f"memory child exited {returncode} without an answer:\n"
                               f"{self._stderr.read().decode(errors='replace')[-3000:]}")
        answer = json.loads(lines[-1])
        answer["returncode"] = None
        if "killed" in answer:  # the cases done before it
            answer["returncode"] = self.close()
            answer["cases"] = [json.loads(l)["done"] for l in lines if l.startswith('{"done"')]
        return answer

    def _read_answer(self, deadline: float) -> list[str]:
        """The child's lines up to its batch answer, its kill line or its end."""
        lines = []
        while True:
            try:
                line = self._lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                self.process.kill()
                self.close()
                raise subprocess.TimeoutExpired(CHILD, 0) from None
            if line is None:  # the child ended
                return lines
            if line.startswith("{"):
                lines.append(line)
                if not line.startswith('{"done"'):
                    return lines

    def close(self):
        """Ends the child (if it still runs); returns its exit status."""
        if self.process is None:
            return None
        process, self.process = self.process, None
        try:
            process.stdin.close()  # the child's end of input: it exits
        except BrokenPipeError:  # it is gone already
            pass
        try:
            returncode = process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
            returncode = process.wait()
        return returncode


def _forward_lines(stream, lines: queue.Queue) -> None:
    """Puts each line of `stream` on `lines`, then None at its end."""
    for line in stream:
        lines.put(line)
    lines.put(None)
    stream.close()


def measure(saved_model: str, cases: list[tuple[str, str]], kill_mb: float = 2000,
            timeout: float = 600) -> dict:
    """One batch in a child of its own; its answer, with the child's
    "returncode" (0, or KILLED)."""
    child = MemoryChild(saved_model)
    try:
        answer = child.measure(cases, kill_mb, timeout)
    finally:
        returncode = child.close()
    if answer["returncode"] is None:
        answer["returncode"] = returncode
    return answer


def _batches_from_stdin():
    for line in sys.stdin:
        request = json.loads(line)
        yield request["kill_mb"], request["cases"]


if __name__ == "__main__":
    if sys.argv[2:] == ["-"]:
        _child(sys.argv[1], _batches_from_stdin())
    else:
        _child(sys.argv[1], [(float(sys.argv[2]), sys.argv[3:])])

"""Peak memory of single serving requests, measured in a child process.

    python tests/request_memory.py <saved_model_dir> <kill_mb> <signature>:<image file>[*N] ...

(for classify the image is wrapped in a tf.Example; `classify+raw:<file>` sends
the file's bytes as the serialized Example itself)

The child loads the SavedModel, answers one warm-up request with a normal
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
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
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
    """Kills the process when its RSS passes `limit_kb` (set per case)."""

    def __init__(self):
        super().__init__(daemon=True)
        self.limit_kb, self.case = None, None

    def run(self):
        while True:
            if self.limit_kb is not None:
                rss = _status_kb("VmRSS")
                if rss > self.limit_kb:
                    print(json.dumps({"killed": self.case, "rss_mb": rss / 1024}), flush=True)
                    os._exit(KILLED)
            time.sleep(0.002)


def _child(saved_model: str, kill_mb: float, cases: list[str]) -> None:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
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
    for name in (export.FEATURES, export.CLASSIFY):
        if name == export.CLASSIFY:
            call(name, [_example(normal[0])])
        else:
            call(name, normal)
    watchdog = _Watchdog()
    watchdog.start()
    results, answers = [], True
    base = _status_kb("VmRSS")  # the level before the first case
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
        again = call(export.SERVING_DEFAULT, normal)["probabilities"].numpy()
        _release_freed_memory()  # so the next case's peak starts from a true level
        answers = answers and bool(np.array_equal(again, reference))
        results.append({"case": case, "peak_mb": (peak - before) / 1024, "cpu_s": cpu,
                        "error": error})
        print(json.dumps({"done": results[-1]}), flush=True)  # kept if a later case is killed
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


def measure(saved_model: str, cases: list[tuple[str, str]], kill_mb: float = 2000,
            timeout: float = 600) -> dict:
    """Runs the child on (signature, image path) cases; returns its JSON
    answer, with "returncode". A timeout raises subprocess.TimeoutExpired."""
    args = [sys.executable, CHILD, saved_model, str(kill_mb)] + [f"{s}:{p}" for s, p in cases]
    result = subprocess.run(args, capture_output=True, text=True, timeout=timeout)
    lines = [l for l in result.stdout.splitlines() if l.startswith("{")]
    if not lines:
        raise RuntimeError(f"memory child exited {result.returncode} without an answer:\n"
                           f"{result.stderr[-3000:]}")
    answer = json.loads(lines[-1])
    answer["returncode"] = result.returncode
    if "killed" in answer:  # the cases done before it
        answer["cases"] = [json.loads(l)["done"] for l in lines if l.startswith('{"done"')]
    return answer


if __name__ == "__main__":
    _child(sys.argv[1], float(sys.argv[2]), sys.argv[3:])

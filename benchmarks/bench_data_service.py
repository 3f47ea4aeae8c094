"""Training input in this process vs through the tf.data service (1 and 2 workers).

Records: the 1,000 photos of ../shared/data/imagenet-sample converted as data
prep stores them (bench_input.build_records: 256x256, JPEG q95, 8 shards),
or `--records_dir`. The pipeline is `input_pipeline.make_train_dataset`
(batch 128, random 224 crops, flips, PCA lighting), as `launch.train` runs it.

Cases, measured in interleaved rounds (local, x1, x2, local, x1, x2, ...) so
load from other processes hits all alike; each case's median round is
reported, with its spread (min-max) beside it:
  local        the pipeline in this process
  service x1   a `launch.data_service` dispatcher with one worker (separate
               processes on this machine); this process only receives batches
  service x2   a second dispatcher with two workers (idle servers cost no CPU)

Per case, after `--warmup` batches:
  images/s     wall clock, this process taking batches as fast as they come
  img/CPU-s    images per CPU-second of the processes doing the input work:
               this process for local; the workers (from /proc) for the
               service, with the dispatcher's and this trainer's own CPU-seconds
               printed beside it (receiving 150 KB per image is not free)
  wait/step    with a simulated training step of `--step_ms` (a sleep: an
               accelerator busy while the host waits), the mean time per step
               spent in `next()` waiting for the batch

Ratios are to the local case of the same run. On a small machine the
workers share its cores with each other and with this process: two workers
on two cores cannot be twice one worker; the per-CPU-second figure is the
one that carries over to a cluster, where each worker has its own host.

    python benchmarks/bench_data_service.py [--batches=40 --step_ms=100]
"""

from __future__ import annotations

import os
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import tensorflow as tf  # noqa: E402
from absl import app, flags  # noqa: E402

from alexnet_tf.data import dataset_stats, input_pipeline  # noqa: E402
from bench_input import build_records  # noqa: E402  (also defines --source_dir, --records_dir,
#                                                     --num_shards, --batch_size, --rounds: here
#                                                     rounds of the three cases, default 8)

FLAGS = flags.FLAGS
flags.DEFINE_integer("batches", 40, "Batches timed per case (and per wait measurement).")
flags.DEFINE_integer("warmup", 6, "Untimed batches before each timing (fills the buffers).")
flags.DEFINE_float("step_ms", 100.0, "Simulated training step for the wait-per-step figure.")

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User + system CPU-seconds of a process (all its threads), from /proc."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICK


def own_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


class Server:
    def __init__(self, *flags_):
        self.log = tempfile.NamedTemporaryFile("w+", suffix=".log")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "launch.data_service", *flags_], cwd=REPO,
            env=dict(os.environ, PYTHONPATH=REPO), stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 180
        while not re.search(r"listening on port (\d+)", self.text()):
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"launch.data_service {' '.join(flags_)}:\n{self.text()}")
            time.sleep(0.2)
        self.port = int(re.search(r"listening on port (\d+)", self.text()).group(1))

    def text(self) -> str:
        self.log.seek(0)
        return self.log.read()

    def cpu(self) -> float:
        return cpu_seconds(self.process.pid)

    def peak_rss_mb(self) -> float:
        with open(f"/proc/{self.process.pid}/status") as f:
            return int(re.search(r"VmHWM:\s+(\d+)", f.read()).group(1)) / 1024

    def stop(self):
        self.process.terminate()
        try:
            self.process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def dataset(records_dir: str, service: str, run: str) -> tf.data.Dataset:
    return input_pipeline.make_train_dataset(
        records_dir, FLAGS.batch_size, rgb_stats=dataset_stats.RGBStats(), num_classes=1000,
        data_service=service, service_run=run)


def measure(iterator, name: str, workers=(), dispatcher=None) -> dict:
    """Throughput and CPU over `batches`, then the wait per simulated step.
    Each phase first takes `warmup` batches untimed (draining what the
    buffers gathered during the previous phase)."""
    for _ in range(FLAGS.warmup):
        next(iterator)
    before = (time.monotonic(), own_cpu_seconds(), [w.cpu() for w in workers],
              dispatcher.cpu() if dispatcher else 0.0)
    for _ in range(FLAGS.batches):
        next(iterator)
    wall = time.monotonic() - before[0]
    trainer_cpu = own_cpu_seconds() - before[1]
    worker_cpu = sum(w.cpu() - b for w, b in zip(workers, before[2]))
    dispatcher_cpu = dispatcher.cpu() - before[3] if dispatcher else 0.0

    for _ in range(FLAGS.warmup):
        next(iterator)
    waited = 0.0
    for _ in range(FLAGS.batches):
        start = time.monotonic()
        next(iterator)
        waited += time.monotonic() - start
        time.sleep(FLAGS.step_ms / 1000)  # the accelerator's step
    images = FLAGS.batches * FLAGS.batch_size
    input_cpu = worker_cpu if workers else trainer_cpu
    return {"name": name, "images_per_s": images / wall,
            "images_per_cpu_s": images / input_cpu if input_cpu else float("nan"),
            "worker_cpu": worker_cpu, "trainer_cpu": trainer_cpu,
            "dispatcher_cpu": dispatcher_cpu, "wait_ms": 1000 * waited / FLAGS.batches}


def report(rounds):
    keys = ("images_per_s", "images_per_cpu_s", "wait_ms")
    cases = {}
    for row in rounds:
        cases.setdefault(row["name"], []).append(row)
    medians = {name: {k: statistics.median(r[k] for r in rows) for k in
                      (*keys, "worker_cpu", "trainer_cpu", "dispatcher_cpu")}
               for name, rows in cases.items()}
    base = medians["local"]
    print(f"\nmedian of {FLAGS.rounds} rounds (min-max in brackets)")
    print(f"{'case':<11} {'images/s':>19} {'ratio':>5} {'img/CPU-s':>19} {'ratio':>5} "
          f"{'wait/step ms':>20}  CPU-s workers/trainer/dispatcher")
    for name, rows in cases.items():
        m = medians[name]
        spread = {k: f"({min(r[k] for r in rows):.0f}-{max(r[k] for r in rows):.0f})"
                  for k in keys}
        print(f"{name:<11} {m['images_per_s']:7.0f} {spread['images_per_s']:>11} "
              f"{m['images_per_s'] / base['images_per_s']:5.2f} "
              f"{m['images_per_cpu_s']:7.0f} {spread['images_per_cpu_s']:>11} "
              f"{m['images_per_cpu_s'] / base['images_per_cpu_s']:5.2f} "
              f"{m['wait_ms']:7.1f} {spread['wait_ms']:>12}  {m['worker_cpu']:.1f}/"
              f"{m['trainer_cpu']:.1f}/{m['dispatcher_cpu']:.1f}")


def main(argv):
    del argv
    with tempfile.TemporaryDirectory() as tmp:
        records_dir = FLAGS.records_dir
        if not records_dir:
            records_dir = tmp
            count = build_records(FLAGS.source_dir, tmp, FLAGS.num_shards)
            print(f"{count} photos from {FLAGS.source_dir} -> {FLAGS.num_shards} shards")
        print(f"machine: {os.cpu_count()} CPUs ({len(os.sched_getaffinity(0))} usable), "
              f"load average {os.getloadavg()[0]:.1f}, TensorFlow {tf.__version__}; batch "
              f"{FLAGS.batch_size}, {FLAGS.batches} batches per case, simulated step "
              f"{FLAGS.step_ms:g} ms")
        servers, clusters = [], {}
        try:
            for count in (1, 2):  # one dispatcher per cluster size
                dispatcher = Server("--mode=dispatcher", "--port=0")
                address = f"127.0.0.1:{dispatcher.port}"
                workers = [Server("--mode=worker", "--port=0", f"--dispatcher={address}",
                                  "--worker_address=127.0.0.1:%port%") for _ in range(count)]
                servers += [dispatcher, *workers]
                clusters[f"service x{count}"] = (address, workers, dispatcher)
            # One iterator (one service job) per case for the whole run: every
            # job a worker serves holds its own shuffle buffer and prefetched
            # batches (about 0.5-1 GB here) until the dispatcher drops it.
            cases = {"local": (iter(dataset(records_dir, "", "")), (), None)}
            for name, (address, workers, dispatcher) in clusters.items():
                cases[name] = (iter(dataset(records_dir, address, f"bench/{name}")), workers,
                               dispatcher)
            rounds = []
            for index in range(FLAGS.rounds):
                for name, (iterator, workers, dispatcher) in cases.items():
                    rounds.append(measure(iterator, name, workers, dispatcher))
                print(f"round {index + 1}: " + ", ".join(
                    f"{r['name']} {r['images_per_s']:.0f} img/s" for r in rounds[-3:]),
                    flush=True)
            del cases
            print("peak memory (RSS) of the servers: " + ", ".join(
                f"{name} {'dispatcher' if i == 0 else f'worker {i}'} {server.peak_rss_mb():.0f} MB"
                for name, (_, workers, dispatcher) in clusters.items()
                for i, server in enumerate((dispatcher, *workers))))
        finally:
            for server in servers:
                server.stop()
        print(f"load average at the end {os.getloadavg()[0]:.1f}")
        report(rounds)


if __name__ == "__main__":
    app.run(main)

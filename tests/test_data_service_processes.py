"""`launch.data_service` and `launch.train --data_service` on 127.0.0.1: a
dispatcher and two workers as processes, a training (launch.train in this
process) that reaches its max_steps while one worker process is killed,
then SIGTERM / Ctrl-C stopping the servers left; two multi-worker trainer
processes on one job (the process boundary is what is tested; the
launchers' one-line refusals, which come before any server starts, are in
test_data_service.py)."""

import gc
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time

import pytest
import tensorflow as tf

from launchers import run_launcher
from service_cluster import start_cluster, stop_cluster
from tiny_data import tiny_flags, write_tiny_dataset

pytestmark = pytest.mark.slow  # each server or trainer is a TensorFlow process

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENV = dict(os.environ, PYTHONPATH=REPO, PYTHONUNBUFFERED="1")
ENV.pop("TF_CPP_MIN_LOG_LEVEL", None)  # the launchers' own quieting is part of the test
START_TIMEOUT_S = 120


class Server:
    """A `launch.data_service` process whose output goes to a file (a pipe
    nobody drains could stall it)."""

    def __init__(self, tmp_path, name, *flags):
        self.log = tmp_path / f"{name}.log"
        with open(self.log, "wb") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "launch.data_service", *flags], cwd=REPO, env=ENV,
                stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + START_TIMEOUT_S
        while "listening on port" not in self.output():
            assert self.process.poll() is None, self.output()
            assert time.monotonic() < deadline, f"{name} did not start:\n{self.output()}"
            time.sleep(0.1)
        self.port = int(re.search(r"listening on port (\d+)", self.output()).group(1))

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self):
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()


@pytest.fixture
def servers():
    started = []
    yield started
    for server in started:
        server.stop()


def _cluster(tmp_path, servers, workers=2):
    dispatcher = Server(tmp_path, "dispatcher", "--mode=dispatcher", "--port=0",
                        "--worker_timeout=5")
    servers.append(dispatcher)
    for index in range(workers):
        servers.append(Server(tmp_path, f"worker{index}", "--mode=worker", "--port=0",
                              f"--dispatcher=127.0.0.1:{dispatcher.port}", "--heartbeat=1",
                              "--worker_address=127.0.0.1:%port%"))
    return dispatcher, servers[1:]


def _train_command(data_dir, model_dir, address, steps):
    return [sys.executable, "-m", "launch.train", f"--data_dir={data_dir}",
            f"--model_dir={model_dir}", "--batch_size=8", "--epochs=1",
            f"--steps_per_epoch={steps}", "--validation_steps=1", "--log_every_steps=2",
            "--steps_per_loop=1", *tiny_flags(),
            "--shuffle_buffer=16", f"--data_service={address}"]


def _closed_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.timeout(600)
def test_training_reaches_max_steps_while_a_worker_is_killed(tmp_path, servers):
    """Then SIGTERM and Ctrl-C (SIGINT) stop the worker and the dispatcher
    left, cleanly (formerly test_sigterm_and_ctrl_c_stop_the_servers_cleanly,
    on a cluster of its own). The servers are processes (the killed worker
    is the subject); the trainer, launch.train, runs in this process
    (tests/launchers.py) while a thread kills the worker once ckpt-4 is saved."""
    data_dir = write_tiny_dataset(tmp_path / "data", num_classes=3, train_shards=4)
    dispatcher, workers = _cluster(tmp_path, servers)
    model_dir, steps = tmp_path / "run", 16
    killed = []

    def kill_part_way():  # 4 of 16 steps done
        deadline = time.monotonic() + 300
        while not (model_dir / "ckpt-4.index").exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        killed.append(not (model_dir / f"ckpt-{steps}.index").exists())  # still training
        workers[0].process.kill()

    killer = threading.Thread(target=kill_part_way, daemon=True)
    killer.start()
    result = run_launcher(
        *_train_command(data_dir, model_dir, f"grpc://127.0.0.1:{dispatcher.port}", steps)[2:],
        "--checkpoint_every_steps=4", cwd=tmp_path)
    gc.collect()  # its service iterators (reference cycles), while the servers are up
    killer.join(timeout=60)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert killed == [True] and workers[0].process.poll() is not None
    assert "training input: tf.data service at grpc://127.0.0.1" in output
    assert "2 worker(s) registered" in output
    assert f"step {steps}/{steps}" in output and "Training finished" in output
    assert tf.train.latest_checkpoint(model_dir).endswith(f"ckpt-{steps}")
    assert workers[1].process.poll() is None and dispatcher.process.poll() is None

    for server, number in ((workers[1], signal.SIGTERM), (dispatcher, signal.SIGINT)):
        server.process.send_signal(number)
        assert server.process.wait(timeout=60) == 0, server.output()
        output = server.output()
        assert f"stopped ({number.name})" in output and "Traceback" not in output
        assert output.strip().splitlines() == [
            line for line in output.strip().splitlines()
            if line.startswith("tf.data service ")], output  # only its own two lines


# One process imports what launch.train needs (TensorFlow: ~5 CPU-s), then
# forks the trainers, each running the command line as `python -m launch.train`
# would, with its own TF_CONFIG and log file; it exits 0 when every one did.
_FORKED_TRAINERS = """
import gc, json, os, runpy, sys
import keras, tensorflow
from alexnet_tf.training import loop
logs, configs, argv = json.loads(sys.argv[1]), json.loads(sys.argv[2]), sys.argv[3:]
children = []
for log, config in zip(logs, configs):
    pid = os.fork()
    if pid:
        children.append(pid)
        continue
    code = 1
    try:
        out = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
        os.dup2(out, 1)
        os.dup2(out, 2)
        os.environ["TF_CONFIG"] = config
        sys.argv = ["launch/train.py", *argv]
        runpy.run_module("launch.train", run_name="__main__", alter_sys=True)
        code = 0
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else int(e.code is not None)
    finally:
        gc.collect()  # its service iterators release their job (reference cycles)
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
sys.exit(int(any(os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) for pid in children)))
"""


@pytest.mark.timeout(600)
def test_multi_worker_trainers_share_one_job(tmp_path):
    """Two `--strategy=multi_worker` trainers (processes, forked from one that
    imported TensorFlow once) take their batches from one job (one pass over
    the data for the whole cluster), served here by an in-process dispatcher
    and worker."""
    dispatcher, workers = start_cluster(workers=1)  # nothing waits: service_cluster.py
    data_dir = write_tiny_dataset(tmp_path / "data", num_classes=3, train_shards=4)
    cluster = [f"127.0.0.1:{_closed_port()}" for _ in range(2)]
    logs = [tmp_path / f"trainer{i}.log" for i in range(2)]
    configs = [json.dumps({"cluster": {"worker": cluster},
                           "task": {"type": "worker", "index": index}}) for index in range(2)]
    try:
        result = subprocess.run(
            [sys.executable, "-c", _FORKED_TRAINERS, json.dumps([str(p) for p in logs]),
             json.dumps(configs),
             *_train_command(data_dir, tmp_path / "run", dispatcher.target, 2)[3:],
             "--strategy=multi_worker"],
            cwd=REPO, env=ENV, capture_output=True, text=True, timeout=500)
        assert result.returncode == 0, (result.stderr, [
            log.read_text(errors="replace") for log in logs if log.exists()])
        # The dispatcher drops the job once its trainers are gone, and the
        # worker its tasks: then stopping it waits for nothing (service_cluster.py).
        deadline = time.monotonic() + 120
        while workers[0]._num_tasks() and time.monotonic() < deadline:
            time.sleep(0.1)
    finally:
        stop_cluster(dispatcher, workers)
    jobs = [re.search(r"job (alexnet_tf-\w+)", log.read_text()).group(1) for log in logs]
    assert jobs[0] == jobs[1]
    assert "step 2/2" in logs[0].read_text() and "Training finished" in logs[0].read_text()

"""`launch.data_service` and `launch.train --data_service` on 127.0.0.1: a
dispatcher and two workers as processes, a training (launch.train in this
process) that reaches its max_steps while one worker process is killed,
then SIGTERM / Ctrl-C stopping the servers left; two multi-worker trainer
processes on one job (the process boundary is what is tested; the
launchers' one-line refusals, which come before any server starts, are in
test_data_service.py). The servers and trainers are forked from one warm
process that imported their modules once (tests/warm_launchers.py); the
native-log filter's dropping of TensorFlow's import-time notices, which
that process prints, is test_quiet_terminal.py's."""

import contextlib
import gc
import json
import os
import re
import signal
import socket
import threading
import time

import pytest
import tensorflow as tf

from launchers import run_launcher
from service_cluster import start_cluster, stop_cluster
from tiny_data import tiny_flags, write_tiny_dataset
from warm_launchers import WarmLaunchers

# Each server or trainer is a TensorFlow process (forked warm), and the first
# test trains in this process.
pytestmark = pytest.mark.slow

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENV = dict(os.environ, PYTHONPATH=REPO, PYTHONUNBUFFERED="1")
ENV.pop("TF_CPP_MIN_LOG_LEVEL", None)  # the launchers' own quieting is part of the test
START_TIMEOUT_S = 120


# What the forked launchers would import (TensorFlow: ~5 CPU-s), once per module;
# `launch` first, as in `python -m launch.X`: it quiets TensorFlow before it loads.
_PRELOAD = ("launch", "alexnet_tf.cli.terminal", "alexnet_tf.cli.config_flags",
            "alexnet_tf.data.service_servers", "tensorflow", "keras",
            "alexnet_tf.training.loop")


@pytest.fixture(scope="module")
def launchers(tmp_path_factory):
    """The module's warm process, forking the servers and trainers (each a
    process of its own, its imports paid once: tests/warm_launchers.py)."""
    launchers = WarmLaunchers(tmp_path_factory.mktemp("launchers"), _PRELOAD, REPO, ENV)
    yield launchers
    launchers.close()  # kills whatever it forked that is still running


def _kill_running(processes) -> None:
    for process in processes:
        if process.poll() is None:  # its end may not be reported yet: it may be gone
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signal.SIGKILL)


@pytest.fixture
def forked():
    """What the test forked: killed at its end, failed or not, if still running."""
    started = []
    yield started
    _kill_running(started)


def _server(launchers, name, *flags):
    """A `launch.data_service` process, once it listens; (it, its port)."""
    server = launchers.start("launch.data_service", *flags, name=name)
    deadline = time.monotonic() + START_TIMEOUT_S
    while "listening on port" not in server.output():
        assert server.poll() is None, server.output()
        assert time.monotonic() < deadline, f"{name} did not start:\n{server.output()}"
        time.sleep(0.1)
    return server, int(re.search(r"listening on port (\d+)", server.output()).group(1))


def _cluster(launchers, servers, workers=2):
    dispatcher, port = _server(launchers, "dispatcher", "--mode=dispatcher", "--port=0",
                               "--worker_timeout=5")
    servers.append(dispatcher)
    for index in range(workers):
        servers.append(_server(launchers, f"worker{index}", "--mode=worker", "--port=0",
                               f"--dispatcher=127.0.0.1:{port}", "--heartbeat=1",
                               "--worker_address=127.0.0.1:%port%")[0])
    return dispatcher, port, servers[1:]


def _train_flags(data_dir, model_dir, address, steps):
    """`launch.train`'s command line, without the program."""
    return [f"--data_dir={data_dir}", f"--model_dir={model_dir}", "--batch_size=8", "--epochs=1",
            f"--steps_per_epoch={steps}", "--validation_steps=1", "--log_every_steps=2",
            "--steps_per_loop=1", *tiny_flags(),
            "--shuffle_buffer=16", f"--data_service={address}"]


def _closed_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.timeout(600)
def test_training_reaches_max_steps_while_a_worker_is_killed(tmp_path, launchers, forked):
    """Then SIGTERM and Ctrl-C (SIGINT) stop the worker and the dispatcher
    left, cleanly (formerly test_sigterm_and_ctrl_c_stop_the_servers_cleanly,
    on a cluster of its own). The servers are processes (the killed worker
    is the subject); the trainer, launch.train, runs in this process
    (tests/launchers.py) while a thread kills the worker once ckpt-4 is saved."""
    data_dir = write_tiny_dataset(tmp_path / "data", num_classes=3, train_shards=4)
    dispatcher, port, workers = _cluster(launchers, forked)
    model_dir, steps = tmp_path / "run", 16
    killed = []

    def kill_part_way():  # 4 of 16 steps done
        deadline = time.monotonic() + 300
        while not (model_dir / "ckpt-4.index").exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        killed.append(not (model_dir / f"ckpt-{steps}.index").exists())  # still training
        workers[0].send_signal(signal.SIGKILL)

    killer = threading.Thread(target=kill_part_way, daemon=True)
    killer.start()
    result = run_launcher(
        "launch.train", *_train_flags(data_dir, model_dir, f"grpc://127.0.0.1:{port}", steps),
        "--checkpoint_every_steps=4", cwd=tmp_path)
    gc.collect()  # its service iterators (reference cycles), while the servers are up
    killer.join(timeout=60)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert killed == [True] and workers[0].wait(timeout=60) == -signal.SIGKILL
    assert "training input: tf.data service at grpc://127.0.0.1" in output
    assert "2 worker(s) registered" in output
    assert f"step {steps}/{steps}" in output and "Training finished" in output
    assert tf.train.latest_checkpoint(model_dir).endswith(f"ckpt-{steps}")
    assert workers[1].poll() is None and dispatcher.poll() is None

    for server, number in ((workers[1], signal.SIGTERM), (dispatcher, signal.SIGINT)):
        server.send_signal(number)
        assert server.wait(timeout=60) == 0, server.output()
        output = server.output()
        assert f"stopped ({number.name})" in output and "Traceback" not in output
        assert output.strip().splitlines() == [
            line for line in output.strip().splitlines()
            if line.startswith("tf.data service ")], output  # only its own two lines


@pytest.mark.timeout(600)
def test_multi_worker_trainers_share_one_job(tmp_path, launchers, forked):
    """Two `--strategy=multi_worker` trainers (processes, forked warm) take
    their batches from one job (one pass over the data for the whole
    cluster), served here by an in-process dispatcher and worker."""
    dispatcher, workers = start_cluster(workers=1)  # nothing waits: service_cluster.py
    data_dir = write_tiny_dataset(tmp_path / "data", num_classes=3, train_shards=4)
    cluster = [f"127.0.0.1:{_closed_port()}" for _ in range(2)]
    argv = [*_train_flags(data_dir, tmp_path / "run", dispatcher.target, 2),
            "--strategy=multi_worker"]
    trainers = forked
    try:
        for index in range(2):
            trainers.append(launchers.start("launch.train", *argv, name=f"trainer{index}", env={
                "TF_CONFIG": json.dumps({"cluster": {"worker": cluster},
                                         "task": {"type": "worker", "index": index}})}))
        for trainer in trainers:
            assert trainer.wait(timeout=500) == 0, [t.output() for t in trainers]
        # The dispatcher drops the job once its trainers are gone, and the
        # worker its tasks: then stopping it waits for nothing (service_cluster.py).
        deadline = time.monotonic() + 120
        while workers[0]._num_tasks() and time.monotonic() < deadline:
            time.sleep(0.1)
    finally:
        _kill_running(trainers)  # a trainer left waiting on the worker would hold its stop()
        stop_cluster(dispatcher, workers)
    jobs = [re.search(r"job (alexnet_tf-\w+)", trainer.output()).group(1)
            for trainer in trainers]
    assert jobs[0] == jobs[1]
    assert "step 2/2" in trainers[0].output() and "Training finished" in trainers[0].output()

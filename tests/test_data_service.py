"""The tf.data service, in this process: settings refused in one line (by
the library, and by launch.data_service and launch.train: their refusals
come before any server or training starts, tests/launchers.py), the
dispatcher probe, and the training input run by in-process workers (the
servers as processes, kills and signals are in test_data_service_processes.py)."""

import gc
import socket

import numpy as np
import pytest
import tensorflow as tf

from alexnet_tf.data import input_pipeline, service, service_address
from alexnet_tf.data.service_servers import ServiceConfig, check_port_free
from alexnet_tf.errors import ConfigError
from alexnet_tf.training.config import ModelConfig, TrainConfig
from launchers import run_launcher
from service_cluster import start_cluster, stop_cluster
from tiny_data import TINY_MODEL, tiny_flags, write_tiny_dataset

tf_service = tf.data.experimental.service

# One worker runs this module: its servers and data are built once.


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return write_tiny_dataset(tmp_path_factory.mktemp("data"), num_classes=3, train_shards=4)


@pytest.fixture(scope="module")
def cluster():
    """An in-process dispatcher and two workers (service_cluster.py: set so
    that nothing waits)."""
    dispatcher, workers = start_cluster()
    yield dispatcher, workers
    gc.collect()  # any client left (see _released)
    stop_cluster(dispatcher, workers)


def _released(value):
    """`value`, after a collection: a training's service iterators (in
    reference cycles) go while the workers serve them (service_cluster.py)."""
    gc.collect()
    return value


def _closed_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("text", ["grpc://host:5050", "host:5050", "10.0.0.7:1",
                                  "[::1]:5050", "grpc://dispatcher-0.cluster.local:65535"])
def test_addresses_in_either_form_are_accepted(text):
    assert service_address.parse_address(text, "data_service", "TrainConfig") == \
        text.removeprefix("grpc://")


@pytest.mark.parametrize("text", ["host", "host:", ":5050", "http://host:5050", "host:0",
                                  "host:70000", "grpc://", "host:50a", "a b:5050"])
def test_malformed_addresses_name_the_field(text):
    with pytest.raises(ConfigError) as caught:
        TrainConfig(data_dir="d", model_dir="m", data_service=text)
    assert caught.value.field == "data_service" and caught.value.value == text


@pytest.mark.parametrize("settings, field", [
    ({}, "mode"),
    ({"mode": "dispatcher"}, "port"),
    ({"mode": "dispatcher", "port": 65536}, "port"),
    ({"mode": "dispatcher", "port": -1}, "port"),
    ({"mode": "worker", "port": 0}, "dispatcher"),
    ({"mode": "worker", "port": 0, "dispatcher": "host"}, "dispatcher"),
    ({"mode": "worker", "port": 0, "dispatcher": "h:1", "work_dir": "/tmp/j"}, "work_dir"),
    ({"mode": "worker", "port": 0, "dispatcher": "h:1", "worker_address": "w"},
     "worker_address"),
    ({"mode": "dispatcher", "port": 1, "dispatcher": "h:1"}, "dispatcher"),
    ({"mode": "dispatcher", "port": 1, "worker_timeout": 0}, "worker_timeout"),
    ({"mode": "dispatcher", "port": 1, "work_dir": __file__}, "work_dir"),
])
def test_service_settings_are_refused_naming_the_field(settings, field):
    with pytest.raises(ConfigError) as caught:
        ServiceConfig(**settings)
    assert caught.value.field == field


def test_a_worker_address_may_stand_for_its_port():
    config = ServiceConfig(mode="worker", port=0, dispatcher="grpc://h:5050",
                           worker_address="w1.cluster:%port%")
    assert config.dispatcher == "h:5050"


def test_a_worker_address_whose_host_does_not_resolve_is_refused():
    from alexnet_tf.data import service_servers
    service_servers.check_worker_address("127.0.0.1:%port%")
    service_servers.check_worker_address("[::1]:5051")
    with pytest.raises(ConfigError, match="does not resolve") as caught:  # .invalid: RFC 2606
        service_servers.check_worker_address("lcoalhost.invalid:%port%")
    assert caught.value.field == "worker_address"


def test_a_taken_port_is_refused():
    with socket.socket() as taken:
        taken.bind(("", 0))
        taken.listen()
        with pytest.raises(ConfigError, match="in use") as caught:
            check_port_free(taken.getsockname()[1])
    assert caught.value.field == "port"


def test_the_probe_names_a_closed_port_within_its_timeout():
    """The probe gives up at its own timeout (its message says which), not
    gRPC's; no wall-clock bound is asserted."""
    port = _closed_port()
    with pytest.raises(service_address.UnreachableDispatcher,
                       match=f"grpc://127.0.0.1:{port}: nothing answered within 0.2 s"):
        service_address.probe_dispatcher(f"127.0.0.1:{port}", timeout=0.2)


def test_the_probe_counts_workers_and_tells_a_worker_from_a_dispatcher(cluster):
    dispatcher, workers = cluster
    assert service_address.probe_dispatcher(dispatcher.target, timeout=10) == 2
    with pytest.raises(service_address.UnreachableDispatcher, match="not a tf.data service"):
        service_address.probe_dispatcher(workers[0]._address, timeout=10)


def test_a_runs_trainers_share_one_job_and_runs_do_not():
    settings = {"batch": 64, "seed": None}
    assert service.job_name("runs/a", settings) == service.job_name("runs/a/", settings)
    assert service.job_name("runs/a", settings) != service.job_name("runs/b", settings)
    assert service.job_name("runs/a", settings) != service.job_name("runs/a", {
        **settings, "batch": 32})


def test_training_batches_are_made_by_the_service_workers(cluster, data_dir):
    dispatcher, workers = cluster
    tasks_before = sum(w._num_tasks() for w in workers)
    context = tf.distribute.InputContext(num_input_pipelines=1, input_pipeline_id=0,
                                         num_replicas_in_sync=2)
    dataset = input_pipeline.make_train_dataset(
        data_dir, 8, input_context=context, crop_size=67, shuffle_buffer=16, num_classes=3,
        data_service=dispatcher.target, service_run="runs/wiring")
    iterator = iter(dataset)
    batches = [next(iterator) for _ in range(6)]
    # The job's tasks run on the workers (while its client reads): the
    # batches were made there.
    assert sum(w._num_tasks() for w in workers) > tasks_before
    del iterator
    gc.collect()  # see _released
    for features, labels in batches:
        assert features[input_pipeline.IMAGE].dtype == tf.uint8
        assert features[input_pipeline.IMAGE].shape == (4, 67, 67, 3)  # per replica
        assert features[input_pipeline.LIGHTING].shape == (4, 3)
        assert set(labels.numpy()) <= {0, 1, 2}
    assert len({int(label) for _, labels in batches for label in labels}) > 1


# mirrored: one input pipeline feeding two replicas (per-replica batches);
# towers: the paper's two towers on two logical CPUs, fed by the service.
# The default strategy (formerly a third case here) is the killed-worker run
# of test_data_service_processes.py, launch.train in that test's process.
@pytest.mark.slow  # a train() each (4-6 CPU-s)
@pytest.mark.parametrize("strategy, devices", [
    ("mirrored", {"devices": ("/cpu:0", "/cpu:1")}),
    ("towers", {"tower_devices": ("/cpu:0", "/cpu:1")})])
def test_training_through_the_service_reaches_max_steps(cluster, data_dir, tmp_path,
                                                        strategy, devices):
    from alexnet_tf.training.loop import train
    dispatcher, workers = cluster
    summary = _released(train(TrainConfig(
        data_dir=data_dir, model_dir=str(tmp_path / "run"), batch_size=8, epochs=1,
        max_steps=2, steps_per_epoch=2, validation_steps=1, log_every_steps=2,
        shuffle_buffer=16, strategy=strategy, **devices,
        data_service=dispatcher.target, model=ModelConfig(**TINY_MODEL))))
    assert summary["step"] == 2 and np.isfinite(summary["train_loss"])


def test_training_toward_a_closed_port_stops_naming_it(data_dir, tmp_path, monkeypatch):
    from alexnet_tf.training.loop import train
    monkeypatch.setattr(service_address, "PROBE_TIMEOUT_S", 0.2)
    port = _closed_port()
    with pytest.raises(service_address.UnreachableDispatcher, match=f"127.0.0.1:{port}"):
        train(TrainConfig(data_dir=data_dir, model_dir=str(tmp_path / "run"), batch_size=8,
                          max_steps=2, data_service=f"grpc://127.0.0.1:{port}",
                          model=ModelConfig(**TINY_MODEL)))
    # probed before anything is written: the model_dir is not even created
    assert not (tmp_path / "run").exists()


def test_a_resume_toward_a_closed_port_leaves_the_model_dir_as_it_was(data_dir, tmp_path,
                                                                      monkeypatch):
    from alexnet_tf.training.loop import train
    monkeypatch.setattr(service_address, "PROBE_TIMEOUT_S", 0.2)
    run = tmp_path / "run"
    run.mkdir()
    (run / "notes.txt").write_text("mine")
    with pytest.raises(service_address.UnreachableDispatcher):
        train(TrainConfig(data_dir=data_dir, model_dir=str(run), batch_size=8, max_steps=2,
                          data_service=f"127.0.0.1:{_closed_port()}",
                          model=ModelConfig(**TINY_MODEL)))
    assert sorted(p.name for p in run.iterdir()) == ["notes.txt"]


def _one_error_line(result, tool) -> str:
    assert result.returncode == 2, (result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"{tool}: error: "), result.stderr
    assert "Traceback" not in result.stdout + result.stderr
    return lines[0]


def test_bad_server_settings_are_one_line(tmp_path, monkeypatch):
    def run(*flags):
        return _one_error_line(run_launcher("launch.data_service", *flags, cwd=tmp_path),
                               "launch.data_service")

    assert "--port=70000" in run("--mode=dispatcher", "--port=70000")
    assert "--dispatcher=dispatcher-host" in run("--mode=worker", "--port=0",
                                                 "--dispatcher=dispatcher-host")
    monkeypatch.setattr(service_address, "PROBE_TIMEOUT_S", 0.2)  # the default 10 s: below
    closed = _closed_port()
    assert f"grpc://127.0.0.1:{closed}" in run("--mode=worker", "--port=0",
                                               f"--dispatcher=127.0.0.1:{closed}")
    with socket.socket() as taken:  # what a running dispatcher holds: a listening port
        taken.bind(("", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert f"--port={port}: is in use" in run("--mode=dispatcher", f"--port={port}")


def test_training_pointed_at_a_closed_port_says_so_in_bounded_time(data_dir, tmp_path,
                                                                   monkeypatch):
    # docs/distributed.md: one line naming the address within about 10 s (the
    # default, checked here; the run waits a fiftieth of it)
    assert service_address.PROBE_TIMEOUT_S == 10.0
    monkeypatch.setattr(service_address, "PROBE_TIMEOUT_S", 0.2)
    port = _closed_port()
    result = run_launcher(
        "launch.train", f"--data_dir={data_dir}", f"--model_dir={tmp_path / 'run'}",
        "--batch_size=8", "--max_steps=4", *tiny_flags(),
        f"--data_service=grpc://127.0.0.1:{port}", cwd=tmp_path)
    line = _one_error_line(result, "launch.train")
    # The probe's timeout ended the run (its line), not TensorFlow's hour of
    # retries: no wall-clock bound is asserted (pytest's timeout catches a hang).
    assert f"grpc://127.0.0.1:{port}" in line and "nothing answered within 0.2 s" in line
    assert not (tmp_path / "run").exists()  # refused before anything was written

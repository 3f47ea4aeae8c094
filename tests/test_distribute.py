"""The strategies for real: MirroredStrategy over the two logical CPUs
matches one device, the towers strategy trains with the colocated gradients,
and two MultiWorkerMirroredStrategy processes on 127.0.0.1, one of them sent
SIGTERM, save the same step with bit-identical weights on both, from which
both resume."""

import json
import os
import shlex
import socket

import numpy as np
import pytest
import tensorflow as tf

from alexnet_tf.training import checkpoints, distribute, model_dir as model_dir_files, schedules
from alexnet_tf.model import placement
from alexnet_tf.training.loop import make_optimizer, train
from tiny_data import (stop_lines, temporary_leftovers, tiny_flags, tiny_train_config,
                       write_tiny_dataset)
from warm_launchers import WarmLaunchers

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def plain_data(tmp_path_factory):
    """Images of one flat colour per class at the model's input size: the
    random crop and flip change nothing, so two runs see identical batches."""
    return write_tiny_dataset(tmp_path_factory.mktemp("data"), num_classes=3, size=67,
                              noise=0.0)


def _config(data_dir, model_dir, **overrides):
    return tiny_train_config(data_dir, model_dir, **{
        "steps_per_epoch": 3, "validation_steps": 1, "shuffle_buffer": 16, "seed": 7,
        "lighting_stddev": 0.0, **overrides})


def _weights(model_dir):
    path = tf.train.latest_checkpoint(str(model_dir))
    reader = tf.train.load_checkpoint(path)
    keys = sorted(k for k, _ in tf.train.list_variables(path)
                  if k.startswith("optimizer/_trainable_variables/"))
    assert keys, path
    return {k: reader.get_tensor(k) for k in keys}


def test_chief_detection_without_a_cluster():
    strategy = distribute.make_strategy("default")
    assert distribute.is_chief(strategy)
    assert distribute.write_dir("/some/model_dir", strategy) == "/some/model_dir"


def _input_iterators() -> set[int]:
    """Every tf.data or distributed iterator object of this process, alive or
    garbage not yet collected."""
    import gc
    kinds = ("OwnedIterator", "OwnedMultiDeviceIterator", "DistributedIterator")
    return {id(o) for o in gc.get_objects() if type(o).__name__ in kinds}


@pytest.mark.slow  # two trainings (about 4 and 5 CPU-s)
def test_mirrored_over_two_cpus_matches_one_device(plain_data, tmp_path):
    before = _input_iterators()
    single = train(_config(plain_data, tmp_path / "single"))
    mirrored = train(_config(plain_data, tmp_path / "mirrored", strategy="mirrored",
                             devices=["/CPU:0", "/CPU:1"]))
    # train() frees its input's iterators before it returns: left in reference
    # cycles, a later collection stopping their pipelines blocked the caller's
    # next TensorFlow op for up to 90 s.
    assert _input_iterators() <= before
    assert single["step"] == mirrored["step"] == 3
    assert mirrored["train_loss"] == pytest.approx(single["train_loss"], rel=1e-4)
    a, b = _weights(tmp_path / "single"), _weights(tmp_path / "mirrored")
    initial_gap = 0.0
    for key in a:
        np.testing.assert_allclose(b[key], a[key], rtol=1e-4, atol=1e-6, err_msg=key)
        initial_gap = max(initial_gap, float(np.abs(a[key]).max()))
    assert initial_gap > 0


@pytest.mark.slow  # its own training (about 3 CPU-s)
def test_towers_trains_with_colocated_gradients(plain_data, tmp_path, monkeypatch):
    calls = []
    real = placement.colocated_gradients

    def spy(loss, variables):
        calls.append(len(variables))
        return real(loss, variables)

    monkeypatch.setattr(placement, "colocated_gradients", spy)
    summary = train(_config(plain_data, tmp_path / "towers", strategy="towers",
                            tower_devices=["/CPU:0", "/CPU:1"], max_steps=2))
    assert summary["step"] == 2 and np.isfinite(summary["train_loss"])
    assert calls and calls[0] == 32  # every trainable variable of the tiny model


def _free_ports(n):
    sockets = [socket.socket() for _ in range(n)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


# What the workers import (TensorFlow: ~5 CPU-s), once; `launch` first, as in
# `python -m launch.train`: it quiets TensorFlow before it loads.
_PRELOAD = ("launch", "launch.train", "tensorflow", "keras", "alexnet_tf.training.loop")


def _launch_workers(commands, workers, tmp_path, extra_env=None):
    """Runs one (module, *args) command per worker (TF_CONFIG for each, and
    `extra_env`) as real processes forked from one that imported their
    modules once (tests/warm_launchers.py); returns [(exit code, stdout,
    stderr)]. Each runs in a session of its own, killed if the run hangs."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([REPO, os.path.join(REPO, "tests")]),
               TF_CPP_MIN_LOG_LEVEL="2")
    launchers = WarmLaunchers(tmp_path, _PRELOAD, REPO, env)
    try:
        started = [launchers.start(module, *args, name=f"worker{index}", separate_stderr=True,
                                   env={**(extra_env or {}), "TF_CONFIG": json.dumps(
                                       {"cluster": {"worker": workers},
                                        "task": {"type": "worker", "index": index}})})
                   for index, (module, *args) in enumerate(commands)]
        codes = [process.wait(timeout=400) for process in started]
    finally:
        launchers.close()  # kills whatever is still running
    return [(code, process.output(), process.stderr.read()) for code, process in zip(codes, started)]


@pytest.mark.timeout(600)
@pytest.mark.slow  # two TensorFlow processes that train (about 15 CPU-s in all)
def test_sigterm_to_the_non_chief_saves_one_step_on_every_worker_and_both_resume_from_it(
        plain_data, tmp_path):
    """One run of two workers, the non-chief sent a real SIGTERM: every worker
    stops at the same step, saves bit-identical state and prints its own command
    to resume. The non-chief keeps its copy (signal_probe.py) so the two can be
    compared. That both resume from it is checked in this process, without a
    second pair of processes: on a rerun every worker restores the model_dir's
    latest checkpoint (the non-chief while writing elsewhere, as below), the
    preemption handler restores nothing (its scratch folder holds no checkpoint,
    so every worker counts its chunks from 0 and the counts agree), and what is
    restored is what each worker saved."""
    model_dir, keep_dir = str(tmp_path / "run"), str(tmp_path / "worker1")
    os.mkdir(keep_dir)
    flags = [f"--data_dir={plain_data}", f"--model_dir={model_dir}", "--strategy=multi_worker",
             "--batch_size=8", "--epochs=1", "--steps_per_epoch=10", "--steps_per_loop=2",
             "--checkpoint_every_steps=100", "--log_every_steps=2", "--validation_steps=1",
             *tiny_flags(), "--dropout=0", "--shuffle_buffer=16", "--seed=7"]
    # The non-chief (tests/signal_probe.py) gets a real SIGTERM as its second
    # chunk of steps starts.
    done = _launch_workers([("launch.train", *flags), ("signal_probe", "chunk:2", "TERM", *flags)],
                           [f"127.0.0.1:{p}" for p in _free_ports(2)], tmp_path,
                           extra_env={"PROBE_KEEP_WORKER_DIR": keep_dir})
    stops = []
    for index, (code, out, err) in enumerate(done):
        assert code == 143, f"worker {index}:\n{out[-2000:]}\n{err[-3000:]}"
        (cause, step, checkpoint, command), = stop_lines(err)
        stops.append((cause, int(step), checkpoint))
        assert shlex.split(command)[1:] == ["-m", "launch.train", *flags]  # its own command
    (chief_cause, step, chief_ckpt), (other_cause, other_step, other_ckpt) = stops
    assert (chief_cause, other_cause) == ("another worker's preemption", "SIGTERM")
    assert step == other_step and 4 <= step < 10  # the same step, after the chunk in flight
    assert chief_ckpt == other_ckpt == tf.train.latest_checkpoint(model_dir)
    assert chief_ckpt.endswith(f"ckpt-{step}")
    assert tf.train.latest_checkpoint(keep_dir).endswith(f"ckpt-{step}")
    assert temporary_leftovers(model_dir) == []
    (_, chief_out, _), (_, other_out, _) = done
    assert f"Training {model_dir}:" in chief_out  # the chief alone reports
    assert "Training " not in other_out
    assert not os.path.exists(os.path.join(keep_dir, "model_config.json"))  # chief only
    chief, other = _weights(model_dir), _weights(keep_dir)
    assert chief.keys() == other.keys()
    for key in chief:  # the two workers' saved weights: bit-identical
        np.testing.assert_array_equal(other[key], chief[key], err_msg=key)

    # What each worker's rerun restores.
    assert tf.train.latest_checkpoint(os.path.join(model_dir, "preemption")) is None
    config = _config(plain_data, model_dir)
    model = checkpoints.build_model_from_config(model_dir_files.read_model_config(model_dir))
    optimizer = make_optimizer(config)
    optimizer.build(model.trainable_variables)
    state = checkpoints.TrainingCheckpoints(model_dir, model, optimizer,
                                            schedules.make_schedule(config),
                                            write_dir=str(tmp_path / "elsewhere"))
    assert state.restore_latest() == chief_ckpt
    assert int(state.step.numpy()) == step and int(optimizer.iterations.numpy()) == step
    state.save()  # the restored state, saved again: value for value what the non-chief saved
    restored = _weights(tmp_path / "elsewhere")
    assert restored.keys() == other.keys()
    for key in other:
        np.testing.assert_array_equal(restored[key], other[key], err_msg=key)

"""A full disk while training saves or logs: one line naming the path, and
nothing half-written published (the last complete checkpoint stays the
latest, no `_temp`/`.tmp` is left). Faked in process (a save that writes
part of a checkpoint, then fails as TensorFlow does), and for real on a small
tmpfs in a private mount namespace where the machine allows one."""

import errno
import os
import shutil
import subprocess
import sys

import keras
import pytest
import tensorflow as tf

from alexnet_tf import fileio
from alexnet_tf.training import checkpoints, disk_full, model_dir as model_dir_files
from alexnet_tf.training.loop import train
from alexnet_tf.training.optimizer import PaperSGD
from alexnet_tf.training.schedules import PlateauSchedule
from tiny_data import temporary_leftovers as leftovers, tiny_flags, tiny_train_config

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NO_SPACE = "No space left on device"


def _tf_no_space(path):
    return tf.errors.ResourceExhaustedError(None, None, f"{path}; {NO_SPACE} [Op:SaveV2]")


def test_full_disk_errors_name_the_path_they_failed_to_write():
    part = "/m/ckpt-6_temp/part-00000-of-00001.data-00000-of-00001.tempstate1"
    assert disk_full.full_disk_path(_tf_no_space(part), "/m") == "/m/ckpt-6"
    assert disk_full.full_disk_path(OSError(errno.ENOSPC, NO_SPACE, "/m/a.json"), "/m") \
        == "/m/a.json"
    assert disk_full.full_disk_path(OSError(errno.ENOSPC, NO_SPACE), "/m") == "/m"
    assert disk_full.full_disk_path(OSError(errno.EACCES, "denied", "/m/a"), "/m") is None
    assert disk_full.full_disk_path(
        tf.errors.ResourceExhaustedError(None, None, "OOM when allocating tensor"), "/m") is None
    with pytest.raises(disk_full.DiskFullError, match=r"^no space left on device writing /m/x"):
        with disk_full.refused_when_full("/m"):
            raise OSError(errno.ENOSPC, NO_SPACE, "/m/x")
    with pytest.raises(PermissionError):  # other errors pass unchanged
        with disk_full.refused_when_full("/m"):
            raise PermissionError(errno.EACCES, "denied", "/m/x")


def test_a_json_write_on_a_full_disk_names_the_file_and_leaves_the_old_one(tmp_path):
    target = tmp_path / "train_config.json"
    fileio.write_text(str(target), "old\n")

    with pytest.raises(OSError) as raised:
        with fileio.atomic_path(str(target)) as tmp:
            with open(tmp, "w") as f:
                f.write("half")
            raise OSError(errno.ENOSPC, NO_SPACE)  # what f.write raises on a full disk
    assert raised.value.filename == str(target)
    assert target.read_text() == "old\n" and os.listdir(tmp_path) == ["train_config.json"]


def _small_checkpoints(folder):
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    sgd = PaperSGD()
    sgd.build(model.trainable_variables)
    return checkpoints.TrainingCheckpoints(str(folder), model, sgd, PlateauSchedule(0.01))


def test_a_best_save_on_a_full_disk_keeps_the_old_best_whole(tmp_path, monkeypatch):
    ckpts = _small_checkpoints(tmp_path)
    ckpts.step.assign(2)
    assert ckpts.save_if_best(0.5, 1)
    real_save = tf.train.CheckpointManager.save

    def full(manager, *args, **kwargs):
        os.makedirs(os.path.join(manager.directory, "ckpt-4_temp"))  # a part was written
        raise _tf_no_space(os.path.join(manager.directory, "ckpt-4_temp", "part-0"))

    monkeypatch.setattr(tf.train.CheckpointManager, "save", full)
    ckpts.step.assign(4)
    with pytest.raises(tf.errors.ResourceExhaustedError):
        ckpts.save_if_best(0.25, 2)
    monkeypatch.setattr(tf.train.CheckpointManager, "save", real_save)
    assert model_dir_files.read_best_info(str(tmp_path))["step"] == 2
    assert checkpoints.checkpoint_path(str(tmp_path), "best").endswith("ckpt-2")
    assert ckpts.best_error == 0.5  # the failed one does not count as the best
    assert leftovers(tmp_path) == []


@pytest.mark.slow  # its own training (about 4 CPU-s)
def test_training_on_a_full_disk_stops_in_one_line_keeping_the_last_checkpoint(
        tiny_records, tmp_path, monkeypatch):
    model_dir = str(tmp_path / "run")
    real_write, calls = tf.train.Checkpoint._write, []

    def write_then_fill_the_disk(checkpoint, prefix, *args, **kwargs):
        calls.append(prefix)
        if len(calls) < 2:
            return real_write(checkpoint, prefix, *args, **kwargs)
        part = os.path.join(prefix + "_temp", "part-00000-of-00001.data-00000-of-00001")
        os.makedirs(os.path.dirname(part))
        with open(part, "wb") as f:
            f.write(b"\0" * 1000)  # TensorFlow got this far
        raise _tf_no_space(part + ".tempstate42")

    monkeypatch.setattr(tf.train.Checkpoint, "_write", write_then_fill_the_disk)
    config = tiny_train_config(tiny_records, model_dir, steps_per_epoch=4,
                               checkpoint_every_steps=2, log_every_steps=2, validation_steps=1)
    with pytest.raises(disk_full.DiskFullError) as raised:
        train(config)
    assert str(raised.value).startswith(
        f"no space left on device writing {os.path.join(model_dir, 'ckpt-4')}: ")
    assert "\n" not in str(raised.value)
    assert tf.train.latest_checkpoint(model_dir).endswith("ckpt-2")
    assert leftovers(model_dir) == []


def _private_tmpfs_works() -> bool:
    if not shutil.which("unshare"):
        return False
    probe = subprocess.run(["unshare", "--user", "--map-root-user", "--mount", "sh", "-c",
                            "mount -t tmpfs -o size=1m tmpfs /mnt"], capture_output=True)
    return probe.returncode == 0


@pytest.mark.slow  # a TensorFlow process that trains, in a mount namespace
@pytest.mark.timeout(600)
@pytest.mark.skipif(not _private_tmpfs_works(),
                    reason="needs `unshare` and unprivileged user and mount namespaces")
def test_a_real_full_disk(tiny_records, tmp_path):
    """The tiny model's checkpoint (weights and momentum) is 6.6 MB: on a 10 MB
    tmpfs the first fits and the second fills the disk mid-write."""
    mount = tmp_path / "small_disk"
    mount.mkdir()
    model_dir = mount / "run"
    command = [sys.executable, "-m", "launch.train", f"--data_dir={tiny_records}",
               f"--model_dir={model_dir}", "--batch_size=8", "--epochs=1",
               "--steps_per_epoch=4", "--checkpoint_every_steps=1", "--keep_checkpoints=1",
               "--validation_steps=1", *tiny_flags(), "--shuffle_buffer=16", "--seed=1"]
    script = (f"mount -t tmpfs -o size=10m tmpfs {mount} && "
              f"{{ {' '.join(command)} ; echo exit=$? ; find {model_dir} | sort ; "
              f"cat {model_dir}/checkpoint ; }}")
    env = dict(os.environ, PYTHONPATH=REPO, TF_CPP_MIN_LOG_LEVEL="2")
    done = subprocess.run(["unshare", "--user", "--map-root-user", "--mount", "sh", "-c",
                           script], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=500)
    errors = [line for line in done.stderr.splitlines() if line.startswith("launch.train:")]
    assert errors == [f"launch.train: error: no space left on device writing "
                      f"{model_dir}/ckpt-2: nothing half-written was kept; free some space and "
                      "run the same command again (it resumes from the last complete "
                      "checkpoint)"], done.stdout[-2000:] + done.stderr[-3000:]
    assert "exit=2" in done.stdout and "Traceback" not in done.stderr
    listing = [line for line in done.stdout.splitlines() if line.startswith(str(model_dir))]
    assert f"{model_dir}/ckpt-1.index" in listing
    assert not [p for p in listing if p.endswith("_temp") or ".tmp" in p or "ckpt-2" in p]
    assert 'model_checkpoint_path: "ckpt-1"' in done.stdout

"""A full disk while training saves or logs: one line naming the path, and
nothing half-written published (the last complete checkpoint stays the
latest, no `_temp`/`.tmp` is left). Faked in process (a save that writes
part of a checkpoint, then fails as TensorFlow does), and for real on a small
tmpfs in a private mount namespace where the machine allows one."""

import contextlib
import errno
import os
import shlex
import shutil
import subprocess
import tempfile

import keras
import pytest
import tensorflow as tf

from alexnet_tf import fileio
from alexnet_tf.training import checkpoints, disk_full, model_dir as model_dir_files
from alexnet_tf.training.loop import train
from alexnet_tf.training.optimizer import PaperSGD
from alexnet_tf.training.schedules import PlateauSchedule
from launchers import run_launcher
from tiny_data import temporary_leftovers as leftovers, tiny_flags, tiny_train_config

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


@pytest.mark.slow  # its own training (about 3 CPU-s)
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
    # The second save fails before the epoch ends: no validation step is built.
    config = tiny_train_config(tiny_records, model_dir, steps_per_epoch=4,
                               checkpoint_every_steps=1, validation_steps=1)
    with pytest.raises(disk_full.DiskFullError) as raised:
        train(config)
    assert str(raised.value).startswith(
        f"no space left on device writing {os.path.join(model_dir, 'ckpt-2')}: ")
    assert "\n" not in str(raised.value)
    assert tf.train.latest_checkpoint(model_dir).endswith("ckpt-1")
    assert leftovers(model_dir) == []


@contextlib.contextmanager
def _small_disk(folder, size: str):
    """A tmpfs of `size` mounted on `folder` in a private mount namespace, held
    by an `unshare` process while the block runs; yields the path by which
    this process reaches it (through the holder's /proc/<pid>/root), or None
    where the machine allows no such namespace. Gone with the holder."""
    if not shutil.which("unshare"):
        yield None
        return
    holder = subprocess.Popen(
        ["unshare", "--user", "--map-root-user", "--mount", "sh", "-c",
         f"mount -t tmpfs -o size={size} tmpfs {shlex.quote(str(folder))} && echo mounted "
         "&& exec cat"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL, text=True)
    try:
        mounted = holder.stdout.readline() == "mounted\n"  # or "" once it failed
        path = f"/proc/{holder.pid}/root{os.path.abspath(folder)}"
        try:
            reachable = mounted and os.stat(path).st_dev != os.stat(folder).st_dev
        except OSError:
            reachable = False
        yield path if reachable else None
    finally:
        holder.stdin.close()  # cat ends, and the namespace with its tmpfs
        holder.wait(timeout=60)


def _private_tmpfs_works() -> bool:
    with tempfile.TemporaryDirectory() as folder, _small_disk(folder, "1m") as path:
        return path is not None


@pytest.mark.slow  # its own training (about 3 CPU-s)
@pytest.mark.timeout(600)
@pytest.mark.skipif(not _private_tmpfs_works(),
                    reason="needs `unshare`, unprivileged user and mount namespaces, and "
                           "access to the namespace's files through /proc/<pid>/root")
def test_a_real_full_disk(tiny_records, tmp_path):
    """The tiny model's checkpoint (weights and momentum) is 6.6 MB: on a 10 MB
    tmpfs the first fits and the second fills the disk mid-write. launch.train
    runs in this process (tests/launchers.py), writing through the mount
    namespace's holder: TensorFlow's own write fails for real."""
    mount = tmp_path / "small_disk"
    mount.mkdir()
    with _small_disk(mount, "10m") as disk:
        assert disk is not None
        model_dir = f"{disk}/run"
        result = run_launcher(
            "launch.train", f"--data_dir={tiny_records}", f"--model_dir={model_dir}",
            "--batch_size=8", "--epochs=1", "--steps_per_epoch=4",
            "--checkpoint_every_steps=1", "--keep_checkpoints=1", "--validation_steps=1",
            *tiny_flags(), "--shuffle_buffer=16", "--seed=1")
        size = os.statvfs(disk)
        assert size.f_blocks * size.f_frsize == 10 * 2**20  # the small disk, not tmp_path's
        listing = sorted(os.path.join(folder, name) for folder, dirs, files in os.walk(model_dir)
                         for name in dirs + files)
        with open(f"{model_dir}/checkpoint") as f:
            checkpoint_file = f.read()
    errors = [line for line in result.stderr.splitlines() if line.startswith("launch.train:")]
    assert errors == [f"launch.train: error: no space left on device writing "
                      f"{model_dir}/ckpt-2: nothing half-written was kept; free some space and "
                      "run the same command again (it resumes from the last complete "
                      "checkpoint)"], result.stdout[-2000:] + result.stderr[-3000:]
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert f"{model_dir}/ckpt-1.index" in listing
    assert not [p for p in listing if p.endswith("_temp") or ".tmp" in p or "ckpt-2" in p]
    assert 'model_checkpoint_path: "ckpt-1"' in checkpoint_file

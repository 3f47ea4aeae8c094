"""One writer per folder (issue 21, item 3): a second training or export into
a held folder is refused naming the holder, a killed holder's lock is taken
over by exactly one of the runs racing for it, and the lock goes on every
exit path."""

import json
import os
import socket
import subprocess
import sys
import textwrap

import pytest

from alexnet_tf import run_lock
from alexnet_tf.training import distribute
from launchers import run_launcher
from tiny_data import TINY_MODEL, tiny_flags, tiny_train_config

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENV = dict(os.environ, PYTHONPATH=REPO, TF_CPP_MIN_LOG_LEVEL="2")


def _lock_path(folder):
    return os.path.join(folder, run_lock.LOCK_FILENAME)


# ---------------------------------------------------------------- in one process

def test_a_second_holder_is_refused_naming_the_first(tmp_path):
    folder = str(tmp_path / "run")
    with run_lock.hold(folder, "training") as held:
        with open(_lock_path(folder), encoding="utf-8") as f:
            written = json.load(f)
        assert (written["host"], written["pid"]) == (socket.gethostname(), os.getpid())
        assert written["start_ticks"] == run_lock.process_start(os.getpid())
        # flock excludes a second open file description, in this process too.
        with pytest.raises(run_lock.LockedError) as refused:
            run_lock.acquire(folder, "export")
        message = str(refused.value)
        assert "\n" not in message
        assert f"training on host {socket.gethostname()}, pid {os.getpid()}" in message
        assert held.previous == {}
    # Released: the file is gone, and the folder the lock created (empty) too.
    assert not os.path.exists(folder)


def test_released_when_the_block_fails_and_a_used_folder_stays(tmp_path):
    folder = tmp_path / "run"
    with pytest.raises(RuntimeError):
        with run_lock.hold(str(folder), "training"):
            (folder / "checkpoint").write_text("written by the holder")
            raise RuntimeError("the run failed")
    assert os.listdir(folder) == ["checkpoint"]  # its files stay, the lock goes
    with run_lock.hold(str(folder), "training"):
        pass
    assert os.listdir(folder) == ["checkpoint"]


def test_a_file_in_place_of_the_folder_is_one_line(tmp_path):
    taken = tmp_path / "taken"
    taken.write_text("x")
    with pytest.raises(run_lock.InputError, match="taken is a file"):
        run_lock.acquire(str(taken), "export")


def test_a_reused_pid_or_another_boot_is_not_the_holder():
    me = run_lock.identity("training")
    assert run_lock.holder_alive(me) is True
    assert run_lock.holder_alive({**me, "start_ticks": me["start_ticks"] + 1}) is False
    assert run_lock.holder_alive({**me, "boot_id": "another-boot"}) is False
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()  # reaped: its pid names no process now
    assert run_lock.holder_alive({**me, "pid": child.pid, "start_ticks": None}) is False
    assert run_lock.holder_alive({**me, "host": "another-host"}) is None


def test_a_lock_file_naming_an_impossible_pid_is_taken_over(tmp_path):
    me = run_lock.identity("training")
    for pid in (0, -1, 10**30, "abc", None):  # kill(0/-1) would ask about groups
        assert run_lock.holder_alive({**me, "pid": pid}) is False
    folder = tmp_path / "run"
    folder.mkdir()
    (folder / run_lock.LOCK_FILENAME).write_text(json.dumps({**me, "pid": 10**30}))
    with run_lock.hold(str(folder), "training") as held:
        assert held.previous["pid"] == 10**30


def test_a_lock_file_that_is_a_link_is_refused_and_its_target_kept(tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    for name, target in (("to_a_file", victim), ("dangling", tmp_path / "nowhere")):
        folder = tmp_path / name
        folder.mkdir()
        os.symlink(target, _lock_path(folder))
        with pytest.raises(run_lock.InputError, match="is a symbolic link") as refused:
            run_lock.acquire(str(folder), "training")
        assert "\n" not in str(refused.value)
    assert victim.read_text() == "precious"  # not truncated to our identity
    assert not (tmp_path / "nowhere").exists()  # nor created through the link


@pytest.mark.parametrize("make", [os.mkdir, os.mkfifo], ids=["folder", "fifo"])
def test_a_lock_path_that_is_not_a_file_is_one_line(tmp_path, make):
    make(_lock_path(tmp_path))
    with pytest.raises(run_lock.InputError, match="lock file") as refused:
        run_lock.acquire(str(tmp_path), "export")
    assert "\n" not in str(refused.value)


def test_training_into_a_held_model_dir_is_refused_before_writing(tiny_records, tmp_path):
    from alexnet_tf.training.loop import train
    model_dir = tmp_path / "run"
    with run_lock.hold(str(model_dir), "training"):
        with pytest.raises(run_lock.LockedError, match=f"pid {os.getpid()}"):
            train(tiny_train_config(tiny_records, model_dir))
        assert os.listdir(model_dir) == [run_lock.LOCK_FILENAME]
    # A run refused for its data leaves no model_dir behind (the lock made it).
    with pytest.raises(run_lock.InputError, match="no-such-data not found"):
        train(tiny_train_config(tmp_path / "no-such-data", model_dir))
    assert not model_dir.exists()


@pytest.mark.slow  # an export of its own
def test_export_into_a_held_folder_is_refused(tmp_path):
    from alexnet_tf.data.labels import LabelMap
    from alexnet_tf.model.alexnet import build_alexnet
    from alexnet_tf.serving import export
    model = build_alexnet(2, **TINY_MODEL)
    labels = LabelMap(("n01", "n02"), ("a", "b"))
    base = tmp_path / "saved"
    with run_lock.hold(str(base), "export"):
        with pytest.raises(run_lock.LockedError, match="export on host"):
            export.export_saved_model(model, labels, str(base), warmup=False)
        assert os.listdir(base) == [run_lock.LOCK_FILENAME]
    path = export.export_saved_model(model, labels, str(base), warmup=False)
    assert path == str(base / "1") and sorted(os.listdir(base)) == ["1"]


@pytest.mark.parametrize("task, cluster, locks", [
    ({"type": "worker", "index": 0}, {"worker": ["a:1", "b:1"]}, True),
    ({"type": "worker", "index": 1}, {"worker": ["a:1", "b:1"]}, False),
    ({"type": "chief", "index": 0}, {"chief": ["c:1"], "worker": ["a:1"]}, True),
    ({"type": "worker", "index": 0}, {"chief": ["c:1"], "worker": ["a:1"]}, False),
])
def test_only_the_chief_holds_the_model_dir_lock(tmp_path, monkeypatch, task, cluster, locks):
    monkeypatch.setenv("TF_CONFIG", json.dumps({"cluster": cluster, "task": task}))
    model_dir = tmp_path / "run"
    with distribute.model_dir_lock(str(model_dir), "multi_worker"):
        assert os.path.exists(_lock_path(model_dir)) == locks
    # Outside multi_worker, the one process is the chief whatever TF_CONFIG says.
    with distribute.model_dir_lock(str(model_dir), "default"):
        assert os.path.exists(_lock_path(model_dir))


# ---------------------------------------------------------------- across processes

HOLDER = textwrap.dedent("""
    import sys
    from alexnet_tf import run_lock
    lock = run_lock.acquire(sys.argv[1], "training")
    print("held", flush=True)
    sys.stdin.read()  # holds until the test closes stdin (or kills it)
    lock.release()
""")

RACER = textwrap.dedent("""
    import os, sys, time
    from alexnet_tf import run_lock
    folder, go = sys.argv[1:3]
    while not os.path.exists(go):  # both start together
        time.sleep(0.001)
    try:
        lock = run_lock.acquire(folder, "training")
    except run_lock.LockedError as e:
        print("refused", e, flush=True)
        sys.exit(3)
    print("won", os.getpid(), flush=True)
    sys.stdin.read()
    lock.release()
""")


def _start(script, *args):
    return subprocess.Popen([sys.executable, "-c", script, *map(str, args)], cwd=REPO,
                            env=ENV, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


@pytest.mark.timeout(120)
def test_a_killed_holders_lock_goes_to_exactly_one_of_two_racers(tmp_path):
    folder = tmp_path / "run"
    holder = _start(HOLDER, folder)
    assert holder.stdout.readline() == "held\n", holder.stderr.read()
    holder.kill()  # SIGKILL: no release; the file stays, naming it
    holder.wait()
    with open(_lock_path(folder), encoding="utf-8") as f:
        left = json.load(f)
    assert left["pid"] == holder.pid and run_lock.holder_alive(left) is False

    go = tmp_path / "go"
    racers = [_start(RACER, folder, go) for _ in range(2)]
    try:
        go.write_text("")
        first_lines = [racer.stdout.readline() for racer in racers]
        won = [i for i, line in enumerate(first_lines) if line.startswith("won")]
        assert len(won) == 1, first_lines
        winner, loser = racers[won[0]], racers[1 - won[0]]
        refusal = first_lines[1 - won[0]]
        assert f"pid {winner.pid}," in refusal and socket.gethostname() in refusal
        assert loser.wait(timeout=60) == 3
        winner.stdin.close()
        assert winner.wait(timeout=60) == 0
        # The winner said whose stale lock it took over, and that it is gone.
        said = winner.stderr.read()
        assert (f"was left locked by training on host {socket.gethostname()}, pid "
                f"{holder.pid},") in said and "which is no longer running" in said
    finally:
        for racer in racers:
            racer.kill()
            racer.wait()
    assert os.listdir(folder) == []  # released: the winner removed the file


@pytest.mark.timeout(120)
def test_the_launchers_refuse_a_held_folder_in_one_line(tiny_records, tmp_path):
    """The holders are other processes; the refused launchers run in this one
    (their one line and exit status are the subject, not a process boundary)."""
    model_dir, export_dir = tmp_path / "run", tmp_path / "saved"
    holders = [_start(HOLDER, model_dir), _start(HOLDER, export_dir)]
    try:
        for holder in holders:
            assert holder.stdout.readline() == "held\n", holder.stderr.read()
        commands = {
            "launch.train": [f"--data_dir={tiny_records}", f"--model_dir={model_dir}",
                             "--batch_size=8", "--epochs=1", "--steps_per_epoch=2",
                             *tiny_flags()],
            "launch.export": ["--untrained", f"--labels={tiny_records}/labels.txt",
                              f"--export_dir={export_dir}", "--nowarmup"],
        }
        for (tool, args), holder in zip(commands.items(), holders):
            result = run_launcher(tool, *args, cwd=tmp_path)
            lines = result.stderr.strip().splitlines()
            assert result.returncode == 2, result.stderr
            assert len(lines) == 1 and lines[0].startswith(f"{tool}: error: "), lines
            assert f"host {socket.gethostname()}, pid {holder.pid}," in lines[0]
        assert os.listdir(model_dir) == [run_lock.LOCK_FILENAME]
        assert os.listdir(export_dir) == [run_lock.LOCK_FILENAME]
    finally:
        for holder in holders:
            holder.kill()
            holder.wait()

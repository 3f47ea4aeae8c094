"""Kill -9 a training run mid-way, run the same command again: it resumes
from the latest checkpoint, the step count continues, and the finished run's
loss curve (from its TensorBoard logs) has no jump back to the start."""

import os
import subprocess
import sys

import pytest
import tensorflow as tf

from alexnet_tf.figures import tb_logs
from launchers import run_launcher
from tiny_data import TINY_LEARNING_RATE, tiny_flags

pytestmark = pytest.mark.slow  # a subprocess training, killed

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOTAL_STEPS = 50
KILLED_AT_STEP = 33  # as its 33rd one-step chunk starts: steps 31-32 are lost
LAST_CHECKPOINT = 30


def _flags(data_dir, model_dir):
    # He init at TINY_LEARNING_RATE: the loss starts near log(3) and is about
    # 0.3 by step 30; a run restarted from scratch would show that start again.
    return [f"--data_dir={data_dir}", f"--model_dir={model_dir}", "--batch_size=8",
            "--epochs=1", f"--steps_per_epoch={TOTAL_STEPS}", "--validation_steps=1",
            "--checkpoint_every_steps=5", "--log_every_steps=1", "--keep_checkpoints=2",
            *tiny_flags(), "--init=he", "--dropout=0",
            f"--learning_rate={TINY_LEARNING_RATE}", "--shuffle_buffer=64", "--seed=1"]


def _latest_step(model_dir):
    path = tf.train.latest_checkpoint(model_dir)
    return int(path.rsplit("-", 1)[1]) if path else 0


@pytest.mark.timeout(600)
def test_sigkill_then_rerun_resumes_without_a_jump(tiny_records, tmp_path):
    model_dir = str(tmp_path / "run")
    flags = _flags(tiny_records, model_dir)
    # A real SIGKILL at an exact moment (tests/signal_probe.py), not a timer's guess.
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([REPO, os.path.join(REPO, "tests")]),
               TF_CPP_MIN_LOG_LEVEL="2")
    first = subprocess.run([sys.executable, os.path.join(REPO, "tests", "signal_probe.py"),
                            f"chunk:{KILLED_AT_STEP}", "KILL", *flags], cwd=REPO, env=env,
                           capture_output=True, text=True, timeout=400)
    assert first.returncode == -9, first.stdout[-3000:] + first.stderr[-3000:]
    killed_at = _latest_step(model_dir)
    assert killed_at == LAST_CHECKPOINT  # past step 30's save, before step 35's

    # The same command again (in this process: the rerun is not about a process boundary).
    second = run_launcher("launch.train", *flags, cwd=REPO)
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
    resumed_at = int(second.stdout.split("resuming at step ", 1)[1].split()[0])
    assert resumed_at == killed_at
    assert f"step {TOTAL_STEPS}/{TOTAL_STEPS}" in second.stdout

    final = tf.train.latest_checkpoint(model_dir)
    assert final.endswith(f"ckpt-{TOTAL_STEPS}")
    reader = tf.train.load_checkpoint(final)
    # The optimizer's own counter ran on from the checkpoint, not from zero.
    assert reader.get_tensor("optimizer/_iterations/.ATTRIBUTES/VARIABLE_VALUE") == TOTAL_STEPS

    curve = dict(tb_logs.read_scalars(os.path.join(model_dir, "logs"))["train"]["loss"])
    assert sorted(curve) == list(range(1, TOTAL_STEPS + 1))
    start_spike = max(curve[s] for s in range(1, 8))
    after_resume = max(curve[s] for s in range(resumed_at + 1, min(resumed_at + 8, TOTAL_STEPS + 1)))
    assert after_resume < 0.5 * start_spike, (start_spike, after_resume)
    assert curve[TOTAL_STEPS] < 0.25 * start_spike

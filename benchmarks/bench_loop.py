"""Per-step overhead of the training loop: steps/s at several `steps_per_loop`.

    python -m benchmarks.bench_loop [--rounds=3]

A tiny model (where Python and the host sync dominate a step) at
steps_per_loop 1, 10 and 100, and the full AlexNet at batch 32 with 1 and
10, all through `alexnet_tf.training.steps.TrainSteps` on in-memory batches
(no input pipeline), in one run. Rounds are interleaved; the best round of
each setting is reported with its ratio to steps_per_loop=1. The last line
says what the measured per-step overhead would cost an accelerator that
trains 10,000 images/s.
"""

from __future__ import annotations

import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app, flags  # noqa: E402
import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from alexnet_tf.data import input_pipeline  # noqa: E402
from alexnet_tf.model.alexnet import build_alexnet  # noqa: E402
from alexnet_tf.training.optimizer import PaperSGD  # noqa: E402
from alexnet_tf.training.steps import TrainSteps  # noqa: E402

flags.DEFINE_integer("rounds", 3, "Interleaved rounds per setting (the best is reported).")
flags.DEFINE_integer("tiny_steps", 300, "Steps per round for the tiny model.")
flags.DEFINE_integer("alexnet_steps", 20, "Steps per round for AlexNet.")
FLAGS = flags.FLAGS

ACCELERATOR_IMAGES_PER_SECOND = 10_000
PAPER_BATCH = 128


def tiny_model() -> keras.Model:
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Flatten()(inputs)
    x = keras.layers.Dense(10, name="fc8")(x)
    return keras.Model(inputs, keras.layers.Softmax(name="probabilities")(x))


def batches(size: int, batch: int) -> tf.data.Dataset:
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (batch, size, size, 3)).astype(np.uint8)
    features = {input_pipeline.IMAGE: images,
                input_pipeline.LIGHTING: np.zeros((batch, 3), np.float32)}
    labels = rng.integers(0, 10, batch).astype(np.int32)
    return tf.data.Dataset.from_tensors((features, labels)).repeat().prefetch(4)


def make_steps(model: keras.Model, batch: int) -> TrainSteps:
    optimizer = PaperSGD(1e-4)
    optimizer.build(model.trainable_variables)
    return TrainSteps(model, optimizer, tf.distribute.get_strategy(), batch)


def steps_per_second(steps: TrainSteps, iterator, per_loop: int, total: int) -> float:
    steps.train_loop(iterator, per_loop)  # trace and warm up
    start = time.perf_counter()
    for _ in range(max(1, total // per_loop)):
        steps.train_loop(iterator, per_loop)
    return max(1, total // per_loop) * per_loop / (time.perf_counter() - start)


def measure(name: str, steps: TrainSteps, iterator, settings, total: int, rounds: int):
    best = {n: 0.0 for n in settings}
    for _ in range(rounds):
        for n in settings:
            best[n] = max(best[n], steps_per_second(steps, iterator, n, total))
    for n in settings:
        print(f"{name:26s} steps_per_loop {n:>3d}: {best[n]:9.1f} steps/s  "
              f"({best[n] / best[settings[0]]:.2f}x of steps_per_loop {settings[0]})")
    return best


def main(argv):
    del argv
    print(f"TensorFlow {tf.__version__}, {os.cpu_count()} CPU(s); best of {FLAGS.rounds} "
          "interleaved rounds")
    tiny = measure("tiny model (batch 32)", make_steps(tiny_model(), 32),
                   iter(batches(8, 32)), (1, 10, 100), FLAGS.tiny_steps, FLAGS.rounds)
    alexnet = build_alexnet(1000)
    measure("AlexNet (batch 32)", make_steps(alexnet, 32), iter(batches(224, 32)), (1, 10),
            FLAGS.alexnet_steps, FLAGS.rounds)
    overhead = 1.0 / tiny[1] - 1.0 / tiny[100]  # seconds per step the loop removes
    step_time = PAPER_BATCH / ACCELERATOR_IMAGES_PER_SECOND
    print(f"per-step overhead removed by steps_per_loop 100: {overhead * 1e3:.3f} ms; at "
          f"{ACCELERATOR_IMAGES_PER_SECOND:,} images/s (batch {PAPER_BATCH}: "
          f"{step_time * 1e3:.1f} ms a step) that is {overhead / step_time:.1%} of each "
          "step at steps_per_loop 1")


if __name__ == "__main__":
    app.run(main)

"""Images/s of AlexNet's two-tower build vs a `Conv2D(groups=2)` build.

Both are the paper's network (same kernels, same connectivity, same parameter
count) on the default device; the baseline expresses the towers of conv2,
conv4 and conv5 as grouped convolutions (conv1, conv3 and the dense layers,
whose tower halves read the same input, as one layer each). TensorFlow has no
grouped convolution kernel on the CPU, so Keras 3 compiles each grouped
convolution with XLA (`jit_compile=True` per op); the tower build needs no
XLA, which is what TensorFlow Serving needs.

Measured in one run, interleaved (towers, baseline, towers, ...) so that
load from other processes hits both alike; warm-up steps are excluded.
Prints images/s and the ratio towers / baseline (> 1: towers faster).

    python benchmarks/bench_model.py --batch_sizes=32,128 --steps=3
"""

from __future__ import annotations

import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from absl import app, flags  # noqa: E402

from alexnet_tf.model.layers import LocalResponseNormalization, MeanSubtraction  # noqa: E402
from alexnet_tf.model.alexnet import build_alexnet  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_list("batch_sizes", ["32", "128"], "Batch sizes to measure.")
flags.DEFINE_integer("steps", 3, "Timed steps per measurement (after warm-up).")
flags.DEFINE_integer("warmup", 1, "Untimed steps first (tracing, XLA compilation).")
flags.DEFINE_integer("rounds", 2, "Interleaved rounds of towers/baseline; the best "
                     "round of each counts (least disturbed by other load).")
flags.DEFINE_integer("num_classes", 1000, "Classes of the classifier.")


def grouped_alexnet(num_classes: int) -> keras.Model:
    """The paper's network with `Conv2D(groups=2)` for conv2, conv4, conv5."""
    relu = "relu"
    inputs = keras.Input((224, 224, 3))
    x = MeanSubtraction()(inputs)
    x = keras.layers.ZeroPadding2D(2)(x)
    x = keras.layers.Conv2D(96, 11, strides=4, activation=relu)(x)
    x = LocalResponseNormalization()(x)
    x = keras.layers.MaxPooling2D(3, 2)(x)
    x = keras.layers.Conv2D(256, 5, padding="same", groups=2, activation=relu)(x)
    x = LocalResponseNormalization()(x)
    x = keras.layers.MaxPooling2D(3, 2)(x)
    x = keras.layers.Conv2D(384, 3, padding="same", activation=relu)(x)
    x = keras.layers.Conv2D(384, 3, padding="same", groups=2, activation=relu)(x)
    x = keras.layers.Conv2D(256, 3, padding="same", groups=2, activation=relu)(x)
    x = keras.layers.MaxPooling2D(3, 2)(x)
    x = keras.layers.Flatten()(x)
    for _ in range(2):
        x = keras.layers.Dense(4096, activation=relu)(x)
        x = keras.layers.Dropout(0.5)(x)
    x = keras.layers.Dense(num_classes)(x)
    outputs = keras.layers.Activation("softmax")(x)
    return keras.Model(inputs, outputs, name="alexnet_groups2")


def make_steps(model: keras.Model):
    """(inference, training) tf.functions: forward only; forward, backward
    and an SGD-momentum update (section 5's optimiser)."""
    optimizer = keras.optimizers.SGD(0.01, momentum=0.9)
    optimizer.build(model.trainable_variables)

    @tf.function
    def infer(images):
        return model(images, training=False)

    @tf.function
    def train(images, labels):
        with tf.GradientTape() as tape:
            probabilities = model(images, training=True)
            loss = tf.reduce_mean(
                keras.losses.sparse_categorical_crossentropy(labels, probabilities))
        grads = tape.gradient(loss, model.trainable_variables)
        optimizer.apply_gradients(zip(grads, model.trainable_variables))
        return loss

    return infer, train


def images_per_second(step, args, batch: int) -> float:
    for _ in range(FLAGS.warmup):
        np.asarray(step(*args))
    start = time.perf_counter()
    for _ in range(FLAGS.steps):
        result = step(*args)
    np.asarray(result)  # wait for the last step
    return FLAGS.steps * batch / (time.perf_counter() - start)


def main(argv):
    del argv
    keras.utils.set_random_seed(0)
    models = {"towers": build_alexnet(FLAGS.num_classes),
              "groups=2": grouped_alexnet(FLAGS.num_classes)}
    assert models["towers"].count_params() == models["groups=2"].count_params()
    steps = {name: make_steps(model) for name, model in models.items()}
    print(f"TF {tf.__version__}, Keras {keras.__version__}, CPU threads "
          f"{os.cpu_count()}, params {models['towers'].count_params():,} each, "
          f"{FLAGS.steps} timed steps after {FLAGS.warmup} warm-up, best of "
          f"{FLAGS.rounds} interleaved rounds")
    print(f"{'mode':<10}{'batch':>6}{'towers img/s':>14}{'groups=2 img/s':>16}{'ratio':>8}")
    for batch in (int(b) for b in FLAGS.batch_sizes):
        rng = np.random.default_rng(batch)
        images = tf.constant(rng.uniform(0, 255, (batch, 224, 224, 3)), tf.float32)
        labels = tf.constant(rng.integers(0, FLAGS.num_classes, batch), tf.int32)
        for mode, index, args in (("inference", 0, (images,)),
                                  ("training", 1, (images, labels))):
            best = {name: 0.0 for name in models}
            for _ in range(FLAGS.rounds):
                for name in models:
                    rate = images_per_second(steps[name][index], args, batch)
                    best[name] = max(best[name], rate)
            ratio = best["towers"] / best["groups=2"]
            print(f"{mode:<10}{batch:>6}{best['towers']:>14.1f}"
                  f"{best['groups=2']:>16.1f}{ratio:>8.2f}", flush=True)


if __name__ == "__main__":
    app.run(main)

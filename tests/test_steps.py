"""The train and eval steps apart from the loop, on a tiny model: n steps in
one compiled loop are n single steps; evaluation counts right; loops stop at
every boundary."""

import numpy as np
import pytest
import tensorflow as tf
import keras

from alexnet_tf.data import input_pipeline
from alexnet_tf.training import distribute
from alexnet_tf.training.config import TrainConfig
from alexnet_tf.training.loop import loop_length
from alexnet_tf.training.optimizer import PaperSGD
from alexnet_tf.training.steps import TrainSteps

BATCH = 4


def _model(seed=0):
    inputs = keras.Input((6, 6, 3))
    x = keras.layers.Flatten()(inputs)
    x = keras.layers.Dense(3, name="fc8",
                           kernel_initializer=keras.initializers.RandomNormal(0, 0.01, seed))(x)
    return keras.Model(inputs, keras.layers.Softmax(name="probabilities")(x))


def _batches(count, seed=0):
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (count * BATCH, 6, 6, 3)).astype(np.uint8)
    labels = rng.integers(0, 3, count * BATCH).astype(np.int32)
    lighting = rng.normal(0, 1, (count * BATCH, 3)).astype(np.float32)
    return tf.data.Dataset.from_tensor_slices(
        ({input_pipeline.IMAGE: images, input_pipeline.LIGHTING: lighting}, labels)
    ).batch(BATCH)


def _run(strategy, loops):
    with strategy.scope():
        model = _model()
        optimizer = PaperSGD(1e-4, 0.9, 5e-4)
        optimizer.build(model.trainable_variables)
    steps = TrainSteps(model, optimizer, strategy, BATCH)
    iterator = iter(strategy.experimental_distribute_dataset(_batches(sum(loops))))
    sums = [steps.train_loop(iterator, n) for n in loops]
    return model, np.sum(sums, axis=0)


def test_n_steps_in_one_loop_equal_n_single_steps():
    strategy = tf.distribute.get_strategy()
    one_by_one, sums_one = _run(strategy, [1] * 6)
    looped, sums_looped = _run(strategy, [6])
    for a, b in zip(one_by_one.get_weights(), looped.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(sums_one, sums_looped, rtol=1e-5)
    assert not np.allclose(one_by_one.get_weights()[0], _model().get_weights()[0])


def test_the_loop_runs_under_a_mirrored_strategy_like_one_device():
    mirrored = distribute.mirrored_strategy(["/cpu:0", "/cpu:1"])
    model, sums = _run(mirrored, [3, 3])
    single, single_sums = _run(tf.distribute.get_strategy(), [6])
    for a, b in zip(model.get_weights(), single.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(sums, single_sums, rtol=1e-4)


def test_evaluate_counts_every_image_and_the_right_errors():
    strategy = tf.distribute.get_strategy()
    model = _model(seed=3)
    steps = TrainSteps(model, PaperSGD(0.01), strategy, BATCH)
    rng = np.random.default_rng(1)
    images = rng.uniform(0, 255, (10, 6, 6, 3)).astype(np.float32)
    labels = rng.integers(0, 3, 10).astype(np.int32)
    figures = steps.evaluate(tf.data.Dataset.from_tensor_slices((images, labels)).batch(4))
    probabilities = model(images).numpy()
    expected_top1 = np.mean(np.argmax(probabilities, -1) != labels)
    expected_loss = np.mean(-np.log(probabilities[np.arange(10), labels]))
    assert figures["top1_error"] == pytest.approx(expected_top1)
    assert figures["loss"] == pytest.approx(expected_loss, rel=1e-5)
    assert figures["top5_error"] == 0.0  # 3 classes: always in the top 5
    with pytest.raises(ValueError, match="gave no images"):
        steps.evaluate(tf.data.Dataset.from_tensor_slices((images, labels)).take(0).batch(4))


def test_a_non_finite_loss_shows_in_the_loop_sums():
    strategy = tf.distribute.get_strategy()
    model = _model()
    optimizer = PaperSGD(1e30)  # the first update overflows float32
    steps = TrainSteps(model, optimizer, strategy, BATCH)
    loss_sum, _, _ = steps.train_loop(iter(_batches(4)), 4)
    assert not np.isfinite(loss_sum)


@pytest.mark.parametrize("step, expected", [
    (0, 10), (5, 5),     # the next log at 10
    (10, 2),             # the epoch ends at 12
    (12, 8),             # the checkpoint at 20
    (38, 2),             # the end of the run at 40
])
def test_a_loop_never_crosses_a_log_checkpoint_or_epoch_boundary(step, expected):
    config = TrainConfig("d", "m", steps_per_loop=100, log_every_steps=10,
                         checkpoint_every_steps=20)
    assert loop_length(step, config, steps_per_epoch=12, total=40) == expected
    one = TrainConfig("d", "m", steps_per_loop=1)
    assert loop_length(step, one, steps_per_epoch=12, total=40) == 1

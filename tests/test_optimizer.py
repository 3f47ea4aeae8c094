"""PaperSGD against the section 5 update rule computed by hand in numpy."""

import numpy as np
import pytest
import tensorflow as tf
import keras

from alexnet_tf.training import distribute
from alexnet_tf.training.optimizer import PaperSGD

LR, MOMENTUM, WD = 0.1, 0.9, 0.05  # a large decay so its effect is far above float error


def tiny_model(seed=0):
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((6, 6, 2))
    x = keras.layers.Conv2D(3, 3, activation="relu", name="conv")(inputs)
    x = keras.layers.Flatten()(x)
    outputs = keras.layers.Dense(4, name="fc")(x)
    model = keras.Model(inputs, outputs)
    # Non-zero biases, so decay on them (or its absence) is visible.
    for layer in model.layers:
        if getattr(layer, "bias", None) is not None:
            layer.bias.assign(np.random.default_rng(seed).normal(size=layer.bias.shape))
    return model


def batch(seed=1, n=8):
    rng = np.random.default_rng(seed)
    return (rng.normal(size=(n, 6, 6, 2)).astype(np.float32),
            rng.integers(0, 4, size=n).astype(np.int32))


def loss_fn(model, x, y, global_batch):
    logits = model(x, training=True)
    per_example = keras.losses.sparse_categorical_crossentropy(y, logits, from_logits=True)
    return tf.reduce_sum(per_example) / global_batch


def gradients(model, x, y):
    with tf.GradientTape() as tape:
        loss = loss_fn(model, x, y, len(y))
    return tape.gradient(loss, model.trainable_variables)


def expected_after_steps(model, optimizer, steps, decay_biases):
    """Runs `optimizer` for `steps` and returns (actual, hand-computed) weights."""
    weights = [v.numpy().astype(np.float64) for v in model.trainable_variables]
    velocity = [np.zeros_like(w) for w in weights]
    for step in range(steps):
        x, y = batch(seed=step)
        grads = gradients(model, x, y)  # at the current weights
        for i, (w, g) in enumerate(zip(weights, grads)):
            decays = decay_biases or w.ndim >= 2
            wd = WD if decays else 0.0
            velocity[i] = MOMENTUM * velocity[i] - wd * LR * w - LR * g.numpy()
            weights[i] = w + velocity[i]
        optimizer.apply_gradients(zip(grads, model.trainable_variables))
    return [v.numpy() for v in model.trainable_variables], weights


@pytest.mark.parametrize("steps", [1, 2])
@pytest.mark.parametrize("decay_biases", [False, True])
def test_every_weight_follows_the_papers_rule(steps, decay_biases):
    model = tiny_model()
    optimizer = PaperSGD(LR, momentum=MOMENTUM, weight_decay=WD, decay_biases=decay_biases)
    actual, expected = expected_after_steps(model, optimizer, steps, decay_biases)
    assert len(actual) == 4  # conv kernel/bias, fc kernel/bias
    for variable, a, e in zip(model.trainable_variables, actual, expected):
        np.testing.assert_allclose(a, e, rtol=1e-5, atol=1e-6, err_msg=variable.path)
    assert int(optimizer.iterations.numpy()) == steps


def test_bias_decay_choice_changes_only_biases():
    results = {}
    for decay_biases in (False, True):
        model = tiny_model()
        optimizer = PaperSGD(LR, momentum=MOMENTUM, weight_decay=WD, decay_biases=decay_biases)
        results[decay_biases], _ = expected_after_steps(model, optimizer, 1, decay_biases)
    for i, (a, b) in enumerate(zip(results[False], results[True])):
        if a.ndim >= 2:
            np.testing.assert_array_equal(a, b)
        else:
            assert np.abs(a - b).max() > 1e-4, f"variable {i}: bias decay had no effect"


def test_differs_from_keras_decoupled_weight_decay():
    """The reason this class exists: Keras' SGD(weight_decay) is not the rule."""
    finals = []
    for optimizer in (PaperSGD(LR, momentum=MOMENTUM, weight_decay=WD, decay_biases=True),
                      keras.optimizers.SGD(LR, momentum=MOMENTUM, weight_decay=WD)):
        model = tiny_model()
        for step in range(2):
            x, y = batch(seed=step)
            optimizer.apply_gradients(zip(gradients(model, x, y), model.trainable_variables))
        finals.append([v.numpy() for v in model.trainable_variables])
    kernel_gap = np.abs(finals[0][0] - finals[1][0]).max()
    assert kernel_gap > 1e-4


def test_without_decay_equals_keras_momentum_sgd():
    finals = []
    for optimizer in (PaperSGD(LR, momentum=MOMENTUM, weight_decay=0.0),
                      keras.optimizers.SGD(LR, momentum=MOMENTUM)):
        model = tiny_model()
        for step in range(2):
            x, y = batch(seed=step)
            optimizer.apply_gradients(zip(gradients(model, x, y), model.trainable_variables))
        finals.append([v.numpy() for v in model.trainable_variables])
    for a, b in zip(*finals):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)


def test_learning_rate_change_is_used_and_checkpointed(tmp_path):
    model = tiny_model()
    optimizer = PaperSGD(0.01)
    x, y = batch()
    optimizer.apply_gradients(zip(gradients(model, x, y), model.trainable_variables))
    optimizer.learning_rate = 0.001  # a plateau drop, as the training loop does it
    assert np.isclose(float(optimizer.learning_rate.numpy()), 0.001)
    checkpoint = tf.train.Checkpoint(model=model, optimizer=optimizer)
    path = checkpoint.save(str(tmp_path / "ckpt"))
    saved_velocity = [v.numpy() for v in optimizer.velocities]
    assert any(np.abs(v).max() > 0 for v in saved_velocity)

    fresh_model = tiny_model(seed=5)
    fresh = PaperSGD(0.01)
    fresh.build(fresh_model.trainable_variables)
    tf.train.Checkpoint(model=fresh_model, optimizer=fresh).restore(path).assert_consumed()
    assert np.isclose(float(fresh.learning_rate.numpy()), 0.001)
    assert int(fresh.iterations.numpy()) == 1
    for restored, saved in zip(fresh.velocities, saved_velocity):
        np.testing.assert_array_equal(restored.numpy(), saved)


def test_config_round_trip():
    optimizer = PaperSGD(0.02, momentum=0.8, weight_decay=0.001, decay_biases=True)
    config = optimizer.get_config()
    assert config["weight_decay"] == 0.001 and config["momentum"] == 0.8
    clone = PaperSGD.from_config(config)
    assert clone.get_config() == config
    assert clone.weight_decay is None  # Keras' decoupled decay stays off
    restored = keras.optimizers.deserialize(keras.optimizers.serialize(optimizer))
    assert isinstance(restored, PaperSGD) and restored.decay_biases


def test_rejects_bad_hyperparameters():
    with pytest.raises(ValueError, match="momentum"):
        PaperSGD(momentum=1.5)
    with pytest.raises(ValueError, match="weight_decay"):
        PaperSGD(weight_decay=-1.0)


def test_mirrored_strategy_matches_one_device():
    """Two replicas on the two logical CPUs, each half of the global batch,
    end in the same weights as one device with the whole batch."""
    devices = [d.name for d in tf.config.list_logical_devices("CPU")][:2]
    if len(devices) < 2:
        pytest.skip("needs the two logical CPU devices that conftest.py sets up")
    global_batch = 8

    single = tiny_model()
    single_opt = PaperSGD(LR, momentum=MOMENTUM, weight_decay=WD)

    @tf.function(jit_compile=False)
    def single_step(x, y):
        with tf.GradientTape() as tape:
            loss = loss_fn(single, x, y, global_batch)
        grads = tape.gradient(loss, single.trainable_variables)
        single_opt.apply_gradients(zip(grads, single.trainable_variables))

    strategy = distribute.mirrored_strategy(devices)
    with strategy.scope():
        mirrored = tiny_model()
        mirrored_opt = PaperSGD(LR, momentum=MOMENTUM, weight_decay=WD)
        # Slots are made here, in the strategy's scope, not on the first trace.
        mirrored_opt.build(mirrored.trainable_variables)

    @tf.function(jit_compile=False)
    def mirrored_step(iterator):
        def replica_step(x, y):
            with tf.GradientTape() as tape:
                loss = loss_fn(mirrored, x, y, global_batch)
            grads = tape.gradient(loss, mirrored.trainable_variables)
            mirrored_opt.apply_gradients(zip(grads, mirrored.trainable_variables))
        strategy.run(replica_step, args=next(iterator))

    batches = [batch(seed=s, n=global_batch) for s in range(2)]
    dataset = tf.data.Dataset.from_tensor_slices(
        (np.concatenate([b[0] for b in batches]), np.concatenate([b[1] for b in batches])))
    iterator = iter(strategy.experimental_distribute_dataset(dataset.batch(global_batch)))
    for x, y in batches:
        single_step(x, y)
        mirrored_step(iterator)

    assert int(mirrored_opt.iterations.numpy()) == 2
    for s, m in zip(single.trainable_variables, mirrored.trainable_variables):
        for replica_value in strategy.experimental_local_results(m.value):
            np.testing.assert_allclose(replica_value.numpy(), s.numpy(),
                                       rtol=1e-5, atol=1e-6, err_msg=s.path)

"""alexnet_tf.model.placement: each tower's forward AND backward ops on its device,
read off the traced training step's graph (two logical CPUs from conftest)."""

import logging
import re
import zipfile

import keras
import numpy as np
import pytest
import tensorflow as tf

from alexnet_tf.model import placement
from alexnet_tf.model.layers import OnDevice
from alexnet_tf.model.alexnet import build_alexnet
from tiny_data import TINY_MODEL

DEVICES = ("/CPU:0", "/CPU:1")
SMALL = dict(num_classes=10, **TINY_MODEL)
JOINS = ("pool2", "pool5", "fc6", "fc7", "fc8")


@pytest.fixture(scope="module")
def placed_model():
    if len(tf.config.list_logical_devices("CPU")) < 2:
        pytest.skip("needs the two logical CPUs conftest makes before TF starts")
    return build_alexnet(tower_devices=DEVICES, **SMALL)


def loss_fn(model, images, labels):
    probabilities = model(images, training=True)
    return tf.reduce_mean(keras.losses.sparse_categorical_crossentropy(labels, probabilities))


def trace(model, gradients: str) -> tf.Graph:
    """The graph of a training step's forward + backward pass."""

    @tf.function
    def step(images, labels):
        if gradients == "colocated":
            loss = loss_fn(model, images, labels)
            grads = placement.colocated_gradients(loss, model.trainable_variables)
        else:
            with tf.GradientTape() as tape:
                loss = loss_fn(model, images, labels)
            grads = tape.gradient(loss, model.trainable_variables)
        return loss, grads

    return step.get_concrete_function(tf.TensorSpec([2, 67, 67, 3]),
                                      tf.TensorSpec([2], tf.int32)).graph


def tower_of(op: tf.Operation, towers: dict):
    """The tower layer whose name scope created `op` (scopes may carry a
    `_1` uniquifying suffix), or None for ops outside the towers."""
    for part in op.name.split("/"):
        name = re.sub(r"_\d+$", "", part)
        if name in towers:
            return name
    return None


def is_backward(op: tf.Operation) -> bool:
    return op.name.startswith(("gradients", "gradient_tape"))


def test_variables_live_on_their_towers_device(placed_model):
    for layer in placed_model.layers:
        if isinstance(layer, OnDevice) and layer.weights:
            want = {"a": "CPU:0", "b": "CPU:1"}[layer.name[-1]]
            assert all(w.value.device.endswith(want) for w in layer.weights), layer.name


def test_forward_and_backward_ops_of_each_tower_on_its_device(placed_model):
    graph = trace(placed_model, "colocated")
    towers = {l.name: l.device for l in placed_model.layers if isinstance(l, OnDevice)}
    assert len(towers) == 2 * 13 and set(towers.values()) == set(DEVICES)
    # Captured variable handle -> the variable's device outside the function.
    handle_device = {id(internal): external.device for external, internal in graph.captures}
    seen = {(name, backward): 0 for name in towers for backward in (False, True)}
    for op in graph.get_operations():
        name = tower_of(op, towers)
        if name is None or op.type == "Placeholder":  # captured handles: inputs, not work
            continue
        if op.type == "ReadVariableOp":
            # Reads carry no device in the graph: TF's placer must colocate
            # them with the variable they read, so check that variable.
            assert handle_device[id(op.inputs[0])].endswith(towers[name][1:]), op.name
            continue
        assert op.device.endswith(towers[name][1:]), (
            f"{op.name} ({op.type}) of {name} is on {op.device!r}, want {towers[name]}")
        seen[name, is_backward(op)] += 1
    # Every tower layer has forward ops and (it is on the loss path) backward ops.
    assert all(count > 0 for count in seen.values()), seen
    backward_convs = [op for op in graph.get_operations()
                      if op.type == "Conv2DBackpropFilter"]
    assert len(backward_convs) == 10
    assert {op.device[-5:] for op in backward_convs} == {"CPU:0", "CPU:1"}


def test_cross_tower_layers_read_both_towers(placed_model):
    graph = trace(placed_model, "colocated")
    for join in JOINS:
        concat = next(op for op in graph.get_operations()
                      if op.type == "ConcatV2" and re.search(rf"(^|/){join}(_\d+)?/", op.name)
                      and not is_backward(op))
        sources = {t.op.device[-5:] for t in concat.inputs if t.op.type != "Const"}
        assert sources == {"CPU:0", "CPU:1"}, (join, sources)
    # ...and both towers of the next layer consume the joined tensor.
    conv3 = [op for op in graph.get_operations()
             if op.type == "Conv2D" and "conv3_" in op.name and not is_backward(op)]
    assert len(conv3) == 2
    assert {op.inputs[0].op.type for op in conv3} == {"ConcatV2"}
    assert {op.device[-5:] for op in conv3} == {"CPU:0", "CPU:1"}


def test_gradient_tape_leaves_backward_ops_unplaced(placed_model):
    """Why `colocated_gradients` exists: the tape does not carry the forward
    device scopes over, so both towers' backward convolutions would run on
    the default device."""
    graph = trace(placed_model, "tape")
    backward_convs = [op for op in graph.get_operations()
                      if op.type == "Conv2DBackpropFilter"]
    assert len(backward_convs) == 10
    assert {op.device for op in backward_convs} == {""}
    forward_convs = [op for op in graph.get_operations()
                     if op.type == "Conv2D" and not is_backward(op)]
    assert {op.device[-5:] for op in forward_convs} == {"CPU:0", "CPU:1"}


def test_colocated_gradients_match_the_tape(placed_model):
    images = tf.constant(np.random.default_rng(0).uniform(0, 255, (2, 67, 67, 3)), tf.float32)
    labels = tf.constant([3, 7])
    variables = placed_model.trainable_variables

    @tf.function
    def both():
        keras.utils.set_random_seed(0)  # same dropout masks for both passes
        loss = loss_fn(placed_model, images, labels)
        colocated = placement.colocated_gradients(loss, variables)
        with tf.GradientTape() as tape:
            again = loss_fn(placed_model, images, labels)
        return colocated, tape.gradient(again, variables), loss, again

    # Compare with dropout off so both passes compute the same function.
    rates = [l for l in placed_model.layers if isinstance(l, keras.layers.Dropout)]
    old = [l.rate for l in rates]
    for layer in rates:
        layer.rate = 0.0
    try:
        colocated, taped, loss, again = both()
    finally:
        for layer, rate in zip(rates, old):
            layer.rate = rate
    np.testing.assert_allclose(loss.numpy(), again.numpy(), rtol=1e-6)
    for g1, g2, v in zip(colocated, taped, variables):
        np.testing.assert_allclose(g1.numpy(), g2.numpy(), rtol=1e-4, atol=1e-6,
                                   err_msg=v.path)


def test_colocated_gradients_refuse_eager_mode(placed_model):
    with pytest.raises(RuntimeError, match="tf.function"):
        placement.colocated_gradients(tf.constant(1.0), placed_model.trainable_variables)


def test_weights_move_between_placed_and_unplaced_builds(placed_model, tmp_path):
    """Export rebuilds with tower_devices=None and loads the weights."""
    unplaced = build_alexnet(**SMALL)
    assert [w.path for w in unplaced.weights] == [w.path for w in placed_model.weights]
    assert all("CPU:1" not in w.value.device for w in unplaced.weights)
    x = np.random.default_rng(2).uniform(0, 255, (2, 67, 67, 3)).astype(np.float32)

    unplaced.set_weights(placed_model.get_weights())
    np.testing.assert_allclose(unplaced(x, training=False).numpy(),
                               placed_model(x, training=False).numpy(), rtol=1e-5, atol=1e-7)

    fresh = build_alexnet(**SMALL)
    path = tf.train.Checkpoint(model=placed_model).write(str(tmp_path / "ckpt"))
    tf.train.Checkpoint(model=fresh).read(path).assert_consumed()
    np.testing.assert_allclose(fresh(x, training=False).numpy(),
                               placed_model(x, training=False).numpy(), rtol=1e-5, atol=1e-7)
    assert placed_model.get_config()["tower_devices"] is None


def test_resolve_tower_devices(caplog, monkeypatch):
    # A launcher run in this process earlier may have pointed the project's
    # logger at its own handler (alexnet_tf.cli.terminal): let caplog see it again.
    monkeypatch.setattr(logging.getLogger("alexnet_tf"), "propagate", True)
    caplog.set_level(logging.INFO, logger="alexnet_tf.model.placement")
    if not tf.config.list_logical_devices("GPU"):
        assert placement.resolve_tower_devices("auto") is None
        assert "Tower placement: none" in caplog.text
    assert placement.resolve_tower_devices(None) is None
    assert placement.resolve_tower_devices("none") is None
    assert placement.resolve_tower_devices("/CPU:0, /CPU:0") == ("/CPU:0", "/CPU:0")
    assert placement.resolve_tower_devices(["/CPU:0", "/CPU:0"]) == ("/CPU:0", "/CPU:0")
    assert "named by the caller" in caplog.text
    with pytest.raises(ValueError, match="2 devices"):
        placement.resolve_tower_devices(["/CPU:0"])
    with pytest.raises(ValueError, match="/GPU:7"):
        placement.resolve_tower_devices(["/CPU:0", "/GPU:7"])


def test_saved_placed_model_pins_no_device(placed_model, tmp_path):
    path = tmp_path / "placed.keras"
    placed_model.save(path)
    with zipfile.ZipFile(path) as archive:
        config = archive.read("config.json").decode()
    assert "\"tower_devices\": null" in config and "CPU" not in config
    loaded = keras.saving.load_model(path, safe_mode=True)
    assert {l.device for l in loaded.layers if isinstance(l, OnDevice)} == {None}


def test_auto_placement_without_gpus_builds_unplaced():
    if tf.config.list_logical_devices("GPU"):
        pytest.skip("this machine has GPUs: auto would place the towers on them")
    model = build_alexnet(tower_devices="auto", **SMALL)
    assert {l.device for l in model.layers if isinstance(l, OnDevice)} == {None}
    assert model.tower_devices is None

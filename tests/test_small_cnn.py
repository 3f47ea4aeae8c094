"""The Figure 1 network: layer structure, activation switch, init, no regularization."""

import numpy as np
import keras
import pytest

from experiments.figure1_relu_tanh.small_cnn import build_small_cnn


def _conv_layers(model):
    return [model.get_layer(f"conv{i}") for i in (1, 2, 3)]


def test_three_conv_layers_and_one_fully_connected():
    model = build_small_cnn("relu")
    weighted = [l.name for l in model.layers if l.weights]
    assert weighted == ["conv1", "conv2", "conv3", "logits"]
    assert [l.filters for l in _conv_layers(model)] == [32, 32, 64]
    assert all(l.kernel_size == (5, 5) and l.strides == (1, 1) for l in _conv_layers(model))
    pools = [model.get_layer(f"pool{i}") for i in (1, 2, 3)]
    assert [type(p).__name__ for p in pools] == ["MaxPooling2D", "AveragePooling2D",
                                                 "AveragePooling2D"]
    assert all(p.pool_size == (3, 3) and p.strides == (2, 2) for p in pools)
    assert [tuple(p.output.shape[1:3]) for p in pools] == [(16, 16), (8, 8), (4, 4)]
    assert model.output.shape[1:] == (10,)
    # 5*5*3*32+32, 5*5*32*32+32, 5*5*32*64+64, 4*4*64*10+10
    assert model.count_params() == 2432 + 25632 + 51264 + 10250


def test_no_regularization():
    model = build_small_cnn("tanh")
    assert not any(isinstance(l, keras.layers.Dropout) for l in model.layers)
    assert all(getattr(l, "kernel_regularizer", None) is None for l in model.layers)
    assert model.losses == []


@pytest.mark.parametrize("activation", ["relu", "tanh"])
def test_activation_switch(activation):
    model = build_small_cnn(activation, seed=1)
    assert model.get_layer("logits").activation.__name__ == "linear"
    features = keras.Model(model.input, [l.output for l in _conv_layers(model)])
    x = np.random.default_rng(0).normal(0, 60, (2, 32, 32, 3)).astype("float32")
    for layer, out in zip(_conv_layers(model), features(x)):
        assert layer.activation.__name__ == activation
        out = np.asarray(out)
        if activation == "relu":
            assert out.min() == 0.0 and out.max() > 0.0  # rectified, not all dead
        else:
            assert out.min() < 0.0 and np.abs(out).max() <= 1.0


def test_inits():
    paper = build_small_cnn("relu", init="paper", seed=0)
    kernel = np.asarray(paper.get_layer("conv3").kernel)
    assert abs(kernel.std() - 0.01) < 0.001 and abs(kernel.mean()) < 0.001
    assert not np.asarray(paper.get_layer("conv3").bias).any()

    he = np.asarray(build_small_cnn("relu", init="modern", seed=0).get_layer("conv3").kernel)
    fan_in = 5 * 5 * 32
    assert abs(he.std() / np.sqrt(2 / fan_in) - 1) < 0.1  # He: var 2/fan_in
    glorot = np.asarray(build_small_cnn("tanh", init="modern", seed=0).get_layer("conv3").kernel)
    fan_out = 5 * 5 * 64
    assert abs(glorot.std() / np.sqrt(2 / (fan_in + fan_out)) - 1) < 0.1


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="activation"):
        build_small_cnn("sigmoid")
    with pytest.raises(ValueError, match="init"):
        build_small_cnn("relu", init="xavier")

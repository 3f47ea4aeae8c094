"""alexnet_tf.model.alexnet: the paper's sizes read off the built model, every
ablation switch, serialisation, dropout only in training.

The full 1,000-class model is built once (61M parameters) for the paper's
numbers, and the tests of the paper's kernel counts build its convolutions
at full width; the other tests use the suite's tiny configuration
(tiny_data.TINY_MODEL: the same layers and names, under 1M parameters)."""

import math

import keras
import numpy as np
import pytest

from alexnet_tf.data.dataset_stats import IMAGENET_MEAN_RGB, IMAGENET_STD_RGB
from alexnet_tf.model.layers import LocalResponseNormalization, OnDevice
from alexnet_tf.model.alexnet import CLASSIFIER_LAYERS, AlexNet, build_alexnet
from tiny_data import TINY_MODEL

SMALL = dict(num_classes=10, **TINY_MODEL)
# The paper's convolutions (kernel counts are what these tests check) at the
# smallest input: fc6/fc7 keep the paper's 4,096 too.
PAPER_CONVS = dict(num_classes=10, image_size=67)
PAPER_LAYERS = ("conv1", "conv2", "conv3", "conv4", "conv5", "fc6", "fc7", "fc8")


def tower_layers(model, layer):
    """The layers that make up one paper layer: `<layer>` for one column,
    `<layer>_a`, `<layer>_b` for two towers."""
    found = [l for l in model.layers
             if l.name == layer and l.weights or l.name in (f"{layer}_a", f"{layer}_b")]
    assert found, f"no layer {layer} in {[l.name for l in model.layers]}"
    return found


def params(model, layer):
    return sum(l.count_params() for l in tower_layers(model, layer))


def neurons(model, layer):
    return sum(math.prod(l.output.shape[1:]) for l in tower_layers(model, layer))


def inner(layer):
    return layer.layer if isinstance(layer, OnDevice) else layer


@pytest.fixture(scope="module")
def paper_model():
    return build_alexnet(1000)


@pytest.mark.slow
def test_parameter_count_is_the_papers(paper_model):
    assert paper_model.count_params() == 60_965_224
    assert {name: params(paper_model, name) for name in PAPER_LAYERS} == {
        "conv1": 34_944, "conv2": 307_456, "conv3": 885_120, "conv4": 663_936,
        "conv5": 442_624, "fc6": 37_752_832, "fc7": 16_781_312, "fc8": 4_097_000}


@pytest.mark.slow
def test_neurons_per_layer_are_the_papers(paper_model):
    # Figure 2's caption says 253,440 for conv1: an erratum for 55*55*96.
    assert [neurons(paper_model, name) for name in PAPER_LAYERS] == [
        290_400, 186_624, 64_896, 64_896, 43_264, 4_096, 4_096, 1_000]
    assert paper_model.input.shape[1:] == (224, 224, 3)
    assert paper_model.get_layer("conv1_pad").output.shape[1:] == (228, 228, 3)


@pytest.mark.slow
def test_towers_read_what_figure_2_says(paper_model):
    kernels = {l.name: tuple(inner(l).kernel.shape) for l in paper_model.layers
               if l.name.startswith(("conv", "fc")) and l.weights}
    assert kernels["conv2_a"] == (5, 5, 48, 128)   # own tower only
    assert kernels["conv3_b"] == (3, 3, 256, 192)  # both towers
    assert kernels["conv4_a"] == (3, 3, 192, 192)
    assert kernels["conv5_b"] == (3, 3, 192, 128)
    assert kernels["fc6_a"] == (9216, 2048)
    assert kernels["fc8_b"] == (4096, 500)
    assert not any(isinstance(inner(l), keras.layers.Conv2D) and inner(l).groups != 1
                   for l in paper_model.layers)


@pytest.mark.slow
def test_named_outputs_of_the_contract(paper_model):
    assert paper_model.get_layer("fc7").output.shape[1:] == (4096,)
    assert paper_model.get_layer("fc8").output.shape[1:] == (1000,)
    assert paper_model.output.shape[1:] == (1000,)
    assert paper_model.layers[-1].name == "probabilities"
    assert {l.name for l in paper_model.layers} >= {"fc8_a", "fc8_b"}
    assert set(CLASSIFIER_LAYERS) >= {"fc8_a", "fc8_b", "fc8"}


@pytest.mark.slow
def test_summary_reads_like_the_papers_table(paper_model):
    lines = []
    paper_model.summary(print_fn=lambda line, **kwargs: lines.append(line))
    text = "\n".join(lines)
    for name in ("conv1_a", "lrn1_b", "pool2", "conv5_b", "fc6_a", "fc7", "probabilities"):
        assert name in text
    assert "60,965,224" in text


@pytest.mark.slow
def test_the_tiny_configuration_keeps_the_papers_layers_and_names(paper_model):
    tiny = build_alexnet(1000, **TINY_MODEL)
    assert [l.name for l in tiny.layers] == [l.name for l in paper_model.layers]
    assert [w.path for w in tiny.weights] == [w.path for w in paper_model.weights]
    assert build_alexnet(10, **TINY_MODEL).count_params() < 1_000_000


def test_fc_units_set_the_neurons_of_fc6_and_fc7():
    model = build_alexnet(**{**SMALL, "fc_units": (64, 48)})
    assert model.count_params() < 100_000
    assert [model.get_layer(n).output.shape[1] for n in ("fc6", "fc7", "fc8")] == [64, 48, 10]
    assert [inner(model.get_layer(f"fc6_{t}")).units for t in "ab"] == [32, 32]
    odd = build_alexnet(towers=2, **{**SMALL, "fc_units": (9, 5)})
    assert [inner(odd.get_layer(f"fc7_{t}")).units for t in "ab"] == [3, 2]  # 5 = 3 + 2
    assert odd.get_layer("fc6").output.shape[1] == 9
    one = build_alexnet(towers=1, **{**SMALL, "fc_units": (64, 48)})
    assert [one.get_layer(n).units for n in ("fc6", "fc7")] == [64, 48]


def test_fc7_features_are_post_relu_and_dropout_only_in_training():
    model = build_alexnet(dropout=0.5, **SMALL)
    features = keras.Model(model.input, model.get_layer("fc7").output)
    x = np.random.default_rng(0).uniform(0, 255, (4, 67, 67, 3)).astype(np.float32)
    f = features(x, training=False).numpy()
    assert f.shape == (4, TINY_MODEL["fc_units"][1]) and f.min() >= 0 and f.max() > 0
    first, second = model(x, training=False).numpy(), model(x, training=False).numpy()
    np.testing.assert_array_equal(first, second)
    np.testing.assert_allclose(first.sum(axis=1), 1.0, rtol=1e-5)
    assert not np.allclose(model(x, training=True).numpy(), first, atol=1e-6)


# --- ablation switches --------------------------------------------------------

def test_activation_switch_uses_tanh_everywhere_but_the_classifier():
    model = build_alexnet(activation="tanh", **SMALL)
    acts = {l.name: inner(l).activation.__name__ for l in model.layers
            if isinstance(inner(l), (keras.layers.Conv2D, keras.layers.Dense))}
    assert {a for n, a in acts.items() if not n.startswith("fc8")} == {"tanh"}
    assert {acts["fc8_a"], acts["fc8_b"]} == {"linear"}
    assert build_alexnet(**SMALL).get_layer("conv1_a").layer.activation.__name__ == "relu"


def test_lrn_switch_removes_only_the_normalization_layers():
    with_lrn, without = build_alexnet(**SMALL), build_alexnet(lrn=False, **SMALL)
    lrns = [l.name for l in with_lrn.layers if isinstance(inner(l), LocalResponseNormalization)]
    assert lrns == ["lrn1_a", "lrn1_b", "lrn2_a", "lrn2_b"]
    assert not any(isinstance(inner(l), LocalResponseNormalization) for l in without.layers)
    assert with_lrn.count_params() == without.count_params()


def test_non_overlapping_pooling_keeps_the_output_sizes():
    model = build_alexnet(overlapping_pool=False, **{**SMALL, "image_size": 224})
    pools = {l.name: l for l in model.layers if isinstance(inner(l), keras.layers.MaxPooling2D)}
    assert {inner(l).pool_size for l in pools.values()} == {(2, 2)}
    assert {inner(l).strides for l in pools.values()} == {(2, 2)}
    assert [pools[f"pool{i}_a"].output.shape[1] for i in (1, 2, 5)] == [27, 13, 6]
    assert inner(build_alexnet(**SMALL).get_layer("pool1_a")).pool_size == (3, 3)


def test_one_column_has_the_same_kernels_fully_connected():
    model = build_alexnet(towers=1, **PAPER_CONVS)
    assert not any(isinstance(l, OnDevice) for l in model.layers)
    kernels = [tuple(model.get_layer(f"conv{i}").kernel.shape) for i in range(1, 6)]
    assert kernels == [(11, 11, 3, 96), (5, 5, 96, 256), (3, 3, 256, 384),
                       (3, 3, 384, 384), (3, 3, 384, 256)]
    assert model.get_layer("fc7").units == 4096
    assert model.get_layer("fc8").units == 10
    two = build_alexnet(**PAPER_CONVS)
    # Only conv2, conv4, conv5 change: one column reads all of the previous layer.
    extra = (5 * 5 * 48 * 128 + 3 * 3 * 192 * 192 + 3 * 3 * 192 * 128) * 2
    assert model.count_params() - two.count_params() == extra


def test_half_width_is_the_papers_one_gpu_comparison_net():
    model = build_alexnet(towers=1, width=0.5, **{**PAPER_CONVS, "fc_units": (64, 64)})
    filters = [model.get_layer(f"conv{i}").filters for i in range(1, 6)]
    assert filters == [48, 128, 192, 192, 256]  # conv5 (and fc) not halved
    assert [model.get_layer(n).units for n in ("fc6", "fc7")] == [64, 64]  # as set


def test_dropout_rate_switch():
    rates = [l.rate for l in build_alexnet(dropout=0.3, **SMALL).layers
             if isinstance(l, keras.layers.Dropout)]
    assert rates == [0.3, 0.3]
    assert not any(isinstance(l, keras.layers.Dropout)
                   for l in build_alexnet(dropout=0.0, **SMALL).layers)


def test_extra_conv_adds_a_sixth_convolution_after_the_last_pool():
    base, extra = build_alexnet(**SMALL), build_alexnet(extra_conv=True, **SMALL)
    conv6 = extra.get_layer("conv6_a")
    assert conv6.input.shape == extra.get_layer("pool5_a").output.shape
    assert tuple(conv6.layer.kernel.shape) == (3, 3, 128, 128)
    assert extra.count_params() - base.count_params() == 2 * (3 * 3 * 128 * 128 + 128)
    assert "conv6_a" not in {l.name for l in base.layers}


@pytest.mark.parametrize("init, positive_bias, kernel_std", [
    ("paper", 1.0, 0.01), ("caffe", 0.1, 0.01), ("he", 0.1, "he")])
def test_initializations(init, positive_bias, kernel_std):
    # 100 classes: fc8_a has 64 x 50 weights, enough for a 10% check of their std.
    model = build_alexnet(init=init, **{**SMALL, "num_classes": 100})
    conv2 = model.get_layer("conv2_a").layer
    if kernel_std == "he":  # sqrt(2 / fan-in): 5 * 5 * conv1's maps of one tower
        kernel_std = math.sqrt(2 / (5 * 5 * conv2.kernel.shape[2]))
    np.testing.assert_array_equal(conv2.bias.numpy(), np.float32(positive_bias))
    np.testing.assert_array_equal(model.get_layer("conv3_a").layer.bias.numpy(), 0.0)
    np.testing.assert_array_equal(model.get_layer("fc7_b").layer.bias.numpy(),
                                  np.float32(positive_bias))
    assert conv2.kernel.numpy().std() == pytest.approx(kernel_std, rel=0.1)
    for fc in ("fc6_a", "fc7_b", "fc8_a"):  # N(0, 0.01) in every init
        assert model.get_layer(fc).layer.kernel.numpy().std() == pytest.approx(0.01, rel=0.1)


def test_he_init_is_plain_he_in_conv1_on_standardized_input():
    model = build_alexnet(init="he", **SMALL)
    kernel = model.get_layer("conv1_a").layer.kernel.numpy()
    assert kernel.std() == pytest.approx(math.sqrt(2 / (11 * 11 * 3)), rel=0.1)
    # The default input is standardized: (x - mean) / std, per channel.
    layer = model.get_layer("mean_subtraction")
    assert layer.std == pytest.approx(IMAGENET_STD_RGB)
    x = np.array(IMAGENET_MEAN_RGB, np.float32) + np.array(IMAGENET_STD_RGB, np.float32)
    np.testing.assert_allclose(layer(x.reshape(1, 1, 1, 3)).numpy().ravel(), 1.0, rtol=1e-6)


def test_default_init_is_he_on_standardized_input():
    config = build_alexnet(**SMALL).get_config()
    assert config["init"] == "he"
    assert config["std_rgb"] == pytest.approx(IMAGENET_STD_RGB)


def test_paper_setup_subtracts_the_mean_only():
    model = build_alexnet(init="paper", std_rgb=None, **SMALL)
    assert model.get_config()["std_rgb"] is None
    x = np.full((1, 1, 1, 3), 200.0, np.float32)
    np.testing.assert_allclose(model.get_layer("mean_subtraction")(x).numpy().ravel(),
                               200.0 - np.array(IMAGENET_MEAN_RGB), rtol=1e-6)


@pytest.mark.parametrize("bad, message", [
    (dict(activation="sigmoid"), "activation"), (dict(towers=3), "towers"),
    (dict(width=0), "width"), (dict(dropout=1.0), "dropout"), (dict(init="xavier"), "init"),
    (dict(image_size=32), "image_size"), (dict(num_classes=1), "num_classes"),
    (dict(towers=1, tower_devices=("/CPU:0",)), "tower_devices"),
    (dict(fc_units=(64,)), "fc_units"), (dict(fc_units=(1, 64)), "fc_units"),
    (dict(fc_units=(64.0, 64)), "fc_units")])
def test_bad_configuration_is_refused(bad, message):
    with pytest.raises(ValueError, match=message):
        build_alexnet(**{**SMALL, **bad})


# --- serialisation ------------------------------------------------------------

def test_config_round_trip():
    model = build_alexnet(num_classes=7, image_size=99, width=0.0625, fc_units=(48, 40),
                          mean_rgb=(1.0, 2.0, 3.0),
                          std_rgb=(4.0, 5.0, 6.0), activation="tanh", lrn=False,
                          overlapping_pool=False,
                          dropout=0.2, extra_conv=True, init="he")
    config = model.get_config()
    assert config["tower_devices"] is None
    again = AlexNet.from_config(config)
    assert again.get_config() == config
    assert [w.path for w in again.weights] == [w.path for w in model.weights]


def test_keras_file_round_trip_gives_identical_outputs(tmp_path):
    model = build_alexnet(mean_rgb=(100.0, 110.0, 120.0), **SMALL)
    path = tmp_path / "alexnet.keras"
    model.save(path)
    loaded = keras.saving.load_model(path, safe_mode=True)
    assert isinstance(loaded, AlexNet)
    assert loaded.get_config() == model.get_config()
    x = np.random.default_rng(1).uniform(0, 255, (3, 67, 67, 3)).astype(np.float32)
    np.testing.assert_array_equal(loaded.predict(x, verbose=0), model.predict(x, verbose=0))


def test_towers_start_from_different_random_weights():
    """Each tower draws its own initial weights (a shared unseeded Keras
    initializer would hand both towers the same values)."""
    model = build_alexnet(**SMALL)
    for layer in ("conv1", "conv3", "fc6", "fc7", "fc8"):
        a = model.get_layer(f"{layer}_a").get_weights()[0]
        b = model.get_layer(f"{layer}_b").get_weights()[0]
        assert a.shape == b.shape and not np.array_equal(a, b), layer


def test_a_config_from_before_standardization_keeps_mean_only_input():
    config = build_alexnet(init="caffe", std_rgb=None, **SMALL).get_config()
    del config["std_rgb"]  # as written by the first release
    assert AlexNet.from_config(config).get_config()["std_rgb"] is None

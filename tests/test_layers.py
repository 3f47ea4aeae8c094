"""alexnet_tf.model.layers: LRN against the paper's formula, mean subtraction,
the device wrapper's serialisation."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from alexnet_tf.data.dataset_stats import IMAGENET_MEAN_RGB
from alexnet_tf.model.layers import LocalResponseNormalization, MeanSubtraction, OnDevice


def paper_lrn(a: np.ndarray, k=2.0, n=5, alpha=1e-4, beta=0.75) -> np.ndarray:
    """Section 3.3, written out channel by channel in float64:
    b_i = a_i / (k + alpha * sum_{j=max(0, i-n/2)}^{min(N-1, i+n/2)} a_j^2)^beta."""
    channels = a.shape[-1]
    b = np.empty_like(a, dtype=np.float64)
    for i in range(channels):
        lo, hi = max(0, i - n // 2), min(channels - 1, i + n // 2)
        total = np.sum(a[..., lo:hi + 1].astype(np.float64) ** 2, axis=-1)
        b[..., i] = a[..., i] / (k + alpha * total) ** beta
    return b


@pytest.mark.parametrize("channels", [1, 3, 7, 48])
def test_lrn_matches_paper_formula_including_edge_channels(channels):
    rng = np.random.default_rng(channels)
    # ReLU outputs of the size conv1 produces: large enough that the sum
    # term matters (alpha * sum a^2 ~ 1 against k = 2).
    a = rng.uniform(0, 120, size=(2, 4, 5, channels)).astype(np.float32)
    got = LocalResponseNormalization()(a).numpy()
    want = paper_lrn(a)
    np.testing.assert_allclose(got, want, rtol=1e-5)
    # The normalisation really acts: output differs from a / k**beta.
    assert not np.allclose(got, a / 2.0 ** 0.75, rtol=1e-3)


def test_lrn_edge_channels_sum_over_fewer_neighbours():
    # One hot spot in channel 0: it normalises channels 0..2 only (n/2 = 2).
    a = np.zeros((1, 1, 1, 6), np.float32)
    a[..., 0] = 100.0
    a[..., 1:] = 1.0
    got = LocalResponseNormalization()(a).numpy()[0, 0, 0]
    want = paper_lrn(a)[0, 0, 0]
    np.testing.assert_allclose(got, want, rtol=1e-6)
    assert got[2] < got[3]  # channel 2 sees channel 0, channel 3 does not
    # Channels 3, 4, 5 (the last) sum 5, 4 and 3 ones: the top edge is cut off.
    np.testing.assert_allclose(got[3:], [1.0 / (2.0 + m * 1e-4) ** 0.75 for m in (5, 4, 3)],
                               rtol=1e-6)


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_lrn_of_half_precision_maps_is_computed_in_float32(dtype):
    """Activations of 300 square to 90,000, past float16's largest value: a
    float16 sum would be infinite and the maps zero. bfloat16 has no LRN
    kernel of its own."""
    a = np.full((1, 2, 2, 8), 300.0, np.float32)
    got = LocalResponseNormalization(dtype=f"mixed_{dtype}")(a)  # as under a mixed policy
    assert got.dtype == dtype
    np.testing.assert_allclose(tf.cast(got, tf.float32).numpy(), paper_lrn(a), rtol=1e-2)


def test_lrn_config_round_trip():
    layer = LocalResponseNormalization(depth_radius=3, bias=1.0, alpha=2e-4, beta=0.5,
                                       name="lrn")
    again = LocalResponseNormalization.from_config(layer.get_config())
    assert (again.depth_radius, again.bias, again.alpha, again.beta) == (3, 1.0, 2e-4, 0.5)
    assert LocalResponseNormalization().get_config()["depth_radius"] == 2


def test_mean_subtraction_subtracts_fixed_mean_and_has_no_weights():
    layer = MeanSubtraction((10.0, 20.0, 30.0))
    x = np.full((1, 2, 2, 3), 100, np.uint8)
    out = layer(x).numpy()
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out[0, 0, 0], [90.0, 80.0, 70.0])
    assert layer.weights == []
    assert MeanSubtraction.from_config(layer.get_config()).mean == (10.0, 20.0, 30.0)
    assert MeanSubtraction().mean == tuple(IMAGENET_MEAN_RGB)


def test_mean_subtraction_divides_by_std_when_given():
    layer = MeanSubtraction((10.0, 20.0, 30.0), std=(2.0, 4.0, 5.0))
    out = layer(np.full((1, 2, 2, 3), 100, np.uint8)).numpy()
    np.testing.assert_allclose(out[0, 1, 1], [45.0, 20.0, 14.0], rtol=1e-6)
    assert MeanSubtraction.from_config(layer.get_config()).std == (2.0, 4.0, 5.0)
    assert MeanSubtraction().std is None  # the paper's: the mean only
    with pytest.raises(ValueError, match="positive"):
        MeanSubtraction((1.0, 2.0, 3.0), std=(1.0, 0.0, 1.0))


def test_mean_subtraction_rejects_wrong_channel_count():
    with pytest.raises(ValueError, match="4 channels"):
        MeanSubtraction()(np.zeros((1, 2, 2, 4), np.float32))


def test_on_device_places_variables_and_ops_and_does_not_serialise_device():
    wrapped = OnDevice(keras.layers.Dense(3, name="fc"), "/CPU:1")
    assert wrapped.name == "fc"
    wrapped.build((None, 4))
    assert wrapped.layer.kernel.value.device.endswith("CPU:1")

    @tf.function
    def forward(x):
        return wrapped(x)

    graph = forward.get_concrete_function(tf.TensorSpec([2, 4])).graph
    matmuls = [op for op in graph.get_operations() if op.type == "MatMul"]
    assert matmuls and all(op.device.endswith("CPU:1") for op in matmuls)

    config = keras.saving.serialize_keras_object(wrapped)
    assert "CPU" not in str(config)
    restored = keras.saving.deserialize_keras_object(config, safe_mode=True)
    assert isinstance(restored, OnDevice) and restored.device is None
    assert isinstance(restored.layer, keras.layers.Dense)

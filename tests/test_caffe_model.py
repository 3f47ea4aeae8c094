"""The model settings the Caffe import needs (issue 15): LRN constants,
LRN across towers, conv1's padding; part of the config, old configs load
with the paper's values. (At 227x227 with no conv1 padding the full model
keeps the paper's layer sizes and parameter count: test_caffe_full.py, on
the imported bvlc_alexnet.)"""

import numpy as np
import pytest

from alexnet_tf.model.alexnet import AlexNet, PAPER_LRN, build_alexnet, saved_config_defaults
from alexnet_tf.model.layers import CrossTowerLRN, LocalResponseNormalization
from alexnet_tf.training import checkpoints
from tiny_data import TINY_MODEL

SMALL = dict(num_classes=10, **TINY_MODEL)
CAFFE = dict(conv1_padding=0, lrn_k=1.0, lrn_alpha=1e-4 / 5, lrn_across_towers=True,
             std_rgb=None, init="caffe")


def caffe_lrn(x, n=5, alpha=1e-4, beta=0.75, k=1.0):
    """Caffe's LRN over the last axis, written out: alpha divided by n."""
    half, out = n // 2, np.empty_like(x, dtype=np.float64)
    for i in range(x.shape[-1]):
        window = x[..., max(0, i - half):i + half + 1].astype(np.float64)
        out[..., i] = x[..., i] / (k + alpha / n * np.sum(window ** 2, axis=-1)) ** beta
    return out


def test_caffe_constants_map_to_the_layer_exactly():
    x = np.random.default_rng(0).uniform(0, 150, (2, 3, 4, 9)).astype(np.float32)
    layer = LocalResponseNormalization.from_paper_constants(size=5, k=1.0, alpha=1e-4 / 5,
                                                            beta=0.75)
    np.testing.assert_allclose(layer(x).numpy(), caffe_lrn(x), rtol=2e-6)
    # Caffe's alpha used undivided would normalize far more strongly.
    assert not np.allclose(layer(x).numpy(), caffe_lrn(x, alpha=5e-4), rtol=1e-2)


@pytest.mark.parametrize("split", [1, 2, 4, 7])
def test_cross_tower_lrn_is_the_lrn_of_the_joined_maps(split):
    """Each tower's half of Caffe's one-blob LRN, from its own maps plus the
    other tower's next two; split=1 and 7 leave a tower fewer maps than the
    radius."""
    x = np.random.default_rng(split).uniform(0, 150, (2, 3, 3, 8)).astype(np.float32)
    towers = [x[..., :split], x[..., split:]]
    constants = dict(size=5, k=1.0, alpha=2e-5, beta=0.75)
    got = np.concatenate([CrossTowerLRN.from_paper_constants(tower=t, **constants)(towers)
                          for t in (0, 1)], axis=-1)
    np.testing.assert_allclose(got, caffe_lrn(x), rtol=2e-6)
    per_tower = np.concatenate([caffe_lrn(t) for t in towers], axis=-1)
    assert not np.allclose(got, per_tower, rtol=1e-4)  # the boundary maps differ


def test_caffe_geometry_and_constants_are_in_the_config():
    model = build_alexnet(**{**SMALL, **CAFFE, "image_size": 71})
    config = model.get_config()
    assert {k: config[k] for k in ("conv1_padding", "lrn_size", "lrn_k", "lrn_alpha",
                                   "lrn_beta", "lrn_across_towers")} == {
        "conv1_padding": 0, "lrn_size": 5, "lrn_k": 1.0, "lrn_alpha": 2e-5, "lrn_beta": 0.75,
        "lrn_across_towers": True}
    assert model.get_layer("conv1_pad").output.shape[1:] == (71, 71, 3)
    assert isinstance(model.get_layer("lrn1_a").layer, CrossTowerLRN)
    again = AlexNet.from_config(config)
    assert again.get_config() == config
    x = np.random.default_rng(1).uniform(0, 255, (2, 71, 71, 3)).astype(np.float32)
    again.set_weights(model.get_weights())
    np.testing.assert_array_equal(again(x).numpy(), model(x).numpy())


def test_defaults_are_the_papers_and_full_alexnet_keeps_its_parameter_count():
    config = build_alexnet(**SMALL).get_config()
    assert {k: config[k] for k in PAPER_LRN} == PAPER_LRN == {
        "lrn_size": 5, "lrn_k": 2.0, "lrn_alpha": 1e-4, "lrn_beta": 0.75,
        "lrn_across_towers": False}
    assert config["conv1_padding"] == 2


def test_a_config_saved_before_these_settings_builds_the_papers_lrn():
    config = build_alexnet(init="caffe", std_rgb=None, **SMALL).get_config()
    for key in (*PAPER_LRN, "conv1_padding"):
        del config[key]  # as written before issue 15
    assert saved_config_defaults(config)["lrn_k"] == 2.0
    model = checkpoints.build_model_from_config(
        {k: v for k, v in config.items() if k not in ("name", "trainable")})
    layer = model.get_layer("lrn1_a").layer
    assert type(layer) is LocalResponseNormalization
    assert (layer.depth_radius, layer.bias, layer.alpha, layer.beta) == (2, 2.0, 1e-4, 0.75)
    assert model.get_layer("conv1_pad").output.shape[1:] == (71, 71, 3)


@pytest.mark.parametrize("bad, message", [
    (dict(conv1_padding=-1), "conv1_padding"), (dict(conv1_padding=1.5), "conv1_padding"),
    (dict(conv1_padding=0, image_size=67), "image_size must be an integer >= 71"),
    (dict(lrn_size=4), "odd"), (dict(lrn_k=0.0), "k > 0"), (dict(lrn_alpha=-1.0), "alpha")])
def test_bad_settings_are_refused(bad, message):
    with pytest.raises(ValueError, match=message):
        build_alexnet(**{**SMALL, **bad})

"""TrainConfig: the paper's defaults, and bad settings refused by name."""

import pytest

from alexnet_tf.training.config import ModelConfig, TrainConfig


def test_defaults_are_the_papers():
    config = TrainConfig("data", "model")
    assert (config.batch_size, config.epochs, config.learning_rate, config.momentum,
            config.weight_decay, config.lr_schedule, config.max_lr_drops) == \
        (128, 90, 0.01, 0.9, 0.0005, "plateau", 3)
    assert config.model.to_kwargs() == {}  # the model's own defaults


@pytest.mark.parametrize("field, value", [
    ("batch_size", 0), ("strategy", "horovod"), ("lr_schedule", "cosine"),
    ("momentum", 1.0), ("max_steps", 0), ("mixed_precision", "float8"),
    ("step_epochs", (60, 30)), ("tower_devices", ("/CPU:0",)),
])
def test_bad_values_are_refused_naming_the_field(field, value):
    kwargs = {field: value}
    if field == "tower_devices":
        kwargs["strategy"] = "towers"
    with pytest.raises(ValueError, match=f"TrainConfig.{field}="):
        TrainConfig("data", "model", **kwargs)


def test_round_trip_through_a_dict():
    config = TrainConfig("data", "model", model=ModelConfig(width=0.5, dropout=0.0))
    again = TrainConfig.from_dict(config.to_dict())
    assert again == config
    assert again.model.to_kwargs() == {"width": 0.5, "dropout": 0.0}
    with pytest.raises(ValueError, match="unknown TrainConfig fields: \\['batchsize'\\]"):
        TrainConfig.from_dict({"data_dir": "d", "model_dir": "m", "batchsize": 3})


def test_fc_units_is_a_model_setting_refused_by_name_when_it_cannot_build():
    from alexnet_tf.training.config import ConfigError
    config = TrainConfig("data", "model", model={"fc_units": [768, 512]})  # as JSON reads it
    assert config.model.fc_units == (768, 512)
    assert config.model.to_kwargs() == {"fc_units": (768, 512)}
    assert TrainConfig("data", "model").model.to_kwargs() == {}  # the model's default
    for bad in ((768,), (1, 768), (768, 512, 256)):
        with pytest.raises(ConfigError) as info:
            TrainConfig("data", "model", model={"fc_units": bad})
        assert info.value.field == "fc_units"

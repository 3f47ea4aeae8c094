"""Flags defined from the config dataclasses: one default, written once;
presets under flags; the public API imports."""

import dataclasses

import pytest
from absl import flags

import alexnet_tf
from alexnet_tf.training import presets
from alexnet_tf.training.config import ModelConfig, TrainConfig
from launch import config_flags


def _flag_values(cls):
    values = flags.FlagValues()
    config_flags.define_flags(cls, flag_values=values)
    return values


def _leaf_fields(cls):
    for field in dataclasses.fields(cls):
        if dataclasses.is_dataclass(field.type) or field.name == "model":
            yield from _leaf_fields(ModelConfig)
        else:
            yield field


@pytest.mark.parametrize("cls_name", ["TrainConfig", "QuickstartConfig", "BuildConfig"])
def test_every_field_has_a_flag_with_the_fields_default_and_help(cls_name):
    from data_prep.build_tfrecords import BuildConfig
    from launch.quickstart import QuickstartConfig
    cls = {"TrainConfig": TrainConfig, "QuickstartConfig": QuickstartConfig,
           "BuildConfig": BuildConfig}[cls_name]
    values = _flag_values(cls)
    fields = list(_leaf_fields(cls))
    assert len(fields) > 10
    for field in fields:
        assert field.name in values, field.name
        flag = values[field.name]
        default = (field.default if field.default is not dataclasses.MISSING
                   else None if field.default_factory is dataclasses.MISSING
                   else field.default_factory())
        if isinstance(default, tuple):  # list flags hold strings
            assert flag.default == [str(v) for v in default], field.name
        else:
            assert flag.default == default, field.name
        assert flag.help and flag.help != field.name, f"{field.name} has no help text"


def test_flags_override_the_preset_which_overrides_the_defaults():
    values = _flag_values(TrainConfig)
    values(["prog", "--data_dir=d", "--model_dir=m", "--epochs=3", "--step_epochs=5,9",
            "--nolrn", "--init=paper"])
    config = config_flags.from_flags(TrainConfig, presets.preset_values("imagenette"),
                                     flag_values=values)
    assert config.epochs == 3                      # the flag
    assert config.log_every_steps == 5             # the preset
    assert config.batch_size == 128                # the default
    assert config.step_epochs == (5, 9)
    assert config.model.lrn is False and config.model.init == "paper"
    assert config.model.width is None              # not given: the model's default


def test_presets_build_valid_configs_and_state_command_and_result():
    for name, preset in presets.PRESETS.items():
        config = presets.make_config(name, data_dir="d", model_dir="m")
        assert isinstance(config, TrainConfig)
        assert preset.command.startswith("python -m launch.train") and preset.expected
    assert presets.make_config("paper", data_dir="d", model_dir="m").model.init == "paper"
    with pytest.raises(ValueError, match="unknown preset 'nope'"):
        presets.preset_values("nope")


def test_the_public_api_imports_every_name():
    assert {"build_alexnet", "TrainConfig", "ModelConfig", "train", "evaluate",
            "restore_model", "export_saved_model"} <= set(alexnet_tf.__all__)
    for name in alexnet_tf.__all__:
        assert callable(getattr(alexnet_tf, name)), name
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        alexnet_tf.nope  # noqa: B018

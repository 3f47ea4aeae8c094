"""Flags defined from the config dataclasses: one default, written once;
presets under flags; the public API imports."""

import dataclasses

import pytest
from absl import flags

import alexnet_tf
from alexnet_tf.training import presets
from alexnet_tf.training.config import ModelConfig, TrainConfig
from alexnet_tf.cli import config_flags


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


LAUNCHER_FLAGS = """
import json, sys
from absl import flags
import {module} as tool
before = set(flags.FLAGS)
tool.define_flags()
defined = {{name: flags.FLAGS[name].default for name in set(flags.FLAGS) - before}}
print(json.dumps(defined, default=list))
"""


@pytest.mark.parametrize("module, cls_name, extra", [
    ("launch.train", "TrainConfig", {"config"}),
    ("launch.quickstart", "QuickstartConfig", set()),
    ("data_prep.build_tfrecords", "BuildConfig", set()),
])
def test_each_launcher_defines_exactly_its_configs_flags(module, cls_name, extra):
    """What the program itself defines (not a copy built here): a flag written by
    hand, or one the launcher stopped taking from the dataclass, fails this."""
    import json
    import os
    import subprocess
    import sys
    from data_prep.build_tfrecords import BuildConfig
    from launch.quickstart import QuickstartConfig
    cls = {"TrainConfig": TrainConfig, "QuickstartConfig": QuickstartConfig,
           "BuildConfig": BuildConfig}[cls_name]
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    result = subprocess.run([sys.executable, "-c", LAUNCHER_FLAGS.format(module=module)],
                            cwd=repo, capture_output=True, text=True, timeout=120,
                            env=dict(os.environ, PYTHONPATH=repo))
    assert result.returncode == 0, result.stderr
    defined = json.loads(result.stdout)
    expected = _flag_values(cls)
    assert set(defined) == {f.name for f in _leaf_fields(cls)} | extra
    for name in set(defined) - extra:
        assert defined[name] == expected[name].default, name


def test_a_flagfile_overrides_the_preset_as_the_command_line_does(tmp_path):
    flagfile = tmp_path / "run.flags"
    flagfile.write_text("--data_dir=d\n--model_dir=m\n--epochs=4\n--nolrn\n")
    values = _flag_values(TrainConfig)
    values(["prog", f"--flagfile={flagfile}", "--batch_size=64"])
    config = config_flags.from_flags(TrainConfig, presets.preset_values("imagenette"),
                                     flag_values=values)
    assert config.epochs == 4                     # the flagfile, over the preset's 15
    assert config.batch_size == 64                # the command line
    assert config.log_every_steps == 5            # the preset
    assert config.model.lrn is False and config.data_dir == "d"

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


# Every launcher: (module, its config dataclass as module:name, flags it adds by hand).
LAUNCHERS = {
    "launch.train": ("alexnet_tf.training.config:TrainConfig", {"config"}),
    "launch.quickstart": ("launch.quickstart:QuickstartConfig", set()),
    "launch.evaluate": ("alexnet_tf.training.config:EvaluateConfig", set()),
    "launch.export": ("launch.export:ExportConfig", set()),
    "launch.predict": ("launch.predict:PredictConfig", set()),
    "launch.serve": ("launch.serve:ServeConfig", set()),
    "launch.figures": ("launch.figures:FiguresConfig", set()),
    "launch.import_caffe": ("launch.import_caffe:ImportCaffeConfig", set()),
    "launch.data_service": ("alexnet_tf.data.service_servers:ServiceConfig", set()),
    "launch.reproduce_relu_tanh": (
        "experiments.figure1_relu_tanh.config:ReluTanhConfig", set()),
    "data_prep.build_tfrecords": ("data_prep.build_tfrecords:BuildConfig", set()),
    "data_prep.make_synthetic": ("data_prep.make_synthetic:SyntheticConfig", set()),
}


def _config_class(spec: str):
    import importlib
    module, name = spec.split(":")
    return getattr(importlib.import_module(module), name)


def _flag_default(field):
    """What the flag's default must be: the field's, as absl holds it."""
    default = (field.default if field.default is not dataclasses.MISSING
               else None if field.default_factory is dataclasses.MISSING
               else field.default_factory())
    if isinstance(default, tuple) and not field.metadata.get("multi"):
        return [str(v) for v in default]  # list flags hold strings
    if field.metadata.get("choices") and default is not None:
        return str(default)  # enum flags hold strings
    return default


@pytest.mark.parametrize("module", sorted(LAUNCHERS))
def test_every_field_has_a_flag_with_the_fields_default_and_help(module):
    cls = _config_class(LAUNCHERS[module][0])
    values = _flag_values(cls)
    fields = list(_leaf_fields(cls))
    assert len(fields) >= 5
    for field in fields:
        assert field.name in values, field.name
        flag = values[field.name]
        assert flag.default == _flag_default(field), field.name
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


def _defined_by(module: str) -> dict:
    """The flags (name -> default) the launcher's own define_flags() defines
    in absl's global FLAGS, removed again afterwards."""
    import importlib
    tool = importlib.import_module(module)
    before = set(flags.FLAGS)
    tool.define_flags()
    new = set(flags.FLAGS) - before
    try:
        return {name: flags.FLAGS[name].default for name in new}
    finally:
        for name in new:  # the next launcher may define the same names
            delattr(flags.FLAGS, name)


def test_each_launcher_defines_exactly_its_configs_flags():
    """What each program itself defines (not a copy built here): a flag
    written by hand, or one the launcher stopped taking from its dataclass,
    fails this."""
    for module, (spec, extra) in LAUNCHERS.items():
        defined = _defined_by(module)
        cls = _config_class(spec)
        expected = _flag_values(cls)
        assert set(defined) == {f.name for f in _leaf_fields(cls)} | extra, module
        for name in set(defined) - extra:
            assert defined[name] == expected[name].default, (module, name)


def test_the_library_takes_its_defaults_from_the_same_home():
    """One home per default: what a flag says is what the library does
    when called without that argument."""
    import inspect
    from alexnet_tf.data import input_pipeline, preprocessing
    from alexnet_tf.model.alexnet import AlexNet
    from alexnet_tf.serving import export
    from alexnet_tf.training import evaluate, optimizer
    from alexnet_tf.training.config import EvaluateConfig
    from launch import predict
    from launch.export import ExportConfig
    from launch.quickstart import QuickstartConfig

    def default(function, name):
        return inspect.signature(function).parameters[name].default

    sgd = optimizer.PaperSGD()
    assert (sgd.momentum, sgd.coupled_weight_decay) == (TrainConfig.momentum,
                                                       TrainConfig.weight_decay)
    assert float(sgd.learning_rate.numpy()) == pytest.approx(TrainConfig.learning_rate)
    assert default(input_pipeline.make_train_dataset, "shuffle_buffer") == (
        TrainConfig.shuffle_buffer)
    assert default(AlexNet.__init__, "image_size") == preprocessing.CROP_SIZE == (
        QuickstartConfig.image_size)
    for name in ("crops", "which", "batch_size", "split", "label_offset"):
        assert default(evaluate.evaluate, name) == getattr(EvaluateConfig, name), name
    assert EvaluateConfig.batch_size == TrainConfig.batch_size
    assert default(export.export_saved_model, "top_k") == ExportConfig.top_k
    assert default(export.export_saved_model, "max_image_bytes") == (
        ExportConfig.max_image_bytes) == default(predict.read_files, "max_bytes")


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

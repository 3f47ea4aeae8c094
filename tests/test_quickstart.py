"""The quickstart chain at a tiny scale, so CI keeps every link working:
synthetic data -> records -> train -> evaluate -> export -> predict."""

import os

import pytest
import tensorflow as tf

from launch import quickstart
from tiny_data import TINY_MODEL

pytestmark = pytest.mark.slow  # the whole chain: data prep, training, export


def test_quickstart_runs_the_whole_chain_on_tiny_settings(tmp_path, capsys):
    config = quickstart.QuickstartConfig(
        out_dir=str(tmp_path / "qs"), export_dir=str(tmp_path / "saved_models" / "alexnet"),
        epochs=1, steps_per_epoch=2, batch_size=8, **TINY_MODEL, num_classes=3,
        train_per_class=8, val_per_class=3, figures=False, predict_images=3)
    results = quickstart.run(config)
    out = capsys.readouterr().out

    prep = results["data_prep"]
    assert prep["found"] == prep["written"] + prep["skipped"]
    assert prep["skipped"] == 1  # make_synthetic's deliberately corrupt file
    assert results["train"]["step"] == 2
    for crops in (1, 10):
        figures = results["evaluate"][crops]
        assert 0.0 <= figures["top1_error"] <= 1.0 and 0.0 <= figures["top5_error"] <= 1.0
    export_path = results["export"]
    assert os.path.basename(export_path) == "1"
    assert set(tf.saved_model.load(export_path).signatures) >= {"serving_default", "classify"}
    assert results["predicted"] == 3
    for step in range(1, 7):
        assert f"[{step}/6]" in out
    assert "python -m launch.serve --export_dir=" in out
    assert "chance is 66.7%" in out

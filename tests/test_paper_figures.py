import os

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from alexnet_tf.errors import InputError
from alexnet_tf.figures import features, paper_figures
from alexnet_tf.model import alexnet as model_lib
import tiny_data

pytest.importorskip("matplotlib")


@pytest.mark.slow  # trains and renders every figure
def test_render_writes_every_figure_from_a_tiny_model(tmp_path):
    data_dir = tiny_data.write_tiny_dataset(tmp_path / "data", num_classes=3,
                                            train_per_class=4, val_per_class=3)
    model = model_lib.build_alexnet(num_classes=3, **tiny_data.TINY_MODEL)
    model_dir = tmp_path / "model"
    logs = model_dir / "logs"
    for run in ("train", "validation"):
        writer = tf.summary.create_file_writer(str(logs / run))
        with writer.as_default():
            for step in (1, 2):
                tf.summary.scalar("loss", 1.0 / step, step=step)
        writer.close()
    os.makedirs(model_dir, exist_ok=True)
    (model_dir / "labels.txt").write_text((tmp_path / "data" / "labels.txt").read_text())

    written = paper_figures.render(model, data_dir, str(tmp_path / "fig"), str(model_dir),
                                   num_top5=6, num_queries=2, num_neighbours=3)
    assert set(written) == {"figure3_kernels", "figure4_top5", "figure4_neighbours",
                            "training_curves"}
    kernels = paper_figures.conv1_kernels(model)
    assert [k.shape for k in kernels] == [(11, 11, 3, 3), (11, 11, 3, 3)]
    sizes = {name: Image.open(path).size for name, path in written.items()}
    expected_grid = (16 * (11 * 4 + 1) + 1, 2 * (11 * 4 + 2) + 4)  # 1 row per tower
    assert sizes["figure3_kernels"] == expected_grid
    crop = model.input_shape[1]
    assert sizes["figure4_neighbours"] == (4 * (crop + 4) + 4, 2 * (crop + 4))
    # features of the whole training split were cached for later queries
    feats, rows = features.load_features(str(tmp_path / "fig" / "features"), "train")
    assert feats.shape == (12, tiny_data.TINY_MODEL["fc_units"][1]) and len(rows) == 12
    # and the same pictures went to TensorBoard, one image summary each
    tags = set()
    for event_file in (logs / "figures").iterdir():
        for event in tf.compat.v1.train.summary_iterator(str(event_file)):
            tags.update(v.tag for v in event.summary.value
                        if v.metadata.plugin_data.plugin_name == "images")
    assert tags == set(written)


def test_spread_over_classes_takes_classes_in_turn():
    labels = np.array([0, 0, 0, 0, 1, 1, 2])
    assert paper_figures.spread_over_classes(labels, 5) == [0, 4, 6, 1, 5]
    assert paper_figures.spread_over_classes(labels, 10) == [0, 4, 6, 1, 5, 2, 3]


def test_render_refuses_data_of_another_class_count_before_writing(tmp_path):
    data_dir = tiny_data.write_tiny_dataset(tmp_path / "data", num_classes=3,
                                            train_per_class=2, val_per_class=1)
    model = model_lib.build_alexnet(num_classes=4, **tiny_data.TINY_MODEL)
    out_dir = tmp_path / "fig"
    with pytest.raises(InputError, match="the model has 4 classes but the data's labels.txt has 3"):
        paper_figures.render(model, data_dir, str(out_dir))
    assert not out_dir.exists()

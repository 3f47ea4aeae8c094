import tensorflow as tf

from alexnet_tf.figures import tb_logs


def test_read_scalars_returns_series_per_run_and_last_value_per_step(tmp_path):
    for run, values in (("train", [(1, 3.0), (2, 2.0)]), ("validation", [(2, 2.5)])):
        writer = tf.summary.create_file_writer(str(tmp_path / run))
        with writer.as_default():
            for step, v in values:
                tf.summary.scalar("loss", v, step=step)
            tf.summary.image("picture", tf.zeros([1, 4, 4, 3]), step=1)  # ignored
        writer.close()
    # a resumed run rewrites step 2 in a second event file
    writer = tf.summary.create_file_writer(str(tmp_path / "train"), filename_suffix=".z")
    with writer.as_default():
        tf.summary.scalar("loss", 1.5, step=2)
        tf.summary.scalar("loss", 1.0, step=3)
    writer.close()
    scalars = tb_logs.read_scalars(str(tmp_path))
    assert set(scalars) == {"train", "validation"}
    assert scalars["train"]["loss"] == [(1, 3.0), (2, 1.5), (3, 1.0)]
    assert scalars["validation"] == {"loss": [(2, 2.5)]}

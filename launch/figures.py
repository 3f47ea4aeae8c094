"""The paper's figures for a trained model (Figures 3 and 4, training curves).

    python -m launch.figures --model_dir=runs/alexnet --data_dir=data/records \
        --out_dir=runs/alexnet/figures
"""

from absl import flags

from alexnet_tf.cli import terminal

FLAGS = flags.FLAGS


def define_flags() -> None:
    """Defined only when run as a program (no clash with other tools' flags)."""
    flags.DEFINE_string("model_dir", None, "Training model_dir (model_config.json, checkpoints, logs).")
    flags.DEFINE_string("data_dir", None, "TFRecord folder written by data_prep.build_tfrecords.")
    flags.DEFINE_string("out_dir", None, "Where the PNGs go (default <model_dir>/figures).")
    flags.DEFINE_enum("checkpoint", "latest", ["latest", "best"], "Which checkpoint to draw.")
    flags.DEFINE_integer("max_train_images", None,
                         "Cap on training images whose fc7 features are extracted for "
                         "the nearest-neighbour figure (default: the whole split).", lower_bound=1)
    flags.mark_flags_as_required(["model_dir", "data_dir"])


def main(argv):
    del argv
    from alexnet_tf.figures import paper_figures  # TensorFlow loads after flags are parsed
    from alexnet_tf.training import checkpoints
    model = checkpoints.restore_model(FLAGS.model_dir, FLAGS.checkpoint)
    out_dir = FLAGS.out_dir or f"{FLAGS.model_dir.rstrip('/')}/figures"
    written = paper_figures.render(model, FLAGS.data_dir, out_dir, FLAGS.model_dir,
                                   max_train_images=FLAGS.max_train_images)
    for name, path in written.items():
        print(f"{name}: {path}")
    print(f"figures also in TensorBoard: {FLAGS.model_dir}/logs/figures")


if __name__ == "__main__":
    define_flags()
    terminal.run(main)

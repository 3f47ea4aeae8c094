"""Top-1 / top-5 error of trained models, printed as the paper's Table 2.

    python -m launch.evaluate --data_dir=/data/imagenet-records \
        --model_dir=runs/a --model_dir=runs/b --crops=10

Several --model_dir average their softmax outputs (the paper's "5 CNNs").
The figures and the checkpoints they came from go to --output_json.
"""

from __future__ import annotations

import os

from absl import flags

from alexnet_tf.cli import terminal

FLAGS = flags.FLAGS


def define_flags() -> None:
    """Defined only when run as a program, so importing this module cannot
    clash with another tool's flags in the same process."""

    flags.DEFINE_string("data_dir", None, "Folder with the TFRecord shards and labels.txt.",
                        required=True)
    flags.DEFINE_multi_string("model_dir", None, "A training model_dir; repeat the flag to "
                              "average several models' softmax outputs.", required=True)
    flags.DEFINE_enum("crops", "10", ["1", "10"], "1: the centre crop; 10: four corners, "
                      "centre and their mirror images, softmax averaged (section 4.1).")
    flags.DEFINE_enum("which", "best", ["best", "latest"], "Checkpoint of each model_dir: the "
                      "best by validation top-1 error, or the latest.")
    flags.DEFINE_enum("split", "validation", ["validation", "train"], "Split to evaluate.")
    flags.DEFINE_integer("batch_size", 128, "Images per batch (times 10 with --crops=10).",
                         lower_bound=1)
    flags.DEFINE_integer("label_offset", 0, "Subtracted from stored labels: 1 reads "
                         "tensorflow/models' 1-based records.", lower_bound=0)
    flags.DEFINE_integer("max_batches", None, "Evaluate only this many batches.", lower_bound=1)
    flags.DEFINE_string("output_json", None, "Where the figures go; default "
                        "<first model_dir>/eval_<split>_<crops>crop.json.")


def main(argv):
    del argv
    from alexnet_tf.training.evaluate import evaluate
    crops = int(FLAGS.crops)
    output = FLAGS.output_json or os.path.join(
        FLAGS.model_dir[0], f"eval_{FLAGS.split}_{crops}crop.json")
    result = evaluate(FLAGS.data_dir, FLAGS.model_dir, crops=crops, which=FLAGS.which,
                      batch_size=FLAGS.batch_size, split=FLAGS.split,
                      label_offset=FLAGS.label_offset, max_batches=FLAGS.max_batches,
                      output_json=output)
    print(result["table"])
    print(f"Wrote {output}")


if __name__ == "__main__":
    define_flags()
    terminal.run(main)

"""Does the default training setup learn? Imagenette from scratch on the CPU.

    python -m benchmarks.bench_learn [--epochs=15] [--work_dir=/tmp/alexnet_bench_learn]

Builds TFRecords from ../shared/data/imagenette-224 (10 ImageNet classes,
2,000 train / 500 val photos) with the data prep library, trains AlexNet with
the package's default settings (the paper's SGD, batch 128, lr 0.01, plateau
schedule, the model's default init) and prints the validation top-1 error by
epoch against chance (90%). Target (issue 4): at most 40% within 15 epochs.
The per-epoch figures score the centre crop (what training monitors); at
the end the best checkpoint is also scored with the paper's 10 crops
(section 4.1's test-time scheme).

The run resumes if interrupted (same command again); `--report_only` prints
the table from the TensorBoard logs of a run in progress or stopped.
"""

from __future__ import annotations

import os

from absl import app, flags

FLAGS = flags.FLAGS
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

flags.DEFINE_string("input_dir", os.path.join(REPO, "..", "shared", "data", "imagenette-224"),
                    "Imagenette image folder (train/<wnid>, val/<wnid>).")
flags.DEFINE_string("work_dir", "/tmp/alexnet_bench_learn", "Records and model_dir go here.")
flags.DEFINE_integer("epochs", None, "Epochs to train (default: the imagenette preset's, 15).")
flags.DEFINE_integer("seed", None, "Seeds init, file order and shuffle (default: unseeded).")
flags.DEFINE_string("records_dir", None, "Reuse these records (default: <work_dir>/records).")
flags.DEFINE_bool("report_only", False, "Only print the table from the existing logs.")

CHANCE = 0.9
TARGET = 0.4


def build_records(input_dir: str, records_dir: str) -> None:
    from data_prep import build_tfrecords
    if os.path.exists(os.path.join(records_dir, "stats.json")):
        return
    summary = build_tfrecords.build(build_tfrecords.BuildConfig(
        input_dir=input_dir, output_dir=records_dir, train_shards=8, validation_shards=2))
    if not summary.ok:
        raise RuntimeError(f"data prep skipped files: {summary.skipped[:5]}")


def report(model_dir: str) -> list[tuple[int, float]]:
    from alexnet_tf.figures import tb_logs
    scalars = tb_logs.read_scalars(os.path.join(model_dir, "logs"))
    val = scalars.get("validation", {}).get("top1_error", [])
    train_err = dict(scalars.get("train", {}).get("top1_error", []))
    rate = dict(scalars.get("train", {}).get("images_per_second", []))
    steps_per_epoch = val[0][0] if val else 1
    print(f"{'epoch':>5} {'step':>6} {'val top-1 err':>14} {'vs chance':>10} "
          f"{'train top-1 err':>16} {'img/s':>7}")
    rows = []
    for step, error in val:
        epoch = step // steps_per_epoch
        rows.append((epoch, error))
        print(f"{epoch:>5} {step:>6} {error:>14.1%} {error / CHANCE:>9.2f}x "
              f"{train_err.get(step, float('nan')):>16.1%} {rate.get(step, float('nan')):>7.1f}")
    reached = [e for e, err in rows if err <= TARGET]
    print(f"chance {CHANCE:.0%}; target <= {TARGET:.0%} within 15 epochs: "
          + (f"reached at epoch {reached[0]}" if reached else
             f"not reached in {len(rows)} epoch(s) (best {min((r[1] for r in rows), default=float('nan')):.1%})"))
    return rows


def report_best(records_dir: str, model_dir: str) -> None:
    """The best checkpoint scored with the centre crop and with 10 crops."""
    from alexnet_tf.training import model_dir as model_dir_files
    from alexnet_tf.training.evaluate import evaluate
    if not model_dir_files.read_best_info(model_dir):
        print("no best checkpoint yet (written after the first epoch)")
        return
    for crops in (1, 10):
        result = evaluate(records_dir, [model_dir], crops=crops, which="best")
        row = result["models"][0]
        print(f"best checkpoint ({os.path.basename(row['checkpoint'])}), "
              f"{'10 crops' if crops == 10 else 'centre crop'}: "
              f"val top-1 error {row['top1_error']:.1%}, top-5 {row['top5_error']:.1%}")


def main(argv):
    del argv
    records_dir = FLAGS.records_dir or os.path.join(FLAGS.work_dir, "records")
    model_dir = os.path.join(FLAGS.work_dir, "model")
    if not FLAGS.report_only:
        from alexnet_tf.training import presets
        from alexnet_tf.training.loop import train
        build_records(FLAGS.input_dir, records_dir)
        overrides = {} if FLAGS.epochs is None else {"epochs": FLAGS.epochs}
        train(presets.make_config("imagenette", data_dir=records_dir, model_dir=model_dir,
                                  seed=FLAGS.seed, **overrides))
    report(model_dir)
    report_best(records_dir, model_dir)


if __name__ == "__main__":
    app.run(main)

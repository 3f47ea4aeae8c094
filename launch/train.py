"""Trains AlexNet as the paper did (section 5).

    python -m launch.train --data_dir=/data/imagenet-records --model_dir=runs/alexnet

Defaults are the paper's: batch 128, SGD momentum 0.9, weight decay 0.0005,
learning rate 0.01 divided by 10 when the validation error stops improving
(at most 3 times), 90 epochs. Running the same command again resumes from
the latest checkpoint in --model_dir. `--flagfile=run.flags` reads flags from
a file.
"""

from __future__ import annotations

from absl import app, flags

from alexnet_tf.training.config import LR_SCHEDULES, MIXED_PRECISION, STRATEGIES, ModelConfig, TrainConfig

FLAGS = flags.FLAGS


def define_flags() -> None:
    """Defined only when run as a program, so importing this module cannot
    clash with another tool's flags in the same process."""

    # Data and output.
    flags.DEFINE_string("data_dir", None, "Folder with the data prep's TFRecord shards, "
                        "labels.txt and stats.json.", required=True)
    flags.DEFINE_string("model_dir", None, "Folder for checkpoints, TensorBoard logs "
                        "(logs/train, logs/validation) and model_config.json; an existing "
                        "one is resumed.", required=True)
    flags.DEFINE_integer("label_offset", 0, "Subtracted from stored labels: 1 reads "
                         "tensorflow/models' 1-based records.")
    flags.DEFINE_float("lighting_stddev", 0.1, "Std of the PCA lighting's alpha (section "
                       "4.1); 0 turns the colour augmentation off.")
    flags.DEFINE_integer("shuffle_buffer", 10_000, "Training examples in the shuffle buffer.")
    flags.DEFINE_integer("seed", None, "Seeds the file order and the shuffle buffer.")

    # Optimizer and schedule (section 5).
    flags.DEFINE_integer("batch_size", 128, "Global batch size (summed over replicas).")
    flags.DEFINE_integer("epochs", 90, "Training epochs.")
    flags.DEFINE_float("learning_rate", 0.01, "Initial learning rate.")
    flags.DEFINE_float("momentum", 0.9, "SGD momentum.")
    flags.DEFINE_float("weight_decay", 0.0005, "Weight decay, applied as the paper's rule "
                       "v <- 0.9 v - wd * lr * w - lr * grad.")
    flags.DEFINE_enum("lr_schedule", "plateau", LR_SCHEDULES, "plateau: divide the rate by 10 "
                      "when the validation top-1 error stops improving; step: at --step_epochs.")
    flags.DEFINE_integer("plateau_patience", 3, "Epochs without a better validation top-1 "
                         "error before the rate is divided by 10.")
    flags.DEFINE_float("plateau_min_delta", 0.0, "Smallest drop of the validation error "
                       "that counts as an improvement.")
    flags.DEFINE_integer("max_lr_drops", 3, "At most this many divisions by 10 (the paper: 3).")
    flags.DEFINE_list("step_epochs", ["30", "60", "80"], "Epochs where the step schedule "
                      "divides the rate by 10.")

    # Run length, checkpoints, logs.
    flags.DEFINE_integer("steps_per_epoch", None, "Steps per epoch; default: training "
                         "images / batch_size rounded up (one full pass).")
    flags.DEFINE_integer("max_steps", None, "Stop after this many steps in total (short runs).")
    flags.DEFINE_integer("validation_steps", None, "Validation batches per epoch; default: "
                         "the whole validation split.")
    flags.DEFINE_integer("checkpoint_every_steps", 1000, "Checkpoint interval in steps "
                         "(a checkpoint is also written at each epoch end).")
    flags.DEFINE_integer("keep_checkpoints", 3, "Latest checkpoints kept (plus the best).")
    flags.DEFINE_integer("log_every_steps", 100, "Progress line and TensorBoard interval.")

    # Parallelism and numerics.
    flags.DEFINE_enum("strategy", "default", STRATEGIES, "default: one device; towers: the "
                      "paper's two-tower model parallelism; mirrored: data parallel over "
                      "local GPUs; multi_worker: MultiWorkerMirroredStrategy from TF_CONFIG.")
    flags.DEFINE_list("devices", [], "mirrored: the devices to use (default: all local GPUs).")
    flags.DEFINE_list("tower_devices", [], "towers: the two devices of towers A and B "
                      "(default: /GPU:0,/GPU:1 when visible).")
    flags.DEFINE_enum("mixed_precision", "", MIXED_PRECISION, "Keras dtype policy; "
                      "mixed_float16 adds loss scaling. Off by default (CPU).")
    flags.DEFINE_bool("jit_compile", False, "XLA-compile the training step.")

    # Fine-tuning (section 6).
    flags.DEFINE_string("init_from", "", "Start from this checkpoint (model_dir, best/ or "
                        "prefix) or .keras file: compatible layers are copied, the "
                        "classifier re-initialized when the class count differs.")

    # Model (None keeps build_alexnet's default).
    flags.DEFINE_enum("activation", None, ["relu", "tanh"], "Activation (model default relu).")
    flags.DEFINE_bool("lrn", None, "Local response normalization (model default on).")
    flags.DEFINE_bool("overlapping_pool", None, "3x3/2 pooling, else 2x2/2 (model default on).")
    flags.DEFINE_integer("towers", None, "2 towers as the paper, or 1 column (model default 2).")
    flags.DEFINE_float("width", None, "Scales the conv1-conv4 kernel counts (model default 1).")
    flags.DEFINE_float("dropout", None, "Dropout rate of fc6/fc7 (model default 0.5).")
    flags.DEFINE_bool("extra_conv", None, "Section 6's sixth convolutional layer (model "
                      "default off).")
    flags.DEFINE_string("init", None, "Weight initialization: he, paper or caffe (model "
                        "default he: see alexnet_tf.model).")
    flags.DEFINE_bool("standardize", None, "Divide the mean-subtracted input by the training "
                      "set's per-channel std (stats.json), as 'he' init assumes (default on). "
                      "--init=paper --nostandardize is the paper's set-up.")
    flags.DEFINE_integer("image_size", None, "Input size (model default 224).")


def config_from_flags() -> TrainConfig:
    model = ModelConfig(activation=FLAGS.activation, lrn=FLAGS.lrn,
                        overlapping_pool=FLAGS.overlapping_pool, towers=FLAGS.towers,
                        width=FLAGS.width, dropout=FLAGS.dropout,
                        extra_conv=FLAGS.extra_conv, init=FLAGS.init,
                        image_size=FLAGS.image_size, standardize=FLAGS.standardize)
    return TrainConfig(
        data_dir=FLAGS.data_dir, model_dir=FLAGS.model_dir, batch_size=FLAGS.batch_size,
        epochs=FLAGS.epochs, learning_rate=FLAGS.learning_rate, momentum=FLAGS.momentum,
        weight_decay=FLAGS.weight_decay, lr_schedule=FLAGS.lr_schedule,
        plateau_patience=FLAGS.plateau_patience, plateau_min_delta=FLAGS.plateau_min_delta,
        max_lr_drops=FLAGS.max_lr_drops, step_epochs=[int(e) for e in FLAGS.step_epochs],
        steps_per_epoch=FLAGS.steps_per_epoch, max_steps=FLAGS.max_steps,
        validation_steps=FLAGS.validation_steps,
        checkpoint_every_steps=FLAGS.checkpoint_every_steps,
        keep_checkpoints=FLAGS.keep_checkpoints, log_every_steps=FLAGS.log_every_steps,
        strategy=FLAGS.strategy, devices=FLAGS.devices, tower_devices=FLAGS.tower_devices,
        mixed_precision=FLAGS.mixed_precision, jit_compile=FLAGS.jit_compile,
        label_offset=FLAGS.label_offset, lighting_stddev=FLAGS.lighting_stddev,
        shuffle_buffer=FLAGS.shuffle_buffer, seed=FLAGS.seed, init_from=FLAGS.init_from,
        model=model)


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    from alexnet_tf.training.train import train  # TensorFlow loads after flags are parsed
    train(config_from_flags())


if __name__ == "__main__":
    define_flags()
    app.run(main)

"""The training loop (section 5), readable top to bottom.

    train(config) -> dict of final figures

1. Before anything is written: take the model_dir's lock (the chief alone;
   a second run into it is refused, see `alexnet_tf.run_lock`), check the
   records folder, read its label map and statistics, make the strategy (the
   batch must split over its replicas), load the `init_from` source and
   resolve the tower devices.
   Then prepare the model_dir, build the model and the paper's SGD under
   the strategy, resume from the latest checkpoint or start from
   `init_from` (fine-tuning) or from scratch. A resume refuses settings that
   differ from the recorded ones unless allowed (`run_record`).
2. Loop: `steps_per_loop` training steps per call of the compiled loop
   (`steps.TrainSteps`); a call never crosses a log, checkpoint or epoch
   boundary. A non-finite loss stops at once, naming the steps, with no
   checkpoint written after it.
3. Every `log_every_steps`: a progress line and TensorBoard scalars in
   model_dir/logs/train. Every `checkpoint_every_steps` and at each epoch
   end: a checkpoint. At each epoch end: validation (logs/validation), the
   schedule's update and the best-by-validation checkpoint.
"""

from __future__ import annotations

import math
import os

import keras
import tensorflow as tf

from alexnet_tf import defaults
from alexnet_tf.data import dataset_stats, input_pipeline, labels, records_check
from alexnet_tf.errors import InputError
from alexnet_tf.model import placement
from alexnet_tf.training import (checkpoints, distribute, fine_tune, reporting, run_record,
                                 schedules)
from alexnet_tf.training import model_dir as model_dir_files
from alexnet_tf.training.config import ConfigError, TrainConfig
from alexnet_tf.training.optimizer import PaperSGD
from alexnet_tf.training.steps import TrainSteps


class NonFiniteLossError(InputError, FloatingPointError):
    """The loss or the weights became NaN or infinite (a learning rate too
    large, most often); training stopped without saving."""


def train(config: TrainConfig) -> dict:
    """Trains as the paper did; returns the final figures (also written to
    model_dir/train_summary.json)."""
    previous_policy = keras.config.dtype_policy()
    if config.mixed_precision:
        keras.mixed_precision.set_dtype_policy(config.mixed_precision)
    try:
        with distribute.model_dir_lock(config.model_dir, config.strategy):  # one writer
            return _train(config)
    finally:
        keras.mixed_precision.set_dtype_policy(previous_policy)


def _train(config: TrainConfig) -> dict:
    # ---- the data, checked before anything is written
    manifest = records_check.check_records_dir(
        config.data_dir, verify_sha256=config.verify_records,
        published_stats=config.published_stats, require_validation=True,  # every run validates
        partial_shard_sets=config.partial_shard_sets)
    if manifest and config.label_offset:
        raise ConfigError("label_offset", config.label_offset,
                          f"{config.data_dir} is a data prep build (it has a manifest.json), "
                          "whose labels are 0-based already; label_offset is for "
                          "tensorflow/models' 1-based records")
    model_dir_files.check_writable_dir(config.model_dir)
    label_map = labels.LabelMap.read(os.path.join(config.data_dir, labels.LABELS_FILENAME))
    rgb = data_statistics(config)
    train_images = input_pipeline.count_records(config.data_dir, "train")
    steps_per_epoch, total_steps = run_length(config, train_images)

    # ---- the strategy, the source model and the devices, still before writing
    strategy = distribute.make_strategy(config.strategy, config.devices)
    check_batch_size(config, strategy)
    chief = distribute.is_chief(strategy)
    say = print if chief else (lambda *_: None)
    resuming = tf.train.latest_checkpoint(config.model_dir) is not None
    source = (fine_tune.load_source_model(config.init_from)
              if config.init_from and not resuming else None)
    model_kwargs = model_kwargs_for(config, label_map, rgb, source)
    tower_devices = resolve_towers(config, model_kwargs)

    # ---- the model_dir, the model, the optimizer, the checkpoints
    changes = []
    if chief:
        if resuming:
            model_dir_files.refuse_changed_model_config(config.model_dir, model_kwargs)
            changes = run_record.check_resume(config)  # refuses what was not allowed
        model_dir_files.write_run_files(config.model_dir, config.data_dir, model_kwargs)
    out_dir = distribute.write_dir(config.model_dir, strategy)
    if config.seed is not None:  # reproducible weight init (and dropout draws)
        keras.utils.set_random_seed(config.seed)
    with strategy.scope():
        model = checkpoints.build_model_from_config(model_kwargs, tower_devices)
        optimizer = make_optimizer(config)
        optimizer.build(model.trainable_variables)
    schedule = schedules.make_schedule(config)
    ckpts = checkpoints.TrainingCheckpoints(config.model_dir, model, optimizer, schedule,
                                            keep=config.keep_checkpoints, write_dir=out_dir)
    resumed_from = ckpts.restore_latest()
    rate_change = schedules.rebase(schedule, int(ckpts.epoch.numpy())) if resumed_from else None
    start = describe_start(config, resumed_from, ckpts, schedule, model, source, model_kwargs)
    optimizer.learning_rate = schedule.current()
    if chief:
        changed = run_record.record(config, int(ckpts.step.numpy()), resumed_from, changes,
                                    rate_change)  # train_config.json once restored
        if changed:
            say(changed)

    # ---- input and steps
    batch = config.batch_size
    train_batches = iter(strategy.distribute_datasets_from_function(
        lambda context: train_input(config, context, rgb, len(label_map), train_images,
                                    model_kwargs)))
    eval_batches = strategy.distribute_datasets_from_function(
        lambda context: eval_input(config, context, len(label_map), model_kwargs))
    steps = TrainSteps(model, optimizer, strategy, batch,
                       colocate_gradients=config.strategy == "towers",
                       jit_compile=config.jit_compile)
    logs_dir = os.path.join(out_dir, "logs")
    train_writer = tf.summary.create_file_writer(os.path.join(logs_dir, "train"))
    val_writer = tf.summary.create_file_writer(os.path.join(logs_dir, "validation"))

    # ---- the loop
    step = int(ckpts.step.numpy())
    say(f"Training {config.model_dir}: {len(label_map)} classes, global batch {batch}, "
        f"{steps_per_epoch} steps/epoch, {total_steps} steps, strategy {config.strategy} "
        f"({strategy.num_replicas_in_sync} replica(s)); {start}")
    window, last_train, last_val, history = reporting.MetricWindow(), {}, {}, []
    saved_at = step if resumed_from else -1
    while step < total_steps:
        n = loop_length(step, config, steps_per_epoch, total_steps)
        with input_pipeline.bad_records_as_input_errors():
            loss_sum, top1, top5 = steps.train_loop(train_batches, n)
        if not math.isfinite(loss_sum):
            raise NonFiniteLossError(non_finite_message(loss_sum / (batch * n), step, n,
                                                        config.model_dir))
        step += n
        ckpts.step.assign(step)
        window.add(loss_sum, top1, top5, batch * n)
        epoch_end = step % steps_per_epoch == 0
        if step % config.log_every_steps == 0 or epoch_end or step == total_steps:
            last_train = {**window.figures(), "learning_rate": schedule.current()}
            reporting.write_scalars(train_writer, step, last_train)
            say(reporting.progress_line(step, total_steps, steps_per_epoch, last_train))
            window.reset()
        if epoch_end:
            epoch = step // steps_per_epoch
            with input_pipeline.bad_records_as_input_errors():
                last_val = steps.evaluate(eval_batches)
            reporting.write_scalars(val_writer, step, last_val)
            ckpts.epoch.assign(epoch)
            new_lr = schedule.update(epoch - 1, last_val["top1_error"])
            optimizer.learning_rate = new_lr
            saved = ckpts.save()
            best = ckpts.save_if_best(last_val["top1_error"], epoch)
            saved_at = step
            history.append({"epoch": epoch, "step": step, **{
                f"val_{k}": v for k, v in last_val.items() if k != "images_per_second"},
                "learning_rate": new_lr})
            say(reporting.epoch_line(epoch, last_val, best, new_lr, saved))
            window.reset()  # images/s counts training only
        elif step % config.checkpoint_every_steps == 0:
            ckpts.save()
            saved_at = step
    if saved_at != step:
        ckpts.save()
    if not last_val and total_steps > 0:  # the run ended inside an epoch
        last_val = steps.evaluate(eval_batches)
        reporting.write_scalars(val_writer, step, last_val)
        ckpts.save_if_best(last_val["top1_error"], step // steps_per_epoch)
    train_writer.close()
    val_writer.close()

    summary = {
        "model_dir": config.model_dir, "step": step, "total_steps": total_steps,
        "epoch": step / steps_per_epoch, "steps_per_epoch": steps_per_epoch,
        "learning_rate": schedule.current(), "resumed_from": resumed_from,
        "checkpoint": tf.train.latest_checkpoint(out_dir),
        "best_val_top1_error": ckpts.best_error if math.isfinite(ckpts.best_error) else None,
        **{f"train_{k}": v for k, v in last_train.items() if k != "learning_rate"},
        **{f"val_{k}": v for k, v in last_val.items() if k != "images_per_second"},
        "history": history,
    }
    if chief:
        model_dir_files.write_summary(config.model_dir, summary)
        say(reporting.final_summary(summary))
    else:
        distribute.cleanup_write_dir(out_dir, config.model_dir)
    return summary


# --------------------------------------------------------------------------
# The pieces the loop calls, in the order it calls them

def data_statistics(config: TrainConfig) -> dataset_stats.RGBStats:
    """stats.json's figures, or the published ILSVRC-2012 ones when asked."""
    if config.published_stats:
        return dataset_stats.RGBStats()
    path = os.path.join(config.data_dir, dataset_stats.STATS_FILENAME)
    try:
        return dataset_stats.read_rgb_stats(path)
    except ValueError as e:  # also a JSONDecodeError
        raise InputError(f"{path}: cannot use it ({e}); rerun data prep, or set "
                         "published_stats to use the published ILSVRC-2012 statistics"
                         ) from None


def check_batch_size(config: TrainConfig, strategy: tf.distribute.Strategy) -> None:
    """The global batch splits evenly over the replicas (tf.distribute's rule)."""
    replicas = strategy.num_replicas_in_sync
    if config.batch_size % replicas:
        raise ConfigError("batch_size", config.batch_size,
                          f"must be divisible by the {replicas} replicas of strategy "
                          f"{config.strategy} (the global batch is split evenly)")


def run_length(config: TrainConfig, train_images: int) -> tuple[int, int]:
    """(steps per epoch, total steps). An epoch is a full pass: the last,
    partial batch is rounded up (the stream repeats), never dropped."""
    steps_per_epoch = config.steps_per_epoch or max(1, math.ceil(train_images /
                                                                 config.batch_size))
    total = config.epochs * steps_per_epoch
    return steps_per_epoch, min(total, config.max_steps) if config.max_steps else total


def model_kwargs_for(config: TrainConfig, label_map: labels.LabelMap, rgb,
                     source: keras.Model | None = None) -> dict:
    """build_alexnet kwargs: classes from labels.txt; mean (and std unless
    `model.standardize` is False) from the data's statistics, or, when
    fine-tuning with init_normalization "source", from the source model (from
    model_config.json on a resume: the first run wrote the source's there)."""
    std = None if config.model.standardize is False else [float(v) for v in rgb.std_rgb]
    kwargs = {"num_classes": len(label_map), "mean_rgb": [float(m) for m in rgb.mean_rgb],
              "std_rgb": std, **config.model.to_kwargs()}
    if config.init_from:  # the source's LRN constants and geometry (issue 15)
        kwargs.update(fine_tune.source_settings(config, source))
    if config.init_from and config.init_normalization == "source":
        if source is not None:
            kwargs.update(fine_tune.normalization_of(source))
        elif os.path.exists(os.path.join(config.model_dir,
                                         model_dir_files.MODEL_CONFIG_FILENAME)):
            saved = model_dir_files.read_model_config(config.model_dir)
            kwargs.update({k: saved.get(k) for k in fine_tune.NORMALIZATION_KEYS})
    return kwargs


def make_optimizer(config: TrainConfig):
    """The paper's SGD (section 5); wrapped for loss scaling in float16."""
    optimizer = PaperSGD(config.learning_rate, config.momentum, config.weight_decay)
    if config.mixed_precision == "mixed_float16":
        optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
    return optimizer


def resolve_towers(config: TrainConfig, model_kwargs: dict):
    """Tower devices for the towers strategy (the config's, else two GPUs);
    `placement` logs the choice. A device this process lacks, or devices for
    a one-column model (`towers=1`, also inherited from an init_from source),
    are refused naming `tower_devices`."""
    if config.strategy != "towers":
        return None
    towers = model_kwargs.get("towers", 2)
    if towers == 1:
        if config.tower_devices:
            raise ConfigError("tower_devices", config.tower_devices,
                              "the model has one column (towers=1): nothing to place; "
                              "drop tower_devices, or use towers=2")
        return None
    try:
        return placement.resolve_tower_devices(list(config.tower_devices) or "auto", towers)
    except ValueError as e:
        raise ConfigError("tower_devices", config.tower_devices, str(e)) from None


def describe_start(config, resumed_from, ckpts, schedule, model, source, kwargs) -> str:
    """Resume or fine-tuning start (copies the weights); the header's last words."""
    if resumed_from:
        return (f"resuming at step {int(ckpts.step.numpy())} (epoch "
                f"{int(ckpts.epoch.numpy())}) from {resumed_from}; {schedule.describe()}")
    if source is None:
        return "from scratch"
    copied = fine_tune.copy_matching_weights(model, source)
    convs = [name for name in copied["reinitialized"] if name.startswith("conv")]
    if convs:
        print(f"warning: fine-tuning re-initialized convolutional layers {convs}: their "
              "shapes differ from the source model's")
    normalization = ("the source model's input mean and std" if
                     config.init_normalization == "source" else "this data's mean and std")
    return (f"fine-tuning from {config.init_from}: kept {len(copied['kept'])} layers "
            f"{copied['kept']}, re-initialized {copied['reinitialized'] or 'none'}; "
            f"input normalization: {normalization} (mean {kwargs['mean_rgb']}, "
            f"std {kwargs['std_rgb']})")


def train_input(config: TrainConfig, context, rgb, num_classes: int, train_images: int,
                model_kwargs: dict):
    return input_pipeline.make_train_dataset(
        config.data_dir, config.batch_size, rgb_stats=rgb, label_offset=config.label_offset,
        shuffle_buffer=min(config.shuffle_buffer, train_images), seed=config.seed,
        input_context=context, crop_size=model_kwargs.get("image_size", defaults.CROP_SIZE),
        num_classes=num_classes, lighting_stddev=config.lighting_stddev,
        data_service=config.data_service, service_run=config.model_dir)


def eval_input(config: TrainConfig, context, num_classes: int, model_kwargs: dict):
    dataset = input_pipeline.make_eval_dataset(
        config.data_dir, config.batch_size, crops=1, label_offset=config.label_offset,
        input_context=context, num_classes=num_classes,
        crop_size=model_kwargs.get("image_size", defaults.CROP_SIZE),
        across_shards=config.validation_steps is not None)
    if not config.validation_steps:
        return dataset
    # validation_steps counts global batches; this pipeline feeds
    # num_replicas_in_sync / num_input_pipelines replicas.
    replicas_here = max(1, context.num_replicas_in_sync // context.num_input_pipelines)
    return dataset.take(config.validation_steps * replicas_here)


def loop_length(step: int, config: TrainConfig, steps_per_epoch: int, total: int) -> int:
    """Steps in the next compiled loop: at most `steps_per_loop`, ending at the
    next log, checkpoint or epoch boundary or the end of the run."""
    def to_next(every: int) -> int:
        return every - step % every
    return max(1, min(config.steps_per_loop, to_next(config.log_every_steps),
                      to_next(config.checkpoint_every_steps), to_next(steps_per_epoch),
                      total - step))


def non_finite_message(loss: float, step: int, n: int, model_dir: str) -> str:
    where = f"at step {step + 1}" if n == 1 else f"in steps {step + 1}-{step + n}"
    last_good = tf.train.latest_checkpoint(model_dir)
    return (f"non-finite training loss or weights ({loss}) {where}; stopped without saving "
            f"(a learning rate too large?). Last good checkpoint: {last_good or 'none'}")

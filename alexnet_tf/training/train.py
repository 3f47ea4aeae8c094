"""The training loop (section 5), readable top to bottom.

    train(config) -> dict of final figures

1. Set up: strategy, label map and RGB statistics from the data dir, the
   model_dir (model_config.json, labels.txt, stats.json), the model, the
   paper's SGD (`optimizer.PaperSGD`), the learning-rate schedule and the
   checkpoints. Resume from the latest checkpoint if there is one, else
   start from `init_from` (fine-tuning) or from scratch.
2. Loop: one `tf.function` train step per global batch, run on every
   replica with `strategy.run` (Keras `fit` under tf.distribute has open
   reports of hangs and broken dropout, so it is not used). The loss is the
   softmax cross-entropy of the fc8 logits averaged over the GLOBAL batch.
   A non-finite loss stops at once, naming the step, with no checkpoint
   written after it.
3. Every `log_every_steps`: a progress line and TensorBoard scalars (loss,
   top-1/top-5 error, learning rate, images/s) in model_dir/logs/train.
   Every `checkpoint_every_steps` and at each epoch end: a checkpoint.
   At each epoch end: validation (logs/validation), the schedule's update
   and the best-by-validation checkpoint.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import time
from typing import Optional

import keras
import tensorflow as tf

from alexnet_tf.training import checkpoints, distribute, schedules
from alexnet_tf.data import input_pipeline, labels
from alexnet_tf.model import placement
from alexnet_tf.training.config import TrainConfig
from alexnet_tf.data.dataset_stats import STATS_FILENAME
from alexnet_tf.training.optimizer import PaperSGD

log = logging.getLogger(__name__)

LOGITS_LAYER = "fc8"
TRAIN_CONFIG_FILENAME = "train_config.json"


class NonFiniteLossError(FloatingPointError):
    """The loss became NaN or infinite; training stopped."""


# --------------------------------------------------------------------------
# Set-up helpers

def model_kwargs_for(config: TrainConfig, label_map: labels.LabelMap, rgb) -> dict:
    """build_alexnet kwargs: classes from labels.txt, mean (and std unless
    `model.standardize` is False) from stats.json."""
    std = None if config.model.standardize is False else [float(v) for v in rgb.std_rgb]
    return {"num_classes": len(label_map), "mean_rgb": [float(m) for m in rgb.mean_rgb],
            "std_rgb": std, **config.model.to_kwargs()}


def prepare_model_dir(config: TrainConfig, model_kwargs: dict) -> None:
    """Writes model_config.json and copies labels.txt / stats.json; on a
    resume, refuses a model config that differs from the one on disk."""
    os.makedirs(config.model_dir, exist_ok=True)
    path = os.path.join(config.model_dir, checkpoints.MODEL_CONFIG_FILENAME)
    if os.path.exists(path) and tf.train.latest_checkpoint(config.model_dir):
        on_disk = checkpoints.read_model_config(config.model_dir)
        wanted = checkpoints._jsonable(model_kwargs)
        changed = {k: (on_disk.get(k), wanted.get(k)) for k in set(on_disk) | set(wanted)
                   if on_disk.get(k) != wanted.get(k)}
        if changed:
            raise ValueError(
                f"{path} differs from this run's model settings {changed} (on disk, now): "
                "use a new --model_dir or the same settings to resume")
    checkpoints.write_model_config(config.model_dir, model_kwargs)
    checkpoints.write_json_atomic(os.path.join(config.model_dir, TRAIN_CONFIG_FILENAME),
                                  checkpoints._jsonable(config.to_dict()))
    for name in (labels.LABELS_FILENAME, STATS_FILENAME):
        source = os.path.join(config.data_dir, name)
        if os.path.exists(source):
            shutil.copyfile(source, os.path.join(config.model_dir, name))


def make_optimizer(config: TrainConfig):
    """The paper's SGD (section 5); wrapped for loss scaling in float16."""
    optimizer = PaperSGD(config.learning_rate, config.momentum, config.weight_decay)
    if config.mixed_precision == "mixed_float16":
        optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
    return optimizer


def resolve_towers(config: TrainConfig):
    """Tower devices for --strategy=towers (the caller's, else two GPUs)."""
    if config.strategy != "towers":
        return None
    devices = placement.resolve_tower_devices(list(config.tower_devices) or "auto")
    if devices is None:
        log.warning("--strategy=towers without two devices: the towers share one device")
    return devices


def _topk_correct(labels_, logits, k):
    k = min(k, logits.shape[-1])
    return tf.reduce_sum(tf.cast(tf.math.in_top_k(labels_, logits, k), tf.float32))


class _Window:
    """Sums of per-example figures since the last report."""

    def __init__(self):
        self.reset()

    def reset(self):
        self.loss = self.top1 = self.top5 = 0.0
        self.count = 0
        self.start = time.perf_counter()

    def add(self, loss_sum, top1, top5, count):
        self.loss += loss_sum
        self.top1 += top1
        self.top5 += top5
        self.count += count

    def figures(self) -> dict:
        n = max(self.count, 1)
        elapsed = max(time.perf_counter() - self.start, 1e-9)
        return {"loss": self.loss / n, "top1_error": 1.0 - self.top1 / n,
                "top5_error": 1.0 - self.top5 / n, "images_per_second": self.count / elapsed}


def _write_scalars(writer, step: int, values: dict) -> None:
    with writer.as_default(step=step):
        for name, value in values.items():
            tf.summary.scalar(name, value)
    writer.flush()


# --------------------------------------------------------------------------
# The entry point

def train(config: TrainConfig) -> dict:
    """Trains as the paper did; returns the final figures (also written to
    model_dir/train_summary.json)."""
    previous_policy = keras.config.dtype_policy()
    if config.mixed_precision:
        keras.mixed_precision.set_dtype_policy(config.mixed_precision)
    try:
        return _train(config)
    finally:
        keras.mixed_precision.set_dtype_policy(previous_policy)


def _train(config: TrainConfig) -> dict:
    strategy = distribute.make_strategy(config.strategy, config.devices)
    chief = distribute.is_chief(strategy)
    label_map = labels.LabelMap.read(os.path.join(config.data_dir, labels.LABELS_FILENAME))
    rgb = input_pipeline.resolve_rgb_stats(config.data_dir)
    model_kwargs = model_kwargs_for(config, label_map, rgb)
    if chief:
        prepare_model_dir(config, model_kwargs)
    out_dir = distribute.write_dir(config.model_dir, strategy)

    num_classes = len(label_map)
    batch = config.batch_size
    # An epoch is a full pass: the last, partial batch is rounded up (the
    # stream repeats, so it is filled from the next pass), never dropped.
    steps_per_epoch = config.steps_per_epoch or max(
        1, math.ceil(input_pipeline.count_records(config.data_dir, "train") / batch))
    total_steps = config.epochs * steps_per_epoch
    if config.max_steps:
        total_steps = min(total_steps, config.max_steps)
    image_size = model_kwargs.get("image_size", 224)

    tower_devices = resolve_towers(config)
    if config.seed is not None:  # reproducible weight init (and dropout draws)
        keras.utils.set_random_seed(config.seed)
    with strategy.scope():
        model = checkpoints.build_model_from_config(model_kwargs, tower_devices)
        optimizer = make_optimizer(config)
        optimizer.build(model.trainable_variables)
    logits_model = keras.Model(model.input, model.get_layer(LOGITS_LAYER).output)
    schedule = schedules.make_schedule(config)
    ckpts = checkpoints.TrainingCheckpoints(config.model_dir, model, optimizer, schedule,
                                            keep=config.keep_checkpoints, write_dir=out_dir)
    resumed_from = ckpts.restore_latest()
    if resumed_from:
        log.info("Resumed from %s at step %d, epoch %d; %s", resumed_from,
                 int(ckpts.step.numpy()), int(ckpts.epoch.numpy()), schedule.describe())
    elif config.init_from:
        checkpoints.init_from_pretrained(model, config.init_from)
    optimizer.learning_rate = schedule.current()

    # ---- input
    def train_input(context):
        return input_pipeline.make_train_dataset(
            config.data_dir, batch, rgb_stats=rgb, label_offset=config.label_offset,
            shuffle_buffer=config.shuffle_buffer, seed=config.seed, input_context=context,
            crop_size=image_size, num_classes=num_classes,
            lighting_stddev=config.lighting_stddev)

    def eval_input(context):
        dataset = input_pipeline.make_eval_dataset(
            config.data_dir, batch, crops=1, label_offset=config.label_offset,
            input_context=context, num_classes=num_classes, crop_size=image_size)
        if not config.validation_steps:
            return dataset
        # validation_steps counts global batches; this pipeline feeds
        # num_replicas_in_sync / num_input_pipelines replicas.
        replicas_here = max(1, context.num_replicas_in_sync // context.num_input_pipelines)
        return dataset.take(config.validation_steps * replicas_here)

    train_batches = iter(strategy.distribute_datasets_from_function(train_input))
    eval_batches = strategy.distribute_datasets_from_function(eval_input)

    # ---- steps
    trainable = model.trainable_variables
    use_towers = config.strategy == "towers"
    loss_scaling = isinstance(optimizer, keras.optimizers.LossScaleOptimizer)

    def per_example_figures(images, labels_, training):
        logits = tf.cast(logits_model(images, training=training), tf.float32)
        losses = tf.nn.sparse_softmax_cross_entropy_with_logits(labels_, logits)
        return losses, logits

    def replica_train_step(features, labels_):
        images = input_pipeline.training_images(features)
        if use_towers:  # graph gradients colocated with the tower's forward ops
            losses, logits = per_example_figures(images, labels_, True)
            loss = tf.nn.compute_average_loss(losses, global_batch_size=batch)
            scaled = optimizer.scale_loss(loss) if loss_scaling else loss
            grads = placement.colocated_gradients(scaled, trainable)
        else:
            with tf.GradientTape() as tape:
                losses, logits = per_example_figures(images, labels_, True)
                loss = tf.nn.compute_average_loss(losses, global_batch_size=batch)
                scaled = optimizer.scale_loss(loss) if loss_scaling else loss
            grads = tape.gradient(scaled, trainable)
        optimizer.apply(grads, trainable)
        return (tf.reduce_sum(losses), _topk_correct(labels_, logits, 1),
                _topk_correct(labels_, logits, 5))

    def replica_eval_step(images, labels_):
        # At the end of the validation split a replica can get an empty batch
        # (tf.distribute's partial batches); oneDNN convolutions fail on those.
        def figures():
            losses, logits = per_example_figures(images, labels_, False)
            return (tf.reduce_sum(losses), _topk_correct(labels_, logits, 1),
                    _topk_correct(labels_, logits, 5))
        zeros = (tf.constant(0.0),) * 3
        sums = tf.cond(tf.size(labels_) > 0, figures, lambda: zeros)
        return (*sums, tf.cast(tf.size(labels_), tf.float32))

    def summed(per_replica):
        return [strategy.reduce(tf.distribute.ReduceOp.SUM, v, axis=None) for v in per_replica]

    @tf.function(jit_compile=config.jit_compile or None)
    def train_step(inputs):
        return summed(strategy.run(replica_train_step, args=inputs))

    @tf.function
    def eval_step(inputs):
        return summed(strategy.run(replica_eval_step, args=inputs))

    def validate() -> dict:
        window = _Window()
        for inputs in eval_batches:
            window.add(*[float(v) for v in eval_step(inputs)])
        if window.count == 0:
            raise ValueError(f"validation split of {config.data_dir} gave no images")
        return window.figures()

    # ---- logging
    logs_dir = os.path.join(out_dir, "logs")
    train_writer = tf.summary.create_file_writer(os.path.join(logs_dir, "train"))
    val_writer = tf.summary.create_file_writer(os.path.join(logs_dir, "validation"))

    def say(message: str) -> None:
        if chief:
            print(message, flush=True)

    # ---- the loop
    step = int(ckpts.step.numpy())
    say(f"Training {config.model_dir}: {num_classes} classes, global batch {batch}, "
        f"{steps_per_epoch} steps/epoch, {total_steps} steps, strategy {config.strategy} "
        f"({strategy.num_replicas_in_sync} replica(s)); "
        + (f"resuming at step {step}" if resumed_from else "from scratch" if not
           config.init_from else f"fine-tuning from {config.init_from}"))
    window, last_train, last_val = _Window(), {}, {}
    history = []
    saved_at = step if resumed_from else -1
    while step < total_steps:
        loss_sum, top1, top5 = (float(v) for v in train_step(next(train_batches)))
        if not math.isfinite(loss_sum):
            last_good = tf.train.latest_checkpoint(config.model_dir)
            raise NonFiniteLossError(
                f"non-finite training loss ({loss_sum / batch}) at step {step + 1}; "
                f"stopped without saving. Last good checkpoint: {last_good or 'none'}")
        step += 1
        ckpts.step.assign(step)
        window.add(loss_sum, top1, top5, batch)
        epoch_end = step % steps_per_epoch == 0
        if step % config.log_every_steps == 0 or epoch_end or step == total_steps:
            last_train = {**window.figures(), "learning_rate": schedule.current()}
            _write_scalars(train_writer, step, last_train)
            say(_progress_line(step, total_steps, steps_per_epoch, last_train))
            window.reset()
        if epoch_end:
            epoch = step // steps_per_epoch
            last_val = validate()
            _write_scalars(val_writer, step, last_val)
            ckpts.epoch.assign(epoch)
            new_lr = schedule.update(epoch - 1, last_val["top1_error"])
            optimizer.learning_rate = new_lr
            saved = ckpts.save()
            best = ckpts.save_if_best(last_val["top1_error"], epoch)
            saved_at = step
            history.append({"epoch": epoch, "step": step, **{
                f"val_{k}": v for k, v in last_val.items() if k != "images_per_second"},
                "learning_rate": new_lr})
            say(f"epoch {epoch}: validation loss {last_val['loss']:.4f} top-1 error "
                f"{last_val['top1_error']:.4f} top-5 error {last_val['top5_error']:.4f}"
                f"{' (best)' if best else ''}; next lr {new_lr:g}; saved {saved}")
        elif step % config.checkpoint_every_steps == 0:
            ckpts.save()
            saved_at = step
    if saved_at != step:
        ckpts.save()
    if not last_val and total_steps > 0:  # the run ended inside an epoch
        last_val = validate()
        _write_scalars(val_writer, step, last_val)
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
        checkpoints.write_json_atomic(
            os.path.join(config.model_dir, "train_summary.json"), summary)
        say(_final_summary(summary))
    else:
        distribute.cleanup_write_dir(out_dir, config.model_dir)
    return summary


def _progress_line(step: int, total: int, steps_per_epoch: int, figures: dict) -> str:
    done = step / max(total, 1)
    bar = "#" * int(20 * done) + "." * (20 - int(20 * done))
    return (f"[{bar}] step {step}/{total} epoch {step / steps_per_epoch:.2f} "
            f"loss {figures['loss']:.4f} top-1 err {figures['top1_error']:.4f} "
            f"top-5 err {figures['top5_error']:.4f} lr {figures['learning_rate']:g} "
            f"{figures['images_per_second']:.1f} img/s")


def _final_summary(summary: dict) -> str:
    def fmt(key):
        value = summary.get(key)
        return "n/a" if value is None else f"{value:.4f}"
    return "\n".join([
        "Training finished",
        f"  steps            {summary['step']} ({summary['epoch']:.2f} epochs)",
        f"  train loss       {fmt('train_loss')}  top-1 err {fmt('train_top1_error')}  "
        f"top-5 err {fmt('train_top5_error')}",
        f"  validation loss  {fmt('val_loss')}  top-1 err {fmt('val_top1_error')}  "
        f"top-5 err {fmt('val_top5_error')}",
        f"  best val top-1   {fmt('best_val_top1_error')}",
        f"  learning rate    {summary['learning_rate']:g}",
        f"  checkpoint       {summary['checkpoint']}",
    ])

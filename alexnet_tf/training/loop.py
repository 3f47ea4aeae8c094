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
4. SIGTERM or SIGINT (see `preemption.py`): the chunk in progress and its
   bookkeeping finish, a checkpoint is saved and `TrainingPreempted` is
   raised (launch.train prints the step and the command that resumes). A
   full disk is one line naming the path (`disk_full.py`), and what the cut
   save had written is deleted; so is what a killed run left, at the start.

`_train` reads as those steps; `TrainingRun` holds the run's state between
them.
"""

from __future__ import annotations

import gc
import math
import os

import keras
import tensorflow as tf

from alexnet_tf import defaults
from alexnet_tf.data import dataset_stats, input_pipeline, labels, records_check, service_address
from alexnet_tf.errors import InputError
from alexnet_tf.model import placement
from alexnet_tf.training import checkpoints, disk_full, distribute, fine_tune, preemption
from alexnet_tf.training import reporting, run_record, schedules
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
        if config.data_service:  # before the lock and model_dir files are written
            service_address.probe_dispatcher(config.data_service)
        with distribute.model_dir_lock(config.model_dir, config.strategy):  # one writer
            return _train(config)
    finally:
        keras.mixed_precision.set_dtype_policy(previous_policy)


def _train(config: TrainConfig) -> dict:
    run = TrainingRun(config)
    with preemption.StopRequest() as stop, disk_full.refused_when_full(config.model_dir):
        run.check()              # the data, strategy, source model: before anything is written
        run.prepare_model_dir()  # leftovers of an interrupted save, the run's files
        run.build(stop)          # model, optimizer, checkpoints, input, steps, summary writers
        try:
            run.loop()           # SIGTERM/SIGINT: saves, raises TrainingPreempted
            return run.finish()  # the last save and validation, train_summary.json
        except BaseException:
            run.clean_up_after_failure()
            raise
        finally:
            run.close()


class TrainingRun:
    """One training run's state, in the order `_train` builds it."""

    def __init__(self, config: TrainConfig):
        self.config = config

    # ---- 1. checks, before anything is written
    def check(self) -> None:
        config = self.config
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
        self.label_map = labels.LabelMap.read(os.path.join(config.data_dir,
                                                           labels.LABELS_FILENAME))
        self.rgb = data_statistics(config)
        self.train_images = input_pipeline.count_records(config.data_dir, "train")
        self.steps_per_epoch, self.total_steps = run_length(config, self.train_images)

        self.strategy = distribute.make_strategy(config.strategy, config.devices)
        check_batch_size(config, self.strategy)
        self.chief = distribute.is_chief(self.strategy)
        self.say = print if self.chief else (lambda *_: None)
        self.resuming = tf.train.latest_checkpoint(config.model_dir) is not None
        self.source = (fine_tune.load_source_model(config.init_from)
                       if config.init_from and not self.resuming else None)
        self.model_kwargs = model_kwargs_for(config, self.label_map, self.rgb, self.source)
        self.tower_devices = resolve_towers(config, self.model_kwargs)

    # ---- 2. the model_dir (the chief's; other workers write to a temp dir)
    def prepare_model_dir(self) -> None:
        config = self.config
        self.changes = []
        if self.chief:
            removed = checkpoints.remove_leftovers(config.model_dir)
            if removed:
                self.say(f"removed what an interrupted save left in {config.model_dir}: "
                         f"{', '.join(os.path.relpath(p, config.model_dir) for p in removed)}")
            if self.resuming:
                model_dir_files.refuse_changed_model_config(config.model_dir, self.model_kwargs)
                self.changes = run_record.check_resume(config)  # refuses what was not allowed
            model_dir_files.write_run_files(config.model_dir, config.data_dir, self.model_kwargs)
        self.out_dir = distribute.write_dir(config.model_dir, self.strategy)

    # ---- 3. the model, optimizer, checkpoints, input and steps
    def build(self, stop: preemption.StopRequest) -> None:
        config, strategy = self.config, self.strategy
        if config.seed is not None:  # reproducible weight init (and dropout draws)
            keras.utils.set_random_seed(config.seed)
        with strategy.scope():
            model = checkpoints.build_model_from_config(self.model_kwargs, self.tower_devices)
            self.optimizer = make_optimizer(config)
            self.optimizer.build(model.trainable_variables)
        self.schedule = schedules.make_schedule(config)
        self.ckpts = checkpoints.TrainingCheckpoints(
            config.model_dir, model, self.optimizer, self.schedule,
            keep=config.keep_checkpoints, write_dir=self.out_dir)
        self.resumed_from = self.ckpts.restore_latest()
        rate_change = (schedules.rebase(self.schedule, int(self.ckpts.epoch.numpy()))
                       if self.resumed_from else None)
        start = describe_start(config, self.resumed_from, self.ckpts, self.schedule, model,
                               self.source, self.model_kwargs)
        self.optimizer.learning_rate = self.schedule.current()
        if self.chief:
            changed = run_record.record(config, int(self.ckpts.step.numpy()), self.resumed_from,
                                        self.changes, rate_change)  # train_config.json, restored
            if changed:
                self.say(changed)

        num_classes = len(self.label_map)
        self.train_batches = iter(strategy.distribute_datasets_from_function(
            lambda context: train_input(config, context, self.rgb, num_classes,
                                        self.train_images, self.model_kwargs)))
        self.eval_batches = strategy.distribute_datasets_from_function(
            lambda context: eval_input(config, context, num_classes, self.model_kwargs))
        self.steps = TrainSteps(model, self.optimizer, strategy, config.batch_size,
                                colocate_gradients=config.strategy == "towers",
                                jit_compile=config.jit_compile)
        logs_dir = os.path.join(self.out_dir, "logs")
        self.train_writer = tf.summary.create_file_writer(os.path.join(logs_dir, "train"))
        self.val_writer = tf.summary.create_file_writer(os.path.join(logs_dir, "validation"))
        self.preemption = preemption.make_preemption(
            stop, strategy, self.ckpts.save, lambda: int(self.ckpts.step.numpy()),
            scratch_dir=os.path.join(self.out_dir, "preemption"), model_dir=config.model_dir)

        self.step = int(self.ckpts.step.numpy())
        self.saved_at = self.step if self.resumed_from else -1
        self.window, self.last_train, self.last_val, self.history = \
            reporting.MetricWindow(), {}, {}, []
        self.say(f"Training {config.model_dir}: {num_classes} classes, global batch "
                 f"{config.batch_size}, {self.steps_per_epoch} steps/epoch, {self.total_steps} "
                 f"steps, strategy {config.strategy} ({strategy.num_replicas_in_sync} "
                 f"replica(s)); {start}")

    # ---- 4. the loop
    def loop(self) -> None:
        config = self.config
        while self.step < self.total_steps:
            self.preemption.stop_if_requested(self.step)  # after the last chunk's bookkeeping
            n = loop_length(self.step, config, self.steps_per_epoch, self.total_steps)
            self.train_chunk(n)
            epoch_end = self.step % self.steps_per_epoch == 0
            if (self.step % config.log_every_steps == 0 or epoch_end
                    or self.step == self.total_steps):
                self.log_progress()
            if epoch_end:
                self.end_epoch()
            elif self.step % config.checkpoint_every_steps == 0:
                self.save()

    def train_chunk(self, n: int) -> None:
        """n steps in one compiled call; a non-finite loss stops without saving."""
        batch = self.config.batch_size
        with input_pipeline.bad_records_as_input_errors():
            loss_sum, top1, top5 = self.preemption.run(
                lambda: self.steps.train_loop(self.train_batches, n))
        if not math.isfinite(loss_sum):
            raise NonFiniteLossError(non_finite_message(loss_sum / (batch * n), self.step, n,
                                                        self.config.model_dir))
        self.step += n
        self.ckpts.step.assign(self.step)
        self.window.add(loss_sum, top1, top5, batch * n)

    def log_progress(self) -> None:
        self.last_train = {**self.window.figures(), "learning_rate": self.schedule.current()}
        reporting.write_scalars(self.train_writer, self.step, self.last_train)
        self.say(reporting.progress_line(self.step, self.total_steps, self.steps_per_epoch,
                                         self.last_train))
        self.window.reset()

    def end_epoch(self) -> None:
        """Validation, the schedule's update, a checkpoint and maybe a new best."""
        epoch = self.step // self.steps_per_epoch
        self.validate()
        self.ckpts.epoch.assign(epoch)
        new_lr = self.schedule.update(epoch - 1, self.last_val["top1_error"])
        self.optimizer.learning_rate = new_lr
        saved = self.save()
        best = self.ckpts.save_if_best(self.last_val["top1_error"], epoch)
        self.history.append({"epoch": epoch, "step": self.step, **{
            f"val_{k}": v for k, v in self.last_val.items() if k != "images_per_second"},
            "learning_rate": new_lr})
        self.say(reporting.epoch_line(epoch, self.last_val, best, new_lr, saved))
        self.window.reset()  # images/s counts training only

    def validate(self) -> None:
        with input_pipeline.bad_records_as_input_errors():
            self.last_val = self.steps.evaluate(self.eval_batches)
        reporting.write_scalars(self.val_writer, self.step, self.last_val)

    def save(self):
        self.saved_at = self.step
        return self.ckpts.save()

    # ---- 5. the end
    def finish(self) -> dict:
        if self.saved_at != self.step:
            self.save()
        if not self.last_val and self.total_steps > 0:  # the run ended inside an epoch
            self.validate()
            self.ckpts.save_if_best(self.last_val["top1_error"],
                                    self.step // self.steps_per_epoch)
        summary = self.summary()
        if self.chief:
            model_dir_files.write_summary(self.config.model_dir, summary)
            self.say(reporting.final_summary(summary))
        return summary

    def summary(self) -> dict:
        steps_per_epoch = self.steps_per_epoch
        return {
            "model_dir": self.config.model_dir, "step": self.step,
            "total_steps": self.total_steps, "epoch": self.step / steps_per_epoch,
            "steps_per_epoch": steps_per_epoch, "learning_rate": self.schedule.current(),
            "resumed_from": self.resumed_from,
            "checkpoint": tf.train.latest_checkpoint(self.out_dir),
            "best_val_top1_error": (self.ckpts.best_error
                                    if math.isfinite(self.ckpts.best_error) else None),
            **{f"train_{k}": v for k, v in self.last_train.items() if k != "learning_rate"},
            **{f"val_{k}": v for k, v in self.last_val.items() if k != "images_per_second"},
            "history": self.history,
        }

    def clean_up_after_failure(self) -> None:
        """Deletes what a save cut short (a full disk) left; the chief's
        published checkpoints stay as they were."""
        if self.chief:
            checkpoints.remove_leftovers(self.config.model_dir)

    def close(self) -> None:
        self.preemption.close()
        self.train_writer.close()
        self.val_writer.close()
        if not self.chief:
            distribute.cleanup_write_dir(self.out_dir, self.config.model_dir)
        # The input's iterators sit in reference cycles: freed here, not by
        # whatever later collection finds them, where stopping their
        # pipelines blocked the caller's next TensorFlow op for up to 90 s.
        self.train_batches = self.eval_batches = self.steps = None
        gc.collect()


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

r"""Builds the TFRecord shards of an image dataset, the paper's way (section 2).

    python -m data_prep.build_tfrecords --input_dir=/data/imagenet --output_dir=/data/records

Every image is converted to RGB, its shorter side scaled to --image_size
(antialiased), centre-cropped to --image_size squared and stored as JPEG in
`train-?????-of-NNNNN` / `validation-?????-of-NNNNN` shards (schema:
`alexnet_tf.data.records`). Also written: `labels.txt`, `stats.json` (counts per
split and class, mean RGB and RGB PCA of the training pixels) and
`manifest.json` + `manifest_files.tsv` (per shard: count, bytes, sha256; per
entry found: converted or skipped, and why).

Nothing leaks or is invented: an output folder inside a split folder is
refused (`data_prep.tree`), so are class folders whose names read alike
(`data_prep.names.lookalike_key`); an image in both train and validation
(the same file, or the same bytes) is dropped from train, refused or
reported as `--on_leak` says, and duplicates within a split are listed
(`data_prep.duplicates`). Ctrl-C stops the workers and ends in one line
(exit 130), leaving what a rerun resumes.

Interrupt it at any moment and run the same command again: complete shards
are kept, the rest are redone. `--overwrite` rebuilds everything. One build
at a time per output folder (`data_prep.output_dir`); its workers die with
it (`data_prep.lifeline`). Which entries and links are read:
`data_prep.tree`; names: `data_prep.names`; shard counts and orders:
`data_prep.sharding`.

Memory: pixels are streamed, one image at a time per worker; what grows with
the dataset is only the parent's list of input names (about 300 bytes per
image, some 380 MB for ILSVRC-2012's 1.28 million), needed to shuffle the
training images across shards.
"""

from __future__ import annotations

import collections
import dataclasses
import json
import os
import signal
import sys
import time
from typing import TextIO

from absl import app, flags

from alexnet_tf.cli import config_flags, terminal

INTERRUPTED_EXIT_CODE = 130  # 128 + SIGINT, as a shell reports a Ctrl-C


def _interrupted_at_start(signum, frame) -> None:
    """Ctrl-C before `main` (during the imports): nothing is written yet,
    so one line and out, no traceback."""
    print("interrupted: nothing was written", file=sys.stderr, flush=True)
    os._exit(INTERRUPTED_EXIT_CODE)


if __name__ == "__main__":  # before the imports below
    signal.signal(signal.SIGINT, _interrupted_at_start)
    terminal.quiet_native_logs()

from alexnet_tf.data import record_file, records  # noqa: E402
from alexnet_tf.options import option  # noqa: E402
from data_prep import (  # noqa: E402
    convert, duplicates, layouts, output_dir, outputs, pool, sharding, stats, writer)
from data_prep.names import escape  # noqa: E402
from data_prep.output_dir import BuildError  # noqa: E402,F401 - part of this module's API
from data_prep.outputs import FILES_FILENAME, MANIFEST_FILENAME, BuildSummary  # noqa: E402,F401
from data_prep.progress import Progress  # noqa: E402

AUTO = 0  # a shard count of 0: follow the data's size (sharding.auto_num_shards)


@dataclasses.dataclass(frozen=True)
class BuildConfig:
    """The tool's settings; the command line's flags are defined from these
    fields (name, type, default, help)."""

    input_dir: str = option(help="Folder holding the dataset in one of the layouts.")
    output_dir: str = option(help="Folder for the shards, labels.txt, stats.json, manifest.")
    layout: str = option("auto", "Input layout; auto detects it from the folder's contents.",
                         choices=("auto",) + layouts.LAYOUTS)
    train_shards: int = option(
        AUTO, f"Number of training shards; {AUTO} = auto: about {sharding.IMAGES_PER_SHARD} "
        f"images per shard, 1 to {sharding.MAX_TRAIN_SHARDS}.")
    validation_shards: int = option(
        AUTO, f"Number of validation shards; {AUTO} = auto: about "
        f"{sharding.IMAGES_PER_SHARD} images per shard, 1 to {sharding.MAX_VALIDATION_SHARDS}.")
    num_workers: int = option(0, "Worker processes; 0 = one per CPU core.")
    image_size: int = option(convert.DEFAULT_SIZE, "Stored image side: shorter side scaled "
                             "to this, then centre-cropped square.")
    quality: int = option(convert.DEFAULT_QUALITY, "JPEG quality of the stored images (1-100).")
    strict: bool = option(False, "Exit non-zero if any input file was skipped.")
    on_leak: str = option(duplicates.DEFAULT_ON_LEAK, "An image in both train and "
                          "validation (the same file or the same bytes): drop it from "
                          "train, fail, or report it and keep both. Always listed in the "
                          "summary and manifest.", choices=duplicates.ON_LEAK)
    overwrite: bool = option(False, "Rebuild from scratch instead of resuming.")
    seed: int = option(sharding.DEFAULT_SEED, "Seed of the training shuffle across shards "
                       "and of the class-mixed validation order.")
    pixel_stride: int = option(stats.DEFAULT_PIXEL_STRIDE, "RGB statistics sample every Nth "
                               "row and column of each training image.")
    max_pixels: int = option(convert.DEFAULT_MAX_PIXELS, "Decompression-bomb guard: images "
                             "with more pixels are skipped (replaces Pillow's own limit, "
                             "above or below it).")
    progress_seconds: float = option(0.0, "Seconds between progress lines; 0 = 1 on a "
                                     "terminal, 15 otherwise.")
    # Starting the worker processes costs seconds, more than converting a small dataset.
    min_images_per_worker: int = option(500, "Use fewer workers when each would get fewer "
                                        "images than this; 0 = always --num_workers.")

    def settings(self) -> writer.ConvertSettings:
        return writer.ConvertSettings(self.image_size, self.quality, self.max_pixels,
                                      self.pixel_stride)

    def validate(self) -> None:
        if not 1 <= self.quality <= 100:
            raise BuildError(f"--quality must be in 1..100, got {self.quality}")
        if self.image_size < 1:
            raise BuildError(f"--image_size must be positive, got {self.image_size}")
        if self.train_shards < 0 or self.validation_shards < 0:
            raise BuildError("--train_shards and --validation_shards must be >= 1, "
                             f"or 0 for automatic (got {self.train_shards}, "
                             f"{self.validation_shards})")
        if self.num_workers < 0:
            raise BuildError(f"--num_workers must be >= 0, got {self.num_workers}")
        if self.pixel_stride < 1:
            raise BuildError(f"--pixel_stride must be >= 1, got {self.pixel_stride}")
        if self.max_pixels < 1:
            raise BuildError(f"--max_pixels must be >= 1, got {self.max_pixels}")
        if self.on_leak not in duplicates.ON_LEAK:
            raise BuildError(f"--on_leak must be one of {', '.join(duplicates.ON_LEAK)}, "
                             f"got {self.on_leak!r}")
        if self.min_images_per_worker < 0:
            raise BuildError(f"--min_images_per_worker must be >= 0, "
                             f"got {self.min_images_per_worker}")


def build(config: BuildConfig, log: TextIO | None = None, *,
          check_duplicates: bool = True) -> BuildSummary:
    """Runs the whole build; returns the summary (also printed to `log`).
    `check_duplicates=False` skips the leak check and the digests of the
    duplicate listing: only for measuring their cost (bench_data_prep.py)."""
    log = log if log is not None else sys.stderr
    config.validate()
    start = time.monotonic()
    layouts.check_output_outside(config.input_dir, config.layout, config.output_dir)
    created = not os.path.lexists(config.output_dir)
    output_dir.prepare(config.output_dir)
    with output_dir.OutputLock(config.output_dir) as lock:
        try:
            listing = layouts.list_inputs(config.input_dir, config.layout, config.output_dir)
            leaks = []
            if check_duplicates:
                leaks = duplicates.find_leaks(
                    listing, config.num_workers or os.cpu_count() or 1, log)
                duplicates.apply(listing, leaks, config.on_leak)
        except (layouts.LayoutError, BuildError):
            if created:  # nothing to build: leave no empty folder behind
                lock.discard_folder()
            raise
        plans = _plan(listing, config)
        if config.overwrite:
            output_dir.remove_outputs(config.output_dir, outputs.NAMES)
        identity = _build_identity(config, listing.layout, plans)
        output_dir.check_same_build(config.output_dir, identity)
        output_dir.remove_strays(config.output_dir, outputs.NAMES)
        # Until this build ends, no manifest: one from an earlier run would
        # vouch for shards this one may replace (training refuses a folder
        # without one, as a build that did not finish).
        output_dir.remove_outputs(config.output_dir, (outputs.MANIFEST_FILENAME,),
                                  shards=False)
        tasks = [writer.ShardTask(p, config.output_dir, config.settings(), listing.label_map,
                                  collect_stats=p.prefix == records.TRAIN_PREFIX,
                                  hash_inputs=check_duplicates)
                 for p in plans]
        _print_header(listing, plans, config, log)
        progress = Progress(sum(len(t.plan.files) for t in tasks), log, config.progress_seconds)
        results = pool.run_tasks(tasks, _num_workers(config, progress.total), progress)
        progress.finish()
        skipped, per_split, repeated = outputs.finish(config, listing, results, identity,
                                                      leaks)
    summary = BuildSummary(
        output_dir=config.output_dir, layout=listing.layout, found=listing.found,
        written=sum(r.records for r in results), skipped=skipped, per_split=per_split,
        shards_written=sum(not r.kept for r in results),
        shards_kept=sum(r.kept for r in results), seconds=time.monotonic() - start,
        images_per_second=progress.rate, leaks=leaks, on_leak=config.on_leak,
        duplicates=repeated)
    outputs.print_summary(summary, log)
    return summary


# ---------------------------------------------------------------- planning

def _plan(listing: layouts.Listing, config: BuildConfig) -> list[sharding.ShardPlan]:
    plans = []
    if layouts.TRAIN in listing.splits:
        files = listing.splits[layouts.TRAIN]
        count = config.train_shards or sharding.auto_num_shards(
            len(files), sharding.MAX_TRAIN_SHARDS)
        plans += sharding.plan_shards(files, records.TRAIN_PREFIX, count,
                                      order="shuffle", seed=config.seed)
    if layouts.VALIDATION in listing.splits:
        files = listing.splits[layouts.VALIDATION]
        count = config.validation_shards or sharding.auto_num_shards(
            len(files), sharding.MAX_VALIDATION_SHARDS)
        plans += sharding.plan_shards(files, records.VALIDATION_PREFIX, count,
                                      order=validation_order(listing.layout), seed=config.seed)
    return plans


def validation_order(layout: str) -> str:
    """Class folders are mixed (any prefix a fair sample); ILSVRC's
    validation images keep their numbered order, already mixed."""
    return "class_mixed" if layout == "imagefolder" else "keep"


def _build_identity(config: BuildConfig, layout: str, plans: list[sharding.ShardPlan]) -> dict:
    """What must match for an earlier run's shards to be reusable: the shard
    counts as used (an automatic count follows the number of images)."""
    counts = collections.Counter(p.prefix for p in plans)
    return {"input_dir": escape(os.path.abspath(config.input_dir)), "layout": layout,
            "train_shards": counts[records.TRAIN_PREFIX],
            "validation_shards": counts[records.VALIDATION_PREFIX],
            "validation_order": validation_order(layout), "seed": config.seed,
            "settings": json.loads(config.settings().key())}


def _print_header(listing: layouts.Listing, plans: list[sharding.ShardPlan],
                  config: BuildConfig, log: TextIO) -> None:
    """The same per-split counts as the summary's `found`."""
    counts = collections.Counter(p.prefix for p in plans)
    splits = ", ".join(f"{split} {listing.found_in(split)}" for split in listing.splits)
    shards = ", ".join(f"{n} {prefix}" for prefix, n in counts.items())
    print(f"{listing.layout}: {listing.found} entries found ({splits}), "
          f"{len(listing.label_map)} classes -> {len(plans)} shards ({shards}) "
          f"in {escape(config.output_dir)}", file=log, flush=True)
    if not record_file.FAST_CHECKSUMS:
        print("warning: google-crc32c has no C extension here: record checksums are computed in "
              "pure Python, slower than the conversion itself", file=log, flush=True)


def _num_workers(config: BuildConfig, num_images: int) -> int:
    workers = config.num_workers or os.cpu_count() or 1
    if config.min_images_per_worker > 0:
        workers = min(workers, max(1, num_images // config.min_images_per_worker))
    return workers


# ---------------------------------------------------------------- command line

FLAGS = flags.FLAGS


def define_flags() -> None:
    """The command line's flags: defined only when run as a program, so
    importing this module (the quickstart does) adds no global flags."""
    config_flags.define_flags(BuildConfig, required=("input_dir", "output_dir"))


def config_from_flags() -> BuildConfig:
    return config_flags.from_flags(BuildConfig)


def interrupted_line(output: str) -> str:
    return (f"interrupted: stopped the build and its workers; complete shards in "
            f"{escape(output)} are kept: run the same command to resume")


def main(argv) -> int:
    terminal.configure_logging()
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    signal.signal(signal.SIGINT, signal.default_int_handler)  # from here: KeyboardInterrupt
    try:
        summary = build(config_from_flags())
    except (layouts.LayoutError, BuildError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(interrupted_line(FLAGS.output_dir), file=sys.stderr, flush=True)
        return INTERRUPTED_EXIT_CODE
    if FLAGS.strict and not summary.ok:
        print(f"--strict: {len(summary.skipped)} entries were skipped", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    define_flags()
    app.run(main)

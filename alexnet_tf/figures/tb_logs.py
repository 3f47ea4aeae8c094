"""Reads scalar series back from TensorBoard event files (for the training
curves figure and for tests of the training loop's logs)."""

from __future__ import annotations

import collections
import glob
import os

import tensorflow as tf


def read_scalars(log_dir: str) -> dict[str, dict[str, list[tuple[int, float]]]]:
    """{run: {tag: [(step, value), ...]}} for every sub-folder of `log_dir`
    holding event files (e.g. 'train', 'validation'); steps sorted, and for a
    step written twice (a resumed run) the last value wins."""
    runs: dict = {}
    for event_file in sorted(glob.glob(os.path.join(log_dir, "**", "events.out.tfevents.*"),
                                       recursive=True)):
        run = os.path.relpath(os.path.dirname(event_file), log_dir)
        series = runs.setdefault(run, collections.defaultdict(dict))
        for record in tf.data.TFRecordDataset(event_file):  # an event file is TFRecords
            event = tf.compat.v1.Event.FromString(record.numpy())
            for value in event.summary.value:
                if value.HasField("simple_value"):
                    number = value.simple_value
                elif value.HasField("tensor") and not value.tensor.tensor_shape.dim:
                    number = float(tf.make_ndarray(value.tensor))
                else:
                    continue  # images, histograms
                series[value.tag][int(event.step)] = number
    return {run: {tag: sorted(points.items()) for tag, points in series.items()}
            for run, series in runs.items()}

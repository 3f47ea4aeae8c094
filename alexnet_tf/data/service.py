"""The training input through a tf.data service (`launch.data_service`).

`through_service(dataset, address, run)` registers the training dataset
(read, decode, crop, flip, batch and lighting: everything in
`input_pipeline.make_train_dataset`) with the dispatcher; its workers run
it and this process receives the finished batches.

Processing mode: dynamic sharding (`distributed_epoch`). The dispatcher
hands the shard files out one at a time to whichever worker asks next, so
across all workers each image is read once per pass over the data, as in
one process: an epoch of `ceil(images / batch)` steps still sees each image
about once (the shuffled stream blends epochs, as locally). Workers can
join or leave part-way; the cost of losing one is the rest of the files it
was reading (dynamic sharding is at-most-once: those images are skipped in
that pass, never repeated). The alternative, `parallel_epochs`, has every
worker read the whole data set: with N workers each image comes N times
per pass, and with --seed every worker would shuffle identically.

One job per run: the dataset is registered under an id (also the job's
name) derived from `run` (the model_dir) and the input's settings, so the
trainers of one multi-worker run share one job (they split its batches,
each image once per pass over the whole cluster, like the global batch),
two runs on one dispatcher never take each other's batches, and a run
resumed with other input settings gets a new job rather than the old one.

`--seed` still seeds the weights and each worker's shuffle, but the order
in which batches reach the trainer depends on the workers' timing: input
order is not reproducible through the service.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os

import tensorflow as tf

from alexnet_tf.data import service_address

_PROCESSING_MODE = tf.data.experimental.service.ShardingPolicy.DYNAMIC


def job_name(run: str, settings: dict) -> str:
    """"alexnet_tf-<digest>": the same for every trainer of a run (same
    `run`, same settings), different for another run or changed settings."""
    key = json.dumps({"run": os.path.normpath(run), **settings}, sort_keys=True, default=str)
    return "alexnet_tf-" + hashlib.sha256(key.encode()).hexdigest()[:16]


def through_service(dataset: tf.data.Dataset, address: str, job: str) -> tf.data.Dataset:
    """`dataset` run by the service at `address` (HOST:PORT or grpc://HOST:PORT)
    as job `job`; the dispatcher must answer first (one line naming it if not:
    TensorFlow itself would wait an hour)."""
    address = service_address.parse_address(address, "data_service", "TrainConfig")
    workers = service_address.probe_dispatcher(address)
    logging.getLogger(__name__).info(
        "training input: tf.data service at %s%s, job %s (%d worker(s) registered now%s)",
        service_address.SCHEME, address, job, workers,
        "; training waits until one registers" if not workers else "")
    target = service_address.SCHEME + address
    service = tf.data.experimental.service
    # Registered under the job's name: every trainer of the run then reads the
    # same dataset (their graphs may differ in unseeded random-op seeds).
    dataset_id = service.register_dataset(target, dataset, dataset_id=job)
    return service.from_dataset_id(
        _PROCESSING_MODE, target, dataset_id, dataset.element_spec, job_name=job
    ).prefetch(tf.data.AUTOTUNE)

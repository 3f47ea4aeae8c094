"""In-process tf.data service servers for the tests, set so that nothing
waits (fields of the config protos only):

- workers heartbeat every 0.1 s: a job's tasks reach a worker with its
  heartbeat, and TensorFlow's 30 s left a training that long without a batch;
- the dispatcher drops a job 0.2 s after its last client left (or 10 s
  without a client's heartbeat, sent each second: a trainer process that
  ended), dynamic sharding jobs included, so a worker ends the job's tasks in its own thread while their
  input pipelines are young. Ending a task waits for its pipeline's tf.data
  autotuning thread to wake, a period that grows to a minute, and a worker's
  stop() ends the tasks left holding the GIL;
- no quiet period (TensorFlow's 2 s wait for clients at stop()).

A training in this process leaves its service iterators in reference cycles;
their destructors wait for an in-process worker's reply, quick while it
serves: collect them (gc.collect()) before stopping the workers.
"""

import tensorflow as tf
from tensorflow.core.protobuf import service_config_pb2

_service = tf.data.experimental.service


def start_cluster(workers: int = 2):
    """(dispatcher, [workers]) on ports the system picks."""
    dispatcher = _service.DispatchServer(service_config_pb2.DispatcherConfig(
        port=0, protocol="grpc", job_gc_check_interval_ms=100, job_gc_timeout_ms=200,
        client_timeout_ms=10_000, gc_dynamic_sharding_jobs=True))
    address = dispatcher.target.split("://")[1]
    return dispatcher, [_service.WorkerServer(service_config_pb2.WorkerConfig(
        dispatcher_address=address, worker_address="127.0.0.1:%port%", protocol="grpc",
        heartbeat_interval_ms=100, shutdown_quiet_period_ms=0)) for _ in range(workers)]


def stop_cluster(dispatcher, workers) -> None:
    for server in (*workers, dispatcher):
        server.stop()

"""The tf.data service's servers: a dispatcher, or a worker that runs the
training input for trainers (`launch.data_service` is the front-end).

A dispatcher hands out the input's splits (its files) and tells trainers
which workers hold their job; with a `work_dir` it journals that state
(fault-tolerant mode) and a restarted dispatcher carries on where it
stopped. A worker registers with the dispatcher, runs the input pipelines
the trainers send (reading the records at the paths the trainer gave: put
them on storage every worker sees) and serves the batches over gRPC.

Settings are checked before a server starts: a port out of range or
already taken (TensorFlow's gRPC server would share a taken port silently,
SO_REUSEPORT), a malformed dispatcher address, or no dispatcher answering
there, each as one ConfigError / InputError line.

No TensorFlow at import: the launcher defines its flags from ServiceConfig
before TensorFlow loads.
"""

from __future__ import annotations

import dataclasses
import errno
import os
import socket
from typing import Optional

from alexnet_tf.data import service_address
from alexnet_tf.errors import ConfigError
from alexnet_tf.options import option

MODES = ("dispatcher", "worker")
# A worker that stopped heart-beating for this long is dropped by the
# dispatcher, and its tasks with it (TensorFlow's default is 10 minutes,
# during which trainers keep asking the lost worker).
DEFAULT_WORKER_TIMEOUT_S = 30
DEFAULT_HEARTBEAT_S = 5


@dataclasses.dataclass
class ServiceConfig:
    """One tf.data service server."""

    mode: str = option(None, "dispatcher: hands out the input's splits and the workers' "
                       "addresses; worker: runs the training input for trainers.",
                       choices=MODES)
    port: Optional[int] = option(None, "Port to listen on (1..65535; 0 picks a free one and "
                                 "prints it).")
    dispatcher: str = option("", "worker: the dispatcher's HOST:PORT (or grpc://HOST:PORT).")
    worker_address: str = option("", "worker: HOST:PORT trainers use to reach this worker "
                                 "(default: this machine's host name and --port).")
    work_dir: str = option("", "dispatcher: folder for its journal (fault-tolerant mode): a "
                           "dispatcher restarted with the same work_dir resumes its jobs and "
                           "workers. Default: none (state is lost on restart).")
    worker_timeout: int = option(DEFAULT_WORKER_TIMEOUT_S, "dispatcher: seconds without a "
                                 "heartbeat after which a worker counts as lost and trainers "
                                 "stop asking it.")
    heartbeat: int = option(DEFAULT_HEARTBEAT_S, "worker: seconds between heartbeats to the "
                            "dispatcher (keep it well under the dispatcher's worker_timeout).")

    def __post_init__(self):
        self.validate()

    def validate(self) -> None:
        def need(ok: bool, field: str, why: str):
            if not ok:
                raise ConfigError(field, getattr(self, field), why, "ServiceConfig")

        need(self.mode is not None, "mode", "must be set: dispatcher or worker")
        need(self.mode in MODES, "mode", f"must be one of {MODES}")
        need(self.port is not None, "port", "must be set")
        need(0 <= self.port <= 65535, "port", "must be in 0..65535 (0: any free port)")
        need(self.worker_timeout >= 1, "worker_timeout", "must be at least 1 second")
        need(self.heartbeat >= 1, "heartbeat", "must be at least 1 second")
        if self.mode == "worker":
            need(bool(self.dispatcher), "dispatcher", "a worker needs its dispatcher's "
                 "HOST:PORT")
            self.dispatcher = service_address.parse_address(self.dispatcher, "dispatcher",
                                                            "ServiceConfig")
            need(not self.work_dir, "work_dir", "is a dispatcher setting")
            if self.worker_address:
                service_address.parse_address(self.worker_address.replace(
                    "%port%", "1"), "worker_address", "ServiceConfig")
        else:
            need(not self.dispatcher, "dispatcher", "is a worker setting")
            need(not self.worker_address, "worker_address", "is a worker setting")
            # TensorFlow would end in a RuntimeError traceback when it starts
            need(not self.work_dir or not os.path.exists(self.work_dir)
                 or os.path.isdir(self.work_dir), "work_dir", "exists and is not a folder")


def check_port_free(port: int) -> None:
    """Binding a plain socket fails when anything listens on `port` (a gRPC
    server's SO_REUSEPORT does not let a second, plain socket in).
    SO_REUSEADDR: the closed connections of a server just stopped on this
    port (TIME_WAIT) do not count, so a dispatcher can restart at once."""
    if port == 0:
        return
    with socket.socket(socket.AF_INET6 if socket.has_ipv6 else socket.AF_INET) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("::" if socket.has_ipv6 else "", port))
        except OSError as e:
            why = ("is in use by another process" if e.errno == errno.EADDRINUSE
                   else f"cannot be bound here ({e.strerror})")
            raise ConfigError("port", port, why, "ServiceConfig") from None


def start(config: ServiceConfig):
    """Starts the server; returns (server, the line saying where it listens).
    Stop it with `server.stop()`."""
    check_port_free(config.port)
    if config.mode == "dispatcher":
        return _start_dispatcher(config)
    check_worker_address(config.worker_address)
    workers = service_address.probe_dispatcher(config.dispatcher)
    return _start_worker(config, workers)


def check_worker_address(worker_address: str) -> None:
    """The host trainers are told to reach this worker at must at least
    resolve: a typo would register a worker nobody can reach, and trainers
    would wait on it without a word."""
    if not worker_address:
        return  # this machine's own host name
    host = worker_address.rsplit(":", 1)[0].strip("[]")
    try:
        socket.getaddrinfo(host, None)
    except (socket.gaierror, UnicodeError) as e:
        raise ConfigError("worker_address", worker_address,
                          f"its host {host!r} does not resolve here ({e}): trainers could "
                          "not reach this worker", "ServiceConfig") from None


def _start_dispatcher(config: ServiceConfig):
    import tensorflow as tf
    service = tf.data.experimental.service
    server = service.DispatchServer(service.DispatcherConfig(
        port=config.port, work_dir=config.work_dir or None,
        fault_tolerant_mode=bool(config.work_dir),
        worker_timeout_ms=config.worker_timeout * 1000))
    port = int(server.target.rsplit(":", 1)[1])
    state = (f"fault-tolerant, journal in {config.work_dir}" if config.work_dir
             else "no work_dir: its state is lost on restart")
    return server, (f"tf.data service dispatcher listening on port {port} ({state}); "
                    f"trainers use --data_service=grpc://{socket.gethostname()}:{port}")


def _start_worker(config: ServiceConfig, known_workers: int):
    import tensorflow as tf
    service = tf.data.experimental.service
    address = config.worker_address or f"{socket.gethostname()}:%port%"
    server = service.WorkerServer(service.WorkerConfig(
        dispatcher_address=config.dispatcher, worker_address=address, port=config.port,
        heartbeat_interval_ms=config.heartbeat * 1000))
    port = int(server._address.rsplit(":", 1)[1])  # the bound port (config.port may be 0)
    return server, (f"tf.data service worker listening on port {port} as "
                    f"{address.replace('%port%', str(port))}, registered with the dispatcher "
                    f"at {config.dispatcher} ({known_workers} other worker(s) there)")

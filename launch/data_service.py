"""Runs a tf.data service server, so the training input runs on other machines.

    python -m launch.data_service --mode=dispatcher --port=5050 [--work_dir=DIR]
    python -m launch.data_service --mode=worker --dispatcher=HOST:5050 --port=5051

Then train with `python -m launch.train --data_service=grpc://HOST:5050 ...`
(see docs/distributed.md for a cluster recipe and what happens on failures).

Each prints one line when it listens and runs until SIGTERM or Ctrl-C,
then stops its server and exits with status 0. Bad settings (a port out of
range or taken, a malformed dispatcher address, no dispatcher answering
there within 10 s) are refused in one line with status 2.

Every flag is a field of `alexnet_tf.data.service_servers.ServiceConfig`.
"""

from __future__ import annotations

import signal
import threading

from absl import flags

from alexnet_tf.cli import config_flags, terminal
from alexnet_tf.data.service_servers import ServiceConfig

FLAGS = flags.FLAGS


def define_flags() -> None:
    """Defined only when run as a program (importing cannot clash with
    another tool's flags)."""
    config_flags.define_flags(ServiceConfig)


def serve_until_stopped(config: ServiceConfig) -> int:
    stop = threading.Event()
    received = []

    def on_signal(number, _frame):
        received.append(signal.Signals(number).name)
        stop.set()

    # Before the server starts, so a signal during start-up also stops cleanly.
    for number in (signal.SIGTERM, signal.SIGINT):
        signal.signal(number, on_signal)
    from alexnet_tf.data import service_servers  # TensorFlow loads with the server
    server, listening = service_servers.start(config)
    print(listening, flush=True)
    while not stop.wait(1.0):  # a timed wait: signal handlers run between waits
        pass
    server.stop()
    print(f"tf.data service {config.mode} stopped ({received[0]})", flush=True)
    return 0


def main(argv):
    del argv
    return serve_until_stopped(config_flags.from_flags(ServiceConfig))


if __name__ == "__main__":
    define_flags()
    terminal.run(main)

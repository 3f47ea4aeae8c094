"""Serve exported versions with TensorFlow Serving: gRPC on 8500, REST on 8501.

    python -m launch.serve --export_dir=saved_models/alexnet [--versions=latest:2] [--dry_run]

Runs `tensorflow_model_server` when it is on the PATH, else the official
`tensorflow/serving` Docker image, with a generated `--model_config_file`
(model_config_list with the version policy) and `--batching_parameters_file`,
and `--enable_model_warmup` (the export's assets.extra warm-up requests).
It prints the files it wrote and the exact command; `--dry_run` stops there.
When neither runner exists it says what to install and exits with status 2.
"""

from __future__ import annotations

import dataclasses
import os
import shlex
import shutil
import subprocess
import sys
import urllib.parse
from typing import Optional

from alexnet_tf import defaults
from alexnet_tf.cli import config_flags, terminal
from alexnet_tf.options import option
from launch.serving_config import (BATCHING_FILENAME, CONTAINER_MODELS, GRPC_PORT,
                                   MODEL_CONFIG_FILENAME, REST_PORT, batching_parameters_text,
                                   parse_version_policy, write_configs)

SERVER_BINARY = "tensorflow_model_server"
CONTAINER_CONFIG = "/config"

INSTALL_HELP = """\
Neither `tensorflow_model_server` nor `docker` is on the PATH. Install one:
  Docker (any OS):  https://docs.docker.com/engine/install/  then
                    docker pull tensorflow/serving
  Debian/Ubuntu:    echo "deb [arch=amd64] http://storage.googleapis.com/tensorflow-serving-apt stable tensorflow-model-server tensorflow-model-server-universal" | sudo tee /etc/apt/sources.list.d/tensorflow-serving.list
                    curl https://storage.googleapis.com/tensorflow-serving-apt/tensorflow-serving.release.pub.gpg | sudo apt-key add -
                    sudo apt-get update && sudo apt-get install tensorflow-model-server
Without a server, `python -m launch.predict --saved_model=<export_dir>/<version> image.jpg`
runs the same signature in-process."""



@dataclasses.dataclass
class ServeConfig:
    """The flags, defined from these fields."""

    export_dir: str = option(defaults.EXPORT_DIR, "Model base path holding numbered versions "
                             "(launch.export's --export_dir).")
    model_name: Optional[str] = option(None, "Name clients use in URLs and ModelSpecs; default "
                                       "the export_dir's last component.")
    grpc_port: int = option(GRPC_PORT, "gRPC port (PredictionService, ModelService).")
    rest_port: int = option(REST_PORT, "REST port (/v1/models/<name>:predict, ...).")
    versions: str = option("latest:1", "Version policy: latest:N (the N highest), all, or "
                           "specific:1,2 (only those).")
    config_dir: Optional[str] = option(None, "Where the generated config files go; default "
                                       "<export_dir>/../<model_name>_serving_config.")
    runner: str = option("auto", "auto: the local binary if on the PATH, else Docker.",
                         choices=("auto", "local", "docker"))
    docker_image: str = option("tensorflow/serving:latest", "Image for the Docker runner (use "
                               "a -gpu tag with --docker_gpus).")
    docker_gpus: bool = option(False, "Pass --gpus=all to docker run.")
    max_batch_size: int = option(32, "Server-side batching: largest batch formed.")
    batch_timeout_micros: int = option(5000, "Server-side batching: longest wait for a batch "
                                       "to fill, in microseconds.")
    num_batch_threads: Optional[int] = option(None, "Threads running batches; default the CPU "
                                              "count.")
    max_enqueued_batches: int = option(100, "Queue bound; beyond it requests are refused.")
    dry_run: bool = option(False, "Write the configs and print the command, do not run it.")


def define_flags() -> None:
    """Defined only when run as a program, so that importing this module
    (tests, other tools) cannot clash with another tool's flags."""
    config_flags.define_flags(ServeConfig)


def server_flags(model_config: str, batching_config: str, grpc_port: int,
                 rest_port: int) -> list[str]:
    return [
        f"--port={grpc_port}",
        f"--rest_api_port={rest_port}",
        f"--model_config_file={model_config}",
        "--enable_batching=true",
        f"--batching_parameters_file={batching_config}",
        "--enable_model_warmup=true",
    ]


def find_runner(requested: str, which=shutil.which) -> str | None:
    """"local", "docker", or None when the requested one (auto: either) is missing."""
    if requested in ("auto", "local") and which(SERVER_BINARY):
        return "local"
    if requested in ("auto", "docker") and which("docker"):
        return "docker"
    return None


def docker_daemon_problem(timeout: float = 20.0) -> str | None:
    """None when `docker info` answers, else docker's own complaint (a
    docker client without a running daemon is common on CI machines)."""
    try:
        result = subprocess.run(["docker", "info"], capture_output=True, text=True,
                                timeout=timeout)
    except (OSError, subprocess.TimeoutExpired) as e:
        return str(e)
    if result.returncode == 0:
        return None
    return (result.stderr or result.stdout).strip() or f"exit status {result.returncode}"


def build_command(runner: str, *, export_dir: str, model_name: str, config_dir: str,
                  grpc_port: int, rest_port: int, docker_image: str = ServeConfig.docker_image,
                  docker_gpus: bool = False) -> list[str]:
    """The full command line. Docker mounts the export read-only at
    /models/<name> and the configs at /config, and runs the same server
    binary with the same flags (its entrypoint script is bypassed)."""
    if runner == "local":
        return [SERVER_BINARY] + server_flags(
            os.path.join(config_dir, f"local_{MODEL_CONFIG_FILENAME}"),
            os.path.join(config_dir, BATCHING_FILENAME), grpc_port, rest_port)
    command = ["docker", "run", "--rm", "--init",
               "-p", f"{grpc_port}:{grpc_port}", "-p", f"{rest_port}:{rest_port}",
               "-v", f"{export_dir}:{CONTAINER_MODELS}/{model_name}:ro",
               "-v", f"{config_dir}:{CONTAINER_CONFIG}:ro"]
    if docker_gpus:
        command += ["--gpus", "all"]
    command += ["--entrypoint", SERVER_BINARY, docker_image]
    return command + server_flags(
        f"{CONTAINER_CONFIG}/docker_{MODEL_CONFIG_FILENAME}",
        f"{CONTAINER_CONFIG}/{BATCHING_FILENAME}", grpc_port, rest_port)


def published_versions(export_dir: str) -> list[int]:
    """Numbered subdirectories holding a saved_model.pb."""
    if not os.path.isdir(export_dir):
        return []
    return sorted(int(d) for d in os.listdir(export_dir) if d.isdigit()
                  and os.path.exists(os.path.join(export_dir, d, "saved_model.pb")))


def setting_problems(config: ServeConfig, *, export_dir: str, versions_on_disk: list[int],
                     name: str, config_dir: str, runner: str | None) -> list[str]:
    """Every flag value that cannot work, as one line each (empty: all fine).
    Checked before anything is written."""
    problems = []
    ports = {"grpc_port": config.grpc_port, "rest_port": config.rest_port}
    for flag, port in ports.items():
        if not 1 <= port <= 65535:
            problems.append(f"--{flag}={port}: a port is 1..65535")
    if config.grpc_port == config.rest_port:
        problems.append(f"--grpc_port and --rest_port are both {config.rest_port}: "
                        "they must differ")
    for flag in ("max_batch_size", "num_batch_threads", "max_enqueued_batches"):
        value = getattr(config, flag)
        if value is not None and value < 1:
            problems.append(f"--{flag}={value}: must be at least 1")
    if config.batch_timeout_micros < 0:
        problems.append(f"--batch_timeout_micros={config.batch_timeout_micros}: must be >= 0 "
                        "(0: run each batch at once)")
    try:
        kind, numbers = parse_version_policy(config.versions)
    except ValueError as e:
        problems.append(str(e))
    else:
        missing = [v for v in numbers if kind == "specific" and v not in versions_on_disk]
        if missing:
            problems.append(f"--versions={config.versions}: version(s) {missing} not in "
                            f"{export_dir} (it has {versions_on_disk})")
    if not name or any(c in name for c in "/:") or not name.isprintable():
        problems.append(f"--model_name={name!r}: a model name must be non-empty, printable, "
                        "without '/' or ':'")
    if os.path.exists(config_dir) and not os.path.isdir(config_dir):
        problems.append(f"--config_dir={config_dir}: exists and is not a folder")
    if runner == "docker":
        problems += [f"{path}: docker cannot mount a path containing ':'"
                     for path in (export_dir, config_dir) if ":" in path]
    return problems


def main(argv):
    del argv
    config = config_flags.from_flags(ServeConfig)
    export_dir = os.path.abspath(config.export_dir)
    versions = published_versions(export_dir)
    if not versions:
        terminal.usage_error(f"no exported versions in {export_dir} (expected "
                             "<version>/saved_model.pb); run `python -m launch.export` first")
    name = config.model_name or os.path.basename(export_dir.rstrip("/"))
    config_dir = os.path.abspath(config.config_dir or os.path.join(
        os.path.dirname(export_dir), f"{name}_serving_config"))
    runner = find_runner(config.runner)
    problems = setting_problems(config, export_dir=export_dir, versions_on_disk=versions,
                                name=name, config_dir=config_dir, runner=runner)
    if problems:
        terminal.usage_error("; ".join(problems))
    if runner is None:
        wanted = {"auto": "", "local": f" (--runner=local: no {SERVER_BINARY})",
                  "docker": " (--runner=docker: no docker)"}[config.runner]
        print(INSTALL_HELP + wanted, file=sys.stderr)
        return 2
    batching = batching_parameters_text(
        config.max_batch_size, config.batch_timeout_micros,
        config.num_batch_threads or os.cpu_count() or 1, config.max_enqueued_batches)
    paths = write_configs(config_dir, name, export_dir, config.versions, batching)
    command = build_command(runner, export_dir=export_dir, model_name=name,
                            config_dir=config_dir, grpc_port=config.grpc_port,
                            rest_port=config.rest_port, docker_image=config.docker_image,
                            docker_gpus=config.docker_gpus)
    print(f"model {name!r}: versions on disk {versions}, policy {config.versions}")
    print("configs: " + ", ".join(shlex.quote(p) for p in paths))
    print(f"runner: {runner}")
    print("command: " + shlex.join(command))
    print(f"REST: http://localhost:{config.rest_port}/v1/models/{urllib.parse.quote(name)}   "
          f"gRPC: localhost:{config.grpc_port}")
    sys.stdout.flush()
    if config.dry_run:
        return 0
    if runner == "docker":
        problem = docker_daemon_problem()
        if problem:
            print(f"error: docker is installed but not usable: {problem}\n\n{INSTALL_HELP}",
                  file=sys.stderr)
            return 2
    os.execvp(command[0], command)  # the server takes over this process


if __name__ == "__main__":
    define_flags()
    terminal.run(main)

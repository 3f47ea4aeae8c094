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

import os
import shutil
import subprocess
import sys

from absl import app, flags

SERVER_BINARY = "tensorflow_model_server"
CONTAINER_MODELS = "/models"
CONTAINER_CONFIG = "/config"
MODEL_CONFIG_FILENAME = "models.config"
BATCHING_FILENAME = "batching.config"

INSTALL_HELP = """\
Neither `tensorflow_model_server` nor `docker` is on the PATH. Install one:
  Docker (any OS):  https://docs.docker.com/engine/install/  then
                    docker pull tensorflow/serving
  Debian/Ubuntu:    echo "deb [arch=amd64] http://storage.googleapis.com/tensorflow-serving-apt stable tensorflow-model-server tensorflow-model-server-universal" | sudo tee /etc/apt/sources.list.d/tensorflow-serving.list
                    curl https://storage.googleapis.com/tensorflow-serving-apt/tensorflow-serving.release.pub.gpg | sudo apt-key add -
                    sudo apt-get update && sudo apt-get install tensorflow-model-server
Without a server, `python -m launch.predict --saved_model=<export_dir>/<version> image.jpg`
runs the same signature in-process."""

FLAGS = flags.FLAGS


def define_flags() -> None:
    """Defined only when run as a program, so that importing this module
    (tests, other tools) cannot clash with another tool's flags."""
    flags.DEFINE_string("export_dir", "saved_models/alexnet",
                        "Model base path holding numbered versions (launch.export's --export_dir).")
    flags.DEFINE_string("model_name", None, "Name clients use in URLs and ModelSpecs; default the "
                        "export_dir's last component.")
    flags.DEFINE_integer("grpc_port", 8500, "gRPC port (PredictionService, ModelService).")
    flags.DEFINE_integer("rest_port", 8501, "REST port (/v1/models/<name>:predict, ...).")
    flags.DEFINE_string("versions", "latest:1", "Version policy: latest:N (the N highest), all, "
                        "or specific:1,2 (only those).")
    flags.DEFINE_string("config_dir", None, "Where the generated config files go; default "
                        "<export_dir>/../<model_name>_serving_config.")
    flags.DEFINE_enum("runner", "auto", ["auto", "local", "docker"],
                      "auto: the local binary if on the PATH, else Docker.")
    flags.DEFINE_string("docker_image", "tensorflow/serving:latest",
                        "Image for the Docker runner (use a -gpu tag with --docker_gpus).")
    flags.DEFINE_bool("docker_gpus", False, "Pass --gpus=all to docker run.")
    flags.DEFINE_integer("max_batch_size", 32, "Server-side batching: largest batch formed.")
    flags.DEFINE_integer("batch_timeout_micros", 5000, "Server-side batching: longest wait for a "
                         "batch to fill, in microseconds.")
    flags.DEFINE_integer("num_batch_threads", None, "Threads running batches; default the CPU count.")
    flags.DEFINE_integer("max_enqueued_batches", 100, "Queue bound; beyond it requests are refused.")
    flags.DEFINE_bool("dry_run", False, "Write the configs and print the command, do not run it.")


def version_policy_text(policy: str) -> str:
    """`latest:N` / `all` / `specific:1,2` -> a ServableVersionPolicy text proto."""
    kind, _, values = policy.partition(":")
    if kind == "all" and not values:
        return "all {}"
    if kind == "latest":
        count = int(values or 1)
        if count < 1:
            raise ValueError(f"--versions={policy}: latest needs N >= 1")
        return f"latest {{ num_versions: {count} }}"
    if kind == "specific" and values:
        versions = [int(v) for v in values.split(",")]
        return "specific { " + " ".join(f"versions: {v}" for v in versions) + " }"
    raise ValueError(f"--versions={policy}: expected latest:N, all or specific:1,2")


def model_config_text(name: str, base_path: str, policy: str) -> str:
    """The --model_config_file contents: a one-model model_config_list."""
    return (
        "model_config_list {\n"
        "  config {\n"
        f"    name: \"{name}\"\n"
        f"    base_path: \"{base_path}\"\n"
        "    model_platform: \"tensorflow\"\n"
        f"    model_version_policy {{ {version_policy_text(policy)} }}\n"
        "  }\n"
        "}\n")


def batching_parameters_text(max_batch_size: int, batch_timeout_micros: int,
                             num_batch_threads: int, max_enqueued_batches: int) -> str:
    """The --batching_parameters_file contents (BatchingParameters text proto)."""
    return (
        f"max_batch_size {{ value: {max_batch_size} }}\n"
        f"batch_timeout_micros {{ value: {batch_timeout_micros} }}\n"
        f"num_batch_threads {{ value: {num_batch_threads} }}\n"
        f"max_enqueued_batches {{ value: {max_enqueued_batches} }}\n")


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
                  grpc_port: int, rest_port: int, docker_image: str = "tensorflow/serving:latest",
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


def write_configs(config_dir: str, model_name: str, export_dir: str, policy: str,
                  batching: str) -> list[str]:
    """Writes the model configs (one per runner: their base paths differ)
    and the batching parameters; returns the paths."""
    os.makedirs(config_dir, exist_ok=True)
    contents = {
        f"local_{MODEL_CONFIG_FILENAME}": model_config_text(model_name, export_dir, policy),
        f"docker_{MODEL_CONFIG_FILENAME}": model_config_text(
            model_name, f"{CONTAINER_MODELS}/{model_name}", policy),
        BATCHING_FILENAME: batching,
    }
    paths = []
    for filename, text in contents.items():
        path = os.path.join(config_dir, filename)
        with open(f"{path}.tmp", "w") as f:
            f.write(text)
        os.replace(f"{path}.tmp", path)
        paths.append(path)
    return paths


def published_versions(export_dir: str) -> list[int]:
    """Numbered subdirectories holding a saved_model.pb."""
    if not os.path.isdir(export_dir):
        return []
    return sorted(int(d) for d in os.listdir(export_dir) if d.isdigit()
                  and os.path.exists(os.path.join(export_dir, d, "saved_model.pb")))


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    export_dir = os.path.abspath(FLAGS.export_dir)
    versions = published_versions(export_dir)
    if not versions:
        print(f"error: no exported versions in {export_dir} (expected <version>/saved_model.pb); "
              "run `python -m launch.export` first", file=sys.stderr)
        return 1
    name = FLAGS.model_name or os.path.basename(export_dir.rstrip("/"))
    config_dir = os.path.abspath(FLAGS.config_dir or os.path.join(
        os.path.dirname(export_dir), f"{name}_serving_config"))
    try:
        version_policy_text(FLAGS.versions)
    except ValueError as e:
        raise app.UsageError(str(e))
    batching = batching_parameters_text(
        FLAGS.max_batch_size, FLAGS.batch_timeout_micros,
        FLAGS.num_batch_threads or os.cpu_count() or 1, FLAGS.max_enqueued_batches)
    runner = find_runner(FLAGS.runner)
    if runner is None:
        wanted = {"auto": "", "local": f" (--runner=local: no {SERVER_BINARY})",
                  "docker": " (--runner=docker: no docker)"}[FLAGS.runner]
        print(INSTALL_HELP + wanted, file=sys.stderr)
        return 2
    paths = write_configs(config_dir, name, export_dir, FLAGS.versions, batching)
    command = build_command(runner, export_dir=export_dir, model_name=name,
                            config_dir=config_dir, grpc_port=FLAGS.grpc_port,
                            rest_port=FLAGS.rest_port, docker_image=FLAGS.docker_image,
                            docker_gpus=FLAGS.docker_gpus)
    print(f"model {name!r}: versions on disk {versions}, policy {FLAGS.versions}")
    print("configs: " + ", ".join(paths))
    print(f"runner: {runner}")
    print("command: " + " ".join(command))
    print(f"REST: http://localhost:{FLAGS.rest_port}/v1/models/{name}   "
          f"gRPC: localhost:{FLAGS.grpc_port}")
    sys.stdout.flush()
    if FLAGS.dry_run:
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
    app.run(main)

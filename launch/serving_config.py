"""The text protos `launch.serve` writes for TensorFlow Serving: the model
config (a one-model model_config_list with its version policy) and the
batching parameters. Every string is quoted and escaped, so any model name
or path reads back exactly."""

from __future__ import annotations

import os

from alexnet_tf import fileio

# TF Serving's own default ports: launch.serve listens on them, launch.predict asks them.
GRPC_PORT = 8500
REST_PORT = 8501
CONTAINER_MODELS = "/models"
MODEL_CONFIG_FILENAME = "models.config"
BATCHING_FILENAME = "batching.config"


def parse_version_policy(policy: str) -> tuple[str, list[int]]:
    """`latest:N` / `all` / `specific:1,2` -> (kind, numbers); ValueError
    naming the flag when it is neither."""
    kind, _, values = policy.partition(":")
    try:
        if kind == "all" and not values:
            return "all", []
        if kind == "latest":
            count = int(values or 1)
            if count >= 1:
                return "latest", [count]
        if kind == "specific" and values:
            versions = [int(v) for v in values.split(",")]
            if all(v >= 0 for v in versions):
                return "specific", versions
    except ValueError:
        pass
    raise ValueError(f"--versions={policy}: expected latest:N (N >= 1), all or "
                     "specific:1,2 (version numbers)")


def version_policy_text(policy: str) -> str:
    """`latest:N` / `all` / `specific:1,2` -> a ServableVersionPolicy text proto."""
    kind, numbers = parse_version_policy(policy)
    if kind == "all":
        return "all {}"
    if kind == "latest":
        return f"latest {{ num_versions: {numbers[0]} }}"
    return "specific { " + " ".join(f"versions: {v}" for v in numbers) + " }"


def text_proto_string(value: str) -> str:
    """`value` as a quoted protobuf text-format string: quotes, backslashes
    and every byte outside printable ASCII escaped (octal), so any name or
    path reads back exactly."""
    out = []
    for byte in value.encode("utf-8", "surrogateescape"):
        char = chr(byte)
        if char in '"\\':
            out.append("\\" + char)
        elif 32 <= byte < 127:
            out.append(char)
        else:
            out.append(f"\\{byte:03o}")
    return '"' + "".join(out) + '"'


def model_config_text(name: str, base_path: str, policy: str) -> str:
    """The --model_config_file contents: a one-model model_config_list."""
    return (
        "model_config_list {\n"
        "  config {\n"
        f"    name: {text_proto_string(name)}\n"
        f"    base_path: {text_proto_string(base_path)}\n"
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
        fileio.write_text(path, text)
        paths.append(path)
    return paths

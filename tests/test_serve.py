"""launch.serve: generated TF Serving configs, and the command it would run
with the local binary, with Docker, and with neither (no server binary is
installable here; runner discovery is tested with stand-in executables on
the PATH and --dry_run)."""

import os
import re
import shlex
import stat

import pytest

from launch import serve, serving_config
from launchers import run_launcher

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture
def export_dir(tmp_path):
    base = tmp_path / "saved_models" / "alexnet"
    for version in (1, 2):
        (base / str(version)).mkdir(parents=True)
        (base / str(version) / "saved_model.pb").write_bytes(b"")
    (base / ".tmp-3-abc").mkdir()  # an export in progress: not a version
    return base


def _fake_bin(directory, name):
    path = directory / name
    path.write_text("#!/bin/sh\necho should not run >&2\nexit 9\n")
    path.chmod(path.stat().st_mode | stat.S_IEXEC)
    return directory


def _run_serve(path_env, *args):
    """`python -m launch.serve <args>` in this process (tests/launchers.py),
    with only `path_env` on the PATH, where it looks for the runners. Its
    last step, exec'ing the server, would replace pytest: refused here."""
    def no_exec(file, args):
        raise AssertionError(f"launch.serve would exec {args}")

    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("PATH", str(path_env))
        patch.setattr(os, "execvp", no_exec)
        return run_launcher("launch.serve", *args, cwd=REPO_ROOT)


def test_model_config_parses_as_model_server_config():
    text_format = pytest.importorskip("google.protobuf.text_format")
    config_pb2 = pytest.importorskip("tensorflow_serving.config.model_server_config_pb2")
    text = serving_config.model_config_text("alexnet", "/models/alexnet", "specific:1,3")
    config = text_format.Parse(text, config_pb2.ModelServerConfig())
    (model,) = config.model_config_list.config
    assert (model.name, model.base_path, model.model_platform) == \
        ("alexnet", "/models/alexnet", "tensorflow")
    assert list(model.model_version_policy.specific.versions) == [1, 3]
    latest = text_format.Parse(serving_config.model_config_text("m", "/m", "latest:2"),
                               config_pb2.ModelServerConfig())
    assert latest.model_config_list.config[0].model_version_policy.latest.num_versions == 2
    every = text_format.Parse(serving_config.model_config_text("m", "/m", "all"),
                              config_pb2.ModelServerConfig())
    assert every.model_config_list.config[0].model_version_policy.HasField("all")


@pytest.mark.parametrize("policy", ["latest:0", "newest", "specific:", "all:3", "specific:a"])
def test_bad_version_policy_is_refused(policy):
    with pytest.raises(ValueError):
        serving_config.version_policy_text(policy)


def test_batching_parameters_are_wrapped_values():
    text = serving_config.batching_parameters_text(32, 5000, 2, 100)
    fields = dict(re.findall(r"^(\w+) \{ value: (\d+) \}$", text, re.M))
    assert fields == {"max_batch_size": "32", "batch_timeout_micros": "5000",
                      "num_batch_threads": "2", "max_enqueued_batches": "100"}


def test_find_runner_prefers_local_binary():
    on_path = lambda names: (lambda name: f"/bin/{name}" if name in names else None)
    assert serve.find_runner("auto", on_path({"tensorflow_model_server", "docker"})) == "local"
    assert serve.find_runner("auto", on_path({"docker"})) == "docker"
    assert serve.find_runner("local", on_path({"docker"})) is None
    assert serve.find_runner("auto", on_path(set())) is None


def test_dry_run_with_local_binary(export_dir, tmp_path):
    bin_dir = _fake_bin(tmp_path, "tensorflow_model_server")
    result = _run_serve(bin_dir, f"--export_dir={export_dir}", "--dry_run",
                        "--versions=latest:2", "--num_batch_threads=3")
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "versions on disk [1, 2]" in out and "runner: local" in out
    config_dir = export_dir.parent / "alexnet_serving_config"
    command = out.split("command: ")[1].splitlines()[0].split()
    assert command == [
        "tensorflow_model_server", "--port=8500", "--rest_api_port=8501",
        f"--model_config_file={config_dir}/local_models.config", "--enable_batching=true",
        f"--batching_parameters_file={config_dir}/batching.config",
        "--enable_model_warmup=true"]
    local = (config_dir / "local_models.config").read_text()
    assert f'base_path: "{export_dir}"' in local and "num_versions: 2" in local
    assert "num_batch_threads { value: 3 }" in (config_dir / "batching.config").read_text()
    assert "should not run" not in result.stderr


def test_dry_run_falls_back_to_docker(export_dir, tmp_path):
    bin_dir = _fake_bin(tmp_path, "docker")
    config_dir = tmp_path / "cfg"
    result = _run_serve(bin_dir, f"--export_dir={export_dir}", "--dry_run",
                        f"--config_dir={config_dir}", "--model_name=net", "--rest_port=9501")
    assert result.returncode == 0, result.stderr
    assert "runner: docker" in result.stdout
    command = result.stdout.split("command: ")[1].splitlines()[0].split()
    assert command[:3] == ["docker", "run", "--rm"]
    assert f"{export_dir}:/models/net:ro" in command and f"{config_dir}:/config:ro" in command
    assert "9501:9501" in command and "8500:8500" in command
    image_at = command.index("tensorflow/serving:latest")
    assert command[image_at - 2:image_at] == ["--entrypoint", "tensorflow_model_server"]
    assert "--model_config_file=/config/docker_models.config" in command
    assert "--rest_api_port=9501" in command and "--enable_model_warmup=true" in command
    assert 'base_path: "/models/net"' in (config_dir / "docker_models.config").read_text()


def test_neither_runner_says_what_to_install(export_dir, tmp_path):
    result = _run_serve(tmp_path / "empty_bin", f"--export_dir={export_dir}")
    assert result.returncode == 2
    assert "docker pull tensorflow/serving" in result.stderr
    assert "apt-get install tensorflow-model-server" in result.stderr


def test_no_exported_version_is_an_error(tmp_path):
    bin_dir = _fake_bin(tmp_path, "tensorflow_model_server")
    result = _run_serve(bin_dir, f"--export_dir={tmp_path / 'nothing'}", "--dry_run")
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "no exported versions" in result.stderr


def test_docker_without_daemon_is_reported_not_run(export_dir, tmp_path):
    bin_dir = _fake_bin(tmp_path, "docker")  # `docker info` fails like a client with no daemon
    result = _run_serve(bin_dir, f"--export_dir={export_dir}")
    assert result.returncode == 2
    assert "docker is installed but not usable: should not run" in result.stderr
    assert "command: docker run" in result.stdout  # said what it would have run


# -- validation before anything is written, quoting -----------------------------

@pytest.mark.parametrize("args, message", [
    (["--grpc_port=0"], "--grpc_port=0: a port is 1..65535"),
    (["--rest_port=65536"], "--rest_port=65536: a port is 1..65535"),
    (["--grpc_port=9000", "--rest_port=9000"], "both 9000: they must differ"),
    (["--max_batch_size=0"], "--max_batch_size=0: must be at least 1"),
    (["--num_batch_threads=-2"], "--num_batch_threads=-2: must be at least 1"),
    (["--max_enqueued_batches=0"], "--max_enqueued_batches=0: must be at least 1"),
    (["--batch_timeout_micros=-1"], "--batch_timeout_micros=-1: must be >= 0"),
    (["--versions=specific:2,5"], "version(s) [5] not in"),
    (["--versions=latest:x"], "--versions=latest:x: expected latest:N"),
    (["--model_name=a/b"], "--model_name='a/b'"),
    (["--model_name=a\nb"], "--model_name='a\\nb'"),
])
def test_bad_settings_exit_2_with_one_line_before_writing(export_dir, tmp_path, args, message):
    bin_dir = _fake_bin(tmp_path, "tensorflow_model_server")
    config_dir = tmp_path / "cfg"
    result = _run_serve(bin_dir, f"--export_dir={export_dir}", f"--config_dir={config_dir}",
                        "--dry_run", *args)
    assert result.returncode == 2, result.stderr
    assert result.stderr.count("\n") == 1 and message in result.stderr, result.stderr
    assert "Traceback" not in result.stderr
    assert not config_dir.exists()  # nothing written
    assert result.stdout == ""


def test_config_dir_that_is_a_file_is_refused(export_dir, tmp_path):
    bin_dir = _fake_bin(tmp_path, "tensorflow_model_server")
    taken = tmp_path / "cfg"
    taken.write_text("not a folder")
    result = _run_serve(bin_dir, f"--export_dir={export_dir}", f"--config_dir={taken}",
                        "--dry_run")
    assert result.returncode == 2 and "exists and is not a folder" in result.stderr
    assert taken.read_text() == "not a folder"


def test_docker_refuses_paths_with_a_colon(tmp_path):
    base = tmp_path / "a:b" / "alexnet"
    (base / "1").mkdir(parents=True)
    (base / "1" / "saved_model.pb").write_bytes(b"")
    bin_dir = _fake_bin(tmp_path, "docker")
    result = _run_serve(bin_dir, f"--export_dir={base}", "--dry_run")
    assert result.returncode == 2 and "docker cannot mount a path containing ':'" in result.stderr


def test_names_and_paths_are_quoted_in_protos_and_command(tmp_path):
    """A model name and folders with spaces, quotes, a backslash and
    non-ASCII letters: the text protos parse back to exactly them, and the
    printed command splits back (shlex) to the same arguments."""
    text_format = pytest.importorskip("google.protobuf.text_format")
    config_pb2 = pytest.importorskip("tensorflow_serving.config.model_server_config_pb2")
    base = tmp_path / 'my "models" \\ été' / "alex net"
    for version in (1, 2):
        (base / str(version)).mkdir(parents=True)
        (base / str(version) / "saved_model.pb").write_bytes(b"")
    name = 'alex "net" \\ ü'
    config_dir = tmp_path / "conf dir"
    (tmp_path / "bin").mkdir()
    bin_dir = _fake_bin(tmp_path / "bin", "tensorflow_model_server")
    result = _run_serve(bin_dir, f"--export_dir={base}", f"--model_name={name}",
                        f"--config_dir={config_dir}", "--versions=specific:1,2", "--dry_run")
    assert result.returncode == 0, result.stderr
    for filename, base_path in (("local_models.config", str(base)),
                                ("docker_models.config", f"/models/{name}")):
        config = text_format.Parse((config_dir / filename).read_text(),
                                   config_pb2.ModelServerConfig())
        (model,) = config.model_config_list.config
        assert (model.name, model.base_path) == (name, base_path)
        assert list(model.model_version_policy.specific.versions) == [1, 2]
    line = result.stdout.split("command: ")[1].splitlines()[0]
    assert shlex.split(line) == [
        "tensorflow_model_server", "--port=8500", "--rest_api_port=8501",
        f"--model_config_file={config_dir}/local_models.config", "--enable_batching=true",
        f"--batching_parameters_file={config_dir}/batching.config",
        "--enable_model_warmup=true"]
    assert "/v1/models/alex%20%22net%22%20%5C%20%C3%BC" in result.stdout


def test_text_proto_string_escapes_every_odd_byte():
    text_format = pytest.importorskip("google.protobuf.text_format")
    config_pb2 = pytest.importorskip("tensorflow_serving.config.model_server_config_pb2")
    odd = 'q"uote \\ back\tslash\nnew é \x01 }'
    text = serving_config.model_config_text(odd, odd, "all")
    assert len(text.splitlines()) == 8  # the newline in the name is escaped
    parsed = text_format.Parse(text, config_pb2.ModelServerConfig())
    assert parsed.model_config_list.config[0].name == odd
    assert parsed.model_config_list.config[0].base_path == odd

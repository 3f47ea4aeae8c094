"""Shared test set-up and the suite's one harness.

The tiny configuration (tests/tiny_data.py): `TINY_MODEL` (the paper's
layers and names at 67x67, width 1/16, fc6/fc7 768 each: ~0.83M parameters;
`TINY_LEARNING_RATE` for tests that need it to learn),
`tiny_flags()` (the same as launcher flags), `tiny_train_config(data_dir,
model_dir, **overrides)` and `write_tiny_dataset(...)` for a folder a test
needs to shape itself. Only tests of the paper's own numbers build the full
model. Fixtures, built once per session and shared (read-only: a test that
writes copies first, e.g. with `copy_tree`):

  tiny_records    a 3-class data prep folder (2 train shards of 48 images,
                  1 validation shard of 12, labels.txt, stats.json, manifest).
  tiny_training   TinyRun(data_dir, model_dir, summary): tiny_records trained
                  2 epochs x 2 steps (plateau patience 1, seed 3): ckpt-4, a
                  best/ checkpoint, logs, model_config.json, labels, stats.
  tiny_model_dir  tiny_training.model_dir.
  tiny_export     tiny_model_dir's latest checkpoint exported as version 1
                  (the path of the version folder).
  copy_tree(src, tmp_path / "name") -> str   a private, writable copy.

The CPU is split into two logical devices before TensorFlow starts, so the
tower placement and MirroredStrategy tests have two devices to use on a
machine with no GPU. Real data lives in ../shared/data beside the checkout
(present in CI); tests that need it skip with the reason when it is absent.
"""

import dataclasses
import os
import pathlib
import shutil

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def pytest_configure(config):
    """Two logical CPUs, before any test module loads TensorFlow; not in
    the parallel run's controller, which runs no test (and would print
    TensorFlow's start-up lines at the end of the run)."""
    if getattr(config.option, "numprocesses", None) and not hasattr(config, "workerinput"):
        return
    import tensorflow as tf
    cpus = tf.config.list_physical_devices("CPU")
    try:
        tf.config.set_logical_device_configuration(
            cpus[0], [tf.config.LogicalDeviceConfiguration()] * 2)
    except RuntimeError:  # already initialized by an earlier import: keep what is there
        pass

REPO_ROOT = pathlib.Path(__file__).resolve().parent.parent
SHARED_DATA = pathlib.Path(os.environ.get(
    "ALEXNET_TF_SHARED_DATA", REPO_ROOT.parent / "shared" / "data"))


def shared_dataset(name: str) -> pathlib.Path:
    """Path to ../shared/data/<name>, or skip the test saying why."""
    path = SHARED_DATA / name
    if not path.is_dir():
        pytest.skip(f"{path} not found: the shared real-image data sets sit beside "
                    "the checkout in CI, not in a user's clone")
    return path


@pytest.fixture
def imagenet_sample() -> pathlib.Path:
    return shared_dataset("imagenet-sample")


@pytest.fixture
def imagenette() -> pathlib.Path:
    return shared_dataset("imagenette-224")


@pytest.fixture
def cifar10() -> pathlib.Path:
    return shared_dataset("cifar10")


# --- parallel workers (make test runs pytest -n auto) ---------------------------

# A worker holds TensorFlow and, in the full-size tests, the 61M-parameter
# model: 5.4 GB peak RSS measured for one process of the suite.
_MEMORY_PER_WORKER = 6 * 2**30


def pytest_xdist_auto_num_workers(config):
    """One worker per core, as many as memory allows (`-n auto`)."""
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    return max(1, min(os.cpu_count() or 1, memory // _MEMORY_PER_WORKER))


# --- the harness (see the module docstring) ------------------------------------

@dataclasses.dataclass(frozen=True)
class TinyRun:
    data_dir: str
    model_dir: str
    summary: dict


def copy_tree(source, destination) -> str:
    """A writable copy of a shared fixture's folder."""
    return shutil.copytree(os.fspath(source), os.fspath(destination))


def _built_once(tmp_path_factory, name: str, build):
    """build(folder) -> a JSON value, run once per test run: with parallel
    workers, the first worker to ask builds under a lock in the run's shared
    temporary folder and the others read what it recorded."""
    import fcntl
    import json
    shared = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        shared = shared.parent  # what every worker of this run sees
    folder, record = shared / name, shared / f"{name}.json"
    with open(shared / f"{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not record.exists():  # (again after a build that failed: from scratch)
            shutil.rmtree(folder, ignore_errors=True)
            folder.mkdir()
            record.write_text(json.dumps(build(folder)))
    return json.loads(record.read_text())


@pytest.fixture(scope="session")
def tiny_records(tmp_path_factory) -> str:
    from tiny_data import write_tiny_dataset
    return _built_once(tmp_path_factory, "tiny_records",
                       lambda folder: write_tiny_dataset(folder, num_classes=3))


@pytest.fixture(scope="session")
def tiny_training(tiny_records, tmp_path_factory) -> TinyRun:
    def build(folder):
        from alexnet_tf.training.loop import train
        from tiny_data import tiny_train_config
        model_dir = str(folder / "model_dir")
        return [model_dir, train(tiny_train_config(tiny_records, model_dir, epochs=2,
                                                   plateau_patience=1))]
    model_dir, summary = _built_once(tmp_path_factory, "tiny_training", build)
    return TinyRun(tiny_records, model_dir, summary)


@pytest.fixture(scope="session")
def tiny_model_dir(tiny_training) -> str:
    return tiny_training.model_dir


@pytest.fixture(scope="session")
def tiny_export(tiny_model_dir, tmp_path_factory) -> str:
    def build(folder):
        from alexnet_tf.data.labels import LABELS_FILENAME, LabelMap
        from alexnet_tf.serving import export
        from alexnet_tf.training.checkpoints import restore_model
        label_map = LabelMap.read(os.path.join(tiny_model_dir, LABELS_FILENAME))
        return export.export_saved_model(restore_model(tiny_model_dir), label_map,
                                         str(folder / "saved_models" / "tiny"))
    return _built_once(tmp_path_factory, "tiny_export", build)


def pytest_collection_modifyitems(config, items):
    """Files with slow tests first: the parallel workers take whole files in
    this order (--no-loadscope-reorder), so the long ones start early and
    the many short ones even out the end."""
    slow_files = {item.path for item in items if item.get_closest_marker("slow")}
    items.sort(key=lambda item: item.path not in slow_files)


# --- where the suite's CPU goes (docs/development.md) ---------------------------
# ALEXNET_TF_CPU_REPORT=<file>: each test appends "<cpu s>\t<wall s>\t<test id>\t
# <worker>\t<end time>", counting its own process and the child processes it
# waited for.
_CPU_REPORT = os.environ.get("ALEXNET_TF_CPU_REPORT")


def _cpu_seconds() -> float:
    import resource
    return sum(usage.ru_utime + usage.ru_stime for usage in (
        resource.getrusage(resource.RUSAGE_SELF),
        resource.getrusage(resource.RUSAGE_CHILDREN)))


if _CPU_REPORT:
    @pytest.hookimpl(hookwrapper=True)
    def pytest_runtest_protocol(item, nextitem):
        import time
        cpu, wall = _cpu_seconds(), time.monotonic()
        yield
        with open(_CPU_REPORT, "a") as report:
            report.write(f"{_cpu_seconds() - cpu:.2f}\t{time.monotonic() - wall:.2f}\t"
                         f"{item.nodeid}\t{os.environ.get('PYTEST_XDIST_WORKER', '-')}\t"
                         f"{time.time():.1f}\n")

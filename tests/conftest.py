"""Shared test set-up.

The CPU is split into two logical devices before TensorFlow starts, so the
tower placement and MirroredStrategy tests have two devices to use on a
machine with no GPU. Real data lives in ../shared/data beside the checkout
(present in CI); tests that need it skip with the reason when it is absent.
"""

import os
import pathlib

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import tensorflow as tf  # noqa: E402

_cpus = tf.config.list_physical_devices("CPU")
try:
    tf.config.set_logical_device_configuration(
        _cpus[0], [tf.config.LogicalDeviceConfiguration()] * 2)
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

"""Clear errors: an unusable output folder or a bad limit is one line, exit 2."""

import os
import re

import pytest

from data_prep import build_tfrecords
from launchers import run_launcher


def _run(input_dir, output_dir):
    return run_launcher("data_prep.build_tfrecords", f"--input_dir={input_dir}",
                        f"--output_dir={output_dir}")


def test_output_folder_that_is_a_file(tmp_path):
    (tmp_path / "in" / "train" / "a").mkdir(parents=True)
    (tmp_path / "out").write_text("a file")
    run = _run(tmp_path / "in", tmp_path / "out")
    assert run.returncode == 2, run.stderr
    assert run.stderr == (f"error: the output folder {tmp_path / 'out'} exists and is not "
                          "a folder\n")


def test_output_folder_that_is_not_writable(tmp_path):
    """chmod 555; root ignores permissions, so as root: sysfs, where no one
    can create a file."""
    (tmp_path / "in" / "train" / "a").mkdir(parents=True)
    if os.geteuid() == 0:
        out = "/sys/kernel"
    else:
        out = str(tmp_path / "out")
        os.mkdir(out, 0o555)
    before = sorted(os.listdir(out))
    run = _run(tmp_path / "in", out)
    assert run.returncode == 2, run.stderr
    (line,) = run.stderr.splitlines()
    assert re.fullmatch(rf"error: cannot write in the output folder {re.escape(out)}: "
                        "(Permission denied|Operation not permitted)", line), line
    assert sorted(os.listdir(out)) == before
    if os.geteuid() != 0:
        os.chmod(out, 0o755)


@pytest.mark.parametrize("field, value, message", [
    ("max_pixels", 0, "--max_pixels must be >= 1, got 0"),
    ("max_pixels", -5, "--max_pixels must be >= 1, got -5"),
    ("train_shards", -1, "--train_shards and --validation_shards must be >= 1, or 0"),
    ("min_images_per_worker", -1, "--min_images_per_worker must be >= 0"),
])
def test_bad_limits_are_refused_before_anything_is_read(tmp_path, field, value, message):
    config = build_tfrecords.BuildConfig(str(tmp_path / "missing"), str(tmp_path / "out"),
                                         **{field: value})
    with pytest.raises(build_tfrecords.BuildError, match=message):
        build_tfrecords.build(config, log=open(os.devnull, "w"))
    assert not (tmp_path / "out").exists()

"""Names that are not UTF-8, or hold tabs and newlines: escaped losslessly,
never a crash (data_prep.names)."""

import csv
import glob
import json
import os

import pytest
import tensorflow as tf

from alexnet_tf.data import records
from alexnet_tf.data.labels import LabelMap
from data_prep import build_tfrecords, names
from launchers import run_launcher
from tree_data import build_quietly, write_jpeg


RAW_NAMES = [b"plain.jpg", b"caf\xc3\xa9.jpg", b"caf\xe9.jpg", b"\xff\xfe", b"tab\there",
             b"new\nline", b"back\\slash", b"looks\\xffescaped", b"\\\\", b"\x7f\x01"]


@pytest.mark.parametrize("raw", RAW_NAMES)
def test_escape_is_printable_and_lossless(raw):
    text = names.escape(raw)
    assert names.escape(os.fsdecode(raw)) == text  # str from os.* or bytes: the same
    text.encode("utf-8")  # never raises
    assert "\t" not in text and "\n" not in text
    assert names.unescape(text) == raw


def test_escape_keeps_valid_names_and_tells_lookalikes_apart():
    assert names.escape("café.jpg") == "café.jpg"
    assert names.escape(b"caf\xe9.jpg") == "caf\\xe9.jpg"
    assert names.escape("cls\ttab") == "cls\\x09tab"
    # A real backslash-x in a name does not collide with an undecodable byte.
    assert names.escape(b"a\\xff") != names.escape(b"a\xff")
    assert len({names.escape(raw) for raw in RAW_NAMES}) == len(RAW_NAMES)


def test_non_utf8_file_and_class_names_are_converted(tmp_path):
    """The build that used to die with 'surrogates not allowed' (and leave a
    .tmp shard behind): every image converted, names escaped everywhere."""
    root = os.fsencode(tmp_path / "in")
    bad_class, bad_file = b"cl\xffass", b"caf\xe9\xff.jpg"
    write_jpeg(root + b"/train/" + bad_class + b"/" + bad_file)
    write_jpeg(root + b"/train/" + bad_class + b"/ok.jpg")
    write_jpeg(root + b"/train/plain/a.jpg", (40, 200, 40))
    write_jpeg(root + b"/val/" + bad_class + b"/v\xfe.jpg")
    out = tmp_path / "out"
    summary = build_quietly(root, out, train_shards=2, validation_shards=1)
    assert summary.ok and summary.written == summary.found == 4
    assert not glob.glob(str(out / "*.tmp"))

    label_map = LabelMap.read(str(out))
    assert label_map.wnids == ("cl\\xffass", "plain")
    examples = [records.parse_example(s) for s in tf.data.TFRecordDataset(
        sorted(glob.glob(records.shard_pattern(str(out), "train"))))]
    by_name = {e[records.FILENAME].numpy().decode(): e for e in examples}
    assert set(by_name) == {"caf\\xe9\\xff.jpg", "ok.jpg", "a.jpg"}
    assert names.unescape("caf\\xe9\\xff.jpg") == bad_file
    assert by_name["caf\\xe9\\xff.jpg"][records.SYNSET].numpy() == b"cl\\xffass"
    assert int(by_name["caf\\xe9\\xff.jpg"][records.LABEL]) == 0

    with open(out / build_tfrecords.FILES_FILENAME, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f, delimiter="\t"))
    raw_paths = {names.unescape(r["path"]) for r in rows}
    assert root + b"/train/" + bad_class + b"/" + bad_file in raw_paths
    assert root + b"/val/" + bad_class + b"/v\xfe.jpg" in raw_paths
    json.loads((out / build_tfrecords.MANIFEST_FILENAME).read_text(encoding="utf-8"))

    again = build_quietly(root, out, train_shards=2, validation_shards=1)
    assert (again.shards_written, again.shards_kept) == (0, 3)  # resumes with such names


def test_tab_and_newline_in_class_folder_names_make_classes(tmp_path):
    """Used to be a traceback ('bad wnid') naming no folder: now each such
    folder is a class under its escaped name."""
    root = tmp_path / "in"
    for cls, colour in (("cls\ttab", (200, 0, 0)), ("cls\nnl", (0, 200, 0)),
                        ("plain", (0, 0, 200))):
        write_jpeg(os.fsencode(root / "train" / cls / "a.jpg"), colour)
        write_jpeg(os.fsencode(root / "val" / cls / "b.jpg"), colour)
    summary = build_quietly(root, tmp_path / "out")
    assert summary.ok and summary.written == 6
    label_map = LabelMap.read(str(tmp_path / "out"))
    assert label_map.wnids == ("cls\\x09tab", "cls\\x0anl", "plain")
    assert names.unescape(label_map.wnids[0]) == b"cls\ttab"


@pytest.mark.parametrize("raw_out", [b"out\xffdir", b"\xfe\xff/sub\xc3", b"gs://not/a/bucket"],
                         ids=["non-utf8", "non-utf8-parent", "looks-like-a-url"])
def test_odd_output_folder_names_work_through_the_command_line(tmp_path, raw_out):
    """`--output_dir=out\\xffdir` died in tf.io.TFRecordWriter ('surrogates not
    allowed', a 30-line traceback) and left .build.lock and .parts behind, so
    every rerun died alike. Now shards, records, labels, stats and manifest are
    written there, the two workers included, and a rerun resumes. The flag
    arrives as a real process's argv holds it (undecodable bytes as
    surrogates); what is printed must be plain UTF-8, as a terminal shows it."""
    write_jpeg(str(tmp_path / "in" / "train" / "a" / "1.jpg"))
    write_jpeg(str(tmp_path / "in" / "train" / "b" / "2.jpg"), (10, 200, 10))
    write_jpeg(str(tmp_path / "in" / "val" / "a" / "3.jpg"))
    out = os.fsdecode(raw_out)  # relative, in tmp_path: `gs://...` is a local folder
    run = _cli_build(tmp_path, out, "--num_workers=2", "--min_images_per_worker=0",
                     "--train_shards=2")
    assert run.returncode == 0, run.stderr[-3000:]
    run.stderr.encode("utf-8")  # no surrogate printed: the folder is shown escaped
    assert f"in {names.escape(out)}\n" in run.stderr

    out = os.path.join(tmp_path, out)
    manifest = json.loads(open(os.path.join(out, build_tfrecords.MANIFEST_FILENAME),
                               encoding="utf-8").read())
    assert manifest["found"] == manifest["written"] == 3
    for shard in manifest["shards"]:
        path = os.path.join(out, shard["name"])
        assert os.path.getsize(path) == shard["bytes"]
        count = sum(1 for _ in tf.data.TFRecordDataset(os.fsencode(path)))
        assert count == shard["records"]
    assert LabelMap.read(out).wnids == ("a", "b")
    assert json.loads(open(os.path.join(out, "stats.json")).read())["splits"]["train"]
    assert not glob.glob(os.path.join(glob.escape(out), "*.tmp"))

    again = _cli_build(tmp_path, os.fsdecode(raw_out), "--num_workers=1", "--train_shards=2")
    assert again.returncode == 0, again.stderr[-3000:]
    assert "shards: 0 written, 3 kept" in again.stderr


def _cli_build(cwd, output_dir, *flags):
    """The command line, in this process, run in `cwd` (output_dir may be relative)."""
    return run_launcher("data_prep.build_tfrecords", f"--input_dir={cwd / 'in'}",
                        f"--output_dir={output_dir}", "--image_size=32", *flags, cwd=cwd)

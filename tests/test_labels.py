"""alexnet_tf.data.labels: labels.txt, keyed on the wnid."""

import pytest

from alexnet_tf.data.labels import LABELS_FILENAME, LabelMap


def test_from_wnids_sorts_and_names():
    label_map = LabelMap.from_wnids(["n02", "n01", "n03", "n01"], {"n01": "crane", "n03": "crane"})
    assert label_map.wnids == ("n01", "n02", "n03")
    assert label_map.names == ("crane", "n02", "crane")  # repeated names are fine
    assert label_map.index("n03") == 2 and label_map.name(0) == "crane"
    assert len(label_map) == 3
    with pytest.raises(KeyError, match="n09"):
        label_map.index("n09")


def test_write_read_round_trip(tmp_path):
    label_map = LabelMap.from_wnids(["n2", "n1"], {"n1": "tab\there", "n2": "potter's wheel"})
    label_map.write(str(tmp_path / LABELS_FILENAME))
    text = (tmp_path / LABELS_FILENAME).read_text()
    assert text == "0\tn1\ttab here\n1\tn2\tpotter's wheel\n"
    again = LabelMap.read(str(tmp_path))  # the folder or the file
    assert again.wnids == label_map.wnids and again.names == ("tab here", "potter's wheel")
    assert not list(tmp_path.glob("*.tmp"))


@pytest.mark.parametrize("content, message", [
    ("0\tn1\n", "expected 'index<TAB>wnid<TAB>name'"),
    ("1\tn1\tx\n", "out of order"),
    ("", "no classes"),
    ("0\tn1\ta\n1\tn1\tb\n", r"labels.txt:2: wnid .n1. repeats line 1"),
])
def test_bad_files_name_the_problem(tmp_path, content, message):
    path = tmp_path / LABELS_FILENAME
    path.write_text(content)
    with pytest.raises(ValueError, match=message):
        LabelMap.read(str(path))


def test_mismatched_lengths_are_refused():
    with pytest.raises(ValueError, match="2 wnids but 1 names"):
        LabelMap(("a", "b"), ("x",))

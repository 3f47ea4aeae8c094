"""Bad input to the Caffe import writes nothing and gets one line naming
the file or layer and the shapes; the launcher exits 2 with that line."""

import dataclasses
import os
import pickle
import subprocess
import sys

import numpy as np
import pytest

import caffe_fixtures as fx
from conftest import REPO_ROOT, SHARED_DATA
from launchers import run_launcher
from alexnet_tf.caffe import importer, npy, synsets
from alexnet_tf.caffe.errors import CaffeFormatError

MINI = fx.MINI  # fc6 and fc7 768 units


@pytest.fixture(scope="module")
def mini(tmp_path_factory):
    """Weights, a folder for sources, and the net written there as ok.caffemodel."""
    weights, biases = fx.alexnet_weights(MINI, seed=5)
    with fx.module_folder(tmp_path_factory, "mini_sources") as folder:
        fx.write_caffemodel(folder / "ok.caffemodel", MINI, weights, biases)
        yield weights, biases, folder


def write(folder, name, data: bytes) -> str:
    path = folder / name
    path.write_bytes(data)
    return str(path)


def refused(tmp_path, match, **kwargs):
    """Imports into tmp_path/run, expecting a one-line refusal; checks that
    nothing at all was written beside the sources."""
    before = sorted(os.listdir(tmp_path))
    with pytest.raises((CaffeFormatError, FileNotFoundError), match=match) as error:
        importer.import_alexnet(str(tmp_path / "run"), **kwargs)
    assert "\n" not in str(error.value)
    assert sorted(os.listdir(tmp_path)) == before  # no model_dir, no hidden temp folder
    return str(error.value)


def test_truncated_caffemodels(mini, tmp_path):
    weights, biases, _ = mini
    data = fx.caffemodel_bytes(MINI, weights, biases)
    # Inside a blob (fc6's): protobuf cannot parse it; the layer it ends in is named.
    refused(tmp_path, r"mid.caffemodel: truncated or corrupt: the file ends inside layer 16, "
            r"after 'pool5'$", caffemodel=write(tmp_path, "mid.caffemodel",
                                               data[:len(data) // 2]))
    # At a layer boundary: it parses, and fc8 is missing.
    messages = fx.layer_messages(MINI, weights, biases)
    cut = fx.net_header(MINI) + b"".join(m for name, m in messages if name not in ("fc8", "prob"))
    message = refused(tmp_path, "not AlexNet.*7 layers with weights",
                      caffemodel=write(tmp_path, "cut.caffemodel", cut))
    assert "fc7 768x768" in message and "truncated" in message


def test_size_fields_from_the_file_are_refused_before_allocating(mini, tmp_path):
    """Issue 21: a blob shape whose dims multiply past 2^63 (the product wraps
    int64 to 0), and an LRN window past any channel count, in one line."""
    weights, biases, _ = mini
    messages = dict(fx.layer_messages(MINI, weights, biases))
    bomb = fx.message(7, fx.packed_varints(1, [1 << 32, 1 << 32]))
    messages["fc7"] = fx.message(100, fx.string(1, "fc7") + fx.string(2, "InnerProduct")
                                 + fx.message(7, bomb) + fx.message(7, bomb))
    message = refused(tmp_path, r"layer 19 \('fc7'\): blob 0: blob shape 4294967296x4294967296 "
                      r"\(18,446,744,073,709,551,616 values\) is beyond Caffe's limits",
                      caffemodel=write(tmp_path, "bomb.caffemodel",
                                       fx.net_header(MINI) + b"".join(messages.values())))
    assert message.startswith(str(tmp_path / "bomb.caffemodel"))
    wide = dataclasses.replace(MINI, lrn=((1 << 32) - 1, 1e-4, 0.75, 1))
    refused(tmp_path, "norm1: LRN local_size 4,294,967,295; Caffe takes odd sizes, and over 16 "
            "channels a window spans at most 31", caffemodel=write(
                tmp_path, "lrn.caffemodel", fx.caffemodel_bytes(wide, weights, biases)))


def test_a_file_that_is_not_a_netparameter(tmp_path):
    jpeg = b"\xff\xd8\xff\xe0\x00\x10JFIF\x00\x01" + bytes(range(256)) * 4
    refused(tmp_path, "not a binary Caffe NetParameter",
            caffemodel=write(tmp_path, "photo.caffemodel", jpeg))
    refused(tmp_path, "looks like text",
            caffemodel=write(tmp_path, "deploy.caffemodel", b'name: "AlexNet"\ninput: "data"\n'))
    refused(tmp_path, "no such file", caffemodel=str(tmp_path / "missing.caffemodel"))


def test_lenet_is_not_alexnet(tmp_path):
    lenet = SHARED_DATA / "caffe" / "lenet_iter_10000.caffemodel"
    if not lenet.exists():
        pytest.skip(f"{lenet} not found (shared Caffe files are beside the checkout in CI)")
    message = refused(tmp_path, "not AlexNet", caffemodel=str(lenet))
    assert "'LeNet' has 4 layers with weights (conv1 20x1x5x5, conv2 50x20x5x5, ip1 500x800, " \
           "ip2 10x500)" in message


def test_nets_that_differ_from_alexnet_name_the_layer(mini, tmp_path):
    weights, biases, _ = mini
    messages = dict(fx.layer_messages(MINI, weights, biases))
    names = list(messages)
    # CaffeNet normalizes after pooling.
    caffenet = names.copy()
    i, j = caffenet.index("norm1"), caffenet.index("pool1")
    caffenet[i], caffenet[j] = caffenet[j], caffenet[i]
    refused(tmp_path, "after relu_conv1 comes pool1 \\(Pooling\\) where AlexNet has a LRN",
            caffemodel=write(tmp_path, "caffenet.caffemodel",
                             fx.net_header(MINI) + b"".join(messages[n] for n in caffenet)))
    # A declared input where Caffe's pooling (rounding up) and the model's differ.
    refused(tmp_path, "pool1: at a 71x71 input Caffe's pooling gives 8x8, this model's 7x7",
            caffemodel=write(tmp_path, "71.caffemodel",
                             fx.caffemodel_bytes(MINI, weights, biases, input_size=71)))
    # A group setting the blobs contradict.
    spec = dataclasses.replace(MINI, groups=1)
    data = fx.caffemodel_bytes(spec, dict(weights, conv2=np.zeros((16, 6, 5, 5), np.float32)),
                               biases)
    refused(tmp_path, "conv4: group: 1 but its weight 24x12x3x3 over 24 input channels means "
            "2 groups", caffemodel=write(tmp_path, "groups.caffemodel", data))
    # The .npy has no group settings: conv2 reading all of conv1 while conv4 has two groups.
    npy = fx.write_caffe_tensorflow_npy(tmp_path / "groups.npy", MINI, dict(
        weights, conv2=np.zeros((16, 6, 5, 5), np.float32)), biases)
    refused(tmp_path, "conv4: weight 24x12x3x3 means 2 group", npy=npy)


def test_labels_whose_class_count_differs_from_fc8(mini, tmp_path):
    _, _, folder = mini
    labels = tmp_path / "synset_words.txt"
    labels.write_text("".join(f"n{i:08d} class {i}\n" for i in range(1000)))
    refused(tmp_path, r"synset_words.txt: 1000 classes, but fc8 has 10 outputs \(weight 10x768\)",
            caffemodel=str(folder / "ok.caffemodel"), labels=str(labels))


def test_labels_in_either_format(tmp_path):
    synset_words = tmp_path / "synset_words.txt"
    synset_words.write_text("n01440764 tench, Tinca tinca\nn01443537 goldfish, Carassius "
                            "auratus\n\nn01484850 great white shark\n")
    label_map = synsets.read_label_map(str(synset_words))
    assert label_map.wnids == ("n01440764", "n01443537", "n01484850")
    assert label_map.names[0] == "tench, Tinca tinca"
    ours = tmp_path / "labels.txt"
    label_map.write(str(ours))
    assert synsets.read_label_map(str(ours)) == label_map
    wnids_only = tmp_path / "synsets.txt"
    wnids_only.write_text("n01440764\nn01443537\n")
    assert synsets.read_label_map(str(wnids_only)).names == ("n01440764", "n01443537")
    repeated = tmp_path / "repeated.txt"
    repeated.write_text("n01440764 tench\nn01440764 tench again\n")
    with pytest.raises(CaffeFormatError, match="line 2: wnid 'n01440764' repeats line 1"):
        synsets.read_label_map(str(repeated))
    binary = tmp_path / "binary.txt"
    binary.write_bytes(b"\xff\xfe\x00n0")
    with pytest.raises(CaffeFormatError, match="not a UTF-8 text file"):
        synsets.read_label_map(str(binary))


def test_model_dir_that_exists(mini, tmp_path):
    source = str(mini[2] / "ok.caffemodel")
    run = tmp_path / "run"
    run.mkdir()
    (run / "ckpt-9.index").write_bytes(b"a trained run")
    with pytest.raises(CaffeFormatError, match="exists and is not empty"):
        importer.import_alexnet(str(run), caffemodel=source)
    assert os.listdir(run) == ["ckpt-9.index"]
    a_file = tmp_path / "file"
    a_file.write_text("x")
    with pytest.raises(CaffeFormatError, match="is a file, not a folder"):
        importer.import_alexnet(str(a_file), caffemodel=source)


class _Exploit:
    def __reduce__(self):
        return (os.system, ("touch pwned",))


def test_npy_files_that_are_not_caffe_tensorflows_alexnet(mini, tmp_path):
    weights, biases, _ = mini
    path = fx.write_caffe_tensorflow_npy(tmp_path / "ok.npy", MINI, weights, biases)
    layers = np.load(path, allow_pickle=True).item()
    del layers["fc8"]
    np.save(tmp_path / "no_fc8.npy", layers, allow_pickle=True)
    refused(tmp_path, "not AlexNet: no fc8", npy=str(tmp_path / "no_fc8.npy"))
    np.save(tmp_path / "plain.npy", np.zeros(3))
    refused(tmp_path, "plain float64 array", npy=str(tmp_path / "plain.npy"))
    # A pickle that would run code is refused before anything runs.
    with open(tmp_path / "evil.npy", "wb") as f:
        np.lib.format.write_array_header_1_0(f, {"descr": "|O", "fortran_order": False,
                                                 "shape": ()})
        pickle.dump(np.array(_Exploit(), dtype=object), f)
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        refused(tmp_path, "refusing to load posix.system", npy=str(tmp_path / "evil.npy"))
    finally:
        os.chdir(cwd)
    assert not (tmp_path / "pwned").exists()


def test_launcher_exits_2_with_one_line(mini, tmp_path):
    weights, biases, _ = mini
    data = fx.caffemodel_bytes(MINI, weights, biases)
    cut = write(tmp_path, "cut.caffemodel", data[:1000])
    bomb = write(tmp_path, "bomb.caffemodel", fx.message(100, fx.string(1, "conv1") + fx.message(
        7, fx.message(7, fx.packed_varints(1, [1 << 62, 4])))))
    for args, message in [
        ([f"--caffemodel={bomb}", f"--model_dir={tmp_path / 'run'}"],
         "layer 0 ('conv1'): blob 0: blob shape 4611686018427387904x4 "
         "(18,446,744,073,709,551,616 values) is beyond Caffe's limits"),
        ([f"--caffemodel={cut}", f"--model_dir={tmp_path / 'run'}"],
         "truncated or corrupt: the file ends inside layer 1, after 'data'"),
        ([f"--model_dir={tmp_path / 'run'}"], "exactly one of --caffemodel and --npy"),
        ([f"--caffemodel={cut}"], "--model_dir is required"),
        ([f"--caffemodel={tmp_path / 'nothing'}", f"--model_dir={tmp_path / 'run'}"],
         "no such file"),
    ]:
        result = run_launcher("launch.import_caffe", *args, cwd=tmp_path)
        lines = result.stderr.strip().splitlines()
        assert result.returncode == 2, (args, result.stderr)
        assert len(lines) == 1 and message in lines[0], (args, result.stderr)
    assert not (tmp_path / "run").exists()


def test_leaky_relu_and_a_linked_model_dir(mini, tmp_path):
    weights, biases, folder = mini
    messages = dict(fx.layer_messages(MINI, weights, biases))
    messages["relu_conv1"] = fx.message(100, fx.string(1, "relu_conv1") + fx.string(2, "ReLU")
                                        + fx.string(3, "conv1") + fx.string(4, "conv1")
                                        + fx.message(123, fx.f32(1, 0.1)))
    refused(tmp_path, r"relu_conv1: leaky ReLU \(negative_slope 0.1\)",
            caffemodel=write(tmp_path, "leaky.caffemodel",
                             fx.net_header(MINI) + b"".join(messages.values())))
    (tmp_path / "target").mkdir()
    os.symlink(tmp_path / "target", tmp_path / "link")
    source = str(folder / "ok.caffemodel")
    with pytest.raises(CaffeFormatError, match="is a symbolic link"):
        importer.import_alexnet(str(tmp_path / "link"), caffemodel=source)
    assert os.listdir(tmp_path / "target") == []


@pytest.mark.slow  # a launch.import_caffe process (a TensorFlow start, ~5 CPU-s)
def test_a_kill_while_writing_leaves_no_model_dir(mini, tmp_path):
    """SIGKILL once the hidden temp folder appears (the write has begun):
    no model_dir, and the same command (rerun in this process) then succeeds."""
    import signal
    import time
    args = [f"--caffemodel={mini[2] / 'ok.caffemodel'}", f"--model_dir={tmp_path / 'run'}"]
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    child = subprocess.Popen([sys.executable, "-m", "launch.import_caffe", *args], cwd=tmp_path,
                             env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while not any(n.startswith(".run.import-") for n in os.listdir(tmp_path)):
        assert child.poll() is None and time.monotonic() < deadline, "no temp folder seen"
        time.sleep(0.005)
    child.send_signal(signal.SIGKILL)
    child.wait()
    assert not (tmp_path / "run").exists()
    leftovers = [n for n in os.listdir(tmp_path) if n.startswith(".run.import-")]
    assert len(leftovers) == 1  # a SIGKILL cannot clean up; a rerun ignores it
    rerun = run_launcher("launch.import_caffe", *args, cwd=tmp_path)
    assert rerun.returncode == 0, rerun.stderr
    assert sorted(os.listdir(tmp_path / "run")) == sorted([
        "best", "caffe_import.json", "checkpoint", "ckpt-0.data-00000-of-00001",
        "ckpt-0.index", "labels.txt", "model_config.json", "stats.json"])


def test_a_layer_that_does_not_read_the_one_before(mini, tmp_path):
    weights, biases, _ = mini
    messages = dict(fx.layer_messages(MINI, weights, biases))
    # fc7 reading pool5 (a skip past fc6), in file order still AlexNet's.
    fc7 = fx.message(100, fx.string(1, "fc7") + fx.string(2, "InnerProduct")
                     + fx.string(3, "pool5") + fx.string(4, "fc7")
                     + fx.message(7, fx.blob(weights["fc7"], legacy=False))
                     + fx.message(7, fx.blob(biases["fc7"], legacy=False))
                     + fx.message(117, fx.uint(1, MINI.fc_units[1])))
    messages["fc7"] = fc7
    refused(tmp_path, r"fc7 reads \['pool5'\], not the output of relu_fc6 \(\['fc6'\]\)",
            caffemodel=write(tmp_path, "skip.caffemodel",
                             fx.net_header(MINI) + b"".join(messages.values())))


class _LyingArray:
    """Pickles as an ndarray whose state claims `shape` over `data`."""

    def __init__(self, shape, data):
        self.shape, self.data = shape, data

    def __reduce__(self):
        reconstruct, args, _ = np.zeros(1, np.float32).__reduce__()
        return reconstruct, args, (1, self.shape, np.dtype("<f4"), False, self.data)


@pytest.mark.parametrize("shape, data, message", [
    ((1 << 32, 1 << 32), b"", "needs 73,786,976,294,838,206,464 bytes"),  # wraps int64 to 0
    ((1 << 20, 1 << 20), bytes(16), "needs 4,398,046,511,104 bytes or items, the pickle has 16"),
    ((2, -2), bytes(16), r"an array of shape \(2, -2\)")])
def test_npy_arrays_whose_shape_lies_about_their_data(mini, tmp_path, shape, data, message):
    """Issue 21: the pickle's array shapes are checked before numpy allocates."""
    weights, biases, _ = mini
    layers = {name: [weights[name], biases[name]] for name in weights}
    layers["fc6"][0] = _LyingArray(shape, data)
    with open(tmp_path / "lying.npy", "wb") as f:
        np.lib.format.write_array_header_1_0(f, {"descr": "|O", "fortran_order": False,
                                                 "shape": ()})
        pickle.dump(np.array(layers, dtype=object), f)
    refused(tmp_path, f"lying.npy: unreadable pickle .*{message}", npy=str(tmp_path / "lying.npy"))


def test_npy_pickle_with_a_length_past_any_memory(tmp_path):
    """BINBYTES8 claiming 2^62 bytes: Python's unpickler allocates first (MemoryError)."""
    with open(tmp_path / "long.npy", "wb") as f:
        np.lib.format.write_array_header_1_0(f, {"descr": "|O", "fortran_order": False,
                                                 "shape": ()})
        f.write(b"\x80\x04\x8e" + (1 << 62).to_bytes(8, "little") + b"abc")
    refused(tmp_path, "long.npy: unreadable pickle", npy=str(tmp_path / "long.npy"))


def test_npy_pickled_by_older_numpy_and_protocol_2(mini, tmp_path):
    """Files shared for years were pickled with protocol 2 by numpy 1
    (module numpy.core): they load, through the same arrays-only unpickler."""
    weights, biases, _ = mini
    layers = {name: [np.ascontiguousarray(w.transpose(2, 3, 1, 0) if w.ndim == 4 else w.T),
                     biases[name]] for name, w in weights.items()}
    side, channels = MINI.pool5, weights["conv5"].shape[0]
    layers["fc6"][0] = np.ascontiguousarray(weights["fc6"].reshape(-1, channels, side, side)
                                            .transpose(2, 3, 1, 0).reshape(-1, MINI.fc_units[0]))
    data = pickle.dumps(np.array(layers, dtype=object), protocol=2)
    data = data.replace(b"numpy._core.multiarray", b"numpy.core.multiarray")
    path = tmp_path / "old.npy"
    with open(path, "wb") as f:
        np.lib.format.write_array_header_1_0(f, {"descr": "|O", "fortran_order": False,
                                                 "shape": ()})
        f.write(data)
    blobs = npy.read_npy(str(path))
    for name in weights:
        np.testing.assert_array_equal(blobs.weights[name], weights[name], err_msg=name)

"""alexnet_tf.caffe.netparameter: Caffe's binary NetParameter and BlobProto
read with the protobuf runtime, against a genuine Caffe-written file (LeNet,
../shared/data/caffe) and synthetic files in both layer formats."""

import re
import struct

import numpy as np
import pytest

import caffe_fixtures as fx
from conftest import shared_dataset
from alexnet_tf.caffe import mean as caffe_mean, netparameter
from alexnet_tf.caffe.errors import CaffeFormatError
from alexnet_tf.errors import InputError

MINI = fx.MINI


@pytest.fixture(scope="module")
def caffe_dir():
    return shared_dataset("caffe")


def prototxt_layers(text: str) -> list[dict]:
    """The top-level `layer { ... }` blocks of a prototxt as flat dicts
    (nested blocks' scalar fields included, first value wins)."""
    tokens = re.findall(r'"[^"]*"|[{}]|[\w.:+-]+', text)
    layers, depth, current, key = [], 0, None, None
    for token in tokens:
        if token == "{":
            if depth == 0 and key == "layer":
                current = {}
            depth, key = depth + 1, None
        elif token == "}":
            depth -= 1
            if depth == 0 and current is not None:
                layers.append(current)
                current = None
        elif token.endswith(":"):
            key = token[:-1]
        elif key is not None:
            if current is not None:
                current.setdefault(key, token.strip('"'))
            key = None
        else:
            key = token
    return layers


def expected_lenet_shapes(prototxt: str) -> dict[str, list[tuple]]:
    """Blob shapes implied by the prototxt: walk its layers, tracking the
    data's channels and side (unpadded convolutions round down, Caffe's
    pooling rounds up)."""
    channels, side, flat, shapes = None, None, None, {}
    for layer in prototxt_layers(prototxt):
        kind = layer["type"]
        if kind == "Input":  # input_param { shape: { dim: N dim: C dim: H dim: W } }
            dims = [int(d) for d in re.findall(r"dim:\s*(\d+)", prototxt)[:4]]
            channels, side = dims[1], dims[2]
        elif kind == "Data":
            channels, side = 1, 28  # MNIST, as the data layer's source says
        elif kind == "Convolution":
            out, kernel = int(layer["num_output"]), int(layer["kernel_size"])
            shapes[layer["name"]] = [(out, channels, kernel, kernel), (out,)]
            channels, side = out, (side - kernel) // int(layer.get("stride", 1)) + 1
        elif kind == "Pooling":
            kernel, stride = int(layer["kernel_size"]), int(layer["stride"])
            side = -(-(side - kernel) // stride) + 1
        elif kind == "InnerProduct":
            inputs = flat if flat is not None else channels * side * side
            out = int(layer["num_output"])
            shapes[layer["name"]] = [(out, inputs), (out,)]
            flat = out
    return shapes


def test_lenet_blob_shapes_match_the_prototxt(caffe_dir):
    net = netparameter.read_net(str(caffe_dir / "lenet_iter_10000.caffemodel"))
    assert net.name == "LeNet" and net.layer_format == "layer"
    want = expected_lenet_shapes((caffe_dir / "lenet.prototxt").read_text())
    # The README's own list, as a check on the walk above.
    assert want == {"conv1": [(20, 1, 5, 5), (20,)], "conv2": [(50, 20, 5, 5), (50,)],
                    "ip1": [(500, 800), (500,)], "ip2": [(10, 500), (10,)]}
    got = {layer.name: [b.shape for b in layer.blobs] for layer in net.layers if layer.blobs}
    assert got == want
    assert [l.type for l in net.layers] == ["Data", "Convolution", "Pooling", "Convolution",
                                           "Pooling", "InnerProduct", "ReLU", "InnerProduct",
                                           "SoftmaxWithLoss"]


def test_lenet_values_are_the_raw_bytes(caffe_dir):
    path = caffe_dir / "lenet_iter_10000.caffemodel"
    raw = path.read_bytes()
    net = netparameter.read_net(str(path))
    for layer in net.layers:
        for blob in layer.blobs:
            # Caffe writes `data` (field 5) packed: tag 0x2a, byte length, floats.
            length = blob.size * 4
            header = b"\x2a" + fx._varint(length)
            offset = raw.find(header + blob.astype("<f4").tobytes())
            assert offset > 0, layer.name
            start = offset + len(header)
            for i in (0, 1, blob.size // 2, blob.size - 1):  # a few values, decoded by hand
                value, = struct.unpack_from("<f", raw, start + 4 * i)
                assert blob.reshape(-1)[i] == value, (layer.name, i)
            assert np.all(np.isfinite(blob)) and np.abs(blob).max() > 1e-3  # trained, not zeros


@pytest.mark.parametrize("v1", [False, True])
def test_synthetic_alexnet_reads_back_in_both_formats(tmp_path, v1):
    weights, biases = fx.alexnet_weights(MINI, seed=1)
    path = fx.write_caffemodel(tmp_path / "net.caffemodel", MINI, weights, biases, v1=v1)
    net = netparameter.read_net(path)
    assert net.layer_format == ("layers (V1)" if v1 else "layer")
    assert net.input_size == MINI.input_size  # input_dim (V1) or the data layer's crop_size
    learned = {l.name: l for l in net.layers if l.blobs}
    assert list(learned) == list(weights)
    for name, layer in learned.items():
        weight, bias = layer.blobs
        if v1:  # legacy 4-D dims: 1x1xOUTxIN and 1x1x1xOUT
            assert weight.ndim == 4 and bias.shape == (1, 1, 1, bias.size)
        np.testing.assert_array_equal(weight.reshape(weights[name].shape), weights[name])
        np.testing.assert_array_equal(bias.reshape(-1), biases[name])
    lrn = next(l for l in net.layers if l.type == "LRN").params["lrn_param"]
    assert (lrn.local_size, lrn.beta, lrn.k) == (5, 0.75, 1.0)
    assert lrn.alpha == pytest.approx(1e-4)
    conv2 = learned["conv2"].params["convolution_param"]
    assert (conv2.group, list(conv2.pad), list(conv2.kernel_size)) == (2, [2], [5])


def test_unpacked_float_data_is_read_too():
    """Protobuf allows repeated floats one per tag; Caffe packs them, others may not."""
    values = np.array([1.5, -2.25, 3.0], np.float32)
    blob = (fx.message(7, fx.packed_varints(1, [3]))
            + b"".join(fx._varint(5 << 3 | 5) + struct.pack("<f", v) for v in values))
    parsed = netparameter._CLASSES["BlobProto"]()
    parsed.ParseFromString(blob)
    np.testing.assert_array_equal(netparameter.blob_array(parsed, "blob"), values)


def test_defaults_of_absent_fields_are_caffes(tmp_path):
    """An LRN layer with no lrn_param fields and a convolution with no group."""
    layer = fx.string(1, "norm") + fx.string(2, "LRN") + fx.message(118, b"")
    path = tmp_path / "defaults.caffemodel"
    path.write_bytes(fx.message(100, layer))
    lrn = netparameter.read_net(str(path)).layers[0].params["lrn_param"]
    assert (lrn.local_size, lrn.alpha, lrn.beta, lrn.k, lrn.norm_region) == (5, 1.0, 0.75, 1.0, 0)


def truncations(data: bytes):
    return {"1 byte": data[:1], "header": data[:40], "a third": data[:len(data) // 3],
            "all but one byte": data[:-1]}


def test_truncated_files_are_refused_in_one_line(tmp_path):
    weights, biases = fx.alexnet_weights(MINI, seed=2)
    data = fx.caffemodel_bytes(MINI, weights, biases)
    for what, cut in truncations(data).items():
        path = tmp_path / "cut.caffemodel"
        path.write_bytes(cut)
        with pytest.raises(CaffeFormatError, match="truncated") as error:
            netparameter.read_net(str(path))
        assert "\n" not in str(error.value) and str(path) in str(error.value), what
        if what != "1 byte":  # one byte is not even a field's tag
            assert "the file ends inside layer" in str(error.value), what


@pytest.mark.parametrize("content, message", [
    (b"", "no layers"),
    (bytes(range(256)) * 8, "not a binary Caffe NetParameter"),
    (b"\xff\xd8\xff\xe0\x00\x10JFIF\x00" + bytes(300), "not a binary Caffe NetParameter"),
    (b'name: "AlexNet"\nlayer {\n  name: "data"\n}\n', "looks like text"),
])
def test_files_that_are_not_a_netparameter_are_refused(tmp_path, content, message):
    path = tmp_path / "model.caffemodel"
    path.write_bytes(content)
    with pytest.raises(CaffeFormatError, match=message) as error:
        netparameter.read_net(str(path))
    assert isinstance(error.value, InputError) and "\n" not in str(error.value)


def test_v0_layers_are_refused_with_the_upgrade_tool_named(tmp_path):
    v0 = fx.message(1, fx.string(1, "conv1") + fx.string(2, "conv"))
    path = tmp_path / "v0.caffemodel"
    path.write_bytes(fx.message(2, v0))
    with pytest.raises(CaffeFormatError, match="V0 format.*upgrade_net_proto_binary"):
        netparameter.read_net(str(path))


def test_binaryproto_mean_in_both_dimension_styles(tmp_path):
    image = np.random.default_rng(3).uniform(90, 130, (3, 8, 8)).astype(np.float32)
    for legacy in (True, False):
        path = tmp_path / f"mean_{legacy}.binaryproto"
        array = image[None] if not legacy else image  # (1,3,H,W) shape, or legacy 1x3xHxW
        path.write_bytes(fx.blob(array, legacy=legacy))
        np.testing.assert_array_equal(caffe_mean.read_mean_image(str(path)), image)
        assert caffe_mean.mean_rgb(str(path)) == pytest.approx(
            tuple(image.astype(np.float64).mean(axis=(1, 2))[::-1]))


def test_caffes_mean_image_gives_the_published_channel_means(caffe_dir):
    image = caffe_mean.read_mean_image(str(caffe_dir / "ilsvrc_2012_mean.npy"))
    assert image.shape == (3, 256, 256)
    np.testing.assert_allclose(image.mean(axis=(1, 2)), caffe_mean.CAFFE_ILSVRC_MEAN_BGR,
                               atol=1e-8)
    r, g, b = caffe_mean.mean_rgb(str(caffe_dir / "ilsvrc_2012_mean.npy"))
    assert (round(r, 3), round(g, 3), round(b, 3)) == (122.679, 116.669, 104.007)
    assert caffe_mean.mean_rgb() == pytest.approx((r, g, b), abs=1e-8)  # the default


@pytest.mark.parametrize("array, message", [
    (np.zeros((256, 256, 3)), "shape"), (np.full((3, 4, 4), np.nan), "finite"),
    (np.full((3, 4, 4), 0.5) * np.array([1, 1, 600.0])[:, None, None], "0..255")])
def test_bad_mean_files_are_refused(tmp_path, array, message):
    path = tmp_path / "mean.npy"
    np.save(path, array)
    with pytest.raises(CaffeFormatError, match=message):
        caffe_mean.read_mean_image(str(path))
    pickled = tmp_path / "pickled.npy"
    np.save(pickled, {"mean": 1}, allow_pickle=True)
    with pytest.raises(CaffeFormatError, match="not a numeric .npy"):
        caffe_mean.read_mean_image(str(pickled))


def bomb_layer(blob: bytes, name: str = "conv1") -> bytes:
    """A one-layer NetParameter whose layer has one blob, given as BlobProto bytes."""
    return fx.message(100, fx.string(1, name) + fx.string(2, "Convolution")
                      + fx.message(7, blob))


def floats(count: int) -> bytes:
    return fx.message(5, np.arange(count, dtype="<f4").tobytes())


_2_32 = 1 << 32
SIZE_BOMBS = {
    # dims whose product wraps int64 to 0 (the old reader then failed in numpy)
    "product past 2^63": (fx.message(7, fx.packed_varints(1, [_2_32, _2_32])),
                          r"blob shape 4294967296x4294967296 \(18,446,744,073,709,551,616 "
                          r"values\) is beyond Caffe's limits"),
    "product past 2^63, data present": (
        fx.message(7, fx.packed_varints(1, [1 << 62, 4])) + floats(4), "beyond Caffe's limits"),
    "a zero beside a huge dim": (fx.message(7, fx.packed_varints(1, [0, 1 << 62])),
                                 "blob shape 0x4611686018427387904 .* beyond"),
    "just past Caffe's INT_MAX values": (fx.message(7, fx.packed_varints(1, [1 << 16, 1 << 15])),
                                         "2,147,483,648 values"),
    "33 axes": (fx.message(7, fx.packed_varints(1, [1] * 33)), r"\(32 axes"),
    "negative dim": (fx.message(7, fx.packed_varints(1, [4, -3])) + floats(12),
                     "blob shape 4x-3 has a negative dimension"),
    "negative legacy dim": (fx.uint(1, 1) + fx.uint(2, -1) + fx.uint(3, 5) + fx.uint(4, 5)
                            + floats(25), "blob shape 1x-1x5x5 has a negative dimension"),
    "legacy dims past int32": (fx.uint(1, _2_32) + fx.uint(2, _2_32) + fx.uint(3, _2_32)
                               + fx.uint(4, _2_32), "beyond Caffe's limits"),
    "fewer values than the shape": (fx.message(7, fx.packed_varints(1, [3, 4])) + floats(11),
                                    "blob shape 3x4 needs 12 values, the file holds 11"),
    "more values than the shape": (fx.message(7, fx.packed_varints(1, [3])) + floats(4),
                                   "blob shape 3 needs 3 values, the file holds 4"),
    "data not whole floats": (fx.message(7, fx.packed_varints(1, [2])) + fx.message(5, bytes(10)),
                              "data holds 10 bytes, not a whole number of 4-byte values"),
    "double_data not whole doubles": (fx.message(7, fx.packed_varints(1, [1]))
                                      + fx.message(8, bytes(12)), "double_data holds 12 bytes"),
}


@pytest.mark.parametrize("case", list(SIZE_BOMBS))
def test_size_fields_are_checked_exactly_before_numpy(tmp_path, case):
    """Issue 21: every size from the file is refused in one line naming the
    file, layer and blob before anything is allocated for it."""
    blob, message = SIZE_BOMBS[case]
    path = tmp_path / "bomb.caffemodel"
    path.write_bytes(fx.string(1, "AlexNet") + bomb_layer(blob))
    with pytest.raises(CaffeFormatError, match=message) as error:
        netparameter.read_net(str(path))
    text = str(error.value)
    assert "\n" not in text and text.startswith(f"{path}: layer 0 ('conv1'): blob 0: "), text


def test_a_binaryproto_mean_with_a_size_bomb(tmp_path):
    path = tmp_path / "mean.binaryproto"
    path.write_bytes(fx.message(7, fx.packed_varints(1, [3, _2_32, _2_32])))
    with pytest.raises(CaffeFormatError, match=f"{path}: blob shape 3x4294967296x4294967296"):
        caffe_mean.read_mean_image(str(path))


@pytest.mark.parametrize("declared, text", [
    (fx.packed_varints(4, [1, 3, -227, -227]), "1x3x-227x-227"),  # input_dim
    (fx.message(8, fx.packed_varints(1, [1, 3, 0, 0])), "1x3x0x0"),  # input_shape
    (fx.message(8, fx.packed_varints(1, [1, 3, 227])), "1x3x227")])
def test_declared_input_sizes_are_checked(tmp_path, declared, text):
    path = tmp_path / "input.caffemodel"
    layer = fx.message(100, fx.string(1, "relu") + fx.string(2, "ReLU"))
    path.write_bytes(declared + layer)
    with pytest.raises(CaffeFormatError, match=f"input is {text}; AlexNet reads square"):
        netparameter.read_net(str(path))


def test_files_over_the_size_bound_are_refused_before_reading(tmp_path, monkeypatch):
    path = tmp_path / "big.caffemodel"
    path.write_bytes(bomb_layer(fx.message(7, fx.packed_varints(1, [2])) + floats(2)))
    monkeypatch.setattr(netparameter, "MAX_FILE_BYTES", path.stat().st_size - 1)
    for source in (path, "/dev/zero"):  # a device's size is 0: its reading is bounded too
        with pytest.raises(CaffeFormatError, match=f"{source}: over {path.stat().st_size - 1:,} "
                           "bytes, the most this importer reads"):
            netparameter.read_net(str(source))


@pytest.mark.parametrize("shape, message", [
    ((3, 1 << 20, 1 << 20), r"shape \(3, 1048576, 1048576\) of float64 needs 26,388,279,066,624 "
                            "bytes, the file holds 96"),  # 24 TiB: numpy would try to allocate
    ((3, 1 << 32, 1 << 32), "needs 442,721,857,769,029,238,784 bytes"),  # wraps int64
    ((3, 2, 1), "needs 48 bytes, the file holds 96")])
def test_a_npy_mean_whose_header_lies_about_its_shape(tmp_path, shape, message):
    path = tmp_path / "mean.npy"
    with open(path, "wb") as f:
        np.lib.format.write_array_header_1_0(f, {"descr": "<f8", "fortran_order": False,
                                                 "shape": shape})
        f.write(bytes(96))
    with pytest.raises(CaffeFormatError, match=message) as error:
        caffe_mean.read_mean_image(str(path))
    assert str(error.value).startswith(f"{path}: its header's shape")

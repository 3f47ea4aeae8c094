"""Every bad request to the exported signatures gets InvalidArgumentError
saying what is wrong and which item of the batch, and the model answers
normally afterwards (issue 12, part 2). Run the TF Serving way (TF1 loader,
feeds by tensor name) on a tiny probe model."""

import json

import numpy as np
import pytest
import tensorflow as tf

import export_probe
import hostile_images as hostile
from alexnet_tf.data import records
from alexnet_tf.data.labels import LabelMap
from alexnet_tf.serving import budget, export, requests
from serving_session import ServingSession

SIZE = 32
LABELS = LabelMap(("n1", "n2", "n3"), ("one", "two", "three"))
GOOD = export.warmup_image_bytes()


MAX_BYTES = 100_000  # this export's max_image_bytes: GOOD is ~7 KB


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    return export.export_saved_model(export_probe.build_probe_model(len(LABELS), SIZE), LABELS,
                                     str(tmp_path_factory.mktemp("requests")), warmup=False,
                                     max_image_bytes=MAX_BYTES)


@pytest.fixture(scope="module")
def probe(exported):
    session = ServingSession(exported)
    yield session
    session.close()


def example(image: bytes) -> bytes:
    return records.serialize(records.ImageRecord(image, 1, 1, 0, "", "", ""))


def refused(probe, signature, pattern, **inputs):
    """The call fails with InvalidArgumentError matching `pattern`, and the
    model still gives the same answer to a good request afterwards."""
    before = probe.run("serving_default", image_bytes=[GOOD])["probabilities"]
    with pytest.raises(tf.errors.InvalidArgumentError, match=pattern):
        probe.run(signature, **inputs)
    after = probe.run("serving_default", image_bytes=[GOOD])["probabilities"]
    np.testing.assert_array_equal(after, before)


BAD_IMAGES = {
    "empty": (b"", r"is an empty string"),
    "random bytes": (np.random.default_rng(1).bytes(5000),
                     r"is not a JPEG, PNG, GIF or BMP image"),
    "text": (b"index\twnid\tname\n0\tn01440764\ttench\n" * 10,
             r"is not a JPEG, PNG, GIF or BMP image"),
    "JPEG cut in its header": (GOOD[:60], r"has a truncated or corrupt JPEG header"),
    "JPEG cut in its data": (GOOD[:len(GOOD) * 2 // 3],
                             r"could not be decoded: its JPEG data is corrupt or truncated"),
    "PNG with broken data": (hostile.encode(hostile.noise(20, 20), "PNG")[:60],
                             r"could not be decoded: its PNG data is corrupt or truncated"),
    "JPEG claiming 60000x60000": (hostile.jpeg_claiming(60000, 60000),
                                  r"is 60000x60000 pixels, more than 67108864 pixels"),
    "PNG claiming 30000x30000": (hostile.png_claiming(30000, 30000),
                                 r"is 30000x30000 pixels, more than 50331648 pixels"),
    "BMP claiming 20000x20000": (hostile.bmp_claiming(20000, 20000),
                                 r"is 20000x20000 pixels, more than 50331648 pixels"),
    "GIF frame claiming 65535x65535": (hostile.gif_claiming(65535, 65535),
                                       r"is 65535x65535 pixels, more than 50331648 pixels"),
    "PNG of width 0": (hostile.png_claiming(8, 0), r"has a zero dimension \(0x8\)"),
    "GIF cut in its blocks": (hostile.encode(hostile.noise(8, 8), "GIF")[:30],
                              r"has a truncated or corrupt GIF header"),
}


@pytest.mark.parametrize("kind", sorted(BAD_IMAGES))
def test_bad_image_names_its_index_in_every_image_signature(probe, kind):
    bad, reason = BAD_IMAGES[kind]
    for signature in ("serving_default", "features"):
        refused(probe, signature, rf"image_bytes\[1\] {reason}", image_bytes=[GOOD, bad, GOOD])
    if not bad:  # an Example with an empty image/encoded has no image at all
        reason = r"has no image/encoded feature \(or it is empty\)"
    refused(probe, "classify", rf"inputs\[2\] {reason}",
            inputs=[example(GOOD), example(GOOD), example(bad)])


@pytest.mark.parametrize("kind, value", [
    ("random bytes", np.random.default_rng(2).bytes(300)),
    ("a raw JPEG", GOOD),
    ("a truncated Example", example(GOOD)[:-7]),
    ("text", b"image/encoded: cat.jpg"),
])
def test_classify_refuses_what_is_not_a_tf_example(probe, kind, value):
    refused(probe, "classify", r"inputs\[1\] is not a serialized tf.Example",
            inputs=[example(GOOD), value])


def test_classify_refuses_examples_without_a_usable_image(probe):
    refused(probe, "classify", r"inputs\[0\] has no image/encoded feature",
            inputs=[tf.train.Example().SerializeToString()])
    wrong_type = tf.train.Example()
    wrong_type.features.feature[records.ENCODED].int64_list.value.append(7)
    refused(probe, "classify", r"inputs\[1\] has an image/encoded feature that is not one bytes "
            r"value", inputs=[example(GOOD), wrong_type.SerializeToString()])
    two_images = tf.train.Example()
    two_images.features.feature[records.ENCODED].bytes_list.value.extend([GOOD, GOOD])
    refused(probe, "classify", r"inputs\[0\] has an image/encoded feature that is not one",
            inputs=[two_images.SerializeToString()])
    many_fields = b"\x08\x00" * 5000  # valid wire format, 5,000 varint fields
    refused(probe, "classify", r"inputs\[0\] has more than 1000 fields", inputs=[many_fields])


@pytest.mark.parametrize("signature, key, value", [
    ("serving_default", "image_bytes", np.array([], dtype=object)),
    ("features", "image_bytes", np.array([], dtype=object)),
    ("classify", "inputs", np.array([], dtype=object)),
    ("predict_images", "images", np.zeros((0, SIZE, SIZE, 3), np.float32)),
])
def test_empty_batch_is_refused(probe, signature, key, value):
    refused(probe, signature, rf"{key} is an empty batch", **{key: value})


def test_batch_larger_than_the_limit_is_refused(probe):
    count = requests.MAX_BATCH + 1
    refused(probe, "serving_default", rf"image_bytes holds {count} items, more than the 256",
            image_bytes=[GOOD] * count)
    refused(probe, "predict_images", rf"images holds {count} items",
            images=np.zeros((count, SIZE, SIZE, 3), np.float32))


@pytest.mark.parametrize("shape", [(1, SIZE - 1, SIZE, 3), (2, 224, 224, 3), (1, SIZE, SIZE),
                                   (1, SIZE, SIZE, 4), (SIZE, SIZE, 3), (2,)])
def test_predict_images_of_another_shape_names_the_expected_one(probe, shape):
    got = " ".join(str(d) for d in shape)
    refused(probe, "predict_images",
            rf"images must be float32 \[N, {SIZE}, {SIZE}, 3\] \(RGB, 0..255\), got shape \[{got}\]",
            images=np.zeros(shape, np.float32))


@pytest.mark.parametrize("value, index, reason", [
    (np.nan, 2, "has non-finite values"),
    (np.inf, 0, "has non-finite values"),
    (-np.inf, 1, "has non-finite values"),
    (-3.0, 1, r"has values outside 0..255 \(min -3, max 0\)"),
    (255.5, 2, r"has values outside 0..255 \(min 0, max 255.5\)"),
])
def test_predict_images_refuses_bad_pixel_values_naming_the_image(probe, value, index, reason):
    images = np.zeros((3, SIZE, SIZE, 3), np.float32)
    images[index, 5, 7, 1] = value
    refused(probe, "predict_images", rf"images\[{index}\] {reason}", images=images)
    edges = np.zeros((2, SIZE, SIZE, 3), np.float32)
    edges[1] = 255.0  # 0 and 255 themselves are fine
    assert probe.run("predict_images", images=edges)["probabilities"].shape == (2, 3)


def test_tf2_loader_gets_the_same_checks(exported):
    signatures = tf.saved_model.load(exported).signatures
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"got shape \[1 20 20 3\]"):
        signatures["predict_images"](images=tf.zeros([1, 20, 20, 3]))
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"image_bytes\[0\] is an empty"):
        signatures["serving_default"](image_bytes=tf.constant([b""]))
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"inputs\[0\] is not a serialized"):
        signatures["classify"](inputs=tf.constant([GOOD]))
    out = signatures["predict_images"](images=tf.fill([2, SIZE, SIZE, 3], 100.0))
    assert out["probabilities"].shape == (2, 3)


def test_predict_images_signature_def_still_advertises_the_shape(exported):
    meta_graph = export.read_saved_model_proto(exported).meta_graphs[0]
    shape = meta_graph.signature_def["predict_images"].inputs["images"].tensor_shape
    assert [d.size for d in shape.dim] == [-1, SIZE, SIZE, 3]


def test_strings_longer_than_max_image_bytes_are_refused_before_any_work(probe, exported):
    """The limit is the export's, recorded with the others in its assets."""
    with open(f"{exported}/assets/{budget.BUDGET_FILENAME}") as f:
        assert json.load(f) == export.request_limits(MAX_BYTES)
    long = GOOD + bytes(MAX_BYTES - len(GOOD) + 1)  # a valid JPEG, one byte too long
    for signature in ("serving_default", "features"):
        refused(probe, signature, rf"image_bytes\[1\] is {MAX_BYTES + 1} bytes, more than the "
                r"100,000 bytes an image may have \(max_image_bytes, set at export\)",
                image_bytes=[GOOD, long])
    assert probe.run("serving_default", image_bytes=[long[:-1]])["probabilities"].shape == (1, 3)
    # classify: the Example may be EXAMPLE_OVERHEAD_BYTES longer, its image may not
    refused(probe, "classify", r"inputs\[0\] has an image/encoded of 100001 bytes, more than "
            r"the 100,000 bytes", inputs=[example(long)])
    padded = example(GOOD) + bytes(MAX_BYTES + budget.EXAMPLE_OVERHEAD_BYTES)
    refused(probe, "classify", r"inputs\[1\] is \d+ bytes, more than the 165,536 bytes a "
            r"tf.Example may have", inputs=[example(GOOD), padded])


def test_export_refuses_a_bad_max_image_bytes(tmp_path):
    for bad in (0, -5, 2.5, budget.MAX_SETTABLE_BYTES + 1):
        with pytest.raises(ValueError, match="max_image_bytes must be an integer from 1"):
            export.export_saved_model(export_probe.build_probe_model(len(LABELS), SIZE), LABELS,
                                      str(tmp_path), warmup=False, max_image_bytes=bad)
    assert not list(tmp_path.iterdir())  # refused before anything is written

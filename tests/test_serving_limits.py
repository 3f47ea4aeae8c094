"""One request's memory is bounded (issue 12, part 1): extreme aspect ratios
and GIF decompression bombs through the exported serving_default, features
and classify signatures, each call's peak memory measured in a child
process (tests/request_memory.py) that a watchdog kills long before it
could exhaust the machine. The probe model reads 224x224, as AlexNet does.

Before the fix, a 1x4000 PNG took the serving graph to 3.15 GB above its
level and a 1x65500 JPEG asked for a [1, 256, 16768000, 3] float tensor
(51.5 GB); a 27 KB GIF with a 1x1 frame before a 6000x6000 one, 535 MB;
600 copies of a 1024x1024 frame (a 1.1 MB file), 602 MB.
"""

import numpy as np
import pytest

import export_probe
import hostile_images as hostile
import request_memory
from alexnet_tf.data.labels import LabelMap
from alexnet_tf.serving import export

# One worker runs this module: its fixtures (an export, a measurement child)
# are built once, not once per xdist worker.

BOUND_MB = 500  # above the process's level before the first request
KILL_MB = 2000  # the watchdog's limit: a regression fails, the machine lives

THIN = {f"{'%dx1' if vertical else '1x%d'}.{fmt.lower()}" % n: (n, fmt, vertical)
        for n, formats in ((20000, ("PNG",)), (65500, ("PNG", "JPEG", "GIF")))
        for fmt in formats for vertical in (False, True)}
BOMBS = {
    "1024x1024 then 3000 tiny frames.gif": lambda: hostile.gif_many_frames(1024, 3000),
    "1x1 then 6000x6000.gif": lambda: hostile.gif_large_second_frame(6000),
    "600 frames of 1024x1024.gif": lambda: hostile.gif_repeated_frames(1024, 600),
}


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    labels = LabelMap.from_wnids(["n00000000", "n00000001"])
    return export.export_saved_model(export_probe.build_probe_model(2), labels,
                                     str(tmp_path_factory.mktemp("limits")), warmup=False)


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    folder = tmp_path_factory.mktemp("hostile")
    paths = {}
    for name, (length, fmt, vertical) in THIN.items():
        paths[name] = folder / name
        paths[name].write_bytes(hostile.thin(length, fmt, vertical))
    for name, make in BOMBS.items():
        paths[name] = folder / name
        paths[name].write_bytes(make())
    return paths


@pytest.fixture(scope="module")
def measured(exported, images, tmp_path_factory):
    """Every valid image's request, measured in one child, each case's peak
    on its own (request_memory resets the kernel's peak counter before it
    and hands freed memory back after it): one 4096x4096 PNG, eight of them
    in one request, then the extreme images through each signature. Memory
    the one left could lower the eight's figure by at most the one's own,
    so decoding the eight together (eight times one) still fails the check."""
    big = tmp_path_factory.mktemp("large") / "4096.png"
    big.write_bytes(hostile.largest_allowed("PNG", side=4096))
    cases = [("serving_default", str(big)), ("serving_default", f"{big}*8")]
    cases += [(signature, str(path)) for path in images.values()
              for signature in ("serving_default", "features", "classify")]
    answer = request_memory.measure(exported, cases, kill_mb=KILL_MB, timeout=600)
    assert "killed" not in answer, answer
    assert answer["returncode"] == 0 and answer["answers_after"], answer
    batch = dict(zip(("one", "eight"), answer["cases"][:2]))
    return batch, answer["cases"][2:], answer["peak_above_start_mb"]


def test_extreme_images_stay_under_the_bound_and_the_model_answers(measured):
    _, cases, peak_above_start_mb = measured
    assert len(cases) == 3 * (len(THIN) + len(BOMBS))
    for case in cases:
        assert case["error"] is None, case  # these are valid images: they are classified
        assert case["peak_mb"] < BOUND_MB, case
    assert peak_above_start_mb < BOUND_MB, measured


def test_a_batch_of_large_images_costs_about_one_of_them(measured):
    """A request's images are decoded one at a time: eight 4096x4096 PNGs (48 MB
    each decoded; 64 MB for one, 105 MB for eight measured) stay under twice
    one, where decoding them together would take eight times."""
    batch, _, _ = measured
    for case in batch.values():
        assert case["error"] is None, case
    one, eight = batch["one"]["peak_mb"], batch["eight"]["peak_mb"]
    assert one > 30, batch  # the decode shows: the measurement can see it
    assert eight < 2 * one, batch


def test_the_measurement_fails_when_a_request_grows(exported, tmp_path):
    """The watchdog does stop a child that passes its limit: here 20 MB,
    which decoding a 4,000 x 4,000 PNG (48 MB, a 50 KB file) must pass."""
    big = tmp_path / "big.png"
    big.write_bytes(hostile.encode(np.zeros((4000, 4000, 3), np.uint8), "PNG"))
    answer = request_memory.measure(exported, [("serving_default", str(big))], kill_mb=20)
    assert answer.get("killed") == f"serving_default:{big}", answer
    assert answer["returncode"] == request_memory.KILLED


def test_thin_images_are_served_as_data_prep_would_store_them(exported, images):
    """A 1 x N image's centre square is its middle pixel: the model sees
    that colour everywhere."""
    import tensorflow as tf
    features = tf.saved_model.load(exported).signatures["features"]
    data = images["1x65500.png"].read_bytes()
    pixels = features(image_bytes=tf.constant([data]))["features"].numpy().reshape(224, 224, 3)
    middle = tf.io.decode_png(data, channels=3).numpy()[0, (65500 - 1) // 2]  # data prep's left
    np.testing.assert_array_equal(pixels, np.broadcast_to(middle, pixels.shape))

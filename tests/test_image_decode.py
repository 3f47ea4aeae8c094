"""alexnet_tf.data.image_header and decode: what the bytes claim, read
without decoding, and the decoder that refuses before it allocates."""

import struct

import numpy as np
import pytest
import tensorflow as tf

import hostile_images as hostile
from alexnet_tf.data import decode, image_header
from data_prep import convert


def in_graph(fn, *values):
    return tf.function(fn)(*[tf.constant(v) for v in values])


@pytest.mark.parametrize("fmt, expected", [("JPEG", image_header.JPEG), ("PNG", image_header.PNG),
                                           ("GIF", image_header.GIF), ("BMP", image_header.BMP)])
def test_image_format_from_the_magic_bytes(fmt, expected):
    data = hostile.encode(hostile.noise(5, 6), fmt)
    assert int(image_header.image_format(tf.constant(data))) == expected
    for other in (b"", b"\xff\xd8", b"GIF8", b"\x89PNG", b"RIFF\x00\x00\x00\x00WEBPVP8 ",
                  b"II*\x00", data[1:]):
        assert int(image_header.image_format(tf.constant(other))) == image_header.UNKNOWN


def test_png_and_bmp_shapes_from_the_header():
    png = hostile.encode(hostile.noise(7, 300), "PNG")
    np.testing.assert_array_equal(image_header.png_shape(tf.constant(png)), [7, 300])
    np.testing.assert_array_equal(image_header.png_shape(tf.constant(png[:20])), [-1, -1])
    bmp = hostile.encode(hostile.noise(9, 11), "BMP")
    np.testing.assert_array_equal(image_header.bmp_shape(tf.constant(bmp)), [9, 11])
    top_down = bytearray(bmp)
    top_down[22:26] = struct.pack("<i", -9)
    np.testing.assert_array_equal(image_header.bmp_shape(tf.constant(bytes(top_down))), [9, 11])
    np.testing.assert_array_equal(image_header.bmp_shape(tf.constant(bmp[:25])), [-1, -1])


def gif_with_extensions() -> bytes:
    """A GIF89a with a comment and an application extension before its first
    frame, a local colour table on the second frame (Pillow writes them)."""
    frames = [hostile.noise(6, 10, seed) for seed in range(3)]
    import io
    from PIL import Image
    buffer = io.BytesIO()
    images = [Image.fromarray(f).convert("P") for f in frames]
    images[0].save(buffer, "GIF", save_all=True, append_images=images[1:], comment=b"hi" * 200,
                   loop=0, duration=50)
    return buffer.getvalue()


def test_first_gif_frame_ends_where_a_one_frame_gif_decodes_the_same():
    data = gif_with_extensions()
    assert len(hostile.gif_image_descriptors(data)) == 3
    end, shape = in_graph(image_header.first_gif_frame, data)
    np.testing.assert_array_equal(shape, [6, 10])
    one_frame = data[:int(end)] + image_header.GIF_TRAILER
    assert len(hostile.gif_image_descriptors(one_frame)) == 1
    first = tf.io.decode_gif(data)[0].numpy()
    np.testing.assert_array_equal(tf.io.decode_gif(one_frame)[0].numpy(), first)
    np.testing.assert_array_equal(decode.decode_rgb(tf.constant(data)).numpy(), first)


@pytest.mark.parametrize("cut", [0, 6, 13, 20, 40, -2])
def test_first_gif_frame_of_a_cut_gif_is_unreadable(cut):
    data = hostile.encode(hostile.noise(8, 8), "GIF")
    end, shape = in_graph(image_header.first_gif_frame, data[:cut] if cut else b"")
    assert int(end) == -1
    np.testing.assert_array_equal(shape, [-1, -1])


def test_decode_rgb_gives_only_the_first_gif_frame_at_its_own_size():
    """TF's decoder alone makes the 1x1 first frame 6000x6000 (the largest
    frame's size): 108 MB from a 27 KB file."""
    data = hostile.gif_large_second_frame(6000)
    assert decode.decode_rgb(tf.constant(data)).shape == (1, 1, 3)
    many = hostile.gif_many_frames(64, 5000)  # tf.io.decode_gif: 5,000 frames of 64x64
    assert decode.decode_rgb(tf.constant(many)).shape == (64, 64, 3)


@pytest.mark.parametrize("data, limit", [
    (hostile.png_claiming(9000, 9000), decode.MAX_LOSSLESS_PIXELS),
    (hostile.bmp_claiming(9000, 9000), decode.MAX_LOSSLESS_PIXELS),
    (hostile.gif_claiming(9000, 9000), decode.MAX_LOSSLESS_PIXELS),
    (hostile.jpeg_claiming(9000, 9000), decode.MAX_PIXELS)])
def test_every_format_is_refused_from_its_header_above_the_pixel_limit(data, limit):
    with pytest.raises(tf.errors.InvalidArgumentError, match=rf"image is 9000x9000 pixels, more "
                       rf"than {limit} pixels"):
        decode.decode_rgb(tf.constant(data))
    ok, problem = decode.safe_image_problem(tf.constant(data))
    assert not ok and f"more than {limit}".encode() in problem.numpy()


@pytest.mark.parametrize("height, width", [(1100, 2300), (511, 512), (512, 700), (1024, 1024),
                                           (2047, 3000), (5000, 4100), (100, 80)])
def test_jpeg_ratio_is_data_preps_reduction_factor(height, width):
    index = decode.jpeg_ratio_index(tf.constant([height, width]), 256)
    assert decode.JPEG_RATIOS[int(index)] == convert.reduction_factor(height, width, 256)


def test_reduced_jpeg_decode_is_libjpegs_scaled_decode():
    jpeg = hostile.encode(hostile.noise(1100, 2300), "JPEG")
    reduced = decode.decode_rgb(tf.constant(jpeg), min_side=256).numpy()
    assert reduced.shape == (275, 575, 3)  # ceil(1100 / 4), ceil(2300 / 4)
    np.testing.assert_array_equal(reduced, tf.io.decode_jpeg(
        jpeg, ratio=4, dct_method=decode.JPEG_DCT_METHOD).numpy())
    assert decode.decode_rgb(tf.constant(jpeg)).shape == (1100, 2300, 3)  # full by default


def test_safe_image_problem_never_raises():
    rng = np.random.default_rng(0)
    samples = [hostile.encode(hostile.noise(20, 30), fmt) for fmt in ("JPEG", "PNG", "GIF", "BMP")]
    fn = tf.function(decode.safe_image_problem)
    for sample in samples:
        for cut in (1, 3, 9, 17, 30, len(sample) // 2):
            ok, problem = fn(tf.constant(sample[:cut]))
            assert bool(ok) == (problem.numpy() == b"")
        for _ in range(10):
            noisy = bytearray(sample)
            noisy[rng.integers(0, min(len(noisy), 64))] = rng.integers(0, 256)
            fn(tf.constant(bytes(noisy)))  # must not raise
        ok, problem = fn(tf.constant(sample))
        assert bool(ok) and problem.numpy() == b""


def test_32_bit_png_sides_do_not_overflow_the_pixel_check():
    """4294967295 x 4294967295 overflows int64 when multiplied: still refused,
    with its size."""
    data = hostile.png_claiming(2 ** 32 - 1, 2 ** 32 - 1)
    with pytest.raises(tf.errors.InvalidArgumentError,
                       match=r"is 4294967295x4294967295 pixels, more than 50331648"):
        decode.decode_rgb(tf.constant(data))


def test_long_gifs_are_walked_in_runs_and_crafted_ones_stop():
    """Encoders write 255-byte sub-blocks, walked a run at a time: a 1.3 MB
    frame is cut exactly. A GIF of 1-byte sub-blocks is still valid, but
    would need one loop step per two bytes: it is refused after
    GIF_MAX_STEPS instead."""
    big = hostile.encode(hostile.noise(1000, 1000), "GIF")
    end, shape = in_graph(image_header.first_gif_frame, big)
    assert int(end) == len(big) - 1  # one frame: everything but the trailer
    np.testing.assert_array_equal(shape, [1000, 1000])
    tiny = hostile.gif_tiny_sub_blocks(200)
    assert tf.io.decode_image(tiny, channels=3, expand_animations=False).shape == (200, 200, 3)
    assert len(tiny) > 4 * image_header.GIF_MAX_STEPS
    end, shape = in_graph(image_header.first_gif_frame, tiny)
    assert int(end) == -2 and bool(image_header.gif_too_long(end))
    with pytest.raises(tf.errors.InvalidArgumentError,
                       match="has more than 2048 GIF blocks or sub-blocks before its first image"):
        in_graph(decode.decode_rgb, tiny)  # as serving and tf.data run it (eagerly: 2048 steps)


def test_decode_work_is_bounded_in_the_header_check():
    """Scans x pixels of a JPEG, and compressed text chunks of a PNG, are
    counted before decoding: over the limit is refused naming the count."""
    import request_fuzz
    rng = np.random.default_rng(0)
    scans = request_fuzz.many_scans(rng, scans=200, side=256)  # 1 + 200 + 9 others
    assert int(image_header.jpeg_scans(tf.constant(scans))) == image_header.MAX_JPEG_SCANS + 1
    with pytest.raises(tf.errors.InvalidArgumentError,
                       match=r"has more than 100 JPEG scans; 100 are allowed at 256x256"):
        decode.decode_rgb(tf.constant(scans))
    # scans x pixels: at 5000x5000, 53 scans (20 * 2^26 // 25,000,000)
    big = request_fuzz.many_scans(rng, scans=81, side=5000)
    with pytest.raises(tf.errors.InvalidArgumentError,
                       match=r"has 90 JPEG scans; 53 are allowed at 5000x5000 pixels"):
        decode.decode_rgb(tf.constant(big))
    assert decode.decode_rgb(tf.constant(request_fuzz.many_scans(rng, 31, 512))).shape == (
        512, 512, 3)
    normal = request_fuzz.valid("jpeg_progressive", rng)
    assert 5 <= int(image_header.jpeg_scans(tf.constant(normal))) <= 12
    # A progressive JPEG keeps all its coefficients: a lower pixel limit.
    progressive = bytearray(normal)
    at = progressive.index(b"\xff\xc2")
    progressive[at + 5:at + 9] = struct.pack(">HH", 6000, 6000)
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"is 6000x6000 pixels, more than "
                       r"25165824 pixels \(the limit for a progressive or multi-scan JPEG\)"):
        decode.decode_rgb(tf.constant(bytes(progressive)))
    # A thumbnail's scan in APP1 and an image appended after EOI are not counted.
    baseline = request_fuzz.valid("jpeg_baseline", rng)
    app1 = b"Exif\x00\x00" + baseline  # a whole JPEG, scan included, as a thumbnail
    with_thumbnail = (baseline[:2] + b"\xff\xe1" + struct.pack(">H", len(app1) + 2) + app1
                      + baseline[2:] + baseline)
    assert int(image_header.jpeg_scans(tf.constant(with_thumbnail))) == 1
    assert int(image_header.jpeg_scans(tf.constant(baseline * 3))) == 1
    bombs = request_fuzz.ztxt_bombs(rng, count=9, inflated=1 << 20)
    with pytest.raises(tf.errors.InvalidArgumentError,
                       match=r"has more than 8 compressed PNG text chunks"):
        decode.decode_rgb(tf.constant(bombs))
    assert decode.decode_rgb(tf.constant(request_fuzz.ztxt_bombs(rng, 8, 1 << 10))).shape[2] == 3


def test_repeated_large_gif_frames_decode_once():
    data = hostile.gif_repeated_frames(256, 50)
    assert len(hostile.gif_image_descriptors(data)) == 50
    assert decode.decode_rgb(tf.constant(data)).shape == (256, 256, 3)

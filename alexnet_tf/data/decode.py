"""Encoded image bytes -> uint8 RGB, refusing before the decoder starts
anything that would make it allocate more than MAX_PIXELS.

`decode_rgb` is the one decoder of training (its rare small-image path),
evaluation and the serving signatures. `image_problem` is the same checks
as a message instead of an error, for the serving signatures to say which
image of a batch was refused and why.
"""

from __future__ import annotations

import tensorflow as tf

from alexnet_tf.data import image_header
from alexnet_tf.data.image_header import GIF, JPEG, UNKNOWN

# Anything larger is refused before decoding (a decompression bomb guard for
# the serving signature): 2**26 pixels is e.g. 8192x8192.
MAX_PIXELS = 1 << 26
# libjpeg's accurate integer IDCT: the same pixels Pillow and simplejpeg give
# data prep (TF's default fast IDCT differs by ~1 level per pixel), at about
# the same speed with SIMD. Training, evaluation and serving all use it.
JPEG_DCT_METHOD = "INTEGER_ACCURATE"
# libjpeg's DCT-domain downscaling, the ratios data prep decodes at.
JPEG_RATIOS = (1, 2, 4, 8)


def decode_rgb(image_bytes: tf.Tensor, min_side: int | None = None) -> tf.Tensor:
    """Encoded JPEG/PNG/GIF/BMP bytes (scalar string) -> uint8 [H, W, 3] RGB.

    Grayscale is expanded to RGB and alpha dropped; GIFs give their first
    frame (only that frame is handed to the decoder). The size in the header
    is checked before any pixel is decoded: more than MAX_PIXELS, a zero
    dimension, an empty string or an unknown format raise
    InvalidArgumentError saying so; corrupt data raises the decoder's error.

    min_side: when given, a JPEG is decoded at 1/2, 1/4 or 1/8 scale, the
    strongest reduction that keeps its shorter side >= min_side (data
    prep's `reduction_factor`): less memory and time, and data prep's pixels.
    """
    fmt = image_header.image_format(image_bytes)
    gif_end, gif_shape = _first_gif_frame(image_bytes, fmt)
    shape = _encoded_shape(image_bytes, fmt, gif_shape, tf.image.extract_jpeg_shape)
    ok, problem = image_problem(image_bytes, fmt, shape)
    with tf.control_dependencies([tf.debugging.Assert(ok, [tf.strings.join(["image ", problem])])]):
        checked = tf.identity(image_bytes)

    def jpeg():
        if min_side is None:  # full size, exactly as before reduced decoding existed
            return tf.io.decode_jpeg(checked, channels=3, dct_method=JPEG_DCT_METHOD)
        return tf.switch_case(jpeg_ratio_index(shape, min_side), [
            lambda r=r: tf.io.decode_jpeg(checked, channels=3, ratio=r,
                                          dct_method=JPEG_DCT_METHOD)
            for r in JPEG_RATIOS])

    def other():
        one_frame = tf.where(
            tf.equal(fmt, GIF),
            tf.strings.join([tf.strings.substr(checked, 0, tf.maximum(gif_end, 0)),
                             image_header.GIF_TRAILER]),
            checked)
        return tf.io.decode_image(one_frame, channels=3, expand_animations=False)

    image = tf.cond(tf.equal(fmt, JPEG), jpeg, other)
    image.set_shape([None, None, 3])
    return image


def jpeg_ratio_index(shape: tf.Tensor, min_side: int) -> tf.Tensor:
    """Index into JPEG_RATIOS of the largest ratio r with ceil(shorter / r)
    >= min_side (libjpeg rounds scaled sizes up)."""
    shorter = tf.reduce_min(tf.cast(shape, tf.int64))
    fits = [tf.cast((shorter + r - 1) // r >= min_side, tf.int32) for r in JPEG_RATIOS[1:]]
    return tf.add_n(fits)


def image_problem(image_bytes: tf.Tensor, fmt: tf.Tensor, shape: tf.Tensor):
    """(ok, problem): ok is False when the image must not be decoded, and
    problem (string scalar) then says why, as a phrase after "image":
    "is an empty string", "is 60000x60000 pixels, more than ...". `shape` is
    the header's [height, width] (int64), -1 when unreadable."""
    height, width = shape[0], shape[1]
    fmt_name = tf.gather(tf.constant(image_header.FORMAT_NAMES + ("",)), fmt)
    checks = [
        (tf.strings.length(image_bytes) > 0, tf.constant("is an empty string")),
        (tf.not_equal(fmt, UNKNOWN), tf.constant(
            "is not a JPEG, PNG, GIF or BMP image (unrecognised leading bytes)")),
        (height >= 0, tf.strings.join(["has a truncated or corrupt ", fmt_name, " header"])),
        # (each side first: PNG sides are 32-bit, their product can overflow int64)
        ((height <= MAX_PIXELS) & (width <= MAX_PIXELS) & (height * width <= MAX_PIXELS),
         tf.strings.format(
            "is {}x{} pixels, more than " + str(MAX_PIXELS) + " pixels (the limit)",
            (width, height))),
        (height * width > 0, tf.strings.format("has a zero dimension ({}x{})", (width, height))),
    ]
    problem = tf.constant("")
    for ok, message in reversed(checks):  # the first failing check wins
        problem = tf.where(ok, problem, message)
    ok = tf.reduce_all(tf.stack([ok for ok, _ in checks]))
    return ok, problem


def safe_image_problem(image_bytes: tf.Tensor):
    """`image_problem` computed without raising, even on a JPEG whose header
    libjpeg cannot read: for explaining a refused image."""
    fmt = image_header.image_format(image_bytes)
    _, gif_shape = _first_gif_frame(image_bytes, fmt)
    shape = _encoded_shape(image_bytes, fmt, gif_shape, _jpeg_shape_or_unreadable)
    return image_problem(image_bytes, fmt, shape)


def _first_gif_frame(image_bytes, fmt):
    return tf.cond(tf.equal(fmt, GIF), lambda: image_header.first_gif_frame(image_bytes),
                   lambda: (tf.constant(-1), tf.constant([-1, -1], tf.int64)))


def _encoded_shape(image_bytes, fmt, gif_shape, jpeg_shape) -> tf.Tensor:
    """[height, width] int64 the decoder will produce, from the header."""
    return tf.switch_case(fmt, [
        lambda: tf.cast(jpeg_shape(image_bytes)[:2], tf.int64),
        lambda: image_header.png_shape(image_bytes),
        lambda: gif_shape,
        lambda: image_header.bmp_shape(image_bytes),
        lambda: tf.constant([-1, -1], tf.int64),
    ])


def _jpeg_shape_or_unreadable(image_bytes: tf.Tensor) -> tf.Tensor:
    """libjpeg's header size, or [-1, -1, -1] where extract_jpeg_shape would
    raise (tf.data's ignore_errors is the graph's only way to catch it)."""
    shapes = tf.data.Dataset.from_tensors(image_bytes).map(
        tf.image.extract_jpeg_shape).ignore_errors()
    fallback = tf.data.Dataset.from_tensors(tf.constant([-1, -1, -1]))
    return shapes.concatenate(fallback).take(1).get_single_element()

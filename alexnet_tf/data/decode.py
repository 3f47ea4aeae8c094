"""Encoded image bytes -> uint8 RGB, refusing before the decoder starts
anything that would make it allocate more than MAX_PIXELS.

`decode_rgb` is the one decoder of training (its rare small-image path),
evaluation and the serving signatures. `image_problem` is the same checks
as a message instead of an error, for the serving signatures to say which
image of a batch was refused and why.
"""

from __future__ import annotations

from typing import NamedTuple

import tensorflow as tf

from alexnet_tf.data import image_header
from alexnet_tf.data.image_header import GIF, JPEG, PNG, UNKNOWN

# Anything larger is refused before decoding (a decompression bomb guard for
# the serving signature): 2**26 pixels is e.g. 8192x8192.
MAX_PIXELS = 1 << 26
# libjpeg walks every block of the image once per scan (~40 ms per scan at
# 8192x8192 on the 2 cores measured, whatever the scan holds): scans x
# pixels is capped so that the scans cost at most ~1.3 s (84 scans at
# 5000x5000 took 2.0 s), and scans at image_header.MAX_JPEG_SCANS whatever
# the size: 53 scans at 5000x5000, 80 at 4096x4096, 100 below 3664x3664.
JPEG_SCAN_PIXELS = 20 * MAX_PIXELS
# What the decoder holds for the largest image it may decode, within the
# request budget (200 MB): a JPEG of one scan is decoded at 1/8 scale
# (2^26 pixels cost ~2 MB), one of several scans makes libjpeg keep every
# DCT coefficient (up to 6 bytes a pixel: 384 MB at 2^26 measured), and
# PNG, GIF and BMP decode to 3 bytes a pixel (212 MB at 2^26 measured).
MAX_MULTI_SCAN_JPEG_PIXELS = 3 << 23   # 25.2M, e.g. a 6000x4000 photo
MAX_LOSSLESS_PIXELS = 3 << 24          # 50.3M, e.g. 7000x7000
# libjpeg's accurate integer IDCT: the same pixels Pillow and simplejpeg give
# data prep (TF's default fast IDCT differs by ~1 level per pixel), at about
# the same speed with SIMD. Training, evaluation and serving all use it.
JPEG_DCT_METHOD = "INTEGER_ACCURATE"
# libjpeg's DCT-domain downscaling, the ratios data prep decodes at.
JPEG_RATIOS = (1, 2, 4, 8)

# This module and image_header build their graphs with explicit tf.cond,
# tf.switch_case and tf.while_loop. Autograph would only re-parse them: about
# 2 CPU-s in every process that builds an input pipeline or an export.
graph_code = tf.autograph.experimental.do_not_convert


@graph_code
def decode_rgb(image_bytes: tf.Tensor, min_side: int | None = None) -> tf.Tensor:
    """Encoded JPEG/PNG/GIF/BMP bytes (scalar string) -> uint8 [H, W, 3] RGB.

    Grayscale is expanded to RGB and alpha dropped; GIFs give their first
    frame (only that frame is handed to the decoder). The header is checked
    before any pixel is decoded (`image_problem`): more than MAX_PIXELS, a
    zero dimension, an empty string, an unknown format, or more decoding
    work than the limits allow (JPEG scans, PNG text chunks, GIF blocks)
    raise InvalidArgumentError saying so; corrupt data raises the decoder's
    error.

    min_side: when given, a JPEG is decoded at 1/2, 1/4 or 1/8 scale, the
    strongest reduction that keeps its shorter side >= min_side (data
    prep's `reduction_factor`): less memory and time, and data prep's pixels.
    """
    header = read_header(image_bytes, tf.image.extract_jpeg_shape)
    ok, problem = image_problem(image_bytes, header)
    with tf.control_dependencies([tf.debugging.Assert(ok, [tf.strings.join(["image ", problem])])]):
        checked = tf.identity(image_bytes)
    fmt, gif_end, shape = header.format, header.gif_end, header.shape

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


class Header(NamedTuple):
    """What the bytes say about their decoding, read without decoding:
    format (image_header.JPEG, ...), shape [height, width] int64 (-1 when
    unreadable), gif_end (first_gif_frame's end, -1 for other formats) and
    parts: the JPEG's scans or the PNG's compressed text chunks (0 for
    other formats), counted up to their limit + 1."""
    format: tf.Tensor
    shape: tf.Tensor
    gif_end: tf.Tensor
    parts: tf.Tensor


@graph_code
def read_header(image_bytes: tf.Tensor, jpeg_shape) -> Header:
    """The Header of encoded bytes; `jpeg_shape` reads a JPEG's size
    (tf.image.extract_jpeg_shape, which raises on a corrupt header)."""
    fmt = image_header.image_format(image_bytes)
    gif_end, gif_shape = tf.cond(
        tf.equal(fmt, GIF), lambda: image_header.first_gif_frame(image_bytes),
        lambda: (tf.constant(-1), tf.constant([-1, -1], tf.int64)))
    shape = tf.switch_case(fmt, [
        lambda: tf.cast(jpeg_shape(image_bytes)[:2], tf.int64),
        lambda: image_header.png_shape(image_bytes),
        lambda: gif_shape,
        lambda: image_header.bmp_shape(image_bytes),
        lambda: tf.constant([-1, -1], tf.int64),
    ])
    parts = tf.switch_case(fmt, [
        lambda: image_header.jpeg_scans(image_bytes),
        lambda: image_header.png_text_chunks(image_bytes),
    ], default=lambda: tf.constant(0))
    return Header(fmt, shape, gif_end, parts)


@graph_code
def image_problem(image_bytes: tf.Tensor, header: Header):
    """(ok, problem): ok is False when the image must not be decoded, and
    problem (string scalar) then says why, as a phrase after "image":
    "is an empty string", "is 60000x60000 pixels, more than ...", "has 4000
    JPEG scans, ...". The checks bound what the decoder allocates (pixels)
    and the work it does (JPEG scans, PNG text chunks, GIF blocks)."""
    fmt, shape, parts = header.format, header.shape, header.parts
    height, width = shape[0], shape[1]
    fmt_name = tf.gather(tf.constant(image_header.FORMAT_NAMES + ("",)), fmt)
    # (each side first: PNG sides are 32-bit, their product can overflow int64)
    multi_scan = tf.equal(fmt, JPEG) & (parts > 1)
    max_pixels = tf.where(tf.equal(fmt, JPEG), tf.where(
        multi_scan, tf.constant(MAX_MULTI_SCAN_JPEG_PIXELS, tf.int64), MAX_PIXELS),
        MAX_LOSSLESS_PIXELS)
    which = tf.where(tf.equal(fmt, JPEG), tf.where(
        multi_scan, " (the limit for a progressive or multi-scan JPEG)", " (the limit)"),
        " (the limit for PNG, GIF and BMP)")
    pixels_ok = (height <= max_pixels) & (width <= max_pixels) & (height * width <= max_pixels)
    allowed_scans = tf.minimum(tf.constant(image_header.MAX_JPEG_SCANS, tf.int64),
                               JPEG_SCAN_PIXELS // tf.maximum(height * width, 1))
    checks = [
        (tf.strings.length(image_bytes) > 0, tf.constant("is an empty string")),
        (tf.not_equal(fmt, UNKNOWN), tf.constant(
            "is not a JPEG, PNG, GIF or BMP image (unrecognised leading bytes)")),
        (~image_header.gif_too_long(header.gif_end), tf.constant(
            "has more than " + str(image_header.GIF_MAX_STEPS) + " GIF blocks or sub-blocks "
            "before its first image ends (the limit bounds decoding work)")),
        (height >= 0, tf.strings.join(["has a truncated or corrupt ", fmt_name, " header"])),
        (pixels_ok, tf.strings.join([tf.strings.format(
            "is {}x{} pixels, more than {} pixels", (width, height, max_pixels)), which])),
        (height * width > 0, tf.strings.format("has a zero dimension ({}x{})", (width, height))),
        (~tf.equal(fmt, JPEG) | (tf.cast(parts, tf.int64) <= allowed_scans), tf.strings.join([
            "has ", _at_least(parts, image_header.MAX_JPEG_SCANS), " JPEG scans; ",
            tf.strings.as_string(allowed_scans), " are allowed at ",
            tf.strings.as_string(width), "x", tf.strings.as_string(height),
            " pixels (each scan is a pass over the whole image)"])),
        (~tf.equal(fmt, PNG) | (parts <= image_header.MAX_PNG_TEXT_CHUNKS), tf.constant(
            "has more than " + str(image_header.MAX_PNG_TEXT_CHUNKS) + " compressed PNG text "
            "chunks (zTXt/iTXt; each is inflated when decoding)")),
    ]
    problem = tf.constant("")
    for ok, message in reversed(checks):  # the first failing check wins
        problem = tf.where(ok, problem, message)
    ok = tf.reduce_all(tf.stack([ok for ok, _ in checks]))
    return ok, problem


def _at_least(count: tf.Tensor, limit: int) -> tf.Tensor:
    """A count counted up to limit + 1, as text: "101" reads "more than 100"."""
    return tf.where(count > limit, tf.constant(f"more than {limit}"),
                    tf.strings.as_string(count))


@graph_code
def safe_image_problem(image_bytes: tf.Tensor):
    """`image_problem` computed without raising, even on a JPEG whose header
    libjpeg cannot read: for explaining a refused image."""
    return image_problem(image_bytes, read_header(image_bytes, _jpeg_shape_or_unreadable))


def _jpeg_shape_or_unreadable(image_bytes: tf.Tensor) -> tf.Tensor:
    """libjpeg's header size, or [-1, -1, -1] where extract_jpeg_shape would
    raise (tf.data's ignore_errors is the graph's only way to catch it)."""
    shapes = tf.data.Dataset.from_tensors(image_bytes).map(
        tf.image.extract_jpeg_shape).ignore_errors()
    fallback = tf.data.Dataset.from_tensors(tf.constant([-1, -1, -1]))
    return shapes.concatenate(fallback).take(1).get_single_element()

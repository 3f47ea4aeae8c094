"""What encoded image bytes say about themselves, read without decoding any
pixel: the format (from the leading bytes), the size the decoder will
allocate (from the header), and where a GIF's first frame ends.

All in TensorFlow ops, since they run inside the serving graph, and none of
them fails on bad bytes: they answer UNKNOWN or -1 instead, so that
`preprocessing.decode_rgb` can refuse an image before its decoder starts and
the serving signatures can say why an image of a batch was refused.

Sizes are the decoder's own: a GIF decodes to its first frame's size (with
`first_gif_frame` the decoder only ever sees that frame), a BMP to the
int32 width and height at bytes 18 and 22, as TensorFlow's BMP decoder reads
them. JPEG sizes come from libjpeg itself (`tf.image.extract_jpeg_shape`).
"""

from __future__ import annotations

import tensorflow as tf

JPEG, PNG, GIF, BMP, UNKNOWN = 0, 1, 2, 3, 4
FORMAT_NAMES = ("JPEG", "PNG", "GIF", "BMP")

_MAGIC = {
    JPEG: (b"\xff\xd8\xff",),
    PNG: (b"\x89PNG\r\n\x1a\n",),
    GIF: (b"GIF87a", b"GIF89a"),
    BMP: (b"BM",),
}
_HEAD_BYTES = 32
GIF_TRAILER = b"\x3b"
# first_gif_frame's loop: a step skips up to GIF_RUN full data sub-blocks
# (64 KB), so real GIFs take tens of steps; crafted ones of tiny
# sub-blocks stop after GIF_MAX_STEPS (a bounded cost per image).
GIF_RUN = 256
GIF_MAX_STEPS = 2048
# Decode work bounds, checked with the pixels before decoding (`decode`):
# JPEG scans whatever the image's size (real progressive JPEGs have about
# 10, libjpeg's and mozjpeg's scripts; baseline ones 1 to 3), and
# compressed PNG text chunks (zTXt, iTXt; real files carry a few).
MAX_JPEG_SCANS = 100
# Marker segments followed from the start to the first scan (real files
# have about 5 to 20: APPn, DQT, SOF, DHT); past it every SOS counts.
MAX_JPEG_SEGMENTS = 256
MAX_PNG_TEXT_CHUNKS = 8
# first_gif_frame's modes: before a block, in an extension's or the
# image's data sub-blocks, done, failed.
_BLOCK, _EXTENSION, _IMAGE, _DONE, _FAILED = 0, 1, 2, 3, 4


def leading_bytes(image_bytes: tf.Tensor, count: int = _HEAD_BYTES) -> tf.Tensor:
    """The first `count` bytes as int32 [count], zero-padded when shorter."""
    head = tf.io.decode_raw(tf.strings.substr(image_bytes, 0, count), tf.uint8)
    head = tf.cast(head, tf.int32)
    return tf.pad(head, [[0, count - tf.size(head)]])


def image_format(image_bytes: tf.Tensor) -> tf.Tensor:
    """JPEG, PNG, GIF, BMP or UNKNOWN (int32 scalar), from the magic bytes."""
    head = leading_bytes(image_bytes, 8)
    found = tf.constant(UNKNOWN)
    for fmt in (BMP, GIF, PNG, JPEG):
        matches = [tf.reduce_all(tf.equal(head[:len(m)], list(m))) for m in _MAGIC[fmt]]
        found = tf.where(tf.reduce_any(tf.stack(matches)), fmt, found)
    return found


def _little_endian(head, offset: int, count: int) -> tf.Tensor:
    return sum(tf.cast(head[offset + i], tf.int64) * 256 ** i for i in range(count))


def _big_endian(head, offset: int, count: int) -> tf.Tensor:
    return sum(tf.cast(head[offset + i], tf.int64) * 256 ** (count - 1 - i)
               for i in range(count))


def png_shape(image_bytes: tf.Tensor) -> tf.Tensor:
    """[height, width] int64 from the IHDR chunk, or [-1, -1] without one."""
    head = leading_bytes(image_bytes)
    has_ihdr = tf.reduce_all(tf.equal(head[12:16], list(b"IHDR")))
    shape = tf.stack([_big_endian(head, 20, 4), _big_endian(head, 16, 4)])
    return tf.where(has_ihdr & (tf.strings.length(image_bytes) >= 24), shape, -1)


def bmp_shape(image_bytes: tf.Tensor) -> tf.Tensor:
    """[|height|, width] int64 as TF's BMP decoder reads them (signed int32
    at bytes 22 and 18; a negative height means top-down rows)."""
    head = leading_bytes(image_bytes)

    def signed(offset):
        value = _little_endian(head, offset, 4)
        return tf.where(value >= 2 ** 31, value - 2 ** 32, value)

    shape = tf.stack([tf.abs(signed(22)), signed(18)])
    return tf.where(tf.strings.length(image_bytes) >= 26, shape, -1)


def first_gif_frame(image_bytes: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """(end, [height, width]) of a GIF's first image: `end` is the byte offset
    just after its last data sub-block, so `substr(0, end) + GIF_TRAILER` is
    a one-frame GIF. TF's GIF decoder makes even the first frame as large as
    the largest frame, and reads every frame's pixels first, so a 1x1 frame
    followed by a 6000x6000 one, 27 KB, would decode to 108 MB, one of
    65535x65535 to 12.9 GB. Both are -1 when the block structure cannot be
    followed (truncated, or not a GIF), and -2 when it takes more than
    GIF_MAX_STEPS steps (`gif_too_long`).

    One loop step per block, or per data sub-block that is not full; runs
    of full (255-byte) sub-blocks, what encoders write, take one step per
    GIF_RUN of them. Each step reads one window of the bytes (`substr`):
    nothing the size of the image is copied or widened.
    """
    size = tf.strings.length(image_bytes)
    window_size = 256 * GIF_RUN + 16

    def read(at):
        """int32 [window_size]: the bytes from `at` (<= size), zeros past the end."""
        window = tf.strings.substr(image_bytes, at, window_size)
        return tf.io.decode_raw(window, tf.uint8, fixed_length=window_size)

    def head(at, count=16):
        return tf.cast(tf.io.decode_raw(tf.strings.substr(image_bytes, at, count), tf.uint8,
                                        fixed_length=count), tf.int32)

    start = 13 + _colour_table_bytes(head(0)[10])  # after the screen's colour table
    run_offsets = 256 * tf.range(GIF_RUN)

    def step(pos, mode, height, width):
        at = tf.minimum(pos, size)
        window = read(at)
        data = tf.cast(window[:16], tf.int32)
        byte = data[0]
        opens_extension = tf.equal(mode, _BLOCK) & tf.equal(byte, 0x21)
        opens_image = tf.equal(mode, _BLOCK) & tf.equal(byte, 0x2C)
        in_data = tf.equal(mode, _EXTENSION) | tf.equal(mode, _IMAGE)
        # image descriptor: 0x2C, left, top, width, height (LE16 each), flags;
        # then the local colour table and the LZW minimum code size byte.
        image_start = at + 10 + _colour_table_bytes(data[9]) + 1
        # full sub-blocks from here: 255 then 255 bytes, wholly inside the data
        ahead = at + run_offsets
        full = (tf.equal(tf.gather(window, run_offsets), 255) & (ahead + 256 <= size))
        full_run = tf.argmin(tf.concat([tf.cast(full, tf.int32), [0]], 0), output_type=tf.int32)
        next_pos = tf.where(opens_extension, pos + 2, tf.where(
            opens_image, image_start, tf.where(in_data, pos + tf.where(
                full_run > 0, 256 * full_run, 1 + byte), pos)))
        ends_data = in_data & tf.equal(byte, 0)
        next_mode = tf.where(opens_extension, _EXTENSION, tf.where(
            opens_image, _IMAGE, tf.where(
                ends_data, tf.where(tf.equal(mode, _IMAGE), _DONE, _BLOCK),
                tf.where(in_data, mode, _FAILED))))
        next_mode = tf.where(next_pos > size, _FAILED, next_mode)
        height = tf.where(opens_image, data[7] + 256 * data[8], height)
        width = tf.where(opens_image, data[5] + 256 * data[6], width)
        return next_pos, next_mode, height, width

    pos, mode, height, width = tf.while_loop(
        lambda pos, mode, h, w: mode < _DONE, step,
        (start, tf.constant(_BLOCK), tf.constant(-1), tf.constant(-1)),
        maximum_iterations=GIF_MAX_STEPS)
    done = tf.equal(mode, _DONE)
    failed = tf.where(mode < _DONE, -2, -1)  # still walking after GIF_MAX_STEPS: too long
    shape = tf.cast(tf.stack([height, width]), tf.int64)
    return tf.where(done, pos, failed), tf.where(done, shape, tf.cast(failed, tf.int64))


def gif_too_long(end: tf.Tensor) -> tf.Tensor:
    """True when `first_gif_frame` gave up after GIF_MAX_STEPS steps."""
    return tf.equal(end, -2)


def _count(image_bytes: tf.Tensor, marker: bytes, limit: int) -> tf.Tensor:
    """How many times `marker` occurs in the bytes, counted up to limit + 1
    (int32). The split copies the bytes once, in at most limit + 2 pieces:
    nothing is widened."""
    pieces = tf.strings.split(image_bytes, sep=marker, maxsplit=limit + 1)
    return tf.size(pieces, out_type=tf.int32) - 1


def jpeg_scans(image_bytes: tf.Tensor) -> tf.Tensor:
    """The scans (SOS markers, FF DA) of the JPEG's own image, from its
    first scan to its end (EOI, FF D9), counted up to MAX_JPEG_SCANS + 1.
    A thumbnail in an APPn segment before it, or images appended after it
    (phones' MPF), are not the decoder's work. Entropy-coded data never
    holds FF DA or FF D9 (an FF there is followed by 00 or a restart
    marker). libjpeg walks every block of the image once per scan, so
    scans x pixels is its work (libjpeg-turbo's LJT-01-003); more than one
    scan also makes it keep every coefficient of the image in memory."""
    first_scan = _jpeg_first_scan(image_bytes)
    # When the header's segments cannot be followed, every SOS counts.
    image = tf.strings.substr(image_bytes, tf.maximum(first_scan, 0), tf.strings.length(
        image_bytes))
    image = tf.strings.split(image, sep=b"\xff\xd9", maxsplit=1)[0]
    return _count(image, b"\xff\xda", MAX_JPEG_SCANS)


def _jpeg_first_scan(image_bytes: tf.Tensor) -> tf.Tensor:
    """Offset of the first SOS marker, found by following the marker
    segments' lengths from the start (so bytes inside APPn segments are
    skipped), or -1 when that walk does not reach one within
    MAX_JPEG_SEGMENTS segments."""
    size = tf.strings.length(image_bytes)

    def step(pos, found):
        head = tf.cast(tf.io.decode_raw(tf.strings.substr(image_bytes, tf.minimum(pos, size), 4),
                                        tf.uint8, fixed_length=4), tf.int32)
        marker = head[1]
        standalone = (tf.equal(marker, 0xD8) | tf.equal(marker, 0x01)
                      | ((marker >= 0xD0) & (marker <= 0xD7)))
        fill = tf.equal(marker, 0xFF)  # FF fill bytes may precede a marker
        next_pos = tf.where(fill, pos + 1, tf.where(standalone, pos + 2,
                                                    pos + 2 + 256 * head[2] + head[3]))
        is_scan = tf.equal(head[0], 0xFF) & tf.equal(marker, 0xDA) & (pos + 4 <= size)
        lost = ~tf.equal(head[0], 0xFF) | (next_pos > size)
        return tf.where(is_scan | lost, pos, next_pos), tf.where(
            is_scan, 1, tf.where(lost, -1, 0))

    pos, found = tf.while_loop(lambda pos, found: tf.equal(found, 0), step,
                               (tf.constant(0), tf.constant(0)),
                               maximum_iterations=MAX_JPEG_SEGMENTS)
    return tf.where(tf.equal(found, 1), pos, -1)


def png_text_chunks(image_bytes: tf.Tensor) -> tf.Tensor:
    """zTXt and iTXt chunk types in a PNG, up to MAX_PNG_TEXT_CHUNKS + 1 each:
    libpng inflates every compressed text chunk (up to 8 MB each, ~30 ms),
    even after the image data."""
    return (_count(image_bytes, b"zTXt", MAX_PNG_TEXT_CHUNKS)
            + _count(image_bytes, b"iTXt", MAX_PNG_TEXT_CHUNKS))


def _colour_table_bytes(flags: tf.Tensor) -> tf.Tensor:
    """Size of the colour table a GIF screen/image descriptor's flags announce."""
    return tf.where(flags >= 128, 3 * tf.bitwise.left_shift(2, flags & 7), 0)

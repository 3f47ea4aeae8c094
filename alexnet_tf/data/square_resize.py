"""Data prep's resize in TensorFlow ops: the centre square of an image, in
source pixels, to `size` x `size`, with the filter `data_prep.convert`
uses, so that serving and evaluation on original photos see the pixels
data prep would have stored (before its JPEG encoding).

By the shrink factor s = shorter side / size, as `convert.resize_and_crop`:
- s == 1: the centre square as is (a stored record passes through exactly);
- 1 < s < 2: the centre square in whole pixels, a 3-tap prefilter of
  variance (s^2 - 1) / 6 (edge pixels repeated), rounded to uint8, then
  bilinear interpolation;
- s >= 2: the exact antialiased bilinear filter (a triangle widened by s)
  over the centre square at its fractional position, reading the pixels
  just outside it, as Pillow's `resize(box=...)`;
- s < 1: bilinear interpolation of the centre square in whole pixels.
Every result is rounded to whole levels, as data prep stores uint8.

Nothing larger than the source or the output is allocated: the square is
cut before any resampling.
"""

from __future__ import annotations

import tensorflow as tf

IDENTITY, PREFILTER, EXACT, ENLARGE = 0, 1, 2, 3


def resize_centre_square(image: tf.Tensor, size: int) -> tf.Tensor:
    """uint8 [H, W, 3] -> float32 [size, size, 3] of whole levels 0..255."""
    shape = tf.shape(image)
    height, width = shape[0], shape[1]
    shorter = tf.minimum(height, width)
    scale = tf.cast(shorter, tf.float32) / size
    case = tf.where(tf.equal(shorter, size), IDENTITY, tf.where(
        scale >= 2.0, EXACT, tf.where(scale > 1.0, PREFILTER, ENLARGE)))
    top, left = (height - shorter) // 2, (width - shorter) // 2
    square = lambda: image[top:top + shorter, left:left + shorter]  # noqa: E731
    resized = tf.switch_case(case, [
        lambda: tf.cast(square(), tf.float32),
        lambda: _bilinear(_prefilter(square(), scale), size),
        lambda: _exact(image, size),
        lambda: _bilinear(square(), size),
    ])
    resized = tf.round(resized)
    resized.set_shape([size, size, 3])
    return resized


def _prefilter(square: tf.Tensor, scale: tf.Tensor) -> tf.Tensor:
    """[tap, 1 - 2 tap, tap] along both axes, tap = (s^2 - 1) / 12: the
    variance the triangle filter of width s adds over bilinear. uint8 out,
    as data prep's OpenCV filter writes it."""
    tap = (scale * scale - 1.0) / 12.0
    pixels = tf.cast(square, tf.float32)
    for axis in (0, 1):
        before = tf.concat([_take(pixels, axis, 0, 1), _take(pixels, axis, 0, -1)], axis)
        after = tf.concat([_take(pixels, axis, 1, None), _take(pixels, axis, -1, None)], axis)
        pixels = (1.0 - 2.0 * tap) * pixels + tap * (before + after)
    return tf.round(pixels)


def _take(tensor: tf.Tensor, axis: int, start, stop) -> tf.Tensor:
    return tensor[start:stop] if axis == 0 else tensor[:, start:stop]


def _bilinear(square: tf.Tensor, size: int) -> tf.Tensor:
    """Plain bilinear on pixel centres (OpenCV's INTER_LINEAR)."""
    return tf.image.resize(tf.cast(square, tf.float32), [size, size], method="bilinear",
                           antialias=False)


def _exact(image: tf.Tensor, size: int) -> tf.Tensor:
    """The triangle filter of width s over the centre square at its
    fractional offset ((H - shorter) / 2 may end in .5), from a window that
    adds the filter's reach around the square."""
    shape = tf.shape(image)
    height, width = shape[0], shape[1]
    shorter = tf.cast(tf.minimum(height, width), tf.float32)
    reach = tf.cast(tf.math.ceil(shorter / size), tf.int32) + 1
    origin = (tf.cast(tf.stack([height, width]), tf.float32) - shorter) / 2.0
    start = tf.maximum(tf.cast(tf.floor(origin), tf.int32) - reach, 0)
    stop = tf.minimum(tf.cast(tf.math.ceil(origin + shorter), tf.int32) + reach,
                      tf.stack([height, width]))
    window = image[start[0]:stop[0], start[1]:stop[1]]
    factor = size / shorter
    translation = -(origin - tf.cast(start, tf.float32)) * factor
    return tf.raw_ops.ScaleAndTranslate(
        images=window[tf.newaxis], size=tf.constant([size, size]),
        scale=tf.stack([factor, factor]), translation=translation,
        kernel_type="triangle", antialias=True)[0]

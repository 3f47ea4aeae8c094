"""The serving signatures' input checks: every bad request is refused with
InvalidArgumentError saying what is wrong and, in a batch, which item (the
whole batch fails, as TF Serving's batches do). Messages name the
signature's input, e.g. "image_bytes[2] is an empty string".

- a batch is not empty and holds at most MAX_BATCH items (each image costs
  a fixed amount of memory after decoding; a request of many tiny images
  would otherwise multiply it);
- every string is at most the export's max_image_bytes long (a classify
  Example, budget.EXAMPLE_OVERHEAD_BYTES more), checked on the lengths
  alone before any op copies or widens the bytes: with the header checks
  of `decode` (pixels, JPEG scans, PNG text chunks, GIF blocks), the work
  and memory of a request are bounded by construction;
- encoded images are decoded one by one inside tf.data with ignore_errors,
  the only way a graph can catch a decoder's error, so the first image that
  failed is known and explained (`decode.safe_image_problem`); a failure
  whose header was fine is reported as corrupt data (inside ignore_errors
  an allocation failure could not be told apart from it, but the decoded
  size was checked against the pixel limit first);
- float images have the model's shape, and finite values in 0..255;
- classify inputs are serialized tf.Examples (`example_wire`, which reads
  a few bytes at a time), each parsed alone when its turn to be decoded
  comes, so the batch's bytes are never copied as a whole.
"""

from __future__ import annotations

import tensorflow as tf

from alexnet_tf.data import decode, image_header, records
from alexnet_tf.serving import budget, example_wire

MAX_BATCH = 256


def _refuse_unless(ok: tf.Tensor, message: tf.Tensor) -> tf.Operation:
    return tf.debugging.Assert(ok, [message])


def _first(flags: tf.Tensor) -> tf.Tensor:
    """Index of the first True in a bool vector (its length when none)."""
    with_end = tf.concat([tf.cast(flags, tf.int32), [1]], 0)  # never empty for argmax
    return tf.argmax(with_end, output_type=tf.int32)


def check_batch_size(batch: tf.Tensor, name: str) -> tf.Tensor:
    """`batch` once its first dimension is known to be 1..MAX_BATCH."""
    count = tf.shape(batch)[0]
    ok = (count > 0) & (count <= MAX_BATCH)
    message = tf.where(count > 0, tf.strings.format(
        name + " holds {} items, more than the " + str(MAX_BATCH) + " a request may hold",
        count), tf.constant(f"{name} is an empty batch: send at least one item"))
    with tf.control_dependencies([_refuse_unless(ok, message)]):
        return tf.identity(batch)


def check_byte_lengths(strings: tf.Tensor, max_bytes: int, name: str, what: str) -> tf.Tensor:
    """`strings` once each is at most `max_bytes` long, else refused naming
    the first longer one. Only the lengths are read: this runs before any
    op copies or widens the bytes, so a request's cost is bounded by
    construction."""
    lengths = tf.strings.length(strings)
    too_long = lengths > max_bytes
    bad = tf.minimum(_first(too_long), tf.size(lengths) - 1)
    message = tf.strings.format(
        name + "[{}] is {} bytes, more than the " + f"{max_bytes:,}" + " bytes " + what
        + " may have (max_image_bytes, set at export)", (bad, lengths[bad]))
    with tf.control_dependencies([_refuse_unless(~tf.reduce_any(too_long), message)]):
        return tf.identity(strings)


def decode_images(image_bytes: tf.Tensor, view, view_shape, name: str,
                  max_bytes: int) -> tf.Tensor:
    """[N] encoded images -> float32 [N, *view_shape] by `view` (one image's
    bytes -> float32 view_shape); refuses the batch naming the first image
    that is longer than `max_bytes` or could not be decoded, and why."""
    image_bytes = check_batch_size(image_bytes, name)
    image_bytes = check_byte_lengths(image_bytes, max_bytes, name, "an image")
    return _each(image_bytes, view, view_shape,
                 lambda data, index: _why_not_decoded(data, index, name))


def decode_examples(serialized: tf.Tensor, view, view_shape, name: str,
                    max_bytes: int) -> tf.Tensor:
    """[N] serialized tf.Examples -> float32 [N, *view_shape] of their
    `image/encoded` by `view`, refusing the batch at the first string that is
    too long, is not a tf.Example, or has no image that can be decoded.
    Each Example is parsed alone, when its turn comes: no copy of the whole
    batch's bytes is ever made."""
    serialized = check_batch_size(serialized, name)
    serialized = check_byte_lengths(serialized, max_bytes + budget.EXAMPLE_OVERHEAD_BYTES, name,
                                    "a tf.Example")
    status = example_wire.example_status(serialized)
    bad = tf.minimum(_first(tf.not_equal(status, example_wire.VALID)), tf.size(status) - 1)
    message = tf.where(
        tf.equal(status[bad], example_wire.TOO_MANY_FIELDS),
        tf.strings.format(name + "[{}] has more than " + str(example_wire.MAX_FIELDS)
                          + " fields or features", bad),
        tf.strings.format(name + "[{}] is not a serialized tf.Example", bad))
    ok = tf.reduce_all(tf.equal(status, example_wire.VALID))
    with tf.control_dependencies([_refuse_unless(ok, message)]):
        serialized = tf.identity(serialized)

    def one(example):
        encoded = _encoded_image(example)
        usable = (tf.strings.length(encoded) > 0) & (tf.strings.length(encoded) <= max_bytes)
        with tf.control_dependencies([_refuse_unless(usable, tf.constant("no usable image"))]):
            return view(tf.identity(encoded))

    return _each(serialized, one, view_shape,
                 lambda example, index: _why_example_not_decoded(example, index, name, max_bytes))


def _each(items: tf.Tensor, view, view_shape, explain) -> tf.Tensor:
    """`view` applied to the items one by one inside tf.data with
    ignore_errors (the only way a graph can catch an op's error), stacked;
    refused with `explain(item, index)` of the first item that failed."""
    count = tf.shape(items)[0]
    views = tf.data.Dataset.from_tensor_slices((tf.range(count), items)).map(
        lambda i, data: (i, view(data))).ignore_errors()
    # A placeholder after the images, so the batch below is never empty.
    placeholder = tf.data.Dataset.from_tensors((tf.constant(-1), tf.zeros(view_shape)))
    decoded_at, decoded = views.concatenate(placeholder).batch(MAX_BATCH + 1).get_single_element()
    decoded_at, decoded = decoded_at[:-1], decoded[:-1]
    missing = _first(tf.not_equal(decoded_at, tf.range(tf.size(decoded_at))))
    bad = tf.minimum(missing, count - 1)
    complete = tf.equal(tf.size(decoded_at), count)
    message = tf.cond(complete, lambda: tf.constant(""), lambda: explain(items[bad], bad))
    with tf.control_dependencies([_refuse_unless(complete, message)]):
        return tf.identity(decoded)


_ENCODED_SPEC = {records.ENCODED: tf.io.FixedLenFeature([], tf.string, default_value="")}


def _encoded_image(example: tf.Tensor) -> tf.Tensor:
    """One serialized Example's image/encoded ("" when it has none)."""
    return tf.io.parse_single_example(example, _ENCODED_SPEC)[records.ENCODED]


def _why_example_not_decoded(example, index, name, max_bytes) -> tf.Tensor:
    # parse_single_example's own error (a wrong type, several values) is
    # caught the only way a graph can: inside tf.data, with ignore_errors.
    parsed = tf.data.Dataset.from_tensors(example).map(
        lambda e: (True, _encoded_image(e))).ignore_errors()
    fallback = tf.data.Dataset.from_tensors((False, tf.constant("")))
    parsed_ok, encoded = parsed.concatenate(fallback).take(1).get_single_element()
    length = tf.strings.length(encoded)
    prefix = tf.strings.format(name + "[{}] ", index)
    return tf.where(~parsed_ok, tf.strings.join([
        prefix, "has an " + records.ENCODED + " feature that is not one bytes value"]),
        tf.where(tf.equal(length, 0), tf.strings.join([
            prefix, "has no " + records.ENCODED + " feature (or it is empty)"]),
            tf.where(length > max_bytes, tf.strings.join([
                prefix, tf.strings.format(
                    "has an " + records.ENCODED + " of {} bytes, more than the " + f"{max_bytes:,}"
                    + " bytes an image may have (max_image_bytes, set at export)", length)]),
                _why_not_decoded(encoded, index, name))))


@tf.function(input_signature=[tf.TensorSpec([], tf.string)], autograph=False)
def _decode_problem(data: tf.Tensor):
    """(ok, problem, format name) of one image's bytes. One function that
    every signature of every export calls: the header checks are traced
    once per process instead of once per signature."""
    ok, problem = decode.safe_image_problem(data)
    fmt = tf.gather(tf.constant(image_header.FORMAT_NAMES + ("",)),
                    image_header.image_format(data))
    return ok, problem, fmt


def _why_not_decoded(data: tf.Tensor, index: tf.Tensor, name: str) -> tf.Tensor:
    ok, problem, fmt = _decode_problem(data)
    corrupt = tf.strings.join(["could not be decoded: its ", fmt,
                               " data is corrupt or truncated"])
    return tf.strings.join([tf.strings.format(name + "[{}] ", index),
                            tf.where(ok, corrupt, problem)])


def check_images(images: tf.Tensor, size: int, name: str) -> tf.Tensor:
    """float32 [N, size, size, 3] RGB 0..255, or refused: the shape names the
    expected one, bad values name the first bad image."""
    shape = tf.shape(images)
    padded = tf.concat([shape, tf.fill([4], -1)], 0)[:4]
    shape_ok = tf.equal(tf.size(shape), 4) & tf.reduce_all(tf.equal(padded[1:], [size, size, 3]))
    message = tf.strings.format(
        f"{name} must be float32 [N, {size}, {size}, 3] (RGB, 0..255), got shape {{}}", shape)
    with tf.control_dependencies([_refuse_unless(shape_ok, message)]):
        images = tf.ensure_shape(tf.identity(images), [None, size, size, 3])
    images = check_batch_size(images, name)
    finite = tf.reduce_all(tf.math.is_finite(images), axis=[1, 2, 3])
    in_range = tf.reduce_all((images >= 0.0) & (images <= 255.0), axis=[1, 2, 3])
    bad = tf.minimum(_first(~(finite & in_range)), tf.shape(images)[0] - 1)
    message = tf.cond(
        tf.reduce_all(finite & in_range), lambda: tf.constant(""),
        lambda: tf.where(finite[bad], tf.strings.format(
            name + "[{}] has values outside 0..255 (min {}, max {}): send RGB pixels "
            "on the 0..255 scale", (bad, tf.reduce_min(images[bad]), tf.reduce_max(images[bad]))),
            tf.strings.format(name + "[{}] has non-finite values (NaN or infinity)", bad)))
    with tf.control_dependencies([_refuse_unless(tf.reduce_all(finite & in_range), message)]):
        return tf.identity(images)



"""Is this string a serialized tf.Example? Answered in TF ops, without
raising, before `tf.io.parse_example` sees it.

parse_example refuses a malformed Example with "Could not parse example
input, value: '<the raw bytes>'": given a JPEG or random bytes, that message
is not valid UTF-8, and clients fail decoding it (Python raises
UnicodeDecodeError instead of the InvalidArgumentError). This walk accepts
exactly the structure TF's fast Example parser accepts (its
`ParseExample`, `ParseFeatures` and `ParseFeatureMapEntry`), so whatever
passes it reaches parse_example's other, clean messages.

The structure, in protobuf wire format:
- Example: any sequence of fields; each field 1, length-delimited and
  tagged with the single byte 0x0A, is a Features message; any other field
  of wire type 0, 1, 2 or 5 is skipped (a length past the end stops at the
  end, as TF's stream does).
- Features: a sequence of 0x0A-tagged map entries, nothing else.
- map entry: exactly two length-delimited fields, each the key (field 1)
  or the value (field 2); the value's contents are checked by parse_example.
Nested lengths are clipped to the enclosing one, as protobuf's limits are.
"""

from __future__ import annotations

import tensorflow as tf

VALID, MALFORMED, TOO_MANY_FIELDS = 0, 1, 2
# One loop step per top-level field or feature, for all the batch's strings
# at once: real Examples have tens; more is refused rather than walked.
MAX_FIELDS = 1000

_EXAMPLE, _FEATURES, _DONE = 0, 1, 2
_FEATURES_TAG, _KEY_TAG, _VALUE_TAG = 0x0A, 0x0A, 0x12


def example_status(serialized: tf.Tensor) -> tf.Tensor:
    """VALID, MALFORMED or TOO_MANY_FIELDS (int32 [N]) for strings [N]."""
    walk = _Walk(serialized)
    start = (walk.begin, tf.zeros_like(walk.begin, tf.int32), walk.size,
             tf.ones_like(walk.begin, tf.bool), tf.constant(0))
    _, level, _, ok, _ = tf.while_loop(
        lambda pos, level, end, ok, steps: tf.reduce_any(ok & (level < _DONE))
        & (steps < MAX_FIELDS), walk.step, start)
    return tf.where(~ok, MALFORMED, tf.where(tf.equal(level, _DONE), VALID, TOO_MANY_FIELDS))


class _Walk:
    """All strings walked at once, one field each per step. Bytes are read
    in windows of a few bytes at a time (`substr`), never copied or widened
    whole: the walk's memory does not grow with the request's bytes."""

    def __init__(self, serialized: tf.Tensor):
        self.serialized = serialized
        self.size = tf.cast(tf.strings.length(serialized), tf.int64)  # each string's end
        self.begin = tf.zeros_like(self.size)

    def window(self, pos, count: int):
        """int64 [N, count]: each string's bytes from pos, zeros past its end."""
        pos = tf.minimum(pos, self.size)  # substr refuses a start past the end
        bytes_ = tf.strings.substr(self.serialized, pos, tf.fill(tf.shape(pos), tf.constant(
            count, tf.int64)))
        return tf.cast(tf.io.decode_raw(bytes_, tf.uint8, fixed_length=count), tf.int64)

    def varint(self, pos, end):
        """(value mod 2^32, position after it, ok): protobuf's ReadVarint32.
        Bytes at or past `end` never make a varint ok, whatever they are."""
        window = self.window(pos, 10)
        stops = window < 128
        length = tf.argmax(tf.cast(stops, tf.int32), axis=1, output_type=tf.int64) + 1
        complete = tf.reduce_any(stops, axis=1) & (pos + length <= end)
        digits = tf.where(tf.range(5, dtype=tf.int64) < length[:, None], window[:, :5] % 128, 0)
        value = tf.reduce_sum(digits * 128 ** tf.range(5, dtype=tf.int64), axis=1) % 2 ** 32
        return value, pos + length, complete

    def skip_field(self, pos):
        """An Example field other than Features: (next position, ok)."""
        size = self.size
        tag, pos, ok = self.varint(pos, size)
        wire_type = tag % 8
        _, after_varint, varint_ok = self.varint(pos, size)
        length, after_length, length_ok = self.varint(pos, size)
        # CodedInputStream::Skip takes an int: a length of 2^31 or more is
        # negative there, refused, and the stream stays after the length.
        skipped_to = tf.where(length >= 2 ** 31, after_length,
                              tf.minimum(after_length + length, size))
        fixed = pos + tf.where(tf.equal(wire_type, 1), tf.constant(8, tf.int64), 4)
        next_pos = tf.where(tf.equal(wire_type, 0), after_varint,
                            tf.where(tf.equal(wire_type, 2), skipped_to, fixed))
        fine = tf.where(tf.equal(wire_type, 0), varint_ok, tf.where(
            tf.equal(wire_type, 2), length_ok,
            (tf.equal(wire_type, 1) | tf.equal(wire_type, 5)) & (fixed <= size)))
        return next_pos, ok & fine

    def map_entry(self, pos, end):
        """A 0x0A-tagged entry at pos: (position after it, ok)."""
        length, pos, ok = self.varint(pos + 1, end)
        entry_end = tf.minimum(pos + length, end)
        for _ in range(2):
            tag, pos, tag_ok = self.varint(pos, entry_end)
            field_len, pos, len_ok = self.varint(pos, entry_end)
            ok &= tag_ok & len_ok & (tf.equal(tag, _KEY_TAG) | tf.equal(tag, _VALUE_TAG))
            ok &= pos + field_len <= entry_end
            pos += field_len
        return entry_end, ok & tf.equal(pos, entry_end)

    def step(self, pos, level, features_end, ok, steps):
        """One field of every string still being walked."""
        active = ok & (level < _DONE)
        at_features = tf.equal(level, _FEATURES)
        opens = tf.equal(self.window(pos, 1)[:, 0], _FEATURES_TAG)
        # Example level: a Features field, another field, or the end.
        length, body, length_ok = self.varint(pos + 1, self.size)
        skipped, skip_ok = self.skip_field(pos)
        at_end = tf.equal(pos, self.size)
        example_pos = tf.where(at_end, pos, tf.where(opens, body, skipped))
        example_level = tf.where(at_end, _DONE, tf.where(opens, _FEATURES, _EXAMPLE))
        example_ok = at_end | tf.where(opens, length_ok, skip_ok)
        example_end = tf.minimum(body + length, self.size)
        # Features level: a map entry, or the end of the Features.
        entry_end, entry_ok = self.map_entry(pos, features_end)
        closes = tf.equal(pos, features_end)
        new = (tf.where(at_features, tf.where(closes, pos, entry_end), example_pos),
               tf.where(at_features, tf.where(closes, _EXAMPLE, _FEATURES), example_level),
               tf.where(at_features, features_end, example_end),
               ok & tf.where(at_features, closes | (opens & entry_ok), example_ok))
        old = (pos, level, features_end, ok)
        return tuple(tf.where(active, n, o) for n, o in zip(new, old)) + (steps + 1,)

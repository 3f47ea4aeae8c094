"""serving.example_wire accepts exactly what TF's own Example parser
accepts: checked on real records and on thousands of mutated, truncated and
random strings against tf.io.parse_example itself."""

import numpy as np
import tensorflow as tf

from alexnet_tf.data import records
from alexnet_tf.serving import example_wire

SPEC = {records.ENCODED: tf.io.FixedLenFeature([], tf.string, default_value="")}


# In a graph, as the serving signatures run it (eagerly, its loop would
# run op by op from Python).
status_of = tf.function(example_wire.example_status)


@tf.function
def _parse(serialized):
    return tf.io.parse_example(serialized[tf.newaxis], SPEC)[records.ENCODED]


def tf_parses(serialized: bytes) -> bool:
    """False exactly when parse_example fails at the structure level (the
    message that quotes the raw bytes); its other errors are clean."""
    try:
        _parse(tf.constant(serialized))
        return True
    except tf.errors.InvalidArgumentError as e:
        return "Could not parse example input" not in e.message
    except UnicodeDecodeError:  # that message, quoting bytes that are not UTF-8
        return False


def valid_examples(rng):
    out = [records.serialize(records.ImageRecord(rng.bytes(int(rng.integers(0, 300))), 3, 4,
                                                 int(rng.integers(0, 1000)), "n01440764",
                                                 "tench", "a.JPEG")) for _ in range(4)]
    mixed = tf.train.Example()
    mixed.features.feature["floats"].float_list.value[:] = [1.5, -2.0]
    mixed.features.feature["ints"].int64_list.value[:] = [300, -5, 2 ** 40]
    mixed.features.feature[records.ENCODED].bytes_list.value.append(b"\xff\xd8\xff")
    out += [mixed.SerializeToString(), tf.train.Example().SerializeToString(),
            out[0] + out[1]]  # concatenated Examples merge, as protobuf parses them
    return out


def mutations(rng, valid, count):
    for _ in range(count):
        data = bytearray(valid)
        kind = rng.integers(0, 4)
        if kind == 0 and data:
            data[rng.integers(0, len(data))] = rng.integers(0, 256)
        elif kind == 1:
            data = data[:rng.integers(0, len(data) + 1)]
        elif kind == 2:
            data += rng.bytes(int(rng.integers(1, 6)))
        else:
            at = rng.integers(0, len(data) + 1)
            data = data[:at] + rng.bytes(int(rng.integers(1, 4))) + data[at:]
        yield bytes(data)


def test_agrees_with_tfs_parser_on_thousands_of_strings():
    rng = np.random.default_rng(12)
    cases = []
    for valid in valid_examples(rng):
        cases.append(valid)
        cases += list(mutations(rng, valid, 120))
    cases += [rng.bytes(int(rng.integers(0, 80))) for _ in range(150)]
    cases += [b"\x0a" + rng.bytes(int(rng.integers(0, 40))) for _ in range(150)]
    cases += [b"", b"\x00\x00", b"\x0a\x00", b"\x0a\x02\x0a\x00", b"\x08" + b"\xff" * 11,
              b"\x12\xff\xff\xff\xff\x0f", b"\x0b\x00", b"\x0d\x00\x00\x00"]
    status = status_of(tf.constant(cases)).numpy()  # one batch: all at once
    ours = [s == example_wire.VALID for s in status]
    theirs = [tf_parses(c) for c in cases]
    assert 150 < sum(theirs) < len(cases) - 150  # both kinds well represented
    disagree = [c[:40] for c, a, b in zip(cases, ours, theirs) if a != b]
    assert disagree == []


def test_real_records_valid_and_images_or_noise_not():
    rng = np.random.default_rng(3)
    jpeg = tf.io.encode_jpeg(rng.integers(0, 256, (20, 20, 3), dtype=np.uint8)).numpy()
    status = status_of(tf.constant(
        valid_examples(rng) + [jpeg, rng.bytes(500), b"image/encoded"])).numpy()
    assert list(status) == [example_wire.VALID] * 7 + [example_wire.MALFORMED] * 3


def test_too_many_fields_is_its_own_answer():
    fields = b"\x08\x00" * (example_wire.MAX_FIELDS + 10)  # valid wire format
    few = b"\x08\x00" * 10
    status = status_of(tf.constant([fields, few])).numpy()
    assert list(status) == [example_wire.TOO_MANY_FIELDS, example_wire.VALID]
    assert tf_parses(fields)

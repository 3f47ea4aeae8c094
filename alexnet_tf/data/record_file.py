"""TFRecord files written without TensorFlow, so that data prep's processes
never load it (seconds and about 500 MB each).

A record is its length (uint64, little-endian), the masked CRC-32C of those
8 bytes (uint32, little-endian), the data, and the masked CRC-32C of the data
(tensorflow/core/lib/io/record_writer.h). TensorFlow's reader checks both
sums; tests/test_records.py checks these files byte for byte against
`tf.io.TFRecordWriter`'s.
"""

from __future__ import annotations

import struct

import google_crc32c

_MASK_DELTA = 0xA282EAD8
# False where the package has no wheel with its C extension: its pure Python
# is about 1,400 times slower (18 ms per 100 KB record); data prep says so.
FAST_CHECKSUMS = google_crc32c.implementation == "c"


def masked_crc32c(data: bytes) -> int:
    """CRC-32C rotated right by 15 bits plus a constant, as TFRecord stores it."""
    crc = google_crc32c.value(data)
    return (((crc >> 15) | (crc << 17)) + _MASK_DELTA) & 0xFFFFFFFF


class RecordFileWriter:
    """`with RecordFileWriter(path) as f: f.write(record)`. Opens `path` as
    Python does (any local name, bytes or str), truncating it."""

    def __init__(self, path):
        self._file = open(path, "wb")

    def write(self, record: bytes) -> None:
        length = struct.pack("<Q", len(record))
        self._file.write(length + struct.pack("<I", masked_crc32c(length)))
        self._file.write(record)
        self._file.write(struct.pack("<I", masked_crc32c(record)))

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> "RecordFileWriter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

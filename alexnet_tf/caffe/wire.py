"""Where a NetParameter was cut short, read off its raw wire format (for an
error message that names the layer: protobuf only says "corrupt")."""

from __future__ import annotations


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = data[pos]  # IndexError at the end of the data
        value |= (byte & 0x7F) << shift
        pos, shift = pos + 1, shift + 7
        if not byte & 0x80:
            return value, pos


def _fields(data: bytes):
    """(field number, wire type, payload start, payload end) of each
    top-level field; the last one's end may lie past the data (truncated)."""
    pos = 0
    while pos < len(data):
        key, pos = _varint(data, pos)
        wire = key & 7
        if wire == 0:
            _, end = _varint(data, pos)
        elif wire == 2:
            length, pos = _varint(data, pos)
            end = pos + length
        elif wire in (1, 5):
            end = pos + (8 if wire == 1 else 4)
        else:
            return
        yield key >> 3, wire, pos, end
        pos = end


def truncated_layer(data: bytes) -> str:
    """Where a NetParameter is cut short ("the file ends inside layer 19
    ('fc7'), with ... of its ... bytes"), or "" when it is not a clean cut."""
    try:
        layers = [f for f in _fields(data) if f[0] in (2, 100) and f[1] == 2]
    except IndexError:
        return ""
    if not layers or layers[-1][3] <= len(data):
        return ""
    number, _, start, end = layers[-1]
    name = "?"
    try:  # the layer's name: field 1 (new format) or 4 (V1), near its start
        for field, wire, a, b in _fields(data[start:]):
            if wire == 2 and field == (1 if number == 100 else 4) and b <= len(data) - start:
                name = data[start + a:start + b].decode("utf-8", "replace")
                break
    except IndexError:
        pass
    return (f"the file ends inside layer {len(layers) - 1} ({name!r}), with "
            f"{len(data) - start:,} of its {end - start:,} bytes")

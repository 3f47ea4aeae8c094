"""Encoded images an attacker or a careless client might send, built with
Pillow and byte edits (never with the code under test): headers claiming
other sizes, extreme aspect ratios, GIF decompression bombs."""

import io
import struct

import numpy as np
from PIL import Image


def encode(array: np.ndarray, fmt: str, **kwargs) -> bytes:
    buffer = io.BytesIO()
    image = Image.fromarray(array)
    if fmt == "GIF":
        image = image.convert("P")
    image.save(buffer, fmt, **kwargs)
    return buffer.getvalue()


def noise(height: int, width: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def thin(length: int, fmt: str, vertical: bool = False) -> bytes:
    """A 1 x length (or length x 1) image of random pixels."""
    shape = (length, 1) if vertical else (1, length)
    return encode(noise(*shape), fmt)


def largest_allowed(fmt: str, side: int = 8192, **kwargs) -> bytes:
    """A side x side image of one colour: small on the wire (a few hundred KB),
    side^2 pixels (8192^2 = 2^26, the serving limit) once decoded."""
    return encode(np.full((side, side, 3), 128, np.uint8), fmt, **kwargs)


def jpeg_claiming(height: int, width: int) -> bytes:
    """A real JPEG whose frame header claims another size."""
    data = bytearray(encode(noise(16, 16), "JPEG"))
    i = 2
    while i < len(data):
        marker, length = data[i + 1], struct.unpack(">H", data[i + 2:i + 4])[0]
        if marker in (0xC0, 0xC1, 0xC2):
            data[i + 5:i + 9] = struct.pack(">HH", height, width)
            return bytes(data)
        i += 2 + length
    raise ValueError("no frame header")


def png_claiming(height: int, width: int) -> bytes:
    """A real PNG whose IHDR claims another size (its CRC no longer matches)."""
    data = bytearray(encode(noise(8, 8), "PNG"))
    data[16:24] = struct.pack(">II", width, height)
    return bytes(data)


def bmp_claiming(height: int, width: int) -> bytes:
    data = bytearray(encode(noise(8, 8), "BMP"))
    data[18:26] = struct.pack("<ii", width, height)
    return bytes(data)


def gif_image_descriptors(data: bytes) -> list[int]:
    """Offsets of the image descriptors (0x2C) of a well-formed GIF."""
    flags = data[10]
    pos = 13 + (3 << ((flags & 7) + 1) if flags & 0x80 else 0)
    found = []
    while data[pos] != 0x3B:
        if data[pos] == 0x21:
            pos += 2
        else:
            found.append(pos)
            local = data[pos + 9]
            pos += 10 + (3 << ((local & 7) + 1) if local & 0x80 else 0) + 1
        while data[pos]:
            pos += 1 + data[pos]
        pos += 1
    return found


def gif_claiming(height: int, width: int) -> bytes:
    """A GIF whose first image descriptor claims another size."""
    data = bytearray(encode(noise(8, 8), "GIF"))
    at = gif_image_descriptors(bytes(data))[0]
    data[at + 5:at + 9] = struct.pack("<HH", width, height)
    return bytes(data)


_TINY_FRAME = b"\x2c" + struct.pack("<HHHHB", 0, 0, 1, 1, 0) + b"\x02\x02\x44\x01\x00"


def gif_many_frames(side: int, frames: int) -> bytes:
    """A side x side black first frame, then `frames` 1x1 frames (15 bytes
    each): TF's GIF decoder makes every frame side x side."""
    first = encode(np.zeros((side, side, 3), np.uint8), "GIF")
    return first[:-1] + _TINY_FRAME * frames + b"\x3b"


def gif_large_second_frame(side: int) -> bytes:
    """A 1x1 first frame, then a side x side one: TF's decoder allocates
    even the first frame at the largest frame's size."""
    big = encode(np.zeros((side, side, 3), np.uint8), "GIF")
    at = gif_image_descriptors(big)[0]
    return big[:at] + _TINY_FRAME + big[at:]


def gif_repeated_frames(side: int, frames: int) -> bytes:
    """`frames` copies of one black side x side frame (a few KB each): TF's
    GIF decoder reads every frame's pixels before it returns the first."""
    one = encode(np.zeros((side, side, 3), np.uint8), "GIF")
    at = gif_image_descriptors(one)[0]
    return one[:at] + one[at:-1] * frames + b"\x3b"


def gif_tiny_sub_blocks(side: int) -> bytes:
    """A valid GIF whose image data comes in 1-byte sub-blocks (encoders
    write 255-byte ones): the most steps per byte for a block walker."""
    data = encode(noise(side, side), "GIF")
    at = gif_image_descriptors(data)[0]
    pos, chunks = at + 11, []
    while data[pos]:
        chunks.append(data[pos + 1:pos + 1 + data[pos]])
        pos += 1 + data[pos]
    payload = b"".join(chunks)
    return data[:at + 11] + b"".join(b"\x01" + payload[i:i + 1]
                                     for i in range(len(payload))) + b"\x00\x3b"

"""Hostile requests made by structure-aware mutation, deterministic from a seed.

Each family's valid files (encoded with Pillow or protobuf, never with the
code under test) are cut into their units: JPEG marker segments and scans,
PNG chunks, GIF blocks and frames, BMP header fields, WebP RIFF chunks,
tf.Example fields. A mutation then repeats a unit (up to thousands of
times: many scans, frames, chunks, fields), bloats one (megabytes of
extension or text data), truncates the file, swaps two units, or lies in a
length or a dimension field. Some mutations are the known attacks of each
family written as mutations (libjpeg-turbo's LJT-01-003: one tiny
progressive scan repeated; zTXt decompression bombs; a 1x1 GIF with a
large frame or megabytes of extension blocks); the rest are drawn at random.

    cases(seed, count) -> [Case(family, mutation, data, signature)]

`signature` is the serving signature the bytes go to ("classify" for
Examples, else "serving_default").
"""

from __future__ import annotations

import dataclasses
import struct
import zlib

import numpy as np

from caffe_fixtures import _varint  # protobuf's wire format, written by hand
from caffe_fixtures import message as _field  # a length-delimited field
from hostile_images import encode

FAMILIES = ("jpeg_baseline", "jpeg_progressive", "png", "gif", "bmp", "webp", "example")
MB = 1 << 20
MAX_CASE_BYTES = 24 * MB  # random mutations stay under this (above the default limit)


@dataclasses.dataclass
class Case:
    family: str
    mutation: str
    data: bytes
    signature: str = "serving_default"

    @property
    def name(self) -> str:
        return f"{self.family}/{self.mutation}"


# -- valid files --------------------------------------------------------------

def _pixels(rng, height, width) -> np.ndarray:
    """Smooth gradients plus noise: compresses like a photo, not like noise."""
    y = np.linspace(0, 1, height)[:, None, None]
    x = np.linspace(0, 1, width)[None, :, None]
    base = 255 * (y * rng.random(3) + x * rng.random(3)) / 2
    return np.clip(base + rng.normal(0, 12, (height, width, 3)), 0, 255).astype(np.uint8)


def valid(family: str, rng, height: int | None = None, width: int | None = None) -> bytes:
    """A valid file of `family`, of a random small size unless given."""
    height = height or int(rng.integers(8, 160))
    width = width or int(rng.integers(8, 160))
    pixels = _pixels(rng, height, width)
    if family == "jpeg_baseline":
        return encode(pixels, "JPEG", quality=int(rng.integers(50, 95)))
    if family == "jpeg_progressive":
        return encode(pixels, "JPEG", quality=int(rng.integers(50, 95)), progressive=True)
    if family == "example":
        return example(encode(pixels, "JPEG"))
    return encode(pixels, {"png": "PNG", "gif": "GIF", "bmp": "BMP", "webp": "WEBP"}[family])


# -- units of each format -------------------------------------------------------

def jpeg_units(data: bytes) -> list[bytes]:
    """SOI, each marker segment (a scan with its entropy-coded data), EOI."""
    units, pos = [data[:2]], 2
    while pos + 4 <= len(data):
        marker = data[pos + 1]
        if marker == 0xD9:
            break
        end = pos + 2 + struct.unpack(">H", data[pos + 2:pos + 4])[0]
        if marker == 0xDA:  # entropy data runs to the next marker other than RSTn / stuffing
            while end + 1 < len(data) and not (
                    data[end] == 0xFF and data[end + 1] != 0 and not 0xD0 <= data[end + 1] <= 0xD7):
                end += 1
        units.append(data[pos:end])
        pos = end
    units.append(data[pos:])
    return units


def png_units(data: bytes) -> list[bytes]:
    """The signature, then each chunk (length, type, data, CRC)."""
    units, pos = [data[:8]], 8
    while pos + 12 <= len(data):
        end = pos + 12 + struct.unpack(">I", data[pos:pos + 4])[0]
        units.append(data[pos:end])
        pos = end
    return units


def png_chunk(kind: bytes, body: bytes) -> bytes:
    return (struct.pack(">I", len(body)) + kind + body
            + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF))


def gif_units(data: bytes) -> list[bytes]:
    """Header with the screen descriptor and global colour table, each
    extension and each image (descriptor, local table, LZW data), trailer."""
    flags = data[10]
    pos = 13 + (3 << ((flags & 7) + 1) if flags & 0x80 else 0)
    units = [data[:pos]]
    while pos < len(data) and data[pos] != 0x3B:
        start = pos
        if data[pos] == 0x21:
            pos += 2
        else:
            local = data[pos + 9]
            pos += 10 + (3 << ((local & 7) + 1) if local & 0x80 else 0) + 1
        while pos < len(data) and data[pos]:
            pos += 1 + data[pos]
        pos += 1
        units.append(data[start:pos])
    units.append(data[pos:])
    return units


def gif_extension(label: int, payload: bytes) -> bytes:
    """An extension block whose data is `payload` in full 255-byte sub-blocks."""
    blocks = b"".join(bytes([len(payload[i:i + 255])]) + payload[i:i + 255]
                      for i in range(0, len(payload), 255))
    return b"\x21" + bytes([label]) + blocks + b"\x00"


def webp_units(data: bytes) -> list[bytes]:
    """The RIFF header, then each chunk (fourcc, size, data, padding)."""
    units, pos = [data[:12]], 12
    while pos + 8 <= len(data):
        size = struct.unpack("<I", data[pos + 4:pos + 8])[0]
        end = pos + 8 + size + (size & 1)
        units.append(data[pos:end])
        pos = end
    return units


def feature_entry(key: bytes, value: bytes) -> bytes:
    """One Features map entry: key -> Feature{bytes_list{value}}."""
    feature = _field(1, _field(1, value))  # Feature.bytes_list(1) -> BytesList.value(1)
    return _field(1, _field(1, key) + _field(2, feature))


def example(image: bytes, extra_entries: bytes = b"") -> bytes:
    """A serialized tf.Example holding `image` as image/encoded, written by
    hand in protobuf's wire format (so it may also be written wrong)."""
    return _field(1, feature_entry(b"image/encoded", image) + extra_entries)


def example_units(data: bytes) -> list[bytes]:
    """The map entries inside an Example's Features (one top-level field)."""
    def read_varint(pos):
        value, shift = 0, 0
        while True:
            value |= (data[pos] & 0x7F) << shift
            shift += 7
            pos += 1
            if data[pos - 1] < 128:
                return value, pos
    _, body = read_varint(1)
    units, pos = [], body
    while pos < len(data):
        length, after = read_varint(pos + 1)
        units.append(data[pos:after + length])
        pos = after + length
    return units


UNITS = {"jpeg_baseline": jpeg_units, "jpeg_progressive": jpeg_units, "png": png_units,
         "gif": gif_units, "webp": webp_units, "bmp": lambda d: [d[:54], d[54:]]}


# -- mutations ------------------------------------------------------------------

def _join(family: str, units: list[bytes]) -> bytes:
    if family == "example":
        return _field(1, b"".join(units))
    return b"".join(units)


def _units(family: str, data: bytes) -> list[bytes]:
    return example_units(data) if family == "example" else UNITS[family](data)


def _inner(family: str, units: list[bytes]) -> range:
    """Indices of the units a mutation may touch: not a file's header or
    trailer; any of an Example's features."""
    if family == "example" or len(units) < 3:
        return range(len(units))
    return range(1, len(units) - 1)


def repeat(family, data, rng):
    units = _units(family, data)
    at = int(rng.choice(_inner(family, units)))
    times = int(rng.choice([2, 10, 100, 1000, 5000]))
    times = max(2, min(times, MAX_CASE_BYTES // len(units[at])))
    units[at:at + 1] = [units[at]] * times
    return f"repeat unit {at} x{times}", _join(family, units)


def bloat(family, data, rng):
    """A unit of `size` bytes of filler where the format allows one."""
    size = int(rng.choice([64 << 10, 1 * MB, 8 * MB]))
    filler = bytes(rng.integers(0, 256, 1024, dtype=np.uint8)) * (size // 1024)
    units = _units(family, data)
    if family.startswith("jpeg"):  # APP segments / comments hold at most 64 KB each
        unit = b"".join(b"\xff\xfe\xff\xff" + filler[i:i + 65533]
                        for i in range(0, size, 65533))
    elif family == "png":
        unit = png_chunk(b"tEXt", b"comment\x00" + filler)
    elif family == "gif":
        unit = gif_extension(0xFE, filler)  # comment extension
    elif family == "webp":
        unit = b"XMP " + struct.pack("<I", size) + filler
    elif family == "example":
        unit = feature_entry(b"image/filler", filler)
    else:  # bmp: bytes after the pixel rows
        return f"append {size} bytes", data + filler
    at = int(rng.choice(_inner(family, units)))
    units.insert(at, unit)
    return f"bloat {size} bytes at unit {at}", _join(family, units)


def truncate(family, data, rng):
    cut = int(rng.integers(1, len(data)))
    return f"truncate at {cut}/{len(data)}", data[:cut]


def reorder(family, data, rng):
    units = _units(family, data)
    inner = list(_inner(family, units))
    if len(inner) < 2:
        return repeat(family, data, rng)
    a, b = (int(i) for i in rng.choice(inner, 2, replace=False))
    units[a], units[b] = units[b], units[a]
    return f"swap units {a} and {b}", _join(family, units)


_LIES = (0, 1, 0xFF, 0xFFFF, 0x7FFFFFFF, 0xFFFFFFFF)


def lie_length(family, data, rng):
    """A length field (segment, chunk, sub-block, RIFF, varint) says another size."""
    out = bytearray(data)
    units = _units(family, data)
    at = int(rng.choice(_inner(family, units)))
    start = sum(len(u) for u in units[:at]) if family != "example" else None
    lie = int(rng.choice(_LIES))
    if family.startswith("jpeg"):
        out[start + 2:start + 4] = struct.pack(">H", lie & 0xFFFF)
    elif family == "png":
        out[start:start + 4] = struct.pack(">I", lie)
    elif family == "gif":
        out[start + 1 if units[at][:1] == b"\x21" else start] = lie & 0xFF
    elif family == "webp":
        out[start + 4:start + 8] = struct.pack("<I", lie)
    elif family == "bmp":
        field = int(rng.choice([2, 10, 14, 34]))  # file size, pixel offset, header size, image size
        out[field:field + 4] = struct.pack("<I", lie)
    else:  # example: the Features' length varint says another size
        return f"length {lie}", b"\x0a" + _varint(lie) + data[1 + len(_varint(len(data))):]
    return f"length {lie} at unit {at}", bytes(out)


def lie_dimensions(family, data, rng):
    """The header claims another size (the pixel data stays as it was)."""
    height, width = (int(rng.choice([0, 1, 8192, 8193, 65500, 65535])) for _ in range(2))
    out = bytearray(data)
    if family.startswith("jpeg"):
        pos = 2
        for unit in jpeg_units(data)[1:]:
            if unit[1] in (0xC0, 0xC1, 0xC2):
                out[pos + 5:pos + 9] = struct.pack(">HH", height, width)
            pos += len(unit)
    elif family == "png":
        out[16:24] = struct.pack(">II", width, height)
    elif family == "gif":
        pos = 0
        units = gif_units(data)
        out[6:10] = struct.pack("<HH", width, height)  # the screen
        for unit in units[:-1]:
            if unit[:1] == b"\x2c":
                out[pos + 5:pos + 9] = struct.pack("<HH", width, height)
            pos += len(unit)
    elif family == "bmp":
        out[18:26] = struct.pack("<ii", width, -height if rng.random() < 0.5 else height)
    elif family == "webp":
        out[26:30] = struct.pack("<HH", width & 0x3FFF, height & 0x3FFF)  # VP8 frame size
    else:
        return repeat(family, data, rng)
    return f"claims {height}x{width}", bytes(out)


MUTATIONS = (repeat, bloat, truncate, reorder, lie_length, lie_dimensions)


# -- the known attacks, as mutations ------------------------------------------

def many_scans(rng, scans: int = 4000, side: int = 4096) -> bytes:
    """LJT-01-003: a flat progressive JPEG whose last (tiny) scan is repeated:
    each copy makes libjpeg walk every block of the image again."""
    data = encode(np.full((side, side, 3), 128, np.uint8), "JPEG", progressive=True)
    units = jpeg_units(data)
    last_scan = max(i for i, u in enumerate(units) if u[1:2] == b"\xda")
    units[last_scan:last_scan + 1] = [units[last_scan]] * scans
    return b"".join(units)


def ztxt_bombs(rng, count: int = 200, inflated: int = 7 * MB) -> bytes:
    """A small PNG carrying `count` zTXt chunks that each inflate to `inflated` bytes."""
    units = png_units(valid("png", rng))
    bomb = png_chunk(b"zTXt", b"bomb\x00\x00" + zlib.compress(bytes(inflated), 9))
    return b"".join(units[:2] + [bomb] * count + units[2:])


def gif_extension_bloat(rng, size: int = 200 * MB) -> bytes:
    """A 1x1 GIF carrying `size` bytes of comment extension blocks."""
    units = gif_units(valid("gif", rng, 1, 1))
    return b"".join(units[:1] + [gif_extension(0xFE, bytes(size))] + units[1:])


def gif_huge_second_frame(rng, side: int = 6000) -> bytes:
    big = gif_units(encode(np.zeros((side, side, 3), np.uint8), "GIF"))
    tiny = gif_units(valid("gif", rng, 1, 1))
    return b"".join(big[:1] + tiny[1:-1] + big[1:])


def gif_many_frames(rng, frames: int = 3000) -> bytes:
    units = gif_units(valid("gif", rng, 64, 64))
    return b"".join(units[:-1] + units[1:-1] * frames + units[-1:])


def png_tiny_idats(rng) -> bytes:
    """Every byte of the image data in its own IDAT chunk."""
    units = png_units(valid("png", rng, 64, 64))
    idat = b"".join(u[8:-4] for u in units if u[4:8] == b"IDAT")
    rest = [u for u in units if u[4:8] != b"IDAT"]
    return b"".join(rest[:2] + [png_chunk(b"IDAT", idat[i:i + 1])
                                for i in range(len(idat))] + rest[2:])


def example_many_fields(rng, fields: int = 20000) -> bytes:
    return example(valid("jpeg_baseline", rng), feature_entry(b"k", b"v") * fields)


KNOWN = {
    "jpeg_progressive": (("4000 tiny scans (LJT-01-003)", many_scans),),
    "png": (("200 zTXt bombs", ztxt_bombs), ("1-byte IDAT chunks", png_tiny_idats)),
    "gif": (("1x1 then 6000x6000", gif_huge_second_frame),
            ("3000 frames", gif_many_frames)),
    "example": (("20000 features", example_many_fields),),
}


def cases(seed: int, count: int, families=FAMILIES, known: bool = True) -> list[Case]:
    """`count` random mutations spread over `families` (plus, with `known`,
    each family's known attacks), the same list for the same seed."""
    rng = np.random.default_rng(seed)
    out = []
    if known:
        for family in families:
            for mutation, make in KNOWN.get(family, ()):
                out.append(_case(family, mutation, make(rng)))
    for i in range(count):
        family = families[i % len(families)]
        mutate = MUTATIONS[int(rng.integers(len(MUTATIONS)))]
        mutation, data = mutate(family, valid(family, rng), rng)
        out.append(_case(family, f"{mutate.__name__}: {mutation}", data))
    return out


def _case(family: str, mutation: str, data: bytes) -> Case:
    return Case(family, mutation, data, "classify" if family == "example" else "serving_default")


# -- sending them ---------------------------------------------------------------

BUDGET_MB = 200        # above a normal request of the same batch size, plus the request's bytes
BUDGET_CPU_S = 2.0     # per image


def measure(saved_model, batch: list[tuple[Case, int]], folder, normal: bytes,
            kill_mb: float = 2500, timeout: float = 900) -> dict:
    """Sends each (case, copies) to `saved_model` (a path, or a running
    request_memory.MemoryChild) in one memory-capped child (request_memory),
    after a normal photo at each batch size used; returns request_memory's answer with per case "family", "mutation", "bytes"
    (the request's), "copies" and "normal_peak_mb" / "normal_cpu_s" (the
    photo's at the same batch size)."""
    import os
    import request_memory
    os.makedirs(folder, exist_ok=True)
    normal_path = os.path.join(folder, "normal.jpeg")
    with open(normal_path, "wb") as f:
        f.write(normal)
    sizes = sorted({copies for _, copies in batch})
    requests = [("serving_default", f"{normal_path}*{n}") for n in sizes]
    for i, (case, copies) in enumerate(batch):
        path = os.path.join(folder, f"case{i}")
        with open(path, "wb") as f:
            f.write(case.data)
        signature = case.signature + (request_memory.RAW if case.family == "example" else "")
        requests.append((signature, f"{path}*{copies}"))
    if isinstance(saved_model, request_memory.MemoryChild):
        answer = saved_model.measure(requests, kill_mb=kill_mb, timeout=timeout)
    else:
        answer = request_memory.measure(saved_model, requests, kill_mb=kill_mb, timeout=timeout)
    if "killed" in answer:
        index = [s + ":" + p for s, p in requests].index(answer["killed"]) - len(sizes)
        answer["killed_case"] = batch[index][0].name if index >= 0 else "the normal photo"
    done = answer["cases"]
    normals = dict(zip(sizes, done[:len(sizes)]))
    for (case, copies), result in zip(batch, done[len(sizes):]):
        result.update(family=case.family, mutation=case.mutation, copies=copies,
                      bytes=len(case.data) * copies,
                      normal_peak_mb=normals[copies]["peak_mb"],
                      normal_cpu_s=normals[copies]["cpu_s"])
    answer["cases"] = done[len(sizes):]
    return answer


def over_budget(result: dict) -> list[str]:
    """What of the budget one measured case broke (empty when none)."""
    broke = []
    allowed_mb = result["normal_peak_mb"] + result["bytes"] / MB + BUDGET_MB
    if result["peak_mb"] > allowed_mb:
        broke.append(f"peak {result['peak_mb']:.0f} MB > {allowed_mb:.0f} MB")
    if result["cpu_s"] > BUDGET_CPU_S * result["copies"]:
        broke.append(f"CPU {result['cpu_s']:.1f} s > {BUDGET_CPU_S * result['copies']:.1f} s")
    return broke


def worst_by_family(results: list[dict]) -> dict:
    """family -> (cases, worst CPU s, its case, worst peak MB, its case)."""
    table = {}
    for r in results:
        row = table.setdefault(r["family"], [0, -1.0, "", -1.0, ""])
        row[0] += 1
        if r["cpu_s"] > row[1]:
            row[1], row[2] = r["cpu_s"], r["mutation"]
        if r["peak_mb"] > row[3]:
            row[3], row[4] = r["peak_mb"], r["mutation"]
    return table

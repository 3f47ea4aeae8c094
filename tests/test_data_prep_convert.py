"""data_prep.convert: any image bytes -> a size x size RGB JPEG."""

import io
import struct
import zlib

import numpy as np
import pytest
import simplejpeg
from PIL import Image

from data_prep import convert

# A flat colour survives every format (and JPEG) almost exactly.
COLOUR = (200, 50, 100)


def _flat(width=400, height=300, colour=COLOUR):
    pixels = np.zeros((height, width, 3), np.uint8)
    pixels[...] = colour
    return Image.fromarray(pixels)


def _encode(image, fmt, **kwargs):
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **kwargs)
    return buffer.getvalue()


def _textured(width, height, seed=0):
    """A photo-like image: smooth gradients plus fine detail."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width] / max(width, height)
    base = np.stack([np.sin(6 * xx + 2 * yy), np.cos(5 * yy - 3 * xx), np.sin(9 * xx * yy)], -1)
    detail = rng.normal(0, 0.15, size=(height // 4 + 1, width // 4 + 1, 3))
    detail = np.kron(detail, np.ones((4, 4, 1)))[:height, :width]
    return np.clip((base + detail) * 60 + 128, 0, 255).astype(np.uint8)


def _psnr(a, b):
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return 10 * np.log10(255.0 ** 2 / max(mse, 1e-12))


def _mean_rgb(converted):
    return converted.pixels.reshape(-1, 3).mean(axis=0)


@pytest.mark.parametrize("name, data, expected", [
    ("rgb jpeg", lambda: _encode(_flat(), "JPEG", quality=95), COLOUR),
    ("cmyk jpeg", lambda: _encode(_flat().convert("CMYK"), "JPEG", quality=95), COLOUR),
    ("grayscale jpeg", lambda: _encode(_flat().convert("L"), "JPEG"), None),
    ("palette png", lambda: _encode(_flat().convert("P"), "PNG"), COLOUR),
    ("rgba png", lambda: _encode(_flat().convert("RGBA"), "PNG"), COLOUR),
    ("la png", lambda: _encode(_flat().convert("LA"), "PNG"), None),
    ("gif", lambda: _encode(_flat(), "GIF"), COLOUR),
    ("bmp", lambda: _encode(_flat(), "BMP"), COLOUR),
    ("tiff", lambda: _encode(_flat(), "TIFF"), COLOUR),
    ("webp", lambda: _encode(_flat(), "WEBP", lossless=True), COLOUR),
])
def test_every_format_becomes_rgb_at_the_target_size(name, data, expected):
    converted = convert.convert(data(), size=64)
    assert converted.pixels.shape == (64, 64, 3), name
    assert converted.pixels.dtype == np.uint8
    decoded = simplejpeg.decode_jpeg(converted.encoded)
    assert decoded.shape == (64, 64, 3)
    mean = _mean_rgb(converted)
    if expected is None:  # gray sources: three equal channels
        np.testing.assert_allclose(mean, mean[0], atol=1.0)
    else:
        np.testing.assert_allclose(mean, expected, atol=3.0, err_msg=name)


def test_png_named_jpeg_is_read_as_png():
    data = _encode(_flat(), "PNG")
    assert convert.sniff_format(data) == "PNG"
    converted = convert.convert(data, size=32)
    assert converted.source_format == "PNG"
    np.testing.assert_allclose(_mean_rgb(converted), COLOUR, atol=3.0)


def test_16_bit_grayscale_is_scaled_not_clipped():
    image = Image.fromarray(np.full((50, 70), 128 * 257, np.uint16))
    assert image.mode.startswith("I")
    converted = convert.convert(_encode(image, "PNG"), size=32)
    np.testing.assert_allclose(_mean_rgb(converted), [128, 128, 128], atol=1.0)


def test_animated_gif_gives_its_first_frame():
    frames = [_flat(colour=(255, 0, 0)), _flat(colour=(0, 0, 255))]
    buffer = io.BytesIO()
    frames[0].save(buffer, format="GIF", save_all=True, append_images=frames[1:])
    converted = convert.convert(buffer.getvalue(), size=32)
    np.testing.assert_allclose(_mean_rgb(converted), [255, 0, 0], atol=3.0)


@pytest.mark.parametrize("data, reason", [
    (b"", "empty file"),
    (b"hello, this is text", "not an image"),
    (b"\xff\xd8\xff\xe0" + b"\x00" * 100, "cannot decode JPEG"),
    (b"\x89PNG\r\n\x1a\n" + b"junk" * 10, "cannot decode PNG"),
])
def test_bad_bytes_raise_with_the_reason(data, reason):
    with pytest.raises(convert.ConversionError, match=reason):
        convert.convert(data)


def test_truncated_jpeg_is_refused():
    data = _encode(Image.fromarray(_textured(300, 200)), "JPEG", quality=90)
    with pytest.raises(convert.ConversionError, match="truncated"):
        convert.convert(data[: len(data) // 2])


def _png_header_only(width, height):
    """A PNG whose header claims width x height but holds one tiny IDAT."""
    def chunk(kind, payload):
        return (struct.pack(">I", len(payload)) + kind + payload
                + struct.pack(">I", zlib.crc32(kind + payload) & 0xFFFFFFFF))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr)
            + chunk(b"IDAT", zlib.compress(b"\x00" * 16)) + chunk(b"IEND", b""))


def test_decompression_bomb_is_refused_before_decoding():
    bomb = _png_header_only(100_000, 100_000)  # 10 gigapixels claimed, 60 bytes
    with pytest.raises(convert.ConversionError, match="decompression bomb"):
        convert.convert(bomb)


def test_pixel_limit_applies_to_jpeg_headers_too():
    data = _encode(_flat(400, 300), "JPEG")
    with pytest.raises(convert.ConversionError, match="decompression bomb"):
        convert.convert(data, max_pixels=400 * 300 - 1)
    assert convert.convert(data, size=32, max_pixels=400 * 300).pixels.shape == (32, 32, 3)


def _gif_header_only(width, height):
    """A GIF whose screen and one frame claim width x height, with no pixel data."""
    return (b"GIF89a" + struct.pack("<HHBBB", width, height, 0, 0, 0) + b"\x2c"
            + struct.pack("<HHHHB", 0, 0, width, height, 0x80) + b"\0\0\0\xff\xff\xff"
            + b"\x02\x02\x4c\x01\x00\x3b")


@pytest.mark.parametrize("make", [_png_header_only, _gif_header_only], ids=["png", "gif"])
def test_our_limit_replaces_pillows_above_and_below_it(make):
    """200 Mpixels: above Pillow's own error threshold (2 x 89.5 M), which used
    to win with its message. The default limit refuses it with ours; a larger
    limit lets it through to decoding (which then finds no pixel data)."""
    header = make(20_000, 10_000)
    with pytest.raises(convert.ConversionError,
                       match=r"^decompression bomb guard: 20000x10000 = 200000000 pixels "
                             r"> limit 89478485$"):
        convert.convert(header)
    with pytest.raises(convert.ConversionError, match=r"^cannot decode (PNG|GIF): "):
        convert.convert(header, max_pixels=300_000_000)
    assert Image.MAX_IMAGE_PIXELS == convert.DEFAULT_MAX_PIXELS  # Pillow's limit restored


@pytest.mark.parametrize("fmt", ["PNG", "GIF"])
def test_a_limit_above_pillows_is_honoured_for_real_images(fmt, monkeypatch):
    """With Pillow's limit lowered to 1,000 pixels (errors from 2,000), a real
    64x64 image converts under a 10,000-pixel limit of ours, and is refused with
    our message under a 100-pixel one."""
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    data = _encode(_flat(64, 64), fmt)
    assert convert.convert(data, size=32, max_pixels=10_000).pixels.shape == (32, 32, 3)
    with pytest.raises(convert.ConversionError, match=r"64x64 = 4096 pixels > limit 100$"):
        convert.convert(data, size=32, max_pixels=100)
    assert Image.MAX_IMAGE_PIXELS == 1000


def test_a_limit_below_one_is_refused():
    with pytest.raises(ValueError, match="max_pixels must be >= 1"):
        convert.convert(_encode(_flat(8, 8), "PNG"), max_pixels=0)


@pytest.mark.parametrize("width, height", [(400, 300), (300, 400), (256, 256), (100, 60),
                                          (1, 1), (3000, 40), (40, 3000), (1600, 1200)])
def test_output_is_square_at_any_aspect(width, height):
    data = _encode(Image.fromarray(_textured(width, height)), "JPEG", quality=90)
    converted = convert.convert(data, size=48)
    assert converted.pixels.shape == (48, 48, 3)
    assert (converted.source_width, converted.source_height) == (width, height)


def test_centre_crop_keeps_the_centre():
    """A landscape image: black left third, white centre, black right third;
    the square centre crop shows only white."""
    pixels = np.zeros((300, 900, 3), np.uint8)
    pixels[:, 300:600] = 255
    for size in (64, 256):  # the exact (shrink >= 2) and the fast path
        out = convert.convert(_encode(Image.fromarray(pixels), "PNG"), size=size).pixels
        # The filter may blend the outermost column with its black neighbour.
        assert out[:, 1:-1].min() > 240, size


def test_stored_size_image_passes_through_unresized():
    pixels = _textured(64, 64)
    out = convert.resize_and_crop(pixels, 64)
    np.testing.assert_array_equal(out, pixels)


@pytest.mark.parametrize("height, width, size, factor", [
    (375, 500, 256, 1), (512, 700, 256, 2), (511, 700, 256, 2), (510, 700, 256, 1), (1200, 1600, 256, 4),
    (3000, 4000, 256, 8), (9000, 9000, 256, 8), (100, 100, 256, 1), (64, 64, 32, 2)])
def test_reduction_factor_keeps_the_shorter_side_at_least_size(height, width, size, factor):
    assert convert.reduction_factor(height, width, size) == factor
    if factor > 1:
        assert -(-min(height, width) // factor) >= size


def test_reduced_size_decode_stays_close_to_a_full_decode():
    """A 1600x1200 JPEG decodes at 1/4 size in the DCT domain (400x300):
    the stored 256x256 image stays close to the one from a full decode."""
    data = _encode(Image.fromarray(_textured(1600, 1200)), "JPEG", quality=92)
    reduced = convert.convert(data, size=256, reduced_decode=True)
    full = convert.convert(data, size=256, reduced_decode=False)
    assert _psnr(reduced.pixels, full.pixels) > 35.0


def test_reduced_size_decode_on_real_photos(imagenet_sample):
    """The same on the largest real ImageNet photos of the sample."""
    paths = sorted(imagenet_sample.glob("*.JPEG"), key=lambda p: -p.stat().st_size)[:5]
    for path in paths:
        data = path.read_bytes()
        height, width, _, _ = simplejpeg.decode_jpeg_header(data)
        if convert.reduction_factor(height, width, 256) == 1:
            continue
        reduced = convert.convert(data, reduced_decode=True).pixels
        full = convert.convert(data, reduced_decode=False).pixels
        assert _psnr(reduced, full) > 30.0, path.name


def test_fast_resize_matches_the_exact_antialiased_filter():
    """The 3-tap prefilter + bilinear path against Pillow's exact triangle
    filter, over the shrink factors it is used for (1..2)."""
    for short in (257, 300, 384, 450, 511):
        pixels = _textured(short * 4 // 3, short, seed=short)
        fast = convert.resize_and_crop(pixels, 256)
        exact = convert.resize_and_crop_exact(pixels, 256)
        assert _psnr(fast, exact) > 35.0, short


def test_fast_resize_antialiases():
    """A one-pixel checkerboard shrunk by ~1.9x must come out flat grey, not
    as a moire pattern (which plain bilinear sampling would give)."""
    board = (np.indices((490, 490)).sum(axis=0) % 2 * 255).astype(np.uint8)
    pixels = np.repeat(board[:, :, None], 3, axis=2)
    out = convert.resize_and_crop(pixels, 256).astype(np.float64)
    assert abs(out.mean() - 127.5) < 3
    assert out[8:-8, 8:-8].std() < 40


def test_higher_quality_gives_larger_files():
    data = _encode(Image.fromarray(_textured(400, 300)), "PNG")
    low = convert.convert(data, quality=50).encoded
    high = convert.convert(data, quality=95).encoded
    assert len(high) > len(low)


def test_ycck_jpeg_in_the_adobe_convention():
    """YCCK JPEGs (Adobe transform 2) as Photoshop writes them: inverted CMYK.
    libjpeg-turbo writes YCCK from CMYK input; inverting first gives Adobe's
    convention, which real CMYK/YCCK photos use."""
    rgb = np.zeros((300, 400, 3), np.uint8)
    rgb[:150], rgb[150:] = (20, 180, 60), COLOUR
    cmyk = np.asarray(Image.fromarray(rgb).convert("CMYK"))
    data = simplejpeg.encode_jpeg(np.ascontiguousarray(255 - cmyk), quality=95, colorspace="CMYK")
    assert simplejpeg.decode_jpeg_header(data)[2] == "YCCK"
    out = convert.convert(data, size=32).pixels.astype(np.float64)
    np.testing.assert_allclose(out[2:14].reshape(-1, 3).mean(0), (20, 180, 60), atol=4)
    np.testing.assert_allclose(out[18:30].reshape(-1, 3).mean(0), COLOUR, atol=4)

"""One image's conversion, the paper's way (section 2): encoded bytes of any
format -> 3-channel RGB -> shorter side scaled to `size` -> centre crop
`size` x `size` -> JPEG bytes.

Speed comes from doing no more work than the output needs:
- JPEGs at least twice the target are decoded at 1/2, 1/4 or 1/8 size in the
  DCT domain (libjpeg-turbo through simplejpeg), so the resize after it only
  shrinks by less than 2x. Pillow's draft mode offers the same scales; other
  M/8 scales exist in libjpeg-turbo but are slower than a full decode (see
  `reduction_factor`).
- Only the centre square is resampled, with a fast approximation of the
  antialiased bilinear filter (see `resize_and_crop`).
The resize filter is antialiased bilinear (a triangle filter widened by the
scale factor), the filter `alexnet_tf.data.preprocessing` uses at serving.

The format is sniffed from the bytes, never from the file name. Grayscale,
palette, CMYK/YCCK, alpha and 16-bit sources all come out as 8-bit RGB; the
alpha channel is dropped, as the serving signature's `decode_rgb` does. EXIF
orientation and ICC profiles are ignored, as TensorFlow's decoders (training,
serving) ignore them. Truncated data is refused, not padded. Anything that
cannot be decoded raises `ConversionError` with the reason.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import threading
import warnings

import cv2
import numpy as np
import simplejpeg
from PIL import Image

from alexnet_tf import defaults

# One thread per worker process: the tool parallelises over processes.
cv2.setNumThreads(1)

DEFAULT_SIZE = defaults.STORED_SIZE
DEFAULT_QUALITY = 95
# Pillow's own decompression-bomb threshold (about 89 megapixels): a real
# photograph is far smaller, a hostile file can claim far more in its header.
# `max_pixels` replaces Pillow's threshold, above or below it.
DEFAULT_MAX_PIXELS = 89_478_485
# Guards Pillow's process-wide limit while a decode runs with it lifted.
_PILLOW_LIMIT_LOCK = threading.Lock()
RESIZE_FILTER = ("antialiased bilinear: triangle filter widened by the shrink factor "
                 "(3-tap prefilter + bilinear for factors < 2, Pillow BILINEAR above)")
# 4:2:0 chroma, as libjpeg/TensorFlow write by default: the records stay small.
CHROMA_SUBSAMPLING = "420"

_MAGIC = (
    (b"\xff\xd8\xff", "JPEG"),
    (b"\x89PNG\r\n\x1a\n", "PNG"),
    (b"GIF87a", "GIF"),
    (b"GIF89a", "GIF"),
    (b"BM", "BMP"),
    (b"II*\x00", "TIFF"),
    (b"MM\x00*", "TIFF"),
)


class ConversionError(ValueError):
    """The bytes are not a usable image; the message is the reason."""


@dataclasses.dataclass(frozen=True)
class Converted:
    """The output JPEG and, for the dataset statistics, its pixels before encoding."""

    encoded: bytes
    pixels: np.ndarray  # uint8 [size, size, 3]
    source_format: str
    source_height: int
    source_width: int


def sniff_format(data: bytes) -> str:
    """The image format named by the file's magic bytes, or raise."""
    if not data:
        raise ConversionError("empty file")
    for magic, name in _MAGIC:
        if data.startswith(magic):
            return name
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WEBP"
    raise ConversionError(f"not an image (unrecognised leading bytes {data[:8]!r})")


def convert(data: bytes, size: int = DEFAULT_SIZE, quality: int = DEFAULT_QUALITY,
            max_pixels: int = DEFAULT_MAX_PIXELS, reduced_decode: bool = True) -> Converted:
    """Converts encoded image bytes to a `size` x `size` RGB JPEG."""
    if max_pixels < 1:
        raise ValueError(f"max_pixels must be >= 1, got {max_pixels}")
    image_format = sniff_format(data)
    if image_format == "JPEG":
        rgb, height, width = _decode_jpeg(data, size, max_pixels, reduced_decode)
    else:
        rgb, height, width = _decode_with_pillow(data, image_format, max_pixels)
    pixels = resize_and_crop(rgb, size)
    encoded = simplejpeg.encode_jpeg(pixels, quality=quality, colorspace="RGB",
                                     colorsubsampling=CHROMA_SUBSAMPLING)
    return Converted(encoded, pixels, image_format, height, width)


def resize_and_crop(rgb: np.ndarray, size: int) -> np.ndarray:
    """Shorter side to `size`, centre crop `size` x `size`: antialiased bilinear.

    Only the centre square of the source is resampled (rounded to whole
    source pixels), so no full-size intermediate is made. For shrink factors
    s in (1, 2), the range left after reduced-size JPEG decoding, the
    triangle filter of width s is applied as a 3-tap prefilter of matching
    variance ((s^2 - 1) / 6) followed by bilinear interpolation, both in
    OpenCV's SIMD code: within a few grey levels of the exact filter
    (`resize_and_crop_exact`, tested) at a fraction of the cost. Larger
    factors use the exact filter; enlarging is plain bilinear (no aliasing).
    """
    height, width = rgb.shape[:2]
    short = min(height, width)
    scale = short / size
    if scale >= 2.0:
        return resize_and_crop_exact(rgb, size)
    top, left = (height - short) // 2, (width - short) // 2
    square = rgb[top:top + short, left:left + short]
    if short == size:
        return np.ascontiguousarray(square)
    if scale > 1.0:
        tap = (scale * scale - 1.0) / 12.0  # variance of [tap, 1 - 2 tap, tap] is 2 tap
        kernel = np.array([tap, 1.0 - 2.0 * tap, tap], np.float32)
        square = cv2.sepFilter2D(square, -1, kernel, kernel, borderType=cv2.BORDER_REFLECT)
    return cv2.resize(square, (size, size), interpolation=cv2.INTER_LINEAR)


def resize_and_crop_exact(rgb: np.ndarray, size: int) -> np.ndarray:
    """The reference filter: Pillow's antialiased bilinear (a triangle filter
    widened by the scale factor) over the centre square, in one resample
    (`box=` still reads the pixels just outside the square, so this equals
    resize-then-crop)."""
    height, width = rgb.shape[:2]
    short = min(height, width)
    if height == width == size:
        return np.ascontiguousarray(rgb)
    left, top = (width - short) / 2, (height - short) / 2
    box = (left, top, left + short, top + short)
    image = Image.fromarray(np.ascontiguousarray(rgb), "RGB")
    return np.asarray(image.resize((size, size), Image.Resampling.BILINEAR, box=box))


def _check_pixels(height: int, width: int, max_pixels: int) -> None:
    if height <= 0 or width <= 0:
        raise ConversionError(f"image has a zero dimension ({width}x{height})")
    if height * width > max_pixels:
        raise ConversionError(
            f"decompression bomb guard: {width}x{height} = {width * height} pixels "
            f"> limit {max_pixels}")


def _decode_jpeg(data: bytes, size: int, max_pixels: int,
                 reduced_decode: bool) -> tuple[np.ndarray, int, int]:
    """libjpeg-turbo at the smallest M/8 scale that keeps the shorter side >=
    `size`; Pillow for what turbo will not convert to RGB (CMYK/YCCK) or
    rejects in strict mode (Pillow then decides: it accepts some harmless
    oddities and refuses truncated data)."""
    try:
        height, width, colorspace, _ = simplejpeg.decode_jpeg_header(data)
    except ValueError:
        return _decode_with_pillow(data, "JPEG", max_pixels)
    _check_pixels(height, width, max_pixels)
    if colorspace in ("CMYK", "YCCK"):
        return _decode_with_pillow(data, "JPEG", max_pixels)
    factor = reduction_factor(height, width, size) if reduced_decode else 1
    try:
        if factor == 1:
            rgb = simplejpeg.decode_jpeg(data, colorspace="RGB", strict=True)
        else:
            # With min_factor=k the only scale >= these minimum sizes is 1/k.
            rgb = simplejpeg.decode_jpeg(
                data, colorspace="RGB", min_factor=factor, strict=True,
                min_height=-(-height // factor), min_width=-(-width // factor))
    except ValueError:
        return _decode_with_pillow(data, "JPEG", max_pixels)
    return rgb, height, width


def reduction_factor(height: int, width: int, size: int) -> int:
    """The largest of 1, 2, 4, 8 that keeps the shorter side >= `size`.

    Only powers of two: libjpeg-turbo has SIMD inverse DCTs for 1/2, 1/4, 1/8,
    while its other M/8 scales run plain C and decode slower than full size
    (measured on the imagenet-sample: a 6/8 decode costs about 1.3x a full one).
    """
    short, factor = min(height, width), 1
    while factor < 8 and -(-short // (factor * 2)) >= size:
        factor *= 2
    return factor


def _decode_with_pillow(data: bytes, image_format: str,
                        max_pixels: int) -> tuple[np.ndarray, int, int]:
    try:
        with _our_pixel_limit():
            image = Image.open(io.BytesIO(data), formats=[image_format])
            width, height = image.size
            _check_pixels(height, width, max_pixels)  # header only: nothing decoded yet
            image.seek(0)  # first frame of an animation
            image.load()
    except ConversionError:
        raise
    except (OSError, ValueError, SyntaxError, EOFError, IndexError,
            Image.UnidentifiedImageError) as e:
        raise ConversionError(f"cannot decode {image_format}: {e}") from None
    return _to_rgb(image), height, width


@contextlib.contextmanager
def _our_pixel_limit():
    """Lifts Pillow's own decompression-bomb limit (process-wide, checked in
    `Image.open` and in GIF frame handling) for one decode, so `max_pixels`,
    checked on the header before any pixel is decoded, is the limit that
    applies, with its message, whether it lies below or above Pillow's."""
    with _PILLOW_LIMIT_LOCK, warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        saved, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, None
        try:
            yield
        finally:
            Image.MAX_IMAGE_PIXELS = saved


def _to_rgb(image: Image.Image) -> np.ndarray:
    """8-bit RGB from any Pillow mode. 16-bit and 32-bit integer modes are
    scaled down (Pillow's own convert would clip them at 255)."""
    mode = image.mode
    if mode.startswith("I;16") or mode in ("I", "F"):
        values = np.asarray(image, dtype=np.float64)
        if mode.startswith("I;16") or values.max(initial=0) > 255:
            values = values / 257.0
        gray = np.clip(np.rint(values), 0, 255).astype(np.uint8)
        return np.ascontiguousarray(np.repeat(gray[:, :, None], 3, axis=2))
    if mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")  # the documented way to expand such palettes
    if image.mode != "RGB":
        image = image.convert("RGB")  # L, LA, RGBA, CMYK (Adobe-inverted handled), YCbCr, 1
    return np.asarray(image)

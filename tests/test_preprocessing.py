"""preprocessing.py against numpy, each function eagerly and inside tf.data."""

import functools
import io

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from alexnet_tf.data import dataset_stats, preprocessing as pp

EIGVAL = np.array(dataset_stats.IMAGENET_EIGVAL, np.float32)
EIGVEC = np.array(dataset_stats.IMAGENET_EIGVEC, np.float32)


def pixels(height, width, seed=0):
    """A random but smooth-ish image: JPEG keeps it close, and every 224
    window of it is different from every other."""
    rng = np.random.default_rng(seed)
    noise = rng.integers(0, 128, (height, width, 3))
    ramp = (np.arange(width)[None, :, None] * 127) // max(width - 1, 1)
    return (noise + ramp).astype(np.uint8)


def encode(array, fmt="JPEG", **kwargs) -> bytes:
    buffer = io.BytesIO()
    if fmt == "GIF":  # palette: a few colours suffice for these tests
        Image.fromarray(array).quantize(256).save(buffer, fmt)
        return buffer.getvalue()
    if fmt == "JPEG":
        kwargs = {"quality": 95, "subsampling": 0, **kwargs}  # 4:4:4 unless asked
    Image.fromarray(array).save(buffer, fmt, **kwargs)
    return buffer.getvalue()


def decoded(jpeg: bytes) -> np.ndarray:
    """The reference full decode (same libjpeg and IDCT as every op under test)."""
    return tf.io.decode_jpeg(jpeg, channels=3, dct_method=pp.JPEG_DCT_METHOD).numpy()


def in_tf_data(fn, *values):
    """Runs fn over one element inside a tf.data map (graph mode, tf.data threads)."""
    dataset = tf.data.Dataset.from_tensors(values).map(
        fn, num_parallel_calls=tf.data.AUTOTUNE)
    return next(iter(dataset))


def both_ways(fn, *values):
    """(eager result, tf.data result) as numpy."""
    return np.asarray(fn(*values)), np.asarray(in_tf_data(fn, *values))


@functools.cache
def _tf_data_results(fn, group: tuple) -> tuple:
    """fn over each of `group` (encoded images) in one tf.data map: the
    result, or the error that element raised (the iterator goes on)."""
    iterator = iter(tf.data.Dataset.from_tensor_slices(list(group)).map(
        fn, num_parallel_calls=tf.data.AUTOTUNE))
    results = []
    for _ in group:
        try:
            results.append(next(iterator).numpy())
        except tf.errors.InvalidArgumentError as e:
            results.append(e)
    return tuple(results)


def in_shared_tf_data(fn, data: bytes, group: tuple):
    """fn(data) inside a tf.data map that runs over the whole `group` (one
    trace for the inputs of several tests, made once); an element's error is
    raised here."""
    result = _tf_data_results(fn, group)[group.index(data)]
    if isinstance(result, Exception):
        raise result
    return result


def both_ways_shared(fn, data: bytes, group: tuple):
    """(eager result, tf.data result as in_shared_tf_data) as numpy."""
    return np.asarray(fn(tf.constant(data))), in_shared_tf_data(fn, data, group)


# --- decode_rgb -------------------------------------------------------------

def jpeg_claiming_size(height, width) -> bytes:
    """A valid small JPEG whose SOF header is edited to claim another size."""
    data = bytearray(encode(pixels(16, 16)))
    sof = data.index(b"\xff\xc0")  # baseline frame header: len(2) precision(1) H(2) W(2)
    data[sof + 5:sof + 7] = height.to_bytes(2, "big")
    data[sof + 7:sof + 9] = width.to_bytes(2, "big")
    return bytes(data)


def format_case(fmt):
    """(encoded 20x30 image, the pixels decode_rgb must give)."""
    array = pixels(20, 30)
    if fmt == "GIF":  # palette: compare with what PIL itself decodes
        array = np.asarray(Image.fromarray(array).quantize(64).convert("RGB"))
    data = encode(array, fmt)
    return data, decoded(data) if fmt == "JPEG" else array


FORMAT_CASES = {fmt: format_case(fmt) for fmt in ("PNG", "GIF", "BMP", "JPEG")}
GREY = pixels(12, 10)[..., 0]
GREY_CASES = {fmt: encode(GREY, fmt) for fmt in ("PNG", "JPEG")}
BAD_BYTES = [
    (b"", "empty"),
    (b"this is not an image at all", None),
    (encode(pixels(32, 32))[:40], None),  # truncated inside the header
    (encode(pixels(64, 64))[:-300], "JPEG"),  # truncated image data
    (jpeg_claiming_size(9000, 9000), "more than"),  # decompression bomb guard
]
# decode_rgb's inputs, run through one tf.data map
DECODE_GROUP = (*(data for data, _ in FORMAT_CASES.values()), *GREY_CASES.values(),
                *(data for data, _ in BAD_BYTES))


@pytest.mark.parametrize("fmt", FORMAT_CASES)
def test_decode_rgb_formats(fmt):
    data, expected = FORMAT_CASES[fmt]
    for image in both_ways_shared(pp.decode_rgb, data, DECODE_GROUP):
        assert image.dtype == np.uint8 and image.shape == (20, 30, 3)
        np.testing.assert_array_equal(image, expected)


@pytest.mark.parametrize("fmt", GREY_CASES)
def test_decode_rgb_grayscale_and_alpha_become_rgb(fmt):
    for image in both_ways_shared(pp.decode_rgb, GREY_CASES[fmt], DECODE_GROUP):
        assert image.shape == (12, 10, 3)
        np.testing.assert_array_equal(image[..., 0], image[..., 1])
        np.testing.assert_array_equal(image[..., 0], image[..., 2])
        if fmt == "PNG":
            np.testing.assert_array_equal(image[..., 0], GREY)
    rgba = np.dstack([pixels(8, 8), np.full((8, 8), 7, np.uint8)])
    np.testing.assert_array_equal(pp.decode_rgb(tf.constant(encode(rgba, "PNG"))), rgba[..., :3])


@pytest.mark.parametrize("data, message", BAD_BYTES)
def test_decode_rgb_bad_bytes_raise(data, message):
    with pytest.raises(tf.errors.InvalidArgumentError, match=message):
        pp.decode_rgb(tf.constant(data))
    with pytest.raises(tf.errors.InvalidArgumentError, match=message):
        in_shared_tf_data(pp.decode_rgb, data, DECODE_GROUP)


# --- center_crop / eval_image --------------------------------------------------

def test_center_crop_matches_slicing():
    image = pixels(256, 300)
    for crop in both_ways(pp.center_crop, tf.constant(image)):
        np.testing.assert_array_equal(crop, image[16:240, 38:262])


STORED_RECORD = encode(pixels(256, 256), subsampling=2)  # 4:2:0 as most photos are
OTHER_SIZE = encode(pixels(300, 500))
EVAL_GROUP = (STORED_RECORD, OTHER_SIZE)  # eval_image's inputs, through one tf.data map


def test_eval_image_on_stored_record_is_decode_and_centre_crop():
    jpeg = STORED_RECORD
    expected = decoded(jpeg)[16:240, 16:240].astype(np.float32)
    for image in both_ways_shared(pp.eval_image, jpeg, EVAL_GROUP):
        assert image.dtype == np.float32
        np.testing.assert_array_equal(image, expected)


def test_eval_image_of_other_sizes_is_the_stored_views_centre_crop():
    jpeg = OTHER_SIZE
    reference = pp.center_crop(pp.stored_view(tf.constant(jpeg))).numpy()
    for image in both_ways_shared(pp.eval_image, jpeg, EVAL_GROUP):
        assert image.shape == (224, 224, 3)
        np.testing.assert_array_equal(image, reference)


# --- stored_view: data prep's centre square and filter ------------------------

# One shape per branch of data prep's resize: 256 exactly (no resize), shrink
# factors in (1, 2) (3-tap prefilter + bilinear), >= 2 with a half-pixel
# offset (the exact filter on the fractional square), < 1 (enlarge).
@pytest.mark.parametrize("shape", [(256, 256), (256, 300), (300, 400), (401, 300), (333, 500),
                                   (513, 1025), (600, 800), (100, 37), (1, 500), (255, 256)])
def test_stored_view_matches_data_prep_within_a_level(shape):
    """The same decoded pixels through data prep's resize_and_crop (OpenCV,
    Pillow) and through stored_view (TF): at most 1 level apart anywhere
    (rounding), 0.2 on average."""
    from data_prep import convert
    image = smooth(*shape)
    ours = pp.stored_view(tf.constant(encode(image, "PNG"))).numpy()
    theirs = convert.resize_and_crop(image, 256).astype(np.float32)
    assert ours.shape == (256, 256, 3) and ours.dtype == np.float32
    assert np.abs(ours - theirs).max() <= 1.0
    assert np.abs(ours - theirs).mean() < 0.2
    np.testing.assert_array_equal(ours, np.round(ours))  # whole levels, as data prep stores


def smooth(height, width, seed=0):
    """A smooth random image (bilinear up from a coarse grid): resamplers
    then differ by rounding only, not by aliasing."""
    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, 256, (height // 8 + 2, width // 8 + 2, 3)).astype(np.float32)
    return np.clip(tf.image.resize(coarse, [height, width]).numpy(), 0, 255).astype(np.uint8)


def test_stored_view_decodes_large_jpegs_at_reduced_size_as_data_prep():
    """A 1,100 x 2,300 JPEG: both decode at 1/4 (DCT-domain) and resample
    from there."""
    from data_prep import convert
    jpeg = encode(smooth(1100, 2300), subsampling=2)
    ours = pp.stored_view(tf.constant(jpeg)).numpy()
    assert convert.reduction_factor(1100, 2300, 256) == 4
    quarter = tf.io.decode_jpeg(jpeg, ratio=4, dct_method=pp.JPEG_DCT_METHOD).numpy()
    theirs = convert.resize_and_crop(quarter, 256).astype(np.float32)
    assert np.abs(ours - theirs).max() <= 1.0


def thin_image(fmt, shape) -> bytes:
    array = smooth(*shape) if min(shape) > 1 else pixels(*shape)
    return encode(array, fmt) if fmt != "JPEG" else encode(array, fmt, quality=100)


THIN_SHAPES, THIN_FORMATS = [(1, 6000), (6000, 1), (3, 4000)], ["PNG", "JPEG", "GIF"]
THIN = {(fmt, shape): thin_image(fmt, shape) for fmt in THIN_FORMATS for shape in THIN_SHAPES}
STORED_VIEW_GROUP = (STORED_RECORD, *THIN.values())  # stored_view's, through one tf.data map


def test_stored_view_of_a_stored_record_is_the_record():
    jpeg = STORED_RECORD
    for image in both_ways_shared(pp.stored_view, jpeg, STORED_VIEW_GROUP):
        np.testing.assert_array_equal(image, decoded(jpeg).astype(np.float32))


@pytest.mark.parametrize("fmt", THIN_FORMATS)
@pytest.mark.parametrize("shape", THIN_SHAPES)
def test_thin_images_give_the_centre_square(fmt, shape):
    """A thin image's centre square is a few source pixels: the views are
    made from that square alone (no resize of the whole image)."""
    data = THIN[fmt, shape]
    full = pp.decode_rgb(tf.constant(data)).numpy()
    short = min(shape)
    top, left = (shape[0] - short) // 2, (shape[1] - short) // 2
    square = full[top:top + short, left:left + short]
    expected = tf.round(tf.image.resize(square.astype(np.float32), [256, 256])).numpy()
    for image in both_ways_shared(pp.stored_view, data, STORED_VIEW_GROUP):
        np.testing.assert_array_equal(image, expected)
    assert pp.eval_image(tf.constant(data)).shape == (224, 224, 3)
    assert pp.ten_crops(tf.constant(data)).shape == (10, 224, 224, 3)


@pytest.mark.parametrize("crop_size, stored", [(224, 256), (227, 256), (256, 256), (67, 77),
                                               (32, 37)])
def test_crop_size_sets_the_crop_and_the_stored_size(crop_size, stored):
    """Caffe's AlexNet reads 227: its crops come from the same 256 square."""
    assert pp.stored_size(crop_size) == stored
    jpeg = encode(pixels(300, 380))
    view = pp.stored_view(tf.constant(jpeg), stored).numpy()
    offset = (stored - crop_size) // 2
    centre = view[offset:offset + crop_size, offset:offset + crop_size]
    np.testing.assert_array_equal(pp.eval_image(tf.constant(jpeg), crop_size), centre)
    crops = pp.ten_crops(tf.constant(jpeg), crop_size).numpy()
    assert crops.shape == (10, crop_size, crop_size, 3)
    np.testing.assert_array_equal(crops[4], centre)
    np.testing.assert_array_equal(crops[0], view[:crop_size, :crop_size])


# --- ten_crops --------------------------------------------------------------

TEN_CROPS = {shape: encode(pixels(*shape)) for shape in [(256, 256), (256, 320)]}


@pytest.mark.parametrize("shape", TEN_CROPS)
def test_ten_crops_are_corners_centre_and_mirrors_of_the_stored_square(shape):
    jpeg = TEN_CROPS[shape]
    h, w = shape
    full = decoded(jpeg).astype(np.float32)[:, (w - 256) // 2:(w - 256) // 2 + 256]
    windows = [(0, 0), (0, 32), (32, 0), (32, 32), (16, 16)]
    expected = np.stack([full[t:t + 224, l:l + 224] for t, l in windows])
    expected = np.concatenate([expected, expected[:, :, ::-1]])
    for crops in both_ways_shared(pp.ten_crops, jpeg, tuple(TEN_CROPS.values())):
        assert crops.shape == (10, 224, 224, 3)
        np.testing.assert_array_equal(crops, expected)
    np.testing.assert_array_equal(pp.ten_crops(tf.constant(jpeg))[4], pp.eval_image(tf.constant(jpeg)))


# --- the training view: random_crop_jpeg / random_flip / lighting -------------
# What the input pipeline runs: random_crop_and_flip per image (uint8), then
# lighting_shifts per batch, added in the train step by apply_lighting.

def find_window_patch(patch, full, size, offset=0):
    """(top, left, error): the size-square window of `full` whose pixels at
    column `offset` onward best match `patch`."""
    rows, cols = patch.shape[:2]
    best = None
    for top in range(full.shape[0] - size + 1):
        for left in range(full.shape[1] - size + 1):
            window = full[top:top + rows, left + offset:left + offset + cols]
            error = np.abs(window - patch).max()
            if best is None or error < best[2]:
                best = (top, left, error)
    return best


def find_window(crop, full):
    """Where `crop` sits in `full` (located by its corner), and the max abs
    difference over the whole crop there."""
    size = crop.shape[0]
    top, left, _ = find_window_patch(crop[:8, :8], full, size)
    return top, left, np.abs(full[top:top + size, left:left + size] - crop).max()


def test_random_crop_jpeg_equals_window_of_full_decode():
    jpeg = encode(pixels(256, 256))
    full = decoded(jpeg).astype(np.float32)
    crops = [pp.random_crop_jpeg(tf.constant(jpeg)).numpy() for _ in range(4)]
    crops.append(in_tf_data(pp.random_crop_jpeg, tf.constant(jpeg)).numpy())
    windows = set()
    for crop in crops:
        assert crop.dtype == np.uint8 and crop.shape == (224, 224, 3)
        top, left, error = find_window(crop.astype(np.float32), full)
        assert error == 0, f"crop at ({top}, {left}) differs by {error}"
        windows.add((top, left))
    assert len(windows) > 1  # it is random


def test_random_crop_jpeg_subsampled_chroma_differs_only_at_crop_edge():
    """libjpeg's cropped decode upsamples 4:2:0 chroma at the crop's left/right
    edge as at an image edge: interior pixels are exact, the edge columns may
    differ a little (training-only, so harmless; recorded here)."""
    jpeg = encode(pixels(256, 256), subsampling=2)
    full = decoded(jpeg).astype(np.float32)
    for _ in range(3):
        crop = pp.random_crop_jpeg(tf.constant(jpeg)).numpy().astype(np.float32)
        # Located by an interior patch (columns 2-9), so a crop at the left
        # image edge is found too.
        top, left, _ = find_window_patch(crop[:8, 2:10], full, 224, offset=2)
        window = full[top:top + 224, left:left + 224]
        np.testing.assert_array_equal(crop[:, 1:-1], window[:, 1:-1])
        assert np.abs(crop - window).max() <= 48


SMALL_OR_THIN = {shape: encode(pixels(*shape)) for shape in [(100, 180), (3, 4000), (4000, 3)]}


@pytest.mark.parametrize("shape", SMALL_OR_THIN)
def test_random_crop_jpeg_of_a_small_or_thin_image_is_its_centre_square(shape):
    jpeg = SMALL_OR_THIN[shape]
    full = decoded(jpeg)
    side = min(shape)
    top, left = (shape[0] - side) // 2, (shape[1] - side) // 2
    square = full[top:top + side, left:left + side].astype(np.float32)
    expected = np.round(tf.image.resize(square, [224, 224], antialias=True).numpy())
    for crop in both_ways_shared(pp.random_crop_jpeg, jpeg, tuple(SMALL_OR_THIN.values())):
        assert crop.shape == (224, 224, 3) and crop.dtype == np.uint8
        np.testing.assert_array_equal(crop, expected)


def test_random_flip_is_identity_or_mirror_and_both_happen():
    image = pixels(5, 7).astype(np.float32)
    outcomes = set()
    for _ in range(20):
        flipped = pp.random_flip(tf.constant(image)).numpy()
        if np.array_equal(flipped, image):
            outcomes.add("same")
        else:
            np.testing.assert_array_equal(flipped, image[:, ::-1])
            outcomes.add("mirror")
    dataset = tf.data.Dataset.from_tensors(image).repeat(20).map(pp.random_flip)
    for flipped in dataset:
        assert np.array_equal(flipped, image) or np.array_equal(flipped, image[:, ::-1])
    assert outcomes == {"same", "mirror"}


def test_random_crop_and_flip_is_a_window_or_its_mirror():
    jpeg = encode(pixels(256, 256))
    full = decoded(jpeg).astype(np.float32)
    for image in both_ways(pp.random_crop_and_flip, tf.constant(jpeg)):
        assert image.shape == (224, 224, 3) and image.dtype == np.uint8
        image = image.astype(np.float32)
        unflipped = min((image, image[:, ::-1]), key=lambda c: find_window(c, full)[2])
        assert find_window(unflipped, full)[2] == 0


def recovered_alphas(shifts):
    """alpha from shift = eigvec @ (alpha * eigval); eigvec is orthonormal."""
    return (shifts @ EIGVEC) / EIGVAL


def test_lighting_shifts_are_eigvec_times_alpha_eigval():
    tf.random.set_seed(5)
    shifts = pp.lighting_shifts(4, EIGVAL, EIGVEC, stddev=0.1, seed=2).numpy()
    tf.random.set_seed(5)  # the same draw, made by hand
    alpha = tf.random.normal([4, 3], stddev=0.1, seed=2).numpy()
    np.testing.assert_allclose(shifts, (EIGVEC @ (alpha * EIGVAL).T).T, rtol=1e-5, atol=1e-4)


def test_lighting_alpha_is_normal_with_stddev_point_one_eagerly_and_in_tf_data():
    eager = np.concatenate([pp.lighting_shifts(30, EIGVAL, EIGVEC).numpy() for _ in range(10)])
    dataset = tf.data.Dataset.range(30).map(
        lambda _: pp.lighting_shifts(100, EIGVAL, EIGVEC), num_parallel_calls=tf.data.AUTOTUNE)
    graph = np.concatenate(list(dataset.as_numpy_iterator()))  # 3,000 draws
    for shifts in (eager, graph):
        alphas = recovered_alphas(shifts)
        np.testing.assert_allclose(shifts, (EIGVEC @ (alphas * EIGVAL).T).T, atol=1e-3)
    alphas = recovered_alphas(graph)
    np.testing.assert_allclose(alphas.std(axis=0), 0.1, rtol=0.06)
    np.testing.assert_allclose(alphas.mean(axis=0), 0.0, atol=0.008)
    assert abs(np.corrcoef(alphas.T)[0, 1]) < 0.08  # independent per component


def test_apply_lighting_adds_each_images_shift_to_every_pixel_as_float32():
    shifts = pp.lighting_shifts(4, EIGVAL, EIGVEC, stddev=0.1, seed=2).numpy()
    crops = np.random.default_rng(0).integers(0, 256, (4, 7, 5, 3), dtype=np.uint8)
    for lit in both_ways(pp.apply_lighting, tf.constant(crops), tf.constant(shifts)):
        assert lit.dtype == np.float32
        np.testing.assert_allclose(lit, crops.astype(np.float32) + shifts[:, None, None, :],
                                   rtol=1e-6, atol=1e-4)

"""Image preprocessing in TensorFlow ops: the one module that training,
evaluation and the serving signature all run, so they cannot drift apart.

Pixels stay on the 0..255 scale as float32; the model subtracts the mean RGB.
Sizes follow the paper: images are stored 256x256 (shorter side to 256, centre
crop), the network sees 224x224 crops (section 4.1).

Evaluation and serving build data prep's stored view first (`stored_view`:
the centre square in source pixels, resized to 256x256 with data prep's
filter), then crop it. No intermediate is then larger than the decoded image
or the 256x256 square, whatever the aspect ratio.
"""

from __future__ import annotations

import functools

import tensorflow as tf

from alexnet_tf.data import square_resize
from alexnet_tf.data.decode import JPEG_DCT_METHOD, MAX_PIXELS, decode_rgb  # noqa: F401
from alexnet_tf.defaults import CROP_SIZE, STORED_SIZE  # noqa: F401  (written there)


def center_crop(image: tf.Tensor, size: int = CROP_SIZE) -> tf.Tensor:
    shape = tf.shape(image)
    top = (shape[0] - size) // 2
    left = (shape[1] - size) // 2
    return image[top:top + size, left:left + size, :]


def stored_size(crop_size: int) -> int:
    """The stored square that goes with a crop size: 256 for crops of 224
    (ours) to 256 (Caffe's AlexNet reads 227); the same 256:224 ratio for
    the small crops of tiny test models."""
    if CROP_SIZE <= crop_size <= STORED_SIZE:
        return STORED_SIZE
    return round(crop_size * STORED_SIZE / CROP_SIZE)


def stored_view(image_bytes: tf.Tensor, size: int = STORED_SIZE) -> tf.Tensor:
    """What data prep stores for these bytes, before its JPEG encoding: the
    centre square, resized to `size` x `size` with its filter (JPEGs decoded
    at 1/2, 1/4 or 1/8 scale where it does). float32 [size, size, 3], whole
    levels 0..255; a `size` x `size` record passes through exactly."""
    return _stored_view_function(size)(image_bytes)


@functools.lru_cache(maxsize=None)
def _stored_view_function(size: int):
    # One traced function per size, called by every evaluation pipeline and
    # export of the process: the decoder's header checks are ~1,400 graph
    # ops, built once rather than into each dataset's map function.
    return tf.function(
        lambda image_bytes: square_resize.resize_centre_square(
            decode_rgb(image_bytes, min_side=size), size),
        input_signature=[tf.TensorSpec([], tf.string)], autograph=False)


def eval_image(image_bytes: tf.Tensor, crop_size: int = CROP_SIZE,
               resize_to: int | None = None) -> tf.Tensor:
    """The evaluation and serving view: the stored view (256x256, a no-op on
    data prep's records), centre crop `crop_size`. float32 0..255."""
    image = center_crop(stored_view(image_bytes, resize_to or stored_size(crop_size)), crop_size)
    image.set_shape([crop_size, crop_size, 3])
    return image


def ten_crops(image_bytes: tf.Tensor, crop_size: int = CROP_SIZE,
              resize_to: int | None = None) -> tf.Tensor:
    """The paper's test-time crops of the stored view: four corners and the
    centre, and their horizontal flips -> float32 [10, crop, crop, 3]."""
    image = stored_view(image_bytes, resize_to or stored_size(crop_size))
    shape = tf.shape(image)
    bottom, right = shape[0] - crop_size, shape[1] - crop_size
    offsets = [(0, 0), (0, right), (bottom, 0), (bottom, right),
               (bottom // 2, right // 2)]
    crops = tf.stack([image[t:t + crop_size, l:l + crop_size, :] for t, l in offsets])
    crops = tf.concat([crops, tf.reverse(crops, axis=[2])], axis=0)
    crops.set_shape([10, crop_size, crop_size, 3])
    return crops


def random_crop_jpeg(image_bytes: tf.Tensor, crop_size: int = CROP_SIZE,
                     seed=None) -> tf.Tensor:
    """A random crop_size square of a JPEG, decoding only that window
    (`decode_and_crop_jpeg`); uint8, so the flip after it moves a quarter of
    float32's bytes. An image smaller than the crop (records from other
    tools) becomes its centre square resized to the crop: memory bounded by
    the decoded image whatever its shape, rounded to uint8 as data prep
    stores images."""
    shape = tf.image.extract_jpeg_shape(image_bytes)
    height, width = shape[0], shape[1]

    def crop():
        top = tf.random.uniform([], 0, height - crop_size + 1, tf.int32, seed=seed)
        left = tf.random.uniform([], 0, width - crop_size + 1, tf.int32, seed=seed)
        window = tf.stack([top, left, crop_size, crop_size])
        return tf.image.decode_and_crop_jpeg(image_bytes, window, channels=3,
                                             dct_method=JPEG_DCT_METHOD)

    def small():  # the centre square, resized up (bilinear): kept light, it is traced
        # into every training map function, where the general decoder costs ~10%
        image = tf.io.decode_jpeg(image_bytes, channels=3, dct_method=JPEG_DCT_METHOD)
        side = tf.minimum(height, width)
        square = image[(height - side) // 2:(height - side) // 2 + side,
                       (width - side) // 2:(width - side) // 2 + side]
        resized = tf.image.resize(square, [crop_size, crop_size], method="bilinear",
                                  antialias=True)
        return tf.saturate_cast(tf.round(resized), tf.uint8)

    image = tf.cond(tf.minimum(height, width) >= crop_size, crop, small)
    image.set_shape([crop_size, crop_size, 3])
    return image


def random_flip(image: tf.Tensor, seed=None) -> tf.Tensor:
    return tf.image.random_flip_left_right(image, seed=seed)


def lighting_shifts(batch_size, eigval, eigvec, stddev: float = 0.1,
                    seed=None) -> tf.Tensor:
    """Section 4.1's per-image RGB shifts, float32 [B, 3]: sum_i p_i * alpha_i
    * lambda_i with alpha_i ~ N(0, stddev) drawn once per image.

    The training input draws these in tf.data and leaves the per-pixel add
    to the train step (`apply_lighting`, on the accelerator): the input
    threads then move uint8 crops only, a quarter of float32's bytes.
    """
    eigval = tf.constant(eigval, tf.float32)
    eigvec = tf.constant(eigvec, tf.float32)
    alpha = tf.random.normal([batch_size, 3], stddev=stddev, seed=seed)
    return tf.linalg.matmul(alpha * eigval, eigvec, transpose_b=True)


def apply_lighting(images: tf.Tensor, shifts: tf.Tensor) -> tf.Tensor:
    """images [B, H, W, 3] (uint8 or float) + shifts [B, 3] -> float32: the
    float cast and the lighting's add in one pass over the batch."""
    return _add_rgb(tf.cast(images, tf.float32), tf.cast(shifts, tf.float32))


def _add_rgb(images: tf.Tensor, rgb: tf.Tensor) -> tf.Tensor:
    """images [B, H, W, 3] + rgb [B, 3] at every pixel of each image.

    Done as [B, H, W*3] + a tiled [B, 1, W*3] row: TF's CPU kernel for
    broadcasting a 3-vector over [..., W, 3] costs about as much as decoding
    the crop, while broadcasting a long row is as cheap as a scalar add
    (bench_input.py).
    """
    width = tf.shape(images)[2]
    rows = tf.reshape(images, [tf.shape(images)[0], -1, width * 3])
    shifted = rows + tf.tile(rgb, [1, width])[:, tf.newaxis, :]
    result = tf.reshape(shifted, tf.shape(images))
    result.set_shape(images.shape)
    return result


def random_crop_and_flip(image_bytes: tf.Tensor, crop_size: int = CROP_SIZE,
                         seed=None) -> tf.Tensor:
    """The geometric part of the training view, uint8: a random crop_size
    square (decode_and_crop_jpeg) and a random horizontal flip."""
    return random_flip(random_crop_jpeg(image_bytes, crop_size, seed), seed)

"""A stand-in network whose `fc7` features are its own input pixels.

Exported with `export.export_saved_model`, its `features` signature returns
exactly the float32 image the serving graph built from the request bytes, so
tests and `benchmarks/parity_serving_vs_dataprep.py` can compare the serving
graph's preprocessing with evaluation's and data prep's, pixel by pixel. It
has the layer names the export relies on (`fc7`, `fc8`, `probabilities`).
"""

from __future__ import annotations

import keras

from alexnet_tf.data import preprocessing


def build_probe_model(num_classes: int, image_size: int = preprocessing.CROP_SIZE,
                      seed: int = 0) -> keras.Model:
    images = keras.Input((image_size, image_size, 3), name="image")
    pixels = keras.layers.Flatten(name="fc7")(images)
    # Small random weights: the class scores depend on every pixel, so the
    # signatures' outputs would also change if the preprocessing did.
    logits = keras.layers.Dense(
        num_classes, name="fc8",
        kernel_initializer=keras.initializers.RandomNormal(0.0, 1e-4, seed=seed))(pixels)
    probabilities = keras.layers.Softmax(name="probabilities")(logits)
    return keras.Model(images, probabilities, name="preprocessing_probe")

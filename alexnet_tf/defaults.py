"""The defaults that more than one module (or a command line and the library)
use, each written once here.

Light on purpose (no TensorFlow): the config dataclasses, hence the flags,
read it before TensorFlow loads, and so do the library functions below them
(the model, the input pipeline, the optimizer, the serving signatures), so a
flag's default and the library's are the same number.
"""

# Section 5: minibatches of 128, SGD with momentum 0.9 and weight decay
# 0.0005, learning rate 0.01.
BATCH_SIZE = 128
LEARNING_RATE = 0.01
MOMENTUM = 0.9
WEIGHT_DECAY = 0.0005

# Section 2 and 4.1: images stored 256x256, the network reads 224x224 crops.
STORED_SIZE = 256
CROP_SIZE = 224

# Training examples in the input pipeline's shuffle buffer.
SHUFFLE_BUFFER = 10_000

# Classes in the top-k outputs of evaluation and serving (Table 2's top-5).
TOP_K = 5

# Where launch.export writes its versions and launch.serve finds them; TF
# Serving's model name defaults to its last component.
EXPORT_DIR = "saved_models/alexnet"

# The longest image a serving request may send (launch.export
# --max_image_bytes; launch.predict checks files against it). Sized for real
# photos: a 24-megapixel camera JPEG at high quality is 8-15 MB, a phone's
# 2-6 MB. See alexnet_tf/serving/budget.py and docs/serving.md.
MAX_IMAGE_BYTES = 16 << 20

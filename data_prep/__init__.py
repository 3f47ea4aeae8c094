"""Offline data prep: image folders and ILSVRC archives -> TFRecord shards."""

import alexnet_tf.cli  # noqa: F401  hides TensorFlow's C++ log before it loads (see alexnet_tf.cli)

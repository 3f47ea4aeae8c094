"""Offline data prep: image folders and ILSVRC archives -> TFRecord shards."""

import launch  # noqa: F401  quiets TensorFlow's C++ log before it loads (see launch/__init__)

"""Thin absl front-ends over the library (the README's table names each command).

Importing this package (every `python -m launch.X` does, before TensorFlow
loads) quiets TensorFlow's C++ log through `alexnet_tf.cli`, whose helpers
(flags from config dataclasses, the terminal) every launcher uses.
"""

import alexnet_tf.cli  # noqa: F401  before TensorFlow loads: hides its C++ INFO lines

"""Thin absl front-ends over the library (see the README for each command).

Importing this package (every `python -m launch.X` does, before TensorFlow
loads) hides TensorFlow's C++ INFO and WARNING lines unless the user set
TF_CPP_MIN_LOG_LEVEL; `launch.terminal` does the rest of the quieting.
"""

import os

USER_SET_TF_LOG_LEVEL = "TF_CPP_MIN_LOG_LEVEL" in os.environ
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

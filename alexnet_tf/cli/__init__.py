"""What every command line of the project shares, below the tools that use
it (`launch/`, `data_prep/`): flags defined from config dataclasses
(`config_flags`) and the quiet terminal with one-line user errors
(`terminal`).

Importing this package hides TensorFlow's C++ INFO and WARNING lines unless
the user set TF_CPP_MIN_LOG_LEVEL; it must run before TensorFlow loads, so
`launch/__init__.py` and `data_prep/__init__.py` import it first thing.
`terminal` does the rest of the quieting.
"""

import os

USER_SET_TF_LOG_LEVEL = "TF_CPP_MIN_LOG_LEVEL" in os.environ
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

"""A request's budget: the byte limit every serving signature checks on each
input before any op copies it, and its record in an export.

`max_image_bytes`'s default lives in `alexnet_tf.defaults`; the export
(`export.py`, `launch.export --max_image_bytes`) and `launch.predict`'s
file check use it. No TensorFlow here, so a client imports it for free. The other limits
(pixels, batch size, JPEG scans, PNG text chunks, GIF blocks) are fixed in
the graph; the export records them next to this one in
`assets/request_budget.json`.
"""

from __future__ import annotations

import json
import os

from alexnet_tf import defaults

DEFAULT_MAX_IMAGE_BYTES = defaults.MAX_IMAGE_BYTES  # its one home: alexnet_tf/defaults.py
# A classify request's tf.Example may be this much larger than its image:
# the other features (label, file name, text) and the protobuf framing.
EXAMPLE_OVERHEAD_BYTES = 64 << 10
# String lengths are int32 in TensorFlow's ops.
MAX_SETTABLE_BYTES = (1 << 31) - 1 - EXAMPLE_OVERHEAD_BYTES
BUDGET_FILENAME = "request_budget.json"


def check_max_image_bytes(value: int) -> int:
    """`value` as an int, or ValueError naming the allowed range."""
    if isinstance(value, bool) or int(value) != value or not 1 <= value <= MAX_SETTABLE_BYTES:
        raise ValueError(f"max_image_bytes must be an integer from 1 to {MAX_SETTABLE_BYTES:,}, "
                         f"got {value!r}")
    return int(value)


def describe(count: int) -> str:
    """A byte count for messages: "16 MB (16,777,216 bytes)"."""
    if count >= 1 << 30:
        return f"{count / (1 << 30):.4g} GB ({count:,} bytes)"
    if count >= 1 << 20:
        return f"{count / (1 << 20):.4g} MB ({count:,} bytes)"
    return f"{count:,} bytes"


def write_record(path: str, limits: dict) -> None:
    with open(path, "w") as f:
        json.dump(limits, f, indent=1, sort_keys=True)
        f.write("\n")


def recorded_max_image_bytes(saved_model_dir: str) -> int | None:
    """The max_image_bytes an export records in assets/request_budget.json,
    or None when it records none (an export from before the budget)."""
    path = os.path.join(saved_model_dir, "assets", BUDGET_FILENAME)
    try:
        with open(path) as f:
            return check_max_image_bytes(json.load(f)["max_image_bytes"])
    except (OSError, ValueError, KeyError, TypeError):
        return None

"""`python tests/build_probe.py [build flags]`: runs data_prep.build_tfrecords
as `python -m data_prep.build_tfrecords` would, except that each process
that converts images (the build itself with one worker, else each worker)
converts $BUILD_PROBE_HOLD_AFTER of them, then holds every further one until
the file $BUILD_PROBE_GATE exists (never, if unset). A test sees a first
shard published and acts (Ctrl-C, kill -9, a second build) while the build
is certainly part-way: tiny images, no race against the build's end.

Workers run this file's top level too (multiprocessing imports the main
script as __mp_main__ in each), so they hold alike.
"""

import os
import runpy
import sys
import time

from data_prep import convert

_HOLD_AFTER = int(os.environ["BUILD_PROBE_HOLD_AFTER"])
_GATE = os.environ.get("BUILD_PROBE_GATE")
_converted = 0
_real_convert = convert.convert


def _held_convert(*args, **kwargs):
    global _converted
    if _converted >= _HOLD_AFTER:
        while not (_GATE and os.path.exists(_GATE)):
            time.sleep(0.02)  # Ctrl-C reaches the build here (workers ignore it)
    _converted += 1
    return _real_convert(*args, **kwargs)


convert.convert = _held_convert

if __name__ == "__main__":
    sys.argv = ["data_prep/build_tfrecords.py", *sys.argv[1:]]
    # Not alter_sys: __main__ stays this file, which the workers import.
    runpy.run_module("data_prep.build_tfrecords", run_name="__main__")

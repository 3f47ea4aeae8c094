"""Peak memory and time of reading Caffe weights, each in a fresh process.

    python -m benchmarks.bench_caffe_import

Prints, for the genuine Caffe-written LeNet (../shared/data/caffe) and a
SYNTHETIC full-size AlexNet caffemodel in both layer formats (random weights
of bvlc_alexnet's shapes, tests/caffe_fixtures.py; the real
bvlc_alexnet.caffemodel cannot be downloaded here): the peak RSS (VmHWM) of
a process that only imports the reader, of one that reads the file
(`netparameter.read_net`), and of the whole `launch.import_caffe`, with the
file's size for scale. Each child is capped (RLIMIT_AS) so a regression fails
here, not the machine.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))
import caffe_fixtures as fx  # noqa: E402
import caffe_reference as ref  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED = os.path.join(ROOT, "..", "shared", "data", "caffe")
CAP_BYTES = 8 << 30  # address space per child (TensorFlow reserves a lot of it)

_CHILD = """
import resource, runpy, sys, time
resource.setrlimit(resource.RLIMIT_AS, ({cap}, {cap}))
what, path = sys.argv[1], sys.argv[2]
start = time.process_time()
from alexnet_tf.caffe import netparameter
if what == "read":
    net = netparameter.read_net(path)
elif what == "import":
    sys.argv = ["import_caffe", "--caffemodel=" + path, "--model_dir=" + sys.argv[3]]
    try:
        runpy.run_module("launch.import_caffe", run_name="__main__", alter_sys=True)
    except SystemExit as e:
        assert not e.code, e.code
cpu = time.process_time() - start
kib = next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmHWM:"))
print(kib * 1024, cpu)
"""


def measure(what: str, path: str = "", *extra: str) -> tuple[float, float]:
    """(peak RSS bytes, CPU seconds) of one child."""
    env = {**os.environ, "PYTHONPATH": ROOT, "TF_CPP_MIN_LOG_LEVEL": "3"}
    result = subprocess.run([sys.executable, "-c", _CHILD.format(cap=CAP_BYTES), what, path,
                             *extra], env=env, capture_output=True, text=True, timeout=900)
    if result.returncode:
        raise SystemExit(f"{what} {path}: exit {result.returncode}: "
                         f"{result.stderr.strip().splitlines()[-1:]}")
    peak, cpu = result.stdout.split()[-2:]
    return float(peak), float(cpu)


def main() -> None:
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} cores, "
          f"{time.strftime('%Y-%m-%d')}")
    base, _ = measure("none")
    print(f"import of the reader only: peak RSS {base / 1e6:.0f} MB")
    lenet = os.path.join(SHARED, "lenet_iter_10000.caffemodel")
    if os.path.exists(lenet):
        peak, cpu = measure("read", lenet)
        print(f"read_net LeNet ({os.path.getsize(lenet) / 1e6:.1f} MB, genuine Caffe file): "
              f"peak RSS {peak / 1e6:.0f} MB (+{(peak - base) / 1e6:.0f}), {cpu:.2f} s CPU")
    spec = ref.NetSpec()
    weights, biases = fx.alexnet_weights(spec, seed=11)
    with tempfile.TemporaryDirectory() as folder:
        for v1 in (False, True):
            path = fx.write_caffemodel(os.path.join(folder, f"bvlc_{v1}.caffemodel"), spec,
                                       weights, biases, v1=v1)
            size = os.path.getsize(path)
            label = f"synthetic AlexNet, {'V1 layers' if v1 else 'layer'} format"
            peak, cpu = measure("read", path)
            print(f"read_net {label} ({size / 1e6:.0f} MB): peak RSS {peak / 1e6:.0f} MB "
                  f"(+{(peak - base) / 1e6:.0f} = {(peak - base) / size:.2f}x the file), "
                  f"{cpu:.2f} s CPU")
        peak, cpu = measure("import", path, os.path.join(folder, "run"))
        print(f"launch.import_caffe {label} (parse, check, build, write the model_dir): "
              f"peak RSS {peak / 1e6:.0f} MB, {cpu:.1f} s CPU")


if __name__ == "__main__":
    main()

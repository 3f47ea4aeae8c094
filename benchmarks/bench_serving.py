"""In-process serving throughput and latency on the CPU (issue 5).

Exports the full-size AlexNet (random weights: speed does not depend on
them) to a temporary directory, loads it back with `tf.saved_model.load`, and
times, in the same run:
  serving_default   encoded JPEG bytes in (decode + resize + crop in the graph)
  predict_images    float32 [N, 224, 224, 3] in: the same graph minus decoding
  keras call        `model(x, training=False)` on already-decoded arrays,
                    the baseline the ratios are against
at batch 1 and 32 (images/s), and batch-1 latency p50 / p99. Then the peak
memory of single serving_default requests, measured in a child process
(tests/request_memory.py: peak RSS above the level before the call): a
normal photo next to 1 x 65,500 and 65,500 x 1 images and a GIF bomb, the
inputs that cost gigabytes before issue 12, and the largest images the pixel
limits let through (decode.MAX_LOSSLESS_PIXELS, MAX_PIXELS,
MAX_MULTI_SCAN_JPEG_PIXELS). Last, the hostile corpus of the tests'
request fuzzer (tests/request_fuzz.py: each family's known attacks and
--fuzz_cases random structure-aware mutations): per family, the worst CPU
seconds and peak MB of one request, next to a normal photo's.

    python -m benchmarks.bench_serving [--data_dir=../shared/data/imagenet-sample]
        [--batch1_iterations=60] [--batch32_iterations=6]

Images are real photos from --data_dir when it exists (full-size JPEGs, so
the decode includes the resize to 256), else synthetic 500x375 JPEGs.
"""

from __future__ import annotations

import glob
import os
import sys
import tempfile
import time

from absl import app, flags
import numpy as np
import tensorflow as tf

from alexnet_tf.serving import export
from alexnet_tf.data import preprocessing
from alexnet_tf.data.labels import LabelMap
from alexnet_tf.model.alexnet import build_alexnet

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))
import hostile_images  # noqa: E402  the tests' hostile inputs
import request_fuzz  # noqa: E402  the tests' request fuzzer
import request_memory  # noqa: E402  peak memory of one request, in a child process

FLAGS = flags.FLAGS
flags.DEFINE_string("data_dir", "../shared/data/imagenet-sample",
                    "JPEG photos to send; synthetic images when the folder is absent.")
flags.DEFINE_integer("batch1_iterations", 60, "Timed batch-1 calls per method.")
flags.DEFINE_integer("batch32_iterations", 6, "Timed batch-32 calls per method.")
flags.DEFINE_integer("warmup", 3, "Untimed calls before timing each case.")
flags.DEFINE_integer("fuzz_seed", 0, "Seed of the hostile corpus (request_fuzz.cases).")
flags.DEFINE_integer("fuzz_cases", 70, "Random mutations in the hostile corpus, besides "
                     "each family's known attacks.")
flags.DEFINE_float("memory_kill_mb", 4000, "The memory child is killed past this many MB "
                   "above its starting level (a regression must not take the machine down).")


def load_jpegs(count: int) -> list[bytes]:
    files = sorted(glob.glob(os.path.join(FLAGS.data_dir, "*.JPEG")))[:count]
    if files:
        out = []
        for name in files:
            with open(name, "rb") as f:
                out.append(f.read())
        return out
    rng = np.random.default_rng(0)
    return [tf.io.encode_jpeg(rng.integers(0, 256, (375, 500, 3), dtype=np.uint8)).numpy()
            for _ in range(count)]


def time_calls(fn, batches, iterations: int, warmup: int) -> np.ndarray:
    """Seconds per call, fn applied to batches round-robin."""
    for i in range(warmup):
        fn(batches[i % len(batches)])
    seconds = []
    for i in range(iterations):
        batch = batches[i % len(batches)]
        start = time.perf_counter()
        fn(batch)
        seconds.append(time.perf_counter() - start)
    return np.array(seconds)


def main(argv):
    del argv
    jpegs = load_jpegs(64)
    source = FLAGS.data_dir if os.path.isdir(FLAGS.data_dir) else "synthetic 500x375"
    model = build_alexnet(1000)
    labels = LabelMap.from_wnids([f"n{i:08d}" for i in range(1000)])
    decoded = [preprocessing.eval_image(tf.constant(b)).numpy() for b in jpegs]
    with tempfile.TemporaryDirectory() as tmp:
        path = export.export_saved_model(model, labels, tmp, warmup=False)
        loaded = tf.saved_model.load(path)
        serve_bytes = loaded.signatures[export.SERVING_DEFAULT]
        serve_arrays = loaded.signatures[export.PREDICT_IMAGES]
        cases = {
            "serving_default (JPEG bytes)":
                (lambda b: serve_bytes(image_bytes=tf.constant(b)), jpegs),
            "predict_images (arrays)":
                (lambda x: serve_arrays(images=tf.constant(x)), decoded),
            "keras call (arrays)":
                (lambda x: model(tf.constant(x), training=False), decoded),
        }
        results = {}
        memory = request_peaks(path, jpegs[0], tmp)
        fuzz = request_fuzz.measure(
            path, [(case, 1) for case in request_fuzz.cases(FLAGS.fuzz_seed, FLAGS.fuzz_cases)],
            os.path.join(tmp, "fuzz"), jpegs[0], kill_mb=FLAGS.memory_kill_mb)
        for name, (fn, items) in cases.items():
            batch1 = [items[i:i + 1] for i in range(len(items))]
            batch32 = [items[i:i + 32] for i in range(0, len(items) - 31, 32)]
            batch32 = [np.stack(b) if isinstance(b[0], np.ndarray) else b for b in batch32]
            batch1 = [np.stack(b) if isinstance(b[0], np.ndarray) else b for b in batch1]
            t1 = time_calls(fn, batch1, FLAGS.batch1_iterations, FLAGS.warmup)
            t32 = time_calls(fn, batch32, FLAGS.batch32_iterations, 1)
            results[name] = {
                "batch1_ips": 1.0 / t1.mean(), "batch32_ips": 32.0 / t32.mean(),
                "p50_ms": 1e3 * np.percentile(t1, 50), "p99_ms": 1e3 * np.percentile(t1, 99)}
    base = results["keras call (arrays)"]
    print(f"AlexNet 1000 classes ({model.count_params():,} params), CPU, "
          f"{os.cpu_count()} cores, images: {source}")
    print(f"{'method':32s} {'b1 img/s':>9s} {'b32 img/s':>10s} {'p50 ms':>8s} {'p99 ms':>8s}"
          f" {'b1 x keras':>10s} {'b32 x keras':>11s}")
    for name, r in results.items():
        print(f"{name:32s} {r['batch1_ips']:9.1f} {r['batch32_ips']:10.1f} "
              f"{r['p50_ms']:8.1f} {r['p99_ms']:8.1f} "
              f"{r['batch1_ips'] / base['batch1_ips']:10.2f} "
              f"{r['batch32_ips'] / base['batch32_ips']:11.2f}")
    print("\npeak memory of one serving_default request, above the level before it "
          "(child process, full AlexNet):")
    for case in memory["cases"]:
        label = os.path.basename(case["case"].split(":", 1)[1])
        status = f"refused: {case['error']}" if case["error"] else "answered"
        print(f"  {label:38s} {case['peak_mb']:8.1f} MB   {status[:60]}")
    print(f"  highest peak of all, above the level before the first: "
          f"{memory['peak_above_start_mb']:.1f} MB; model answers normally after each: "
          f"{memory['answers_after']}")
    print_fuzz(fuzz)


def print_fuzz(answer: dict) -> None:
    """Worst CPU seconds and peak MB per family over the hostile corpus,
    next to the normal photo's (request_fuzz: budget 2 s per image, own
    bytes + 200 MB above the photo)."""
    cases = answer["cases"]
    if "killed" in answer:
        print(f"\nhostile corpus: memory child KILLED at {answer['rss_mb']:.0f} MB by "
              f"{answer['killed_case']}")
    if not cases:
        return
    print(f"\nhostile corpus (request_fuzz, seed {FLAGS.fuzz_seed}): {len(cases)} requests of "
          "one item, serving_default (classify for Examples); normal photo: "
          f"{cases[0]['normal_cpu_s']:.3f} CPU s, {cases[0]['normal_peak_mb']:.1f} MB peak")
    print(f"  {'family':17s} {'cases':>5s} {'refused':>7s} {'worst CPU s':>11s} "
          f"{'worst peak MB':>13s}  over budget   worst case (CPU / memory)")
    for family, (count, cpu, cpu_case, peak, peak_case) in request_fuzz.worst_by_family(
            cases).items():
        mine = [r for r in cases if r["family"] == family]
        refused = sum(r["error"] is not None for r in mine)
        over = sum(bool(request_fuzz.over_budget(r)) for r in mine)
        print(f"  {family:17s} {count:5d} {refused:7d} {cpu:11.3f} {peak:13.1f}  {over:11d}   "
              f"{cpu_case[:34]} / {peak_case[:34]}")
    print(f"  model answers the normal photo the same after each: {answer.get('answers_after')}")


def request_peaks(saved_model: str, photo: bytes, folder: str) -> dict:
    """request_memory's answer for a normal photo and the hostile inputs."""
    inputs = {
        "normal photo.jpeg": photo,
        "1x65500.png": hostile_images.thin(65500, "PNG"),
        "1x65500.jpeg": hostile_images.thin(65500, "JPEG"),
        "65500x1.jpeg": hostile_images.thin(65500, "JPEG", vertical=True),
        "65500x1.gif": hostile_images.thin(65500, "GIF", vertical=True),
        "gif 1x1 then 6000x6000.gif": hostile_images.gif_large_second_frame(6000),
        "gif 600 frames of 1024x1024.gif": hostile_images.gif_repeated_frames(1024, 600),
        # The largest images the limits let through: their cost is the decoder's.
        "7000x7000.png": hostile_images.largest_allowed("PNG", side=7000),
        "8192x8192 baseline.jpeg": hostile_images.largest_allowed("JPEG", subsampling=0),
        "5000x5000 progressive 4:4:4.jpeg": hostile_images.largest_allowed(
            "JPEG", side=5000, progressive=True, subsampling=0),
    }
    cases = []
    for name, data in inputs.items():
        path = os.path.join(folder, name)
        with open(path, "wb") as f:
            f.write(data)
        cases.append((export.SERVING_DEFAULT, path))
    answer = request_memory.measure(saved_model, cases, kill_mb=FLAGS.memory_kill_mb)
    if "killed" in answer:
        raise SystemExit(f"memory child killed at {answer['rss_mb']:.0f} MB on {answer['killed']}")
    return answer


if __name__ == "__main__":
    app.run(main)

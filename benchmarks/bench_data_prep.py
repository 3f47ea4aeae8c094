"""Data prep images/s: the tool against a plain Pillow loop, 1 and N workers, peak RSS.

Input: the 1,000 real photos of ../shared/data/imagenet-sample (median
500x375), arranged by symlinks into an imagefolder tree (train/<wnid>/) in
a temporary folder; "x2" holds every photo twice (2,000 files).

Measured in the same run, rounds interleaved (baseline, tool, baseline, ...)
so load from other processes hits both alike; the best round counts:
  baseline    a plain single-process Pillow loop: read, full decode, resize
              the whole image (shorter side to 256, Pillow BILINEAR, i.e. an
              antialiased triangle filter), centre crop, JPEG encode at the
              same quality and chroma subsampling (4:2:0). No TFRecords.
  tool x1     `build_tfrecords.build` with 1 worker (in-process): reading,
              DCT-domain reduced decode (1/2, 1/4, 1/8 when the photo is
              large enough), antialiased bilinear on the centre square
              (3-tap variance-matched prefilter + OpenCV bilinear; exact
              Pillow BILINEAR for shrinks >= 2), encode, Example bytes,
              TFRecord writing, sha256, RGB statistics, manifest.
Per core: both run pinned to one CPU; the figure is images per CPU-second of
the process (wall-clock images/s beside it).
N workers: the tool with --num_workers=N, unpinned; wall-clock images/s over
the conversion (the fork server that imports the writer once is started
before timing; its cold start is printed separately). The speed-up is
against the 1-worker wall-clock rate of an unpinned run in the same
conditions. Other processes sharing the cores lower it: the load average is
printed.
Quality: PSNR of each method's stored JPEG (decoded) against a float
resample of the full decode in that method's own crop geometry: with the
exact antialiased bilinear filter (faithfulness to the stated filter) and
with Lanczos-3 (an independent, sharper reference).
Peak RSS: sampled every 20 ms over the process tree (parent, fork server,
workers) for x1 and x2, all workers.
Leak check: the cost of `data_prep.duplicates` (the train/validation check,
up front, and the SHA-256 each worker takes for the duplicate listing). The
photos go into 100 classes; train holds links to 800 of them, val byte copies
of the other 200 plus of 20 training photos (leaks). Builds with 1 worker,
pinned to one CPU, with --on_leak=report (so both convert the same images)
against `check_duplicates=False`, rounds interleaved, best round of each;
then the check alone when every input is a candidate (val = a byte copy of
all 1,000: the worst case, where every input is read twice).

    python benchmarks/bench_data_prep.py [--data_dir=../shared/data/imagenet-sample]
    python benchmarks/bench_data_prep.py --only_leak_check
"""

from __future__ import annotations

import glob
import io
import os
import shutil
import tempfile
import threading
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import psutil  # noqa: E402
import simplejpeg  # noqa: E402
from absl import app, flags  # noqa: E402
from PIL import Image  # noqa: E402

from data_prep import build_tfrecords, convert  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_string("data_dir", os.path.join(os.path.dirname(__file__), "..", "..", "shared",
                                             "data", "imagenet-sample"),
                    "Folder of real JPEG photos (*.JPEG) named <wnid>_<name>.JPEG.")
flags.DEFINE_integer("quality", 95, "JPEG quality for both the baseline and the tool.")
flags.DEFINE_integer("rounds", 3, "Interleaved rounds per per-core measurement; best counts.")
flags.DEFINE_integer("workers", 0, "N for the N-worker figure; 0 = all cores.")
flags.DEFINE_integer("quality_images", 150, "Photos used for the PSNR comparison.")
flags.DEFINE_bool("only_leak_check", False, "Measure only the leak check's cost.")

SIZE = 256


# ---------------------------------------------------------------- baseline

def baseline_convert(data: bytes, quality: int, resample=Image.Resampling.BILINEAR) -> bytes:
    """The plain Pillow loop body: full decode, resize whole image, crop, encode."""
    image = Image.open(io.BytesIO(data)).convert("RGB")
    width, height = image.size
    scale = SIZE / min(width, height)
    new_w, new_h = max(SIZE, round(width * scale)), max(SIZE, round(height * scale))
    image = image.resize((new_w, new_h), resample)
    left, top = (new_w - SIZE) // 2, (new_h - SIZE) // 2
    image = image.crop((left, top, left + SIZE, top + SIZE))
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=quality)  # Pillow's default chroma: 4:2:0
    return buffer.getvalue()


def run_baseline(paths, quality, resample=Image.Resampling.BILINEAR):
    cpu, wall = time.process_time(), time.perf_counter()
    for path in paths:
        with open(path, "rb") as f:
            baseline_convert(f.read(), quality, resample)
    return len(paths) / (time.process_time() - cpu), len(paths) / (time.perf_counter() - wall)


# ---------------------------------------------------------------- tool

def arrange(paths, root, copies=1):
    """imagefolder tree of symlinks: train/<wnid>/<copy>_<file>."""
    for path in paths:
        wnid = os.path.basename(path).split("_")[0]
        folder = os.path.join(root, "train", wnid)
        os.makedirs(folder, exist_ok=True)
        for c in range(copies):
            os.symlink(os.path.abspath(path), os.path.join(folder, f"{c}_{os.path.basename(path)}"))
    return root


def run_tool(input_dir, output_dir, workers, quality, shards=8):
    shutil.rmtree(output_dir, ignore_errors=True)
    me = psutil.Process()
    cpu_before = _tree_cpu(me)
    wall = time.perf_counter()
    summary = build_tfrecords.build(build_tfrecords.BuildConfig(
        input_dir, output_dir, train_shards=shards, num_workers=workers, quality=quality,
        min_images_per_worker=0), log=open(os.devnull, "w"))
    wall = time.perf_counter() - wall
    cpu = _tree_cpu(me) - cpu_before
    return summary, summary.found / max(cpu, 1e-9), summary.found / wall


def _tree_cpu(process) -> float:
    """CPU seconds of this process and its descendants, live or reaped. The
    pool's workers are children of the (live) fork server, which reaps them:
    their time shows in its children_* fields."""
    total = 0.0
    for p in [process] + process.children(recursive=True):
        try:
            t = p.cpu_times()
        except psutil.NoSuchProcess:
            continue
        total += t.user + t.system + t.children_user + t.children_system
    return total


class PeakRSS:
    """Samples the RSS of this process and all its descendants."""

    def __init__(self, every=0.02):
        self.every, self.peak_total, self.peak_single, self._stop = every, 0, 0, False

    def __enter__(self):
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop = True
        self._thread.join()

    def _run(self):
        me = psutil.Process()
        while not self._stop:
            rss = []
            for p in [me] + me.children(recursive=True):
                try:
                    rss.append(p.memory_info().rss)
                except psutil.NoSuchProcess:
                    pass
            self.peak_total = max(self.peak_total, sum(rss))
            self.peak_single = max(self.peak_single, max(rss))
            time.sleep(self.every)


# ---------------------------------------------------------------- quality

def _float_resize(rgb: np.ndarray, size, box=None,
                  resample=Image.Resampling.BILINEAR) -> np.ndarray:
    channels = [np.asarray(Image.fromarray(rgb[..., k].astype(np.float32), "F").resize(
        size, resample, box=box)) for k in range(3)]
    return np.stack(channels, -1)


def _psnr(a, b):
    mse = np.mean((np.asarray(a, np.float64) - np.asarray(b, np.float64)) ** 2)
    return 10 * np.log10(255.0 ** 2 / mse)


def quality_psnr(paths, quality, resample=Image.Resampling.BILINEAR):
    """(tool, baseline) mean PSNR of the stored JPEGs against `resample` in
    float on the full decode, each in its own crop geometry."""
    tool, base = [], []
    for path in paths:
        data = open(path, "rb").read()
        full = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))
        h, w = full.shape[:2]
        short = min(h, w)
        top, left = (h - short) // 2, (w - short) // 2  # the tool's centre square
        ref_tool = _float_resize(full, (SIZE, SIZE), (left, top, left + short, top + short),
                                 resample)
        tool.append(_psnr(simplejpeg.decode_jpeg(convert.convert(data, quality=quality).encoded),
                          ref_tool))
        scale = SIZE / short
        new_w, new_h = max(SIZE, round(w * scale)), max(SIZE, round(h * scale))
        bl, bt = (new_w - SIZE) // 2, (new_h - SIZE) // 2
        ref_base = _float_resize(full, (new_w, new_h), None, resample)[bt:bt + SIZE, bl:bl + SIZE]
        base.append(_psnr(simplejpeg.decode_jpeg(baseline_convert(data, quality)), ref_base))
    return float(np.mean(tool)), float(np.mean(base))


# ---------------------------------------------------------------- decoders

def decoder_choice(paths):
    """ms per photo: full decode, Pillow draft, simplejpeg power-of-two
    scaling (what the tool uses) and simplejpeg's smallest M/8 scale."""
    blobs = [open(p, "rb").read() for p in paths]

    def pil_full(d):
        return np.asarray(Image.open(io.BytesIO(d)).convert("RGB"))

    def pil_draft(d):
        image = Image.open(io.BytesIO(d))
        image.draft("RGB", (SIZE, SIZE))  # picks 1/2, 1/4, 1/8 keeping >= SIZE
        return np.asarray(image.convert("RGB"))

    def sj_full(d):
        return simplejpeg.decode_jpeg(d)

    def sj_pow2(d):
        h, w, _, _ = simplejpeg.decode_jpeg_header(d)
        k = convert.reduction_factor(h, w, SIZE)
        if k == 1:
            return simplejpeg.decode_jpeg(d)
        return simplejpeg.decode_jpeg(d, min_factor=k, min_height=-(-h // k), min_width=-(-w // k))

    def sj_m8(d):
        h, w, _, _ = simplejpeg.decode_jpeg_header(d)
        return simplejpeg.decode_jpeg(d, min_height=SIZE if h <= w else 0,
                                      min_width=SIZE if w < h else 0)

    out = {}
    for name, fn in (("pillow full", pil_full), ("pillow draft", pil_draft),
                     ("simplejpeg full", sj_full), ("simplejpeg 1/2^k (used)", sj_pow2),
                     ("simplejpeg M/8", sj_m8)):
        best = float("inf")
        for _ in range(2):
            t = time.process_time()
            for d in blobs:
                fn(d)
            best = min(best, (time.process_time() - t) / len(blobs) * 1e3)
        out[name] = best
    return out


# ---------------------------------------------------------------- leak check

def arrange_leaky(paths, root, leaks=20):
    """100 classes; train/ links to the first 80%, val/ byte copies of the
    rest plus of `leaks` training photos."""
    cut = len(paths) * 4 // 5
    for i, path in enumerate(paths):
        name = os.path.basename(path)
        cls = f"c{i % 100:02d}"
        if i < cut:
            os.makedirs(os.path.join(root, "train", cls), exist_ok=True)
            os.symlink(os.path.abspath(path), os.path.join(root, "train", cls, name))
        if i >= cut or i < leaks:
            os.makedirs(os.path.join(root, "val", cls), exist_ok=True)
            shutil.copyfile(path, os.path.join(root, "val", cls, name))
    return root


def timed_build(input_dir, output_dir, check):
    shutil.rmtree(output_dir, ignore_errors=True)
    cpu, wall = time.process_time(), time.perf_counter()
    summary = build_tfrecords.build(build_tfrecords.BuildConfig(
        input_dir, output_dir, num_workers=1, on_leak="report"),
        log=open(os.devnull, "w"), check_duplicates=check)
    return summary, time.process_time() - cpu, time.perf_counter() - wall


def leak_check_cost(paths, tmp, rounds):
    from data_prep import duplicates, layouts
    tree = arrange_leaky(paths, os.path.join(tmp, "leaky"))
    out = os.path.join(tmp, "out-leaky")
    all_cpus = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {min(all_cpus)})
    try:
        timed_build(tree, out, True)  # warm the page cache and the imports
        with_check, without = [], []
        for _ in range(rounds):
            with_check.append(timed_build(tree, out, True))
            without.append(timed_build(tree, out, False))
    finally:
        os.sched_setaffinity(0, all_cpus)
    summary = with_check[0][0]
    on_cpu, on_wall = min(r[1] for r in with_check), min(r[2] for r in with_check)
    off_cpu, off_wall = min(r[1] for r in without), min(r[2] for r in without)
    print(f"\nleak check ({summary.found} inputs: train {summary.per_split['train']['found']}, "
          f"validation {summary.per_split['validation']['found']}; 1 worker pinned to one CPU; "
          f"best of {rounds})")
    print(f"  found {len(summary.leaks)} leaks "
          f"({sum(x.same == 'bytes' for x in summary.leaks)} by bytes), "
          f"{sum(map(len, summary.duplicates.get('train', [])))} duplicates within train")
    print(f"  build with the check:    {on_wall:6.2f} s wall, {on_cpu:6.2f} s CPU")
    print(f"  build without the check: {off_wall:6.2f} s wall, {off_cpu:6.2f} s CPU")
    print(f"  ratio with / without:    {on_wall / off_wall:6.3f} wall, "
          f"{on_cpu / off_cpu:6.3f} CPU")

    worst = os.path.join(tmp, "worst")
    for i, path in enumerate(paths):
        for split, place in (("train", os.symlink), ("val", shutil.copyfile)):
            folder = os.path.join(worst, split, f"c{i % 100:02d}")
            os.makedirs(folder, exist_ok=True)
            place(os.path.abspath(path), os.path.join(folder, os.path.basename(path)))
    listing = layouts.list_inputs(worst)
    megabytes = sum(f.content_size for s in listing.splits.values() for f in s) / 2**20
    for threads in (1, os.cpu_count()):
        best = float("inf")
        for _ in range(rounds):
            wall = time.perf_counter()
            leaks = duplicates.find_leaks(listing, threads)
            best = min(best, time.perf_counter() - wall)
        print(f"  worst case, the check alone ({len(leaks)} leaks, every input read, "
              f"{megabytes:.0f} MiB, page cache warm): {best:.2f} s with {threads} "
              f"thread(s), {megabytes / best:.0f} MiB/s")


# ---------------------------------------------------------------- main

def main(argv):
    del argv
    paths = sorted(glob.glob(os.path.join(FLAGS.data_dir, "*.JPEG")))
    if not paths:
        raise app.UsageError(f"no *.JPEG in {FLAGS.data_dir}")
    if FLAGS.only_leak_check:
        with tempfile.TemporaryDirectory() as tmp:
            leak_check_cost(paths, tmp, FLAGS.rounds)
        return
    workers = FLAGS.workers or os.cpu_count()
    quality = FLAGS.quality
    print(f"{len(paths)} photos from {FLAGS.data_dir}; quality {quality}; "
          f"{os.cpu_count()} CPUs; load average {os.getloadavg()[0]:.1f} at start")
    print(f"baseline filter: {'Pillow BILINEAR (antialiased triangle) on the whole image'}")
    print(f"tool filter:     {convert.RESIZE_FILTER}")

    with tempfile.TemporaryDirectory() as tmp:
        x1 = arrange(paths, os.path.join(tmp, "x1"))
        x2 = arrange(paths, os.path.join(tmp, "x2"), copies=2)
        out = os.path.join(tmp, "out")
        for p in paths[:50]:  # warm the page cache for both
            open(p, "rb").read()

        # Per core: pinned to one CPU, rounds interleaved.
        all_cpus = os.sched_getaffinity(0)
        os.sched_setaffinity(0, {min(all_cpus)})
        base_rounds, tool_rounds = [], []
        for _ in range(FLAGS.rounds):
            base_rounds.append(run_baseline(paths, quality))
            _, cpu_rate, wall_rate = run_tool(x1, out, 1, quality)
            tool_rounds.append((cpu_rate, wall_rate))
        lanczos = run_baseline(paths[:300], quality, Image.Resampling.LANCZOS)
        os.sched_setaffinity(0, all_cpus)
        base_cpu, base_wall = max(r[0] for r in base_rounds), max(r[1] for r in base_rounds)
        tool_cpu, tool_wall = max(r[0] for r in tool_rounds), max(r[1] for r in tool_rounds)
        print("\nper core (pinned to one CPU; images per CPU-second, wall-clock in brackets)")
        print(f"  baseline Pillow loop, bilinear: {base_cpu:7.1f} img/s  ({base_wall:.1f})")
        print(f"  baseline Pillow loop, Lanczos:  {lanczos[0]:7.1f} img/s  ({lanczos[1]:.1f})"
              "  [reference only, 300 photos]")
        print(f"  tool, 1 worker:                 {tool_cpu:7.1f} img/s  ({tool_wall:.1f})")
        print(f"  ratio tool / baseline:          {tool_cpu / base_cpu:7.2f}x  "
              f"(wall {tool_wall / base_wall:.2f}x; target >= 1.5x)")

        # N workers, unpinned; the fork server is started before timing.
        cold = time.perf_counter()
        run_tool(arrange(paths[:4], os.path.join(tmp, "warm")), out, 2, quality, shards=2)
        cold = time.perf_counter() - cold
        ones, manys = [], []
        for _ in range(FLAGS.rounds):  # interleaved
            ones.append(run_tool(x1, out, 1, quality)[1:])
            manys.append(run_tool(x1, out, workers, quality)[1:])
        one, many = max(r[1] for r in ones), max(r[1] for r in manys)
        one_cpu, many_cpu = max(r[0] for r in ones), max(r[0] for r in manys)
        print(f"\nN workers (unpinned, wall-clock; load average now {os.getloadavg()[0]:.1f})")
        print(f"  fork server cold start (imports the writer once): {cold:.1f} s, not counted")
        print(f"  tool, 1 worker:  {one:7.1f} img/s  ({one_cpu:.1f} per CPU-second)")
        print(f"  tool, {workers} workers: {many:7.1f} img/s  ({many_cpu:.1f} per CPU-second, "
              "all processes)")
        print(f"  speed-up {many / one:.2f}x = {many / one / workers:.2f} x N (target >= 0.9 x N)")
        print(f"  CPU cost per image with {workers} workers vs 1: {one_cpu / many_cpu:.2f}x "
              "(1.00 = no parallel overhead; the wall-clock speed-up can reach "
              f"{workers * many_cpu / one_cpu:.2f}x on otherwise idle cores)")

        print(f"\npeak RSS, {workers} workers (process tree: parent + fork server + workers)")
        for name, tree, n in (("x1", x1, len(paths)), ("x2", x2, 2 * len(paths))):
            with PeakRSS() as rss:
                summary, _, rate = run_tool(tree, out, workers, quality)
            assert summary.found == n == summary.written + len(summary.skipped)
            print(f"  {name}: {n} images, {rate:6.1f} img/s, peak total "
                  f"{rss.peak_total / 2**20:6.0f} MiB, largest single process "
                  f"{rss.peak_single / 2**20:6.0f} MiB")

    step = max(1, len(paths) // FLAGS.quality_images)
    chosen = paths[::step][:FLAGS.quality_images]
    print(f"\nquality on {len(chosen)} photos: mean PSNR of the stored JPEG against a float "
          "resample of the full decode (same crop geometry as the method)")
    for name, resample in (("exact antialiased bilinear (the stated filter)",
                            Image.Resampling.BILINEAR),
                           ("Lanczos-3 (an independent sharper reference)",
                            Image.Resampling.LANCZOS)):
        tool_q, base_q = quality_psnr(chosen, quality, resample)
        print(f"  vs {name}: tool {tool_q:.2f} dB, baseline {base_q:.2f} dB")

    with tempfile.TemporaryDirectory() as tmp:
        leak_check_cost(paths, tmp, FLAGS.rounds)

    dec = decoder_choice(paths[::5])
    print("\nJPEG decode, ms per photo (CPU time, every 5th photo):")
    for name, ms in dec.items():
        print(f"  {name:24s} {ms:.2f}")


if __name__ == "__main__":
    app.run(main)

"""Caffe's bvlc_alexnet (a `.caffemodel`, or caffe-tensorflow's `.npy`) ->
a model_dir that evaluation, export, fine-tuning, figures and prediction
read as they read a trained one:

    model_config.json   build_alexnet kwargs: Caffe's input size, padding,
                        LRN constants, mean (no std division), init "caffe"
    labels.txt          from the labels given, else classes named by index
    stats.json          the mean RGB the model subtracts (and the published
                        ILSVRC-2012 PCA, for a fine-tuning's lighting)
    ckpt-0.*, best/ckpt-0.*, best/best.json   the weights, at step 0
    caffe_import.json   where the weights, mean and labels came from

Everything is read and checked before anything is written; the model_dir
is written into a hidden folder beside it (`.<name>.import-*`) and renamed
into place: a bad input leaves nothing, a kill no model_dir (a SIGKILL
leaves the hidden folder, which the next import ignores).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from typing import Optional

from alexnet_tf import fileio
from alexnet_tf.caffe import mean as caffe_mean, netparameter, structure, synsets
from alexnet_tf.caffe.blobs import AlexNetBlobs, shape_text
from alexnet_tf.caffe.errors import CaffeFormatError
from alexnet_tf.caffe.npy import read_npy
from alexnet_tf.data import dataset_stats
from alexnet_tf.data.labels import LABELS_FILENAME, LabelMap

IMPORT_INFO_FILENAME = "caffe_import.json"
# The model zoo's bvlc_alexnet.caffemodel (see ../shared/data/caffe/README.txt).
BVLC_ALEXNET_SHA1 = "9116a64c0fbe4459d18f4bb6b56d647b63920377"


def sha1_of(path: str) -> str:
    digest = hashlib.sha1()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            digest.update(chunk)
    return digest.hexdigest()


def read_source(caffemodel: Optional[str] = None,
                npy: Optional[str] = None) -> tuple[AlexNetBlobs, dict]:
    """The AlexNet blobs of one source file, and what to record about it."""
    if (caffemodel is None) == (npy is None):
        raise CaffeFormatError("give exactly one source: a .caffemodel or a caffe-tensorflow .npy")
    path = caffemodel or npy
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path}: no such file")
    if caffemodel:
        net = netparameter.read_net(caffemodel)
        blobs = structure.alexnet_blobs(net, caffemodel)
        layer_format = f"caffemodel, {net.layer_format} messages"
    else:
        blobs = read_npy(npy)
        layer_format = "caffe-tensorflow .npy (BVLC's LRN constants and geometry assumed)"
    sha1 = sha1_of(path)
    return blobs, {"source": os.path.abspath(path), "format": layer_format, "sha1": sha1,
                   "is_bvlc_alexnet_caffemodel": sha1 == BVLC_ALEXNET_SHA1,
                   "caffe_layers": dict(blobs.names), "caffe_lrn": dict(blobs.lrn),
                   "caffe_conv1_padding": blobs.conv1_padding}


def label_map_for(labels: Optional[str], blobs: AlexNetBlobs) -> tuple[LabelMap, str]:
    """The label map (checked against fc8's outputs) and where it came from."""
    if labels is None:
        return synsets.placeholder_label_map(blobs.num_classes), "none given: classes by index"
    if not os.path.exists(labels):
        raise FileNotFoundError(f"{labels}: no such labels file")
    label_map = synsets.read_label_map(labels)
    if len(label_map) != blobs.num_classes:
        raise CaffeFormatError(
            f"{labels}: {len(label_map)} classes, but {blobs.describe('fc8')} has "
            f"{blobs.num_classes} outputs (weight {shape_text(blobs.weights['fc8'])})")
    return label_map, os.path.abspath(labels)


def check_model_dir(model_dir: str) -> None:
    """An import never writes into an existing run: the folder must not exist or be empty."""
    if os.path.islink(model_dir):
        raise CaffeFormatError(f"model_dir {model_dir} is a symbolic link: give the folder "
                               "it points to")
    if os.path.exists(model_dir) and not os.path.isdir(model_dir):
        raise CaffeFormatError(f"model_dir {model_dir} is a file, not a folder")
    if os.path.isdir(model_dir) and os.listdir(model_dir):
        raise CaffeFormatError(f"model_dir {model_dir} exists and is not empty: an import "
                               "writes a new folder, it never overwrites a run")


def build_model(blobs: AlexNetBlobs, mean_rgb):
    """The Keras model computing what the Caffe net does, weights set."""
    from alexnet_tf.caffe import convert  # TensorFlow loads here, after the file checks
    from alexnet_tf.model.alexnet import build_alexnet
    kwargs = convert.model_kwargs(blobs, mean_rgb)
    try:
        model = build_alexnet(**kwargs)
    except ValueError as e:  # e.g. an input too small for this model
        raise CaffeFormatError(f"this net does not fit the model: {e}") from None
    convert.set_weights(model, blobs)
    return model, kwargs


def import_alexnet(model_dir: str, *, caffemodel: Optional[str] = None,
                   npy: Optional[str] = None, mean: Optional[str] = None,
                   labels: Optional[str] = None) -> dict:
    """Reads, checks, converts, then writes `model_dir`; returns what it wrote."""
    check_model_dir(model_dir)
    blobs, info = read_source(caffemodel, npy)
    label_map, info["labels"] = label_map_for(labels, blobs)
    # Caffe's class i is the i-th wnid in sorted order: other orders are suspect.
    info["labels_sorted"] = list(label_map.wnids) == sorted(label_map.wnids)
    default_mean = blobs.mean_bgr or caffe_mean.CAFFE_ILSVRC_MEAN_BGR
    mean_rgb = caffe_mean.mean_rgb(mean, default_bgr=default_mean)
    info["mean"] = (os.path.abspath(mean) if mean else
                    "the net's mean_value" if blobs.mean_bgr else
                    "Caffe's published per-channel ILSVRC-2012 means")
    info["mean_rgb"] = list(mean_rgb)
    model, kwargs = build_model(blobs, mean_rgb)
    del blobs  # the Caffe copies: the model holds the weights now
    write_model_dir(model_dir, model, kwargs, label_map, info)
    return {"model_dir": model_dir, "parameters": model.count_params(),
            "config": kwargs, **info}


def write_model_dir(model_dir: str, model, kwargs: dict, label_map: LabelMap,
                    info: dict) -> None:
    """The model_dir files, through the training code's own writers."""
    from alexnet_tf.training import checkpoints, model_dir as model_dir_files, optimizer
    from alexnet_tf.training import schedules
    parent = os.path.dirname(os.path.abspath(model_dir))
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=f".{os.path.basename(os.path.abspath(model_dir))}.import-",
                           dir=parent)
    try:
        model_dir_files.write_model_config(tmp, kwargs)
        label_map.write(os.path.join(tmp, LABELS_FILENAME))
        stats = dataset_stats.RGBStats(mean_rgb=tuple(kwargs["mean_rgb"]))
        fileio.write_json(os.path.join(tmp, dataset_stats.STATS_FILENAME), {
            "rgb": dataset_stats.rgb_stats_to_json(stats),
            "note": "imported Caffe model: mean_rgb is Caffe's mean; eigval/eigvec are "
                    "the published ILSVRC-2012 PCA, not measured here"})
        # A training run's state at step 0 whose weights are Caffe's (the
        # paper's SGD with zero momentum, so training can also resume here):
        # ckpt-0 for the tools that read the latest checkpoint, best/ckpt-0
        # (the same files, hard-linked: one copy on disk) for those that read
        # the best.
        sgd = optimizer.PaperSGD()
        sgd.build(model.trainable_variables)
        ckpts = checkpoints.TrainingCheckpoints(
            tmp, model, sgd, schedules.PlateauSchedule(optimizer.PAPER_LEARNING_RATE), keep=1)
        best = checkpoints.link_checkpoint(
            ckpts.save(), os.path.join(tmp, model_dir_files.BEST_DIR))
        # No validation error is known: best.json leaves it out, so any
        # measured one counts as better.
        model_dir_files.write_best_info(tmp, {"step": 0, "epoch": 0,
                                              "checkpoint": os.path.basename(best),
                                              "imported_from": info["source"]})
        fileio.write_json(os.path.join(tmp, IMPORT_INFO_FILENAME), info)
        if os.path.isdir(model_dir):
            os.rmdir(model_dir)  # empty (check_model_dir); a non-empty one stops here
        os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp's 0700 -> what a plain mkdir gives
        os.rename(tmp, model_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _umask() -> int:
    """The process's umask, read without setting it (Linux), else 022."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            return next(int(line.split()[1], 8) for line in status if line.startswith("Umask:"))
    except (OSError, StopIteration, ValueError):
        return 0o022

"""The Figure 1 experiment at a tiny scale, and its pieces."""

import json
import os
import shutil

import numpy as np
import pytest
from PIL import Image

from alexnet_tf.data import records
from experiments.figure1_relu_tanh import relu_tanh
from experiments.figure1_relu_tanh.relu_tanh import InputNormalization, epochs_to_target
from launch import reproduce_relu_tanh
from launchers import run_launcher


def test_epochs_to_target_finds_first_crossing():
    epochs = [0.2, 0.4, 0.6, 0.8, 1.0, 1.2]
    errors = [0.9, 0.5, 0.3, 0.25, 0.2, 0.3]
    assert epochs_to_target(epochs, errors, 0.25) == (3, 0.8)  # <= counts
    assert epochs_to_target(epochs, errors, 0.2) == (4, 1.0)
    assert epochs_to_target(epochs, errors, 0.1) is None
    assert epochs_to_target([], [], 0.25) is None
    with pytest.raises(ValueError, match="epochs"):
        epochs_to_target([1.0], [0.3, 0.2], 0.25)


def test_input_normalization():
    images = np.random.default_rng(0).integers(0, 256, (50, 4, 4, 3), dtype=np.uint8)
    paper = InputNormalization.fit(images, "paper")
    np.testing.assert_allclose(paper.mean_image, images.mean(axis=0), rtol=1e-6)
    np.testing.assert_array_equal(paper.scale, 1.0)
    modern = InputNormalization.fit(images, "modern")
    standardized = (images - modern.mean_image) / modern.scale
    np.testing.assert_allclose(standardized.std(axis=(0, 1, 2)), 1.0, rtol=1e-4)


def _color_classes(n=384, size=32, seed=0):
    """Synthetic, easily learnable: class k is a noisy image of colour k."""
    rng = np.random.default_rng(seed)
    colors = np.array([[230, 20, 20], [20, 230, 20], [20, 20, 230], [230, 230, 20]])
    labels = rng.integers(0, 4, n).astype(np.int32)
    noise = rng.normal(0, 40, (n, size, size, 3))
    images = np.clip(colors[labels][:, None, None, :] + noise, 0, 255).astype(np.uint8)
    return images, labels


def test_race_stops_at_target_and_flags_divergence():
    images, labels = _color_classes()
    sweep = relu_tanh.race_learning_rates(
        images, labels, activation="relu", condition="modern",
        learning_rates=[0.01, 1e4], max_epochs=6, target_error=0.2,
        batch_size=64, evals_per_epoch=2, num_classes=4, log=lambda m: None)
    good, bad = sweep.runs
    assert bad.stopped == "diverged"
    assert good.stopped == "reached target" and sweep.best is good
    assert good.errors[-1] <= 0.2 < max(good.errors)
    index, epoch = epochs_to_target(good.epochs, good.errors, 0.2)
    assert index == len(good.errors) - 1 and epoch == good.epochs_to_target
    assert good.seconds_to_target > 0 and good.epochs == sorted(good.epochs)
    assert good.epochs[0] == 0.5  # two measurements per epoch


def test_pruning_keeps_only_the_leader_after_one_epoch():
    rng = np.random.default_rng(0)  # noise with random labels: the target is never reached
    images = rng.integers(0, 256, (256, 32, 32, 3), dtype=np.uint8)
    labels = rng.integers(0, 4, 256).astype(np.int32)
    lines = []
    sweep = relu_tanh.race_learning_rates(
        images, labels, activation="tanh", condition="modern",
        learning_rates=[0.001, 0.01], max_epochs=2, target_error=0.0, batch_size=64,
        evals_per_epoch=2, num_classes=4, prune_after_epochs=1, log=lines.append)
    a, b = sweep.runs
    leader, loser = (a, b) if a.errors[1] <= b.errors[1] else (b, a)
    assert loser.stopped == "pruned at epoch 1" and loser.epochs == [0.5, 1.0]
    assert leader.stopped == "max epochs" and leader.epochs == [0.5, 1.0, 1.5, 2.0]
    assert sweep.best is None
    # One line per epoch; after the pruning it counts the leader's epochs.
    assert [line.split(":")[0] for line in lines] == [
        "modern/tanh epoch 1.0", "modern/tanh epoch 2.0"], lines
    assert "[pruned at epoch 1]" in lines[1] and "[max epochs]" in lines[1]


@pytest.mark.slow  # many small trainings
def test_many_small_runs_print_no_retracing_notice(capfd):
    """Each run traces its own step once; TensorFlow would call that "frequent
    retracing" when runs are a few steps long."""
    images, labels = _color_classes(n=64)
    sweep = relu_tanh.race_learning_rates(
        images, labels, activation="relu", condition="modern",
        learning_rates=[0.001, 0.002, 0.003, 0.004, 0.005, 0.006], max_epochs=1,
        batch_size=32, evals_per_epoch=2, num_classes=4, log=lambda m: None)
    assert len(sweep.runs) == 6
    assert "retracing" not in capfd.readouterr().err


def _tiny_cifar(src, dst, per_class=20):
    """A raw-folder copy of a few CIFAR-10 images per class, train and test."""
    for split in ("train", "test"):
        for cls in sorted(os.listdir(src / split)):
            os.makedirs(dst / split / cls)
            for name in sorted(os.listdir(src / split / cls))[:per_class]:
                shutil.copy(src / split / cls / name, dst / split / cls / name)


@pytest.mark.slow  # the experiment's launcher end to end
def test_experiment_end_to_end_on_cifar_images(cifar10, tmp_path):
    raw = tmp_path / "raw"
    _tiny_cifar(cifar10, raw)
    out = tmp_path / "out"
    ran = run_launcher(
        "launch.reproduce_relu_tanh", f"--data_dir={raw}", f"--out_dir={out}", "--max_epochs=2",
        "--target_error=0.85", "--paper_learning_rates=0.003",
        "--modern_learning_rates=0.01,0.03", "--batch_size=50", cwd=tmp_path)
    assert ran.returncode == 0, ran.stderr

    assert len(list((out / "records").glob("train-*"))) == 16  # converted from the raw folder
    result = json.loads((out / "results.json").read_text())
    assert result["complete"] and result["train_images"] == 200
    assert result["num_classes"] == 10
    for condition, rates in (("paper", [0.003]), ("modern", [0.01, 0.03])):
        section = result["conditions"][condition]
        assert section["learning_rates"] == rates
        for activation in ("relu", "tanh"):
            sweep = section[activation]
            assert [r["learning_rate"] for r in sweep["runs"]] == rates
            for run in sweep["runs"]:
                assert run["stopped"] in ("reached target", "max epochs", "diverged",
                                          "no progress", "cannot beat best")
                assert all(0.0 <= e <= 1.0 for e in run["errors"])
                assert run["epochs"][-1] <= 2.0
                crossing = epochs_to_target(run["epochs"], run["errors"], 0.85)
                assert (crossing and crossing[1]) == run["epochs_to_target"] or (
                    crossing is None and run["epochs_to_target"] is None)
        relu, tanh = section["relu"]["epochs_to_target"], section["tanh"]["epochs_to_target"]
        expected = None if relu is None or tanh is None else round(tanh / relu, 3)
        assert section["ratio_epochs"] == expected

    table = (out / "results.md").read_text()
    assert table.count("| paper |") == 2 and table.count("| modern |") == 2
    assert "0.01, 0.03" in table and "85% training error on 200" in table
    with Image.open(out / "figure1.png") as png:
        assert png.size == (1000, 400)  # two panels, one per condition

    # Conditions run separately (e.g. in parallel) merge back into the same result.
    for condition in ("paper", "modern"):
        part = dict(result, conditions={condition: result["conditions"][condition]})
        (tmp_path / condition).mkdir()
        (tmp_path / condition / "results.json").write_text(json.dumps(part))
    merged_dir = tmp_path / "merged"
    merged = run_launcher("launch.reproduce_relu_tanh", f"--out_dir={merged_dir}",
                          f"--merge_from={tmp_path / 'paper'},{tmp_path / 'modern'}",
                          cwd=tmp_path)
    assert merged.returncode == 0, merged.stderr
    assert json.loads((merged_dir / "results.json").read_text()) == result
    assert (merged_dir / "results.md").read_text() == table
    assert (merged_dir / "figure1.png").stat().st_size > 0
    # A results file given by its path (as docs/figures/figure1_relu_tanh.json) redraws the same.
    redrawn = tmp_path / "redrawn"
    again = run_launcher("launch.reproduce_relu_tanh", f"--out_dir={redrawn}",
                         f"--merge_from={out / 'results.json'}", cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert (redrawn / "results.md").read_text() == table


def test_merge_refuses_incomparable_results():
    part = {"target_error": 0.25, "batch_size": 128, "complete": True,
            "conditions": {"paper": {}}}
    other = dict(part, batch_size=64, conditions={"modern": {}})
    with pytest.raises(ValueError, match="batch_size"):
        relu_tanh.merge_results([part, other])
    with pytest.raises(ValueError, match="'paper' appears twice with nothing to merge"):
        relu_tanh.merge_results([part, part])


def _sweep(*runs):
    best = min((r for r in runs if r[2] is not None), key=lambda r: r[2], default=None)
    return {"best_learning_rate": best and best[0], "epochs_to_target": best and best[2],
            "seconds_to_target": best and best[2],
            "runs": [{"learning_rate": lr, "epochs": [1, 2], "errors": errors,
                      "seconds": [1, 2], "epochs_to_target": reached,
                      "seconds_to_target": reached, "stopped": ""}
                     for lr, errors, reached in runs]}


def test_merge_extends_a_learning_rate_grid_and_refuses_a_different_rerun():
    settings = {"target_error": 0.25, "batch_size": 128, "complete": True}
    low = dict(settings, conditions={"paper": {
        "learning_rates": [0.001, 0.003],
        "relu": _sweep((0.001, [0.5, 0.4], None), (0.003, [0.4, 0.2], 2)),
        "tanh": _sweep((0.001, [0.6, 0.5], None), (0.003, [0.5, 0.4], None))}})
    high = dict(settings, conditions={"paper": {
        "learning_rates": [0.003, 0.01],
        "tanh": _sweep((0.003, [0.5, 0.4], None), (0.01, [0.4, 0.24], 2))}})
    merged = relu_tanh.merge_results([low, high])["conditions"]["paper"]
    assert merged["learning_rates"] == [0.001, 0.003, 0.01]
    assert [r["learning_rate"] for r in merged["tanh"]["runs"]] == [0.001, 0.003, 0.01]
    assert merged["tanh"]["best_learning_rate"] == 0.01
    assert merged["relu"]["best_learning_rate"] == 0.003 and merged["ratio_epochs"] == 1.0
    changed = json.loads(json.dumps(high))
    changed["conditions"]["paper"]["tanh"]["runs"][0]["errors"] = [0.5, 0.3]
    with pytest.raises(ValueError, match="tanh at learning rate 0.003 appears twice"):
        relu_tanh.merge_results([low, changed])


LAUNCHER_MISTAKES = [
    (["--conditions=bogus"], "--conditions: a comma-separated subset of paper,modern"),
    (["--activations=relu,sigmoid"], "--activations: a comma-separated subset of relu,tanh"),
    (["--paper_learning_rates=abc"], "--paper_learning_rates: comma-separated finite numbers"),
    (["--modern_learning_rates=0.01,-1"], "--modern_learning_rates: comma-separated finite"),
    (["--paper_learning_rates=inf"], "--paper_learning_rates: comma-separated finite numbers"),
    (["--max_epochs=-1"], "--max_epochs must be > 0"),
    (["--target_error=1.5"], "--target_error must be between 0 and 1"),
    (["--batch_size=0"], "batch_size"),
    (["--data_dir=/nonexistent/cifar"], "/nonexistent/cifar"),
]


@pytest.mark.parametrize("flags,message", LAUNCHER_MISTAKES, ids=lambda v: str(v)[:30])
def test_launcher_refuses_a_bad_flag_in_one_line(tmp_path, flags, message):
    if not any(f.startswith("--data_dir") for f in flags):
        flags = [f"--data_dir={tmp_path}", *flags]
    result = _launch(tmp_path, *flags)
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip().splitlines() == [result.stderr.strip()], result.stderr
    assert message in result.stderr and "Traceback" not in result.stderr


def _launch(tmp_path, *flags):
    """The launcher as a user runs it (in this process: tests/launchers.py)."""
    return run_launcher("launch.reproduce_relu_tanh", f"--out_dir={tmp_path / 'out'}", *flags,
                        cwd=tmp_path)


def test_launcher_refuses_results_it_cannot_merge_in_one_line(tmp_path):
    seeds = []
    for seed in (0, 1):
        folder = tmp_path / f"seed{seed}"
        folder.mkdir()
        (folder / "results.json").write_text(json.dumps(
            {"seed": seed, "target_error": 0.25, "max_epochs": 1, "batch_size": 8,
             "momentum": 0.9, "paper_ratio": 6.0, "train_images": 10, "complete": True,
             "conditions": {}}))
        seeds.append(str(folder))
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "results.json").write_text('{"seed": 0, "conditions": ')
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "results.json").write_text("[1, 2]")
    bare = tmp_path / "bare.json"  # a file, given by its path
    bare.write_text('{"conditions": {}}')
    for merge_from, message in ((seeds, "results differ in seed: cannot merge"),
                                ([str(broken)], f"{broken / 'results.json'} is not valid JSON"),
                                ([str(foreign)], "is not a Figure 1 results.json"),
                                ([str(bare)], "bare.json is not a Figure 1 results.json "
                                              "(bad or missing entry 'target_error')"),
                                ([str(tmp_path / "none")], "results.json")):
        result = _launch(tmp_path, f"--merge_from={','.join(merge_from)}")
        assert result.returncode == 2, result.stderr
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr
        assert message in result.stderr, result.stderr
    assert not (tmp_path / "out" / "results.json").exists()  # nothing written on a refusal


def test_launcher_conversion_problems_are_one_line(tmp_path):
    """The raw folder's conversion: data prep's own refusals reach the user as one
    line (a second run converting into the same folder, an empty train/, a
    folder TensorFlow could not read back)."""
    from data_prep.output_dir import OutputLock
    raw = tmp_path / "raw"
    (raw / "train").mkdir(parents=True)
    empty = _launch(tmp_path, f"--data_dir={raw}")
    assert empty.returncode == 2 and len(empty.stderr.strip().splitlines()) == 1, empty.stderr
    (raw / "train" / "a").mkdir()
    (raw / "train" / "a" / "1.jpg").write_bytes(_jpeg(np.zeros((32, 32, 3), np.uint8)))
    records_dir = tmp_path / "out" / "records"
    records_dir.mkdir(parents=True, exist_ok=True)
    with OutputLock(str(records_dir)):
        locked = _launch(tmp_path, f"--data_dir={raw}")
    assert locked.returncode == 2, locked.stderr
    assert len(locked.stderr.strip().splitlines()) == 1, locked.stderr
    assert "is being written by another build" in locked.stderr
    odd = os.fsdecode(os.path.join(os.fsencode(str(tmp_path)), b"fig\xff"))
    refused = run_launcher("launch.reproduce_relu_tanh", f"--data_dir={raw}", f"--out_dir={odd}",
                           cwd=tmp_path)
    assert refused.returncode == 2 and "UTF-8 names only" in refused.stderr, refused.stderr
    assert not os.path.exists(odd)


def test_load_split_names_an_image_of_the_wrong_size(tmp_path):
    encoded = _jpeg(np.zeros((24, 24, 3), np.uint8))
    path = tmp_path / records.shard_name(records.TRAIN_PREFIX, 0, 1)
    import tensorflow as tf
    with tf.io.TFRecordWriter(str(path)) as w:
        w.write(records.serialize(records.ImageRecord(
            encoded=encoded, height=24, width=24, label=0, synset="a", text="a",
            filename="train/a/odd.jpg")))
    with pytest.raises(ValueError, match="odd.jpg"):
        relu_tanh.load_split(str(tmp_path), image_size=32)
    with pytest.raises(FileNotFoundError, match="train"):
        relu_tanh.load_split(str(tmp_path / "nowhere"))


def test_raw_folder_without_train_split_is_refused(tmp_path):
    with pytest.raises(FileNotFoundError, match="train"):
        reproduce_relu_tanh.records_dir_for(str(tmp_path), str(tmp_path / "out"), 32)


def _jpeg(array):
    import io
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="JPEG")
    return buf.getvalue()


def test_partial_result_is_summarized_as_far_as_it_got():
    def run(activation, errors, reached=None, stopped=""):
        return {"condition": "paper", "activation": activation, "learning_rate": 0.01,
                "epochs": [1.0, 2.0, 3.0][:len(errors)], "errors": errors,
                "seconds": [10.0, 20.0, 30.0][:len(errors)], "epochs_to_target": reached,
                "seconds_to_target": reached and 10.0 * reached, "stopped": stopped}
    partial = {"target_error": 0.25, "max_epochs": 10, "batch_size": 128, "momentum": 0.9,
               "train_images": 100, "paper_ratio": 6.0, "complete": False, "conditions": {
                   "paper": {"learning_rates": [0.01],
                             "relu": {"in_progress": True, "runs": [
                                 run("relu", [0.5, 0.2], 2.0, "reached target")]},
                             "tanh": {"in_progress": True,
                                      "runs": [run("tanh", [0.6, 0.5, 0.4])]}}}}
    done = relu_tanh.finalize_partial(partial)
    section = done["conditions"]["paper"]
    assert section["relu"]["epochs_to_target"] == 2.0
    assert section["relu"]["seconds_to_target"] == 20.0
    assert section["tanh"]["best_learning_rate"] is None
    assert section["tanh"]["runs"][0]["stopped"] == "interrupted at epoch 3"
    assert section["ratio_epochs"] is None
    table = relu_tanh.results_table(done)
    assert "| paper | tanh | 0.01 | - | not reached by epoch 3 | - |" in table
    # tanh still above the target at epoch 3 (30 s), ReLU there at epoch 2 (20 s)
    assert "by more than 1.50x (tanh did not reach the target) in epochs" in table
    assert "more than 1.50x (tanh did not reach the target) in seconds" in table
    assert partial["conditions"]["paper"]["tanh"]["in_progress"]  # input left as it was

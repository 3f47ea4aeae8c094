"""results.json, results.md and the Figure 1 plot: summaries of finished or
interrupted runs, and the merge of runs made apart."""

from __future__ import annotations

import json
import os

from alexnet_tf import fileio
from alexnet_tf.errors import InputError

CONDITIONS = ("paper", "modern")
ACTIVATIONS = ("relu", "tanh")
RESULTS_JSON = "results.json"
RESULTS_MD = "results.md"
FIGURE_PNG = "figure1.png"


def ratio(section: dict, key: str) -> float | None:
    """tanh / ReLU: how many times faster ReLU was (None if either missed)."""
    relu, tanh = section["relu"][key], section["tanh"][key]
    return None if relu is None or tanh is None else round(tanh / relu, 3)


def finalize_partial(result: dict) -> dict:
    """A result saved mid-run (e.g. stopped at a time limit), summarized as far
    as it got: runs still going are marked "interrupted"; an activation that
    never started is left out (the table says "not run")."""
    result = json.loads(json.dumps(result))  # deep copy
    for section in result["conditions"].values():
        for activation in ACTIVATIONS:
            sweep = section.get(activation)
            if sweep is None or not sweep.get("in_progress"):
                continue
            for run in sweep["runs"]:
                run["stopped"] = run["stopped"] or (
                    f"interrupted at epoch {run['epochs'][-1] if run['epochs'] else 0:g}")
            reached = [r for r in sweep["runs"] if r["epochs_to_target"] is not None]
            best = min(reached, key=lambda r: (r["epochs_to_target"], r["errors"][-1]),
                       default=None)
            section[activation] = {
                "best_learning_rate": best["learning_rate"] if best else None,
                "epochs_to_target": best["epochs_to_target"] if best else None,
                "seconds_to_target": round(best["seconds_to_target"], 2) if best else None,
                "runs": sweep["runs"]}
        if all(a in section for a in ACTIVATIONS):
            section["ratio_epochs"] = ratio(section, "epochs_to_target")
            section["ratio_seconds"] = ratio(section, "seconds_to_target")
    return result


def merge_results(parts: list) -> dict:
    """One result from runs made apart: other conditions (e.g. run in
    parallel), one activation each, or more learning rates for a condition
    already run (a grid extended at its edge). Every setting must agree, or
    the runs are not comparable; a learning rate run twice must have given
    the same curve (same seed and settings: the same run)."""
    if not parts:
        raise InputError("nothing to merge")
    merged = {k: v for k, v in parts[0].items() if k != "conditions"}
    merged["conditions"] = {}
    for part in parts:
        settings = {k: v for k, v in part.items() if k not in ("conditions", "complete")}
        expected = {k: v for k, v in merged.items() if k not in ("conditions", "complete")}
        if settings != expected:
            diff = sorted(k for k in set(settings) | set(expected)
                          if settings.get(k) != expected.get(k))
            raise InputError(f"results differ in {', '.join(diff)}: cannot merge (runs with "
                             "other settings or seeds are separate experiments)")
        for condition, section in part["conditions"].items():
            section = json.loads(json.dumps(section))
            if condition in merged["conditions"]:
                section = _merge_section(condition, merged["conditions"][condition], section)
            merged["conditions"][condition] = section
    merged["complete"] = all(p.get("complete") for p in parts)
    return merged


def _merge_section(condition: str, first: dict, second: dict) -> dict:
    section = {"learning_rates": sorted(set(first.get("learning_rates", []))
                                        | set(second.get("learning_rates", [])))}
    for activation in ACTIVATIONS:
        sweeps = [s[activation] for s in (first, second) if activation in s]
        if len(sweeps) == 1:
            section[activation] = sweeps[0]
        elif sweeps:
            section[activation] = _merge_sweeps(condition, activation, *sweeps)
    if not any(a in section for a in ACTIVATIONS):
        raise InputError(f"condition {condition!r} appears twice with nothing to merge")
    if all(a in section for a in ACTIVATIONS):
        section["ratio_epochs"] = ratio(section, "epochs_to_target")
        section["ratio_seconds"] = ratio(section, "seconds_to_target")
    return section


def _merge_sweeps(condition: str, activation: str, first: dict, second: dict) -> dict:
    runs = {run["learning_rate"]: run for run in first["runs"]}
    for run in second["runs"]:
        same = runs.get(run["learning_rate"])
        if same is not None and (same["epochs"], same["errors"]) != (run["epochs"],
                                                                     run["errors"]):
            raise InputError(f"condition {condition!r}: {activation} at learning rate "
                             f"{run['learning_rate']:g} appears twice with different curves")
        runs.setdefault(run["learning_rate"], run)
    ordered = [runs[lr] for lr in sorted(runs)]
    reached = [r for r in ordered if r["epochs_to_target"] is not None]
    best = min(reached, key=lambda r: (r["epochs_to_target"], r["errors"][-1]), default=None)
    return {"best_learning_rate": best["learning_rate"] if best else None,
            "epochs_to_target": best["epochs_to_target"] if best else None,
            "seconds_to_target": round(best["seconds_to_target"], 2) if best else None,
            "runs": ordered}


# ------------------------------------------------------------------ outputs

def write_results(result: dict, out_dir: str) -> dict:
    """Writes results.json, results.md and figure1.png; returns their paths."""
    os.makedirs(out_dir, exist_ok=True)
    paths = {"json": os.path.join(out_dir, RESULTS_JSON),
             "markdown": os.path.join(out_dir, RESULTS_MD),
             "figure": os.path.join(out_dir, FIGURE_PNG)}
    fileio.write_text(paths["json"], json.dumps(result, indent=2))
    fileio.write_text(paths["markdown"], results_table(result))
    plot_figure1(result, paths["figure"])
    return paths


def results_table(result: dict) -> str:
    """The Markdown table of results.md."""
    target = result["target_error"]
    lines = [f"Epochs (and training seconds) to {target:.0%} training error on "
             f"{result['train_images']:,} CIFAR-10 training images; batch "
             f"{result['batch_size']}, momentum {result['momentum']}, no regularization, "
             f"at most {result['max_epochs']:g} epochs per run.", "",
             "| condition | activation | learning rates tried | best | "
             f"epochs to {target:.0%} | seconds to {target:.0%} |",
             "|---|---|---|---|---|---|"]
    for condition, section in result["conditions"].items():
        planned = ", ".join(f"{lr:g}" for lr in section["learning_rates"])
        for activation in ACTIVATIONS:
            s = section.get(activation)
            if s is None or s.get("in_progress"):
                lines.append(f"| {condition} | {activation} | {planned} | - | not run | - |")
                continue
            tried = ", ".join(f"{r['learning_rate']:g}" for r in s["runs"])
            best = "-" if s["best_learning_rate"] is None else f"{s['best_learning_rate']:g}"
            epochs = (f"{s['epochs_to_target']:.1f}" if s["epochs_to_target"] is not None
                      else f"not reached by epoch {_last_epoch(s):g}")
            seconds = "-" if s["seconds_to_target"] is None else f"{s['seconds_to_target']:.0f}"
            lines.append(f"| {condition} | {activation} | {tried} | {best} | {epochs} | {seconds} |")
    lines.append("")
    for condition, section in result["conditions"].items():
        lines.append(f"- {condition}: ReLU faster than tanh by "
                     f"{_fmtratio(section, 'ratio_epochs')} in epochs, "
                     f"{_fmtratio(section, 'ratio_seconds')} in seconds "
                     f"(paper, Figure 1: about {result['paper_ratio']:g}x).")
    return "\n".join(lines) + "\n"


def _last_epoch(sweep: dict) -> float:
    return max((r["epochs"][-1] for r in sweep["runs"] if r["epochs"]), default=0)


def _fmtratio(section: dict, key: str) -> str:
    if section.get(key) is not None:
        return f"{section[key]:.2f}x"
    if not all(a in section and "epochs_to_target" in section[a] for a in ACTIVATIONS):
        return "n/a (not run)"
    relu, tanh = (section[a]["epochs_to_target"] is not None for a in ACTIVATIONS)
    if relu:  # tanh was still above the target when it stopped: a lower bound
        if key == "ratio_epochs":
            bound = _last_epoch(section["tanh"]) / section["relu"]["epochs_to_target"]
        else:
            bound = (max(r["seconds"][-1] for r in section["tanh"]["runs"] if r["seconds"])
                     / section["relu"]["seconds_to_target"])
        return f"more than {bound:.2f}x (tanh did not reach the target)"
    return "n/a (ReLU did not reach the target)" if tanh else "n/a (neither reached the target)"


def plot_figure1(result: dict, path: str) -> None:
    """Training error vs epochs, best run per activation: ReLU solid, tanh dashed."""
    import matplotlib
    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    conditions = list(result["conditions"])
    fig, axes = plt.subplots(1, len(conditions), figsize=(5 * len(conditions), 4),
                             squeeze=False)
    for ax, condition in zip(axes[0], conditions):
        section = result["conditions"][condition]
        for activation, style in (("relu", "-"), ("tanh", "--")):
            if activation not in section or "best_learning_rate" not in section[activation]:
                continue
            run = _run_to_plot(section[activation])
            if run is None:
                continue
            reached = "" if section[activation]["best_learning_rate"] is not None else (
                f", did not reach {result['target_error']:.0%}")
            ax.plot(run["epochs"], run["errors"], style, color="black",
                    label=f"{activation} (lr {run['learning_rate']:g}{reached})")
        ax.axhline(result["target_error"], color="gray", linewidth=0.8)
        ax.set(title=f"{condition} condition", xlabel="Epochs",
               ylabel="Training error rate", ylim=(0, 1))
        ax.legend()
    fig.tight_layout()
    with fileio.atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=100)
    plt.close(fig)


def _run_to_plot(sweep: dict) -> dict | None:
    """The best run; if none reached the target, the one that got lowest."""
    runs = sweep["runs"]
    if not runs:
        return None
    if sweep["best_learning_rate"] is not None:
        return next(r for r in runs if r["learning_rate"] == sweep["best_learning_rate"])
    return min(runs, key=lambda r: min(r["errors"]) if r["errors"] else 1.0)

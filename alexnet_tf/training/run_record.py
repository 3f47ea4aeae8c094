"""The run record of a model_dir: the settings that trained it, and when they
changed.

    train_config.json    the TrainConfig in force (the latest run's settings)
    run_history.jsonl    one line per start or resume: step, time, host, pid,
                         the checkpoint resumed from, and each setting that
                         changed at that step (old -> new)

A resume compares this run's settings with train_config.json:

- FREE settings change freely: they say how long the run goes, how often
  it logs and saves, and where it (and its input) runs, not what it learns.
  A setting not named here needs the user's word: a new field is safe by
  default.
- FIXED settings never change on a resume: the checkpoint or the model
  depends on them (the model's own settings are checked against
  model_config.json, see `model_dir.refuse_changed_model_config`).
- Every other setting (the optimizer, the schedule's rules, the data and its
  augmentation, the batch, the seed) differs only when the user names it in
  `allow_changes`; otherwise the resume is refused in one line listing each
  difference, before anything is written.

A change is applied (the loop builds everything from this run's settings;
the schedule's rate in force is re-derived from the new learning_rate by
`schedules.rebase`), printed, and recorded in run_history.jsonl.
"""

from __future__ import annotations

import json
import os
import socket
import time

from alexnet_tf import fileio
from alexnet_tf.errors import InputError
from alexnet_tf.training import model_dir as model_dir_files
from alexnet_tf.training.config import TrainConfig

HISTORY_FILENAME = "run_history.jsonl"

FREE = frozenset({
    "epochs", "max_steps", "log_every_steps", "checkpoint_every_steps", "keep_checkpoints",
    "steps_per_loop", "verify_records", "strategy", "devices", "tower_devices", "jit_compile",
    "data_service"})
FIXED = {
    "lr_schedule": "the checkpoint holds its schedule's state",
    "init_from": "it is read only when a run starts",
    "init_normalization": "it is read only when a run starts",
}
# Not settings of the run: the key of the record, the model (its own file), the permission.
NOT_COMPARED = frozenset({"model_dir", "model", "allow_changes"})
PATH_SETTINGS = frozenset({"data_dir", "init_from"})


def settings(config: TrainConfig) -> dict:
    """What train_config.json records: every setting, not the permission."""
    values = config.to_dict()
    values.pop("allow_changes", None)
    return model_dir_files.jsonable(values)


def check_resume(config: TrainConfig) -> list[dict]:
    """This run's settings against the model_dir's train_config.json: the
    changes it may make ([{"setting", "old", "new"}]), or InputError listing
    those it may not. Nothing is compared when no record exists."""
    recorded = model_dir_files.read_train_config(config.model_dir)
    now = settings(config)
    differ = [{"setting": name, "old": recorded[name], "new": now[name]}
              for name in sorted(set(recorded) & set(now) - NOT_COMPARED)
              if not _same(name, recorded[name], now[name])]
    fixed = [c for c in differ if c["setting"] in FIXED]
    unasked = [c for c in differ if c["setting"] not in {*FIXED, *FREE, *config.allow_changes}]
    if fixed or unasked:
        path = os.path.join(config.model_dir, model_dir_files.TRAIN_CONFIG_FILENAME)
        listed = [f"{_show(c)} (cannot change on a resume: {FIXED[c['setting']]})"
                  for c in fixed] + [_show(c) for c in unasked]
        names = sorted({*config.allow_changes, *(c["setting"] for c in unasked)})
        how = f"pass --allow_changes={','.join(names)} to apply them, " if unasked else ""
        raise InputError(f"{config.model_dir} was trained with other settings ({path}): "
                         f"{'; '.join(listed)}; {how}resume with the recorded settings, "
                         "or use a new model_dir")
    return [c for c in differ if c not in fixed]


def _same(name: str, old, new) -> bool:
    if old == new:
        return True
    if name in PATH_SETTINGS and old and new:  # one folder, spelt two ways
        try:
            return os.path.samefile(old, new)
        except OSError:
            return False
    return False


def _value(value) -> str:
    if value is None:
        return "unset"
    if isinstance(value, list):
        return "[" + ",".join(str(v) for v in value) + "]"
    return str(value) if not isinstance(value, str) else (value or "''")


def _show(change: dict) -> str:
    return f"{change['setting']} {_value(change['old'])} -> {_value(change['new'])}"


def record(config: TrainConfig, step: int, resumed_from: str | None, changes: list[dict],
           rate: tuple[float, float] | None = None) -> str | None:
    """Writes train_config.json and appends this start or resume to
    run_history.jsonl; called once the checkpoint is restored, so a resume
    that fails before it leaves the record as it was. `rate` is the learning
    rate in force (restored, now) when a resume changed it. Returns the line
    to print when something changed, else None."""
    model_dir = config.model_dir
    model_dir_files.write_train_config(model_dir, settings(config))
    entry = {"event": "resume" if resumed_from else "start", "step": step,
             "time": time.strftime("%Y-%m-%d %H:%M:%S %z"), "host": socket.gethostname(),
             "pid": os.getpid(), "resumed_from": resumed_from, "changes": changes}
    shown = [_show(change) for change in changes]
    if rate is not None:
        # float32 values, shown to their 7 significant digits
        entry["rate_in_force"] = {"old": float(f"{rate[0]:.7g}"), "new": float(f"{rate[1]:.7g}")}
        shown.append(f"rate in force {rate[0]:g} -> {rate[1]:g}")
    path = os.path.join(model_dir, HISTORY_FILENAME)
    before = ""
    if os.path.exists(path):
        with open(path, encoding="utf-8") as f:
            before = f.read()
        if before and not before.endswith("\n"):
            before += "\n"
    fileio.write_text(path, before + json.dumps(model_dir_files.jsonable(entry),
                                                sort_keys=True) + "\n")
    return f"settings changed from step {step}: {'; '.join(shown)}" if shown else None


def read_history(model_dir: str) -> list[dict]:
    """run_history.jsonl's entries, oldest first ([] if none)."""
    path = os.path.join(model_dir, HISTORY_FILENAME)
    if not os.path.exists(path):
        return []
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]

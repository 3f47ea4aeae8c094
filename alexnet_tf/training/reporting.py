"""What a training run reports: running figures, progress lines, TensorBoard
scalars and the final summary."""

from __future__ import annotations

import time

import tensorflow as tf


class MetricWindow:
    """Sums of per-example figures since the last report."""

    def __init__(self):
        self.reset()

    def reset(self) -> None:
        self.loss = self.top1 = self.top5 = 0.0
        self.count = 0
        self.start = time.perf_counter()

    def add(self, loss_sum: float, top1: float, top5: float, count: float) -> None:
        self.loss += loss_sum
        self.top1 += top1
        self.top5 += top5
        self.count += count

    def figures(self) -> dict:
        n = max(self.count, 1)
        elapsed = max(time.perf_counter() - self.start, 1e-9)
        return {"loss": self.loss / n, "top1_error": 1.0 - self.top1 / n,
                "top5_error": 1.0 - self.top5 / n, "images_per_second": self.count / elapsed}


def write_scalars(writer, step: int, values: dict) -> None:
    with writer.as_default(step=step):
        for name, value in values.items():
            tf.summary.scalar(name, value)
    writer.flush()


def progress_line(step: int, total: int, steps_per_epoch: int, figures: dict) -> str:
    done = step / max(total, 1)
    bar = "#" * int(20 * done) + "." * (20 - int(20 * done))
    return (f"[{bar}] step {step}/{total} epoch {step / steps_per_epoch:.2f} "
            f"loss {figures['loss']:.4f} top-1 err {figures['top1_error']:.4f} "
            f"top-5 err {figures['top5_error']:.4f} lr {figures['learning_rate']:g} "
            f"{figures['images_per_second']:.1f} img/s")


def epoch_line(epoch: int, figures: dict, best: bool, next_lr: float, saved: str) -> str:
    return (f"epoch {epoch}: validation loss {figures['loss']:.4f} top-1 error "
            f"{figures['top1_error']:.4f} top-5 error {figures['top5_error']:.4f}"
            f"{' (best)' if best else ''}; next lr {next_lr:g}; saved {saved}")


def final_summary(summary: dict) -> str:
    def fmt(key):
        value = summary.get(key)
        return "n/a" if value is None else f"{value:.4f}"
    return "\n".join([
        "Training finished",
        f"  steps            {summary['step']} ({summary['epoch']:.2f} epochs)",
        f"  train loss       {fmt('train_loss')}  top-1 err {fmt('train_top1_error')}  "
        f"top-5 err {fmt('train_top5_error')}",
        f"  validation loss  {fmt('val_loss')}  top-1 err {fmt('val_top1_error')}  "
        f"top-5 err {fmt('val_top5_error')}",
        f"  best val top-1   {fmt('best_val_top1_error')}",
        f"  learning rate    {summary['learning_rate']:g}",
        f"  checkpoint       {summary['checkpoint']}",
    ])

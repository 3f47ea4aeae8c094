"""The build's throttled one-line progress report, with images/s and ETA."""

from __future__ import annotations

import time
from typing import TextIO


class Progress:
    """Counts images converted in this run and images in shards kept from an
    earlier one; prints at most every `every` seconds (0: 1 s on a terminal,
    15 s otherwise)."""

    def __init__(self, total: int, log: TextIO, every: float):
        self.total, self.log = total, log
        self.tty = hasattr(log, "isatty") and log.isatty()
        self.every = every or (1.0 if self.tty else 15.0)
        self.start = self.last = time.monotonic()
        self.converted = 0  # images processed in this run
        self.kept = 0  # images in shards kept from an earlier run
        self.shards = 0
        self._local = 0

    def tick(self) -> None:
        self._local += 1
        self.update(self._local)

    def update(self, processed: int) -> None:
        self.converted = processed
        now = time.monotonic()
        if now - self.last >= self.every:
            self.last = now
            self._print(now)

    def shard_done(self, images: int, kept: bool) -> None:
        self.shards += 1
        if kept:
            self.kept += images

    def _print(self, now: float, end: str = "") -> None:
        elapsed = max(now - self.start, 1e-9)
        rate = self.converted / elapsed
        remaining = max(self.total - self.kept - self.converted, 0)
        eta = remaining / rate if rate > 0 else float("inf")
        line = (f"{self.converted + self.kept}/{self.total} images "
                f"({self.kept} kept), {self.shards} shards done, {rate:.0f} images/s, "
                f"ETA {duration(eta)}")
        if self.tty:
            print("\r" + line.ljust(100), end=end, file=self.log, flush=True)
        else:
            print(line, file=self.log, flush=True)

    def finish(self) -> None:
        self._print(time.monotonic(), end="\n")

    @property
    def rate(self) -> float:
        return self.converted / max(time.monotonic() - self.start, 1e-9)


def duration(seconds: float) -> str:
    if seconds == float("inf"):
        return "?"
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"

"""The live progress line (a terminal only; never in logs or pipes)."""

from __future__ import annotations

import sys
from typing import TextIO

from engine.measure.metrics import Snapshot
from engine.measure.units import format_us


class Progress:
    def __init__(self, duration: float, out: TextIO | None = None, enabled: bool = True) -> None:
        self.duration = duration
        self.out = out or sys.stdout
        self.enabled = enabled
        self._width = 0
        self._errors = 0

    def update(self, elapsed: float, snap: Snapshot) -> None:
        if not self.enabled:
            return
        self._errors += snap.errors
        remaining = max(0.0, self.duration - elapsed)
        line = (
            f"  {elapsed:5.1f}s elapsed, {remaining:5.1f}s left | {snap.rps:9,.0f} req/s"
            f" | errors {self._errors} | p50 {format_us(snap.p50_us)} | {snap.vus} VUs"
        )
        self._width = max(self._width, len(line))
        self.out.write("\r" + line.ljust(self._width))
        self.out.flush()

    def clear(self) -> None:
        if self.enabled and self._width:
            self.out.write("\r" + " " * self._width + "\r")
            self.out.flush()
            self._width = 0

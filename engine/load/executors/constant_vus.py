"""Constant VUs (closed model): N VUs loop request after request until the deadline."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from engine.load.executors.checks import unmet


@dataclass(frozen=True, slots=True)
class ConstantVUs:
    vus: int
    duration: float

    def problems(self) -> list[str]:
        return unmet(
            (self.vus >= 1, f"constant VUs need at least 1 VU, got {self.vus}"),
            (self.duration > 0, f"constant VUs need a duration > 0, got {self.duration}"),
        )

    async def run(self, pool, announce=None) -> None:
        loop = asyncio.get_running_loop()
        started = loop.time()
        pool.set_deadline(self.duration)
        # Connect first, then send: thousands of VUs connecting while the first
        # ones already load the target (and this loop) connect slowly, and a
        # VU still connecting at the end has measured nothing.
        for _ in range(self.vus):
            pool.start_vu(held=True)
        await pool.connected(self.duration)
        pool.go()
        await asyncio.sleep(max(0.0, self.duration - (loop.time() - started)))
        await pool.wait_idle()

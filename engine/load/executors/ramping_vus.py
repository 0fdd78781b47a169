"""Ramping VUs: 1 -> N VUs linearly over the duration, in steps (the seed's ramp_up)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from engine.load.executors.checks import unmet


def split(total: int, parts: int) -> list[int]:
    """``total`` as ``parts`` whole shares that differ by at most one, largest first."""
    return [total // parts + (1 if i < total % parts else 0) for i in range(parts)]


@dataclass(frozen=True, slots=True)
class RampingVUs:
    max_vus: int
    duration: float
    steps: int = 10
    # --workers: this process runs share ``index`` of ``count`` of every step's VUs.
    index: int = 0
    count: int = 1

    def problems(self) -> list[str]:
        return unmet(
            (self.max_vus >= 1, f"ramping VUs need at least 1 VU, got {self.max_vus}"),
            (self.duration > 0, f"ramping VUs need a duration > 0, got {self.duration}"),
            (self.steps >= 1, f"ramping VUs need at least 1 step, got {self.steps}"),
        )

    def step_vus(self, step: int) -> int:
        """VUs during step ``step`` (1-based), as the seed: max(1, N * step // steps)."""
        return max(1, self.max_vus * step // self.steps)

    def local_step_vus(self, step: int) -> int:
        """This worker's share of step ``step``'s VUs (0 when there are fewer than workers)."""
        return split(self.step_vus(step), self.count)[self.index]

    def announcements(self) -> list[tuple[float, str]]:
        """(seconds from the start, line): what the run says when, for the whole load."""
        return [
            (
                (step - 1) * self.step_duration,
                f"  [ramp] Step {step}/{self.steps}: {self.step_vus(step)} VUs"
                f" for {self.step_duration:g}s",
            )
            for step in range(1, self.steps + 1)
        ]

    @property
    def step_duration(self) -> float:
        return self.duration / self.steps

    def vus_at(self, t: float) -> int:
        if not 0 <= t < self.duration:
            return 0
        return self.step_vus(min(int(t // self.step_duration) + 1, self.steps))

    async def run(self, pool, announce=None) -> None:
        loop = asyncio.get_running_loop()
        pool.set_deadline(self.duration)
        started = loop.time()
        running = 0
        lines = self.announcements()
        for step in range(1, self.steps + 1):
            target = self.local_step_vus(step)
            if announce is not None:
                announce(lines[step - 1][1])
            while running < target:
                pool.start_vu()
                running += 1
            await asyncio.sleep(max(0.0, started + step * self.step_duration - loop.time()))
        await pool.wait_idle()

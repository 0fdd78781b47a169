"""Open model: requests fall due on a schedule, whatever the target does.

Send times come from the start time and the rate, never from "now" (wrk2's
rule): request k of a step is due at step_start + k / rate. A due request
that finds no free connection (``--concurrency`` caps them) waits for the
next one and is counted as *late*; its latency, measured from when it was
due, includes the wait, so a slow target cannot hide its queueing by slowing
the schedule down (coordinated omission). One that would wait longer than the
timeout is dropped and counted. The scheduler's own lag (how late it got to a
due request) tells whether the generator kept up.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

from engine.load.executors.checks import unmet

CONNECT_TIMEOUT = 10.0


async def _schedule(pool, rate: float, seconds: float, recorder, offset: float = 0.0) -> None:
    """Send ``rate`` requests a second for ``seconds``, from now (+ ``offset`` seconds).

    With --workers, each of N processes sends rate/N a second, the i-th offset
    by i/rate: together, the single schedule at ``rate``.
    """
    interval = 1e9 / rate
    total = int(rate * seconds)
    t0 = time.perf_counter_ns() + int(offset * 1e9)
    k = 0
    while k < total:
        now = time.perf_counter_ns()
        due = min(total, max(0, int((now - t0) // interval) + 1))
        lags = recorder.dispatch_lags
        while k < due:
            intended = t0 + int(k * interval)
            lags.append((now - intended) // 1000)
            pool.try_send(intended)
            k += 1
        if k < total:
            wait = (t0 + k * interval - time.perf_counter_ns()) / 1e9
            await asyncio.sleep(wait if wait > 0 else 0)
    recorder.scheduled += total


@dataclass(frozen=True, slots=True)
class ConstantArrivalRate:
    rate: float  # requests per second, across all connections
    duration: float
    max_connections: int
    offset: float = 0.0  # seconds: this worker's place in the whole schedule (--workers)

    def problems(self) -> list[str]:
        return unmet(
            (self.rate > 0, f"--rate must be > 0 requests a second, got {self.rate:g}"),
            (self.duration > 0, f"an arrival rate needs a duration > 0, got {self.duration:g}"),
            (
                self.max_connections >= 1,
                f"an arrival rate needs at least 1 connection, got {self.max_connections}",
            ),
        )

    async def run(self, pool, announce=None) -> None:
        await _open(pool, self.max_connections, self.duration)
        await _schedule(pool, self.rate, self.duration, pool.recorder, self.offset)
        await pool.wait_idle()


@dataclass(frozen=True, slots=True)
class RampingArrivalRate:
    """ramp_up with --rate: rate/steps .. rate, linearly, in steps."""

    max_rate: float
    duration: float
    max_connections: int
    steps: int = 10
    count: int = 1  # --workers: this process sends 1/count of each step's rate ...
    index: int = 0  # ... offset by index / (step's whole rate)

    def problems(self) -> list[str]:
        return ConstantArrivalRate(self.max_rate, self.duration, self.max_connections).problems()

    def step_rate(self, step: int) -> float:
        """The whole load's rate during step ``step`` (1-based)."""
        return self.max_rate * step / self.steps

    def announcements(self) -> list[tuple[float, str]]:
        """(seconds from the start, line): what the run says when, for the whole load."""
        seconds = self.duration / self.steps
        return [
            (
                (step - 1) * seconds,
                f"  [ramp] Step {step}/{self.steps}: {self.step_rate(step):g} req/s"
                f" for {seconds:g}s",
            )
            for step in range(1, self.steps + 1)
        ]

    async def run(self, pool, announce=None) -> None:
        await _open(pool, self.max_connections, self.duration)
        step_seconds = self.duration / self.steps
        lines = self.announcements()
        for step in range(1, self.steps + 1):
            rate = self.step_rate(step)
            if announce is not None:
                announce(lines[step - 1][1])
            await _schedule(pool, rate / self.count, step_seconds, pool.recorder, self.index / rate)
        await pool.wait_idle()


async def _open(pool, connections: int, duration: float) -> None:
    """Open the connections before the clock starts (the schedule has no slack)."""
    pool.set_deadline(duration + CONNECT_TIMEOUT)
    for _ in range(connections):
        pool.start_vu()
    await pool.ready(CONNECT_TIMEOUT)
    pool.set_deadline(duration)

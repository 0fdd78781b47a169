"""Memory of the system under test: probes, their observer, and the streaming/buffering verdict.

A probe samples before the load (the baseline), every interval during it,
and once after it. Two sources:
- a Lightning node: ``erlang:memory()`` over distribution (engine/lightning/);
- any process: the RSS of a PID and all its descendants, from /proc.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable

from engine import procfs
from engine.config import RunConfig
from engine.measure.metrics import Recorder
from engine.measure.result import MemorySummary, RunResult
from engine.observers import Observer

MB = 1024 * 1024
# Growth below this is noise whatever the bodies (allocator slack, caches).
BUFFERING_FLOOR = 4 * MB


class ProbeLost(Exception):
    """The probed system went away; sampling stops from here."""


Sampler = Callable[[], Awaitable[dict[str, int]]]


class MemoryProbe:
    """Samples ``sampler()['total']`` (plus any other figures it returns) over a run."""

    def __init__(self, source: str, sampler: Sampler, interval: float = 1.0) -> None:
        self.sampler = sampler
        self.interval = interval
        self.summary = MemorySummary(source=source)
        self._t0 = 0.0
        self._task: asyncio.Task | None = None
        self._stopping = asyncio.Event()

    async def baseline(self) -> None:
        self._t0 = time.perf_counter()
        await self._sample()

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._loop())

    async def stop(self) -> MemorySummary:
        if self._task is not None:
            # Ask, do not cancel: a sample in flight finishes (each is bounded)
            # and the loop ends.
            self._stopping.set()
            await self._task
        if self.summary.lost_at is None:
            await self._sample()
        return self.summary

    async def _loop(self) -> None:
        while self.summary.lost_at is None and not self._stopping.is_set():
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.interval):
                    await self._stopping.wait()
            if not self._stopping.is_set():
                await self._sample()

    async def _sample(self) -> None:
        t = round(time.perf_counter() - self._t0, 3)
        try:
            figures = await self.sampler()
        except ProbeLost as exc:
            s = self.summary
            if s.lost_at is None:
                s.lost_at = t
                s.lost_reason = str(exc)
            return
        total = figures.get("total", 0)
        s = self.summary
        if s.start_bytes is None:
            s.start_bytes = total
        s.end_bytes = total
        # A "peak" figure (the kernel's high-water mark) catches what falls
        # between two samples.
        top = max(total, figures.get("peak", 0))
        s.max_bytes = top if s.max_bytes is None else max(s.max_bytes, top)
        s.samples.append((t, total))
        s.series.append({"t": t, **figures})


# -- RSS of a process tree -----------------------------------------------------------


def process_tree_rss(pid: int, reset_peak: bool = False) -> dict[str, int]:
    """``{"total", "peak", "processes"}`` for ``pid`` and every descendant.

    ``peak`` sums the processes' high-water marks (VmHWM): exact for one
    process, an upper bound for several. With ``reset_peak`` the marks start
    over from now (when the kernel lets us).
    """
    seen: set[int] = set()
    todo = [pid]
    total = peak = count = 0
    while todo:
        current = todo.pop()
        if current in seen:
            continue
        seen.add(current)
        if reset_peak:
            procfs.reset_peak(current)
        status = procfs.status(current)
        if status is None:
            if current == pid:
                raise ProbeLost(f"process {pid} is gone")
            continue
        total += status[0]
        peak += status[1]
        count += 1
        todo += procfs.children(current)
    return {"total": total, "peak": peak, "processes": count}


def pid_probe(pid: int, interval: float) -> MemoryProbe:
    first = True

    async def sample() -> dict[str, int]:
        nonlocal first
        figures = process_tree_rss(pid, reset_peak=first)
        if first:
            first = False
            figures["peak"] = figures["total"]  # the baseline: no peak before it counts
        return figures

    return MemoryProbe(f"pid {pid} RSS, with its children", sample, interval)


# -- the verdict ----------------------------------------------------------------------


def verdict(memory: MemorySummary | None, concurrency: int, body_bytes: int) -> str | None:
    """Streaming or buffering, from the growth against the bodies in flight.

    The seed's "what good looks like": a delta under 50 MB with 1 MB bodies
    means streaming; growth in proportion to concurrency x body size means the
    proxy holds whole bodies. Here: *buffering suspected* when the peak growth
    reaches half of concurrency x body size (and at least 4 MB, below which
    growth is noise); *streaming* when delta and peak growth stay under 50 MB.
    """
    if memory is None or memory.start_bytes is None or memory.max_bytes is None:
        return None
    growth = memory.max_bytes - memory.start_bytes
    delta = memory.delta_bytes or 0
    in_flight = concurrency * body_bytes
    bodies = f"{concurrency} VUs x {_size(body_bytes)} = {_size(in_flight)} in flight"
    if growth >= max(in_flight / 2, BUFFERING_FLOOR):
        return (
            f"buffering suspected: peak growth {growth / MB:.1f} MB is"
            f" {growth / in_flight:.1f}x the bodies in flight ({bodies})"
        )
    if delta < 50 * MB and growth < 50 * MB:
        return (
            f"streaming: delta {delta / MB:+.1f} MB, peak growth {growth / MB:.1f} MB,"
            f" under 50 MB and under half of the bodies in flight ({bodies})"
        )
    return (
        f"inconclusive: peak growth {growth / MB:.1f} MB is over 50 MB but under half of"
        f" the bodies in flight ({bodies})"
    )


def _size(n: float) -> str:
    if n >= MB:
        return f"{n / MB:.1f} MB"
    if n >= 1024:
        return f"{n / 1024:.1f} KB"
    return f"{int(n)} B"


def body_size_of_interest(config: RunConfig) -> int:
    """The body size that should not pile up in a proxy: the larger of the two."""
    payload = config.payload_bytes if config.scenario_spec.sends_bodies else 0
    return max(payload, config.response_bytes or 0)


class MemoryObserver(Observer):
    """A fresh probe for each load: the baseline before it, samples during it,
    the last sample after it; then the summary and the verdict in the result."""

    def __init__(self, make_probe: Callable[[float], MemoryProbe]) -> None:
        self.make_probe = make_probe  # interval -> a new MemoryProbe
        self.probe: MemoryProbe | None = None
        self.summary: MemorySummary | None = None
        self.config: RunConfig | None = None

    async def before(self, config: RunConfig) -> None:
        self.config = config
        self.summary = None
        self.probe = self.make_probe(config.sample_interval)
        await self.probe.baseline()  # before any load: the baseline

    def at_start(self) -> None:
        if self.probe is not None:
            self.probe.start()

    async def after(self, recorder: Recorder) -> None:
        if self.probe is not None:
            self.summary = await self.probe.stop()  # the last sample: after the load

    def report(self, result: RunResult) -> None:
        assert self.config is not None
        result.memory = self.summary
        result.memory_verdict = verdict(
            self.summary, self.config.concurrency, body_size_of_interest(self.config)
        )

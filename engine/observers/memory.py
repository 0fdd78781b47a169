"""Memory of the system under test: probes, their observer, and the streaming/buffering verdict.

A probe samples before the load (the baseline), every interval during it,
and once after it. Two sources:
- a Lightning node: ``erlang:memory()`` over distribution (engine/lightning/);
- any process: the RSS of a PID and all its descendants, from /proc.

The verdict. One growth figure at one level of bodies in flight cannot tell
a proxy that holds whole bodies from one whose allocator is warming up: a
cold Python proxy that streams grows a few MB on its first large bodies, as
much as a buffering one holding them. So before the load (when the bodies in
flight are worth it) the runner drives a short *ladder*: the run's VUs with
bodies of 1/16, 1/4 and all of the run's size, ``--memory-ladder`` seconds
each, the peak memory measured at each step from the same cold baseline. The
VUs (so the connections, and what a proxy keeps per connection) stay the
same; only the bytes in flight grow, 16-fold. Growth that does not follow
them is streaming. Growth that does may still be a cold allocator's first
use of larger blocks, so unless the first pass is flat the ladder runs three
passes and the median pass decides: buffering grows again every time, a
warm-up fades, and one pass that dips does not flip the verdict. Flat passes
after one that rose by BEYOND_STREAMING times the bodies or more, or a pass
during which memory fell below where it began, are inconclusive: bodies held
before are being reused or given back. The load itself then runs on a warm target and keeps
the seed's start/end/max/delta figures.

Limit: a proxy that buffers and whose allocator keeps and reuses the freed
memory can look flat once warm. chanproxy --buffer gives its memory back;
nginx (glibc) and mitmproxy keep it (tests/e2e/test_memory_verdict.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import statistics
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, replace

from engine import procfs
from engine.config import RunConfig
from engine.measure.metrics import Recorder
from engine.measure.result import MemorySummary, RunResult
from engine.observers import Observer

MB = 1024 * 1024
# Growth below this is noise whatever the bodies (allocator slack, caches).
BUFFERING_FLOOR = 4 * MB
# Between the first and last ladder steps, less than this is noise (a BEAM
# node's binaries wait for its garbage collector: a few MB come and go).
LADDER_NOISE = BUFFERING_FLOOR
# Seconds between samples during a ladder step (each step is short).
LADDER_INTERVAL = 0.1


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


# The ladder's body sizes: the run's divided by these, in this order.
LADDER_DIVISORS = (16, 4, 1)
# Growth follows the bodies when it rises by at least this share of the
# bodies in flight the ladder adds. A proxy that holds whole bodies holds all
# of them (bench_results/perf-ladder.md: nginx buffering and chanproxy
# --buffer); one that streams in large reads, or a cold allocator, holds a
# part that shrinks once warm.
FOLLOWS = 0.75
# A first pass under this share is flat: streaming, no more passes.
FLAT = 0.25
# Otherwise the ladder runs this many passes and the median decides: one
# pass inflated by a cold allocator's warm-up, or one that dips, does not
# change the verdict (buffering comes back every pass, a warm-up fades).
LADDER_PASSES = 3
# A proxy that streams holds at most the bodies in flight through it: growth
# rising by this many times their increase is held or garbage bodies, even if
# warm passes then look flat (its allocator reusing them).
BEYOND_STREAMING = 2.0


def _rise(steps: list[LadderStep]) -> int:
    return steps[-1].peak_growth_bytes - steps[0].peak_growth_bytes


def _more(steps: list[LadderStep]) -> int:
    """The bodies in flight the pass added, first step to last."""
    return steps[-1].in_flight_bytes - steps[0].in_flight_bytes


def _ratio(steps: list[LadderStep]) -> float:
    """The pass's rise over the bodies in flight it added."""
    more = _more(steps)
    return _rise(steps) / more if more > 0 else 0.0


@dataclass
class LadderStep:
    body_bytes: int
    in_flight_bytes: int  # VUs x the body size
    peak_growth_bytes: int  # the step's peak over the pass's first baseline


def ladder_configs(config: RunConfig) -> list[RunConfig]:
    """The ladder's steps: the run's VUs, one process, closed model, growing bodies."""
    body = config.body_of_interest
    sizes = sorted({max(1, body // d) for d in LADDER_DIVISORS})
    more = (sizes[-1] - sizes[0]) * config.concurrency  # the bodies in flight it adds
    if config.memory_ladder <= 0 or more / 2 < LADDER_NOISE:
        return []  # too few bytes in flight to tell from noise: the one-figure rule
    sends = config.scenario_spec.sends_bodies and config.payload_bytes >= body
    field = "payload_size" if sends else "response_size"
    return [
        replace(config, duration=config.memory_ladder, rate=None, workers=1, **{field: size})
        for size in sizes
    ]


def _trace(steps: list[LadderStep]) -> str:
    return ", ".join(f"{_size(s.body_bytes)} {s.peak_growth_bytes / MB:+.1f} MB" for s in steps)


def ladder_verdict(passes: list[list[LadderStep]], run: MemorySummary | None) -> str:
    """Buffering when the median pass's peak growth rises with the bodies in
    flight from the first step to the last, by at least FOLLOWS of their
    increase; streaming when it does not. The run's own figures (a warm
    target) are quoted beside, and overrule a flat ladder when they grew."""
    ratios = [_ratio(p) for p in passes]
    mid = statistics.median(ratios)
    first, last = passes[0][0], passes[0][-1]
    more = _more(passes[0])
    traces = "; ".join(
        f"{_trace(p)} ({r:.2f}x)" if len(passes) == 1 else f"pass {i + 1}: {_trace(p)} ({r:.2f}x)"
        for i, (p, r) in enumerate(zip(passes, ratios, strict=True))
    )
    said = (
        f"peak growth by body size, {traces}, while the bodies in flight rose {_size(more)}"
        f" ({_size(first.in_flight_bytes)} -> {_size(last.in_flight_bytes)})"
    )
    of = f"{mid:.2f}x their increase"
    if len(passes) > 1:
        of += f", the median of {len(passes)} passes"
    if more / 2 < LADDER_NOISE:
        return (
            f"inconclusive: the ladder's bodies in flight differ by {_size(more)}, too little to"
            f" tell from noise ({said}); raise --concurrency or the body size"
        )
    if mid >= FOLLOWS and mid * more >= LADDER_NOISE:
        return f"buffering suspected: growth follows the bodies in flight, {of}: {said}"
    low = min(s.peak_growth_bytes for p in passes for s in p)
    if low <= -LADDER_NOISE:
        # Memory held from before a pass (earlier bodies, garbage awaiting a
        # collector) given back while it ran: what the pass held is hidden.
        return (
            f"inconclusive: the target's memory fell {-low / MB:.1f} MB below where a pass began"
            f" ({said}): memory kept from earlier bodies was given back as it ran, so its growth"
            " cannot show what it holds; judge it on its first run after a restart"
        )
    if max(ratios) >= BEYOND_STREAMING:
        return (
            f"inconclusive: a pass's growth rose {max(ratios):.1f}x the bodies in flight it added,"
            f" more than a proxy that streams them can hold, then did not come back ({said}):"
            " memory its allocator reuses, or garbage collected late; judge it on its first run"
            " after a restart"
        )
    text = (
        f"streaming: growth does not follow the bodies in flight, {of} (holding whole bodies:"
        f" 1x; {FOLLOWS}x or more reads as buffering): {said}"
    )
    if len(passes) > 1 and ratios[0] >= FOLLOWS:
        text += "; the first pass's growth did not come back: warm-up"
    elif passes[0][0].peak_growth_bytes >= LADDER_NOISE:
        text += f"; the first {passes[0][0].peak_growth_bytes / MB:.1f} MB were warm-up"
    if run is not None and run.start_bytes is not None and run.max_bytes is not None:
        growth = run.max_bytes - run.start_bytes
        delta = run.delta_bytes or 0
        if delta >= 50 * MB or growth >= 50 * MB:
            return (
                f"inconclusive: the ladder says streaming ({said}) but the run then grew"
                f" {growth / MB:.1f} MB (delta {delta / MB:+.1f} MB): a leak, or buffering"
                " the ladder did not reach"
            )
        text += f"; the run (warm): delta {delta / MB:+.1f} MB, peak growth {growth / MB:.1f} MB"
    return text


def verdict(
    memory: MemorySummary | None,
    concurrency: int,
    body_bytes: int,
    ladder: list[list[LadderStep]] | None = None,
) -> str | None:
    """Streaming or buffering: from the ladder when there was one (passes of
    two steps or more), else from the one growth figure of the run (the seed's rule).

    The seed's "what good looks like": a delta under 50 MB with 1 MB bodies
    means streaming; growth in proportion to concurrency x body size means the
    proxy holds whole bodies. Here: *buffering suspected* when the peak growth
    reaches half of concurrency x body size (and at least 4 MB, below which
    growth is noise); *streaming* when delta and peak growth stay under 50 MB.
    """
    passes = [p for p in ladder or [] if len(p) >= 2]
    if passes:
        return ladder_verdict(passes, memory)
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


class MemoryObserver(Observer):
    """A fresh probe for each load: the baseline before it, samples during it,
    the last sample after it; then the summary and the verdict in the result.
    Before the load, a fresh probe for each step of the ladder."""

    def __init__(self, make_probe: Callable[[float], MemoryProbe]) -> None:
        self.make_probe = make_probe  # interval -> a new MemoryProbe
        self.probe: MemoryProbe | None = None
        self.summary: MemorySummary | None = None
        self.config: RunConfig | None = None
        self.ladder: list[list[LadderStep]] = []  # one list per pass
        self._ladder_base: int | None = None  # the pass's first baseline
        self._step: MemoryProbe | None = None

    def ladder_steps(self, config: RunConfig) -> list[RunConfig]:
        """The first pass; then, unless it was flat (under FLAT) or cut short,
        more up to LADDER_PASSES, whose median decides."""
        if not self.ladder:
            return ladder_configs(config)
        first = self.ladder[0]
        if len(self.ladder) >= LADDER_PASSES or len(self.ladder[-1]) < 2 or len(first) < 2:
            return []
        if _ratio(first) < FLAT:
            return []
        return ladder_configs(config)

    async def ladder_begin(self, step: RunConfig, index: int) -> None:
        if index == 0:
            self.ladder.append([])
            self._ladder_base = None
        self._step = self.make_probe(min(step.sample_interval, LADDER_INTERVAL))
        await self._step.baseline()
        if self._ladder_base is None:
            self._ladder_base = self._step.summary.start_bytes
        self._step.start()

    async def ladder_end(self, step: RunConfig) -> None:
        if self._step is None:
            return
        probe, self._step = self._step, None
        summary = await probe.stop()
        if summary.max_bytes is not None and self._ladder_base is not None:
            body = step.body_of_interest
            growth = summary.max_bytes - self._ladder_base
            self.ladder[-1].append(LadderStep(body, body * step.concurrency, growth))

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
        body = self.config.body_of_interest
        result.memory_verdict = verdict(self.summary, self.config.concurrency, body, self.ladder)
        if self.ladder and self.ladder[0]:
            last = self.ladder[0][-1]
            # What the one-figure rule would have said of the cold target at full load.
            cold = MemorySummary(
                source="ladder",
                start_bytes=0,
                end_bytes=last.peak_growth_bytes,
                max_bytes=last.peak_growth_bytes,
            )
            result.memory_ladder = {
                "step_s": self.config.memory_ladder,
                "vus": self.config.concurrency,
                "passes": [[asdict(s) for s in p] for p in self.ladder],
                "one_figure_verdict": verdict(cold, self.config.concurrency, body),
            }

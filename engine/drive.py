"""Drive one process's load: the executor's VUs on a pool of connections into a
Recorder, a snapshot every second of load, and the stop (end of the duration,
or Ctrl-C) with its grace. Used by the runner and by each --workers process."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable

from engine import interrupt
from engine.config import RunConfig
from engine.http import tls
from engine.http.client import build_specs
from engine.http.payload import json_payload
from engine.http.pool import OpenPool, Pool
from engine.load.executors import (
    ConstantArrivalRate,
    ConstantVUs,
    Executor,
    RampingArrivalRate,
    RampingVUs,
)
from engine.load.executors.ramping_vus import split
from engine.load.scenarios import BODY_METHODS, ExecutorKind
from engine.measure.metrics import Recorder, Snapshot


def make_executor(config: RunConfig, index: int = 0, count: int = 1) -> Executor:
    """The executor of the whole load, or of worker ``index``'s share of ``count``.

    The configuration was validated; an executor that still finds a problem
    with itself is a bug here, and stops the run before any load.
    """
    executor = _executor(config, index, count)
    if problems := executor.problems():
        raise ValueError(f"executor {executor!r}: " + "; ".join(problems))
    return executor


def _executor(config: RunConfig, index: int, count: int) -> Executor:
    ramping = config.scenario_spec.executor is ExecutorKind.ramping
    connections = split(config.concurrency, count)[index]
    if config.rate is not None:
        if ramping:
            return RampingArrivalRate(
                config.rate, config.duration, connections, count=count, index=index
            )
        return ConstantArrivalRate(
            config.rate / count, config.duration, connections, offset=index / config.rate
        )
    if ramping:
        return RampingVUs(config.concurrency, config.duration, index=index, count=count)
    return ConstantVUs(connections, config.duration)


async def load(
    config: RunConfig,
    url,
    server_timing: bool,
    recorder: Recorder,
    executor,
    *,
    on_start: Callable[[], object] | None = None,
    on_tick: Callable[[float, Snapshot], object] | None = None,
    announce: Callable[[str], None] | None = None,
    start_at: float | None = None,
    stop: asyncio.Event | None = None,
) -> tuple[float, float]:
    """Drive ``executor``'s load at ``url`` into ``recorder``; (seconds, epoch start).

    ``start_at`` (a time.perf_counter() value, which every process shares)
    makes workers start, and tick, together. When ``stop`` is set (Ctrl-C:
    engine.interrupt) no request starts any more, those in flight get
    interrupt.GRACE seconds, and the rest are abandoned.
    """
    loop = asyncio.get_running_loop()
    scenario = config.scenario_spec
    payload = json_payload(config.payload_bytes) if scenario.sends_bodies else b""
    specs = build_specs(url, scenario.methods, payload, BODY_METHODS, config.header_pairs)
    pool = (OpenPool if config.rate is not None else Pool)(
        loop,
        url,
        specs,
        recorder,
        config.parser,
        config.timeout,
        server_timing=server_timing,
        congestion=config.congestion,
        memo=config.memo,
        tls=tls.context_for(url.scheme, config.tls),
    )
    if start_at is not None:
        await asyncio.sleep(max(0.0, start_at - time.perf_counter()))
    t0 = time.perf_counter()
    cpu0 = time.process_time()
    started = time.time()
    if on_start is not None:
        on_start()
    ticker = loop.create_task(_tick(recorder, pool, on_tick, t0))
    try:
        await _until_done_or_stopped(executor.run(pool, announce), pool, stop)
    finally:
        ticker.cancel()
        elapsed = time.perf_counter() - t0
        last = recorder.series[-1].t if recorder.series else 0.0
        if recorder.has_news() or not recorder.series:
            recorder.snapshot(elapsed, max(elapsed - last, 1e-3), pool.running_vus)
        await pool.close()
        # This process's CPU over the load: the generator's self-check.
        recorder.cpu_seconds.append(time.process_time() - cpu0)
    return elapsed, started


async def _until_done_or_stopped(work, pool: Pool, stop: asyncio.Event | None) -> None:
    if stop is None:
        await work
        return
    loop = asyncio.get_running_loop()
    task = loop.create_task(work)
    waiter = loop.create_task(stop.wait())
    try:
        await asyncio.wait((task, waiter), return_when=asyncio.FIRST_COMPLETED)
    except asyncio.CancelledError:
        task.cancel()
        raise
    finally:
        waiter.cancel()
    if task.done():
        task.result()  # the executor's exception, if any
        return
    pool.set_deadline(0)  # no request starts from now on
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(interrupt.GRACE):
            await pool.wait_idle()
    pool.abandon()


async def _tick(recorder: Recorder, pool: Pool, on_tick, t0: float) -> None:
    """One snapshot per second of load, on whole seconds from the start."""
    second = 0
    while True:
        second += 1
        # uvloop's timers count whole milliseconds and may wake up to one
        # early: sleep again until the second is really over.
        while (wait := t0 + second - time.perf_counter()) > 0:
            await asyncio.sleep(wait)
        last = recorder.series[-1].t if recorder.series else 0.0
        now = time.perf_counter() - t0
        snap = recorder.snapshot(now, now - last, pool.running_vus)
        if on_tick is not None:
            on_tick(now, snap)

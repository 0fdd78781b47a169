"""runner.run(config): resolve the target, check it, drive the load, build the RunResult."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from dataclasses import asdict, replace
from typing import TextIO

from engine import interrupt, lightning, servertiming, tcp
from engine.client import Pool, build_specs
from engine.config import RunConfig, masked_headers
from engine.executors import (
    ConstantArrivalRate,
    ConstantVUs,
    RampingArrivalRate,
    RampingVUs,
)
from engine.executors.ramping_vus import split
from engine.metrics import Recorder, Snapshot
from engine.payload import json_payload
from engine.probes import pid_probe, verdict
from engine.report.console import banner
from engine.report.progress import Progress
from engine.report.units import format_us
from engine.result import MemorySummary, RunResult
from engine.saturation import SaturationResult
from engine.scenarios import BODY_METHODS, ExecutorKind, saturation_rates, saturation_steps
from engine.target import preflight, resolve


def make_executor(config: RunConfig, index: int = 0, count: int = 1):
    """The executor of the whole load, or of worker ``index``'s share of ``count``."""
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


def public_config(config: RunConfig) -> dict:
    data = asdict(config)
    data.pop("argv", None)
    if data.get("cookie"):
        data["cookie"] = "***"
    data["headers"] = [f"{name}: {value}" for name, value in masked_headers(config.header_pairs)]
    data["payload_bytes"] = config.payload_bytes
    data["response_bytes"] = config.response_bytes
    data["delay_ms"] = config.delay_ms
    return data


def body_size_of_interest(config: RunConfig) -> int:
    """The body size that should not pile up in a proxy: the larger of the two."""
    payload = config.payload_bytes if config.scenario_spec.sends_bodies else 0
    return max(payload, config.response_bytes or 0)


async def run(config: RunConfig, out: TextIO) -> RunResult | SaturationResult:
    target = resolve(config)
    session: lightning.Session | None = None
    if target is None:
        session, target, preflight_requests = await lightning.open_target(config, out)
    else:
        preflight_requests = 0
        if config.preflight:
            target, preflight_requests = await preflight(target, out, config.header_pairs)
    try:
        if config.scenario_spec.executor is ExecutorKind.saturation:
            return await _saturate(config, target, session, preflight_requests, out)
        return await _drive(config, target, session, preflight_requests, out)
    finally:
        if session is not None:
            await session.teardown_collector()
            await session.close()


async def _saturate(config, target, session, preflight_requests, out) -> SaturationResult:
    """One run per step, each --duration long; the collector is reset between steps."""
    if config.rate is not None:
        steps = [replace(config, rate=r) for r in saturation_rates(config.rate)]
        labels = [f"{r:g} req/s" for r in saturation_rates(config.rate)]
    else:
        steps = [replace(config, concurrency=n) for n in saturation_steps(config.concurrency)]
        labels = [f"{n} VUs" for n in saturation_steps(config.concurrency)]
    out.write(f"  Steps: {', '.join(labels)} ({config.duration:g}s each)\n")
    results = []
    for i, (step, label) in enumerate(zip(steps, labels, strict=True), 1):
        out.write(f"  [saturation] Step {i}/{len(steps)}: {label}\n")
        out.flush()
        result = await _drive(
            step, target, session, preflight_requests if i == 1 else 0, out, banner_shown=i > 1
        )
        results.append(result)
        out.write(
            f"    {result.rps:,.1f} req/s, p50 {format_us(result.p50_us)},"
            f" p99 {format_us(result.p99_us)}, {result.error_count} errors"
            f" ({result.error_rate}%)\n"
        )
        if result.interrupted:
            out.write(f"  [saturation] Interrupted in step {i}: the steps after it did not run\n")
            break
    saturation = SaturationResult.build(config, results)
    saturation.interrupted = any(r.interrupted for r in results)
    return saturation


async def _drive(
    config, target, session, preflight_requests, out, banner_shown: bool = False
) -> RunResult:
    scenario = config.scenario_spec
    payload_size = config.payload_bytes if scenario.sends_bodies else None
    if not banner_shown:
        out.write(
            banner(
                url=str(target.url),
                scenario=config.scenario,
                concurrency=config.concurrency,
                duration=config.duration,
                payload=payload_size,
                response_size=config.response_bytes,
                delay=config.delay_ms,
                telemetry=target.telemetry,
                parser=config.parser,
                timeout=config.timeout,
                command=config.command(),
                congestion=tcp.describe(config.congestion),
                target=target.description,
                headers=masked_headers(config.header_pairs),
                expect_status=config.expect_status,
            )
            + "\n"
        )
    out.flush()

    probe = None
    if session is not None:
        await session.reset_collector()
        probe = lightning.beam_probe(session, config.sample_interval)
    elif config.target_pid is not None:
        probe = pid_probe(config.target_pid, config.sample_interval)
    if probe is not None:
        await probe.baseline()  # before any load: the baseline

    recorder = Recorder(config.expected)
    progress = Progress(config.duration, out, enabled=config.progress)

    def announce(line: str) -> None:
        progress.clear()
        out.write(line + "\n")
        out.flush()

    server_timing = target.server_timing and session is None
    workers = min(config.workers, config.concurrency)
    stopper = interrupt.active()
    stop = stopper.event if stopper is not None else None
    interrupted = False
    memory: MemorySummary | None = None
    timing = None
    started = time.time()
    elapsed = 0.0
    try:
        if workers > 1:
            from engine.workers import run_workers

            elapsed, started = await run_workers(
                config,
                target.url,
                server_timing,
                workers,
                recorder,
                on_start=probe.start if probe is not None else None,
                on_tick=progress.update,
                announce=announce,
                stop=stop,
            )
        else:
            elapsed, started = await load(
                config,
                target.url,
                server_timing,
                recorder,
                make_executor(config),
                on_start=probe.start if probe is not None else None,
                on_tick=progress.update,
                announce=announce,
                stop=stop,
            )
        interrupted = stop is not None and stop.is_set()
    except asyncio.CancelledError:
        interrupted = True
        raise
    finally:
        progress.clear()
        if probe is not None:
            memory = await probe.stop()  # the last sample: after the load
        if session is not None:
            timing = await session.collect_timing()

    result = RunResult.build(
        recorder=recorder,
        elapsed=elapsed,
        started=started,
        ended=time.time(),
        scenario=config.scenario,
        concurrency=config.concurrency,
        url=str(target.url),
        target_kind=target.kind,
        parser=config.parser,
        command=config.command(),
        config=public_config(config),
        preflight_requests=preflight_requests,
        memory=memory,
        interrupted=interrupted,
        target_rate=config.rate,
    )
    if timing is not None:
        result.server_timing = timing.as_dict()
    elif target.server_timing:
        result.server_timing = servertiming.summarise(recorder)
    result.memory_verdict = verdict(memory, config.concurrency, body_size_of_interest(config))
    if session is not None:
        result.lightning = session.describe()
    return result


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
    pool = Pool(
        loop,
        url,
        specs,
        recorder,
        config.parser,
        config.timeout,
        server_timing=server_timing,
        open_model=config.rate is not None,
        congestion=config.congestion,
    )
    if start_at is not None:
        await asyncio.sleep(max(0.0, start_at - time.perf_counter()))
    t0 = time.perf_counter()
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
        await asyncio.sleep(max(0.0, t0 + second - time.perf_counter()))
        last = recorder.series[-1].t if recorder.series else 0.0
        now = time.perf_counter() - t0
        snap = recorder.snapshot(now, now - last, pool.running_vus)
        if on_tick is not None:
            on_tick(now, snap)

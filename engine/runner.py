"""runner.run(config): resolve the target, check it, drive the load, build the RunResult."""

from __future__ import annotations

import asyncio
import time
from dataclasses import asdict, replace
from typing import TextIO

from common import tcp
from engine import interrupt, lightning, servertiming
from engine.config import RunConfig, masked_headers
from engine.load import drive
from engine.load.scenarios import ExecutorKind, saturation_rates, saturation_steps
from engine.metrics import Recorder
from engine.probes import pid_probe, verdict
from engine.report.console import banner
from engine.report.progress import Progress
from engine.report.units import format_us
from engine.result import MemorySummary, RunResult
from engine.saturation import SaturationResult
from engine.target import preflight, resolve
from engine.workers import run_workers


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
            elapsed, started = await drive.load(
                config,
                target.url,
                server_timing,
                recorder,
                drive.make_executor(config),
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

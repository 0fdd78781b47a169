"""runner.run(config): the target and its observers, the load, the result: one straight sequence."""

from __future__ import annotations

import asyncio
import time
from dataclasses import asdict, replace
from typing import TextIO

from common import tcp
from engine import drive, interrupt
from engine.config import RunConfig, masked_headers
from engine.load.executors import ConstantVUs
from engine.load.scenarios import ExecutorKind, saturation_rates, saturation_steps
from engine.measure.metrics import Recorder
from engine.measure.result import RunResult
from engine.measure.saturation import SaturationResult
from engine.measure.units import format_bytes, format_us
from engine.opening import OpenTarget, open_target
from engine.report.console import banner
from engine.report.progress import Progress
from engine.workers import run_workers


def public_config(config: RunConfig) -> dict:
    data = asdict(config)
    data.pop("argv", None)
    for key in ("hdr_log", "charts", "thresholds"):  # what is done with the result
        data.pop(key, None)
    if data.get("cookie"):
        data["cookie"] = "***"
    data["headers"] = [f"{name}: {value}" for name, value in masked_headers(config.header_pairs)]
    data["payload_bytes"] = config.payload_bytes
    data["response_bytes"] = config.response_bytes
    data["delay_ms"] = config.delay_ms
    return data


async def run(config: RunConfig, out: TextIO) -> RunResult | SaturationResult:
    """Resolve the target and its observers, drive the load (once, or once per
    saturation step), build the result; the observers are closed in any case."""
    opened = await open_target(config, out)
    try:
        out.write(_banner(config, opened) + "\n")
        out.flush()
        await _ladder(config, opened, out)
        if config.scenario_spec.executor is ExecutorKind.saturation:
            return await _saturate(config, opened, out)
        return await _drive(config, opened, opened.preflight_requests, out)
    finally:
        await opened.close()


def _banner(config: RunConfig, opened: OpenTarget) -> str:
    target = opened.target
    return banner(
        url=str(target.url),
        scenario=config.scenario,
        concurrency=config.concurrency,
        duration=config.duration,
        payload=config.payload_bytes if config.scenario_spec.sends_bodies else None,
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
        tls=tls_line(config, target.url.scheme),
    )


def tls_line(config: RunConfig, scheme: str) -> str | None:
    """The banner's TLS line: how certificates are checked (None for plain http)."""
    if scheme != "https":
        return None
    if config.insecure:
        return "certificates NOT verified (--insecure)"
    if config.ca_file:
        return f"certificates verified against {config.ca_file} (--ca-file)"
    return "certificates verified against the system's CAs"


async def _ladder(config: RunConfig, opened: OpenTarget, out: TextIO) -> None:
    """The steps the observers asked for before the load (the memory ladder):
    a constant number of VUs each, --memory-ladder seconds, one process; their
    requests are not part of the result."""
    wanting = [o for o in opened.observers if o.ladder_steps(config)]
    if not wanting:
        return
    observer = wanting[0]  # one ladder (the memory observer's)
    stopper = interrupt.active()
    stop = stopper.event if stopper is not None else None
    passes = 0
    while steps := observer.ladder_steps(config):  # more passes unless the first was flat
        passes += 1
        sizes = ", ".join(format_bytes(s.body_of_interest) for s in steps)
        what = "tells warm-up from buffering" if passes == 1 else "again, now warm"
        out.write(
            f"  Memory ladder: {config.concurrency} VUs with bodies of {sizes},"
            f" {config.memory_ladder:g}s each, before the load ({what})\n"
        )
        out.flush()
        for index, step in enumerate(steps):
            if stop is not None and stop.is_set():
                return
            await observer.ladder_begin(step, index)
            try:
                await drive.load(
                    step,
                    opened.target.url,
                    False,
                    Recorder(step.expected),
                    ConstantVUs(step.concurrency, step.duration),
                    stop=stop,
                )
            finally:
                await observer.ladder_end(step)


async def _saturate(config: RunConfig, opened: OpenTarget, out: TextIO) -> SaturationResult:
    """One run per step, each --duration long; the observers start afresh at each."""
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
        requests = opened.preflight_requests if i == 1 else 0
        result = await _drive(step, opened, requests, out)
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
    config: RunConfig,
    opened: OpenTarget,
    preflight_requests: int,
    out: TextIO,
) -> RunResult:
    target, observers = opened.target, opened.observers
    for observer in observers:
        await observer.before(config)

    def at_start() -> None:
        for observer in observers:
            observer.at_start()

    recorder = Recorder(config.expected)
    progress = Progress(config.duration, out, enabled=config.progress)

    def announce(line: str) -> None:
        progress.clear()
        out.write(line + "\n")
        out.flush()

    server_timing = opened.reads_server_timing
    workers = min(config.workers, config.concurrency)
    stopper = interrupt.active()
    stop = stopper.event if stopper is not None else None
    interrupted = False
    started = time.time()
    elapsed = 0.0
    cpu0 = time.process_time()
    try:
        if workers > 1:
            elapsed, started = await run_workers(
                config,
                target.url,
                server_timing,
                workers,
                recorder,
                on_start=at_start,
                on_tick=progress.update,
                announce=announce,
                stop=stop,
            )
            # The parent's share: it relays ticks and samples memory.
            recorder.cpu_seconds.append(time.process_time() - cpu0)
        else:
            elapsed, started = await drive.load(
                config,
                target.url,
                server_timing,
                recorder,
                drive.make_executor(config),
                on_start=at_start,
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
        for observer in reversed(observers):  # the last started, the first stopped
            await observer.after(recorder)

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
        interrupted=interrupted,
        target_rate=config.rate,
        tls_verified=None if target.url.scheme == "http" else not config.insecure,
    )
    for observer in observers:
        observer.report(result)
    return result

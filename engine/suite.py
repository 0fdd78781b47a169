"""chanload suite: the seed's run_all.sh as one command, with the comparison it lacked.

Runs the seven scenarios in the seed's order with the seed's extra flags,
writes <out>/<YYYY.MM.DD-HH.MM>.log (everything printed), .csv (one row per
scenario) and .json, stops at the first scenario that fails, and ends with a
table of all scenarios and the proxy overhead: happy_path minus direct_sink.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, TextIO

from engine import runner
from engine.config import RunConfig
from engine.measure import thresholds
from engine.measure.result import RunResult
from engine.measure.statuses import DEFAULT_EXPECT
from engine.measure.units import format_bytes_delta, format_us
from engine.report.console import HEADER_ROWS, TIMING_ROWS, summary
from engine.report.files import append_csv, write_document
from engine.target import TargetError

# The seed's order and extra flags (run_all.sh).
SCENARIOS: tuple[tuple[str, dict[str, int]], ...] = (
    ("direct_sink", {}),
    ("happy_path", {}),
    ("ramp_up", {}),
    ("large_payload", {"payload_size": 1048576}),
    ("large_response", {"response_size": 1048576}),
    ("mixed_methods", {}),
    ("slow_sink", {"delay": 2000}),
)
FLAGS = {"payload_size": "--payload-size", "response_size": "--response-size", "delay": "--delay"}


class Tee:
    """Write to the terminal and to the log at once."""

    def __init__(self, *streams: TextIO) -> None:
        self.streams = streams

    def write(self, text: str) -> int:
        for s in self.streams:
            s.write(text)
        return len(text)

    def flush(self) -> None:
        for s in self.streams:
            s.flush()

    def isatty(self) -> bool:
        return False


@dataclass
class SuiteOutcome:
    results: list[RunResult] = field(default_factory=list)
    failed: str | None = None
    failure: str | None = None
    log: Path | None = None
    csv: Path | None = None
    json: Path | None = None
    thresholds_failed: int = 0
    interrupted: str | None = None  # the scenario Ctrl-C stopped


def scenario_config(base: RunConfig, scenario: str, extra: dict[str, int]) -> RunConfig:
    """The RunConfig of one scenario, with the command that re-runs it alone."""
    if base.channel_url and "{scenario}" in base.channel_url:
        base = replace(base, channel_url=base.channel_url.replace("{scenario}", scenario))
    config = replace(base, scenario=scenario, **extra)
    argv = [
        "--scenario",
        scenario,
        "--concurrency",
        str(base.concurrency),
        "--duration",
        f"{base.duration:g}",
    ]
    for key, value in extra.items():
        argv += [FLAGS[key], str(value)]
    if scenario == "direct_sink" or base.sink:
        argv += ["--sink", base.sink_or_default]
    if scenario != "direct_sink":
        if base.channel_url:
            argv += ["--channel-url", base.channel_url]
        else:
            argv += ["--node", base.node_name, "--target", base.target, "--channel", base.channel]
            if base.cookie:
                argv += ["--cookie", base.cookie]
    if base.target_pid is not None and scenario != "direct_sink":
        argv += ["--target-pid", str(base.target_pid)]
    for line in base.headers:
        argv += ["--header", line]  # masked where shown (RunConfig.command)
    if base.expect_status != DEFAULT_EXPECT:
        argv += ["--expect-status", base.expect_status]
    if base.repoint_channel and scenario != "direct_sink" and not base.channel_url:
        argv += ["--repoint-channel"]
    return replace(
        config,
        argv=tuple(argv),
        # The proxy's memory means nothing on the direct baseline.
        target_pid=None if scenario == "direct_sink" else base.target_pid,
    )


async def run_suite(
    base: RunConfig,
    out_dir: Path,
    out: TextIO,
    command: str = "chanload suite",
    charts: bool = True,
) -> SuiteOutcome:
    limits = base.limits
    out_dir.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y.%m.%d-%H.%M")
    outcome = SuiteOutcome(
        log=out_dir / f"{stamp}.log", csv=out_dir / f"{stamp}.csv", json=out_dir / f"{stamp}.json"
    )
    with open(outcome.log, "a") as log_file:
        tee = Tee(out, log_file)
        tee.write(
            f"chanload suite: {len(SCENARIOS)} scenarios, {base.duration:g}s each,"
            f" {base.concurrency} VUs\n"
        )
        for scenario, extra in SCENARIOS:
            config = scenario_config(base, scenario, extra)
            tee.write(f"\n### {scenario} ({len(outcome.results) + 1}/{len(SCENARIOS)})\n")
            try:
                result = await runner.run(config, tee)
            except TargetError as exc:
                outcome.failed, outcome.failure = scenario, str(exc)
                tee.write(f"\nchanload suite: {scenario} failed: {exc}\n")
                if exc.hint:
                    tee.write(exc.hint + "\n")
                break
            outcomes = thresholds.apply(limits, result)
            outcome.thresholds_failed += thresholds.failures(outcomes)
            tee.write(summary(result) + "\n")
            if outcomes:
                tee.write(thresholds.report(outcomes) + "\n")
            append_csv(outcome.csv, result)
            outcome.results.append(result)
            if result.interrupted:
                outcome.interrupted = scenario
                break
        tee.write("\n" + comparison(outcome.results, base) + "\n")
        if outcome.failed:
            tee.write(f"\nStopped at {outcome.failed}: the scenarios after it did not run.\n")
        if outcome.interrupted:
            tee.write(
                f"\nInterrupted during {outcome.interrupted} (its partial result is above):"
                " the scenarios after it did not run.\n"
            )
        if limits:
            word = (
                f"{outcome.thresholds_failed} FAILED" if outcome.thresholds_failed else "all passed"
            )
            tee.write(f"\nThresholds over all scenarios: {word}\n")
        document = suite_document(base, outcome, command)
        write_document(outcome.json, document)
        tee.write(
            f"\nResults: {outcome.log}\n         {outcome.csv} (one row per scenario)\n"
            f"         {outcome.json}\n"
        )
        if charts and outcome.results:
            tee.write(draw_charts(document, out_dir / f"{stamp}-charts") + "\n")
        tee.flush()
    return outcome


def draw_charts(document: dict[str, Any], where: Path) -> str:
    """Draw the suite's charts; a chart problem never costs the results (already written)."""
    from engine.report.charts import ChartsUnavailable, charts

    try:
        made = charts(document, where)
    except ChartsUnavailable as exc:
        return f"Charts: none ({exc})"
    except Exception as exc:  # the results are safe on disk; say what went wrong
        return f"Charts: failed: {type(exc).__name__}: {exc}"
    return f"Charts:  {where}/ ({len(made)} PNGs)"


def overhead(results: list[RunResult]) -> dict[str, Any] | None:
    """happy_path minus direct_sink, per percentile, and the throughput ratio."""
    by_name = {r.scenario: r for r in results}
    base, proxied = by_name.get("direct_sink"), by_name.get("happy_path")
    if base is None or proxied is None:
        return None
    data: dict[str, Any] = {
        f"{p}_us": getattr(proxied, f"{p}_us") - getattr(base, f"{p}_us")
        for p in ("p50", "p95", "p99")
    }
    data["rps_ratio"] = round(proxied.rps / base.rps, 3) if base.rps else None
    data["direct_sink"] = {k: getattr(base, k) for k in ("rps", "p50_us", "p95_us", "p99_us")}
    data["happy_path"] = {k: getattr(proxied, k) for k in ("rps", "p50_us", "p95_us", "p99_us")}
    data["server_timing"] = proxied.server_timing
    return data


def comparison(results: list[RunResult], base: RunConfig) -> str:
    heavy, light = "═" * 96, "─" * 96
    lines = [
        heavy,
        f" Suite results ({base.duration:g}s per scenario, {base.concurrency} VUs)",
        heavy,
        f" {'Scenario':<16}{'Req/s':>10}{'p50':>10}{'p95':>10}{'p99':>10}{'Errors':>9}"
        f"{'Mem delta':>12}  Verdict",
        light,
    ]
    for r in results:
        mem = format_bytes_delta(r.memory.delta_bytes) if r.memory else "n/a"
        word = (r.memory_verdict or "").split(":", 1)[0] or "-"
        lines.append(
            f" {r.scenario:<16}{r.rps:>10,.1f}{format_us(r.p50_us):>10}{format_us(r.p95_us):>10}"
            f"{format_us(r.p99_us):>10}{r.error_count:>9}{mem:>12}  {word}"
        )
    data = overhead(results)
    if data is not None:
        d, h = data["direct_sink"], data["happy_path"]
        lines += [
            light,
            " Proxy overhead (happy_path - direct_sink):",
            f"   {'':8}{'direct_sink':>14}{'happy_path':>14}{'overhead':>14}",
        ]
        for p in ("p50", "p95", "p99"):
            diff = data[f"{p}_us"]
            sign = "+" if diff >= 0 else "-"
            lines.append(
                f"   {p:<8}{format_us(d[f'{p}_us']):>14}{format_us(h[f'{p}_us']):>14}"
                f"{sign + format_us(abs(diff)) if diff else '0':>14}"
            )
        ratio = data["rps_ratio"]
        lines.append(
            f"   {'req/s':<8}{d['rps']:>14,.1f}{h['rps']:>14,.1f}"
            f"{(f'{ratio:.2f}x' if ratio is not None else 'n/a'):>14}"
        )
        timing = data["server_timing"]
        if timing and timing.get("events"):
            rows = HEADER_ROWS if timing.get("source") == "Server-Timing header" else TIMING_ROWS
            events = timing["events"]
            order = [key for key, _ in rows if key in events]
            order += [key for key in events if key not in order]
            labels = {key: label.strip() for key, label in rows}
            parts = [
                f"{labels.get(name, name)} p50={format_us(events[name]['p50_us'])}"
                for name in order
            ]
            overhead_us = timing.get("plug_overhead_mean_us")
            if overhead_us is not None:
                parts.append(f"overhead mean={format_us(max(overhead_us, 0))}")
            lines.append(f"   server-side (happy_path): {', '.join(parts)}")
    lines.append(heavy)
    return "\n".join(lines)


def suite_document(base: RunConfig, outcome: SuiteOutcome, command: str) -> dict[str, Any]:
    return {
        "suite": {
            "duration": base.duration,
            "concurrency": base.concurrency,
            "scenarios": [name for name, _ in SCENARIOS],
            "command": command,
        },
        "results": [r.to_dict() for r in outcome.results],
        "overhead": overhead(outcome.results),
        "failed": outcome.failed,
        "failure": outcome.failure,
        "interrupted": outcome.interrupted,
    }

"""The saturation scenario's result: one RunResult per step, the knee, the table."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from engine.measure.result import RunResult
from engine.measure.units import format_us

HEAVY = "═" * 72
LIGHT = "─" * 72


@dataclass
class SaturationResult:
    steps: list[RunResult]
    by_rate: bool
    duration: float
    slo_p99_ms: float | None
    slo_error_rate: float
    command: str
    knee: int | None = None  # index into steps
    knee_reason: str = ""
    interrupted: bool = False
    thresholds: list[dict[str, Any]] | None = field(default=None)

    scenario = "saturation"

    @classmethod
    def build(cls, config, steps: list[RunResult]) -> SaturationResult:
        result = cls(
            steps=steps,
            by_rate=config.rate is not None,
            duration=config.duration,
            slo_p99_ms=config.slo_p99_ms,
            slo_error_rate=config.slo_error_rate,
            command=config.command(),
        )
        result.find_knee()
        return result

    def step_label(self, r: RunResult) -> str:
        return f"{r.target_rate:g}/s" if self.by_rate else str(r.concurrency)

    def meets_slo(self, r: RunResult) -> bool:
        if r.error_rate > self.slo_error_rate:
            return False
        if self.slo_p99_ms is not None and r.p99_us > self.slo_p99_ms * 1000:
            return False
        return not (self.by_rate and r.kept_up is False)

    def find_knee(self) -> None:
        """The highest step that still met the SLO (every step before it did too)."""
        knee = None
        for i, r in enumerate(self.steps):
            if not self.meets_slo(r):
                break
            knee = i
        self.knee = knee
        slo = f"p99 <= {self.slo_p99_ms:g}ms and " if self.slo_p99_ms is not None else ""
        slo += f"errors <= {self.slo_error_rate:g}%"
        if knee is None:
            self.knee_reason = f"no step met {slo}"
        elif knee == len(self.steps) - 1:
            self.knee_reason = f"every step met {slo}: the knee is beyond the last step"
        else:
            self.knee_reason = f"the highest step with {slo}"

    # -- reports ---------------------------------------------------------------

    def table(self) -> str:
        head = "Rate" if self.by_rate else "VUs"
        lines = [
            "",
            HEAVY,
            " Saturation Test Results",
            HEAVY,
            f" {'Max rate' if self.by_rate else 'Max VUs'}:"
            f"     {self.step_label(self.steps[-1]) if self.steps else '-'}",
            f" Per-step:    {self.duration:g}s",
            f" Steps:       {len(self.steps)}"
            + (
                " (interrupted: partial results, the steps after the last did not run)"
                if self.interrupted
                else ""
            ),
            f" Command:     {self.command}",
            LIGHT,
            f"  {head:<9}{'RPS':<11}{'Reqs':<9}{'Errors':<8}{'p50':<10}{'p95':<10}{'p99':<10}",
            f"  {'─' * 8} {'─' * 10} {'─' * 8} {'─' * 7} {'─' * 9} {'─' * 9} {'─' * 9}",
        ]
        for i, r in enumerate(self.steps):
            mark = "  <- knee" if i == self.knee else ""
            lines.append(
                f"  {self.step_label(r):<9}{r.rps:<11,.1f}{r.total_requests:<9}{r.error_count:<8}"
                f"{format_us(r.p50_us):<10}{format_us(r.p95_us):<10}{format_us(r.p99_us):<10}{mark}"
            )
        lines.append(LIGHT)
        if self.knee is None:
            lines.append(f" Knee: none ({self.knee_reason})")
        else:
            r = self.steps[self.knee]
            lines.append(f" Knee: {self.step_label(r)} at {r.rps:,.1f} req/s ({self.knee_reason})")
        timing = [(r, (r.server_timing or {}).get("events") or {}) for r in self.steps]
        if any(events for _, events in timing):
            lines += [LIGHT, " Server-side Timing (per step):"]
            for r, events in timing:
                parts = []
                req = events.get("request")
                if req:
                    parts.append(
                        f"req p50={format_us(req['p50_us'])}/p95={format_us(req['p95_us'])}"
                    )
                if events.get("fetch_channel"):
                    parts.append(f"db p50={format_us(events['fetch_channel']['p50_us'])}")
                if events.get("upstream"):
                    parts.append(f"up p50={format_us(events['upstream']['p50_us'])}")
                lines.append(f"    {self.step_label(r) + ':':<10} {', '.join(parts) or '-'}")
        lines.append(HEAVY)
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        return {
            "scenario": "saturation",
            "by_rate": self.by_rate,
            "duration": self.duration,
            "slo_p99_ms": self.slo_p99_ms,
            "slo_error_rate": self.slo_error_rate,
            "command": self.command,
            "knee": None
            if self.knee is None
            else {
                "step": self.knee + 1,
                "concurrency": self.steps[self.knee].concurrency,
                "rate": self.steps[self.knee].target_rate,
                "rps": self.steps[self.knee].rps,
                "reason": self.knee_reason,
            },
            "knee_reason": self.knee_reason,
            "interrupted": self.interrupted,
            "results": [r.to_dict() for r in self.steps],
            "thresholds": self.thresholds,
        }

"""--threshold: pass/fail conditions on a run, for CI (exit 3 when any fails).

    p99<50ms   p95<=20ms   rps>1000   error_rate<0.1%   errors==0
    memory_delta<50MB   memory_growth<100MB   max<2s   server_p99<10ms

Times take us, ms or s (no unit: ms); sizes B, KB, MB, GB (binary, as the
reports print them; no unit: bytes); error_rate takes % (no unit: a fraction,
0.001 = 0.1%). A threshold on something the run did not measure (memory
without a probe, server timing without telemetry) is reported as n/a and does
not fail the run.
"""

from __future__ import annotations

import operator
import re
from dataclasses import dataclass
from typing import Any

from engine.measure.units import format_bytes, format_us

OPS = {"<": operator.lt, "<=": operator.le, ">": operator.gt, ">=": operator.ge, "==": operator.eq}
TIME_UNITS = {"us": 1, "ms": 1000, "s": 1_000_000, "": 1000}
SIZE_UNITS = {"b": 1, "kb": 1024, "mb": 1024**2, "gb": 1024**3, "": 1}
PERCENTILES = {
    "p50": "p50_us",
    "p95": "p95_us",
    "p99": "p99_us",
    "p999": "p999_us",
    "p99.9": "p999_us",
    "min": "min_us",
    "max": "max_us",
    "mean": "mean_us",
}
_EXPR = re.compile(r"^\s*([a-z_0-9.]+)\s*(<=|>=|==|<|>)\s*([0-9.]+)\s*([a-zA-Z%]*)\s*$")


class ThresholdError(ValueError):
    """A threshold that cannot be read (a usage error, exit 2)."""


@dataclass(frozen=True)
class Threshold:
    text: str
    metric: str
    op: str
    value: float  # in the metric's base unit (us, bytes, percent, req/s, count)
    kind: str  # "time" | "size" | "rate" | "count"

    def check(self, result: dict[str, Any]) -> ThresholdOutcome:
        actual = measure(self.metric, result)
        if actual is None:
            return ThresholdOutcome(self, None, None)
        return ThresholdOutcome(self, actual, OPS[self.op](actual, self.value))


@dataclass(frozen=True)
class ThresholdOutcome:
    threshold: Threshold
    actual: float | None
    passed: bool | None  # None: not measured in this run

    def line(self) -> str:
        t = self.threshold
        if self.passed is None:
            return f"   n/a   {t.text}  (not measured in this run)"
        word = "pass" if self.passed else "FAIL"
        return f"   {word}  {t.text}  (actual {describe(t.kind, self.actual)})"

    def as_dict(self) -> dict[str, Any]:
        return {"threshold": self.threshold.text, "actual": self.actual, "passed": self.passed}


def describe(kind: str, value: float) -> str:
    if kind == "time":
        return format_us(value) if value else "0us"
    if kind == "size":
        return format_bytes(value) if value >= 0 else "-" + format_bytes(-value)
    if kind == "rate":
        return f"{value:.3f}%"
    return f"{value:g}"


def parse(text: str) -> Threshold:
    m = _EXPR.match(text)
    if not m:
        raise ThresholdError(
            f"--threshold {text!r} is not like 'p99<50ms', 'error_rate<0.1%' or 'memory_delta<50MB'"
        )
    metric, op, number, unit = m.groups()
    value = float(number)
    unit_l = unit.lower()
    if metric in PERCENTILES or metric.startswith("server_"):
        if unit_l not in TIME_UNITS:
            raise ThresholdError(f"--threshold {text!r}: {metric} takes us, ms or s")
        return Threshold(text, metric, op, value * TIME_UNITS[unit_l], "time")
    if metric in ("memory_delta", "memory_max", "memory_growth"):
        if unit_l not in SIZE_UNITS:
            raise ThresholdError(f"--threshold {text!r}: {metric} takes B, KB, MB or GB")
        return Threshold(text, metric, op, value * SIZE_UNITS[unit_l], "size")
    if metric == "error_rate":
        if unit not in ("%", ""):
            raise ThresholdError(f"--threshold {text!r}: error_rate takes % or a fraction")
        return Threshold(text, metric, op, value if unit == "%" else value * 100, "rate")
    if metric in (
        "rps",
        "errors",
        "error_count",
        "requests",
        "total_requests",
        "transport_errors",
        "timeouts",
    ):
        if unit:
            raise ThresholdError(f"--threshold {text!r}: {metric} takes a plain number")
        return Threshold(text, metric, op, value, "count")
    raise ThresholdError(
        f"--threshold {text!r}: unknown metric {metric!r}; expected p50, p95, p99, p99.9, min,"
        " max, mean, rps, errors, error_rate, requests, transport_errors, timeouts,"
        " memory_delta, memory_max, memory_growth, server_p50, server_p95, server_p99"
    )


def measure(metric: str, r: dict[str, Any]) -> float | None:
    if metric in PERCENTILES:
        return float(r[PERCENTILES[metric]]) if r.get("responses") else None
    if metric.startswith("server_"):
        events = ((r.get("server_timing") or {}).get("events")) or {}
        request = events.get("request")
        key = metric.removeprefix("server_") + "_us"
        return float(request[key]) if request and key in request else None
    memory = r.get("memory")
    if metric == "memory_delta":
        return None if not memory else memory.get("delta_bytes")
    if metric == "memory_max":
        return None if not memory else memory.get("max_bytes")
    if metric == "memory_growth":
        if not memory or memory.get("max_bytes") is None:
            return None
        return memory["max_bytes"] - memory["start_bytes"]
    if metric == "error_rate":
        return float(r["error_rate"])
    if metric == "rps":
        return float(r["rps"])
    if metric in ("errors", "error_count"):
        return float(r["error_count"])
    if metric in ("requests", "total_requests"):
        return float(r["total_requests"])
    if metric == "transport_errors":
        return float(r["transport_errors"])
    if metric == "timeouts":
        return float(r["errors"].get("timeout", 0))
    return None


def evaluate(thresholds: list[Threshold], result: dict[str, Any]) -> list[ThresholdOutcome]:
    return [t.check(result) for t in thresholds]


def apply(thresholds: list[Threshold], result: Any) -> list[ThresholdOutcome]:
    """Evaluate ``thresholds`` on a RunResult and record the outcomes in it."""
    outcomes = evaluate(thresholds, result.to_dict())
    if outcomes:
        result.thresholds = [o.as_dict() for o in outcomes]
    return outcomes


def failures(outcomes: list[ThresholdOutcome]) -> int:
    return sum(1 for o in outcomes if o.passed is False)


def report(outcomes: list[ThresholdOutcome]) -> str:
    if not outcomes:
        return ""
    failed = sum(1 for o in outcomes if o.passed is False)
    head = " Thresholds: " + ("all passed" if not failed else f"{failed} FAILED")
    return "\n".join([head, *(o.line() for o in outcomes)])

"""chanload merge: one result from runs made at the same time on several machines.

Exact where it can be: histograms are added (so percentiles are those of the
union of all samples), counters are summed, the min and max are the min and
max. The per-second series is aligned by wall-clock second: each interval
goes to the second that holds its middle, and each second's latencies come
from the added interval histograms.
"""

from __future__ import annotations

import math
from collections import defaultdict
from typing import Any

from hdrh.histogram import HdrHistogram

from engine.measure.metrics import histogram_stats, new_histogram
from engine.measure.statuses import DEFAULT_EXPECT
from engine.measure.timing import events_used, plug_overhead

SUMMED = (
    "total_requests",
    "responses",
    "transport_errors",
    "server_errors",
    "non_2xx",
    "error_count",
    "failed_responses",
    "failed_4xx",
    "failed_5xx",
    "failed_other",
    "bytes_in",
    "bytes_out",
    "body_bytes_in",
    "body_bytes_out",
    "unknown_body_responses",
    "memo_hits",
    "out_of_range",
    "preflight_requests",
    "concurrency",
    "abandoned",
    "unconnected_vus",
)
# Open model: summed too (each machine had its share of the rate).
SUMMED_OPEN = ("target_rate", "scheduled", "late", "dropped")


class MergeError(ValueError):
    pass


def _add(into: HdrHistogram, encoded: str) -> None:
    if encoded:
        other = HdrHistogram.decode(encoded)
        if other.get_total_count():
            into.add(other)


def _sum_maps(maps: list[dict[str, int]]) -> dict[str, int]:
    out: dict[str, int] = defaultdict(int)
    for m in maps:
        for k, v in m.items():
            out[k] += v
    return dict(sorted(out.items()))


def merge(runs: list[dict[str, Any]]) -> dict[str, Any]:
    if not runs:
        raise MergeError("nothing to merge")
    scenarios = {r["scenario"] for r in runs}
    if len(scenarios) > 1:
        raise MergeError(f"runs of different scenarios: {', '.join(sorted(scenarios))}")
    expects = {r.get("expect_status", DEFAULT_EXPECT) for r in runs}
    if len(expects) > 1:
        raise MergeError(
            f"runs with different --expect-status ({', '.join(sorted(expects))}):"
            " their errors do not count the same things"
        )
    out = dict(runs[0])
    for key in SUMMED:
        out[key] = sum(r.get(key, 0) or 0 for r in runs)
    out["statuses"] = _sum_maps([r.get("statuses", {}) for r in runs])
    out["errors"] = _sum_maps([r.get("errors", {}) for r in runs])
    samples: dict[str, str] = {}
    for r in runs:
        for kind, text in (r.get("error_samples") or {}).items():
            samples.setdefault(kind, text)
    out["error_samples"] = samples

    h = new_histogram()
    for r in runs:
        _add(h, r.get("histogram", ""))
    if h.get_total_count():
        pct = h.get_percentile_to_value_dict([50, 95, 99, 99.9])
        out["p50_us"], out["p95_us"], out["p99_us"], out["p999_us"] = (
            int(pct[p]) for p in (50, 95, 99, 99.9)
        )
        out["mean_us"] = round(h.get_mean_value(), 1)
        out["histogram"] = h.encode().decode("ascii")
    mins = [r["min_us"] for r in runs if r.get("responses")]
    maxes = [r["max_us"] for r in runs if r.get("responses")]
    out["min_us"] = min(mins) if mins else 0
    out["max_us"] = max(maxes) if maxes else 0

    start = min(r["started_epoch"] for r in runs)
    end = max(r["started_epoch"] + r["duration_s"] for r in runs)
    duration = max(end - start, 1e-9)
    out["started_epoch"] = start
    out["started_at"] = min(r["started_at"] for r in runs)
    out["ended_at"] = max(r["ended_at"] for r in runs)
    out["duration_s"] = round(duration, 1)
    total = out["total_requests"]
    out["rps"] = round(total / duration, 1)
    out["error_rate"] = round(100.0 * out["error_count"] / total, 1) if total else 0.0
    out["interrupted"] = any(r.get("interrupted") for r in runs)
    if any(r.get("target_rate") is not None for r in runs):
        _merge_open_model(out, runs, duration)
    out["series"] = merge_series(runs, start)
    out["server_timing"] = merge_timing([r.get("server_timing") for r in runs])
    out["connections"] = merge_connections([r.get("connections") for r in runs])
    memories = [r.get("memory") for r in runs if r.get("memory")]
    out["memory"] = memories[0] if len(memories) == 1 else None
    out["memory_verdict"] = runs[0].get("memory_verdict") if len(memories) == 1 else None
    # Each machine's generator checked itself; the busiest one speaks for the merge.
    cpus = [r["generator_cpu"] for r in runs if r.get("generator_cpu")]
    out["generator_cpu"] = max(cpus, key=lambda c: c["busiest_process"]) if cpus else None
    out["merged_from"] = [
        {
            "hostname": (r.get("environment") or {}).get("hostname"),
            "started_at": r.get("started_at"),
            "total_requests": r.get("total_requests"),
            "concurrency": r.get("concurrency"),
            "generator_cpu": r.get("generator_cpu"),
        }
        for r in runs
    ]
    return out


def _merge_open_model(out: dict[str, Any], runs: list[dict[str, Any]], duration: float) -> None:
    """Rates, counts and the uncorrected, send-lag and dispatch-lag histograms, added."""
    from engine.measure.result import KEPT_UP_LAG_US

    if not all(r.get("target_rate") is not None for r in runs):
        raise MergeError("open-model (--rate) and closed-model runs cannot be merged")
    for key in SUMMED_OPEN:
        out[key] = sum(r.get(key) or 0 for r in runs)
    out["achieved_rate"] = round(out["total_requests"] / duration, 1)
    hists = {}
    for name in ("uncorrected", "send_lag", "dispatch_lag"):
        h = hists[name] = new_histogram()
        for r in runs:
            _add(h, (r.get("open_histograms") or {}).get(name, ""))
    out["open_histograms"] = {
        name: h.encode().decode("ascii") if h.get_total_count() else "" for name, h in hists.items()
    }
    h = hists["uncorrected"]
    if h.get_total_count():
        pct = h.get_percentile_to_value_dict([50, 95, 99, 99.9])
        out["p50_uncorrected_us"], out["p95_uncorrected_us"] = int(pct[50]), int(pct[95])
        out["p99_uncorrected_us"], out["p999_uncorrected_us"] = int(pct[99]), int(pct[99.9])
        out["max_uncorrected_us"] = int(h.get_max_value())
    lag = hists["send_lag"]
    if lag.get_total_count():
        pct = lag.get_percentile_to_value_dict([50, 99])
        out["send_lag_p50_us"], out["send_lag_p99_us"] = int(pct[50]), int(pct[99])
        out["send_lag_max_us"] = int(lag.get_max_value())
    dispatch = hists["dispatch_lag"]
    if dispatch.get_total_count():
        out["dispatch_lag_p99_us"] = int(dispatch.get_value_at_percentile(99))
    out["kept_up"] = all(r.get("kept_up") is not False for r in runs) and (
        (out.get("dispatch_lag_p99_us") or 0) <= KEPT_UP_LAG_US
    )


def merge_connections(parts: list[dict[str, Any] | None]) -> dict[str, Any] | None:
    """New connections of several runs: counts summed, connect and handshake
    histograms added; TLS as the first run saw it, verified only if all were."""
    parts = [p for p in parts if p]
    if not parts:
        return None
    out: dict[str, Any] = {"opened": sum(p.get("opened", 0) for p in parts)}
    for name in ("connect", "tls_handshake"):
        if not any(name in p for p in parts):
            continue
        h = new_histogram()
        for p in parts:
            _add(h, (p.get(name) or {}).get("histogram", ""))
        out[name] = histogram_stats(h)
    tls = [p["tls"] for p in parts if p.get("tls")]
    if tls:
        out["tls"] = {**tls[0], "verified": all(t.get("verified") for t in tls)}
    return out


def merge_series(runs: list[dict[str, Any]], start: float) -> list[dict[str, Any]]:
    base = math.floor(start)
    seconds: dict[int, dict[str, Any]] = {}
    hists: dict[int, HdrHistogram] = {}
    for r in runs:
        for snap in r.get("series", []):
            # The second that holds the middle of the interval: runs started
            # within half a second of each other line up.
            middle = r["started_epoch"] + snap["t"] - snap.get("elapsed", 1.0) / 2
            second = math.floor(middle) - base + 1
            acc = seconds.setdefault(
                second,
                {
                    "t": float(second),
                    "requests": 0,
                    "errors": 0,
                    "bytes_in": 0,
                    "bytes_out": 0,
                    "vus": 0,
                    "statuses": {},
                },
            )
            for key in ("requests", "errors", "bytes_in", "bytes_out", "vus"):
                acc[key] += snap.get(key, 0)
            acc["statuses"] = _sum_maps([acc["statuses"], snap.get("statuses", {})])
            _add(hists.setdefault(second, new_histogram()), snap.get("histogram", ""))
    out = []
    for second in sorted(seconds):
        acc = seconds[second]
        h = hists[second]
        if h.get_total_count():
            pct = h.get_percentile_to_value_dict([50, 95, 99])
            acc.update(
                p50_us=int(pct[50]),
                p95_us=int(pct[95]),
                p99_us=int(pct[99]),
                max_us=int(h.get_max_value()),
                histogram=h.encode().decode("ascii"),
            )
        else:
            acc.update(p50_us=0, p95_us=0, p99_us=0, max_us=0, histogram="")
        acc["rps"] = float(acc["requests"])
        acc["elapsed"] = 1.0
        out.append(acc)
    return out


def merge_timing(timings: list[dict | None]) -> dict | None:
    present = [t for t in timings if t and t.get("events")]
    if not present:
        return None
    events: dict[str, dict] = {}
    hists: dict[str, HdrHistogram] = {}
    for t in present:
        for name, e in t["events"].items():
            acc = events.setdefault(
                name, {"count": 0, "sum": 0.0, "min_us": e["min_us"], "max_us": e["max_us"]}
            )
            acc["count"] += e["count"]
            acc["sum"] += e["mean_us"] * e["count"]
            acc["min_us"] = min(acc["min_us"], e["min_us"])
            acc["max_us"] = max(acc["max_us"], e["max_us"])
            _add(hists.setdefault(name, new_histogram()), e.get("histogram", ""))
    out_events = {}
    for name, acc in events.items():
        h = hists[name]
        pct = h.get_percentile_to_value_dict([50, 95, 99]) if h.get_total_count() else {}
        out_events[name] = {
            "count": acc["count"],
            "mean_us": round(acc["sum"] / acc["count"], 1) if acc["count"] else 0.0,
            "min_us": acc["min_us"],
            "max_us": acc["max_us"],
            "p50_us": int(pct.get(50, 0)),
            "p95_us": int(pct.get(95, 0)),
            "p99_us": int(pct.get(99, 0)),
            "histogram": h.encode().decode("ascii") if h.get_total_count() else "",
        }
    unresolved = [t["unresolved"] for t in present if t.get("unresolved") is not None]
    return {
        "events": out_events,
        "lost": None,
        "source": present[0].get("source", ""),
        "unresolved": _sum_maps(unresolved) if unresolved else None,
        "ignored": sum(t.get("ignored") or 0 for t in present),
        "plug_overhead_mean_us": plug_overhead(
            {name: e["mean_us"] for name, e in out_events.items()}
        ),
        "events_used": events_used(out_events),
    }

"""PNG charts of a result: latency and throughput over time, memory over time,
saturation curves, and a suite overview.

Charts read the JSON document of a result (``RunResult.to_dict()``, a merged
run, a saturation result or a suite), so ``chanload chart`` draws them from a
saved file exactly as ``--charts`` does at the end of a run. matplotlib is an
optional extra (``pip install 'chanload[charts]'``, which ``make install``
does); it is imported only here, only when a chart is asked for, and only its
object API is used (no pyplot: no global state, no display needed).
"""

from __future__ import annotations

import textwrap
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from engine.outputs import open_replacement

MB = 1024 * 1024
# One colour per percentile everywhere, so charts read alike.
COLOURS = {"p50": "#1f77b4", "p95": "#ff7f0e", "p99": "#d62728", "max": "#7f7f7f"}
ERRORS = "#8c564b"
DPI = 100
MIN_RATE_INTERVAL = 0.5  # seconds: a shorter last interval is left out of the rate lines
SIZE = (10, 6.5)


class ChartsUnavailable(RuntimeError):
    """matplotlib is not installed."""


def require_matplotlib() -> None:
    """Raise ChartsUnavailable with what to run when matplotlib is missing."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise ChartsUnavailable(
            "charts need matplotlib: pip install 'chanload[charts]' (make install installs it)"
        ) from None


def _figure(rows: int = 1, sharex: bool = True):
    from matplotlib.figure import Figure

    fig = Figure(figsize=SIZE, dpi=DPI, layout="constrained")
    axes = fig.subplots(rows, 1, sharex=sharex, squeeze=False)[:, 0]
    for ax in axes:
        ax.grid(True, alpha=0.3)
    return fig, list(axes)


def _save(fig, path: Path) -> Path:
    """Write the PNG through a temporary file and a rename: never half a file."""
    with open_replacement(path) as out:
        fig.savefig(out, format="png")
    return path


def _ms(us: float) -> float:
    return us / 1000.0


def _title(doc: dict[str, Any]) -> str:
    parts = [str(doc.get("scenario", "run"))]
    if doc.get("target_rate"):
        parts.append(f"open model {doc['target_rate']:g} req/s")
    parts.append(f"{doc.get('concurrency', '?')} {'conns' if doc.get('target_rate') else 'VUs'}")
    parts.append(f"{doc.get('duration_s', 0):g} s")
    return " · ".join(parts)


# -- one run --------------------------------------------------------------------------


def _edges(series: list[dict[str, Any]]) -> list[float]:
    """Interval boundaries for stairs(): each snapshot covers (t - elapsed, t]."""
    if not series:
        return []
    return [series[0]["t"] - series[0].get("elapsed", 1.0)] + [s["t"] for s in series]


def latency_chart(doc: dict[str, Any], path: Path) -> Path | None:
    """Per-second p50/p95/p99/max (ms) above req/s and errors/s; VUs when they vary."""
    series = [s for s in doc.get("series") or [] if s.get("elapsed", 1.0) > 0]
    if not series:
        return None
    # A latency point sits in the middle of the interval it sums up.
    t = [s["t"] - s.get("elapsed", 1.0) / 2 for s in series]
    fig, (lat, thr) = _figure(2)
    corrected = " (from the intended send time)" if doc.get("target_rate") else ""
    fig.suptitle(f"{_title(doc)}: latency and throughput per second")
    for key in ("p50", "p95", "p99"):
        lat.plot(
            t, [_ms(s[f"{key}_us"]) for s in series], label=key, color=COLOURS[key], marker="."
        )
    lat.plot(
        t,
        [_ms(s["max_us"]) for s in series],
        label="max",
        color=COLOURS["max"],
        linestyle=":",
    )
    lat.set_ylabel(f"latency, ms{corrected}")
    highs = [s["max_us"] for s in series if s["requests"]]
    lows = [s["p50_us"] for s in series if s["requests"] and s["p50_us"] > 0]
    if highs and lows and max(highs) > 50 * min(lows):
        lat.set_yscale("log")
    lat.legend(loc="upper left", ncols=4)

    # Rates of a sliver of a second (the drain after the deadline) say nothing.
    full = list(series)
    while len(full) > 1 and full[-1].get("elapsed", 1.0) < MIN_RATE_INTERVAL:
        full.pop()
    edges = _edges(full)
    thr.stairs([s["rps"] for s in full], edges, label="requests/s", color="#2ca02c", linewidth=1.8)
    errs = [s["errors"] / s.get("elapsed", 1.0) for s in full]
    if any(errs):
        thr.stairs(errs, edges, label="errors/s", color=ERRORS, linewidth=1.8)
    thr.set_ylabel("per second")
    thr.set_xlabel("seconds since the load started")
    thr.set_ylim(bottom=0)
    handles, labels = thr.get_legend_handles_labels()
    vus = [s.get("vus", 0) for s in series]
    if len(set(vus)) > 1:
        twin = thr.twinx()
        twin.stairs(vus, _edges(series), label="VUs", color="#9467bd", linestyle="--")
        twin.set_ylabel("virtual users")
        twin.set_ylim(bottom=0)
        more = twin.get_legend_handles_labels()
        handles, labels = handles + more[0], labels + more[1]
    thr.legend(handles, labels, loc="lower right")
    return _save(fig, path)


def memory_chart(doc: dict[str, Any], path: Path) -> Path | None:
    """The target's memory (MB) over the run, with the verdict in the title."""
    memory = doc.get("memory") or {}
    samples = memory.get("samples") or []
    if not samples:
        return None
    fig, (ax,) = _figure(1)
    t = [s[0] for s in samples]
    ax.plot(t, [s[1] / MB for s in samples], label="total", color="#1f77b4", marker=".")
    series = memory.get("series") or []
    # BEAM samples carry binary and processes (bytes); RSS samples count processes.
    if series and "binary" in series[0]:
        for key, colour in (("binary", "#ff7f0e"), ("processes", "#2ca02c")):
            ax.plot(
                [s["t"] for s in series],
                [s.get(key, 0) / MB for s in series],
                label=key,
                color=colour,
            )
    if memory.get("start_bytes") is not None:
        ax.axhline(memory["start_bytes"] / MB, color="#7f7f7f", linestyle=":", label="start")
    if memory.get("lost_at") is not None:
        ax.axvline(memory["lost_at"], color="#d62728", linestyle="--", label="sampling lost")
    verdict = doc.get("memory_verdict")
    delta = memory.get("delta_bytes")
    # The verdict names the delta itself; without one, the delta alone.
    sub = verdict or (f"delta {delta / MB:+.1f} MB" if delta is not None else "")
    fig.suptitle(f"{_title(doc)}: memory of {memory.get('source', 'the target')}")
    if sub:
        ax.set_title(textwrap.fill(sub, 120), fontsize="medium")
    ax.set_ylabel("MB")
    ax.set_xlabel("seconds since the load started")
    top = max(max(s[1] for s in samples), memory.get("max_bytes") or 0) / MB
    ax.set_ylim(0, max(top * 1.15, 1.0))
    ax.legend(loc="lower right")
    return _save(fig, path)


def run_charts(doc: dict[str, Any], out_dir: Path, prefix: str | None = None) -> list[Path]:
    prefix = prefix if prefix is not None else f"{doc.get('scenario', 'run')}-"
    made = [
        latency_chart(doc, out_dir / f"{prefix}latency.png"),
        memory_chart(doc, out_dir / f"{prefix}memory.png"),
    ]
    return [p for p in made if p is not None]


# -- saturation -----------------------------------------------------------------------


def saturation_chart(doc: dict[str, Any], path: Path) -> Path | None:
    """Throughput and p50/p95/p99 against the step (VUs or target rate), the knee marked."""
    steps = doc.get("results") or []
    if not steps:
        return None
    by_rate = bool(doc.get("by_rate"))
    x = [s["target_rate"] if by_rate else s["concurrency"] for s in steps]
    fig, (thr, lat) = _figure(2)
    fig.suptitle(
        f"saturation: {len(steps)} steps of {doc.get('duration', 0):g} s"
        f" by {'rate' if by_rate else 'concurrency'}"
    )
    thr.plot(x, [s["rps"] for s in steps], marker="o", color="#2ca02c", label="achieved req/s")
    if by_rate:
        thr.plot(x, x, color="#7f7f7f", linestyle=":", label="target req/s")
    thr.set_ylabel("requests/s")
    thr.set_ylim(bottom=0)
    for key in ("p50", "p95", "p99"):
        lat.plot(x, [_ms(s[f"{key}_us"]) for s in steps], marker="o", label=key, color=COLOURS[key])
    lat.set_ylabel("latency, ms")
    lat.set_xlabel("target rate, req/s" if by_rate else "concurrency (VUs)")
    if doc.get("slo_p99_ms") is not None:
        lat.axhline(doc["slo_p99_ms"], color="#d62728", linestyle=":", label="SLO p99")
    knee = doc.get("knee")
    if knee:
        at = x[knee["step"] - 1]
        for ax in (thr, lat):
            ax.axvline(at, color="#9467bd", linestyle="--", label="knee")
        thr.set_title(f"knee at {at:g}: {knee.get('reason', '')}", fontsize="medium")
    else:
        thr.set_title(doc.get("knee_reason") or "no knee", fontsize="medium")
    errs = [s["error_rate"] for s in steps]
    if any(errs):
        twin = thr.twinx()
        twin.plot(x, errs, color="#d62728", marker="x", linestyle="--", label="errors %")
        twin.set_ylabel("errors, %")
        twin.set_ylim(bottom=0)
        h1, l1 = thr.get_legend_handles_labels()
        h2, l2 = twin.get_legend_handles_labels()
        thr.legend(h1 + h2, l1 + l2, loc="upper left")
    else:
        thr.legend(loc="upper left")
    lat.legend(loc="upper left")
    return _save(fig, path)


# -- suite ----------------------------------------------------------------------------


def suite_overview(results: Sequence[dict[str, Any]], path: Path) -> Path | None:
    """Every scenario side by side: p50/p95/p99 (log ms) and req/s."""
    if not results:
        return None
    names = [r["scenario"] for r in results]
    fig, (lat, thr) = _figure(2)
    fig.suptitle("suite: every scenario side by side")
    width = 0.27
    xs = range(len(names))
    for i, key in enumerate(("p50", "p95", "p99")):
        lat.bar(
            [x + (i - 1) * width for x in xs],
            [max(_ms(r[f"{key}_us"]), 0.001) for r in results],
            width,
            label=key,
            color=COLOURS[key],
        )
    lat.set_yscale("log")
    lat.set_ylabel("latency, ms (log)")
    lat.legend(loc="upper left", ncols=3)
    bars = thr.bar(list(xs), [r["rps"] for r in results], color="#2ca02c", label="requests/s")
    labels = [
        f"{r['rps']:,.0f}" + (f"\n{r['error_rate']:.1f}% errors" if r.get("error_count") else "")
        for r in results
    ]
    thr.bar_label(bars, labels, fontsize="small")
    thr.margins(y=0.15)
    thr.set_ylabel("requests/s")
    thr.set_xticks(list(xs), names, rotation=20)
    thr.legend(loc="upper right")
    return _save(fig, path)


def charts(doc: dict[str, Any], out_dir: Path) -> list[Path]:
    """Every chart a result document has data for, into ``out_dir`` (created)."""
    require_matplotlib()
    out_dir.mkdir(parents=True, exist_ok=True)
    if "suite" in doc:
        results = doc.get("results") or []
        made = [suite_overview(results, out_dir / "suite-overview.png")]
        for r in results:
            made += run_charts(r, out_dir)
        return [p for p in made if p is not None]
    if doc.get("scenario") == "saturation":
        made = [saturation_chart(doc, out_dir / "saturation.png")]
        return [p for p in made if p is not None]
    return run_charts(doc, out_dir)

"""chanload compare BASE.json NEW.json: what a proxy change did, side by side.

Takes two run results (`chanload run --json`) or two suite results (`chanload
suite`, compared scenario by scenario, or a merged result).
"""

from __future__ import annotations

from typing import Any

from engine.measure.units import format_bytes_delta, format_us

ROWS: tuple[tuple[str, str, str], ...] = (
    # (label, key, kind); kind: rate (higher is better), time, count, percent
    ("req/s", "rps", "rate"),
    ("p50", "p50_us", "time"),
    ("p95", "p95_us", "time"),
    ("p99", "p99_us", "time"),
    ("p99.9", "p999_us", "time"),
    ("max", "max_us", "time"),
    ("requests", "total_requests", "count"),
    ("errors", "error_count", "count"),
    ("error rate", "error_rate", "percent"),
)


class CompareError(ValueError):
    pass


def runs_of(doc: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Scenario name -> run result, from a run, merged or suite document."""
    if "results" in doc and isinstance(doc["results"], list):
        return {r["scenario"]: r for r in doc["results"]}
    if "scenario" in doc and "total_requests" in doc:
        return {doc["scenario"]: doc}
    raise CompareError("not a chanload result (run, merge or suite JSON)")


def _fmt(kind: str, value: float | None) -> str:
    if value is None:
        return "n/a"
    if kind == "time":
        return format_us(value) if value else "0us"
    if kind == "rate":
        return f"{value:,.1f}"
    if kind == "percent":
        return f"{value:.1f}%"
    return f"{value:,.0f}"


def _diff(kind: str, base: float | None, new: float | None) -> tuple[str, str]:
    if base is None or new is None:
        return "", ""
    d = new - base
    if kind == "time":
        diff = ("+" if d >= 0 else "-") + (format_us(abs(d)) if d else "0us")
    elif kind == "percent":
        diff = f"{d:+.1f} pts"
    else:
        diff = f"{d:+,.1f}" if kind == "rate" else f"{d:+,.0f}"
    ratio = f"{new / base:.2f}x" if base else ""
    return diff, ratio


def compare_runs(base: dict[str, Any], new: dict[str, Any]) -> list[list[str]]:
    rows = []
    for label, key, kind in ROWS:
        b, n = base.get(key), new.get(key)
        rows.append([label, _fmt(kind, b), _fmt(kind, n), *_diff(kind, b, n)])
    bm, nm = base.get("memory") or {}, new.get("memory") or {}
    if bm or nm:
        for label, key in (("memory delta", "delta_bytes"), ("memory max", "max_bytes")):
            b, n = bm.get(key), nm.get(key)
            cell = format_bytes_delta if key == "delta_bytes" else _bytes
            diff = format_bytes_delta(n - b) if b is not None and n is not None else ""
            ratio = f"{n / b:.2f}x" if b and n is not None and key == "max_bytes" else ""
            rows.append([label, cell(b), cell(n), diff, ratio])
    bt = ((base.get("server_timing") or {}).get("events")) or {}
    nt = ((new.get("server_timing") or {}).get("events")) or {}
    for event in ("request", "fetch_channel", "upstream"):
        if event in bt or event in nt:
            for stat in ("p50_us", "p99_us"):
                b = (bt.get(event) or {}).get(stat)
                n = (nt.get(event) or {}).get(stat)
                label = f"server {event} {stat.removesuffix('_us')}"
                rows.append([label, _fmt("time", b), _fmt("time", n), *_diff("time", b, n)])
    return rows


def _bytes(value: float | None) -> str:
    from engine.measure.units import format_bytes

    return format_bytes(value)


def table(rows: list[list[str]], headers: list[str]) -> str:
    widths = [max(len(r[i]) for r in [headers, *rows]) for i in range(len(headers))]
    lines = [
        "  ".join(
            h.ljust(w) if i == 0 else h.rjust(w)
            for i, (h, w) in enumerate(zip(headers, widths, strict=True))
        )
    ]
    lines.append("  ".join("-" * w for w in widths))
    for r in rows:
        lines.append(
            "  ".join(
                c.ljust(w) if i == 0 else c.rjust(w)
                for i, (c, w) in enumerate(zip(r, widths, strict=True))
            )
        )
    return "\n".join(lines)


def compare(base_doc: dict[str, Any], new_doc: dict[str, Any], names=("BASE", "NEW")) -> str:
    base, new = runs_of(base_doc), runs_of(new_doc)
    common = [s for s in base if s in new]
    if not common:
        raise CompareError(
            f"no scenario in common (base: {', '.join(base)}; new: {', '.join(new)})"
        )
    out = []
    for scenario in common:
        out.append(f"== {scenario} ==")
        out.append(
            table(
                compare_runs(base[scenario], new[scenario]),
                ["", names[0], names[1], "diff", "ratio"],
            )
        )
        out.append("")
    missing = [s for s in [*base, *new] if s not in common]
    if missing:
        out.append(f"(only in one of them: {', '.join(dict.fromkeys(missing))})")
    return "\n".join(out).rstrip() + "\n"

"""`make perf-ladder`: what the memory ladder sees of proxies that stream and that buffer.

The memory verdict (engine/observers/memory.py) calls a proxy's growth
*buffering* when, over a pass of the ladder (the run's VUs with bodies of
1/16, 1/4 and all of the run's size), it rises by at least FOLLOWS (0.75) of
the bodies in flight the pass adds; unless the first pass is flat (under
FLAT, 0.25) the ladder runs three passes and the median decides. This
benchmark measures that figure (the *ratio*: rise / bodies in flight added)
on each proxy of bench/proxies.py, cold (the first run after the proxy
starts) and warm (its second run), over several fresh starts, so the
threshold is argued from numbers: the proxies that hold whole bodies should
have medians at 1x or more, the streaming ones under the threshold.

Each run: chanload large_payload, 10 VUs x 1 MiB, `--memory-ladder 1`,
2 s of load, probed with `--target-pid`. Writes bench_results/perf-ladder.md
(raw numbers under bench_results/raw/).
"""

from __future__ import annotations

import argparse
import json
import shlex
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from bench.common import MIB, median, start_chansink, versions, versions_table, write_report
from bench.proxies import MITMDUMP, start_proxy
from engine.observers.memory import FLAT, FOLLOWS

MIB_125 = 5 * MIB // 4
# (kind, mode, body bytes, the verdict to expect, what RSS sees of it). None:
# no verdict expected, the case is there to show where the ladder's limit is.
CASES = [
    (
        "nginx",
        "buffer",
        MIB,
        "buffering suspected",
        "glibc's mmap threshold fixed: each body's buffer given back",
    ),
    ("chanproxy", "buffer", MIB, "buffering suspected", "gives its memory back"),
    (
        "mitmproxy",
        "buffer",
        MIB,
        None,
        "its allocator reuses freed bodies, so a warm run can look flat: judged cold only,"
        " where it must never be called streaming",
    ),
    ("nginx", "stream", MIB, "streaming", ""),
    ("chanproxy", "stream", MIB, "streaming", ""),
    (
        "mitmproxy",
        "stream",
        MIB,
        None,
        "reads and queues up to about a body's worth per connection at 1 MiB: it holds part of"
        " each body, and the ladder's ratio varies around the threshold (no verdict expected)",
    ),
    (
        "mitmproxy",
        "stream",
        MIB_125,
        "streaming",
        "bodies larger than what it queues: the case the one-figure rule gets wrong cold",
    ),
]


def case_name(kind: str, mode: str, size: int) -> str:
    return f"{kind} {mode} {size / MIB:g} MiB"


def chanload_run(url: str, pid: int, sink: str, size: int, args, work: Path) -> dict:
    out = work / f"run-{len(list(work.glob('run-*.json')))}.json"
    exe = Path(sys.executable).with_name("chanload")
    cmd = [
        str(exe), "run", "--scenario", "large_payload", "--channel-url", url, "--sink", sink,
        "--concurrency", str(args.vus), "--payload-size", str(size),
        "--duration", "2", "--memory-ladder", f"{args.step:g}", "--target-pid", str(pid),
        "--sample-interval", "0.2", "--quiet", "--json", str(out),
    ]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    if done.returncode != 0 or not out.exists():
        raise RuntimeError(f"chanload failed ({done.returncode}): {done.stderr[-2000:]}")
    return json.loads(out.read_text())


def summarize(result: dict) -> dict:
    """The ladder's ratio per pass, the verdict's first words, the one-figure rule's."""
    ladder = result.get("memory_ladder") or {}
    ratios = []
    passes = ladder.get("passes", [])
    for steps in passes:
        more = steps[-1]["in_flight_bytes"] - steps[0]["in_flight_bytes"]
        rise = steps[-1]["peak_growth_bytes"] - steps[0]["peak_growth_bytes"]
        ratios.append(round(rise / more, 3) if more else None)
    return {
        "ratios": ratios,
        "verdict": (result.get("memory_verdict") or "").split(":")[0],
        "one_figure": (ladder.get("one_figure_verdict") or "").split(":")[0],
        "first_pass_top_growth": passes[0][-1]["peak_growth_bytes"] if passes else None,
        "errors": result.get("error_count", 0),
        "requests": result.get("total_requests", 0),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3, help="fresh starts of each proxy")
    ap.add_argument("--vus", type=int, default=10)
    ap.add_argument("--step", type=float, default=1.0, help="seconds per ladder step")
    ap.add_argument("--only", action="append", help="KIND-MODE, e.g. mitmproxy-stream")
    ap.add_argument("--size", type=int, action="append", help="only cases with this body size")
    args = ap.parse_args(argv)
    cases = [
        c for c in CASES
        if (not args.only or f"{c[0]}-{c[1]}" in args.only) and (not args.size or c[2] in args.size)
    ]  # fmt: skip
    if any(kind == "mitmproxy" for kind, *_ in cases) and not MITMDUMP.exists():
        print(f"{MITMDUMP} is missing: run `make mitmproxy`", file=sys.stderr)
        return 2
    work = Path(tempfile.mkdtemp(prefix="perf-ladder-"))
    sink = start_chansink([], [], work / "chansink.log")
    sink_url = f"http://127.0.0.1:{sink.port}"
    results: dict[str, list[dict]] = {}
    try:
        for r in range(args.rounds):
            for kind, mode, size, _, _ in cases:
                name = case_name(kind, mode, size)
                proxy = start_proxy(kind, mode, sink.port, work / f"{kind}-{mode}-{size}-{r}")
                try:
                    cold, warm = (
                        summarize(chanload_run(proxy.url, proxy.pid, sink_url, size, args, work))
                        for _ in range(2)
                    )
                finally:
                    proxy.stop()
                results.setdefault(name, []).append({"cold": cold, "warm": warm})
                print(f"round {r + 1} {name:26s} cold {cold['ratios']} {cold['verdict']};"
                      f" warm {warm['ratios']} {warm['verdict']}", flush=True)  # fmt: skip
    finally:
        sink.stop()
    info = versions()
    info["mitmproxy"] = _mitmproxy_version()
    raw = {"command": command_line(), "args": vars(args), "versions": info, "results": results}
    report, ok = render(args, info, cases, results)
    path = write_report("perf-ladder", report, raw)
    print(report)
    print(f"written: {path}")
    return 0 if ok else 1


def _mitmproxy_version() -> str:
    try:
        out = subprocess.run(
            [str(MITMDUMP), "--version"], capture_output=True, text=True, timeout=30
        )
    except OSError:
        return "not installed"
    first = (out.stdout or out.stderr).strip().splitlines()
    return first[0] if first else "unknown"


def command_line() -> str:
    return "python -m bench.perf_ladder " + shlex.join(sys.argv[1:])


def _ratios(values: list) -> str:
    return " / ".join("-" if v is None else f"{v:.2f}" for v in values) or "(no ladder)"


def _count(words: list[str]) -> str:
    return ", ".join(f"{words.count(w)}x {w or '(none)'}" for w in sorted(set(words)))


def _mb(n: int | None) -> str:
    return "-" if n is None else f"{n / MIB:.1f} MB"


def render(args, info, cases, results) -> tuple[str, bool]:
    """The table, then the checks: every run of a case expected to buffer with
    a median at FOLLOWS or more, every streaming one under it, each verdict as
    expected, and mitmproxy buffering never called streaming cold."""
    lines = [
        "# perf-ladder: the memory ladder's ratio on proxies that buffer and that stream",
        "",
        f"Command: `make perf-ladder` (`{command_line().strip()}`), {info['date']}.",
        "",
        f"chanload large_payload, {args.vus} VUs, `--memory-ladder {args.step:g}` (bodies of"
        " 1/16, 1/4 and all of the body size), then 2 s of load; {rounds} fresh starts of each"
        " proxy, each probed on its first run (cold) and its second (warm). The ratio is a"
        " pass's rise in peak memory from its first step to its last over the bodies in flight"
        " it adds; a cell lists the passes. The verdict calls growth *buffering* at a ratio of"
        f" {FOLLOWS} or more; unless the first pass is under {FLAT}x it runs three passes and"
        " the median decides. The one-figure rule (the seed's: peak growth at least half of the"
        " bodies in flight) is what it says of the cold pass's growth at the full size.".replace(
            "{rounds}", str(args.rounds)
        ),
        "",
        "| proxy, body | expected | round | cold: ratio per pass | cold verdict"
        " | cold growth: one-figure rule | warm: ratio per pass | warm verdict |",
        "|---|---|---|---|---|---|---|---|",
    ]
    buffering: list[float] = []  # each run's median
    streaming: list[float] = []
    wrong: list[str] = []
    for kind, mode, size, expected, _ in cases:
        name = case_name(kind, mode, size)
        for i, rnd in enumerate(results.get(name, [])):
            cold, warm = rnd["cold"], rnd["warm"]
            lines.append(
                f"| {name} | {expected or '-'} | {i + 1} | {_ratios(cold['ratios'])}"
                f" | {cold['verdict']} | {_mb(cold['first_pass_top_growth'])}:"
                f" {cold['one_figure']} | {_ratios(warm['ratios'])} | {warm['verdict']} |"
            )
            for when, run in (("cold", cold), ("warm", warm)):
                ratios = [v for v in run["ratios"] if v is not None]
                where = f"{name} round {i + 1} {when}"
                if run["errors"]:
                    wrong.append(f"{where}: {run['errors']} errors")
                mid = [statistics.median(ratios)] if ratios else []
                if expected == "buffering suspected":
                    buffering += mid
                elif expected == "streaming":
                    streaming += mid
                if expected and run["verdict"] != expected:
                    wrong.append(f"{where}: {run['verdict']}")
                never_streaming = kind == "mitmproxy" and mode == "buffer" and when == "cold"
                if never_streaming and run["verdict"] == "streaming":
                    wrong.append(f"{where}: streaming")
    firsts = {
        n: [r["cold"]["ratios"][0] for r in v if (r["cold"]["ratios"] or [None])[0] is not None]
        for n, v in results.items()
    }
    lines += [
        "",
        "Median cold first-pass ratio: "
        + ", ".join(f"{n} {median(v):.2f}" for n, v in firsts.items() if v)
        + ".",
        "",
    ]
    if buffering and streaming:
        lines.append(
            f"Lowest median of a run of a case expected to buffer: **{min(buffering):.2f}**;"
            f" highest median of a run of a case expected to stream: **{max(streaming):.2f}**;"
            f" the threshold: **{FOLLOWS}**."
        )
        if not min(buffering) >= FOLLOWS > max(streaming):
            wrong.append("the threshold does not separate them")
        lines.append("")
    notes = [f"- {case_name(k, m, size)}: {note}." for k, m, size, _, note in cases if note]
    if notes:
        lines += ["Notes on the cases:", "", *notes, ""]
    lines += [
        "Result: " + ("every verdict as expected." if not wrong else "; ".join(wrong) + "."),
        "",
        "## Versions",
        "",
        versions_table(info),
        "",
    ]
    return "\n".join(lines), not wrong


if __name__ == "__main__":
    sys.exit(main())

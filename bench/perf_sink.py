"""`make perf-sink`: chansink against nginx, side by side, under the same wrk load.

1. Small responses: req/s of chansink vs nginx (one worker, the same 256-byte
   body) under `wrk -t1 -c20`, back to back in alternating order, several
   rounds; wrk pinned to one core, the server to the other. Target: chansink
   >= 0.95x nginx (ratio of the medians). wrk repeats one request, which
   chansink answers from its memo without parsing it again (docs/architecture.md),
   so the same comparison is made with every request different (a wrk script
   adds a counter header): every request is then parsed. No target there;
   both sections report each server's CPU time per request.
2. 1 MiB downloads (chansink `?response_size=1048576`, nginx a static file)
   and 1 MiB uploads (read and discarded by both): GiB/s, the server's CPU use
   and chansink's RSS over each run. Target: >= 3 GiB/s with flat RSS (peak
   within 16 MiB of the start). Moving 1 MiB bodies costs the receiving side
   most, so these runs give wrk two threads and pin nothing.
3. Idle connections: chansink's small-response req/s under the same wrk load
   with and without 5,000 idle keep-alive connections held open beside it
   (slowloris-style clients that never send), alternating. Target: the active
   clients slowed by no more than 2x (ratio of the medians >= 0.5).

Writes bench_results/perf-sink.md (and the raw numbers under bench_results/raw/).
"""

from __future__ import annotations

import argparse
import contextlib
import resource
import shlex
import socket
import sys
import tempfile
from pathlib import Path

from bench.common import (
    GIB,
    MIB,
    ProcSampler,
    cpu_sets,
    fmt_bytes,
    median,
    run_wrk,
    skip_unless,
    start_chansink,
    start_nginx,
    versions,
    versions_table,
    write_report,
    wrk_upload_script,
)
from common.bodies import json_body

TARGET_RATIO = 0.95
IDLE_CONNECTIONS = 5000
TARGET_IDLE_RATIO = 0.5
TARGET_GIBPS = 3.0
FLAT_RSS = 16 * MIB
SERVERS = ("chansink", "nginx")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--duration", type=float, default=10, help="seconds per small-body run")
    ap.add_argument("--big-duration", type=float, default=5, help="seconds per 1 MiB run")
    ap.add_argument("--rounds", type=int, default=5, help="repetitions of each comparison")
    ap.add_argument("--connections", type=int, default=20)
    args = ap.parse_args(argv)
    skip_unless("wrk", "nginx")

    gen_pin, srv_pin = cpu_sets()
    tmp = Path(tempfile.mkdtemp(prefix="perf-sink-"))
    started = {
        "chansink": start_chansink([], srv_pin, tmp / "chansink.log"),
        "nginx": start_nginx(json_body(256), srv_pin),
    }
    upload = wrk_upload_script(MIB)
    varied = wrk_varied_script()
    paths = {
        "small": {"chansink": "/test", "nginx": "/test"},
        "varied": {"chansink": "/test", "nginx": "/test"},
        "download": {"chansink": f"/test?response_size={MIB}", "nginx": "/big"},
        "upload": {"chansink": "/test", "nginx": "/upload"},
    }
    results: dict[str, dict[str, list]] = {k: {n: [] for n in SERVERS} for k in paths}
    try:
        for srv in started.values():  # warm both up
            run_wrk(f"http://127.0.0.1:{srv.port}/test", 2, args.connections, gen_pin)
        for r in range(args.rounds):
            order = SERVERS if r % 2 == 0 else SERVERS[::-1]
            for kind in paths:
                for name in order:
                    srv = started[name]
                    small = kind in ("small", "varied")
                    with ProcSampler(srv.pid) as proc:
                        res = run_wrk(
                            f"http://127.0.0.1:{srv.port}{paths[kind][name]}",
                            args.duration if small else args.big_duration,
                            args.connections,
                            gen_pin if small else [],
                            threads=1 if small else 2,
                            script={"upload": upload, "varied": varied}.get(kind),
                        )
                    results[kind][name].append((res, proc.summary()))
                    rate = f"{res.rps:12,.0f} req/s" if small else f"{gibps(res):8.2f} GiB/s"
                    print(f"round {r + 1} {kind:8s} {name:8s} {rate}", flush=True)
        idle = idle_connections(args, started["chansink"], gen_pin)
    finally:
        for srv in started.values():
            srv.stop()

    raw = {
        "command": command_line(),
        "args": vars(args),
        "versions": versions(),
        "results": {
            kind: {n: [{"wrk": vars(w), "proc": p} for w, p in v] for n, v in per.items()}
            for kind, per in results.items()
        },
        "idle": {k: [vars(w) for w in v] for k, v in idle.items()},
    }
    report, ok = render(args, raw["versions"], results, idle)
    path = write_report("perf-sink", report, raw)
    print(report)
    print(f"written: {path}")
    return 0 if ok else 1


def idle_connections(args, sink, gen_pin) -> dict[str, list]:
    """wrk on chansink with and without IDLE_CONNECTIONS idle connections beside it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = IDLE_CONNECTIONS + 256
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, want), hard))
    out: dict[str, list] = {"without": [], "with": []}
    url = f"http://127.0.0.1:{sink.port}/test"
    for r in range(args.rounds):
        order = ("without", "with") if r % 2 == 0 else ("with", "without")
        for kind in order:
            with contextlib.ExitStack() as stack:
                if kind == "with":
                    for _ in range(IDLE_CONNECTIONS):
                        stack.enter_context(socket.create_connection(("127.0.0.1", sink.port)))
                res = run_wrk(url, args.duration, args.connections, gen_pin)
            out[kind].append(res)
            print(f"round {r + 1} idle     {kind:8s} {res.rps:12,.0f} req/s", flush=True)
    return out


def wrk_varied_script() -> Path:
    """A wrk script whose requests all differ: an X-Request-Id header counts up."""
    path = Path(tempfile.mkdtemp(prefix="chanload-wrk-")) / "varied.lua"
    path.write_text(
        "local n = 0\n"
        "request = function()\n"
        "  n = n + 1\n"
        '  return wrk.format(nil, nil, {["X-Request-Id"] = tostring(n)})\n'
        "end\n"
    )
    return path


def cpu_us(res, proc) -> float:
    """The server's CPU time per request, in microseconds."""
    return proc["cpu_cores"] / max(res.rps, 1e-9) * 1e6


def gibps(res) -> float:
    return res.rps * MIB / GIB


def command_line() -> str:
    return "python -m bench.perf_sink " + shlex.join(sys.argv[1:])


def render(args, info, results, idle) -> tuple[str, bool]:
    lines = [
        "# perf-sink: chansink vs nginx",
        "",
        f"Command: `make perf-sink` (`{command_line().strip()}`), {info['date']}.",
        "",
        f"{args.rounds} rounds, each server in turn (order alternating). nginx: one worker,"
        " access_log off, keepalive_requests 10000000. Small bodies: `wrk -t1"
        f" -c{args.connections} -d{args.duration:g}s`, wrk pinned to CPU 0 and the server to"
        f" CPU 1. 1 MiB bodies: `wrk -t2 -c{args.connections} -d{args.big_duration:g}s`,"
        " nothing pinned. Errors of any kind (socket errors, non-2xx) are counted below.",
        "",
    ]
    errors = {
        kind: {n: sum(sum(w.errors.values()) + w.non_2xx for w, _ in v) for n, v in per.items()}
        for kind, per in results.items()
    }

    ratio = 0.0
    for kind, title in (
        ("small", "256-byte responses"),
        ("varied", "256-byte responses, every request different"),
    ):
        data = results[kind]
        med = {n: median([w.rps for w, _ in data[n]]) for n in SERVERS}
        cpu = {n: median([cpu_us(w, p) for w, p in data[n]]) for n in SERVERS}
        kind_ratio = med["chansink"] / med["nginx"]
        lines += [
            f"## {title}",
            "",
            "| round | chansink req/s | nginx req/s | ratio | chansink p99 | nginx p99"
            " | chansink CPU/req | nginx CPU/req |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for i, ((a, pa), (b, pb)) in enumerate(zip(data["chansink"], data["nginx"], strict=True)):
            lines.append(
                f"| {i + 1} | {a.rps:,.0f} | {b.rps:,.0f} | {a.rps / b.rps:.3f}"
                f" | {a.p99_s * 1e6:.0f} us | {b.p99_s * 1e6:.0f} us"
                f" | {cpu_us(a, pa):.2f} us | {cpu_us(b, pb):.2f} us |"
            )
        lines += [
            f"| **median** | **{med['chansink']:,.0f}** | **{med['nginx']:,.0f}**"
            f" | **{kind_ratio:.3f}** | | | {cpu['chansink']:.2f} us | {cpu['nginx']:.2f} us |",
            "",
            f"Errors: chansink {errors[kind]['chansink']}, nginx {errors[kind]['nginx']}.",
        ]
        if kind == "small":
            ratio = kind_ratio
            ok = ratio >= TARGET_RATIO and not any(errors[kind].values())
            lines.append(
                f"Target >= {TARGET_RATIO}x nginx: **{'met' if ok else 'NOT met'}** ({ratio:.3f}x)."
            )
        else:
            ok = ok and not any(errors[kind].values())
            lines.append(
                "wrk runs a Lua function per request here, so both servers may wait on wrk;"
                " the CPU time per request is the servers' own cost. No target."
            )
        lines.append("")
    for kind, title in (("download", "1 MiB downloads"), ("upload", "1 MiB uploads")):
        data = results[kind]
        lines += [
            f"## {title}",
            "",
            "| round | chansink GiB/s | chansink CPU | nginx GiB/s | nginx CPU"
            " | chansink RSS start | RSS peak |",
            "|---|---|---|---|---|---|---|",
        ]
        for i, ((a, pa), (b, pb)) in enumerate(zip(data["chansink"], data["nginx"], strict=True)):
            lines.append(
                f"| {i + 1} | {gibps(a):.2f} | {pa['cpu_cores']:.2f} | {gibps(b):.2f}"
                f" | {pb['cpu_cores']:.2f} | {fmt_bytes(pa['rss_start'])}"
                f" | {fmt_bytes(pa['rss_peak'])} |"
            )
        rate = {n: median([gibps(w) for w, _ in data[n]]) for n in SERVERS}
        cpu = {n: median([p["cpu_cores"] for _, p in data[n]]) for n in SERVERS}
        growth = max(p["rss_peak"] - p["rss_start"] for _, p in data["chansink"])
        met = rate["chansink"] >= TARGET_GIBPS and growth <= FLAT_RSS
        met = met and not errors[kind]["chansink"]
        ok = ok and met
        lines += [
            f"| **median** | **{rate['chansink']:.2f}** | {cpu['chansink']:.2f}"
            f" | **{rate['nginx']:.2f}** | {cpu['nginx']:.2f} | | |",
            "",
            f"Server CPU is in cores (CPU seconds per second). chansink moves"
            f" {rate['chansink'] / max(cpu['chansink'], 1e-9):.1f} GiB per CPU second,"
            f" nginx {rate['nginx'] / max(cpu['nginx'], 1e-9):.1f}."
            f" chansink's largest RSS growth in a run: {fmt_bytes(growth)}."
            f" Errors: chansink {errors[kind]['chansink']}, nginx {errors[kind]['nginx']}.",
            f"Target >= {TARGET_GIBPS} GiB/s with RSS growth <= {fmt_bytes(FLAT_RSS)}:"
            f" **{'met' if met else 'NOT met'}**.",
            "",
        ]
    med_idle = {k: median([w.rps for w in v]) for k, v in idle.items()}
    idle_ratio = med_idle["with"] / med_idle["without"]
    idle_errors = sum(sum(w.errors.values()) + w.non_2xx for v in idle.values() for w in v)
    idle_ok = idle_ratio >= TARGET_IDLE_RATIO and not idle_errors
    ok = ok and idle_ok
    lines += [
        f"## {IDLE_CONNECTIONS:,} idle connections beside the load",
        "",
        f"chansink, 256-byte responses, `wrk -t1 -c{args.connections}`, with and without"
        f" {IDLE_CONNECTIONS:,} idle keep-alive connections (opened, never used) held open"
        " during the run.",
        "",
        "| round | without: req/s | p99 | with: req/s | p99 | ratio |",
        "|---|---|---|---|---|---|",
    ]
    for i, (a, b) in enumerate(zip(idle["without"], idle["with"], strict=True)):
        lines.append(
            f"| {i + 1} | {a.rps:,.0f} | {a.p99_s * 1e6:.0f} us | {b.rps:,.0f}"
            f" | {b.p99_s * 1e6:.0f} us | {b.rps / a.rps:.3f} |"
        )
    lines += [
        f"| **median** | **{med_idle['without']:,.0f}** | | **{med_idle['with']:,.0f}** |"
        f" | **{idle_ratio:.3f}** |",
        "",
        f"Errors: {idle_errors}. Target: active clients slowed by no more than 2x (ratio >="
        f" {TARGET_IDLE_RATIO}): **{'met' if idle_ok else 'NOT met'}**.",
        "",
    ]
    lines += ["## Versions", "", versions_table(info), ""]
    return "\n".join(lines), ok


if __name__ == "__main__":
    sys.exit(main())

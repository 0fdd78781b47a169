"""`make perf-proxy`: chanproxy against nginx configured as the same channel proxy.

nginx (one worker, proxy_pass to the sink over keep-alive, proxy_buffering
and proxy_request_buffering off, the same X-Forwarded-* and X-Request-Id
headers) and chanproxy (one process) forward /channels/<id>/* to the same
chansink. The same chanload load (happy_path: POST 1 KiB, 20 VUs) goes
through each in turn, alternating, several rounds; the proxy is pinned to
CPU 1, chanload and the sink share CPU 0. Reported: req/s and p99 of each,
and the ratio of the medians. Target: chanproxy >= 0.5x nginx.

Writes bench_results/perf-proxy.md (raw numbers under bench_results/raw/).
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
import tempfile
from pathlib import Path

from bench.common import (
    NGINX_HEAD,
    cpu_sets,
    median,
    skip_unless,
    start_chansink,
    start_nginx_with,
    versions,
    versions_table,
    write_report,
)
from common import tcp

TARGET = 0.5
CHANNEL = "1b4e28ba-2fa1-11d2-883f-0016d3cca427"
NGINX_PROXY = (
    NGINX_HEAD
    + """\
  keepalive_requests 10000000;
  upstream sink {{ server 127.0.0.1:{sink}; keepalive 64; keepalive_requests 10000000; }}
  server {{
    listen 127.0.0.1:{port};
    client_max_body_size 0;
    location /channels/{channel}/ {{
      proxy_pass http://sink/;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Host $proxy_host;
      proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
      proxy_set_header X-Forwarded-Host $http_host;
      proxy_set_header X-Forwarded-Proto $scheme;
      proxy_set_header X-Request-Id $request_id;
      proxy_buffering off;
      proxy_request_buffering off;
    }}
    location / {{ default_type application/json; return 404 '{{"error":"Not Found"}}'; }}
  }}
}}
"""
)


def chanload_run(url: str, args, pin: list[str], work: Path) -> dict:
    out = work / f"run-{len(list(work.glob('run-*.json')))}.json"
    exe = Path(sys.executable).with_name("chanload")
    subprocess.run(
        [
            *pin,
            str(exe),
            "run",
            "--scenario",
            "happy_path",
            "--channel-url",
            url,
            "--concurrency",
            str(args.concurrency),
            "--duration",
            f"{args.duration:g}",
            "--quiet",
            "--json",
            str(out),
        ],
        check=True,
        capture_output=True,
        timeout=args.duration + 120,
    )
    return json.loads(out.read_text())


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--duration", type=float, default=10)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--concurrency", type=int, default=20)
    args = ap.parse_args(argv)
    skip_unless("nginx")
    gen, srv = cpu_sets()
    work = Path(tempfile.mkdtemp(prefix="perf-proxy-"))
    sink = start_chansink([], gen, work / "chansink.log")
    proxy = start_chansink(
        ["--channels", str(channels(work, sink.port))],
        srv,
        work / "chanproxy.log",
        program="chanproxy",
    )
    nginx = start_nginx_with(
        lambda d, port: NGINX_PROXY.format(
            dir=d, port=port, sink=sink.port, channel=CHANNEL, workers=1
        ),
        srv,
    )
    urls = {
        "chanproxy": f"http://127.0.0.1:{proxy.port}/channels/{CHANNEL}/test",
        "nginx": f"http://127.0.0.1:{nginx.port}/channels/{CHANNEL}/test",
    }
    results: dict[str, list[dict]] = {name: [] for name in urls}
    try:
        for url in urls.values():  # warm up
            chanload_run(
                url, argparse.Namespace(duration=2, concurrency=args.concurrency), gen, work
            )
        for r in range(args.rounds):
            order = list(urls) if r % 2 == 0 else list(reversed(urls))
            for name in order:
                res = chanload_run(urls[name], args, gen, work)
                results[name].append(
                    {
                        k: res[k]
                        for k in ("rps", "p50_us", "p99_us", "error_count", "total_requests")
                    }
                )
                print(
                    f"round {r + 1} {name:9s} {res['rps']:10,.0f} req/s"
                    f" p99 {res['p99_us']} us errors {res['error_count']}",
                    flush=True,
                )
    finally:
        for server in (nginx, proxy, sink):
            server.stop()
    info = versions()
    raw = {"command": command_line(), "args": vars(args), "versions": info, "results": results}
    report, ok = render(args, info, results)
    path = write_report("perf-proxy", report, raw)
    print(report)
    print(f"written: {path}")
    return 0 if ok else 1


def channels(work: Path, sink_port: int) -> Path:
    path = work / "channels.json"
    path.write_text(
        json.dumps(
            [{"id": CHANNEL, "name": "load-test", "sink_url": f"http://127.0.0.1:{sink_port}"}]
        )
    )
    return path


def command_line() -> str:
    return "python -m bench.perf_proxy " + shlex.join(sys.argv[1:])


def render(args, info, results) -> tuple[str, bool]:
    med = {n: median([x["rps"] for x in v]) for n, v in results.items()}
    p99 = {n: median([x["p99_us"] for x in v]) for n, v in results.items()}
    errors = {n: sum(x["error_count"] for x in v) for n, v in results.items()}
    ratio = med["chanproxy"] / med["nginx"]
    ok = ratio >= TARGET and not any(errors.values())
    lines = [
        "# perf-proxy: chanproxy vs nginx as the same channel proxy",
        "",
        f"Command: `make perf-proxy` (`{command_line().strip()}`), {info['date']}.",
        "",
        f"chanload happy_path (POST 1 KiB), {args.concurrency} VUs, {args.duration:g} s per run,"
        f" {args.rounds} rounds, order alternating. The proxy on CPU 1; chanload and chansink"
        " on CPU 0. nginx: one worker, proxy_pass over keep-alive, proxy_buffering and"
        " proxy_request_buffering off. chanproxy: one process, streaming.",
        "",
        f"TCP congestion control of chanload, chansink and chanproxy: {tcp.describe(tcp.AUTO)},"
        " their default (chansink and chanproxy set it on their listening sockets). nginx has"
        f" no such setting and keeps the system's default, {tcp.system_default()}, on its"
        " sockets.",
        "",
        "| round | chanproxy req/s | chanproxy p99 | nginx req/s | nginx p99 | ratio |",
        "|---|---|---|---|---|---|",
    ]
    for i, (a, b) in enumerate(zip(results["chanproxy"], results["nginx"], strict=True)):
        lines.append(
            f"| {i + 1} | {a['rps']:,.0f} | {a['p99_us'] / 1000:.2f} ms | {b['rps']:,.0f}"
            f" | {b['p99_us'] / 1000:.2f} ms | {a['rps'] / b['rps']:.3f} |"
        )
    lines += [
        f"| **median** | **{med['chanproxy']:,.0f}** | {p99['chanproxy'] / 1000:.2f} ms"
        f" | **{med['nginx']:,.0f}** | {p99['nginx'] / 1000:.2f} ms | **{ratio:.3f}** |",
        "",
        f"Errors: chanproxy {errors['chanproxy']}, nginx {errors['nginx']}.",
        f"Target >= {TARGET}x nginx: **{'met' if ok else 'NOT met'}** ({ratio:.3f}x).",
        "",
        "## Versions",
        "",
        versions_table(info),
        "",
    ]
    return "\n".join(lines), ok


if __name__ == "__main__":
    sys.exit(main())

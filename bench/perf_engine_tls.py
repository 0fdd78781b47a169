"""perf-engine's TLS section: chanload vs wrk over https against the same nginx.

1. Keep-alive: nginx (one worker, pinned to CPU 1) serving 256 B over TLS
   with a certificate from a CA made for the run; chanload direct_sink (POST
   1 KiB, 20 VUs, verifying against that CA) vs `wrk -t1 -c20` with the same
   POST, alternating, several rounds, the generator pinned to CPU 0. Target:
   chanload >= 0.8x wrk (ratio of the medians).
2. Keep-alive off: both send `Connection: close`, so every request is a new
   connection and a full handshake: req/s is the handshake rate. Reported
   (no target), with chanload's median handshake and connect times.

Part of `make perf-engine` (bench/perf_engine.py runs it and puts it in its
report); `python -m bench.perf_engine_tls` runs it alone and prints it.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from bench.common import (
    POST_1K,
    cpu_sets,
    direct_sink_args,
    median,
    run_wrk,
    skip_unless,
    start_nginx_tls,
)
from common.bodies import json_body
from common.tls import throwaway_ca

TARGET_TLS = 0.8


def tls_section(args, gen: list[str], srv: list[str], work: Path, chanload_run) -> dict:
    """Both comparisons; ``chanload_run(args, pin, workdir)`` is perf_engine's ChanloadRun."""
    tls_dir = work / "tls"
    tls_dir.mkdir(mode=0o755)
    work.chmod(0o755)  # nginx's worker (not root) reads the certificate
    files = throwaway_ca(tls_dir)
    files["key"].chmod(0o644)
    script = work / "post-tls.lua"
    script.write_text(POST_1K)
    nginx = start_nginx_tls(json_body(256), srv, files["cert"], files["key"])
    url = f"https://localhost:{nginx.port}"
    out: dict = {
        "keep_alive": {"chanload": [], "wrk": []},
        "close": {"chanload": [], "wrk": []},
        "close_insecure": {"chanload": []},
    }
    out["handshake_p50_us"] = []
    out["connect_p50_us"] = []
    out["tls"] = None
    try:
        close = ("Connection: close",)
        for mode, headers in (("keep_alive", ()), ("close", close), ("close_insecure", close)):
            for r in range(args.rounds):
                order = ("chanload", "wrk") if r % 2 == 0 else ("wrk", "chanload")
                if mode == "close_insecure":
                    order = ("chanload",)  # wrk verifies nothing in either row
                for tool in order:
                    if tool == "wrk":
                        rps = run_wrk(
                            f"{url}/test", args.duration, 20, gen, script=script, headers=headers
                        ).rps
                    else:
                        extra = [arg for h in headers for arg in ("-H", h)]
                        trust = ["--insecure"] if mode == "close_insecure" else []
                        trust = trust or ["--ca-file", str(files["ca"])]
                        res = chanload_run(
                            direct_sink_args(url, args.duration, *trust, *extra),
                            gen,
                            work,
                        ).run(args.duration + 60)
                        if res["transport_errors"]:
                            raise RuntimeError(f"chanload over TLS had errors: {res['errors']}")
                        rps = res["total_requests"] / res["duration_s"]
                        conns = res["connections"]
                        out["tls"] = out["tls"] or conns["tls"]
                        if mode == "close":  # verifying, as a user would
                            out["handshake_p50_us"].append(conns["tls_handshake"]["p50_us"])
                            out["connect_p50_us"].append(conns["connect"]["p50_us"])
                    out[mode][tool].append(rps)
                    print(f"round {r + 1} tls {mode:10s} {tool:8s} {rps:12,.0f} req/s", flush=True)
    finally:
        nginx.stop()
    return out


def render_tls(args, tls: dict) -> tuple[list[str], bool]:
    """The report's TLS section; ok when the keep-alive ratio meets TARGET_TLS."""
    negotiated = tls.get("tls") or {}
    lines = [
        "## HTTPS: chanload vs wrk over TLS against nginx (256 B, 20 connections)",
        "",
        f"nginx, one worker, TLS 1.2/1.3 with a certificate from a CA made for the run;"
        f" chanload verifies it (--ca-file). Negotiated: {negotiated.get('version')},"
        f" {negotiated.get('cipher')}, ALPN {negotiated.get('alpn')}. POST of 1 KiB, as above;"
        " generator pinned to CPU 0, nginx to CPU 1, order alternating.",
        "",
        "| mode | chanload per round | wrk per round | chanload median | wrk median | ratio |",
        "|---|---|---|---|---|---|",
    ]
    ok = True
    for mode, label in (
        ("keep_alive", "keep-alive"),
        ("close", "Connection: close"),
        ("close_insecure", "Connection: close, chanload --insecure"),
    ):
        if mode == "close_insecure":
            c = median(tls[mode]["chanload"])
            w = median(tls["close"]["wrk"])
            lines.append(
                f"| {label} | {', '.join(f'{x:,.0f}' for x in tls[mode]['chanload'])}"
                f" | (the row above) | {c:,.0f} | {w:,.0f} | **{c / w if w else 0:.3f}** |"
            )
            continue
        c, w = median(tls[mode]["chanload"]), median(tls[mode]["wrk"])
        ratio = c / w if w else 0.0
        if mode == "keep_alive":
            ok = ratio >= TARGET_TLS
            keep_alive_ratio = ratio
        lines.append(
            f"| {label} | {', '.join(f'{x:,.0f}' for x in tls[mode]['chanload'])}"
            f" | {', '.join(f'{x:,.0f}' for x in tls[mode]['wrk'])}"
            f" | {c:,.0f} | {w:,.0f} | **{ratio:.3f}** |"
        )
    lines += [
        "",
        f"Target keep-alive >= {TARGET_TLS}x wrk: **{'met' if ok else 'NOT met'}**"
        f" ({keep_alive_ratio:.3f}).",
        "",
        "Connection: close makes every request a new TCP connection and a TLS"
        " handshake, so its req/s is the handshake rate (reported, no target). The two"
        " tools do not do the same work there: wrk verifies no certificate and resumes"
        " its TLS session on every reconnect (its src/ssl.c: SSL_VERIFY_NONE, a client"
        " session cache, SSL_clear on close), while chanload makes a full handshake each"
        " time (asyncio's TLS transport cannot offer a saved session) and verifies the"
        " certificate unless --insecure. chanload's median handshake time per round"
        " (verifying):"
        f" {', '.join(f'{x / 1000:.2f} ms' for x in tls['handshake_p50_us'])};"
        f" TCP connect: {', '.join(f'{x / 1000:.2f} ms' for x in tls['connect_p50_us'])}.",
        "",
    ]
    return lines, ok


def main(argv: list[str] | None = None) -> int:
    from bench.perf_engine import ChanloadRun

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--duration", type=float, default=10)
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args(argv)
    skip_unless("wrk", "nginx")
    gen, srv = cpu_sets()
    work = Path(tempfile.mkdtemp(prefix="perf-engine-tls-"))
    lines, ok = render_tls(args, tls_section(args, gen, srv, work, ChanloadRun))
    print("\n".join(lines))
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())

"""Run a chansink server: bind, announce, report once a second, shut down gracefully."""

from __future__ import annotations

import asyncio
import sys
import time
from typing import TextIO

from common import tcp, tls
from common.lifecycle import serve_until_stopped
from common.listening import listen
from sink.config import Mode, SinkConfig
from sink.context import SinkContext
from sink.protocol import SinkProtocol

BANNER_RULE = "=" * 51


def _rate(nbytes: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if nbytes < 1000 or unit == "GB":
            return f"{nbytes:.1f} {unit}/s" if unit != "B" else f"{nbytes:.0f} B/s"
        nbytes /= 1000
    raise AssertionError("unreachable")


def banner(config: SinkConfig, host: str, port: int) -> str:
    url_host = f"[{host}]" if ":" in host else host
    return "\n".join(
        [
            BANNER_RULE,
            f"  chansink listening on {config.scheme}://{url_host}:{port}",
            f"  Mode:      {config.mode.value}",
            f"  Status:    {config.status}",
            f"  Body size: {config.body_size} bytes" + (" (chunked)" if config.chunked else ""),
            f"  TCP:       {tcp.describe(config.congestion)}",
            BANNER_RULE,
        ]
    )


def final_summary(ctx: SinkContext) -> str:
    fields = " ".join(f"{k}={v}" for k, v in ctx.stats.as_dict().items() if k != "open")
    return f"chansink stopped: {fields}"


class _Ticker:
    """Once a second: refresh the Date, flush the access log, print a summary."""

    def __init__(self, ctx: SinkContext, out: TextIO, interval: float) -> None:
        self.ctx = ctx
        self.out = out
        self.interval = interval
        self.last = (0, 0, 0, 0)
        self.last_t = time.monotonic()

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            self.once()

    def once(self) -> None:
        ctx = self.ctx
        ctx.tick()
        config = ctx.config
        # timeout mode holds connections on purpose: no idle timeout there
        idle = None if config.mode is Mode.timeout else config.idle_timeout
        for conn in list(ctx.connections):
            conn.sweep(ctx.clock, config.header_timeout, config.body_timeout, idle)
        s = ctx.stats
        now = time.monotonic()
        snapshot = (s.requests, s.bytes_in, s.bytes_out, s.open)
        if snapshot != self.last and ctx.access_log is None:
            dt = max(now - self.last_t, 1e-9)
            reqs = (s.requests - self.last[0]) / dt
            rate_in = _rate((s.bytes_in - self.last[1]) / dt)
            rate_out = _rate((s.bytes_out - self.last[2]) / dt)
            stamp = time.strftime("%H:%M:%S")
            self.out.write(
                f"[chansink {stamp}] {reqs:.0f} req/s, in {rate_in},"
                f" out {rate_out}, {s.open} open,"
                f" {s.requests} requests\n"
            )
        self.last = snapshot
        self.last_t = now
        self.out.flush()


async def serve(config: SinkConfig, out: TextIO | None = None) -> int:
    """Serve until SIGINT/SIGTERM; return the exit code."""
    out = out or sys.stdout
    loop = asyncio.get_running_loop()
    ctx = SinkContext(config, access_log=out if config.access_log else None)
    server, host, port, ctx.accept_congestion = await listen(
        "chansink",
        lambda: SinkProtocol(ctx, loop),
        config.host,
        config.port,
        config.congestion,
        tls.server_context(config.tls_cert, config.tls_key) if config.tls_cert else None,
    )
    out.write(banner(config, host, port) + "\n")
    out.flush()

    ticker = _Ticker(ctx, out, config.stats_interval)
    try:
        await serve_until_stopped(
            server, ctx.connections, config.grace, [asyncio.create_task(ticker.run())]
        )
    finally:
        ctx.close()
        ticker.once()
        out.write(final_summary(ctx) + "\n")
        out.flush()
    return 0

"""Run chanproxy: bind, announce, report once a second, shut down gracefully."""

from __future__ import annotations

import asyncio
import signal
import sys
import time
from typing import TextIO

from engine import tcp
from proxy.config import ProxyConfig
from proxy.protocol import ProxyProtocol, Shared
from proxy.registry import Registry
from sink.listening import listen


async def serve(config: ProxyConfig, registry: Registry, out: TextIO | None = None) -> int:
    out = out or sys.stdout
    loop = asyncio.get_running_loop()
    shared = Shared(config, registry, loop)
    server, host, port, shared.accept_congestion = await listen(
        "chanproxy", lambda: ProxyProtocol(shared), config.host, config.port, config.congestion
    )
    mode = "buffering whole bodies (--buffer)" if config.buffer else "streaming"
    out.write(
        f"chanproxy listening on http://{host}:{port} ({len(registry)} channels, {mode});"
        f" TCP: {tcp.describe(config.congestion)}\n"
    )
    out.flush()

    stop = asyncio.Event()
    signals = 0

    def on_signal() -> None:
        nonlocal signals
        signals += 1
        stop.set()
        if signals > 1:
            for conn in list(shared.connections):
                conn.abort()

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, on_signal)

    async def report() -> None:
        last = (0, 0.0)
        while True:
            await asyncio.sleep(config.stats_interval)
            s = shared.stats
            now = time.monotonic()
            if s.requests != last[0]:
                rate = (s.requests - last[0]) / max(now - last[1], 1e-9) if last[1] else 0
                out.write(
                    f"[chanproxy {time.strftime('%H:%M:%S')}] {rate:.0f} req/s, {s.open} open,"
                    f" {s.requests} requests, {s.errors_502} x 502, {s.errors_504} x 504\n"
                )
                out.flush()
            last = (s.requests, now)

    reporter = asyncio.create_task(report())
    sweeper = asyncio.create_task(shared.sweep())
    try:
        await stop.wait()
    finally:
        reporter.cancel()
        sweeper.cancel()
        server.close()
        for conn in list(shared.connections):
            conn.shutdown()
        deadline = loop.time() + config.grace
        while shared.connections and loop.time() < deadline and signals < 2:
            await asyncio.sleep(0.02)
        for conn in list(shared.connections):
            conn.abort()
        shared.pool.close()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
        s = shared.stats
        out.write(
            f"chanproxy stopped: requests={s.requests} proxied={s.proxied}"
            f" errors_502={s.errors_502} errors_504={s.errors_504}"
            f" bad_requests={s.bad_requests} upstream_connections={shared.pool.opened}\n"
        )
        out.flush()
    return 0

"""Run chanproxy: bind, announce, report once a second, shut down gracefully."""

from __future__ import annotations

import asyncio
import sys
import time
from typing import TextIO

from common import tcp, tls
from common.lifecycle import serve_until_stopped
from common.listening import listen
from proxy.config import ProxyConfig
from proxy.protocol import ProxyProtocol
from proxy.registry import Registry
from proxy.shared import Shared


async def serve(config: ProxyConfig, registry: Registry, out: TextIO | None = None) -> int:
    out = out or sys.stdout
    loop = asyncio.get_running_loop()
    shared = Shared(config, registry, loop)
    server, host, port, shared.accept_congestion = await listen(
        "chanproxy",
        lambda: ProxyProtocol(shared),
        config.host,
        config.port,
        config.congestion,
        tls.server_context(config.tls_cert, config.tls_key) if config.tls_cert else None,
    )
    mode = "buffering whole bodies (--buffer)" if config.buffer else "streaming"
    out.write(
        f"chanproxy listening on {config.scheme}://{host}:{port} ({len(registry)} channels,"
        f" {mode});"
        f" TCP: {tcp.describe(config.congestion)}\n"
    )
    if config.admin_token_given:
        out.write("chanproxy admin endpoint: /_admin/channels, X-Admin-Token from --admin-token\n")
    else:
        out.write(
            f"chanproxy admin endpoint: /_admin/channels, X-Admin-Token: {config.admin_token}\n"
        )
    out.flush()

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

    background = [asyncio.create_task(report()), asyncio.create_task(shared.sweep())]
    try:
        await serve_until_stopped(server, shared.connections, config.grace, background)
    finally:
        shared.pool.close()
        s = shared.stats
        out.write(
            f"chanproxy stopped: requests={s.requests} proxied={s.proxied}"
            f" errors_502={s.errors_502} errors_504={s.errors_504}"
            f" bad_requests={s.bad_requests} timed_out={s.timed_out}"
            f" upstream_connections={shared.pool.opened}\n"
        )
        out.flush()
    return 0

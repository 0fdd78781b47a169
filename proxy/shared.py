"""What every connection of one chanproxy server shares: configuration, the
channels, the upstream pool, the counters, and the timeout sweep."""

from __future__ import annotations

import asyncio
import time

from proxy.config import ProxyConfig
from proxy.modes import BUFFERING, STREAMING
from proxy.registry import Registry
from proxy.upstream import Pool, upstream_context


class Stats:
    __slots__ = (
        "bad_requests",
        "errors_502",
        "errors_504",
        "open",
        "proxied",
        "requests",
        "timed_out",
    )

    def __init__(self) -> None:
        self.requests = 0
        self.proxied = 0
        self.errors_502 = 0
        self.errors_504 = 0
        self.bad_requests = 0
        self.open = 0
        self.timed_out = 0  # client connections closed by --header-, --body- or --idle-timeout


class Shared:
    """What every connection of one server shares."""

    def __init__(self, config: ProxyConfig, registry: Registry, loop) -> None:
        self.config = config
        self.registry = registry
        self.loop = loop
        self.mode = BUFFERING if config.buffer else STREAMING  # how bodies cross
        self.pool = Pool(
            loop,
            config.max_idle_per_sink,
            config.connect_timeout,
            config.congestion,
            upstream_context(config.upstream_ca_file) if config.upstream_ca_file else None,
        )
        self.scheme = config.scheme.encode()  # what clients speak to us: x-forwarded-proto
        # What --congestion still asks of each accepted connection once the
        # listening sockets have it (common/listening.py): "system", nothing, mostly.
        self.accept_congestion = config.congestion
        self.stats = Stats()
        self.connections: set = set()  # the client connections (ProxyProtocol)
        # Exchanges waiting for the sink's response head, checked by sweep().
        self.waiting: set = set()

    async def sweep(self) -> None:
        """504 for every exchange whose sink is late: one pass per tick, no timer each;
        once a second, the client connections' header, body and idle timeouts."""
        interval = min(0.1, self.config.upstream_timeout / 10)
        next_client_sweep = time.monotonic() + 1.0
        while True:
            await asyncio.sleep(interval)
            now = time.monotonic()
            for exchange in [e for e in self.waiting if e.deadline <= now]:
                exchange.timed_out()
            if now >= next_client_sweep:
                next_client_sweep = now + 1.0
                clock = time.perf_counter()
                for conn in list(self.connections):
                    conn.sweep(clock)

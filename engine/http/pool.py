"""The pool: the VUs and their connections, what executors start and stop.

Four jobs, one piece each:

- ``Pool``: the VUs' lifecycle (start, hold, go, stop, abandon, close) and
  knowing when no request is in flight any more (the closed model);
- ``OpenPool``: the open model on top: the free connections and the backlog
  of requests that found none (``try_send``/``release``);
- ``Connector``: opening one VU's connection, a bounded number of connects at
  once, with back-off after failures;
- ``sweep_timeouts``: failing requests in flight past the timeout.

The connections themselves are engine/http/client.py's.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import socket
import ssl
from collections.abc import Callable
from typing import Any

from common import tcp
from engine.config import HttpUrl
from engine.http import tls as tls_mod
from engine.http.client import (
    CONNECTIONS,
    OPEN_CONNECTIONS,
    VU,
    ClientConnection,
    RequestSpec,
    perf_ns,
)
from engine.measure.metrics import Recorder

# Connects in progress at once: thousands of VUs starting together would
# overflow the target's accept backlog (SYNs dropped, retried a second later):
# they are staggered through this many slots instead.
CONNECT_SLOTS = 1024
# Reconnect back-off after consecutive connect failures (seconds).
BACKOFF_FIRST = 0.05
BACKOFF_MAX = 1.0


class Connector:
    """Opens VUs' connections: at most CONNECT_SLOTS connects in progress at
    once, a timeout on each, back-off after consecutive failures (counted on
    the VU), each failure recorded as a ``connect`` error (or, for https, the
    kind of its TLS failure: engine/http/tls.py).

    The host is resolved once (as wrk does; a failed lookup is tried again).
    The TCP connect (after the lookup) and the TLS handshake are timed apart,
    into the recorder's ``connect_times`` and ``handshake_times`` (k6's
    http_req_connecting and http_req_tls_handshaking); the timeout covers
    the lookup, the connect and the handshake.
    """

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        url: HttpUrl,
        timeout: float,
        recorder: Recorder,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        self.loop = loop
        self.url = url
        self.timeout = timeout
        self.recorder = recorder
        self.tls = tls
        self._slots = asyncio.Semaphore(CONNECT_SLOTS)
        self._addresses: asyncio.Future | None = None  # getaddrinfo's, shared

    async def open(
        self,
        vu: VU,
        factory: Callable[[], ClientConnection],
        wanted: Callable[[], bool],
    ) -> ClientConnection | None:
        """The VU's new connection; None once ``wanted()`` says it is no longer."""
        while wanted():
            if vu.failures:
                await asyncio.sleep(min(BACKOFF_FIRST * 2 ** (vu.failures - 1), BACKOFF_MAX))
                if not wanted():
                    return None
            async with self._slots:
                if not wanted():
                    return None
                conn = await self._open_one(factory)
            if conn is None:
                vu.failures += 1
                continue
            vu.failures = 0
            return conn
        return None

    async def _open_one(self, factory: Callable[[], ClientConnection]) -> ClientConnection | None:
        """One connection (TCP, then TLS for https); None, with the error recorded, if not."""
        sock = None
        handshaking = False
        try:
            # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow a
            # cancellation that races with completion (bpo-42130).
            async with asyncio.timeout(self.timeout):
                addresses = await self._resolve()
                started = perf_ns()
                sock = await self._tcp_connect(addresses)
                connected = perf_ns()
                self.recorder.connect_times.append((connected - started) // 1000)
                if self.tls is None:
                    _, conn = await self.loop.create_connection(factory, sock=sock)
                    return conn
                handshaking = True
                transport, conn = await self.loop.create_connection(
                    factory,
                    sock=sock,
                    ssl=self.tls,
                    server_hostname=self.url.host,
                    ssl_handshake_timeout=None,  # our timeout covers it
                )
                rec = self.recorder
                rec.handshake_times.append((perf_ns() - connected) // 1000)
                if rec.tls_info is None:
                    ssl_object = transport.get_extra_info("ssl_object")
                    if ssl_object is not None:
                        rec.tls_info = tls_mod.describe(ssl_object)
                return conn
        except (OSError, TimeoutError) as exc:
            if sock is not None and not handshaking:
                sock.close()
            if handshaking:
                kind, detail = tls_mod.classify(exc, self.url.authority)
            else:
                kind = "connect"
                detail = "timed out" if isinstance(exc, TimeoutError) else str(exc)
                detail = f"{self.url.authority}: {detail}"
            self.recorder.error(kind, detail)
            return None

    async def _resolve(self) -> list[tuple]:
        """The URL host's addresses, looked up once for every VU (as wrk does)."""
        if self._addresses is None:
            self._addresses = asyncio.ensure_future(
                self.loop.getaddrinfo(self.url.host, self.url.port, type=socket.SOCK_STREAM)
            )
        try:
            infos = await asyncio.shield(self._addresses)
        except OSError:
            self._addresses = None  # looked up again at the next connect
            raise
        return [(family, addr) for family, _, _, _, addr in infos]

    async def _tcp_connect(self, addresses: list[tuple]) -> socket.socket:
        """A connected non-blocking socket to one of ``addresses``, tried in turn."""
        error: OSError | None = None
        for family, addr in addresses:
            sock = socket.socket(family, socket.SOCK_STREAM)
            sock.setblocking(False)
            try:
                await self.loop.sock_connect(sock, addr)
                return sock
            except BaseException as exc:
                sock.close()
                if not isinstance(exc, OSError):
                    raise
                error = exc
        raise error or OSError(f"{self.url.host} has no address")


async def sweep_timeouts(pool: Pool) -> None:
    """Fail requests in flight longer than the pool's timeout (one pass per tick)."""
    interval = min(0.1, pool.timeout / 10)
    while True:
        await asyncio.sleep(interval)
        limit = perf_ns() - pool.timeout_ns
        for vu in pool.vus:
            conn = vu.conn
            if conn is not None and conn.in_flight and conn.sent_at < limit:
                conn.timed_out()


class Pool:
    """The VUs and their connections (closed model): what executors start and stop."""

    connection_classes = CONNECTIONS

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        url: HttpUrl,
        specs: tuple[RequestSpec, ...],
        recorder: Recorder,
        parser: str = "httptools",
        timeout: float = 30.0,
        server_timing: bool = False,
        congestion: str = tcp.AUTO,
        memo: bool = True,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        self.loop = loop
        self.server_timing = server_timing
        self.memo = memo
        self.congestion = congestion
        self.url = url
        self.specs = specs
        self.recorder = recorder
        self.connection_class = self.connection_classes[parser]
        self.timeout = timeout
        self.timeout_ns = int(timeout * 1e9)
        self.deadline_ns = 0
        self.vus: list[VU] = []
        self.in_flight = 0
        self.connector = Connector(loop, url, timeout, recorder, tls)
        self._idle = asyncio.Event()
        self._connects: set[asyncio.Task] = set()
        self._sweeper: asyncio.Task | None = None

    # -- what executors call -------------------------------------------------

    @property
    def running_vus(self) -> int:
        return sum(1 for vu in self.vus if vu.running)

    def set_deadline(self, seconds_from_now: float) -> None:
        """No request starts after this; in-flight ones may finish (up to the timeout)."""
        self.deadline_ns = perf_ns() + int(seconds_from_now * 1e9)
        if self._sweeper is None:
            self._sweeper = self.loop.create_task(sweep_timeouts(self))

    def start_vu(self, held: bool = False) -> VU:
        """Add a VU and start its loop (``held``: only connect, until go())."""
        vu = VU(len(self.vus))
        self.vus.append(vu)
        vu.running = True
        vu.held = held
        self._idle.clear()
        self._ensure_connection(vu)
        return vu

    async def connected(self, timeout: float) -> None:
        """Until every VU has a connection or has failed to get one at least once."""
        deadline = self.loop.time() + timeout
        while self.loop.time() < deadline and not all(
            vu.conn is not None or vu.failures or not vu.running for vu in self.vus
        ):
            await asyncio.sleep(0.002)

    def go(self) -> None:
        """Held VUs start sending: together, once the connect storm is over."""
        for vu in self.vus:
            vu.held = False
            conn = vu.conn
            if vu.running and conn is not None and not conn.closed and not conn.in_flight:
                self._ensure_connection(vu)

    def stop_vu(self, vu: VU) -> None:
        """The VU finishes the request in flight, then stops."""
        vu.running = False

    async def wait_idle(self) -> None:
        """Until no request is in flight and no VU will start another."""
        while True:
            self._idle.clear()
            if self._quiet():
                return
            # The deadline itself can be what makes the pool quiet (an open
            # model's idle connections): wake up for it too.
            remaining = (self.deadline_ns - perf_ns()) / 1e9
            if remaining > 0:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(remaining + 0.001):
                        await self._idle.wait()
            else:
                await self._idle.wait()

    def abandon(self) -> int:
        """Interrupted: give up the requests still in flight; counted apart, not as errors."""
        count = 0
        for vu in self.vus:
            vu.running = False
            conn = vu.conn
            if conn is not None and conn.in_flight and not conn.closed:
                conn.in_flight = False
                self.in_flight -= 1
                count += 1
                conn.transport.close()
        self.recorder.abandoned += count
        return count

    async def close(self) -> None:
        self.recorder.unconnected_vus += sum(1 for vu in self.vus if not vu.connected)
        for task in list(self._connects):
            task.cancel()
        if self._sweeper is not None:
            self._sweeper.cancel()
        for vu in self.vus:
            vu.running = False
            conn = vu.conn
            if conn is not None and not conn.closed:
                conn.transport.close()

    # -- connections ---------------------------------------------------------

    def _quiet(self) -> bool:
        if self.in_flight or self._connects:
            return False
        now = perf_ns()
        if now >= self.deadline_ns:
            return True
        return not any(vu.running for vu in self.vus)

    def vu_idle(self, vu: VU) -> None:
        if self._quiet():
            self._idle.set()

    def _ensure_connection(self, vu: VU) -> None:
        conn = vu.conn
        if conn is not None and not conn.closed:
            if not conn.in_flight and perf_ns() < self.deadline_ns:
                self.resume(conn)
            return
        if not vu.connecting:
            vu.connecting = True
            task = self.loop.create_task(self._connect(vu))
            self._connects.add(task)
            task.add_done_callback(self._connect_done)

    def _connect_done(self, task: asyncio.Task) -> None:
        self._connects.discard(task)
        if self._quiet():
            self._idle.set()

    async def _connect(self, vu: VU) -> None:
        def wanted() -> bool:
            return vu.running and perf_ns() < self.deadline_ns

        try:
            conn = await self.connector.open(vu, lambda: self.connection_class(vu, self), wanted)
        finally:
            vu.connecting = False
        if conn is None:
            return
        vu.conn = conn
        vu.connected = True
        if wanted() and not vu.held:
            self.resume(conn)

    def resume(self, conn: ClientConnection) -> None:
        """An idle connection goes on: the closed model sends its VU's next request."""
        conn.send()

    def connection_lost(self, conn: ClientConnection) -> None:
        vu = conn.vu
        if vu.conn is conn:
            vu.conn = None
        if vu.running and perf_ns() < self.deadline_ns:
            self._ensure_connection(vu)
        elif self._quiet():
            self._idle.set()


class OpenPool(Pool):
    """The open model: the scheduler sends on free connections (``try_send``).

    Idle connections wait in ``free``; requests that found none wait in
    ``backlog`` (counted late) for the next connection ``release``d.
    """

    connection_classes = OPEN_CONNECTIONS

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.free: collections.deque[ClientConnection] = collections.deque()
        self.backlog: collections.deque[int] = collections.deque()

    def try_send(self, intended_ns: int) -> bool:
        """Open model: send the request due at ``intended_ns`` now if a connection is free.

        When none is, the request waits for the next free one and is counted
        as late (its corrected latency includes the wait); one that has waited
        longer than the timeout is dropped and counted. Returns False when late.
        """
        free = self.free
        while free:
            conn = free.popleft()
            if conn.closed or conn.in_flight:
                continue
            self._send_open(conn, intended_ns)
            return True
        self.recorder.late += 1
        self.backlog.append(intended_ns)
        return False

    def _send_open(self, conn: ClientConnection, intended_ns: int) -> None:
        conn.intended = intended_ns
        conn.send()
        self.recorder.send_lags.append((conn.sent_at - intended_ns) // 1000)

    def release(self, conn: ClientConnection) -> None:
        """Open model: a connection is free; the oldest late request goes first."""
        backlog = self.backlog
        if backlog:
            oldest_allowed = perf_ns() - self.timeout_ns
            while backlog:
                intended = backlog.popleft()
                if intended >= oldest_allowed:
                    self._send_open(conn, intended)
                    return
                self.recorder.dropped += 1  # waited longer than the timeout
        self.free.append(conn)

    async def ready(self, timeout: float) -> int:
        """Open model: wait until every VU has a connection (or gave up); how many do."""
        deadline = self.loop.time() + timeout
        while self.loop.time() < deadline:
            if all(vu.conn is not None or not vu.connecting for vu in self.vus):
                break
            await asyncio.sleep(0.005)
        return sum(1 for vu in self.vus if vu.conn is not None)

    def resume(self, conn: ClientConnection) -> None:
        self.release(conn)

    def _quiet(self) -> bool:
        if self.backlog and perf_ns() < self.deadline_ns:
            # Late requests still waiting at the end never start (close() counts
            # them as dropped): only before the deadline do they keep the run going.
            return False
        return super()._quiet()

    async def close(self) -> None:
        # Late requests still waiting when the run ends never went out: dropped.
        self.recorder.dropped += len(self.backlog)
        self.backlog.clear()
        await super().close()

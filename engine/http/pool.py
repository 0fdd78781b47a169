"""The pool: the VUs and their connections, what executors start and stop.

It opens each VU's connection (a bounded number of connects at once, with
back-off after failures), sweeps the requests in flight for timeouts, and in
the open model keeps the free connections and the backlog of requests that
found none. The connections themselves are engine/http/client.py's.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib

from common import tcp
from engine.config import HttpUrl
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


class Pool:
    """The VUs and their connections; what executors start and stop."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        url: HttpUrl,
        specs: tuple[RequestSpec, ...],
        recorder: Recorder,
        parser: str = "httptools",
        timeout: float = 30.0,
        server_timing: bool = False,
        open_model: bool = False,
        congestion: str = tcp.AUTO,
    ) -> None:
        self.loop = loop
        self.server_timing = server_timing
        self.congestion = congestion
        # Open model: idle connections wait here for the scheduler (try_send),
        # and requests that found none wait here (counted late) for a connection.
        self.open_model = open_model
        self.free: collections.deque[ClientConnection] = collections.deque()
        self.backlog: collections.deque[int] = collections.deque()
        self.url = url
        self.specs = specs
        self.recorder = recorder
        self.connection_class = (OPEN_CONNECTIONS if open_model else CONNECTIONS)[parser]
        self.timeout = timeout
        self.timeout_ns = int(timeout * 1e9)
        self.deadline_ns = 0
        self.vus: list[VU] = []
        self.in_flight = 0
        self._idle = asyncio.Event()
        self._connects: set[asyncio.Task] = set()
        self._connect_slots = asyncio.Semaphore(CONNECT_SLOTS)
        self._sweeper: asyncio.Task | None = None

    # -- what executors call -------------------------------------------------

    @property
    def running_vus(self) -> int:
        return sum(1 for vu in self.vus if vu.running)

    def set_deadline(self, seconds_from_now: float) -> None:
        """No request starts after this; in-flight ones may finish (up to the timeout)."""
        self.deadline_ns = perf_ns() + int(seconds_from_now * 1e9)
        if self._sweeper is None:
            self._sweeper = self.loop.create_task(self._sweep())

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
        # Late requests still waiting when the run ends never went out: dropped.
        self.recorder.dropped += len(self.backlog)
        self.recorder.unconnected_vus += sum(1 for vu in self.vus if not vu.connected)
        self.backlog.clear()
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
            # Late requests still waiting at the end never start (close() counts
            # them as dropped): they must not keep the run going.
            return True
        return not self.backlog and not any(vu.running for vu in self.vus)

    def vu_idle(self, vu: VU) -> None:
        if self._quiet():
            self._idle.set()

    def _ensure_connection(self, vu: VU) -> None:
        conn = vu.conn
        if conn is not None and not conn.closed:
            if not conn.in_flight and perf_ns() < self.deadline_ns:
                if self.open_model:
                    self.release(conn)
                else:
                    conn.send()
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
        try:
            while vu.running and perf_ns() < self.deadline_ns:
                if vu.failures:
                    await asyncio.sleep(min(BACKOFF_FIRST * 2 ** (vu.failures - 1), BACKOFF_MAX))
                    if not (vu.running and perf_ns() < self.deadline_ns):
                        return
                try:
                    async with self._connect_slots:
                        if not (vu.running and perf_ns() < self.deadline_ns):
                            return
                        # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow
                        # a cancellation that races with completion (bpo-42130).
                        async with asyncio.timeout(self.timeout):
                            _, conn = await self.loop.create_connection(
                                lambda: self.connection_class(vu, self),
                                self.url.host,
                                self.url.port,
                            )
                except (OSError, TimeoutError) as exc:
                    vu.failures += 1
                    detail = "timed out" if isinstance(exc, TimeoutError) else str(exc)
                    self.recorder.error("connect", f"{self.url.authority}: {detail}")
                    continue
                vu.conn = conn
                vu.connecting = False
                vu.connected = True
                vu.failures = 0
                if vu.running and perf_ns() < self.deadline_ns and not vu.held:
                    if self.open_model:
                        self.release(conn)
                    else:
                        conn.send()
                return
        finally:
            vu.connecting = False

    def connection_lost(self, conn: ClientConnection) -> None:
        vu = conn.vu
        if vu.conn is conn:
            vu.conn = None
        if vu.running and perf_ns() < self.deadline_ns:
            self._ensure_connection(vu)
        elif self._quiet():
            self._idle.set()

    async def _sweep(self) -> None:
        """Fail requests in flight longer than the timeout (one pass per tick)."""
        interval = min(0.1, self.timeout / 10)
        while True:
            await asyncio.sleep(interval)
            limit = perf_ns() - self.timeout_ns
            for vu in self.vus:
                conn = vu.conn
                if conn is not None and conn.in_flight and conn.sent_at < limit:
                    conn.timed_out()

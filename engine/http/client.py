"""The load client: one keep-alive connection per VU, driven by callbacks.

Each VU runs request after request on its own connection (closed model):
the next request is written from the callback that completes the previous
response, so the hot path is two Python calls per request and no Future,
task or timer. Timeouts are enforced by one sweep over all connections
every ``sweep`` seconds rather than by a timer per request.

The client never knows about scenarios (it gets ``RequestSpec``s) and never
decides how many VUs run or for how long (executors do, through the
``Pool`` of engine/http/pool.py, which owns the VUs and these connections).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from common import tcp, tls
from engine.config import HttpUrl
from engine.http.http1 import (
    GET_READ_BUFFER,
    H11Framer,
    HttptoolsFramer,
    RemoteProtocolError,
    build_request_head,
)
from engine.measure.metrics import Recorder
from engine.measure.timing import parse_server_timing

# Bodies up to this size go out in the same bytes object as the head.
INLINE_BODY_MAX = 64 * 1024
# Larger bodies are written as slices of the one shared body (never copied),
# under flow control. Big slices: one writev() per MiB costs the kernel half
# of four 256 KiB writes (measured with strace against wrk's single write).
BODY_SLICE = 4 * 1024 * 1024


perf_ns = time.perf_counter_ns


@dataclass(frozen=True, slots=True)
class RequestSpec:
    """One kind of request: its prebuilt head and the shared body."""

    method: str
    head: bytes
    body: memoryview | None
    whole: bytes | None  # head + body in one piece when the body is small (or absent)
    body_len: int  # bytes of body (0 without one)
    wire_len: int  # head + body


def build_specs(
    url: HttpUrl,
    methods: Sequence[str],
    body: bytes,
    with_body: frozenset[str],
    headers: Sequence[tuple[str, str]] = (),
) -> tuple[RequestSpec, ...]:
    """Request kinds for ``methods`` (with ``headers``); the body object is shared by all."""
    shared = memoryview(body)
    specs = []
    for method in methods:
        has_body = method in with_body
        head = build_request_head(
            method,
            url.authority,
            url.path,
            len(body) if has_body else None,
            extra_headers=list(headers),
        )
        if not has_body:
            specs.append(RequestSpec(method, head, None, head, 0, len(head)))
            continue
        whole = head + body if len(body) <= INLINE_BODY_MAX else None
        specs.append(RequestSpec(method, head, shared, whole, len(body), len(head) + len(body)))
    return tuple(specs)


class VU:
    """A virtual user: runs requests one after another while ``running``."""

    __slots__ = (
        "conn",
        "connected",
        "connecting",
        "failures",
        "held",
        "index",
        "next_spec",
        "running",
    )

    def __init__(self, index: int) -> None:
        self.index = index
        self.running = False
        self.conn: ClientConnection | None = None
        self.connecting = False
        self.failures = 0  # consecutive connect failures
        self.next_spec = index  # rotates through the request kinds
        self.connected = False  # ever had a connection
        self.held = False  # connect, but send nothing until Pool.go()


class PoolSide(Protocol):
    """What a connection reads and calls of its pool (engine/http/pool.py's Pool)."""

    recorder: Recorder
    specs: tuple[RequestSpec, ...]
    server_timing: bool
    memo: bool
    congestion: str
    timeout: float
    deadline_ns: int  # no request starts after this (perf_counter_ns)
    in_flight: int

    def vu_idle(self, vu: VU) -> None: ...

    def release(self, conn: ClientConnection) -> None: ...

    def connection_lost(self, conn: ClientConnection) -> None: ...


class ClientConnection:
    """The VU loop on one connection; mixed with a framer and asyncio.Protocol."""

    def __init__(self, vu: VU, pool: PoolSide) -> None:
        super().__init__()  # the framer's state
        self.vu = vu
        self.pool = pool
        self.rec = pool.recorder
        self.transport: asyncio.Transport | None = None
        self.sent_at = 0  # perf_counter_ns when the request in flight was written
        self.in_flight = False
        self.spec: RequestSpec | None = None
        self.body_pos = 0  # bytes of a large body written so far
        self.write_paused = False
        self.closed = False
        self.reusable = True
        self.failed = False  # an error was already counted for the request in flight
        self.wants_server_timing = pool.server_timing
        self.memo = pool.memo
        self.memo_tally = self.rec  # memo hits are counted in the Recorder

    # -- asyncio callbacks ---------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        tcp.tune_transport(transport, self.pool.congestion)
        tls.bound_buffers(transport)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.in_flight and not self.failed:
            try:
                completed = self.eof()
            except RemoteProtocolError as err:
                completed = False
                detail = str(err)
            else:
                detail = "the server closed the connection before answering"
            if not completed:
                self.rec.bytes_in += self.pending_bytes()
                kind = "reset" if isinstance(exc, ConnectionResetError) else "closed"
                if exc is not None:
                    detail = f"{type(exc).__name__}: {exc}"
                self._fail(kind, detail)
        self.pool.connection_lost(self)

    def pause_writing(self) -> None:
        self.write_paused = True

    def resume_writing(self) -> None:
        self.write_paused = False
        if self.in_flight and self.spec is not None and self.spec.whole is None:
            self._pump_body()

    # -- the VU loop -----------------------------------------------------------

    def send(self) -> None:
        """Write the VU's next request."""
        vu = self.vu
        specs = self.pool.specs
        spec = specs[vu.next_spec % len(specs)]
        vu.next_spec += 1
        self.spec = spec
        self.in_flight = True
        self.failed = False
        self.pool.in_flight += 1
        if self.uses_h11:
            self.expect_response(spec.head, spec.body_len)
        whole = spec.whole
        self.sent_at = perf_ns()
        if whole is not None:
            rec = self.rec
            rec.bytes_out += spec.wire_len
            rec.body_bytes_out += spec.body_len
            self.transport.write(whole)
            return
        self.body_pos = 0
        self._pump_body(spec.head)

    def _pump_body(self, head: bytes | None = None) -> None:
        body = self.spec.body
        total = len(body)
        pos = self.body_pos
        rec = self.rec
        transport = self.transport
        while pos < total and not self.write_paused and not self.closed:
            end = pos + BODY_SLICE
            if end > total:
                end = total
            if head is not None:
                # One writev() for the head and the first slice.
                transport.writelines((head, body[pos:end]))
                rec.bytes_out += len(head)
                head = None
            else:
                transport.write(body[pos:end])
            rec.bytes_out += end - pos
            rec.body_bytes_out += end - pos
            pos = end
        self.body_pos = pos

    def response_complete(
        self, status: int, keep_alive: bool, wire_bytes: int, body_bytes: int
    ) -> None:
        """Count a complete response (either model), then let the model go on."""
        now = perf_ns()
        if not self.in_flight:
            self.protocol_error(f"an unsolicited {status} response")
            return
        rec = self.rec
        statuses = rec.statuses
        statuses[status] = statuses.get(status, 0) + 1
        rec.bytes_in += wire_bytes
        if body_bytes >= 0:
            rec.body_bytes_in += body_bytes
        else:
            rec.unknown_body_responses += 1
        spec = self.spec
        if spec.whole is None and self.body_pos < spec.body_len:
            keep_alive = False  # answered before the whole request body went out
        self.completed(now, keep_alive)

    def completed(self, now: int, keep_alive: bool) -> None:
        # The closed model's hot path: record, then write the next request right here.
        rec = self.rec
        rec.latencies.append((now - self.sent_at) // 1000)
        vu = self.vu
        pool = self.pool
        if keep_alive and vu.running and now < pool.deadline_ns:
            specs = pool.specs
            spec = specs[vu.next_spec % len(specs)]
            whole = spec.whole
            if whole is not None and not self.uses_h11:
                # Still in flight, as far as the pool is concerned.
                vu.next_spec += 1
                self.spec = spec
                rec.bytes_out += spec.wire_len
                rec.body_bytes_out += spec.body_len
                self.sent_at = perf_ns()
                self.transport.write(whole)
                return
            self.in_flight = False
            pool.in_flight -= 1
            self.send()
            return
        self.in_flight = False
        pool.in_flight -= 1
        if not keep_alive:
            self.reusable = False
            self.transport.close()
            return  # connection_lost reconnects if the VU goes on
        pool.vu_idle(vu)

    def protocol_error(self, message: str) -> None:
        self.rec.bytes_in += self.pending_bytes()
        if self.in_flight and not self.failed:
            self._fail("protocol", message)
        else:
            self.rec.error("protocol", message)
        self.reusable = False
        if self.transport is not None:
            self.transport.abort()

    def server_timing_seen(self, value: bytes) -> None:
        pending = self.rec.timing_pending
        for name, ms in parse_server_timing(value):
            values = pending.get(name)
            if values is None:
                values = self.rec.timing_slot(name)
                if values is None:
                    continue  # past the limit of names: counted as ignored
            values.append(int(ms * 1000))

    def timed_out(self) -> None:
        """The sweep found the request in flight past its timeout."""
        self._fail("timeout", f"no complete response within {self.pool.timeout:g}s")
        self.reusable = False
        self.transport.abort()

    def _fail(self, kind: str, detail: str) -> None:
        self.failed = True
        self.rec.error(kind, detail)
        if self.in_flight:
            self.in_flight = False
            self.pool.in_flight -= 1


class OpenModel:
    """The open model's completion: the connection goes back to the pool's free list.

    Latency is recorded twice: from the *intended* send time (corrected for
    coordinated omission, as wrk2 does) and from the actual send.
    """

    intended = 0  # perf_counter_ns the scheduler meant this request to go out

    def completed(self, now: int, keep_alive: bool) -> None:
        rec = self.rec
        rec.latencies.append((now - self.intended) // 1000)
        rec.latencies_uncorrected.append((now - self.sent_at) // 1000)
        self.in_flight = False
        pool = self.pool
        pool.in_flight -= 1
        if not keep_alive:
            self.reusable = False
            self.transport.close()
            return
        if self.vu.running and now < pool.deadline_ns:
            pool.release(self)
        else:
            pool.vu_idle(self.vu)


class HttptoolsConnection(ClientConnection, HttptoolsFramer, asyncio.BufferedProtocol):
    uses_h11 = False

    def __init__(self, vu: VU, pool: PoolSide) -> None:
        super().__init__(vu, pool)
        # uvloop asks for the buffer on every read: a C-level callable.
        self.get_buffer = GET_READ_BUFFER


class H11Connection(ClientConnection, H11Framer, asyncio.Protocol):
    uses_h11 = True
    data_received = H11Framer.feed


class OpenHttptoolsConnection(OpenModel, HttptoolsConnection):
    pass


class OpenH11Connection(OpenModel, H11Connection):
    pass


CONNECTIONS = {"httptools": HttptoolsConnection, "h11": H11Connection}
OPEN_CONNECTIONS = {"httptools": OpenHttptoolsConnection, "h11": OpenH11Connection}

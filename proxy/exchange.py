"""One request through chanproxy and its response: an Exchange.

Its request body goes to the sink and the sink's answer comes back as each
arrives (or whole, with --buffer: proxy/modes.py), under flow control; its
head is rewritten on the way (proxy/heads.py). An exchange that is not
proxied is answered here: 404 for an unknown channel, 502/504 when the sink
fails, 400 for a request that broke, or the admin endpoint (proxy/admin.py).
"""

from __future__ import annotations

import asyncio
import time

from proxy import admin, heads
from proxy.upstream import UpstreamConnection


class Exchange:
    """One request and its response."""

    __slots__ = (
        "admin",
        "admin_body",
        "buffered",
        "channel",
        "client_keep_alive",
        "conn",
        "connecting",
        "deadline",
        "finished",
        "head_bytes",
        "headers",
        "http10",
        "keep_alive",
        "kind",
        "local_payload",
        "local_status",
        "method",
        "mode",
        "pending",
        "proto",
        "request_chunked",
        "request_done",
        "request_length",
        "response_buffer",
        "response_chunked",
        "response_head",
        "response_started",
        "started",
        "t_lookup",
        "t_upstream_start",
        "target",
        "url",
    )

    def __init__(self, proto, url: bytes, started: float) -> None:
        # proto: the client connection (proxy/protocol.py's ProxyProtocol)
        self.proto = proto
        self.mode = proto.shared.mode  # how bodies cross: proxy/modes.py
        self.url = url
        self.started = started
        self.method = b"GET"
        self.headers: list[tuple[bytes, bytes]] = []
        self.head_bytes = 0
        self.keep_alive = True
        self.http10 = False
        self.request_chunked = False
        self.request_length: int | None = None
        self.request_done = False
        self.kind = "local"  # "proxy" | "local"
        self.local_status = 404
        self.local_payload: object = heads.NOT_FOUND
        self.admin = False
        self.admin_body: bytearray | None = bytearray()  # None: over admin.BODY_MAX
        self.channel = None
        self.target = b""  # the request target at the sink (heads.sink_target)
        # Proxying.
        self.conn: UpstreamConnection | None = None
        self.connecting: asyncio.Task | None = None
        self.pending: list[bytes] = []  # body pieces that came before the sink connection
        self.buffered = bytearray()  # --buffer: the whole request body
        self.response_buffer = bytearray()  # --buffer: the whole response body
        self.response_head: bytes | None = None
        self.response_chunked = False
        self.response_started = False
        self.client_keep_alive = True
        self.deadline = 0.0  # when the sink's answer is late (Shared.sweep)
        self.t_lookup = 0.0
        self.t_upstream_start = 0.0
        self.finished = False

    # -- request side ------------------------------------------------------------

    def body(self, data: bytes) -> None:
        if self.kind != "proxy":
            kept = self.admin_body
            if self.admin and kept is not None:
                if len(kept) + len(data) > admin.BODY_MAX:
                    self.admin_body = None  # too large: 413, the rest read and dropped
                else:
                    kept += data
            return
        self.mode.request_body(self, data)

    def send_body(self, data: bytes) -> None:
        """A piece of the request body to the sink, framed as the request was."""
        if self.request_chunked:
            self.conn.writelines([b"%x\r\n" % len(data), data, b"\r\n"])
        else:
            self.conn.write(data)

    def done_reading(self) -> None:
        self.request_done = True
        if self.kind != "proxy":
            if self.proto.active is self:
                self.answer_locally()
            return
        if self.conn is not None:
            self.mode.request_done(self)

    # -- activation ---------------------------------------------------------------

    def activate(self) -> None:
        """This exchange's turn: reach the sink (or answer here)."""
        if self.kind != "proxy":
            if self.request_done:
                self.answer_locally()
            return
        shared = self.proto.shared
        key = self.channel.sink_key
        self.t_upstream_start = time.perf_counter()
        conn = shared.pool.take_idle(key)
        if conn is not None:
            self.attach(conn)
            return
        self.proto.block_reading("connect")
        self.connecting = shared.loop.create_task(self._connect(key))

    async def _connect(self, key: tuple[str, int, bool]) -> None:
        try:
            conn = await self.proto.shared.pool.connect(key)
        except (OSError, TimeoutError) as exc:
            self.connecting = None
            self.proto.unblock_reading("connect")
            detail = "timed out" if isinstance(exc, TimeoutError) else str(exc)
            self.fail(502, f"cannot reach the sink: {detail}")
            return
        self.connecting = None
        if self.finished or self.proto.closed:
            conn.abort()
            return
        self.proto.unblock_reading("connect")
        self.attach(conn)

    def attach(self, conn: UpstreamConnection) -> None:
        self.conn = conn
        conn.start(self, head_request=self.method == b"HEAD")
        proto = self.proto
        if proto.write_paused:
            conn.pause_reading()  # connected while the client stopped reading
        if proto.feeding:
            conn.cork()  # the head and the body of this read go out together
            proto.corked.append(conn)
        config = proto.shared.config
        self.deadline = time.monotonic() + config.upstream_timeout
        proto.shared.waiting.add(self)
        self.mode.attached(self)

    def upstream_request_head(self, body: str | int | None) -> bytes:
        """This request's head for the sink; ``body`` as heads.upstream_head takes it."""
        channel = self.channel
        return heads.upstream_head(
            self.method,
            self.target,
            self.headers,
            channel.sink_authority,
            self.proto.peer_ip,
            body,
            scheme=self.proto.shared.scheme,
        )

    # -- response side (called by the UpstreamConnection) -------------------------------

    def upstream_head(self, status, headers, keep_alive, framing) -> None:
        self._cancel_timer()
        t_head = time.perf_counter()
        mode = self.mode
        self.client_keep_alive = self.keep_alive and not (framing == "close" and self.http10)
        lines = heads.response_head_lines(
            status,
            headers,
            keep_length=framing == "length" and mode.passes_length,
            lookup_ms=self.t_lookup * 1000,
            upstream_ms=(t_head - self.t_upstream_start) * 1000,
            total_ms=(t_head - self.started) * 1000,
        )
        mode.response_head(self, status, lines, framing)

    def upstream_body(self, data: bytes) -> None:
        self.mode.response_body(self, data)

    def upstream_done(self, reusable: bool) -> None:
        conn = self.conn
        self.conn = None
        if conn is not None:
            if reusable and self.request_done:
                self.proto.shared.pool.release(conn)
            else:
                conn.abort()
        proto = self.proto
        self.buffered = bytearray()
        self.mode.response_done(self)
        proto.shared.stats.proxied += 1
        self._finish(self.client_keep_alive)

    def upstream_failed(self, reason: str, before_head: bool) -> None:
        self.conn = None
        if before_head or not self.response_started:
            self.fail(502, reason)
        else:
            # The head is out: the only honest thing left is to cut the response.
            self.finished = True
            self.proto.abort()

    def upstream_paused(self, paused: bool) -> None:
        if paused:
            self.proto.block_reading("upstream")
        else:
            self.proto.unblock_reading("upstream")

    def timed_out(self) -> None:
        self.proto.shared.waiting.discard(self)
        conn, self.conn = self.conn, None
        if conn is not None:
            conn.exchange = None
            conn.abort()
        self.proto.shared.stats.errors_504 += 1
        self.fail(504, "the sink did not answer in time", count=False)

    def fail(self, status: int, reason: str, count: bool = True) -> None:
        self._cancel_timer()
        if self.finished:
            return
        if count and status == 502:
            self.proto.shared.stats.errors_502 += 1
        if self.response_started:
            self.finished = True
            self.proto.abort()
            return
        self.local_status = status
        self.local_payload = heads.GATEWAY_TIMEOUT if status == 504 else heads.BAD_GATEWAY
        # The rest of the request body (if any) is read and dropped; then close.
        self.kind = "failed"
        self.keep_alive = self.keep_alive and self.request_done
        if self.request_done:
            self.answer_locally()

    def request_broken(self, status: int = 400) -> None:
        """The rest of this request cannot be read: ``status`` (400 when it does
        not parse, 408 when it stalls) and close, never a wait.

        The sink's side of it is stopped; an answer already under way is cut
        off (the client sees a terminated response).
        """
        self.keep_alive = False
        self.request_done = True
        if self.finished:
            return
        self._cancel_timer()
        if self.connecting is not None:
            self.connecting.cancel()
            self.connecting = None
        conn, self.conn = self.conn, None
        if conn is not None:
            conn.exchange = None
            conn.abort()
        if self.response_started:
            self.finished = True
            self.proto.abort()
            return
        self.kind = "failed"
        self.admin = False
        self.local_status = status
        self.local_payload = heads.REQUEST_TIMEOUT if status == 408 else heads.BAD_REQUEST
        if self.proto.active is self:
            self.answer_locally()

    def answer_locally(self) -> None:
        if self.finished:
            return
        proto = self.proto
        if self.admin:
            body = self.admin_body
            try:
                status, payload = admin.answer(
                    proto.shared.registry,
                    proto.shared.config.admin_token,
                    proto.peer_loopback,
                    self.method,
                    self.url,
                    self.headers,
                    None if body is None else bytes(body),
                )
            except Exception as exc:  # never a connection left without an answer
                status, payload = 500, {"error": f"internal error ({type(exc).__name__})"}
                self.keep_alive = False
        else:
            status, payload = self.local_status, self.local_payload
        proto.write(heads.json_response(status, payload, self.keep_alive))
        self._finish(self.keep_alive)

    def _finish(self, keep_alive: bool) -> None:
        self._cancel_timer()
        self.finished = True
        self.proto.exchange_finished(self, keep_alive)

    def _cancel_timer(self) -> None:
        self.proto.shared.waiting.discard(self)

    def client_lost(self) -> None:
        """The client went away: stop the sink's side too."""
        self._cancel_timer()
        self.finished = True
        if self.connecting is not None:
            self.connecting.cancel()
        conn, self.conn = self.conn, None
        if conn is not None:
            conn.exchange = None
            conn.abort()

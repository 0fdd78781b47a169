"""The proxy's side toward the sinks: pooled keep-alive connections.

An ``UpstreamConnection`` carries one exchange at a time. It parses the sink's
response with httptools and hands head, body pieces and the end to its
exchange as they arrive; flow control goes both ways through the exchange
(a full upstream socket pauses reading from the client, a full client socket
pauses reading from the sink).
"""

from __future__ import annotations

import asyncio
import ssl
from collections import defaultdict
from typing import Protocol

import httptools

from common import tcp, tls


class ExchangeSink(Protocol):
    """What an upstream connection reports to (the exchange it serves)."""

    def upstream_head(
        self, status: int, headers: list[tuple[bytes, bytes]], keep_alive: bool, framing: str
    ) -> None: ...

    def upstream_body(self, data: bytes) -> None: ...

    def upstream_done(self, reusable: bool) -> None: ...

    def upstream_failed(self, reason: str, before_head: bool) -> None: ...

    def upstream_paused(self, paused: bool) -> None: ...


class Corked:
    """Writes that can be held back (cork) and sent in one writev (uncork): what one
    read makes a connection send leaves in one system call. Needs ``transport``,
    ``closed`` and ``_out`` (None when not corked)."""

    transport: asyncio.Transport
    closed: bool
    _out: list | None

    def write(self, data: bytes | memoryview) -> None:
        out = self._out
        if out is not None:
            out.append(data)
        elif not self.closed:
            self.transport.write(data)

    def writelines(self, pieces: list) -> None:
        out = self._out
        if out is not None:
            out.extend(pieces)
        elif not self.closed:
            self.transport.writelines(pieces)

    def cork(self) -> None:
        if self._out is None:
            self._out = []

    def uncork(self) -> None:
        out, self._out = self._out, None
        if out and not self.closed:
            self.transport.writelines(out)


class UpstreamConnection(Corked, asyncio.Protocol):
    def __init__(self, pool: Pool, key: tuple[str, int, bool]) -> None:
        self.pool = pool
        self.key = key
        self.transport: asyncio.Transport | None = None
        self.exchange: ExchangeSink | None = None
        self.closed = False
        self.write_paused = False
        self._parser = httptools.HttpResponseParser(self)
        self._headers: list[tuple[bytes, bytes]] = []
        self._head_seen = False
        self._framing = "none"
        self._head_request = False
        self._out: list | None = None  # corked: writes wait to go out in one writev

    # -- asyncio ---------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        tcp.tune_transport(transport, self.pool.congestion)
        tls.bound_buffers(transport)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.pool.forget(self)
        exchange = self.exchange
        if exchange is None:
            return
        self.exchange = None
        if self._head_seen and self._framing == "close":
            # A close-delimited body (RFC 9112 6.3) ends here.
            exchange.upstream_done(False)
            return
        reason = "the sink closed the connection"
        if exc is not None:
            reason = f"the sink connection failed: {exc}"
        exchange.upstream_failed(reason, before_head=not self._head_seen)

    def data_received(self, data: bytes) -> None:
        # What this read makes us send the client leaves in one write.
        proto = self.exchange.proto if self.exchange is not None else None
        if proto is not None:
            proto.cork()
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as exc:
            exchange = self.exchange
            self.exchange = None
            self.abort()
            if exchange is not None:
                exchange.upstream_failed(
                    f"malformed response from the sink: {exc}", before_head=not self._head_seen
                )
        finally:
            if proto is not None:
                proto.uncork()

    def pause_writing(self) -> None:
        self.write_paused = True
        if self.exchange is not None:
            self.exchange.upstream_paused(True)

    def resume_writing(self) -> None:
        self.write_paused = False
        if self.exchange is not None:
            self.exchange.upstream_paused(False)

    # -- httptools -------------------------------------------------------------

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers.append((name, value))

    def on_headers_complete(self) -> None:
        status = self._parser.get_status_code()
        if 100 <= status < 200 and status != 101:
            self._headers = []  # an interim response: not forwarded
            return
        self._head_seen = True
        framing = "none"
        for name, value in self._headers:
            lower = name.lower()
            if lower == b"content-length":
                framing = "length"
            elif lower == b"transfer-encoding" and b"chunked" in value.lower():
                framing = "chunked"
                break
        if framing == "none" and not (status == 204 or status == 304 or self._head_request):
            framing = "close"
        self._framing = framing
        keep_alive = self._parser.should_keep_alive()
        headers, self._headers = self._headers, []
        if self.exchange is not None:
            self.exchange.upstream_head(status, headers, keep_alive, framing)
        if self._head_request:
            # llhttp cannot know that a HEAD answer has no body: finish here
            # and never reuse the connection.
            self._finish(reusable=False)

    def on_body(self, body: bytes) -> None:
        if self.exchange is not None:
            self.exchange.upstream_body(body)

    def on_message_complete(self) -> None:
        if not self._head_seen:
            return  # the end of an interim response
        if self._head_request:
            return
        self._finish(self._parser.should_keep_alive())

    def _finish(self, reusable: bool) -> None:
        exchange = self.exchange
        self.exchange = None
        self._head_seen = False
        self._framing = "none"
        if exchange is not None:
            exchange.upstream_done(reusable)

    # -- used by the exchange -------------------------------------------------------

    def start(self, exchange: ExchangeSink, head_request: bool) -> None:
        self.exchange = exchange
        self._head_request = head_request
        self._headers = []
        self._head_seen = False

    def pause_reading(self) -> None:
        if not self.closed:
            self.transport.pause_reading()

    def resume_reading(self) -> None:
        if not self.closed:
            self.transport.resume_reading()

    def abort(self) -> None:
        if not self.closed:
            self.closed = True
            self.transport.abort()


def upstream_context(ca_file: str | None) -> ssl.SSLContext:
    """Verify https sinks against ``ca_file`` (--upstream-ca-file), else the system's CAs."""
    ctx = ssl.create_default_context(cafile=ca_file)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.set_alpn_protocols(["http/1.1"])
    return ctx


class Pool:
    """Idle keep-alive connections per sink (host, port, TLS)."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        max_idle: int,
        connect_timeout: float,
        congestion: str = tcp.AUTO,
        tls: ssl.SSLContext | None = None,
    ):
        self.loop = loop
        self.tls = tls  # for https sinks (--upstream-ca-file, else the system's CAs)
        self.congestion = congestion
        self.max_idle = max_idle
        self.connect_timeout = connect_timeout
        self._idle: dict[tuple[str, int, bool], list[UpstreamConnection]] = defaultdict(list)
        self.opened = 0

    def take_idle(self, key: tuple[str, int, bool]) -> UpstreamConnection | None:
        idle = self._idle.get(key)
        while idle:
            conn = idle.pop()
            if not conn.closed:
                return conn
        return None

    async def connect(self, key: tuple[str, int, bool]) -> UpstreamConnection:
        """A new connection to the sink ``key`` names: (host, port, TLS or not)."""
        host, port, secure = key
        if secure and self.tls is None:
            self.tls = upstream_context(None)
        async with asyncio.timeout(self.connect_timeout):
            _, conn = await self.loop.create_connection(
                lambda: UpstreamConnection(self, key),
                host,
                port,
                ssl=self.tls if secure else None,
                server_hostname=host if secure else None,
            )
        self.opened += 1
        return conn

    def release(self, conn: UpstreamConnection) -> None:
        if conn.closed:
            return
        idle = self._idle[conn.key]
        if len(idle) >= self.max_idle:
            conn.abort()
            return
        if conn.write_paused:
            conn.abort()
            return
        idle.append(conn)

    def forget(self, conn: UpstreamConnection) -> None:
        idle = self._idle.get(conn.key)
        if idle and conn in idle:
            idle.remove(conn)

    def close(self) -> None:
        for idle in self._idle.values():
            for conn in idle:
                conn.abort()
        self._idle.clear()

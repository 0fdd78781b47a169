"""chanproxy's client side: one connection, its requests, each proxied as an Exchange.

Requests are parsed with httptools as they stream in. The first request of
the connection is *active*: its body goes to the sink as it arrives, and the
sink's answer comes back as it arrives, both under flow control. Pipelined
requests wait their turn (reading pauses while they do).
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import secrets
import time
from collections import deque

import httptools

from common import tcp
from common.bodies import STATUS_LINES
from proxy.config import MAX_HEADER_BYTES, ProxyConfig
from proxy.registry import ChannelError, Registry
from proxy.upstream import Corked, Pool, UpstreamConnection

HOP_BY_HOP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-connection",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
    }
)
# Replaced on the way to the sink, as Lightning does (spec/lightning-target.md).
REPLACED = HOP_BY_HOP | {b"host", b"x-request-id", b"content-length"}
ADMIN_BODY_MAX = 64 * 1024


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
        self.timed_out = 0  # client connections closed by --header-timeout or --idle-timeout


class Shared:
    """What every connection of one server shares."""

    def __init__(self, config: ProxyConfig, registry: Registry, loop) -> None:
        self.config = config
        self.registry = registry
        self.loop = loop
        self.pool = Pool(loop, config.max_idle_per_sink, config.connect_timeout, config.congestion)
        # What --congestion still asks of each accepted connection once the
        # listening sockets have it (common/listening.py): "system", nothing, mostly.
        self.accept_congestion = config.congestion
        self.stats = Stats()
        self.connections: set[ProxyProtocol] = set()
        # Exchanges waiting for the sink's response head, checked by sweep().
        self.waiting: set[Exchange] = set()

    async def sweep(self) -> None:
        """504 for every exchange whose sink is late: one pass per tick, no timer each;
        once a second, the client connections' header and idle timeouts."""
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


def json_response(status: int, payload: object, keep_alive: bool = True) -> bytes:
    body = json.dumps(payload, separators=(",", ":")).encode()
    head = STATUS_LINES[status] + b"content-type: application/json\r\ncontent-length: %d\r\n" % (
        len(body)
    )
    if not keep_alive:
        head += b"connection: close\r\n"
    return head + b"\r\n" + body


NOT_FOUND = {"error": "Not Found"}
BAD_GATEWAY = {"error": "Bad Gateway"}
GATEWAY_TIMEOUT = {"error": "Gateway Timeout"}
BAD_REQUEST = {"error": "Bad Request"}
ERROR_PHRASES = {
    400: "Bad Request",
    408: "Request Timeout",
    431: "Request Header Fields Too Large",
}


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
        "url",
    )

    def __init__(self, proto: ProxyProtocol, url: bytes, started: float) -> None:
        self.proto = proto
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
        self.local_payload: object = NOT_FOUND
        self.admin = False
        self.admin_body = bytearray()
        self.channel = None
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
            if self.admin and len(self.admin_body) < ADMIN_BODY_MAX:
                self.admin_body += data
            return
        if self.proto.shared.config.buffer:
            self.buffered += data
        elif self.conn is not None:
            self._send_body(data)
        else:
            self.pending.append(data)

    def _send_body(self, data: bytes) -> None:
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
        if self.conn is not None and not self.proto.shared.config.buffer:
            if self.request_chunked:
                self.conn.write(b"0\r\n\r\n")
        elif self.conn is not None:
            self._send_buffered()

    # -- activation ---------------------------------------------------------------

    def activate(self) -> None:
        """This exchange's turn: reach the sink (or answer here)."""
        if self.kind != "proxy":
            if self.request_done:
                self.answer_locally()
            return
        shared = self.proto.shared
        key = (self.channel.sink_host, self.channel.sink_port)
        self.t_upstream_start = time.perf_counter()
        conn = shared.pool.take_idle(key)
        if conn is not None:
            self.attach(conn)
            return
        self.proto.block_reading("connect")
        self.connecting = shared.loop.create_task(self._connect(key))

    async def _connect(self, key: tuple[str, int]) -> None:
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
        if proto.feeding:
            conn.cork()  # the head and the body of this read go out together
            proto.corked.append(conn)
        config = proto.shared.config
        self.deadline = time.monotonic() + config.upstream_timeout
        proto.shared.waiting.add(self)
        if config.buffer:
            if self.request_done:
                self._send_buffered()
            return
        conn.write(self._upstream_head(None))
        for piece in self.pending:
            self._send_body(piece)
        self.pending = []
        if self.request_done and self.request_chunked:
            conn.write(b"0\r\n\r\n")

    def _send_buffered(self) -> None:
        # As a proxy that reads whole bodies does: the request body stays in
        # memory until the exchange is over (here: kept in self.buffered).
        body = bytes(self.buffered)
        self.conn.writelines([self._upstream_head(len(body)), body])

    def _upstream_head(self, length: int | None) -> bytes:
        proto = self.proto
        channel = self.channel
        path = self.url.split(b"?", 1)
        rest = path[0].split(b"/", 3)[3] if path[0].count(b"/") >= 3 else b""
        query = b"?" + path[1] if len(path) == 2 else b""
        target = channel.sink_path.encode() + b"/" + rest + query
        forwarded_for = proto.peer_ip
        client_host = b""
        request_id = None
        lines = [
            self.method,
            b" ",
            target,
            b" HTTP/1.1\r\nhost: ",
            f"{channel.sink_host}:{channel.sink_port}".encode(),
            b"\r\n",
        ]
        for name, value in self.headers:
            lower = name.lower()
            if lower in REPLACED or lower.startswith(b"x-forwarded-"):
                if lower == b"x-request-id" and 20 <= len(value) <= 200:
                    request_id = value
                elif lower == b"host":
                    client_host = value
                elif lower == b"x-forwarded-for":
                    forwarded_for = value + b", " + forwarded_for
                continue
            lines += [name, b": ", value, b"\r\n"]
        if request_id is None:
            request_id = secrets.token_urlsafe(15).encode()
        lines += [
            b"x-forwarded-for: ",
            forwarded_for,
            b"\r\n",
            b"x-forwarded-host: ",
            client_host,
            b"\r\n",
            b"x-forwarded-proto: http\r\n",
            b"x-request-id: ",
            request_id,
            b"\r\n",
        ]
        if length is not None:
            lines += [b"content-length: ", str(length).encode(), b"\r\n"]
        elif self.request_chunked:
            lines.append(b"transfer-encoding: chunked\r\n")
        elif self.request_length is not None:
            lines += [b"content-length: ", str(self.request_length).encode(), b"\r\n"]
        lines.append(b"\r\n")
        return b"".join(lines)

    # -- response side (called by the UpstreamConnection) -------------------------------

    def upstream_head(self, status, headers, keep_alive, framing) -> None:
        self._cancel_timer()
        t_head = time.perf_counter()
        proto = self.proto
        self.client_keep_alive = self.keep_alive and not (framing == "close" and self.http10)
        lines = [STATUS_LINES.get(status, b"HTTP/1.1 %d \r\n" % status)]
        for name, value in headers:
            lower = name.lower()
            if lower in HOP_BY_HOP or (lower == b"content-length" and framing != "length"):
                continue
            if lower == b"content-length" and proto.shared.config.buffer:
                continue
            lines += [name, b": ", value, b"\r\n"]
        upstream_ms = (t_head - self.t_upstream_start) * 1000
        total_ms = (t_head - self.started) * 1000
        lines.append(
            b"server-timing: lookup;dur=%.3f, upstream;dur=%.3f, total;dur=%.3f\r\n"
            % (self.t_lookup * 1000, upstream_ms, total_ms)
        )
        if proto.shared.config.buffer:
            self.response_head = b"".join(lines)
            return
        if framing in ("chunked", "close") and status not in (204, 304) and self.method != b"HEAD":
            if self.http10:
                self.client_keep_alive = False
            else:
                lines.append(b"transfer-encoding: chunked\r\n")
                self.response_chunked = True
        if not self.client_keep_alive:
            lines.append(b"connection: close\r\n")
        lines.append(b"\r\n")
        self.response_started = True
        proto.write(b"".join(lines))

    def upstream_body(self, data: bytes) -> None:
        if self.proto.shared.config.buffer:
            self.response_buffer += data
        elif self.response_chunked:
            self.proto.writelines([b"%x\r\n" % len(data), data, b"\r\n"])
        else:
            self.proto.write(data)

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
        if proto.shared.config.buffer and self.response_head is not None:
            body = bytes(self.response_buffer)
            self.response_buffer = bytearray()
            tail = b"content-length: %d\r\n" % len(body)
            if not self.client_keep_alive:
                tail += b"connection: close\r\n"
            proto.writelines([self.response_head, tail, b"\r\n", body])
            self.response_started = True
        elif self.response_chunked:
            proto.write(b"0\r\n\r\n")
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
        self.local_payload = GATEWAY_TIMEOUT if status == 504 else BAD_GATEWAY
        # The rest of the request body (if any) is read and dropped; then close.
        self.kind = "failed"
        self.keep_alive = self.keep_alive and self.request_done
        if self.request_done:
            self.answer_locally()

    def request_broken(self) -> None:
        """The rest of this request cannot be parsed: 400 and close, never a wait.

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
        self.local_status, self.local_payload = 400, BAD_REQUEST
        if self.proto.active is self:
            self.answer_locally()

    def answer_locally(self) -> None:
        if self.finished:
            return
        proto = self.proto
        if self.admin:
            status, payload = proto.admin(self)
        else:
            status, payload = self.local_status, self.local_payload
        proto.write(json_response(status, payload, self.keep_alive))
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


class ProxyProtocol(Corked, asyncio.Protocol):
    def __init__(self, shared: Shared) -> None:
        self.shared = shared
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpRequestParser(self)
        self.exchanges: deque[Exchange] = deque()
        self.incoming: Exchange | None = None
        self.closed = False
        self.peer_ip = b"127.0.0.1"
        self.peer_loopback = True
        self._read_blocks: set[str] = set()
        self._write_paused = False
        self._reading_done = False
        self._out: list | None = None  # corked: writes wait to go out in one writev
        self.feeding = False
        self.corked: list[UpstreamConnection] = []
        self.heads = 0  # requests begun on this connection (the idle sweep's activity mark)
        self._idle_mark = -1
        self._idle_since: float | None = None

    @property
    def active(self) -> Exchange | None:
        return self.exchanges[0] if self.exchanges else None

    # -- asyncio ------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        sock = transport.get_extra_info("socket")
        if sock is not None:
            tcp.tune(sock, self.shared.accept_congestion)
        peer = transport.get_extra_info("peername")
        if peer:
            self.peer_ip = peer[0].encode()
            try:
                self.peer_loopback = ipaddress.ip_address(peer[0]).is_loopback
            except ValueError:
                self.peer_loopback = False
        self.shared.stats.open += 1
        self.shared.connections.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.shared.stats.open -= 1
        self.shared.connections.discard(self)
        for exchange in self.exchanges:
            exchange.client_lost()
        self.exchanges.clear()
        if self.incoming is not None:
            self.incoming.client_lost()

    def data_received(self, data: bytes) -> None:
        if self._reading_done:
            return
        # Everything this read makes us send leaves in one write per peer.
        self.cork()
        active = self.active
        corked = self.corked
        if active is not None and active.conn is not None:
            active.conn.cork()
            corked.append(active.conn)
        self.feeding = True
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._bad_request(400)
        except httptools.HttpParserError:
            incoming = self.incoming
            too_large = incoming is not None and incoming.head_bytes > MAX_HEADER_BYTES
            self._bad_request(431 if too_large else 400)
        finally:
            self.feeding = False
            for conn in corked:
                conn.uncork()
            corked.clear()
            self.uncork()

    def pause_writing(self) -> None:
        self._write_paused = True
        active = self.active
        if active is not None and active.conn is not None:
            active.conn.pause_reading()

    def resume_writing(self) -> None:
        self._write_paused = False
        active = self.active
        if active is not None and active.conn is not None:
            active.conn.resume_reading()

    # -- httptools ------------------------------------------------------------------

    def on_url(self, url: bytes) -> None:
        if self.incoming is None:
            self.incoming = Exchange(self, url, time.perf_counter())
            self.shared.stats.requests += 1
            self.heads += 1
        else:
            self.incoming.url += url
        self.incoming.head_bytes += len(url)
        if self.incoming.head_bytes > MAX_HEADER_BYTES:
            raise ValueError("header section too large")

    def on_header(self, name: bytes, value: bytes) -> None:
        incoming = self.incoming
        incoming.headers.append((name, value))
        incoming.head_bytes += len(name) + len(value) + 4
        if incoming.head_bytes > MAX_HEADER_BYTES:
            raise ValueError("header section too large")

    def on_headers_complete(self) -> None:
        ex = self.incoming
        parser = self.parser
        ex.method = parser.get_method()
        ex.keep_alive = parser.should_keep_alive()
        ex.http10 = parser.get_http_version() == "1.0"
        for name, value in ex.headers:
            lower = name.lower()
            if lower == b"transfer-encoding" and b"chunked" in value.lower():
                ex.request_chunked = True
            elif lower == b"content-length":
                ex.request_length = int(value)
        self._route(ex)
        self.exchanges.append(ex)
        if len(self.exchanges) == 1:
            ex.activate()
        else:
            self.block_reading("pipeline")

    def on_body(self, body: bytes) -> None:
        self.incoming.body(body)

    def on_message_complete(self) -> None:
        ex, self.incoming = self.incoming, None
        ex.done_reading()

    # -- routing ------------------------------------------------------------------

    def _route(self, ex: Exchange) -> None:
        path = ex.url.split(b"?", 1)[0]
        parts = path.split(b"/", 3)
        if len(parts) >= 3 and parts[1] == b"channels":
            t0 = time.perf_counter()
            channel = self.shared.registry.get(parts[2].decode("latin-1"))
            ex.t_lookup = time.perf_counter() - t0
            if channel is not None and channel.enabled:
                ex.kind = "proxy"
                ex.channel = channel
            return
        if path.startswith(b"/_admin/"):
            ex.admin = True

    def admin(self, ex: Exchange) -> tuple[int, object]:
        """The loopback-only admin endpoint: create and list channels."""
        if not self.peer_loopback:
            return 403, {"error": "the admin endpoint answers loopback clients only"}
        path = ex.url.split(b"?", 1)[0]
        if path != b"/_admin/channels":
            return 404, NOT_FOUND
        registry = self.shared.registry
        if ex.method == b"GET":
            return 200, [c.as_dict() for c in registry.all()]
        if ex.method != b"POST":
            return 405, {"error": "use GET or POST"}
        try:
            data = json.loads(bytes(ex.admin_body) or b"{}")
            if not isinstance(data, dict):
                raise ValueError("expected a JSON object")
            channel = registry.add(
                str(data.get("name", "")),
                str(data.get("sink_url", "")),
                channel_id=data.get("id"),
                enabled=bool(data.get("enabled", True)),
            )
        except (ValueError, ChannelError) as exc:
            return 422, {"error": str(exc)}
        return 201, channel.as_dict()

    # -- writing and flow ---------------------------------------------------------------

    def block_reading(self, reason: str) -> None:
        if not self._read_blocks and not self.closed:
            self.transport.pause_reading()
        self._read_blocks.add(reason)

    def unblock_reading(self, reason: str) -> None:
        if reason in self._read_blocks:
            self._read_blocks.discard(reason)
            if not self._read_blocks and not self.closed and not self._reading_done:
                self.transport.resume_reading()

    def exchange_finished(self, ex: Exchange, keep_alive: bool) -> None:
        if self.exchanges and self.exchanges[0] is ex:
            self.exchanges.popleft()
        if not keep_alive:
            self.close()
            return
        if self.exchanges:
            nxt = self.exchanges[0]
            if len(self.exchanges) == 1:
                self.unblock_reading("pipeline")
            nxt.activate()
        self.unblock_reading("upstream")

    def _bad_request(self, status: int, count: bool = True) -> None:
        if count:
            self.shared.stats.bad_requests += 1
        self._reading_done = True
        if not self.closed:
            self.transport.pause_reading()
        if not self.exchanges:
            self.write(
                json_response(
                    status,
                    {"error": ERROR_PHRASES.get(status, "Bad Request")},
                    False,
                )
            )
            self.close()
        else:
            # Answer what came before, then close; a request whose head was
            # read but whose body broke gets its 400 in its turn.
            broken, self.incoming = self.incoming, None
            for ex in self.exchanges:
                ex.keep_alive = False
            if broken is not None and broken in self.exchanges:
                broken.request_broken()

    def sweep(self, now: float) -> None:
        """Close a connection whose request head is too slow to arrive (408 first),
        or that has done nothing for --idle-timeout. ``now``: time.perf_counter()."""
        if self.closed or self._reading_done:
            return
        config = self.shared.config
        incoming = self.incoming
        if incoming is not None and incoming not in self.exchanges:
            if now - incoming.started > config.header_timeout:
                self.shared.stats.timed_out += 1
                self._bad_request(408, count=False)
            return
        if self.exchanges or incoming is not None:
            self._idle_since = None
            return
        if self._idle_since is None or self._idle_mark != self.heads:
            self._idle_since, self._idle_mark = now, self.heads
            return
        if now - self._idle_since > config.idle_timeout:
            self.shared.stats.timed_out += 1
            self.close()

    def close(self) -> None:
        if not self.closed:
            self.uncork()  # what is owed goes out first
            self.closed = True
            self.transport.close()

    def abort(self) -> None:
        if not self.closed:
            self.closed = True
            self.transport.abort()

    def shutdown(self) -> None:
        """Close when idle; otherwise after the exchanges in progress."""
        if not self.exchanges and self.incoming is None:
            self.close()
        else:
            for ex in self.exchanges:
                ex.keep_alive = False

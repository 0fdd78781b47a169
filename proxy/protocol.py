"""chanproxy's client side: one connection, its requests, each proxied as an Exchange.

Requests are parsed with httptools as they stream in. The first request of
the connection is *active*: its body goes to the sink as it arrives, and the
sink's answer comes back as it arrives, both under flow control
(proxy/exchange.py). Pipelined requests wait their turn (reading pauses while
they do). A client that stops reading stops everything: while its writes are
paused nothing more is read from it or from the sink, and the next pipelined
request waits, so what a connection holds is bounded whatever it sends.
"""

from __future__ import annotations

import asyncio
import ipaddress
import time
from collections import deque

import httptools

from common import tcp, tls
from proxy import admin, heads
from proxy.config import MAX_HEADER_BYTES
from proxy.exchange import Exchange
from proxy.shared import Shared
from proxy.upstream import Corked, UpstreamConnection


class ProxyProtocol(Corked, asyncio.Protocol):
    """One client connection: its requests parsed as they stream in, each an Exchange."""

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
        self.write_paused = False
        self._activate_next = False  # the next exchange waits for the client to read
        self._reading_done = False
        self._out: list | None = None  # corked: writes wait to go out in one writev
        self.feeding = False
        self.corked: list[UpstreamConnection] = []
        self.heads = 0  # requests begun on this connection (the idle sweep's activity mark)
        self._idle_mark = -1
        self._idle_since: float | None = None
        self._reading_since = 0.0  # when reading last resumed (perf_counter)
        # Whether bytes came since the last sweep (one store a read, no clock
        # read), and so since when the request body being read has had none.
        self._bytes_came = False
        self._body_since = 0.0

    @property
    def active(self) -> Exchange | None:
        return self.exchanges[0] if self.exchanges else None

    # -- asyncio ------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        tcp.tune_transport(transport, self.shared.accept_congestion)
        tls.bound_buffers(transport)
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
        self._bytes_came = True
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
        # The client is not reading: read nothing more from it (no new requests,
        # no new answers to hold) and nothing more of the sink's answer.
        self.write_paused = True
        self.block_reading("write")
        active = self.active
        if active is not None and active.conn is not None:
            active.conn.pause_reading()

    def resume_writing(self) -> None:
        self.write_paused = False
        active = self.active
        if self._activate_next and active is not None:
            self._activate_next = False
            active.activate()
        elif active is not None and active.conn is not None:
            active.conn.resume_reading()
        self.unblock_reading("write")

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
        if len(self.exchanges) > 1:
            self.block_reading("pipeline")
        else:
            self._take_turn(ex)

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
                target = heads.sink_target(ex.url, channel.sink_path)
                if target is None:
                    # Its dot segments climb out of the channel: answered here,
                    # the sink never asked (proxy/heads.py, channel_path).
                    self.shared.stats.bad_requests += 1
                    ex.local_status, ex.local_payload = 400, heads.BAD_REQUEST
                    return
                ex.kind = "proxy"
                ex.channel = channel
                ex.target = target
            return
        if admin.is_admin(path):
            ex.admin = True

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
                self._reading_since = time.perf_counter()

    def _take_turn(self, ex: Exchange) -> None:
        """``ex`` is first in line: activate it, or, while the client reads
        none of its answers, when it reads again (resume_writing)."""
        if self.write_paused:
            self._activate_next = True
        else:
            ex.activate()

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
            self._take_turn(nxt)
        self.unblock_reading("upstream")

    def _bad_request(self, status: int, count: bool = True) -> None:
        """Answer a request that cannot be read (``status``: 400, 408, 431), then close."""
        if count:
            self.shared.stats.bad_requests += 1
        self._reading_done = True
        if not self.closed:
            self.transport.pause_reading()
        if not self.exchanges:
            self.write(heads.error_response(status))
            self.close()
        else:
            # Answer what came before, then close; a request whose head was
            # read but whose body broke gets its 400 in its turn.
            broken, self.incoming = self.incoming, None
            for ex in self.exchanges:
                ex.keep_alive = False
            if broken is not None and broken in self.exchanges:
                broken.request_broken(status)

    def sweep(self, now: float) -> None:
        """Close a connection whose request head is too slow to arrive, or whose
        body has had no byte for --body-timeout (408 first), or that has done
        nothing for --idle-timeout. ``now``: time.perf_counter()."""
        if self.closed or self._reading_done:
            return
        config = self.shared.config
        came = self._bytes_came
        self._bytes_came = False
        incoming = self.incoming
        if incoming is not None and incoming not in self.exchanges:
            if self._read_blocks:
                return  # the head waits on us (reading paused), not on a slow client
            if now - max(incoming.started, self._reading_since) > config.header_timeout:
                self.shared.stats.timed_out += 1
                self._bad_request(408, count=False)
            return
        if incoming is not None:
            # Its body, streaming to the sink or not: the clock starts again when
            # bytes came since the last look, or while we hold reading back (the
            # client does not read, the sink is slower, a connect or a pipelined
            # turn: the wait is on us).
            self._idle_since = None
            if came or self._read_blocks:
                self._body_since = now
            elif now - max(self._body_since, self._reading_since) > config.body_timeout:
                self.shared.stats.timed_out += 1
                self._bad_request(408, count=False)
            return
        if self.exchanges:
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

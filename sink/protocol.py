"""chansink's HTTP/1.1 server protocol: httptools parsing on a BufferedProtocol.

Requests are parsed as they stream in and their bodies are only counted, so
memory does not grow with upload size. What is owed in return is the
``ReplyQueue``'s business (sink/replies.py); the common case, a plain
keep-alive request for a small prebuilt response, is written right here.
"""

from __future__ import annotations

import asyncio
import socket
import time

import httptools

from common import bodies, tcp, tls
from common.memo import MEMO_MAX, ReadMemo
from sink.config import MAX_HEADER_BYTES, Mode
from sink.context import READ_BUFFER_SIZE, SinkContext
from sink.replies import Pending, ReplyQueue, small_response
from sink.responder import Reply

# A header section still incomplete after this many raw bytes is refused even
# before httptools hands us its pieces (bounds what the parser buffers).
RAW_HEAD_LIMIT = MAX_HEADER_BYTES + READ_BUFFER_SIZE


class HeaderTooLarge(Exception):
    """The request's header section is over the limit (431)."""


class SinkProtocol(ReadMemo, asyncio.BufferedProtocol):
    __slots__ = (
        "_auth",
        "_body_since",
        "_bytes_came",
        "_ctx",
        "_ended",
        "_expect_continue",
        "_fast",
        "_fast_url",
        "_head_bytes",
        "_head_raw",
        "_head_started",
        "_idle_mark",
        "_idle_since",
        "_in_head",
        "_in_message",
        "_log",
        "_loop",
        "_memo",
        "_memo_body",
        "_memo_len",
        "_memo_url",
        "_memo_used",
        "_memo_wait",
        "_parser",
        "_plain",
        "_read_buffer",
        "_read_view",
        "_replies",
        "_responder",
        "_stats",
        "_transport",
        "_url",
        "get_buffer",
        "on_message_begin",
    )

    def __init__(self, ctx: SinkContext, loop: asyncio.AbstractEventLoop) -> None:
        # Shared, server-wide state.
        self._ctx = ctx
        self._loop = loop
        self._stats = ctx.stats
        self._responder = ctx.responder
        self._log = ctx.access_log is not None
        self._read_buffer = ctx.read_buffer
        self._read_view = ctx.read_view
        # Not a method: uvloop calls get_buffer once per read, and a C-level
        # callable saves a Python frame on every one.
        self.get_buffer = ctx.get_buffer
        # Prebuilt whole responses by URL, for fixed mode without an access log.
        self._fast = ctx.fast if ctx.config.mode is Mode.fixed and not self._log else None

        # Per-connection state.
        self._transport: asyncio.Transport | None = None
        self._replies: ReplyQueue | None = None
        # Non-empty exactly when the parser stands between two messages with
        # nothing of the next one consumed: each completed message puts a mark
        # in, each message's first byte (httptools' on_message_begin, here a
        # C-level callable: no Python frame) takes them out.
        self._ended: list[bool] = [True]
        self.on_message_begin = self._ended.clear
        self._parser = httptools.HttpRequestParser(self)
        # The last request read whole in one read and answered from the fast
        # path: the same bytes again are answered without parsing them (see
        # buffer_updated). Its length is -1 until there is one.
        self._memo_reset()
        self._memo_url = b""
        self._memo_body = 0
        self._fast_url: bytes | None = None  # set by the fast path, for the memo

        # Per-request state.
        self._in_message = False
        self._in_head = False
        self._url = b""
        self._auth: list[bytes] | None = None
        self._expect_continue = False
        self._plain = True  # no Authorization, Expect or Connection header
        self._head_bytes = 0
        self._head_raw = 0
        # Timeouts (checked by the server's once-a-second sweep): when the
        # request being read began; whether bytes came since the last sweep
        # (one store a read, no clock read) and so since when its body has had
        # none; since when nothing has happened.
        self._head_started = ctx.clock
        self._bytes_came = False
        self._body_since = ctx.clock
        self._idle_mark = 0.0
        self._idle_since: float | None = None

    # -- asyncio callbacks ---------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]
        sock = transport.get_extra_info("socket")
        fd = None
        secure = transport.get_extra_info("ssl_object") is not None
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            tcp.tune(sock, self._ctx.accept_congestion)
            if not secure:  # sendfile(2) writes to the socket itself: not under TLS
                fd = sock.fileno()
        self._replies = ReplyQueue(self._ctx, self._loop, transport, fd)
        tls.bound_buffers(transport)  # after ReplyQueue's own write limits
        stats = self._stats
        stats.accepted += 1
        stats.open += 1
        self._ctx.connections.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self._stats.open -= 1
        self._ctx.connections.discard(self)
        self._replies.lost()

    def buffer_updated(self, nbytes: int) -> None:
        stats = self._stats
        stats.bytes_in += nbytes
        # A load generator sends the same request again and again: when this
        # read is exactly the last one memoised, between two messages, parsing
        # it would end in the fast path with the same URL, so answer as that
        # would, without the parse. Any other bytes take the parser.
        if (
            nbytes == self._memo_len
            and self._ended
            and self._read_buffer.startswith(self._memo)
            and self._replies.ready
        ):
            data = self._fast.get(self._memo_url)
            if data is not None:
                stats.requests += 1
                stats.responses += 1
                stats.body_bytes_in += self._memo_body
                stats.bytes_out += len(data)
                stats.memo_hits += 1
                self._head_started = self._ctx.clock
                self._memo_used = True
                self._transport.write(data)
                return
        if self._replies.reading_done:
            return
        self._bytes_came = True
        was_in_head = self._in_head
        at_boundary = bool(self._ended)
        requests = stats.requests
        body_bytes = stats.body_bytes_in
        try:
            self._parser.feed_data(self._read_view[:nbytes])
        except httptools.HttpParserUpgrade:
            # No protocol switching here: answer what was asked, then close.
            self._replies.stop_reading()
            if self._in_message:
                self._refuse(400, bodies.ERR_BAD_REQUEST)
            else:
                self._replies.close_when_done()
            return
        except httptools.HttpParserError:
            # httptools wraps what our callbacks raise: tell 431 by the count.
            if self._head_bytes > MAX_HEADER_BYTES:
                self._refuse(431, bodies.ERR_HEADERS_TOO_LARGE)
            else:
                self._refuse(400, bodies.ERR_BAD_REQUEST)
            return
        url = self._fast_url
        if url is not None:
            self._fast_url = None
            # One whole message, from a boundary to a boundary, answered by
            # the fast path: memoise it (unless it already is).
            if self._memo_wait:
                self._memo_wait -= 1
            elif (
                at_boundary
                and self._ended
                and stats.requests == requests + 1
                and nbytes <= MEMO_MAX
                and self._ctx.config.memo
            ):
                self._memoise(nbytes, url, stats.body_bytes_in - body_bytes)
        if self._expect_continue:
            self._send_continue()
        if self._in_head and was_in_head:
            self._head_raw += nbytes
            if self._head_raw > RAW_HEAD_LIMIT:
                self._refuse(431, bodies.ERR_HEADERS_TOO_LARGE)

    def _memoise(self, nbytes: int, url: bytes, body_bytes: int) -> None:
        if self._memo_take(self._read_buffer, self._read_view, nbytes):
            self._memo_url = url
            self._memo_body = body_bytes

    def eof_received(self) -> bool:
        # Half-close from the client: finish the replies it is owed, then close.
        self._replies.stop_reading()
        self._replies.close_when_done()
        return True

    def pause_writing(self) -> None:
        self._replies.pause_writing()

    def resume_writing(self) -> None:
        self._replies.resume_writing()

    # -- httptools callbacks -------------------------------------------------
    # Hot path: httptools skips callbacks we do not define, so there is no
    # Python on_message_begin (the URL always comes first and starts a
    # request; the C-level one only keeps _ended) and no on_headers_complete
    # (the first body piece, or the end of the message, ends the head);
    # per-request state is reset at the end.

    def on_url(self, url: bytes) -> None:
        if self._in_message:
            self._url += url
        else:
            self._in_message = True
            self._in_head = True
            self._url = url
            self._head_started = self._ctx.clock
        self._head_bytes += len(url)
        if self._head_bytes > MAX_HEADER_BYTES:
            raise HeaderTooLarge

    def on_header(self, name: bytes, value: bytes) -> None:
        size = self._head_bytes + len(name) + len(value) + 4
        self._head_bytes = size
        if size > MAX_HEADER_BYTES:
            raise HeaderTooLarge
        n = len(name)
        if n == 13 or n == 6 or n == 10:
            self._special_header(name.lower(), value)

    def _special_header(self, name: bytes, value: bytes) -> None:
        if name == b"authorization":
            self._plain = False
            if self._auth is None:
                self._auth = [value]
            else:
                self._auth.append(value)
        elif name == b"expect":
            self._plain = False
            if value.lower() == b"100-continue":
                self._expect_continue = True
        elif name == b"connection":
            self._plain = False

    def on_body(self, body: bytes) -> None:
        self._in_head = False
        self._stats.body_bytes_in += len(body)

    def on_message_complete(self) -> None:
        self._ended.append(True)
        self._in_message = False
        self._in_head = False
        self._head_raw = 0
        self._head_bytes = 0
        stats = self._stats
        stats.requests += 1
        fast = self._fast
        if fast is not None and self._plain and self._replies.ready:
            parser = self._parser
            # No Connection header and keep-alive: HTTP/1.1, the common case.
            if parser.should_keep_alive() and parser.get_method() != b"HEAD":
                data = fast.get(self._url)
                if data is not None:
                    stats.bytes_out += len(data)
                    stats.responses += 1
                    self._fast_url = self._url
                    self._transport.write(data)
                    return
        self._complete_slow()

    # -- everything but the fast path ----------------------------------------

    def _send_continue(self) -> None:
        # RFC 9110 10.1.1: tell the client to go ahead with its body; only
        # when no earlier reply is owed, or the 100 would jump the queue.
        self._expect_continue = False
        if self._in_message and self._ctx.config.mode is not Mode.timeout and self._replies.ready:
            self._replies.write(bodies.CONTINUE_100)

    def _complete_slow(self) -> None:
        url = self._url
        auth = self._auth
        plain = self._plain
        self._auth = None
        self._expect_continue = False
        self._plain = True
        reply = self._responder.reply(url, auth)
        replies = self._replies
        if reply is None or replies.closed:
            return  # timeout mode: read everything, answer nothing
        parser = self._parser
        method = parser.get_method()
        pending = Pending(
            reply,
            parser.should_keep_alive() and reply.status >= 200 and not replies.closing,
            parser.get_http_version() == "1.0",
            method == b"HEAD",
            method,
            url,
            time.monotonic() if self._log else 0.0,
        )
        data = None
        if replies.ready and not reply.delay_ms:
            data = small_response(self._ctx, pending)
            if (
                data is not None
                and self._fast is not None
                and plain
                and pending.keep_alive
                and not pending.http10
                and not pending.head_only
            ):
                self._ctx.remember_fast(url, data)
        replies.submit(pending, data)

    def _refuse(self, status: int, body: bytes, count: bool = True) -> None:
        """Answer a request we cannot parse (after the ones before it), then close."""
        if count:
            self._stats.bad_requests += 1
        self._replies.stop_reading()
        self._in_message = False
        self._in_head = False
        self._head_bytes = 0
        reply = Reply(status, body, len(body), 0, False)
        self._replies.submit(Pending(reply, False, False, False, b"-", b"-", time.monotonic()))

    # -- server control ------------------------------------------------------

    def sweep(
        self, now: float, header_timeout: float, body_timeout: float, idle_timeout: float | None
    ) -> None:
        """Once a second: close a connection whose request head is too slow to
        arrive, or whose body has had no byte for ``body_timeout`` (408 first),
        or that has done nothing for ``idle_timeout`` (None: never)."""
        replies = self._replies
        if replies.closed or replies.reading_done:
            return
        came = self._bytes_came
        self._bytes_came = False
        if self._in_head:
            if replies.read_paused:
                # We stopped reading (the client reads none of its answers): the
                # head waits on us, not on a slow client. Its clock starts again.
                self._head_started = now
                return
            if now - self._head_started > header_timeout:
                self._stats.timed_out += 1
                self._refuse(408, bodies.ERR_REQUEST_TIMEOUT, count=False)
            return
        if self._in_message:
            # The body: its clock starts again when bytes came since the last
            # look, or when we stopped reading (the wait is then on us).
            self._idle_since = None
            if came or replies.read_paused:
                self._body_since = now
            elif now - self._body_since > body_timeout:
                self._stats.timed_out += 1
                self._refuse(408, bodies.ERR_REQUEST_TIMEOUT, count=False)
            return
        if idle_timeout is None or not replies.idle:
            self._idle_since = None
            return
        if self._idle_since is None or self._idle_mark != self._head_started:
            # Idle now, or a request came and went since the last look.
            self._idle_since = now
            self._idle_mark = self._head_started
            return
        if now - self._idle_since > idle_timeout:
            self._stats.timed_out += 1
            replies.close()

    def shutdown(self) -> None:
        """Close now if idle; otherwise after the replies already owed."""
        replies = self._replies
        if self._in_message:
            replies.close_when_done(request_arriving=True)
            return
        replies.stop_reading()
        if replies.idle:
            replies.close()
        else:
            replies.close_when_done()

    def abort(self) -> None:
        self._replies.abort()

"""The replies one chansink connection owes, written in request order.

Pipelined requests queue here; a delayed reply holds the line on a timer
without blocking other connections; large bodies are pumped from the filler
(``os.sendfile`` from an in-memory file, or slices of one buffer) only while
the transport takes more; a long queue stops reading from the client.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections import deque

from common import bodies
from sink.context import SinkContext
from sink.responder import Reply

# Pipelined requests waiting for their turn; past HIGH we stop reading.
QUEUE_HIGH = 64
QUEUE_LOW = 16


class Pending:
    """One parsed request waiting for (or in the middle of) its response."""

    __slots__ = ("head_only", "http10", "keep_alive", "method", "reply", "started", "url")

    def __init__(
        self,
        reply: Reply,
        keep_alive: bool,
        http10: bool,
        head_only: bool,
        method: bytes,
        url: bytes,
        started: float,
    ) -> None:
        self.reply = reply
        self.keep_alive = keep_alive
        self.http10 = http10
        self.head_only = head_only
        self.method = method
        self.url = url
        self.started = started


def small_response(ctx: SinkContext, pending: Pending) -> bytes | None:
    """The whole response when its body is small (or absent), else None."""
    reply = pending.reply
    status = reply.status
    if reply.body is not None or reply.size <= bodies.SMALL_BODY_MAX or bodies.has_no_body(status):
        return ctx.small_response(
            status,
            reply.body,
            reply.size,
            pending.keep_alive,
            pending.http10,
            pending.head_only,
            reply.chunked,
        )
    return None


class ReplyQueue:
    __slots__ = (
        "_body_chunked",
        "_body_left",
        "_busy",
        "_ctx",
        "_fd",
        "_filler_fd",
        "_loop",
        "_queue",
        "_read_paused",
        "_stats",
        "_transport",
        "_write_paused",
        "closed",
        "closing",
        "reading_done",
        "ready",
    )

    def __init__(
        self,
        ctx: SinkContext,
        loop: asyncio.AbstractEventLoop,
        transport: asyncio.Transport,
        fd: int | None,
    ) -> None:
        self._ctx = ctx
        self._loop = loop
        self._stats = ctx.stats
        self._transport = transport
        self._fd = fd
        # sendfile(2) needs a real socket; anything else gets copies.
        self._filler_fd = ctx.filler_fd if fd is not None else None
        self._queue: deque[Pending] = deque()
        # A TimerHandle while a delayed reply waits, the Pending whose body is
        # streaming, or None when the next reply can be written.
        self._busy: asyncio.TimerHandle | Pending | None = None
        self._body_left = 0
        self._body_chunked = False
        self._write_paused = False
        self._read_paused = False
        self.closing = False  # answer what is queued, then close
        self.closed = False
        self.reading_done = False  # a parse error, upgrade or EOF: read no more
        # True when a reply could be written this instant: the fast path's test.
        self.ready = True
        # Resume only once everything is out, so a sendfile body never
        # overtakes bytes still queued in the transport.
        transport.set_write_buffer_limits(high=64 * 1024, low=0)

    def _refresh(self) -> None:
        self.ready = (
            self._busy is None
            and not self._queue
            and not self._write_paused
            and not self.closing
            and not self.closed
        )

    @property
    def idle(self) -> bool:
        """Nothing owed: no reply queued, waiting or streaming."""
        return self._busy is None and not self._queue

    @property
    def read_paused(self) -> bool:
        """Reading is paused by us: replies owed pile up (the client reads none)."""
        return self._read_paused

    # -- what the protocol calls -----------------------------------------------

    def write(self, data: bytes | memoryview) -> None:
        self._stats.bytes_out += len(data)
        self._transport.write(data)

    def submit(self, pending: Pending, data: bytes | None = None) -> None:
        """Owe ``pending``'s reply; ``data`` is the whole response when prebuilt."""
        if self.ready and not pending.reply.delay_ms:
            if data is not None:
                self.write(data)
                self._finish(pending)
            elif self._start(pending):
                self._finish(pending)
            self._refresh()
            return
        self._queue.append(pending)
        if len(self._queue) >= QUEUE_HIGH and not self._read_paused:
            self._read_paused = True
            self._transport.pause_reading()
        self._advance()

    def close_when_done(self, request_arriving: bool = False) -> None:
        """Close once every reply owed has been written.

        ``request_arriving``: a request is half read; wait for it and its
        reply too, rather than closing now because nothing is owed yet.
        """
        self.closing = True
        if request_arriving:
            self._refresh()
        else:
            self._advance()

    def stop_reading(self) -> None:
        if not self.reading_done:
            self.reading_done = True
            if not self.closed and not self._read_paused:
                self._transport.pause_reading()

    def pause_writing(self) -> None:
        self._write_paused = True
        self.ready = False

    def resume_writing(self) -> None:
        self._write_paused = False
        busy = self._busy
        if isinstance(busy, Pending) and self._pump():
            self._finish(busy)
        self._advance()

    def lost(self) -> None:
        self.closed = True
        self.ready = False
        if isinstance(self._busy, asyncio.TimerHandle):
            self._busy.cancel()
        self._busy = None
        self._queue.clear()

    def close(self) -> None:
        if not self.closed:
            self.lost()
            self._transport.close()

    def abort(self) -> None:
        if not self.closed:
            self.lost()
            self._transport.abort()

    # -- writing -------------------------------------------------------------

    def _start(self, pending: Pending) -> bool:
        """Start writing ``pending``'s response; True when it is all written."""
        data = small_response(self._ctx, pending)
        if data is not None:
            self.write(data)
            return True
        reply = pending.reply
        chunked = reply.chunked and not pending.http10
        self.write(
            self._ctx.large_head(
                reply.status, reply.size, pending.keep_alive, pending.http10, chunked
            )
        )
        if pending.head_only:
            return True
        self._body_left = reply.size
        self._body_chunked = chunked
        self._busy = pending
        return self._pump()

    def _pump(self) -> bool:
        """Write filler while the transport takes it; True when the body is done."""
        if self._filler_fd is not None and not self._body_chunked:
            left = self._pump_sendfile(self._body_left)
        else:
            left = self._pump_copy(self._body_left)
        self._body_left = left
        if left or self.closed:
            return False
        if self._body_chunked:
            self.write(bodies.CHUNKED_END)
        self._busy = None
        return True

    def _pump_sendfile(self, left: int) -> int:
        transport = self._transport
        fd = self._fd
        src = self._filler_fd
        size = bodies.SENDFILE_FILLER_SIZE
        view = bodies.FILLER_VIEW
        step = bodies.FILLER_CHUNK
        stats = self._stats
        while left and not self._write_paused and not self.closed:
            if not transport.get_write_buffer_size():
                # Nothing queued in the transport, so writing to the socket
                # directly keeps the byte order.
                try:
                    n = os.sendfile(fd, src, 0, left if left < size else size)
                except BlockingIOError:
                    n = 0
                except OSError:  # reset by the peer: the transport reports it
                    self.abort()
                    return left
                if n > 0:
                    left -= n
                    stats.bytes_out += n
                    continue
            # The socket is full (or the transport holds bytes that go
            # first): hand it one slice; it flushes in order, pauses us when
            # over the high-water mark and resumes us once drained.
            n = step if left > step else left
            self.write(view[:n])
            left -= n
        return left

    def _pump_copy(self, left: int) -> int:
        view = bodies.FILLER_VIEW
        step = bodies.FILLER_CHUNK
        while left and not self._write_paused and not self.closed:
            n = step if left >= step else left
            if self._body_chunked:
                self.write(b"%x\r\n" % n)
                self.write(view[:n])
                self.write(b"\r\n")
            else:
                self.write(view if n == step else view[:n])
            left -= n
        return left

    def _finish(self, pending: Pending) -> None:
        self._stats.responses += 1
        ctx = self._ctx
        if ctx.access_log is not None:
            ctx.log_access(pending.method, pending.url, pending.reply.status, pending.started)
        if not pending.keep_alive:
            self.close()

    def _advance(self) -> None:
        """Start queued replies in order while nothing holds the line."""
        queue = self._queue
        while self._busy is None and not self._write_paused and not self.closed:
            if not queue:
                if self.closing:
                    self.close()
                break
            pending = queue.popleft()
            if pending.reply.delay_ms:
                delay = pending.reply.delay_ms / 1000
                pending.reply.delay_ms = 0
                queue.appendleft(pending)
                deadline = time.monotonic() + delay
                self._busy = self._loop.call_later(delay, self._delay_elapsed, deadline)
                break
            if self._start(pending):
                self._finish(pending)
        if self._read_paused and len(queue) <= QUEUE_LOW and not self.closed:
            self._read_paused = False
            if not self.reading_done:
                self._transport.resume_reading()
        self._refresh()

    def _delay_elapsed(self, deadline: float) -> None:
        # libuv timers count from the time cached at the start of the loop
        # iteration, in whole milliseconds, so they can fire a little early:
        # a delay is a promise of at least that long.
        remaining = deadline - time.monotonic()
        if remaining > 0:
            self._busy = self._loop.call_later(remaining, self._delay_elapsed, deadline)
            return
        self._busy = None
        self._advance()

"""State shared by every connection of one chansink server.

Only the event loop thread touches it, so plain counters suffice. It also
owns the caches of prebuilt responses, rebuilt once a second with the Date.
"""

from __future__ import annotations

import collections
import time
from typing import TextIO

from common import bodies
from sink.config import SinkConfig
from sink.responder import Responder

# One receive buffer for the whole server: uvloop fills it and we parse it
# before anything else can run, so connections can share it. Idle
# connections then cost no buffer at all, and the body bytes never go through
# a fresh per-read allocation of their own.
READ_BUFFER_SIZE = 256 * 1024
# Prebuilt responses kept per second; past this the cache starts over.
CACHE_LIMIT = 4096
# The fast path's URLs and responses together, in bytes; past this it starts
# over too. A URL may be 64 KiB, so 4,096 of them could hold 256 MiB of a
# sink that should weigh a few MiB. A load run asks for a handful of URLs;
# 4 MiB holds all 4,096 entries of a 100-byte URL and the default answer
# (383 bytes: a 256-byte body and its head) and over 3,000 of the largest
# (1,152 bytes: a 1024-byte body), and a miss costs one ordinary parse and build.
FAST_BYTES_LIMIT = 4 * 1024 * 1024


class SinkStats:
    __slots__ = (
        "accepted",
        "bad_requests",
        "body_bytes_in",
        "bytes_in",
        "bytes_out",
        "memo_hits",
        "open",
        "requests",
        "responses",
        "timed_out",
    )

    def __init__(self) -> None:
        self.accepted = 0
        self.open = 0
        self.requests = 0
        self.responses = 0
        self.bad_requests = 0
        self.bytes_in = 0
        self.body_bytes_in = 0
        self.bytes_out = 0
        self.timed_out = 0  # connections closed by --header-, --body- or --idle-timeout
        self.memo_hits = 0  # requests answered from the read memo, without a parse

    def as_dict(self) -> dict[str, int]:
        return {name: getattr(self, name) for name in self.__slots__}


class SinkContext:
    __slots__ = (
        "_cache",
        "_fast_bytes",
        "_head_cache",
        "accept_congestion",
        "access_log",
        "clock",
        "config",
        "connections",
        "date",
        "fast",
        "filler_fd",
        "get_buffer",
        "read_buffer",
        "read_view",
        "responder",
        "stats",
    )

    def __init__(
        self,
        config: SinkConfig,
        responder: Responder | None = None,
        access_log: TextIO | None = None,
    ) -> None:
        self.config = config
        self.responder = responder or Responder(config)
        self.stats = SinkStats()
        self.access_log = access_log
        self.connections: set = set()
        self.read_buffer = bytearray(READ_BUFFER_SIZE)
        self.read_view = memoryview(self.read_buffer)
        # get_buffer(sizehint) at C speed: a dict lookup whatever the hint.
        self.get_buffer = collections.defaultdict(lambda: self.read_buffer).__getitem__
        self._cache: dict[tuple, bytes] = {}
        self._head_cache: dict[tuple, bytes] = {}
        # URL -> whole response, for plain keep-alive HTTP/1.1 requests in fixed
        # mode; what its keys and values weigh together (remember_fast).
        self.fast: dict[bytes, bytes] = {}
        self._fast_bytes = 0
        self.filler_fd = bodies.filler_file() if config.sendfile else None
        # What --congestion still asks of each accepted connection once the
        # listening sockets have it (common/listening.py): "system", nothing, mostly.
        self.accept_congestion = config.congestion
        self.date = b""
        self.clock = time.monotonic()  # refreshed once a second: timeouts' coarse clock
        self.tick()

    def close(self) -> None:
        if self.filler_fd is not None:
            import os

            os.close(self.filler_fd)
            self.filler_fd = None

    def tick(self, now: float | None = None) -> None:
        """Refresh the Date header; prebuilt responses carry it, so drop them."""
        self.clock = time.monotonic()
        date = bodies.http_date(now)
        if date != self.date:
            self.date = date
            self._cache.clear()
            self._head_cache.clear()
            self.fast.clear()
            self._fast_bytes = 0

    def small_response(
        self,
        status: int,
        body: bytes | None,
        size: int,
        keep_alive: bool,
        http10: bool,
        head_only: bool,
        chunked: bool,
    ) -> bytes:
        """The whole response, head and body, for a body of at most 1024 bytes."""
        key = (status, body if body is not None else size, keep_alive, http10, head_only, chunked)
        data = self._cache.get(key)
        if data is None:
            if bodies.has_no_body(status):
                data = bodies.render_head(status, self.date, keep_alive=keep_alive, http10=http10)
            else:
                if body is None:
                    body = bodies.json_body(size)
                chunked = chunked and not http10 and len(body) > 0
                head = bodies.render_head(
                    status,
                    self.date,
                    content_type=bodies.JSON,
                    length=len(body),
                    chunked=chunked,
                    keep_alive=keep_alive,
                    http10=http10,
                )
                if head_only:
                    data = head
                elif chunked:
                    data = head + bodies.chunk_frame(body) + bodies.CHUNKED_END
                else:
                    data = head + body
            if len(self._cache) >= CACHE_LIMIT:
                self._cache.clear()
            self._cache[key] = data
        return data

    def remember_fast(self, url: bytes, data: bytes) -> None:
        """Answer ``url`` with ``data`` from the fast path; bounded in entries and
        in bytes here, where an entry is added, so lookups stay a dict get."""
        fast = self.fast
        old = fast.pop(url, None)
        if old is not None:
            self._fast_bytes -= len(url) + len(old)
        size = len(url) + len(data)
        if len(fast) >= CACHE_LIMIT or self._fast_bytes + size > FAST_BYTES_LIMIT:
            fast.clear()
            self._fast_bytes = 0
        fast[url] = data
        self._fast_bytes += size

    def large_head(
        self, status: int, size: int, keep_alive: bool, http10: bool, chunked: bool
    ) -> bytes:
        """The head of a response whose body is ``size`` (> 1024) filler bytes."""
        key = (status, size, keep_alive, http10, chunked)
        head = self._head_cache.get(key)
        if head is None:
            head = bodies.render_head(
                status,
                self.date,
                content_type=bodies.OCTET,
                length=size,
                chunked=chunked,
                keep_alive=keep_alive,
                http10=http10,
            )
            if len(self._head_cache) >= CACHE_LIMIT:
                self._head_cache.clear()
            self._head_cache[key] = head
        return head

    def log_access(self, method: bytes, url: bytes, status: int, started: float) -> None:
        """One line per request, in the seed's format."""
        if self.access_log is None:
            return
        now = time.time()
        elapsed_ms = int((time.monotonic() - started) * 1000)
        stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(now))
        micros = int((now % 1) * 1_000_000)
        q = url.find(b"?")
        path = (url if q < 0 else url[:q]).decode("latin-1")
        self.access_log.write(
            f"[{stamp}.{micros:06d}] {method.decode('latin-1')} {path}"
            f" -> {status} ({elapsed_ms}ms)\n"
        )

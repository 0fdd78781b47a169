"""The sink protocol with a fake transport: bytes in, bytes out, no sockets."""

from __future__ import annotations

import asyncio
import re

import pytest

from sink.config import MAX_HEADER_BYTES, Mode, SinkConfig
from sink.context import SinkContext
from sink.protocol import SinkProtocol


class FakeTransport:
    def __init__(self) -> None:
        self.out = bytearray()
        self.closed = False
        self.reading = True

    def write(self, data) -> None:
        assert not self.closed
        self.out += data

    def get_extra_info(self, name):
        return None

    def get_write_buffer_size(self) -> int:
        return 0

    def set_write_buffer_limits(self, high=None, low=None) -> None:
        pass

    def pause_reading(self) -> None:
        self.reading = False

    def resume_reading(self) -> None:
        self.reading = True

    def close(self) -> None:
        self.closed = True

    abort = close


@pytest.fixture
def loop():
    loop = asyncio.new_event_loop()
    yield loop
    loop.close()


def make(loop, **config):
    ctx = SinkContext(SinkConfig(**config))
    proto = SinkProtocol(ctx, loop)
    transport = FakeTransport()
    proto.connection_made(transport)
    return ctx, proto, transport


def feed(ctx, proto, data: bytes, step: int | None = None) -> None:
    step = step or len(data)
    for i in range(0, len(data), step):
        piece = data[i : i + step]
        buf = proto.get_buffer(len(piece))
        buf[: len(piece)] = piece
        proto.buffer_updated(len(piece))


def normalise(out: bytes) -> bytes:
    return re.sub(rb"date: [^\r]+", b"date: D", out)


REQUESTS = (
    b"POST /a?response_size=10 HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello"
    b"PUT /b?response_size=2000&chunked=1 HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
    b"3\r\nabc\r\n0\r\n\r\n"
    b"GET /c?status=404 HTTP/1.1\r\nHost: x\r\n\r\n"
    b"HEAD /d?response_size=3000 HTTP/1.1\r\nHost: x\r\n\r\n"
)


def test_same_bytes_out_whether_fed_at_once_or_byte_by_byte(loop):
    ctx1, p1, t1 = make(loop)
    feed(ctx1, p1, REQUESTS)
    ctx2, p2, t2 = make(loop)
    feed(ctx2, p2, REQUESTS, step=1)
    assert normalise(bytes(t1.out)) == normalise(bytes(t2.out))
    assert t1.out.count(b"HTTP/1.1 ") == 4
    assert ctx1.stats.requests == ctx2.stats.requests == 4
    assert ctx1.stats.body_bytes_in == ctx2.stats.body_bytes_in == 8


def test_fast_path_serves_the_same_bytes_as_the_slow_path(loop):
    ctx, proto, t = make(loop)
    req = b"GET /x HTTP/1.1\r\nHost: y\r\n\r\n"
    feed(ctx, proto, req)
    first = bytes(t.out)
    assert b"/x" in ctx.fast  # remembered for next time
    t.out.clear()
    feed(ctx, proto, req)
    assert bytes(t.out) == first
    assert ctx.stats.responses == 2


def test_no_fast_path_for_connection_header_or_http10(loop):
    ctx, proto, t = make(loop)
    feed(ctx, proto, b"GET /x HTTP/1.1\r\nHost: y\r\nConnection: close\r\n\r\n")
    assert b"connection: close" in t.out
    assert t.closed
    assert not ctx.fast


def test_timeout_mode_writes_nothing(loop):
    ctx, proto, t = make(loop, mode=Mode.timeout)
    feed(ctx, proto, REQUESTS, step=7)
    assert t.out == b""
    assert ctx.stats.requests == 4
    assert not t.closed


def test_header_limit_counts_names_values_and_url(loop):
    ctx, proto, t = make(loop)
    value = b"v" * (MAX_HEADER_BYTES - 100)
    feed(ctx, proto, b"GET / HTTP/1.1\r\nA: " + value + b"\r\nB: " + b"w" * 200 + b"\r\n\r\n", 997)
    assert t.out.startswith(b"HTTP/1.1 431 ")
    assert t.closed
    ctx, proto, t = make(loop)
    feed(ctx, proto, b"GET / HTTP/1.1\r\nA: " + value + b"\r\n\r\n", 997)
    assert t.out.startswith(b"HTTP/1.1 200 ")


def test_bytes_after_a_parse_error_are_ignored(loop):
    ctx, proto, t = make(loop)
    feed(ctx, proto, b"BROKEN\r\n\r\nGET / HTTP/1.1\r\nHost: x\r\n\r\n")
    assert t.out.count(b"HTTP/1.1") == 1
    assert t.out.startswith(b"HTTP/1.1 400 ")
    assert not t.reading


def test_pipeline_backpressure_pauses_reading(loop):
    ctx, proto, t = make(loop)
    slow = b"GET /s?delay=10000 HTTP/1.1\r\nHost: x\r\n\r\n"
    feed(ctx, proto, slow * 70)
    assert not t.reading  # 69 answers are waiting behind the slow one
    assert t.out == b""
    proto.connection_lost(None)  # cancels the timer, drops the queue

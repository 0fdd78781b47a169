"""The sink protocol with a fake transport: bytes in, bytes out, no sockets."""

from __future__ import annotations

import asyncio
import re

import pytest

from sink.config import MAX_HEADER_BYTES, Mode, SinkConfig
from sink.context import FAST_BYTES_LIMIT, SinkContext
from sink.protocol import SinkProtocol
from tests.support import CountingParser


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


class CountingResponder:
    """The protocol's responder, counting the requests that reach it (not the fast path)."""

    def __init__(self, responder) -> None:
        self.responder = responder
        self.urls: list[bytes] = []

    def reply(self, url, auth):
        self.urls.append(url)
        return self.responder.reply(url, auth)


def test_the_fast_path_is_bounded_in_bytes_and_still_serves_hits(loop):
    ctx, proto, t = make(loop, memo=False)
    counting = proto._responder = CountingResponder(proto._responder)
    long_path = b"/" + b"u" * 60_000  # far under the 64 KiB head limit
    n = 2 * FAST_BYTES_LIMIT // len(long_path)  # twice what the bound holds
    heaviest = 0
    for i in range(n):
        feed(ctx, proto, b"GET %s?i=%d HTTP/1.1\r\nHost: y\r\n\r\n" % (long_path, i))
        heaviest = max(heaviest, sum(len(k) + len(v) for k, v in ctx.fast.items()))
    assert len(counting.urls) == n and t.out.count(b"HTTP/1.1 200 OK") == n
    # within the bound, and filled close to it before starting over
    assert FAST_BYTES_LIMIT - len(long_path) - 2048 <= heaviest <= FAST_BYTES_LIMIT
    last = b"GET %s?i=%d HTTP/1.1\r\nHost: y\r\n\r\n" % (long_path, n - 1)
    assert long_path + b"?i=%d" % (n - 1) in ctx.fast
    t.out.clear()
    feed(ctx, proto, last)
    assert len(counting.urls) == n  # a hit: answered from the fast path
    assert t.out.startswith(b"HTTP/1.1 200 OK") and ctx.stats.responses == n + 1


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


def sweeps(proto, start: float, seconds: int, body_timeout: float = 1.0) -> None:
    """The server's once-a-second sweep, ``seconds`` times from ``start``."""
    for i in range(1, seconds + 1):
        proto.sweep(start + i, 10.0, body_timeout, 75.0)


HALF_BODY = b"POST /up HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nabcde"


def test_a_stalled_body_gets_408_after_the_body_timeout_and_not_before(loop):
    ctx, proto, t = make(loop)
    feed(ctx, proto, HALF_BODY)
    start = ctx.clock
    sweeps(proto, start, 2, body_timeout=2.5)  # the first sweep sees the bytes: 1 s of silence
    assert ctx.stats.timed_out == 0 and not t.closed
    feed(ctx, proto, b"fg")  # a byte: its clock starts again
    sweeps(proto, start + 2, 3, body_timeout=2.5)  # 2 s of silence since the sweep that saw it
    assert ctx.stats.timed_out == 0 and not t.closed
    sweeps(proto, start + 5, 1, body_timeout=2.5)
    assert ctx.stats.timed_out == 1
    assert t.out.startswith(b"HTTP/1.1 408 Request Timeout\r\n") and t.closed


def test_a_body_waiting_on_our_paused_reading_does_not_time_out(loop):
    # 64 answers owed behind a slow one: reading paused, with a body half read.
    held = b"GET /s?delay=60000 HTTP/1.1\r\nHost: x\r\n\r\n" * 64
    ctx, proto, t = make(loop)
    feed(ctx, proto, held + HALF_BODY)
    assert not t.reading
    sweeps(proto, ctx.clock, 10)
    assert ctx.stats.timed_out == 0 and not t.closed
    # the same body on a connection that is read: 408 (queued behind the slow one)
    ctx, other, t = make(loop)
    feed(ctx, other, held[: len(held) // 64] + HALF_BODY)
    assert t.reading
    sweeps(other, ctx.clock, 10)
    assert ctx.stats.timed_out == 1
    for p in (proto, other):
        p.connection_lost(None)  # cancels the timers


# -- the memo: a request repeated byte for byte is answered without a parse ---


def counting(proto) -> CountingParser:
    proto._parser = CountingParser(proto._parser)
    return proto._parser


GET_X = b"GET /x HTTP/1.1\r\nHost: y\r\n\r\n"
POST_X = b"POST /x HTTP/1.1\r\nHost: y\r\nContent-Length: 5\r\n\r\nhello"


@pytest.mark.parametrize("request_bytes", [GET_X, POST_X], ids=["get", "post"])
def test_a_repeated_request_is_answered_as_the_parser_would(loop, request_bytes):
    ctx, proto, t = make(loop)
    parser = counting(proto)
    for _ in range(5):
        feed(ctx, proto, request_bytes)
    # Parsed: the first (slow path, builds the response) and the second (fast
    # path, memoised); the other three come from the memo.
    assert parser.feeds == 2
    responses = bytes(t.out).split(b"HTTP/1.1 200 OK")
    assert len(responses) == 6
    assert len(set(responses[1:])) == 1  # five identical responses
    stats = ctx.stats
    assert stats.requests == stats.responses == 5
    assert stats.bytes_in == 5 * len(request_bytes)
    assert stats.body_bytes_in == (25 if request_bytes == POST_X else 0)
    assert stats.bytes_out == len(t.out)


def test_the_memo_only_answers_between_messages(loop):
    # "GE" after a request is the start of the next one: the same bytes as the
    # memo then make "GEGET ...", a bad request, not a second GET.
    ctx, proto, t = make(loop)
    feed(ctx, proto, GET_X)
    feed(ctx, proto, GET_X)
    feed(ctx, proto, GET_X + b"GE")
    feed(ctx, proto, GET_X)
    assert t.out.count(b"HTTP/1.1 200 ") == 3
    assert t.out.rfind(b"HTTP/1.1 400 ") > t.out.rfind(b"HTTP/1.1 200 ")
    assert t.closed
    assert ctx.stats.requests == 3


def test_a_read_that_starts_inside_a_request_is_not_memoised(loop):
    # The second half of a request is not a request: sent again on its own
    # it must be parsed, and refused.
    ctx, proto, t = make(loop)
    head, tail = GET_X[:20], GET_X[20:]
    feed(ctx, proto, GET_X)
    feed(ctx, proto, head)
    feed(ctx, proto, tail)
    feed(ctx, proto, tail)
    assert t.out.count(b"HTTP/1.1 200 ") == 2
    assert b"HTTP/1.1 400 " in t.out
    assert ctx.stats.requests == 2


def test_pipelined_requests_are_each_parsed(loop):
    ctx, proto, t = make(loop)
    parser = counting(proto)
    for _ in range(3):
        feed(ctx, proto, GET_X * 2)
    assert parser.feeds == 3
    assert t.out.count(b"HTTP/1.1 200 ") == 6
    assert ctx.stats.requests == 6


def test_the_memo_follows_a_new_date_and_a_new_request(loop):
    ctx, proto, t = make(loop)
    parser = counting(proto)
    feed(ctx, proto, GET_X)
    feed(ctx, proto, GET_X)
    ctx.fast.clear()  # what the once-a-second Date refresh does
    feed(ctx, proto, GET_X)  # parsed again: slow path, response rebuilt
    feed(ctx, proto, GET_X)  # the memo again
    assert parser.feeds == 3
    other = b"GET /y?response_size=7 HTTP/1.1\r\nHost: y\r\n\r\n"
    for _ in range(3):
        feed(ctx, proto, other)
    assert parser.feeds == 5
    assert t.out.count(b"content-length: 7\r\n") == 3
    assert ctx.stats.requests == ctx.stats.responses == 7


def test_the_memo_waits_its_turn_behind_a_delayed_reply(loop):
    ctx, proto, t = make(loop)
    feed(ctx, proto, GET_X)
    feed(ctx, proto, GET_X)
    before = len(t.out)
    feed(ctx, proto, b"GET /slow?delay=30&status=201 HTTP/1.1\r\nHost: y\r\n\r\n")
    feed(ctx, proto, GET_X)
    assert len(t.out) == before  # nothing may overtake the delayed reply
    loop.run_until_complete(asyncio.sleep(0.2))
    rest = bytes(t.out[before:])
    assert rest.index(b"HTTP/1.1 201 ") < rest.index(b"HTTP/1.1 200 ")
    assert ctx.stats.responses == 4


def test_requests_that_always_differ_are_answered_and_counted(loop):
    ctx, proto, t = make(loop)
    for i in range(200):
        feed(ctx, proto, b"GET /x HTTP/1.1\r\nHost: y\r\nX-Id: %d\r\n\r\n" % i)
    assert ctx.stats.requests == ctx.stats.responses == 200
    assert t.out.count(b"HTTP/1.1 200 ") == 200


def test_no_memo_with_an_access_log_or_outside_fixed_mode(loop):
    import io

    for ctx in (
        SinkContext(SinkConfig(), access_log=io.StringIO()),
        SinkContext(SinkConfig(mode=Mode.auth)),
    ):
        proto = SinkProtocol(ctx, loop)
        t = FakeTransport()
        proto.connection_made(t)
        parser = counting(proto)
        for _ in range(4):
            feed(ctx, proto, GET_X)
        assert parser.feeds == 4
        assert ctx.stats.requests == 4
        if ctx.access_log is not None:
            assert ctx.access_log.getvalue().count("GET /x") == 4


def test_a_read_that_ends_inside_the_next_request_is_not_memoised(loop):
    # Each "GET /x ...GE" read is answered and leaves "GE" in the parser for
    # the "T /x ..." that follows: memoised, the "GE" would be lost.
    ctx, proto, t = make(loop)
    feed(ctx, proto, GET_X)
    for _ in range(3):
        feed(ctx, proto, GET_X + b"GE")
        feed(ctx, proto, GET_X[2:])
    assert t.out.count(b"HTTP/1.1 200 ") == 7
    assert b" 400 " not in t.out
    assert ctx.stats.requests == 7

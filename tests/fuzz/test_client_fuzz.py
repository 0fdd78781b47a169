"""Property-based fuzzing of chanload's client with malformed responses, over real sockets.

Hypothesis builds a response (a status line, headers, a plain or chunked
body, each part valid or broken: bad numbers, NULs, CR/LF in the wrong place,
wrong lengths, raw garbage), cuts it into pieces, and a server on 127.0.0.1
writes them one by one to a connection of the real client (the same
connection classes `chanload run` uses, both parsers), then closes, resets or
holds the connection. For every case:

- no exception escapes into the event loop (none unhandled);
- the request ends (response, error or timeout) within the timeout plus a
  margin: no hang, and nothing stays counted as in flight;
- it ends once: at most one response, and an error when there is none.

``CHANLOAD_FUZZ_CASES`` sets the number of cases per parser (default 2500:
5,000 in all); ``make reliability`` runs more and reports the figures.
"""

from __future__ import annotations

import asyncio
import os
import socket
import struct
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from common import eventloop
from engine.config import HttpUrl
from engine.http.client import CONNECTIONS, VU, build_specs
from engine.http.pool import Pool
from engine.measure.metrics import Recorder
from tests.fuzz import tally

CASES = int(os.environ.get("CHANLOAD_FUZZ_CASES", "2500"))
TIMEOUT = 0.05  # seconds: the client's per-request timeout in these cases
HANG = TIMEOUT + 2.0  # longer than this to end a request is a hang

# -- the responses ------------------------------------------------------------

CRLF = b"\r\n"
tokens = st.sampled_from(
    [b"OK", b"", b"Not Found", b"\x00", b"\xff\xfe", b"a\rb", b"a\nb", b" ", b"\t", b"x" * 300]
)
status_line = st.one_of(
    st.builds(
        lambda v, code, reason: v + b" " + code + b" " + reason,
        st.sampled_from([b"HTTP/1.1", b"HTTP/1.0", b"HTTP/2.0", b"HTTP/1.1 ", b"HTTX/1.1", b""]),
        st.one_of(
            st.integers(0, 1200).map(lambda n: str(n).encode()),
            st.sampled_from([b"2x0", b"-200", b"", b"20", b"2000", b"\x00\x00\x00"]),
        ),
        tokens,
    ),
    st.binary(max_size=60),
)
numbers = st.one_of(
    st.integers(-5, 3000).map(lambda n: str(n).encode()),
    st.sampled_from([b"", b"abc", b"1e3", b"0x10", b" 5", b"5, 5", b"99999999999999999999"]),
)
header = st.one_of(
    st.tuples(st.just(b"content-length"), numbers),
    st.tuples(
        st.just(b"transfer-encoding"),
        st.sampled_from([b"chunked", b"gzip", b"chunked, chunked", b"gzip, chunked", b"identity"]),
    ),
    st.tuples(st.just(b"connection"), st.sampled_from([b"close", b"keep-alive", b"upgrade"])),
    st.tuples(
        st.just(b"server-timing"),
        st.one_of(
            st.sampled_from([b"total;dur=1.5", b"a;dur=x", b"dur=", b";;;", b"b;dur=-1e308"]),
            st.binary(max_size=40),
        ),
    ),
    st.tuples(st.binary(min_size=0, max_size=20), st.binary(max_size=60)),
)


@st.composite
def chunked_body(draw) -> bytes:
    out = b""
    for _ in range(draw(st.integers(0, 4))):
        data = draw(st.binary(max_size=200))
        size = draw(
            st.one_of(
                st.just(f"{len(data):x}".encode()),
                st.integers(0, 0x10000).map(lambda n: f"{n:x}".encode()),
                st.sampled_from([b"zz", b"", b"-1", b"ffffffffffffffffffff", b"1;ext=1"]),
            )
        )
        out += size + CRLF + data + draw(st.sampled_from([CRLF, b"", b"\n", b"xx"]))
    if draw(st.booleans()):
        out += b"0" + CRLF + draw(st.sampled_from([b"", b"trailer: 1\r\n"])) + CRLF
    return out


@st.composite
def well_formed(draw) -> bytes:
    """A response that is valid, or nearly: lengths right or off by a little, 1xx first."""
    out = b""
    if draw(st.integers(0, 5)) == 0:
        out += b"HTTP/1.1 100 Continue\r\n\r\n"
    code = draw(st.sampled_from([200, 201, 204, 301, 304, 400, 404, 413, 500, 503, 599]))
    body = draw(st.binary(max_size=300))
    head = b"HTTP/1.1 %d OK\r\n" % code
    framing = draw(st.sampled_from(["length", "length", "chunked", "close"]))
    if framing == "length":
        off = draw(st.sampled_from([0, 0, 0, -1, 1, 5]))
        head += b"content-length: %d\r\n" % max(0, len(body) + off)
    elif framing == "chunked":
        head += b"transfer-encoding: chunked\r\n"
        body = (b"%x\r\n%s\r\n" % (len(body), body) if body else b"") + b"0\r\n\r\n"
    if draw(st.booleans()):
        head += b"server-timing: " + draw(st.sampled_from([b"total;dur=2.5", b"x;dur=?"])) + CRLF
    if draw(st.integers(0, 3)) == 0:
        head += b"connection: close\r\n"
    out += head + CRLF + body
    if draw(st.integers(0, 4)) == 0:
        out += draw(st.binary(max_size=50))  # bytes nobody asked for
    return out


@st.composite
def response(draw) -> bytes:
    kind = draw(st.integers(0, 9))
    if kind == 0:
        return draw(st.binary(min_size=1, max_size=400))  # pure garbage
    if kind <= 5:
        return draw(well_formed())
    head = draw(status_line) + CRLF
    for name, value in draw(st.lists(header, max_size=6)):
        head += name + b": " + value + draw(st.sampled_from([CRLF, CRLF, CRLF, b"\n", b"\r"]))
    head += draw(st.sampled_from([CRLF, CRLF, CRLF, b"", b"\n"]))
    body = draw(st.one_of(st.binary(max_size=500), chunked_body()))
    return head + body


@st.composite
def case(draw) -> tuple[list[bytes], str]:
    data = draw(response())
    cuts = sorted(set(draw(st.lists(st.integers(0, len(data)), max_size=6))))
    pieces, last = [], 0
    for cut in [*cuts, len(data)]:
        pieces.append(data[last:cut])
        last = cut
    end = draw(st.sampled_from(["close"] * 9 + ["reset"] * 4 + ["hold"]))
    return [p for p in pieces if p], end


# -- the server and one client connection, on one loop shared by all cases ----


class Harness:
    def __init__(self) -> None:
        self.loop = eventloop.new_event_loop()
        self.unhandled: list[dict] = []
        self.loop.set_exception_handler(lambda _loop, ctx: self.unhandled.append(ctx))
        self.script: tuple[list[bytes], str] = ([], "close")
        self.server = self.loop.run_until_complete(
            asyncio.start_server(self._serve, "127.0.0.1", 0)
        )
        self.port = self.server.sockets[0].getsockname()[1]
        self.url = HttpUrl("http", "127.0.0.1", self.port, "/fuzz")

    async def _serve(self, reader, writer) -> None:
        pieces, end = self.script
        try:
            await reader.readuntil(b"\r\n\r\n")
            for piece in pieces:
                writer.write(piece)
                await writer.drain()
                await asyncio.sleep(0)  # let the client read each piece on its own
            if end == "reset":
                sock = writer.get_extra_info("socket")
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            elif end == "hold":
                await reader.read()  # until the client gives up and closes
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    async def exchange(self, parser: str) -> Recorder:
        rec = Recorder()
        specs = build_specs(self.url, ("GET",), b"", frozenset())
        pool = Pool(self.loop, self.url, specs, rec, parser, TIMEOUT)
        pool.set_deadline(60)  # the sweep that enforces the timeout
        vu = VU(0)
        pool.vus.append(vu)
        _, conn = await self.loop.create_connection(
            lambda: CONNECTIONS[parser](vu, pool), "127.0.0.1", self.port
        )
        vu.conn = conn
        conn.send()  # one request; the VU is not running, so no second one
        started = time.monotonic()
        while pool.in_flight and time.monotonic() - started < HANG:
            await asyncio.sleep(0.001)
        hung = pool.in_flight
        await pool.close()
        await asyncio.sleep(0)  # connection_lost runs
        rec.fold()
        rec.hung = hung
        return rec

    def close(self) -> None:
        self.server.close()
        self.loop.run_until_complete(self.server.wait_closed())
        self.loop.close()


@pytest.fixture(scope="module")
def harness():
    h = Harness()
    yield h
    h.close()


@pytest.mark.parametrize("parser", ["httptools", "h11"])
def test_malformed_responses_never_crash_hang_or_double_count(harness, parser):
    seen = {"cases": 0, "responses": 0, "errors": 0, "hangs": 0, "crashes": 0}

    @settings(
        max_examples=CASES,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
        derandomize=False,
    )
    @given(case())
    def one(script):
        harness.script = script
        rec = harness.loop.run_until_complete(harness.exchange(parser))
        seen["cases"] += 1
        responses, errors = rec.responses, sum(rec.errors.values())
        seen["responses"] += responses
        seen["errors"] += bool(errors) and not responses
        seen["hangs"] += bool(rec.hung)
        seen["crashes"] += len(harness.unhandled)
        assert not harness.unhandled, harness.unhandled
        assert not rec.hung, f"still in flight after {HANG}s: {script!r}"
        assert responses <= 1, (rec.statuses, script)
        assert responses == 1 or errors >= 1, (rec.errors, script)

    one()
    seen["detail"] = (
        f"{seen['responses']:,} ended in a response, {seen['errors']:,} in a classified error"
    )
    tally.record(f"client fuzz ({parser})", seen)
    assert seen["cases"] >= CASES * 0.9  # hypothesis ran (nearly) every case asked for

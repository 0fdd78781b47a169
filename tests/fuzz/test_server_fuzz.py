"""Property-based fuzzing of chansink's and chanproxy's request path, over real sockets.

Hypothesis builds requests that are broken in every part (request line,
headers, Content-Length, chunk sizes, NULs, bare CR/LF, header sections over
the 64 KiB limit, pipelined garbage), sends them in pieces to a real server
process, half-closes, and reads until the server closes. For every case the
server must answer within a bound with a well-formed status line or close
without a word: no hang. At the end the server is still up, still answers a
good request, and its memory has not grown.

``CHANLOAD_SERVER_FUZZ_CASES`` sets the cases per server (default 1000 in the
test suite; ``make reliability`` runs 10,000).
"""

from __future__ import annotations

import os
import re
import socket
import time

import httpx
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.fuzz import tally
from tests.support import admin_token, rss_bytes

CASES = int(os.environ.get("CHANLOAD_SERVER_FUZZ_CASES", "1000"))
ANSWER_WITHIN = 3.0  # seconds for the server to answer or close after our half-close
RSS_GROWTH_MAX = 16 * 1024 * 1024
STATUS = re.compile(rb"HTTP/1\.[01] (\d{3}) ")

CRLF = b"\r\n"
# Paths never carry '=': no ?delay= or ?status= override makes a case slow or a 5xx.
path_text = st.text(
    alphabet=st.sampled_from([*"abc/._-~%?&#", "\x00", " ", "\x7f", "é"]), max_size=30
)
method = st.one_of(
    st.sampled_from([b"GET", b"POST", b"PUT", b"PATCH", b"DELETE", b"HEAD", b"OPTIONS"]),
    st.sampled_from([b"", b"G ET", b"get", b"\x00", b"CONNECT", b"PRI", b"X" * 40]),
    st.binary(max_size=8),
)
version = st.sampled_from([b"HTTP/1.1", b"HTTP/1.0", b"HTTP/2.0", b"HTTP/1.1 x", b"HTTP", b""])
numbers = st.one_of(
    st.integers(-3, 400).map(lambda n: str(n).encode()),
    st.sampled_from([b"", b"x", b"1 1", b"99999999999999999999999", b"+5", b"0x5"]),
)
header = st.one_of(
    st.tuples(st.just(b"host"), st.sampled_from([b"x", b"", b"a b", b"\x00"])),
    st.tuples(st.just(b"content-length"), numbers),
    st.tuples(
        st.just(b"transfer-encoding"),
        st.sampled_from([b"chunked", b"gzip", b"chunked, gzip", b"identity", b"\x00"]),
    ),
    st.tuples(st.just(b"connection"), st.sampled_from([b"close", b"keep-alive", b"upgrade"])),
    st.tuples(st.just(b"expect"), st.sampled_from([b"100-continue", b"nonsense"])),
    st.tuples(st.just(b"authorization"), st.sampled_from([b"Bearer test-api-key", b"x"])),
    st.tuples(st.just(b"x-huge"), st.integers(0, 70).map(lambda k: b"y" * (k * 1024))),
    st.tuples(st.binary(max_size=16), st.binary(max_size=40)),
)


@st.composite
def chunks(draw) -> bytes:
    out = b""
    for _ in range(draw(st.integers(0, 3))):
        data = draw(st.binary(max_size=100))
        size = draw(
            st.one_of(
                st.just(f"{len(data):x}".encode()),
                st.sampled_from([b"zz", b"", b"-1", b"fffffffffffffffffff", b"5;x=y"]),
            )
        )
        out += size + CRLF + data + draw(st.sampled_from([CRLF, b"", b"\n"]))
    if draw(st.booleans()):
        out += b"0" + CRLF + CRLF
    return out


@st.composite
def request(draw, channel_path: bytes) -> bytes:
    if draw(st.integers(0, 9)) == 0:
        return draw(st.binary(min_size=1, max_size=300))  # pure garbage
    target = draw(
        st.one_of(
            path_text.map(lambda t: ("/" + t).encode()),
            path_text.map(lambda t: channel_path + t.encode()),
            st.sampled_from([b"", b"*", b"http://x/", b"/\x00"]),
        )
    )
    line = draw(method) + b" " + target + b" " + draw(version)
    head = line + CRLF
    for name, value in draw(st.lists(header, max_size=5)):
        head += name + b": " + value + draw(st.sampled_from([CRLF, CRLF, b"\n", b"\r"]))
    head += draw(st.sampled_from([CRLF, CRLF, b"", b"\n"]))
    body = draw(st.one_of(st.binary(max_size=300), chunks()))
    more = draw(st.sampled_from([b"", b"", b"GET / HTTP/1.1\r\n\r\n", b"\x00garbage\r\n\r\n"]))
    return head + body + more


def exchange(port: int, data: bytes, pieces: list[int]) -> tuple[bytes, bool]:
    """Send ``data`` in pieces, half-close, read to EOF; (answer, answered in time)."""
    with socket.create_connection(("127.0.0.1", port), timeout=ANSWER_WITHIN) as s:
        last = 0
        try:
            for cut in [*pieces, len(data)]:
                if cut > last:
                    s.sendall(data[last:cut])
                    last = cut
            s.shutdown(socket.SHUT_WR)
        except OSError:
            pass  # the server already refused and closed (EPIPE, ECONNRESET, ENOTCONN): fine
        answer = b""
        deadline = time.monotonic() + ANSWER_WITHIN
        try:
            while time.monotonic() < deadline:
                got = s.recv(65536)
                if not got:
                    return answer, True
                answer += got
        except (ConnectionResetError, ConnectionAbortedError):
            return answer, True
        except TimeoutError:
            pass
        return answer, False


def fuzz(name: str, server, channel_path: bytes, good_url: str) -> None:
    port, pid = server.port, server.pid
    seen = {"cases": 0, "answered": 0, "closed_silently": 0, "hangs": 0, "crashes": 0}
    rss_before = rss_bytes(pid)

    @settings(
        max_examples=CASES,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(
        request(channel_path),
        st.lists(st.integers(0, 80_000), max_size=4).map(sorted),
    )
    def one(data, pieces):
        answer, in_time = exchange(port, data, pieces)
        seen["cases"] += 1
        seen["hangs"] += not in_time
        assert in_time, f"{name} neither answered nor closed within {ANSWER_WITHIN}s: {data!r}"
        if answer:
            seen["answered"] += 1
            assert STATUS.match(answer), f"{name} answered {answer[:80]!r} to {data[:200]!r}"
            status = int(STATUS.match(answer).group(1))
            assert status < 500 or status in (502, 504), (status, data[:200])
        else:
            seen["closed_silently"] += 1

    try:
        one()
    finally:
        alive = True
        try:
            r = httpx.get(good_url, timeout=5)
            assert r.status_code == 200
        except Exception:
            alive = False
        # an exception in a callback is logged, not fatal: it counts as a crash too
        logged = server.errors().count("Traceback")
        seen["crashes"] += (not alive) + logged
        growth = rss_bytes(pid) - rss_before
        seen["detail"] = (
            f"{seen['answered']:,} answered, {seen['closed_silently']:,} closed without a word;"
            f" RSS growth {growth / 1e6:+.1f} MB"
        )
        tally.record(f"request fuzz ({name})", seen)
    assert alive, f"{name} stopped answering after the fuzz"
    assert not logged, server.errors()[-3000:]
    assert growth < RSS_GROWTH_MAX, f"{name} grew {growth} bytes"
    assert seen["cases"] >= CASES * 0.9


def test_chansink_survives_malformed_requests(sink):
    fuzz("chansink", sink, b"/channels/", sink.url + "/ok")


def test_chanproxy_survives_malformed_requests(proxy_factory, sink):
    proxy = proxy_factory()
    base = f"http://127.0.0.1:{proxy.port}"
    r = httpx.post(
        base + "/_admin/channels",
        json={"name": "fuzz", "sink_url": sink.url},
        headers={"x-admin-token": admin_token(proxy)},
    )
    channel = r.json()["id"]
    path = f"/channels/{channel}/".encode()
    fuzz("chanproxy", proxy, path, f"{base}/channels/{channel}/ok")

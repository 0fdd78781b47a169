"""chansink's HTTP/1.1 behaviour: keep-alive, pipelining, uploads, bad input."""

from __future__ import annotations

import contextlib
import re
import shutil
import socket
import subprocess

import h11
import pytest

from tests.support import H11Client, raw_exchange


def test_keep_alive_reuses_one_connection(sink):
    with H11Client(sink.port) as c:
        for i in range(50):
            assert c.request(target=f"/k?response_size={i}").body.__len__() == i
    sink.stop()
    assert sink.summary["accepted"] == 1
    assert sink.summary["requests"] == sink.summary["responses"] == 50


def test_pipelined_requests_are_answered_in_order(sink):
    """Ten requests in one write, the early ones slow: answers still come in order."""
    sizes = [300, 5, 2000, 0, 70000, 1, 1024, 1025, 9, 42]
    delays = [400, 0, 150, 0, 0, 50, 0, 0, 0, 0]
    payload = b"".join(
        f"GET /p{i}?response_size={s}&delay={d} HTTP/1.1\r\nHost: x\r\n\r\n".encode()
        for i, (s, d) in enumerate(zip(sizes, delays, strict=True))
    )
    conn = h11.Connection(h11.CLIENT)
    with socket.create_connection(("127.0.0.1", sink.port), timeout=10) as s:
        s.sendall(payload)
        got = []
        body = 0
        while len(got) < len(sizes):
            event = conn.next_event()
            if event is h11.NEED_DATA:
                conn.receive_data(s.recv(65536))
            elif isinstance(event, h11.Data):
                body += len(event.data)
            elif isinstance(event, h11.EndOfMessage):
                got.append(body)
                body = 0
                # h11 models one request per cycle; reset both sides' state.
                conn._cstate.states[h11.CLIENT] = h11.DONE
                conn.start_next_cycle()
    assert got == sizes


def test_pipelined_garbage_after_valid_requests(sink):
    data = (
        b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n"
        b"GET /b HTTP/1.1\r\nHost: x\r\n\r\n"
        b"NOT HTTP AT ALL\r\n\r\n"
    )
    out = raw_exchange(sink.port, data)
    statuses = re.findall(rb"HTTP/1.1 (\d{3})", out)
    assert statuses == [b"200", b"200", b"400"]
    assert b"connection: close" in out.split(b"HTTP/1.1 400")[1]


def test_content_length_upload_is_counted_and_discarded(sink):
    body = bytes(range(256)) * 4096  # 1 MiB
    r = H11Client(sink.port).request("POST", "/up", body=body)
    assert r.status == 200
    sink.stop()
    assert sink.summary["body_bytes_in"] == len(body)


def test_chunked_upload_is_counted_and_discarded(sink):
    chunks = [b"a" * 1, b"b" * 70000, b"c" * 3, b"d" * 1048576]
    with H11Client(sink.port) as c:
        r = c.request("POST", "/up", chunks=chunks)
        assert r.status == 200
        r = c.request("PUT", "/up2", chunks=[b"z" * 10])  # the connection is still usable
        assert r.status == 200
    sink.stop()
    assert sink.summary["body_bytes_in"] == sum(map(len, chunks)) + 10


def test_expect_100_continue_gets_an_interim_response(sink):
    with socket.create_connection(("127.0.0.1", sink.port), timeout=5) as s:
        s.sendall(
            b"POST /e HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nExpect: 100-continue\r\n\r\n"
        )
        interim = s.recv(100)
        assert interim == b"HTTP/1.1 100 Continue\r\n\r\n"
        s.sendall(b"data")
        final = s.recv(65536)
        assert final.startswith(b"HTTP/1.1 200 OK\r\n")


def test_http10_closes_unless_keep_alive_is_asked(sink):
    out = raw_exchange(sink.port, b"GET /old HTTP/1.0\r\n\r\n")
    assert out.startswith(b"HTTP/1.1 200 OK\r\n")
    assert b"connection: close\r\n" in out
    assert out.endswith(b"}")  # complete body, then the server closed
    with socket.create_connection(("127.0.0.1", sink.port), timeout=5) as s:
        for _ in range(2):
            s.sendall(b"GET /old HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
            data = s.recv(65536)
            assert b"connection: keep-alive\r\n" in data
            assert data.endswith(b"}")


def test_connection_close_is_honoured(sink):
    out = raw_exchange(sink.port, b"GET /c HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert out.count(b"HTTP/1.1 200") == 1
    assert b"connection: close\r\n" in out


@pytest.mark.parametrize(
    "garbage",
    [
        b"\x00\x01\x02\r\n\r\n",
        b"GET / HTTP/9.9\r\n\r\n",
        b"GET /\x00 HTTP/1.1\r\nHost: x\r\n\r\n",
        b"GET / HTTP/1.1\r\nBad Header\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nZZZ\r\n",
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab",
    ],
)
def test_malformed_requests_get_400_and_a_close(sink, garbage):
    out = raw_exchange(sink.port, garbage)
    assert out.startswith(b"HTTP/1.1 400 Bad Request\r\n"), out[:200]
    assert b"connection: close" in out
    assert b'{"error":"bad request"}' in out
    # and the server is still up for everyone else
    assert H11Client(sink.port).request().status == 200


def test_header_section_over_64k_gets_431(sink):
    headers = b"".join(b"X-Filler-%d: %s\r\n" % (i, b"v" * 1000) for i in range(70))
    out = raw_exchange(sink.port, b"GET / HTTP/1.1\r\nHost: x\r\n" + headers + b"\r\n")
    assert out.startswith(b"HTTP/1.1 431 Request Header Fields Too Large\r\n")
    just_under = b"".join(b"X-Filler-%d: %s\r\n" % (i, b"v" * 1000) for i in range(60))
    r = H11Client(sink.port).request(headers=[(f"X-Filler-{i}", "v" * 1000) for i in range(60)])
    assert r.status == 200, len(just_under)


def test_endless_header_line_gets_431_without_reading_it_all(sink):
    with socket.create_connection(("127.0.0.1", sink.port), timeout=5) as s:
        s.sendall(b"GET / HTTP/1.1\r\nX-Endless: ")
        reply = b""
        try:
            for _ in range(64):  # up to 4 MiB; the sink must answer long before
                s.sendall(b"a" * 65536)
        except (BrokenPipeError, ConnectionResetError):
            pass
        with contextlib.suppress(ConnectionResetError):
            reply = s.recv(65536)
    assert reply.startswith(b"HTTP/1.1 431")


def test_upgrade_requests_are_answered_then_closed(sink):
    out = raw_exchange(
        sink.port,
        b"GET /ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
    )
    assert out.startswith(b"HTTP/1.1 200 OK")


def test_1xx_status_is_sent_as_interim_then_closed(sink):
    out = raw_exchange(sink.port, b"GET /x?status=103 HTTP/1.1\r\nHost: x\r\n\r\n")
    assert out.startswith(b"HTTP/1.1 103 Early Hints\r\n")
    assert b"content-length" not in out


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
def test_curl_get_and_upload(sink, tmp_path):
    out = subprocess.run(
        [
            "curl",
            "-sS",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code} %{size_download}",
            f"{sink.url}/test?response_size=5000",
        ],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    ).stdout
    assert out == "200 5000"
    upload = tmp_path / "up.bin"
    upload.write_bytes(b"u" * 3_000_000)
    out = subprocess.run(
        [
            "curl",
            "-sS",
            "-v",
            "-H",
            "Expect: 100-continue",
            "--data-binary",
            f"@{upload}",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            f"{sink.url}/up",
        ],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    assert out.stdout == "200"
    assert "HTTP/1.1 100 Continue" in out.stderr
    chunked = subprocess.run(
        [
            "curl",
            "-sS",
            "-H",
            "Transfer-Encoding: chunked",
            "--data-binary",
            f"@{upload}",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            f"{sink.url}/up",
        ],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    assert chunked.stdout == "200"
    sink.stop()
    assert sink.summary["body_bytes_in"] == 2 * 3_000_000

"""Response framers: bytes in, responses out; all at once or one byte at a time."""

from __future__ import annotations

import h11
import pytest

from engine.http1 import H11Framer, HttptoolsFramer, RemoteProtocolError, build_request_head


class Collect:
    def __init__(self) -> None:
        super().__init__()
        self.responses: list[tuple[int, bool, int, int]] = []
        self.errors: list[str] = []

    def response_complete(self, status, keep_alive, wire_bytes, body_bytes) -> None:
        self.responses.append((status, keep_alive, wire_bytes, body_bytes))

    def protocol_error(self, message: str) -> None:
        self.errors.append(message)


class HttptoolsCollect(Collect, HttptoolsFramer):
    pass


class H11Collect(Collect, H11Framer):
    pass


REQ = build_request_head("GET", "x", "/t", None, None)
FRAMERS = [HttptoolsCollect, H11Collect]


def feed_all(framer, data: bytes, step: int | None) -> None:
    step = step or len(data)
    for i in range(0, len(data), step):
        framer.feed(data[i : i + step])


def head(status=200, **headers) -> bytes:
    lines = [f"HTTP/1.1 {status} X"] + [f"{k.replace('_', '-')}: {v}" for k, v in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


CASES = {
    "content-length": (head(content_length=5) + b"hello", (200, True, None, 5)),
    "empty": (head(204), (204, True, None, 0)),
    "chunked": (
        head(transfer_encoding="chunked") + b"5\r\nhello\r\n3\r\nabc\r\n0\r\n\r\n",
        (200, True, None, -2),
    ),
    "close": (head(content_length=3, connection="close") + b"abc", (200, False, None, 3)),
    "big": (head(content_length=100_000) + b"z" * 100_000, (200, True, None, 100_000)),
    "503": (head(503, content_length=2) + b"no", (503, True, None, 2)),
}


@pytest.mark.parametrize("framer_cls", FRAMERS)
@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("step", [None, 1, 7])
def test_framing_is_the_same_whatever_the_read_sizes(framer_cls, case, step):
    data, (status, keep_alive, _, body) = CASES[case]
    if step == 1 and len(data) > 5000:
        step = 997
    framer = framer_cls()
    framer.expect_response(REQ, 0)
    feed_all(framer, data, step)
    assert framer.errors == []
    assert len(framer.responses) == 1
    got = framer.responses[0]
    assert got[0] == status
    assert got[1] == keep_alive
    assert got[2] == len(data)  # every byte on the wire is accounted for
    if body == -2:  # chunked: h11 counts the payload, llhttp framing counts the wire body
        assert got[3] in (8, len(data) - len(head(transfer_encoding="chunked")))
    else:
        assert got[3] == body


@pytest.mark.parametrize("framer_cls", FRAMERS)
def test_keep_alive_sequence(framer_cls):
    framer = framer_cls()
    for i in range(3):
        framer.expect_response(REQ, 0)
        body = b"x" * i
        feed_all(framer, head(content_length=i) + body, 1)
    assert [r[3] for r in framer.responses] == [0, 1, 2]


@pytest.mark.parametrize("framer_cls", FRAMERS)
def test_interim_responses_are_skipped_and_counted(framer_cls):
    framer = framer_cls()
    framer.expect_response(REQ, 0)
    feed_all(framer, head(103) + head(content_length=2) + b"ok", 3)
    assert framer.interim_responses == 1
    assert [r[0] for r in framer.responses] == [200]


@pytest.mark.parametrize("framer_cls", FRAMERS)
@pytest.mark.parametrize(
    "garbage",
    [
        b"HTTP/1.1 abc OK\r\n\r\n",
        b"NOT HTTP\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: zz\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nXYZ\r\n",
        b"\x00\x01\x02\x03\r\n\r\n",
    ],
)
def test_malformed_responses_are_protocol_errors(framer_cls, garbage):
    framer = framer_cls()
    framer.expect_response(REQ, 0)
    feed_all(framer, garbage, None)
    assert framer.errors, "no protocol error reported"
    assert framer.responses == []


@pytest.mark.parametrize("framer_cls", FRAMERS)
def test_close_delimited_body_ends_at_eof(framer_cls):
    framer = framer_cls()
    framer.expect_response(REQ, 0)
    data = b"HTTP/1.0 200 OK\r\nServer: old\r\n\r\nuntil the end"
    feed_all(framer, data, 4)
    assert framer.responses == []
    assert framer.eof() is True
    status, keep_alive, wire, body = framer.responses[0]
    assert (status, keep_alive, wire, body) == (200, False, len(data), 13)


@pytest.mark.parametrize("framer_cls", FRAMERS)
def test_eof_mid_body_is_an_error_and_eof_between_responses_is_not(framer_cls):
    framer = framer_cls()
    assert framer.eof() is False  # nothing in flight
    framer.expect_response(REQ, 0)
    feed_all(framer, head(content_length=10) + b"abc", None)
    with pytest.raises(RemoteProtocolError):
        framer.eof()


def test_request_heads_are_valid_http():
    head_bytes = build_request_head("POST", "127.0.0.1:4001", "/channels/x/test?delay=5", 1024)
    assert head_bytes.startswith(b"POST /channels/x/test?delay=5 HTTP/1.1\r\n")
    server = h11.Connection(h11.SERVER)
    server.receive_data(head_bytes)
    event = server.next_event()
    assert isinstance(event, h11.Request)
    assert dict(event.headers)[b"content-length"] == b"1024"
    with pytest.raises(ValueError):
        build_request_head("GET", "x", "/bad path", None)

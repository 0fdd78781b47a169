"""Response framers: bytes in, responses out; all at once or one byte at a time."""

from __future__ import annotations

import h11
import pytest

from engine.http.chunked import MAX_CHUNK_LINE, ChunkedBody, is_chunked
from engine.http.http1 import H11Framer, HttptoolsFramer, RemoteProtocolError, build_request_head
from tests.support import CountingParser


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
        (200, True, None, 8),
    ),
    "chunked-extensions-trailer": (
        head(transfer_encoding="chunked")
        + b"A;name=value\r\n0123456789\r\n1\r\n\n\r\n0\r\nX-Trailer: t\r\n\r\n",
        (200, True, None, 11),
    ),
    "chunked-upper": (
        head(TRANSFER_ENCODING="CHUNKED") + b"3\r\nabc\r\n0\r\n\r\n",
        (200, True, None, 3),
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
    assert got[3] == body  # payload only: a chunked body's framing is not body


STREAM = [  # responses one connection may carry, and the payload each holds
    (head(content_length=5) + b"hello", 5),
    (
        head(transfer_encoding="chunked")
        + b"5\r\nhello\r\n1a;ext=1\r\n"
        + b"q" * 26
        + b"\r\n0\r\n\r\n",
        31,
    ),
    (head(204), 0),
    (head(Transfer_Encoding="chunked") + b"0\r\nTrailer: x\r\n\r\n", 0),
    (head(transfer_encoding="chunked") + b"1\r\n\r\r\n2\r\n\n\n\r\n0\r\n\r\n", 3),
]


def _payloads(framer_cls) -> list[int]:
    """Every response of STREAM cut in two at every position, on one connection."""
    framer = framer_cls()
    for data, _ in STREAM:
        for cut in range(len(data) + 1):
            framer.expect_response(REQ, 0)
            for piece in (data[:cut], data[cut:]):
                if piece:
                    framer.feed(piece)
    assert framer.errors == []
    return [r[3] for r in framer.responses]


def test_both_framers_count_the_same_payload_split_at_every_position():
    expected = [size for data, size in STREAM for _ in range(len(data) + 1)]
    assert _payloads(HttptoolsCollect) == expected
    assert _payloads(H11Collect) == expected


def test_a_chunked_header_not_recognised_gives_an_unknown_body_not_a_wrong_one():
    # llhttp reads any casing; the follower looks for the spellings servers
    # send. One it does not recognise is reported unknown (-1), never counted
    # with its framing.
    framer = HttptoolsCollect()
    framer.expect_response(REQ, 0)
    framer.feed(head(TrAnSfEr_EnCoDiNg="chunked") + b"3\r\nabc\r\n0\r\n\r\n")
    assert framer.responses[0][3] == -1


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


# -- the response memo: the same bytes again are the same response, unparsed ---


def counted() -> tuple[HttptoolsCollect, CountingParser]:
    framer = HttptoolsCollect()
    framer._parser = CountingParser(framer._parser)
    return framer, framer._parser


OK = head(content_length=5) + b"hello"


def test_a_repeated_response_is_counted_without_a_parse():
    framer, parser = counted()
    for _ in range(5):
        framer.feed(OK)
    assert parser.feeds == 1
    assert framer.responses == [(200, True, len(OK), 5)] * 5
    assert framer.errors == []


def test_the_memo_only_counts_between_responses():
    # "HT" after a response is the start of the next: the same bytes as the
    # memo then make "HTHTTP/1.1 ...", malformed, not a second 200.
    framer, _ = counted()
    framer.feed(OK)
    framer.feed(OK + b"HT")
    framer.feed(OK)
    assert [r[0] for r in framer.responses] == [200, 200]
    assert len(framer.errors) == 1


def test_a_read_that_starts_or_ends_inside_a_response_is_not_memoised():
    framer, _ = counted()
    framer.feed(OK)
    framer.feed(OK[:10])
    framer.feed(OK[10:])  # the end of a response, not a response
    framer.feed(OK[10:])
    assert framer.responses == [(200, True, len(OK), 5)] * 2
    assert len(framer.errors) == 1


def test_no_memo_of_interim_responses_connection_close_or_server_timing():
    interim = head(100) + OK
    framer, parser = counted()
    for _ in range(3):
        framer.feed(interim)
    assert parser.feeds == 3
    assert framer.responses == [(200, True, len(interim), -1)] * 3  # -1: after a 1xx
    assert framer.interim_responses == 3
    close = head(content_length=1, connection="close") + b"x"
    framer, parser = counted()
    framer.feed(close)
    framer.feed(close)
    assert parser.feeds == 2
    timed = head(content_length=1, server_timing="total;dur=1") + b"x"
    framer, parser = counted()
    framer.wants_server_timing = True
    seen = []
    framer.server_timing_seen = seen.append
    for _ in range(3):
        framer.feed(timed)
    assert parser.feeds == 3
    assert seen == [b"total;dur=1"] * 3


def test_responses_that_keep_differing_are_all_parsed_and_counted():
    framer, parser = counted()
    for i in range(300):
        framer.feed(head(content_length=1, x_id=i) + b"x")
    assert parser.feeds == 300
    assert [r[0] for r in framer.responses] == [200] * 300
    # A memo is made about once in MEMO_WAIT chances while they differ.
    assert framer._memo_wait > 0


def test_a_read_that_ends_inside_the_next_response_is_not_memoised():
    # Each "...hello" + "HT" read leaves "HT" in the parser for the "TP/1.1 ..."
    # that follows: memoised, the "HT" would be lost.
    framer, _ = counted()
    framer.feed(OK)
    for _ in range(3):
        framer.feed(OK + b"HT")
        framer.feed(OK[2:])
    assert [r[0] for r in framer.responses] == [200] * 7
    assert framer.errors == []


def test_bytes_before_a_repeated_response_are_still_counted():
    framer, _ = counted()
    framer.feed(OK)
    framer.feed(OK)
    framer.feed(b"\r\n")  # between responses: no response begins
    framer.feed(OK)
    assert framer.responses[-1] == (200, True, len(OK) + 2, 5)
    assert framer.errors == []


@pytest.mark.parametrize(
    ("headers", "chunked"),
    [
        ("Transfer-Encoding: chunked", True),
        ("transfer-encoding: gzip, chunked", True),
        ("TRANSFER-ENCODING: gzip\r\nTransfer-Encoding: Chunked", True),
        ("Transfer-Encoding: chunked, gzip", False),  # close-delimited (RFC 9112 6.3)
        ("Content-Length: 5\r\nX-Transfer-Note: chunked", False),
        ("Content-Length: 5", False),
    ],
)
def test_is_chunked_reads_the_final_coding(headers, chunked):
    data = f"HTTP/1.1 200 OK\r\n{headers}\r\n\r\n".encode()
    assert is_chunked(data, len(data)) is chunked


def test_a_chunk_size_line_without_end_is_not_held_without_bound():
    follower = ChunkedBody()
    line = b"a" * (MAX_CHUNK_LINE + 2)
    follower.feed(line, 0, len(line))
    assert follower.result() == -1
    assert len(follower._line) <= MAX_CHUNK_LINE + 1


def test_a_chunked_body_cut_short_has_no_payload_figure():
    follower = ChunkedBody()
    data = b"5\r\nhel"
    follower.feed(data, 0, len(data))
    assert follower.result() == -1
    follower.feed(b"lo\r\n0\r\n\r\n", 0, 9)
    assert follower.result() == 5

"""HTTP/1.1 framing for the client: request heads and response framers.

Bytes in, events out, no sockets: every framer here can be fed a response
all at once or one byte at a time and must say the same thing.

Two framers behind one interface:
- ``HttptoolsFramer`` (default): llhttp through httptools, only the callbacks
  the hot path needs. Body bytes are never copied: they are counted as the
  response's wire bytes minus its header section, which is found with one
  ``bytes.find`` per response; a chunked body's framing is told apart by
  following its chunk-size lines (engine/http/chunked.py).
- ``H11Framer`` (``--parser h11``): h11's strict state machine, which checks
  every rule of RFC 9112 and costs ~30 us per response (measured).

A framer reports each final response once through ``response_complete``;
interim (1xx) responses are skipped and counted. Malformed input goes to
``protocol_error``: the peer broke the protocol, which is a finding for the
report, not a crash. Framers are mixed into the client protocol (so the hot
path has no extra call per read), hence no ``__slots__`` here.

About 450 lines: both framers stay in one file because they answer to one
interface and one set of tests (tests/unit/test_http1.py feeds both the same bytes).
"""

from __future__ import annotations

import collections
import functools

import h11
import httptools

from common import __version__
from common.memo import MEMO_MAX, ReadMemo
from engine.http.chunked import ChunkedBody, is_chunked

USER_AGENT = f"chanload/{__version__}"
_HEAD_END = b"\r\n\r\n"
_TIMING_NAMES = (b"\r\nserver-timing:", b"\r\nServer-Timing:", b"\r\nSERVER-TIMING:")
# A response header section longer than this is a protocol error (both
# parsers): it bounds what is kept, and an endless header section fails fast.
MAX_HEAD_BYTES = 64 * 1024


class RemoteProtocolError(Exception):
    """The server sent something that is not valid HTTP/1.1."""


def build_request_head(
    method: str,
    host: str,
    target: str,
    body_length: int | None,
    content_type: str | None = "application/json",
    extra_headers: list[tuple[str, str]] | None = None,
) -> bytes:
    """The request line and headers, validated by h11 (built once, sent many times).

    ``extra_headers`` (the user's -H) replace our User-Agent and Content-Type
    when they name them, as curl's -H does.
    """
    extra = list(extra_headers or [])
    named = {name.lower() for name, _ in extra}
    headers = [("Host", host)]
    if "user-agent" not in named:
        headers.append(("User-Agent", USER_AGENT))
    if content_type is not None and "content-type" not in named:
        headers.append(("Content-Type", content_type))
    if body_length is not None:
        headers.append(("Content-Length", str(body_length)))
    headers += extra
    conn = h11.Connection(h11.CLIENT)
    try:
        return conn.send(h11.Request(method=method, target=target, headers=headers))
    except h11.LocalProtocolError as exc:
        raise ValueError(f"cannot build a valid {method} request for {target!r}: {exc}") from None


def find_server_timing(head: bytes | bytearray, end: int) -> bytes | None:
    """The value of a Server-Timing header in ``head[:end]`` (as servers spell the name)."""
    for needle in _TIMING_NAMES:
        i = head.find(needle, 0, end)
        if i >= 0:
            start = i + len(needle)
            stop = head.find(b"\r\n", start, end)
            return bytes(head[start : stop if stop >= 0 else end]).strip()
    return None


class ResponseFramer:
    """Interface: feed response bytes; ``response_complete`` fires per final response."""

    interim_responses: int = 0
    # Look for a Server-Timing header in each response head (off: no cost).
    wants_server_timing: bool = False
    # Learn the read memo (common/memo.py); --no-memo turns it off, so every
    # response is parsed (what the generator costs when responses all differ).
    memo: bool = True

    def feed(self, data: bytes) -> None:
        raise NotImplementedError

    def eof(self) -> bool:
        """The peer closed: True when that completed a close-delimited response.

        Raises RemoteProtocolError when it cut a response short.
        """
        raise NotImplementedError

    def pending_bytes(self) -> int:
        """Bytes of a response received so far but not yet complete."""
        raise NotImplementedError

    def expect_response(self, request_head: bytes, body_length: int) -> None:
        """A request was sent; its response comes next (h11 tracks this)."""

    # -- hooks for the user of the framer --------------------------------------

    def response_complete(
        self, status: int, keep_alive: bool, wire_bytes: int, body_bytes: int
    ) -> None:
        """A final response ended; ``body_bytes`` is -1 when it cannot be known."""
        raise NotImplementedError

    def protocol_error(self, message: str) -> None:
        """The peer sent something that is not HTTP/1.1; nothing more will be parsed."""
        raise NotImplementedError

    def server_timing_seen(self, value: bytes) -> None:
        """A response head carried ``Server-Timing: value`` (when wanted)."""


# One receive buffer for every connection of the process: uvloop fills it
# (BufferedProtocol) and the framer parses it before anything else can run,
# so sharing it is safe, and a large read is never copied into a new object.
READ_BUFFER_SIZE = 1024 * 1024
READ_BUFFER = bytearray(READ_BUFFER_SIZE)
READ_VIEW = memoryview(READ_BUFFER)
# get_buffer(sizehint) as a C-level callable: a dict lookup, not a Python frame.
GET_READ_BUFFER = collections.defaultdict(lambda: READ_BUFFER).__getitem__


class MemoTally:
    """Where a framer counts the responses its memo answered (a Recorder in a run)."""

    __slots__ = ("memo_hits",)

    def __init__(self) -> None:
        self.memo_hits = 0


class HttptoolsFramer(ReadMemo, ResponseFramer):
    """Responses parsed by llhttp; body bytes counted, never copied.

    ``buffer_updated(n)`` (the asyncio BufferedProtocol callback) parses the
    first ``n`` bytes of the shared READ_BUFFER: the whole hot path is that
    one call plus ``on_message_complete``. ``feed(data)`` is the same for
    callers holding bytes.
    """

    def __init__(self) -> None:
        # Non-empty exactly when the parser stands between two responses with
        # nothing of the next one consumed: each completed response puts a
        # mark in, the first byte of the next (httptools' on_message_begin,
        # here a C-level callable: no Python frame) takes them out.
        self._ended: list[bool] = [True]
        self.on_message_begin = self._ended.clear
        # llhttp marks each chunk header here (a C-level call, only for
        # chunked bodies): a chunked body with no follower (a Transfer-Encoding
        # header spelt in a way is_chunked did not look for) has an unknown payload.
        self._chunk_marks: list[bool] = []
        self.on_chunk_header = functools.partial(self._chunk_marks.append, True)
        self._chunks: ChunkedBody | None = None  # follows the current body when chunked
        self._parser = httptools.HttpResponseParser(self)
        self._messages = 0  # responses (final or interim) completed in this read
        # The last response that came whole in one read: the same bytes again
        # are the same response, counted without parsing them (see
        # buffer_updated). Its length is -1 until there is one.
        self._memo_reset()
        self.memo_tally: MemoTally = MemoTally()  # the client puts its Recorder here
        self._memo_status = 0
        self._memo_body = 0
        self._wire = 0  # bytes of the current response so far
        self._head_end = -1  # length of its header section, once found
        self._head_data = b""  # the header section, kept only for eof()
        self._acc: bytearray | None = None  # a header section split across reads
        self._done = False
        self._interim = False
        self._status = 0
        self._keep_alive = False
        self.interim_responses = 0

    def feed(self, data: bytes) -> None:
        view = memoryview(data)
        for i in range(0, len(view), READ_BUFFER_SIZE):
            piece = view[i : i + READ_BUFFER_SIZE]
            READ_BUFFER[: len(piece)] = piece
            self.buffer_updated(len(piece))

    def buffer_updated(self, n: int) -> None:
        # A server answers the same request with the same bytes (within the
        # second of its Date header): this read, exactly the last response
        # memoised and read between two responses, would parse to that
        # response again, so count it as such without the parse.
        if (
            n == self._memo_len
            and self._ended
            and not self._wire
            and READ_BUFFER.startswith(self._memo)
        ):
            self._memo_used = True
            self.memo_tally.memo_hits += 1
            self.response_complete(self._memo_status, True, n, self._memo_body)
            return
        wire = self._wire
        at_boundary = wire == 0 and bool(self._ended)
        self._messages = 0
        head_now = False
        start = 0  # where this read's body bytes begin, for a chunked body's follower
        if self._head_end < 0:
            start = n
            if wire == 0:  # the first read of a response: nearly always holds the head
                i = READ_BUFFER.find(_HEAD_END, 0, n)
                if i >= 0:
                    self._head_end = start = i + 4
                    head_now = True
                    if is_chunked(READ_BUFFER, start):
                        self._chunks = ChunkedBody()
                    if self.wants_server_timing:
                        value = find_server_timing(READ_BUFFER, i + 2)
                        if value is not None:
                            self.server_timing_seen(value)
                else:
                    self._acc = READ_BUFFER[:n]
            else:
                self._find_split_head_end(n)
            if self._head_end < 0 and wire + n > MAX_HEAD_BYTES:
                self._acc = None
                self._wire = wire + n
                self.protocol_error(f"response header section over {MAX_HEAD_BYTES} bytes")
                return
        self._wire = wire + n
        try:
            self._parser.feed_data(READ_VIEW[:n])
        except httptools.HttpParserError as exc:
            self.protocol_error(f"malformed response: {exc}")
            return
        chunks = self._chunks
        if chunks is not None and start < n:
            chunks.feed(READ_BUFFER, start, n)
        if self._done:
            # After a 1xx the first header section found was the interim one:
            # the body size of such a response is not known, so report -1.
            if self._interim or self._head_end < 0:
                body = -1
            elif chunks is not None:
                body = chunks.result()
            elif self._chunk_marks:
                body = -1
            else:
                body = self._wire - self._head_end
            if chunks is not None or self._chunk_marks:
                self._chunks = None
                self._chunk_marks.clear()
            wire = self._wire
            if (
                at_boundary
                and self._ended
                and self._messages == 1
                and self._keep_alive
                and n <= MEMO_MAX
                and not self.wants_server_timing
                and self.memo
            ):
                self._memoise(n, self._status, body)
            self._wire = 0
            self._head_end = -1
            self._head_data = b""
            self._acc = None
            self._done = False
            self._interim = False
            self.response_complete(self._status, self._keep_alive, wire, body)
        elif head_now:
            # Only a response still open after its first read can end at EOF;
            # keep its head (the buffer will be overwritten) for eof().
            self._head_data = bytes(READ_VIEW[: self._head_end])

    def _memoise(self, n: int, status: int, body: int) -> None:
        if self._memo_wait:
            self._memo_wait -= 1
            return
        if self._memo_take(READ_BUFFER, READ_VIEW, n):
            self._memo_status = status
            self._memo_body = body

    def pending_bytes(self) -> int:
        return self._wire

    def _find_split_head_end(self, n: int) -> None:
        acc = self._acc
        if acc is None:
            return  # llhttp will have failed or will fail on such a head
        start = max(0, len(acc) - 3)
        acc += READ_VIEW[:n]
        i = acc.find(_HEAD_END, start)
        if i >= 0:
            self._head_end = i + 4
            self._head_data = bytes(acc[: i + 4])
            self._acc = None
            if is_chunked(acc, i + 4):
                # Its body bytes so far are in acc, this read's included.
                self._chunks = ChunkedBody()
                self._chunks.feed(acc, i + 4, len(acc))
            if self.wants_server_timing:
                value = find_server_timing(acc, i + 2)
                if value is not None:
                    self.server_timing_seen(value)

    def on_message_complete(self) -> None:
        self._ended.append(True)
        self._messages += 1
        status = self._parser.get_status_code()
        if 100 <= status < 200 and status != 101:
            self.interim_responses += 1
            self._interim = True
            return
        self._status = status
        self._keep_alive = self._parser.should_keep_alive()
        self._done = True

    def eof(self) -> bool:
        if not self._wire:
            return False
        head = self._head_data.lower()
        if (
            self._head_end > 0
            and head
            and not self._interim
            and b"\r\ncontent-length:" not in head
            and b"\r\ntransfer-encoding:" not in head
        ):
            # A close-delimited body (RFC 9112 6.3, rule 8) ends here.
            try:
                status = int(head[9:12])
            except ValueError:
                raise RemoteProtocolError("malformed status line") from None
            wire, body = self._wire, self._wire - self._head_end
            self._wire = 0
            self._head_end = -1
            self._head_data = b""
            self.response_complete(status, False, wire, body)
            return True
        raise RemoteProtocolError("connection closed in the middle of a response")


class H11Framer(ResponseFramer):
    """Responses parsed by h11: strict, and about 30 us per response."""

    def __init__(self) -> None:
        self._conn = h11.Connection(h11.CLIENT, max_incomplete_event_size=MAX_HEAD_BYTES)
        self._wire = 0
        self._body = 0
        self._status = 0
        self._completed = 0
        self.interim_responses = 0

    def expect_response(self, request_head: bytes, body_length: int) -> None:
        conn = self._conn
        if conn.our_state is h11.DONE and conn.their_state is h11.DONE:
            conn.start_next_cycle()
        # Let h11 track the request we sent (its bytes were validated by h11
        # when built); the body is passed through, never copied.
        conn.send_with_data_passthrough(_request_event(request_head))
        if body_length:
            conn.send_with_data_passthrough(h11.Data(data=_Blank(body_length)))
        conn.send_with_data_passthrough(h11.EndOfMessage())

    def feed(self, data: bytes) -> None:
        self._wire += len(data)
        try:
            self._conn.receive_data(data)
            self._drain()
        except h11.RemoteProtocolError as exc:
            self.protocol_error(f"malformed response: {exc}")

    def pending_bytes(self) -> int:
        return self._wire

    def _drain(self) -> None:
        conn = self._conn
        while True:
            event = conn.next_event()
            kind = type(event)
            if event is h11.NEED_DATA or event is h11.PAUSED or kind is h11.ConnectionClosed:
                return
            if kind is h11.Data:
                self._body += len(event.data)
            elif kind is h11.Response:
                self._status = event.status_code
                if self.wants_server_timing:
                    for name, value in event.headers:
                        if name == b"server-timing":
                            self.server_timing_seen(bytes(value))
            elif kind is h11.InformationalResponse:
                self.interim_responses += 1
            elif kind is h11.EndOfMessage:
                keep_alive = conn.their_state is not h11.MUST_CLOSE
                wire, body = self._wire, self._body
                self._wire = self._body = 0
                self._completed += 1
                # Bytes after the end of this response belong to nothing we
                # asked for: h11 holds them and fails on the next cycle.
                self.response_complete(self._status, keep_alive, wire, body)
                return

    def eof(self) -> bool:
        if not self._wire:
            return False
        before = self._completed
        try:
            self._conn.receive_data(b"")
            self._drain()
        except h11.RemoteProtocolError as exc:
            raise RemoteProtocolError(f"connection closed mid-response ({exc})") from None
        if self._completed == before:
            raise RemoteProtocolError("connection closed in the middle of a response")
        return True


class _Blank:
    """A body of known length whose bytes h11 never looks at (passthrough)."""

    __slots__ = ("_n",)

    def __init__(self, n: int) -> None:
        self._n = n

    def __len__(self) -> int:
        return self._n


_REQUEST_EVENTS: dict[bytes, h11.Request] = {}


def _request_event(head: bytes) -> h11.Request:
    """The h11 Request event for a head we built (cached per distinct head)."""
    event = _REQUEST_EVENTS.get(head)
    if event is None:
        lines = head.decode("latin-1").split("\r\n")
        method, target, _ = lines[0].split(" ", 2)
        headers = [tuple(line.split(": ", 1)) for line in lines[1:] if line]
        event = h11.Request(method=method, target=target, headers=headers)
        _REQUEST_EVENTS[head] = event
    return event

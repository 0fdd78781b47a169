"""How bodies cross chanproxy: streamed as they arrive (the default), or held
whole in memory first (--buffer, what a buffering proxy does, so that the
memory verdict has a known bad case to find).

A mode is a stateless object shared by every exchange of a server; what it
keeps (the buffers) lives on the exchange. Each hook is one moment of an
exchange's life (proxy/exchange.py):

    request_body(ex, data)   a piece of the client's request body
    request_done(ex)         the request body ended, with the sink connected
    attached(ex)             the sink connection is ready
    response_head(ex, status, lines, framing)   the sink's head, rewritten
    response_body(ex, data)  a piece of the sink's response body
    response_done(ex)        the sink's response ended
"""

from __future__ import annotations

from typing import Protocol


class Writer(Protocol):
    """Either side's connection, as a mode writes to it."""

    def write(self, data: bytes) -> None: ...

    def writelines(self, data: list[bytes]) -> None: ...


class Exchange(Protocol):
    """What a mode reads and fills of an exchange (proxy/exchange.py's Exchange).

    The exchange calls the modes, never the reverse: this is its side that
    modes see, so that neither module imports the other.
    """

    proto: Writer  # the client connection
    conn: Writer | None  # the sink connection, once attached
    method: bytes
    http10: bool
    request_chunked: bool
    request_length: int | None
    request_done: bool
    pending: list[bytes]  # streaming: body pieces that came before the sink connection
    buffered: bytearray  # buffering: the whole request body
    response_head: bytes | None  # buffering: the rewritten head, sent at the end
    response_buffer: bytearray  # buffering: the whole response body
    response_chunked: bool
    response_started: bool
    client_keep_alive: bool

    def send_body(self, data: bytes) -> None: ...

    def upstream_request_head(self, body: str | int | None) -> bytes: ...


CHUNK_END = b"0\r\n\r\n"


class Streaming:
    """Each piece goes on as it comes, under flow control: memory stays flat."""

    passes_length = True  # a sink's Content-Length still frames the body we pass on

    def request_body(self, ex: Exchange, data: bytes) -> None:
        if ex.conn is not None:
            ex.send_body(data)
        else:
            ex.pending.append(data)  # before the sink connection: sent on attach

    def request_done(self, ex: Exchange) -> None:
        if ex.request_chunked:
            ex.conn.write(CHUNK_END)

    def attached(self, ex: Exchange) -> None:
        conn = ex.conn
        conn.write(ex.upstream_request_head("chunked" if ex.request_chunked else ex.request_length))
        for piece in ex.pending:
            ex.send_body(piece)
        ex.pending = []
        if ex.request_done and ex.request_chunked:
            conn.write(CHUNK_END)

    def response_head(self, ex: Exchange, status: int, lines: list[bytes], framing: str) -> None:
        if framing in ("chunked", "close") and status not in (204, 304) and ex.method != b"HEAD":
            if ex.http10:
                ex.client_keep_alive = False
            else:
                lines.append(b"transfer-encoding: chunked\r\n")
                ex.response_chunked = True
        if not ex.client_keep_alive:
            lines.append(b"connection: close\r\n")
        lines.append(b"\r\n")
        ex.response_started = True
        ex.proto.write(b"".join(lines))

    def response_body(self, ex: Exchange, data: bytes) -> None:
        if ex.response_chunked:
            ex.proto.writelines([b"%x\r\n" % len(data), data, b"\r\n"])
        else:
            ex.proto.write(data)

    def response_done(self, ex: Exchange) -> None:
        if ex.response_chunked:
            ex.proto.write(CHUNK_END)


class Buffering:
    """Whole bodies in memory: the request until it ended, the response until it
    ended, each then sent with a Content-Length."""

    passes_length = False  # the length is the buffer's, written at the end

    def request_body(self, ex: Exchange, data: bytes) -> None:
        ex.buffered += data

    def request_done(self, ex: Exchange) -> None:
        self._send_request(ex)

    def attached(self, ex: Exchange) -> None:
        if ex.request_done:
            self._send_request(ex)

    @staticmethod
    def _send_request(ex: Exchange) -> None:
        # The request body stays in memory until the exchange is over.
        body = bytes(ex.buffered)
        ex.conn.writelines([ex.upstream_request_head(len(body)), body])

    def response_head(self, ex: Exchange, status: int, lines: list[bytes], framing: str) -> None:
        ex.response_head = b"".join(lines)

    def response_body(self, ex: Exchange, data: bytes) -> None:
        ex.response_buffer += data

    def response_done(self, ex: Exchange) -> None:
        if ex.response_head is None:
            return
        body = bytes(ex.response_buffer)
        ex.response_buffer = bytearray()
        tail = b"content-length: %d\r\n" % len(body)
        if not ex.client_keep_alive:
            tail += b"connection: close\r\n"
        ex.proto.writelines([ex.response_head, tail, b"\r\n", body])
        ex.response_started = True


STREAMING = Streaming()
BUFFERING = Buffering()

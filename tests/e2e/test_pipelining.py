"""A client that pipelines requests and never reads (issue 15, item 1).

For 10 s the client sends requests as fast as the server takes them and reads
nothing. A server that answers them anyway (a locally answered 404 is written
at once) and reads on without checking that its writes are paused holds every
answer: memory without bound. chansink and chanproxy must instead stop
reading from a client that stops reading: the client's sending stalls, the
server's RSS stays put; when the client reads at last, every answer comes, in
order, and the requests the server had not read yet are read and answered.
"""

from __future__ import annotations

import json
import select
import selectors
import socket
import time

import httptools
import pytest

from tests.support import rss_bytes, start_sink

CHANNEL = "1b4e28ba-2fa1-11d2-883f-0016d3cca427"
SEND_FOR = 10.0
PAD = b"x" * 1000  # about 1 KB a request: fewer, larger requests
MB = 1024 * 1024


def requests_for(program: str):
    """The i-th request and the (status, body length) its answer must have."""

    def request(i: int) -> tuple[bytes, tuple[int, int]]:
        size = 100 + i % 997
        if program == "chanproxy" and i % 5 == 4:
            # Answered by chanproxy itself, at once: no such channel.
            path, expect = f"/channels/nope/{i}", (404, None)
        elif program == "chanproxy":
            path, expect = f"/channels/{CHANNEL}/{i}?response_size={size}", (200, size)
        else:
            path, expect = f"/{i}?response_size={size}", (200, size)
        head = f"GET {path} HTTP/1.1\r\nHost: t\r\nX-Pad: ".encode() + PAD + b"\r\n\r\n"
        return head, expect

    return request


class Answers:
    """Pipelined responses, parsed as they come: (status, body length) each."""

    def __init__(self) -> None:
        self.got: list[tuple[int, int]] = []
        self._length = 0
        self.parser = httptools.HttpResponseParser(self)

    def on_message_begin(self) -> None:
        self._length = 0

    def on_body(self, body: bytes) -> None:
        self._length += len(body)

    def on_message_complete(self) -> None:
        self.got.append((self.parser.get_status_code(), self._length))


@pytest.mark.parametrize("program", ["chansink", "chanproxy"])
def test_a_client_that_never_reads_holds_bounded_memory(tmp_path, program):
    sink = start_sink(tmp_path)
    server = sink
    if program == "chanproxy":
        channels = tmp_path / "channels.json"
        channels.write_text(json.dumps([{"id": CHANNEL, "name": "c", "sink_url": sink.url}]))
        server = start_sink(tmp_path, "--channels", str(channels), program="chanproxy")
    request = requests_for(program)
    sock = socket.socket()
    # Small buffers on the client's side, so that what is in flight sits in the server.
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 16384)
    sock.connect(("127.0.0.1", server.port))
    sock.setblocking(False)
    try:
        rss_before = rss_bytes(server.pid)
        rss_max = rss_before
        sent_at: list[tuple[float, int]] = []  # (time, bytes sent so far)
        total, count, pending = 0, 0, b""
        started = time.monotonic()
        next_sample = started
        # Phase 1: send for SEND_FOR seconds, never read.
        while (now := time.monotonic()) - started < SEND_FOR:
            if not pending:
                pending, _ = request(count)
                count += 1
            try:
                n = sock.send(pending)
            except BlockingIOError:
                n = 0
                select.select([], [sock], [], 0.05)  # until it takes more, or a while
            pending = pending[n:]
            total += n
            if now >= next_sample:
                rss_max = max(rss_max, rss_bytes(server.pid))
                sent_at.append((now - started, total))
                next_sample = now + 0.25
        stalled_from = next(t for t, sent in sent_at if sent == total)
        late = total - next(sent for t, sent in sent_at if t >= SEND_FOR / 2)

        # Phase 2: read every answer (finishing the last request as we go).
        answers = Answers()
        sel = selectors.DefaultSelector()
        sel.register(sock, selectors.EVENT_READ | (selectors.EVENT_WRITE if pending else 0))
        deadline = time.monotonic() + 120
        while len(answers.got) < count and time.monotonic() < deadline:
            for _, events in sel.select(1.0):
                if events & selectors.EVENT_WRITE and pending:
                    with_sent = sock.send(pending)
                    pending = pending[with_sent:]
                    if not pending:
                        sel.modify(sock, selectors.EVENT_READ)
                if events & selectors.EVENT_READ:
                    data = sock.recv(1 << 20)
                    assert data, f"{program} closed after {len(answers.got)} of {count} answers"
                    answers.parser.feed_data(data)
        sel.close()
    finally:
        sock.close()
        if server is not sink:
            server.stop()
        sink.stop()

    # Reading paused: the client could send nothing more for the second half of
    # the 10 s (a server reading on would have taken hundreds of MB by then).
    assert late == 0, f"sent {late} B in the last {SEND_FOR / 2:g} s (stalled at {stalled_from} s)"
    assert total < 64 * MB, total
    # Bounded: the server's memory hardly moved, whatever the client sent.
    assert rss_max - rss_before < 24 * MB, (rss_before, rss_max, total)
    # Resumed: every request answered, in order, with its own answer.
    assert len(answers.got) == count, (len(answers.got), count)
    for i, (status, length) in enumerate(answers.got):
        want_status, want_length = request(i)[1]
        assert status == want_status, (i, status)
        if want_length is not None:
            assert length == want_length, (i, length)

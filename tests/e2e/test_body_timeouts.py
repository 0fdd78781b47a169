"""--body-timeout on chansink and chanproxy (issue 15, item 6): a request body
that stops half way gets 408 and a close; one that trickles in, a byte at a
time but never stopping for long, is read whole; a bad value is refused."""

from __future__ import annotations

import json
import select
import socket
import subprocess
import sys
import threading
import time

import pytest

from tests.support import ROOT, read_until_closed, wait_until

CHANNEL = "1b4e28ba-2fa1-11d2-883f-0016d3cca427"
BODY_TIMEOUT = 1.0
# The sweep runs once a second and a body's clock restarts at the first sweep
# after a byte, so a stalled body is closed between BODY_TIMEOUT and
# BODY_TIMEOUT + 2 s after its last byte; MARGIN on top for a machine at half speed.
LATEST = BODY_TIMEOUT + 2.0
MARGIN = 3.0


def channels_file(tmp_path, sink_url: str) -> str:
    path = tmp_path / "channels.json"
    path.write_text(json.dumps([{"id": CHANNEL, "name": "c", "sink_url": sink_url}]))
    return str(path)


@pytest.fixture(params=["chansink", "chanproxy"])
def start(request, tmp_path, sink_factory, proxy_factory):
    """Start the server under test with --body-timeout BODY_TIMEOUT and ``args``:
    (it, the path to POST to, the chansink at the end)."""

    def start(*args: str):
        options = ("--body-timeout", str(BODY_TIMEOUT), *args)
        if request.param == "chansink":
            sink = sink_factory(*options)
            return sink, "/upload", sink
        sink = sink_factory()
        proxy = proxy_factory("--channels", channels_file(tmp_path, sink.url), *options)
        return proxy, f"/channels/{CHANNEL}/upload", sink

    return start


def last_summary_line(sink) -> str:
    lines = [ln for ln in sink.output().splitlines() if ln.startswith("[chansink ")]
    return lines[-1] if lines else ""


def test_a_body_that_stops_half_way_gets_408_and_a_close(start):
    front, path, sink = start()  # --header-timeout 10: not the one that acts here
    head = f"POST {path} HTTP/1.1\r\nhost: x\r\ncontent-length: 100\r\n\r\n".encode()
    with socket.create_connection(("127.0.0.1", front.port)) as s:
        s.sendall(head + b"x" * 50)  # then nothing more
        started = time.monotonic()
        data, closed = read_until_closed(s, LATEST + MARGIN + 5)
    assert data.startswith(b"HTTP/1.1 408 Request Timeout\r\n"), data[:200]
    assert b"connection: close\r\n" in data.lower()
    assert closed is not None, "the connection was left open"
    assert BODY_TIMEOUT * 0.9 <= closed <= LATEST + MARGIN, closed
    assert time.monotonic() - started < LATEST + MARGIN + 1
    if front is not sink:
        assert b'{"error":"Request Timeout"}' in data
        # the half upload to the sink is cut off too, never answered
        wait_until(lambda: " 0 open," in last_summary_line(sink), 10, "the sink's side to close")
    assert front.stop() == 0
    assert front.summary["timed_out"] == 1
    if front is not sink:
        assert sink.stop() == 0
        assert sink.summary["requests"] == 0 and sink.summary["timed_out"] == 0


def test_a_body_that_trickles_in_without_stopping_is_read_whole(start):
    # --header-timeout 1 too: it must stop counting once the body begins.
    front, path, sink = start("--header-timeout", "1")
    body = b"0123456789"  # a byte every 0.3 s: 2.7 s, well past both timeouts
    head = f"POST {path} HTTP/1.1\r\nhost: x\r\ncontent-length: {len(body)}\r\n"
    with socket.create_connection(("127.0.0.1", front.port)) as s:
        s.sendall(head.encode() + b"connection: close\r\n\r\n" + body[:1])
        for i in range(1, len(body)):
            time.sleep(0.3)  # the client's pace, not a wait for the server
            try:
                s.sendall(body[i : i + 1])
            except OSError:
                break  # closed on us: the answer below says why
        data, closed = read_until_closed(s, 10)
    assert data.startswith(b"HTTP/1.1 200 OK\r\n"), data[:200]
    assert closed is not None
    assert front.stop() == 0
    assert front.summary["timed_out"] == 0
    if front is not sink:
        assert sink.stop() == 0
    assert sink.summary["body_bytes_in"] == len(body)


@pytest.mark.parametrize("value", ["0", "-1"])
@pytest.mark.parametrize("program", ["chansink", "chanproxy"])
def test_a_body_timeout_that_is_not_positive_is_refused(program, value):
    out = subprocess.run(
        [sys.executable, "-m", f"cli.{program}", "--port", "0", f"--body-timeout={value}"],
        capture_output=True,
        text=True,
        timeout=20,
        cwd=ROOT,
    )
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1, out.stderr
    assert lines[0].startswith(f"{program}: error: --body-timeout must be > 0")
    assert "listening" not in out.stdout


class StallingSink:
    """A sink that accepts and reads nothing until ``drain`` is set, then reads the
    whole request and answers 200: chanproxy's upstream, slower than its client."""

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.accepted = threading.Event()
        self.drain = threading.Event()
        self.received = 0
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        conn, _ = self.listener.accept()
        with conn:
            self.accepted.set()
            self.drain.wait(60)
            data = b""
            while b"\r\n\r\n" not in data:
                data += conn.recv(65536)
            head, rest = data.split(b"\r\n\r\n", 1)
            length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
            self.received = len(rest)
            while self.received < length:
                chunk = conn.recv(1 << 20)
                if not chunk:
                    return
                self.received += len(chunk)
            conn.sendall(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
            conn.recv(1)  # until chanproxy lets the connection go

    def close(self) -> None:
        self.drain.set()
        self.listener.close()


def test_chanproxy_holding_a_body_back_for_a_slow_sink_is_not_the_clients_timeout(
    tmp_path, proxy_factory
):
    # The sink reads nothing for 3 x --body-timeout: chanproxy stops reading the
    # client (flow control), whose body then waits on us, not the other way.
    upstream = StallingSink()
    try:
        proxy = proxy_factory(
            "--channels",
            channels_file(tmp_path, f"http://127.0.0.1:{upstream.port}"),
            "--body-timeout",
            str(BODY_TIMEOUT),
        )
        size = 64 * 1024 * 1024  # far more than the sockets between can hold
        head = f"POST /channels/{CHANNEL}/up HTTP/1.1\r\nhost: x\r\ncontent-length: {size}\r\n"
        with socket.create_connection(("127.0.0.1", proxy.port)) as s:
            s.sendall(head.encode() + b"connection: close\r\n\r\n")
            assert upstream.accepted.wait(10)
            s.setblocking(False)
            block, sent = memoryview(b"u" * (1 << 20)), 0
            stalled_at = None
            held_until = None
            while sent < size:
                try:
                    sent += s.send(block[: min(len(block), size - sent)])
                    stalled_at = None
                except BlockingIOError:
                    now = time.monotonic()
                    stalled_at = stalled_at or now
                    if held_until is None and now - stalled_at > 3 * BODY_TIMEOUT:
                        held_until = now
                        upstream.drain.set()  # held back 3 s: now the sink reads
                    select.select([], [s], [], 0.05)  # until it takes more, or a while
                except OSError as exc:
                    s.setblocking(True)
                    said, _ = read_until_closed(s, 2)
                    pytest.fail(f"closed after {sent} B ({exc}); chanproxy said {said[:200]!r}")
            assert held_until is not None, "the body never had to wait for the sink"
            s.setblocking(True)
            data, closed = read_until_closed(s, 30)
        assert data.startswith(b"HTTP/1.1 200 OK\r\n"), data[:200]
        assert closed is not None  # it asked for connection: close
        assert upstream.received == size
        assert proxy.stop() == 0
        assert proxy.summary["timed_out"] == 0
    finally:
        upstream.close()

"""A raw-TCP HTTP server that misbehaves on purpose, one way per run.

    python -m tests.servers.misbehave --fault truncated_body

It reads each request (head, then the body by Content-Length, except where
the fault is to answer early) and then does what ``--fault`` says instead of
answering properly. Prints ``listening on http://127.0.0.1:PORT``; at SIGTERM
``misbehave stopped: accepted=N requests=N``.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import socket
import struct

from tests.servers import content_length

TOO_LARGE = b"HTTP/1.1 413 Content Too Large\r\nconnection: close\r\ncontent-length: 0\r\n\r\n"
OK = b'HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 11\r\n\r\n{"ok":true}'


def _linger_reset(writer: asyncio.StreamWriter) -> None:
    sock = writer.get_extra_info("socket")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.close()


async def _hold(writer: asyncio.StreamWriter) -> None:
    await asyncio.sleep(3600)


# What to do once a request has been read. Each returns False to stop serving
# the connection (the handler closes it), True to read the next request.
async def ok(writer):
    writer.write(OK)
    return True


async def reset(writer):
    _linger_reset(writer)
    return False


async def close_before_response(writer):
    return False


async def close_after_headers(writer):
    writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\n")
    await writer.drain()
    return False


async def truncated_body(writer):
    writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 1000\r\n\r\n" + b"x" * 10)
    await writer.drain()
    return False


async def short_content_length(writer):
    # Says 2, sends 10: the extra 8 bytes are garbage before the next response.
    writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n" + b"0123456789")
    return True


async def long_content_length(writer):
    # Says 50, sends 10, then neither finishes nor closes.
    writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 50\r\n\r\n" + b"x" * 10)
    await writer.drain()
    await _hold(writer)
    return False


async def bad_status_line(writer):
    writer.write(b"HTTP/1.1 2x0 Fine\r\ncontent-length: 0\r\n\r\n")
    return True


async def garbage(writer):
    writer.write(b"\x00\xff\xfe garbage \x01\x02\r\n\r\nmore \x00 garbage\r\n")
    await writer.drain()
    return False


async def endless_chunked(writer):
    writer.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n")
    while True:
        writer.write(b"400\r\n" + b"x" * 1024 + b"\r\n")
        await writer.drain()
        await asyncio.sleep(0.001)


async def endless_headers(writer):
    writer.write(b"HTTP/1.1 200 OK\r\n")
    n = 0
    while True:
        writer.write(b"x-filler-%d: %s\r\n" % (n, b"y" * 100))
        n += 1
        await writer.drain()
        await asyncio.sleep(0.0005)


_timing_names = iter(range(10**9))


async def timing_names(writer):
    # A valid answer whose Server-Timing names a new metric every time.
    timing = b"total;dur=2.5, m%d;dur=1" % next(_timing_names)
    writer.write(OK.replace(b"\r\n\r\n", b"\r\nserver-timing: " + timing + b"\r\n\r\n", 1))
    return True


async def never_answer(writer):
    await _hold(writer)
    return False


FAULTS = {
    f.__name__: f
    for f in (
        ok,
        reset,
        close_before_response,
        close_after_headers,
        truncated_body,
        short_content_length,
        long_content_length,
        bad_status_line,
        garbage,
        endless_chunked,
        endless_headers,
        never_answer,
        timing_names,
    )
}
# Faults that answer as soon as the request head is in, without reading its body.
EARLY = {"early_response"}


class Stats:
    accepted = 0
    requests = 0


async def handle(reader, writer, fault: str, stats: Stats) -> None:
    stats.accepted += 1
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            stats.requests += 1
            if fault == "early_response":
                # A large upload answered (and the connection closed) before its body is read.
                writer.write(TOO_LARGE)
                await writer.drain()
                _linger_reset(writer)
                return
            length = content_length(head)
            if length:
                await reader.readexactly(length)
            if not await FAULTS[fault](writer):
                break
    except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
        pass
    finally:
        writer.close()


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--fault", choices=[*FAULTS, *EARLY], required=True)
    args = ap.parse_args()
    stats = Stats()
    server = await asyncio.start_server(
        lambda r, w: handle(r, w, args.fault, stats), "127.0.0.1", 0
    )
    port = server.sockets[0].getsockname()[1]
    print(f"listening on http://127.0.0.1:{port}", flush=True)
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    await stop.wait()
    server.close()
    print(f"misbehave stopped: accepted={stats.accepted} requests={stats.requests}", flush=True)


if __name__ == "__main__":
    asyncio.run(main())

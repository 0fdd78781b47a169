"""A test server that answers some requests and drops the connection on others.

    python -m tests.servers.flaky --answer 3

Each connection gets ``--answer`` 200 responses, then the next request on it
is read and the connection is closed without a response (or reset, with
``--reset``). Prints ``listening on http://127.0.0.1:PORT`` and, at SIGTERM,
``flaky stopped: accepted=N answered=N dropped=N``.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import socket
import struct

from tests.servers import read_request

BODY = b'{"ok":true}'
RESPONSE = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n%s" % (
    len(BODY),
    BODY,
)


class Stats:
    accepted = 0
    answered = 0
    dropped = 0


async def handle(reader, writer, args, stats: Stats) -> None:
    stats.accepted += 1
    served = 0
    try:
        while True:
            await read_request(reader)
            if served >= args.answer:
                stats.dropped += 1
                if args.reset:
                    sock = writer.get_extra_info("socket")
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                writer.close()
                return
            writer.write(RESPONSE)
            await writer.drain()
            served += 1
            stats.answered += 1
    except (asyncio.IncompleteReadError, ConnectionError):
        writer.close()


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--answer", type=int, default=3)
    ap.add_argument("--reset", action="store_true")
    args = ap.parse_args()
    stats = Stats()
    server = await asyncio.start_server(lambda r, w: handle(r, w, args, stats), "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    print(f"listening on http://127.0.0.1:{port}", flush=True)
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    await stop.wait()
    server.close()
    print(
        f"flaky stopped: accepted={stats.accepted} answered={stats.answered}"
        f" dropped={stats.dropped}",
        flush=True,
    )


if __name__ == "__main__":
    asyncio.run(main())

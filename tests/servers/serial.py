"""A test sink with a fixed capacity: one request at a time, across all connections.

    python -m tests.servers.serial

Each request is served after ``?delay=N`` milliseconds of "work", and only one
request is served at a time, so latency grows with concurrency once it is
over one: a target with a knee. Prints ``listening on http://127.0.0.1:PORT``.
"""

from __future__ import annotations

import asyncio
import re

from tests.servers import read_request

BODY = b'{"ok":true}'
DELAY = re.compile(rb"[?&]delay=(\d+)")


async def main() -> None:
    lock = asyncio.Lock()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await read_request(reader)
                m = DELAY.search(head.split(b"\r\n", 1)[0])
                async with lock:
                    await asyncio.sleep(int(m.group(1)) / 1000 if m else 0)
                writer.write(
                    b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
                    b"content-length: %d\r\n\r\n%s" % (len(BODY), BODY)
                )
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    print(f"listening on http://127.0.0.1:{server.sockets[0].getsockname()[1]}", flush=True)
    await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main())

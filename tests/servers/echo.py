"""A test sink that answers each request with what it received, as JSON.

    python -m tests.servers.echo

Prints ``listening on http://127.0.0.1:PORT``. The answer is
``{"method", "target", "headers": [[name, value], ...], "body_length"}``.
"""

from __future__ import annotations

import asyncio
import json

import h11


async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    conn = h11.Connection(h11.SERVER)
    request = None
    length = 0
    try:
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                data = await reader.read(65536)
                conn.receive_data(data)
                if not data:
                    break
                continue
            if isinstance(event, h11.Request):
                request, length = event, 0
            elif isinstance(event, h11.Data):
                length += len(event.data)
            elif isinstance(event, h11.EndOfMessage):
                body = json.dumps(
                    {
                        "method": request.method.decode(),
                        "target": request.target.decode(),
                        "headers": [[k.decode(), v.decode()] for k, v in request.headers],
                        "body_length": length,
                    }
                ).encode()
                writer.write(
                    conn.send(
                        h11.Response(
                            status_code=200,
                            headers=[
                                ("content-type", "application/json"),
                                ("content-length", str(len(body))),
                                ("x-echo", "yes"),
                            ],
                        )
                    )
                )
                writer.write(conn.send(h11.Data(data=body)))
                writer.write(conn.send(h11.EndOfMessage()))
                await writer.drain()
                conn.start_next_cycle()
            elif isinstance(event, h11.ConnectionClosed):
                break
    except (h11.ProtocolError, ConnectionError):
        pass
    writer.close()


async def main() -> None:
    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    print(f"listening on http://127.0.0.1:{port}", flush=True)
    await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main())

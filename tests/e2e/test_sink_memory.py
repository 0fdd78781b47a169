"""chansink's memory stays flat whatever the body sizes (streams, never buffers)."""

from __future__ import annotations

import asyncio
import ssl

import pytest

from tests.support import rss_bytes

MIB = 1024 * 1024
SIZE = 50 * MIB
PARALLEL = 20
FLAT = 16 * MIB
# Over TLS each connection holds buffers of its own, whatever the body size
# (uvloop's 256 KiB TLS read buffer, OpenSSL's record buffers): measured
# 17 MiB of growth for the 40 connections with 1 MiB bodies, 24 with 10 MiB,
# 26 with 30 MiB. A sink that kept bodies would hold 40 x 10 MiB.
FLAT_TLS = 2 * PARALLEL * MIB

pytestmark = pytest.mark.slow


async def _read_head(reader: asyncio.StreamReader) -> tuple[int, dict[bytes, bytes]]:
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    status = int(lines[0].split()[1])
    headers = {}
    for line in lines[1:]:
        if line:
            k, _, v = line.partition(b":")
            headers[k.strip().lower()] = v.strip()
    return status, headers


async def _upload(port: int, size: int, chunked: bool, ssl=None) -> int:
    reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=ssl)
    block = memoryview(b"u" * MIB)
    framing = b"Transfer-Encoding: chunked" if chunked else b"Content-Length: %d" % size
    writer.write(b"POST /up HTTP/1.1\r\nHost: x\r\n" + framing + b"\r\n\r\n")
    for _ in range(size // MIB):
        if chunked:
            writer.write(b"%x\r\n" % MIB)
            writer.write(block)
            writer.write(b"\r\n")
        else:
            writer.write(block)
        await writer.drain()
    if chunked:
        writer.write(b"0\r\n\r\n")
    status, headers = await _read_head(reader)
    await reader.readexactly(int(headers[b"content-length"]))
    writer.close()
    return status


async def _download(port: int, size: int, chunked: bool, ssl=None) -> int:
    reader, writer = await asyncio.open_connection("127.0.0.1", port, limit=4 * MIB, ssl=ssl)
    flag = "&chunked=1" if chunked else ""
    writer.write(f"GET /down?response_size={size}{flag} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    status, headers = await _read_head(reader)
    got = 0
    if chunked:
        while True:
            line = await reader.readuntil(b"\r\n")
            n = int(line.strip(), 16)
            if n == 0:
                await reader.readuntil(b"\r\n")
                break
            left = n
            while left:
                data = await reader.read(min(left, MIB))
                left -= len(data)
            got += n
            await reader.readexactly(2)
    else:
        left = int(headers[b"content-length"])
        while left:
            data = await reader.read(min(left, MIB))
            assert data, "closed early"
            left -= len(data)
            got += len(data)
    writer.close()
    assert got == size
    return status


async def _storm(port: int, chunked: bool, size: int = SIZE, ssl=None) -> list[int]:
    jobs = [_upload(port, size, chunked, ssl) for _ in range(PARALLEL)]
    jobs += [_download(port, size, chunked, ssl) for _ in range(PARALLEL)]
    return await asyncio.gather(*jobs)


@pytest.mark.parametrize(
    ("args", "chunked", "secure"),
    [((), False, False), (("--no-sendfile",), False, False), ((), True, False), ((), False, True)],
    ids=["sendfile", "copy", "chunked", "tls"],
)
def test_rss_flat_under_parallel_50mib_uploads_and_downloads(
    sink_factory, tls, args, chunked, secure
):
    # Over TLS (--tls-cert): no sendfile(2), every byte encrypted in the process;
    # 10 MiB bodies keep the test short, 20 + 20 of them still far past FLAT.
    sink = sink_factory(*args, *(tls.loopback() if secure else ()))
    context = ssl.create_default_context(cafile=str(tls.ca_file)) if secure else None
    size = 10 * MIB if secure else SIZE
    asyncio.run(_download(sink.port, MIB, False, context))  # warm: the code paths are loaded
    asyncio.run(_upload(sink.port, MIB, False, context))
    idle = rss_bytes(sink.pid)
    statuses = asyncio.run(asyncio.wait_for(_storm(sink.port, chunked, size, context), 120))
    assert statuses == [200] * (2 * PARALLEL)
    peak = rss_bytes(sink.pid, "VmHWM")
    after = rss_bytes(sink.pid)
    flat = FLAT_TLS if secure else FLAT
    assert peak - idle <= flat, f"peak RSS grew by {(peak - idle) / MIB:.1f} MiB"
    assert after - idle <= flat
    sink.stop()
    assert sink.summary["body_bytes_in"] == PARALLEL * size + MIB
    assert sink.summary["bytes_out"] >= PARALLEL * size

"""Small HTTP/1.1 servers for the tests, each misbehaving in its own way."""

from __future__ import annotations

import asyncio


def content_length(head: bytes) -> int:
    """The Content-Length of a request head (0 without one)."""
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            return int(line.split(b":", 1)[1])
    return 0


async def read_request(reader: asyncio.StreamReader) -> bytes:
    """One whole request (its body by Content-Length read and dropped); its head."""
    head = await reader.readuntil(b"\r\n\r\n")
    length = content_length(head)
    if length:
        await reader.readexactly(length)
    return head

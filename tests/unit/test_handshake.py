"""The distribution handshake's secrets, against a peer over a real socket
playing the node's side (the real nodes are in tests/beam/test_dist.py)."""

from __future__ import annotations

import asyncio
import hashlib
import random
import struct

import pytest

from engine.beam.dist import CookieRejected, _handshake

COOKIE = b"the-cookie"


def digest(cookie: bytes, challenge: int) -> bytes:
    return hashlib.md5(cookie + str(challenge).encode()).digest()


async def handshake_with_peer(ack_cookie: bytes) -> dict:
    """One handshake of ours against a peer that proves it knows ``ack_cookie``;
    what the peer saw: our challenge and whether our digest was right."""
    seen: dict = {}

    async def peer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        async def frame() -> bytes:
            (n,) = struct.unpack(">H", await reader.readexactly(2))
            return await reader.readexactly(n)

        def send(body: bytes) -> None:
            writer.write(struct.pack(">H", len(body)) + body)

        assert (await frame())[:1] == b"N"
        send(b"sok")
        name = b"peer@localhost"
        their_challenge = 12345
        send(b"N" + struct.pack(">QIIH", 0, their_challenge, 1, len(name)) + name)
        reply = await frame()
        (ours,) = struct.unpack(">I", reply[1:5])
        seen["challenge"] = ours
        seen["digest_ok"] = reply[5:21] == digest(COOKIE, their_challenge)
        send(b"a" + digest(ack_cookie, ours))
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(peer, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            async with asyncio.timeout(10):
                await _handshake(reader, writer, "me@localhost", 1, COOKIE, "peer@localhost")
        finally:
            writer.close()
    finally:
        server.close()
        await server.wait_closed()
    return seen


def test_a_peer_that_knows_the_cookie_is_accepted():
    seen = asyncio.run(handshake_with_peer(COOKIE))
    assert seen["digest_ok"]


def test_a_peer_that_does_not_prove_the_cookie_is_refused():
    with pytest.raises(CookieRejected, match="did not prove it knows the cookie"):
        asyncio.run(handshake_with_peer(b"another-cookie"))


def test_our_challenge_does_not_come_from_the_seeded_random_module():
    """A challenge a peer could predict (``random``'s state is not secret, and
    any code in the process can seed it) lets a recorded digest be replayed."""
    challenges = []
    for _ in range(2):
        random.seed(1)
        challenges.append(asyncio.run(handshake_with_peer(COOKIE))["challenge"])
    assert challenges[0] != challenges[1]

"""What chanload does when a node's frames are hostile or broken, against a peer
over a real socket playing the node after the handshake (real nodes answer
in tests/beam/test_dist.py): the term is refused, the connection ends, and
every pending call says why -- not "the node closed the connection"."""

from __future__ import annotations

import asyncio
import struct
import zlib

import pytest

from engine.beam import etf
from engine.beam.dist import PASS_THROUGH, SEND, UNLINK_ID, Node, NodeDown
from engine.beam.terms import Atom, Pid

NODE = Atom("lightning@localhost")


def frame(payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + payload


def reply_frame(to: Pid, message) -> bytes:
    """SEND {2, '', To} with ``message``, as rex answers a call."""
    return frame(bytes([PASS_THROUGH]) + etf.encode((SEND, Atom(""), to)) + etf.encode(message))


def raw_reply(to: Pid, message_bytes: bytes) -> bytes:
    """A SEND whose message is ``message_bytes`` as they are (version byte included)."""
    return frame(bytes([PASS_THROUGH]) + etf.encode((SEND, Atom(""), to)) + message_bytes)


def nested(depth: int) -> bytes:
    return b"\x83" + b"h\x02a\x01" * depth + b"j"


def bomb() -> bytes:
    n = 4_000_000
    body = b"l" + struct.pack(">I", n) + b"j" * n + b"j"
    return b"\x83P" + struct.pack(">I", len(body)) + zlib.compress(body, 9)


# What the fake node sends once the call arrives: (reply, what the refusal says).
HOSTILE = {
    "oversized frame": (
        lambda pid, ref: struct.pack(">I", etf.MAX_FRAME + 1) + b"x" * 64,
        "a frame of 16,777,217 bytes",
    ),
    "deep nesting": (lambda pid, ref: raw_reply(pid, nested(10_000)), "nested deeper than"),
    "compressed bomb": (lambda pid, ref: raw_reply(pid, bomb()), "objects in one frame"),
    "truncated term": (
        lambda pid, ref: raw_reply(pid, b"\x83h\x02" + etf.encode_body(ref)),
        "truncated or malformed",
    ),
    "bad float": (lambda pid, ref: raw_reply(pid, b"\x83c" + b"x" * 31), "truncated or malformed"),
    "no version byte": (
        lambda pid, ref: raw_reply(pid, etf.encode_body((ref, 1))),
        "without a version byte",
    ),
    "control not a tuple": (
        lambda pid, ref: frame(bytes([PASS_THROUGH]) + etf.encode(7)),
        "not a tuple",
    ),
    "short UNLINK_ID": (
        lambda pid, ref: frame(bytes([PASS_THROUGH]) + etf.encode((UNLINK_ID, 1))),
        "UNLINK_ID of 2 elements",
    ),
    "bytes after the message": (
        lambda pid, ref: raw_reply(pid, etf.encode((ref, 1)) + b"zz"),
        "2 bytes after the message",
    ),
}


async def call_through_fake_node(answer) -> tuple[object, bool]:
    """One rpc through a fake node that answers with ``answer(caller_pid, ref)``.

    Returns the rpc's result (or the exception it raised) and whether the
    connection was closed by our side before chanload was asked to close it.
    """
    loop = asyncio.get_running_loop()
    closed_by_us = loop.create_future()

    async def fake_node(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            (n,) = struct.unpack(">I", await reader.readexactly(4))
            if n:
                break  # not a tick: the call
        view = memoryview(await reader.readexactly(n))
        _control, pos = etf.decode_at(view, 2)
        caller, ref = etf.decode(view[pos:])[1]
        writer.write(answer(caller, ref))
        await writer.drain()
        try:
            while await reader.read(65536):
                pass
            closed_by_us.set_result(True)
        except ConnectionError:
            closed_by_us.set_result(True)
        writer.close()

    server = await asyncio.start_server(fake_node, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    node = Node("lightning@localhost", reader, writer, "chanload_test@localhost", 1)
    try:
        try:
            outcome = await node.rpc("erlang", "node", [], timeout=10)
        except Exception as exc:
            outcome = exc
        try:
            async with asyncio.timeout(2 if outcome == NODE else 10):
                saw_close = await asyncio.shield(closed_by_us)
        except TimeoutError:
            saw_close = False
    finally:
        await node.close()
        server.close()
        await server.wait_closed()
    return outcome, saw_close


def test_a_well_formed_reply_is_the_calls_result_and_the_connection_stays():
    outcome, saw_close = asyncio.run(
        call_through_fake_node(lambda pid, ref: reply_frame(pid, (ref, NODE)))
    )
    assert outcome == NODE
    assert not saw_close


@pytest.mark.parametrize("case", list(HOSTILE), ids=list(HOSTILE))
def test_a_hostile_frame_is_refused_and_the_connection_ends_saying_so(case):
    answer, says = HOSTILE[case]
    outcome, saw_close = asyncio.run(call_through_fake_node(answer))
    assert isinstance(outcome, NodeDown), outcome
    text = str(outcome)
    assert "chanload refused a term the node sent" in text, text
    assert says in text, text
    assert "the node closed the connection" not in text
    assert saw_close, "the connection was left open"

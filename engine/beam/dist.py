"""A hidden Erlang node in asyncio: EPMD lookup, the 'N' handshake, ticks, RPC.

The authority is the erts User's Guide, "Distribution Protocol" (and
"External Term Format"), checked against real OTP 25 and 28 nodes by
tests/beam. We join as a *hidden* node (no
PUBLISHED flag), so we never appear in the target's ``Node.list()`` and never
join its mesh, and we ask for no atom cache, so every frame is a plain
``112 | control term | message term``.

About 400 lines: EPMD, the handshake and the connection are one protocol's
steps, each using the one before; splitting them would only spread the state.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import itertools
import os
import random
import secrets
import socket
import struct
import time
from dataclasses import dataclass
from typing import Any

from engine.beam import etf
from engine.beam.terms import Atom, Pid, Reference

EPMD_PORT = 4369  # or $ERL_EPMD_PORT, as erl itself reads it
PORT_PLEASE2_REQ = 122
PORT2_RESP = 119

# Distribution flags (erts User's Guide, "Distribution Flags").
DFLAG_EXTENDED_REFERENCES = 0x4
DFLAG_FUN_TAGS = 0x10
DFLAG_NEW_FUN_TAGS = 0x80
DFLAG_EXTENDED_PIDS_PORTS = 0x100
DFLAG_EXPORT_PTR_TAG = 0x200
DFLAG_BIT_BINARIES = 0x400
DFLAG_NEW_FLOATS = 0x800
DFLAG_UTF8_ATOMS = 0x10000
DFLAG_MAP_TAG = 0x20000
DFLAG_BIG_CREATION = 0x40000
DFLAG_HANDSHAKE_23 = 0x1000000
DFLAG_UNLINK_ID = 0x2000000
DFLAG_MANDATORY_25_DIGEST = 0x4000000
DFLAG_V4_NC = 1 << 34
OUR_FLAGS = (
    DFLAG_EXTENDED_REFERENCES
    | DFLAG_FUN_TAGS
    | DFLAG_NEW_FUN_TAGS
    | DFLAG_EXTENDED_PIDS_PORTS
    | DFLAG_EXPORT_PTR_TAG
    | DFLAG_BIT_BINARIES
    | DFLAG_NEW_FLOATS
    | DFLAG_UTF8_ATOMS
    | DFLAG_MAP_TAG
    | DFLAG_BIG_CREATION
    | DFLAG_HANDSHAKE_23
    | DFLAG_UNLINK_ID
    | DFLAG_MANDATORY_25_DIGEST
    | DFLAG_V4_NC
)
assert OUR_FLAGS == 0x407070F94

# Control message operations we send or answer.
REG_SEND = 6
SEND = 2
SEND_TT = 12
UNLINK_ID = 35
UNLINK_ID_ACK = 36
PASS_THROUGH = 112

# Erlang's net_ticktime: a connection that has heard nothing (not even a tick)
# for this long is down: the node is stalled, or the network is. Erlang ticks
# every net_ticktime/4; so do we.
NET_TICKTIME = 60.0


class DistError(Exception):
    """A distribution failure, with a message fit for the user (and a hint)."""

    hint = ""


class EpmdUnavailable(DistError):
    hint = "Is the node running? EPMD starts with the first named node on that host."


class NoSuchNode(DistError):
    hint = "Check --node: the name must match the node's --sname/--name exactly."


class CookieRejected(DistError):
    hint = "Check --cookie (or $CHANLOAD_COOKIE, ~/.erlang.cookie): it must match the node's."


class HandshakeError(DistError):
    pass


class NodeDown(DistError):
    hint = "The node stopped or the network dropped; results gathered before stay valid."


class RpcTimeout(DistError):
    pass


class BadRpc(DistError):
    """The node answered ``{badrpc, Reason}``."""

    def __init__(self, reason: Any, call: str) -> None:
        super().__init__(f"{call} failed on the node: {format_term(reason)}")
        self.reason = reason


def format_term(term: Any, limit: int = 300) -> str:
    try:
        text = repr(term)
    except ValueError:  # an integer past Python's digit limit for str()
        text = f"<{type(term).__name__} too large to show>"
    return text if len(text) <= limit else text[: limit - 3] + "..."


def split_node(node: str) -> tuple[str, str]:
    """``name@host`` -> (name, host); a missing host means this machine's short name."""
    name, sep, host = node.partition("@")
    if not name:
        raise ValueError(f"{node!r} is not a node name like name@host")
    return name, host if sep and host else socket.gethostname().split(".")[0]


def our_node_name(target_host: str) -> str:
    """A unique name per process, in the target's naming style (short or long)."""
    local = socket.gethostname()
    if "." in target_host:  # long names: a fully qualified host
        host = socket.getfqdn() if "." in socket.getfqdn() else local
        if "." not in host:
            host = "127.0.0.1" if target_host.replace(".", "").isdigit() else host
    else:
        host = local.split(".")[0]
    return f"chanload_{os.getpid()}_{random.randrange(16**6):06x}@{host}"


def epmd_tcp_port() -> int:
    try:
        return int(os.environ.get("ERL_EPMD_PORT", EPMD_PORT))
    except ValueError:
        return EPMD_PORT


async def epmd_port(name: str, host: str, timeout: float) -> int:
    """PORT_PLEASE2: the distribution port of node ``name`` on ``host``."""
    epmd = epmd_tcp_port()
    try:
        async with asyncio.timeout(timeout):
            reader, writer = await asyncio.open_connection(host, epmd)
    except ConnectionRefusedError:
        raise EpmdUnavailable(
            f"EPMD is not running on {host} (connection to port {epmd} refused)"
        ) from None
    except (OSError, TimeoutError) as exc:
        reason = str(exc) or "timed out"
        raise EpmdUnavailable(f"cannot reach EPMD on {host}:{epmd}: {reason}") from None
    try:
        body = bytes([PORT_PLEASE2_REQ]) + name.encode()
        writer.write(struct.pack(">H", len(body)) + body)
        async with asyncio.timeout(timeout):
            reply = await reader.read(1024)
    finally:
        writer.close()
    if len(reply) < 2 or reply[0] != PORT2_RESP:
        raise EpmdUnavailable(f"EPMD on {host} gave an unexpected answer")
    if reply[1] != 0 or len(reply) < 4:
        raise NoSuchNode(f"no node named {name!r} is registered with EPMD on {host}")
    return struct.unpack(">H", reply[2:4])[0]


def _digest(cookie: bytes, challenge: int) -> bytes:
    return hashlib.md5(cookie + str(challenge).encode()).digest()


@dataclass
class _Pending:
    future: asyncio.Future
    call: str


class Node:
    """One distribution connection to a remote node, as a hidden node."""

    def __init__(
        self,
        remote: str,
        reader,
        writer,
        our_name: str,
        creation: int,
        net_ticktime: float = NET_TICKTIME,
    ) -> None:
        self.remote = remote
        self.our_name = Atom(our_name)
        self.creation = creation
        self._reader = reader
        self._writer = writer
        self._pid = Pid(self.our_name, 1, 0, creation)
        self._ref_ids = itertools.count(1)
        self._pending: dict[Reference, _Pending] = {}
        self._last_write = time.monotonic()
        self._last_read = time.monotonic()
        self.net_ticktime = net_ticktime
        self.max_frame = etf.MAX_FRAME  # a longer frame ends the connection, unread
        self._closed = False
        self.lost: str | None = None  # why the connection ended, once it has
        self._reader_task = asyncio.get_running_loop().create_task(self._read_frames())
        self._ticker_task = asyncio.get_running_loop().create_task(self._tick())

    # -- connecting ----------------------------------------------------------

    @classmethod
    async def connect(
        cls, node: str, cookie: str, timeout: float = 5.0, net_ticktime: float = NET_TICKTIME
    ) -> Node:
        name, host = split_node(node)
        port = await epmd_port(name, host, timeout)
        remote = f"{name}@{host}"
        ours = our_node_name(host)
        try:
            async with asyncio.timeout(timeout):
                reader, writer = await asyncio.open_connection(host, port)
        except (OSError, TimeoutError) as exc:
            raise NodeDown(f"cannot connect to {remote} at {host}:{port}: {exc}") from None
        creation = random.randrange(1, 2**32)
        try:
            async with asyncio.timeout(timeout):
                await _handshake(reader, writer, ours, creation, cookie.encode(), remote)
        except BaseException:
            writer.close()
            raise
        sock = writer.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return cls(remote, reader, writer, ours, creation, net_ticktime)

    # -- calls -----------------------------------------------------------------

    def make_ref(self) -> Reference:
        n = next(self._ref_ids)
        return Reference(self.our_name, self.creation, (n & 0x3FFFF, n >> 18, 0))

    async def rpc(self, module: str, function: str, args: list, timeout: float = 15.0) -> Any:
        """``rpc:call(Node, Module, Function, Args)`` through the node's ``rex`` server."""
        call = f"{module}.{function}/{len(args)}"
        if self.lost is not None:
            raise NodeDown(f"{call}: the connection to {self.remote} is gone ({self.lost})")
        ref = self.make_ref()
        future = asyncio.get_running_loop().create_future()
        self._pending[ref] = _Pending(future, call)
        request = (
            Atom("$gen_call"),
            (self._pid, ref),
            (Atom("call"), Atom(module), Atom(function), list(args), Atom("user")),
        )
        self._send((REG_SEND, self._pid, Atom(""), Atom("rex")), request)
        try:
            # asyncio.timeout, not wait_for: on Python 3.11 wait_for swallows a
            # cancellation that races with the reply, and the caller never stops.
            async with asyncio.timeout(timeout):
                result = await future
        except TimeoutError:
            raise RpcTimeout(
                f"{call} got no answer from {self.remote} within {timeout:g}s"
            ) from None
        finally:
            self._pending.pop(ref, None)  # a late reply is dropped
        if isinstance(result, tuple) and len(result) == 2 and result[0] == "badrpc":
            raise BadRpc(result[1], call)
        return result

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._ticker_task.cancel()
        self._reader_task.cancel()
        self._writer.close()
        self._fail_all("closed by chanload")

    # -- frames ----------------------------------------------------------------

    def _send(self, control: Any, message: Any) -> None:
        payload = bytes([PASS_THROUGH]) + etf.encode(control) + etf.encode(message)
        self._write(struct.pack(">I", len(payload)) + payload)

    def _write(self, data: bytes) -> None:
        if self.lost is None:
            self._writer.write(data)
            self._last_write = time.monotonic()

    async def _read_frames(self) -> None:
        reason = "the node closed the connection"
        try:
            while True:
                header = await self._reader.readexactly(4)
                self._last_read = time.monotonic()
                (length,) = struct.unpack(">I", header)
                if length == 0:
                    self._write(header)  # answer the tick
                    continue
                if length > self.max_frame:
                    raise etf.DecodeError(
                        f"a frame of {length:,} bytes (at most {self.max_frame:,})"
                    )
                frame = await self._reader.readexactly(length)
                self._dispatch(frame)
        except asyncio.IncompleteReadError:
            pass
        except OSError as exc:
            reason = f"{type(exc).__name__}: {exc}"
        except etf.DecodeError as exc:
            # Nothing more from this node can be trusted to line up: end the
            # connection, and say why (not "the node closed the connection").
            reason = f"chanload refused a term the node sent: {exc}"
            self._writer.close()
        except asyncio.CancelledError:
            reason = "closed by chanload"
            raise
        finally:
            self.lost = self.lost or reason
            self._fail_all(self.lost)

    def _dispatch(self, frame: bytes) -> None:
        """Act on one frame: a reply to a call of ours, or an unlink to acknowledge.

        Every term in the frame shares one etf.Budget; a frame whose terms or
        shape are not what a node sends raises etf.DecodeError."""
        if frame[0] != PASS_THROUGH:
            return  # nothing else is sent to a node that asked for no atom cache
        view = memoryview(frame)
        if len(view) < 2 or view[1] != etf.VERSION:
            raise etf.DecodeError("control message without a version byte")
        budget = etf.Budget()
        control, pos = etf.decode_at(view, 2, budget)
        message = None
        if pos < len(view):
            if view[pos] != etf.VERSION:
                raise etf.DecodeError("message without a version byte")
            message, end = etf.decode_at(view, pos + 1, budget)
            if end != len(view):
                raise etf.DecodeError(f"{len(view) - end} bytes after the message")
        if not isinstance(control, tuple) or not control:
            raise etf.DecodeError(f"a control message that is not a tuple: {format_term(control)}")
        op = control[0]
        if op in (SEND, SEND_TT):
            if isinstance(message, tuple) and len(message) == 2:
                ref = message[0]
                pending = self._pending.get(ref) if isinstance(ref, Reference) else None
                if pending is not None and not pending.future.done():
                    pending.future.set_result(message[1])
        elif op == UNLINK_ID:
            if len(control) != 4:
                raise etf.DecodeError(f"an UNLINK_ID of {len(control)} elements, not 4")
            _, unlink_id, sender, receiver = control
            self._send_control((UNLINK_ID_ACK, unlink_id, receiver, sender))

    def _send_control(self, control: Any) -> None:
        payload = bytes([PASS_THROUGH]) + etf.encode(control)
        self._write(struct.pack(">I", len(payload)) + payload)

    def _fail_all(self, reason: str) -> None:
        pending, self._pending = self._pending, {}
        for p in pending.values():
            if not p.future.done():
                p.future.set_exception(
                    NodeDown(f"{p.call}: the connection to {self.remote} was lost ({reason})")
                )

    async def _tick(self) -> None:
        quarter = self.net_ticktime / 4
        while self.lost is None:
            await asyncio.sleep(quarter / 2)
            now = time.monotonic()
            if now - self._last_read > self.net_ticktime:
                # What net_kernel does: nothing heard for net_ticktime, the node is down.
                self.lost = (
                    f"nothing heard from the node for {self.net_ticktime:g}s (net_ticktime):"
                    " it is stalled, or the network is"
                )
                self._fail_all(self.lost)
                self._writer.close()
                return
            if now - self._last_write >= quarter:
                self._write(b"\0\0\0\0")


async def _handshake(reader, writer, ours: str, creation: int, cookie: bytes, remote: str) -> None:
    async def frame() -> bytes:
        try:
            (n,) = struct.unpack(">H", await reader.readexactly(2))
            return await reader.readexactly(n)
        except asyncio.IncompleteReadError:
            # A node closes right after our digest when the cookie is wrong.
            raise CookieRejected(
                f"connection to {remote} rejected during the handshake: check the cookie"
            ) from None

    def send(body: bytes) -> None:
        writer.write(struct.pack(">H", len(body)) + body)

    name = ours.encode()
    send(b"N" + struct.pack(">QIH", OUR_FLAGS, creation, len(name)) + name)
    status = await frame()
    if status[:1] != b"s":
        raise HandshakeError(f"{remote} answered the handshake with {status[:20]!r}")
    text = status[1:].decode(errors="replace")
    if text == "alive":
        send(b"sfalse")
        raise HandshakeError(f"{remote} already has a connection from a node named {ours}")
    if text not in ("ok", "ok_simultaneous"):
        raise HandshakeError(f"{remote} refused the connection ({text})")
    challenge_msg = await frame()
    if challenge_msg[:1] != b"N":
        raise HandshakeError(f"{remote} sent an old-style challenge ({challenge_msg[:1]!r})")
    their_flags, their_challenge = struct.unpack(">QI", challenge_msg[1:13])
    # The challenge must not be guessable (a node that could predict it could
    # replay a digest it saw); the digest is compared in constant time.
    ours_challenge = secrets.randbelow(2**32)
    send(b"r" + struct.pack(">I", ours_challenge) + _digest(cookie, their_challenge))
    ack = await frame()
    if ack[:1] != b"a" or not hmac.compare_digest(ack[1:17], _digest(cookie, ours_challenge)):
        raise CookieRejected(f"{remote} did not prove it knows the cookie")
    del their_flags

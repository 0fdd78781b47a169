"""TCP options that chanload, chansink and chanproxy set on their connections.

``--congestion`` chooses the congestion control of the connections a program
opens or accepts (TCP_CONGESTION, like iperf3's ``-C``):

- ``auto`` (the default): loopback connections use ``reno``, the others the
  system's default. On loopback there is no link to share or pace for, but
  BBR, the default on some systems, paces every connection with a kernel
  timer per burst of packets: on this project's VM that cut 1 MiB bodies
  between chanload and chansink to less than half (bench_results/perf-engine.md
  has both). reno is in every Linux kernel and anyone may choose it.
- ``system``: leave every connection to the system's default.
- a name (``cubic``, ``bbr``, ...): that algorithm on every connection; it
  must be available (tcp_available_congestion_control) and, without
  privileges, allowed (tcp_allowed_congestion_control).

The algorithm is set before the handshake: on a socket before it connects,
and on the listening socket for the connections it accepts (when every peer
is on loopback, or for a named choice). A connection that starts with BBR
keeps BBR's pacing after a later switch to another algorithm (the kernel sets
the socket's pacing flag in BBR's init and nothing clears it), and on this
VM that pacing cost chansink's 1 MiB downloads to wrk much of their rate
(bench_results/perf-sink.md). Only a listener on a wildcard address with
``auto`` still decides per accepted connection, after the handshake.

Only our own sockets change: a proxy under test keeps its own settings.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import ipaddress
import os
import socket
from collections.abc import Callable
from pathlib import Path

AUTO = "auto"
SYSTEM = "system"
LOOPBACK_ALGORITHM = "reno"
HELP = (
    "TCP congestion control of our connections: auto (reno on loopback, where"
    " BBR's pacing only costs CPU; the system's default elsewhere), system, or an"
    " algorithm name (cubic, bbr, ...)."
)

_PROC = Path("/proc/sys/net/ipv4")
_HAVE = hasattr(socket, "TCP_CONGESTION")


def _proc_words(name: str) -> list[str]:
    try:
        return (_PROC / name).read_text().split()
    except OSError:
        return []


def system_default() -> str:
    """The system's default congestion control ("unknown" where it cannot be read)."""
    words = _proc_words("tcp_congestion_control")
    return words[0] if words else "unknown"


def check(choice: str, option: str = "--congestion") -> str | None:
    """None when ``choice`` works here, else a one-line reason naming ``option``."""
    if choice in (AUTO, SYSTEM):
        return None
    expected = ", ".join([AUTO, SYSTEM, *_proc_words("tcp_available_congestion_control")])
    if not _HAVE:
        return f"{option} {choice!r} needs TCP_CONGESTION (Linux); expected {AUTO} or {SYSTEM}"
    if not choice or not choice.isascii() or not choice.replace("_", "").isalnum():
        return f"{option} {choice!r} is not an algorithm name; expected one of: {expected}"
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_CONGESTION, choice.encode())
        except PermissionError:
            allowed = ", ".join(_proc_words("tcp_allowed_congestion_control"))
            return (
                f"{option} {choice!r} is not allowed without privileges here;"
                f" allowed: {allowed} (or {AUTO}, {SYSTEM})"
            )
        except OSError:
            return f"{option} {choice!r} is not available here; expected one of: {expected}"
    return None


@functools.lru_cache(maxsize=256)
def is_loopback(host: str) -> bool:
    """True for 127.0.0.0/8, ::1 and IPv4-mapped loopback addresses."""
    try:
        addr = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped
    return addr.is_loopback


def algorithm(choice: str, peer: str | None) -> str | None:
    """The algorithm to set on a connection to ``peer``; None: the system's default."""
    if choice == SYSTEM:
        return None
    if choice == AUTO:
        return LOOPBACK_ALGORITHM if peer is not None and is_loopback(peer) else None
    return choice


def prepare(sock: socket.socket, choice: str, peer: str | None) -> None:
    """TCP_NODELAY, and the congestion control ``choice`` gives for ``peer``, on ``sock``.

    Meant for a socket that has not connected yet: the handshake then starts
    with the algorithm, and the system's default never runs on it.
    """
    if sock.family not in (socket.AF_INET, socket.AF_INET6):
        return
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    if choice == SYSTEM or not _HAVE:
        return
    name = algorithm(choice, peer)
    if name is not None:
        # Refused (auto): the connection keeps the system's default. A named
        # choice was checked at start.
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_CONGESTION, name.encode())


def tune(sock: socket.socket, choice: str = AUTO) -> None:
    """``prepare`` for a connected socket (the peer is read from it)."""
    if sock.family not in (socket.AF_INET, socket.AF_INET6):
        return
    peer = None
    if choice == AUTO:
        try:
            peer = sock.getpeername()[0]
        except OSError:
            peer = None  # the peer is already gone
    prepare(sock, choice, peer)


def prepare_listener(sock: socket.socket, choice: str) -> str:
    """Set ``choice`` on a listening socket, for the connections it will accept.

    Accepted connections start with the listener's algorithm. Returns the
    choice still to apply to each accepted connection: ``system`` (nothing)
    when the listener covers it; ``auto`` on a wildcard or non-loopback
    address, where only the peer's address can decide.
    """
    if choice == SYSTEM or not _HAVE or sock.family not in (socket.AF_INET, socket.AF_INET6):
        return SYSTEM
    name = choice
    if choice == AUTO:
        if not is_loopback(sock.getsockname()[0]):
            return AUTO
        name = LOOPBACK_ALGORITHM
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_CONGESTION, name.encode())
    except OSError:
        return choice
    return SYSTEM


def _addresses_of_literal(host: str, port: int) -> list[tuple] | None:
    """getaddrinfo's answer for an IP address literal, without asking it; else None."""
    try:
        addr = ipaddress.ip_address(host)
    except ValueError:
        return None
    if isinstance(addr, ipaddress.IPv6Address):
        if addr.scope_id:
            return None  # fe80::1%eth0: the resolver knows the interface's number
        return [(socket.AF_INET6, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", (host, port, 0, 0))]
    return [(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", (host, port))]


async def connect(
    loop: asyncio.AbstractEventLoop,
    factory: Callable[[], asyncio.BaseProtocol],
    host: str,
    port: int,
    choice: str = AUTO,
) -> tuple[asyncio.BaseTransport, asyncio.BaseProtocol]:
    """``loop.create_connection(factory, host, port)`` with ``prepare`` before the handshake.

    Each address ``host`` resolves to is tried in turn, as create_connection
    does; the error of a single failed address is raised as it is (``[Errno
    111] Connection refused``), several different ones together.
    """
    infos = _addresses_of_literal(host, port)
    if infos is None:
        infos = await loop.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP
        )
        if not infos:
            raise OSError(f"getaddrinfo({host!r}) returned an empty list")
    errors: list[OSError] = []
    for family, _type, proto, _name, address in infos:
        sock = socket.socket(family, socket.SOCK_STREAM, proto)
        try:
            sock.setblocking(False)
            prepare(sock, choice, address[0])
            await loop.sock_connect(sock, address)
        except OSError as exc:
            sock.close()
            if exc.errno:
                exc = type(exc)(exc.errno, os.strerror(exc.errno))
            errors.append(exc)
            continue
        except BaseException:
            sock.close()
            raise
        try:
            return await loop.create_connection(factory, sock=sock)
        except BaseException:
            sock.close()
            raise
    if len({str(exc) for exc in errors}) == 1:
        raise errors[0]
    raise OSError("Multiple exceptions: " + ", ".join(str(exc) for exc in errors))


def current(sock: socket.socket) -> str:
    """The congestion control a socket uses now."""
    raw = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_CONGESTION, 16)
    return raw.split(b"\0", 1)[0].decode()


def describe(choice: str) -> str:
    """``choice`` in words, for banners and reports."""
    default = system_default()
    if choice == AUTO:
        return f"{LOOPBACK_ALGORITHM} on loopback, {default} elsewhere (--congestion auto)"
    if choice == SYSTEM:
        return f"{default}, the system's default (--congestion system)"
    return f"{choice} (--congestion {choice})"

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

Servers set it on their listening socket (when every peer is on loopback,
or for a named choice), so that accepted connections start with it: a
connection that starts with BBR keeps BBR's pacing after a later switch to
another algorithm (the kernel sets the socket's pacing flag in BBR's init and
nothing clears it), and that pacing cost chansink's 1 MiB downloads to wrk
much of their rate (bench_results/perf-sink.md, before and after). Clients
(chanload, chanproxy's upstream pool) switch right after connecting:
connecting a prepared socket instead (``sock_connect``, then
``create_connection(sock=)``) showed no clear gain in 1 MiB uploads and
left more requests undone at the end of open-model runs at 50,000 req/s, in
ad-hoc A/B runs on this VM (cause not found). A listener on a wildcard
address with ``auto`` also decides per accepted connection.

Only our own sockets change: a proxy under test keeps its own settings.
"""

from __future__ import annotations

import functools
import ipaddress
import socket
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


def tune_transport(transport, choice: str = AUTO) -> None:
    """``tune`` the socket under an asyncio transport (when it has one)."""
    sock = transport.get_extra_info("socket")
    if sock is not None:
        tune(sock, choice)


def tune(sock: socket.socket, choice: str = AUTO) -> None:
    """TCP_NODELAY, and the congestion control ``choice`` gives, on a connected socket."""
    if sock.family not in (socket.AF_INET, socket.AF_INET6):
        return
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    if choice == SYSTEM or not _HAVE:
        return
    try:
        name = algorithm(choice, sock.getpeername()[0] if choice == AUTO else None)
        if name is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_CONGESTION, name.encode())
    except OSError:
        # The peer is already gone, or (auto) the algorithm is refused: the
        # connection keeps the system's default. A named choice was checked
        # at start.
        pass


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

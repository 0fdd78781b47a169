"""What chansink and chanproxy do to start listening: raise the open-files
limit, bind (with errors a user can act on), set --congestion on the
listening sockets (common/tcp.py), and warn beyond loopback.

Servers raise their soft open-files limit to the hard one: one descriptor per
connection, and a mock sink or a reference proxy that stops accepting at the
default 1024 would be the bottleneck of any benchmark with more connections
(Go's runtime does the same since 1.19).
"""

from __future__ import annotations

import asyncio
import errno
import ipaddress
import resource
import sys
from collections.abc import Callable
from ssl import SSLContext
from typing import NamedTuple

from common import tcp

CAP = 1 << 20  # no more than this, even when the hard limit is unlimited


class ServeError(Exception):
    """The server could not start; the message says why (exit 1)."""


def raise_open_files() -> int:
    """Set the soft RLIMIT_NOFILE to the hard limit (capped); return the soft limit now."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = CAP if hard == resource.RLIM_INFINITY else min(hard, CAP)
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):
            pass
    return soft


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class Listening(NamedTuple):
    server: asyncio.AbstractServer
    host: str  # as bound
    port: int  # as bound (the one the OS chose for 0)
    accept_congestion: str  # the --congestion choice left for each accepted connection


async def listen(
    prog: str,
    factory: Callable[[], asyncio.BaseProtocol],
    host: str,
    port: int,
    congestion: str = tcp.SYSTEM,
    ssl: SSLContext | None = None,
) -> Listening:
    """Bind ``host``:``port`` (0: any free port), with ``congestion`` on the listening
    sockets; with ``ssl``, every connection is TLS (common/tls.py)."""
    raise_open_files()
    loop = asyncio.get_running_loop()
    try:
        server = await loop.create_server(
            factory, host, port, backlog=4096, reuse_address=True, ssl=ssl
        )
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            raise ServeError(
                f"port {port} on {host} is already in use"
                " (stop the other server or choose another --port; --port 0 picks a free one)"
            ) from None
        raise ServeError(f"cannot listen on {host}:{port}: {exc.strerror}") from None
    # No connection is accepted before this returns (nothing awaits in between),
    # so every accepted connection starts with the listener's algorithm.
    left = {tcp.prepare_listener(sock, congestion) for sock in server.sockets}
    accept_congestion = tcp.SYSTEM if left == {tcp.SYSTEM} else congestion
    bound_host, bound_port = server.sockets[0].getsockname()[:2]
    if not is_loopback(host):
        print(
            f"{prog}: warning: listening on {bound_host}, which is not a loopback address:"
            " anything that can reach this machine can use it",
            file=sys.stderr,
        )
    return Listening(server, bound_host, bound_port, accept_congestion)

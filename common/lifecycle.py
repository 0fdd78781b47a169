"""SIGINT and SIGTERM, the grace period and the drain: how the three programs stop.

The same contract everywhere: the first signal asks for a graceful stop, a
second one for an immediate stop. chansink and chanproxy (:func:`serve_until_stopped`)
then stop accepting, let each open connection finish its exchange for up to
``grace`` seconds and abort what is left; chanload's run (engine/interrupt.py)
stops sending and reports what it measured.
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Callable, Collection, Iterable
from types import TracebackType
from typing import Protocol

SIGNALS = (signal.SIGINT, signal.SIGTERM)
DRAIN_POLL = 0.02  # seconds between looks at the connections still open


class Signals:
    """SIGINT/SIGTERM handlers on the running loop while in the ``with`` block.

    Each signal adds one to ``count`` and calls ``on_signal(count, name)``; the
    first also sets ``stopped``. Handlers are removed on leaving the block.
    """

    def __init__(self, on_signal: Callable[[int, str], None] | None = None) -> None:
        self.stopped = asyncio.Event()
        self.count = 0
        self.on_signal = on_signal
        self._installed: list[signal.Signals] = []

    def _handle(self, name: str) -> None:
        self.count += 1
        self.stopped.set()
        if self.on_signal is not None:
            self.on_signal(self.count, name)

    def __enter__(self) -> Signals:
        loop = asyncio.get_running_loop()
        for sig in SIGNALS:
            loop.add_signal_handler(sig, self._handle, sig.name)
            self._installed.append(sig)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        loop = asyncio.get_running_loop()
        for sig in self._installed:
            loop.remove_signal_handler(sig)
        self._installed.clear()


class Connection(Protocol):
    def shutdown(self) -> None:
        """Finish the exchange in progress, then close."""

    def abort(self) -> None:
        """Close now."""


def abort_all(connections: Iterable[Connection]) -> None:
    for conn in list(connections):
        conn.abort()


async def drain(connections: Collection[Connection], grace: float, signals: Signals) -> None:
    """Ask every connection to finish; wait up to ``grace`` (less after a second
    signal) while any is open; abort the rest. ``connections`` is the live set
    the connections remove themselves from."""
    loop = asyncio.get_running_loop()
    for conn in list(connections):
        conn.shutdown()
    deadline = loop.time() + grace
    while connections and loop.time() < deadline and signals.count < 2:
        await asyncio.sleep(DRAIN_POLL)
    abort_all(connections)


async def serve_until_stopped(
    server: asyncio.AbstractServer,
    connections: Collection[Connection],
    grace: float,
    background: Iterable[asyncio.Task] = (),
) -> None:
    """Serve until SIGINT/SIGTERM, then stop accepting and drain ``connections``.

    A second signal aborts every connection at once. ``background`` tasks
    (reporters, sweepers) are cancelled first.
    """

    def on_signal(count: int, _name: str) -> None:
        if count > 1:  # a second Ctrl-C: stop waiting for anyone
            abort_all(connections)

    with Signals(on_signal) as signals:
        try:
            await signals.stopped.wait()
        finally:
            for task in background:
                task.cancel()
            server.close()
            await drain(connections, grace, signals)
            await server.wait_closed()

"""Ctrl-C and SIGTERM during a run: stop, keep what was measured, exit 130.

The first SIGINT or SIGTERM stops sending (as if the deadline had come),
gives the requests in flight up to GRACE seconds to finish, and lets the run
end the normal way: the partial result is printed and written (CSV, JSON,
charts) marked as interrupted, the telemetry collector is torn down, child
processes are stopped, and the program exits 130. Requests still in flight
after the grace are abandoned: counted apart, not as errors (the target did
nothing wrong). A second signal stops at once: the main task is cancelled,
which still runs every ``finally`` (children, collector), but writes nothing.

The CLI wraps the whole command in :func:`guarded`; the runner asks
:func:`active` whether to watch for a stop. Code run without ``guarded``
(tests, a worker process, which its parent stops) is not interrupted by
signals.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Coroutine
from typing import Any, TextIO, TypeVar

from common.lifecycle import Signals

T = TypeVar("T")

GRACE = 2.0  # seconds in-flight requests get after the first signal


class Interrupt:
    """The stop the user asked for: ``event`` is set at the first signal."""

    def __init__(self) -> None:
        self.event = asyncio.Event()
        self.signals = 0


_active: Interrupt | None = None


def active() -> Interrupt | None:
    """The Interrupt of the command being run, if it was started through guarded()."""
    return _active


async def guarded(main: Coroutine[Any, Any, T], err: TextIO | None = None) -> T:
    """Await ``main`` with SIGINT/SIGTERM turned into a graceful stop (then a hard one)."""
    global _active
    task = asyncio.current_task()
    assert task is not None
    interrupt = Interrupt()
    stream = err or sys.stderr

    def on_signal(count: int, name: str) -> None:
        interrupt.signals = count
        if count == 1:
            interrupt.event.set()
            stream.write(
                f"\n{name}: stopping; requests in flight get {GRACE:g}s, then the partial"
                " results are reported (again to quit at once)\n"
            )
            stream.flush()
        else:
            task.cancel()

    previous = _active
    _active = interrupt
    try:
        with Signals(on_signal):
            return await main
    finally:
        _active = previous

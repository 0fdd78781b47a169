"""Executors: how many VUs run, and when they start and stop.

Executors never touch the network. They are handed a ``VUPool`` (the real
one is ``engine.http.pool.Pool``; the arrival-rate executors an ``OpenVUPool``,
``engine.http.pool.OpenPool``; tests use fakes whose "request" is a sleep)
and only start VUs, stop VUs and set the deadline after which no request
starts.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from engine.load.executors.arrival_rate import ConstantArrivalRate, RampingArrivalRate
from engine.load.executors.constant_vus import ConstantVUs
from engine.load.executors.ramping_vus import RampingVUs

Announce = Callable[[str], None]


class VUPool(Protocol):
    """What an executor may ask of the pool (engine/http/pool.py's Pool)."""

    recorder: Any  # the Recorder: the open model counts its schedule there

    def set_deadline(self, seconds_from_now: float) -> None:
        """No request starts after this."""

    def start_vu(self, held: bool = False) -> object:
        """A new VU and its connection; ``held`` VUs wait for go()."""

    async def connected(self, timeout: float) -> None:
        """Until every VU started so far is connected (or ``timeout``)."""

    def go(self) -> None:
        """The held VUs start sending."""

    def stop_vu(self, vu: object) -> None:
        """The VU stops after its request in flight."""

    async def wait_idle(self) -> None:
        """Until no request is in flight."""


class OpenVUPool(VUPool, Protocol):
    """What the open model's executors also ask (engine/http/pool.py's OpenPool)."""

    async def ready(self, timeout: float) -> int:
        """Until the connections are open; how many are."""

    def try_send(self, intended_ns: int) -> bool:
        """Send the request due at ``intended_ns`` on a free connection."""


class Executor(Protocol):
    """An executor: validated with problems(), then run on a pool."""

    def problems(self) -> list[str]:
        """Why this executor cannot run (empty when it can)."""

    async def run(self, pool: VUPool, announce: Announce | None = None) -> None:
        """Start, pace and stop VUs on ``pool`` for the executor's duration."""


__all__ = [
    "Announce",
    "ConstantArrivalRate",
    "ConstantVUs",
    "Executor",
    "OpenVUPool",
    "RampingArrivalRate",
    "RampingVUs",
    "VUPool",
]

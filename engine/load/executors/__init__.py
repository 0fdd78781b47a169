"""Executors: how many VUs run, and when they start and stop.

Executors never touch the network. They are handed a ``VUPool`` (the real
one is ``engine.client.Pool``; tests use a fake whose "request" is a sleep)
and only start VUs, stop VUs and set the deadline after which no request
starts.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from engine.load.executors.arrival_rate import ConstantArrivalRate, RampingArrivalRate
from engine.load.executors.constant_vus import ConstantVUs
from engine.load.executors.ramping_vus import RampingVUs

Announce = Callable[[str], None]


class VUPool(Protocol):
    def set_deadline(self, seconds_from_now: float) -> None: ...

    def start_vu(self, held: bool = False) -> object: ...

    async def connected(self, timeout: float) -> None: ...

    def go(self) -> None: ...

    def stop_vu(self, vu: object) -> None: ...

    async def wait_idle(self) -> None: ...


__all__ = [
    "Announce",
    "ConstantArrivalRate",
    "ConstantVUs",
    "RampingArrivalRate",
    "RampingVUs",
    "VUPool",
]

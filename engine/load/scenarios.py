"""The seven scenarios of the seed, as data.

A scenario says which methods to use, whether requests carry a body, which
sink overrides to put on the URL by default, and how VUs are scheduled. The
client never knows about scenarios; the executors never know about HTTP.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

MIB = 1024 * 1024
BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})


class ExecutorKind(enum.StrEnum):
    constant = "constant-vus"
    ramping = "ramping-vus"
    saturation = "saturation-steps"


@dataclass(frozen=True, slots=True)
class Scenario:
    name: str
    description: str
    methods: tuple[str, ...] = ("POST",)
    executor: ExecutorKind = ExecutorKind.constant
    default_payload_size: int | None = None
    default_response_size: int | None = None
    default_delay_ms: int | None = None
    direct: bool = False  # the sink itself, no proxy in between

    @property
    def sends_bodies(self) -> bool:
        return any(m in BODY_METHODS for m in self.methods)


SCENARIOS: dict[str, Scenario] = {
    s.name: s
    for s in (
        Scenario("happy_path", "Sustained POST requests at constant concurrency"),
        Scenario(
            "ramp_up",
            "Linearly ramp from 1 to --concurrency VUs over --duration, in 10 steps",
            executor=ExecutorKind.ramping,
        ),
        Scenario(
            "large_payload",
            "POST with large request bodies (default 1 MiB)",
            default_payload_size=MIB,
        ),
        Scenario(
            "large_response",
            "GET requests with large response bodies (default ?response_size=1048576)",
            methods=("GET",),
            default_response_size=MIB,
        ),
        Scenario(
            "mixed_methods",
            "Rotate through GET, POST, PUT, PATCH, DELETE (bodies on POST/PUT/PATCH)",
            methods=("GET", "POST", "PUT", "PATCH", "DELETE"),
        ),
        Scenario(
            "slow_sink",
            "Latency with a slow upstream (default ?delay=2000)",
            default_delay_ms=2000,
        ),
        Scenario(
            "direct_sink",
            "Hit the sink directly at <sink>/test: the baseline without a proxy",
            direct=True,
        ),
        Scenario(
            "saturation",
            "Steps of rising concurrency (or rate, with --rate), --duration each: where the"
            " proxy stops keeping up (the knee, with --slo-p99)",
            executor=ExecutorKind.saturation,
        ),
    )
}
# The seed's saturation levels (its upstream runner), up to --concurrency.
SATURATION_LEVELS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000)


def saturation_steps(concurrency: int) -> list[int]:
    """The seed's levels up to ``concurrency``, always ending with it."""
    steps = [n for n in SATURATION_LEVELS if n <= concurrency]
    if concurrency not in steps:
        steps.append(concurrency)
    return steps


def saturation_rates(rate: float, steps: int = 10) -> list[float]:
    """With --rate: rate/steps .. rate, linearly."""
    return [round(rate * k / steps, 3) for k in range(1, steps + 1)]


SCENARIO_NAMES = tuple(SCENARIOS)
# Today's Lightning renamed the benchmark's vocabulary (benchmarking/channels/:
# --destination, mock_destination): the same scenarios under their new names.
# Results keep the seed's names, so runs under either compare and merge.
SCENARIO_ALIASES = {"direct_destination": "direct_sink", "slow_destination": "slow_sink"}

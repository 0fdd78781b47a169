"""Observers: what watches the target while the load runs, beside the latencies.

A run has a target and a list of observers; the runner calls their hooks
and knows none of them by name. before() and at_start() go in list order,
after() and close() in reverse (the last started, the first stopped: Lightning's
memory takes its last sample, which finds a stalled node first, before the
collector is asked for its summary):

    ladder_steps()  loads to drive the target with before the load, one short
                    step each (the memory ladder); none by default
    ladder_begin()  / ladder_end(): around each of those steps
    before()        before each load (each saturation step): reset, take a baseline
    at_start()      the instant the load starts
    after()         right after the load, also when it failed or was stopped
    report(result)  put what was observed into that load's RunResult
    close()         once, after the last load, also on failure

Implementations: memory (engine/observers/memory.py: a PID tree's RSS, or a
Lightning node's erlang:memory()), server timing from the Server-Timing header
(engine/observers/servertiming.py), and Lightning's telemetry collector
(engine/lightning/).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from engine.config import RunConfig
    from engine.measure.metrics import Recorder
    from engine.measure.result import RunResult


class Observer:
    """The hooks, each doing nothing unless overridden."""

    # True when this observer reads the Server-Timing header of every response
    # (the client parses it only then: it costs a header scan per response).
    reads_server_timing = False

    def ladder_steps(self, config: RunConfig) -> list[RunConfig]:
        """Loads (each its own configuration) to drive before the load of ``config``."""
        return []

    async def ladder_begin(self, step: RunConfig, index: int) -> None:
        """Step ``index`` of the ladder starts now."""

    async def ladder_end(self, step: RunConfig) -> None:
        """That step is over (also when it failed or was stopped)."""

    async def before(self, config: RunConfig) -> None:
        """Before a load of ``config`` (saturation: before each step)."""

    def at_start(self) -> None:
        """The load starts now."""

    async def after(self, recorder: Recorder) -> None:
        """The load is over (or stopped): take the last sample, collect."""

    def report(self, result: RunResult) -> None:
        """Write what was observed during that load into ``result``."""

    async def close(self) -> None:
        """After the last load; also when the run failed or was interrupted."""

"""Which target a run has, checked, and which observers watch it.

The one place that knows the kinds by name: the sink itself or any proxy URL
(engine/target.py: resolve, preflight), or a Lightning node
(engine/lightning/); and the observers each gets: Lightning's telemetry
collector and erlang:memory(); the Server-Timing header when the preflight
saw one; the RSS of --target-pid.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TextIO

from engine.config import RunConfig
from engine.lightning import mode as lightning
from engine.observers import Observer
from engine.observers.memory import MemoryObserver, pid_probe
from engine.observers.servertiming import HeaderTiming
from engine.target import Target, preflight, resolve


@dataclass
class OpenTarget:
    target: Target
    preflight_requests: int  # made before the load (the JSON reports them)
    observers: list[Observer] = field(default_factory=list)

    @property
    def reads_server_timing(self) -> bool:
        return any(o.reads_server_timing for o in self.observers)

    async def close(self) -> None:
        """Close every observer, the last opened first; all of them, whatever fails."""
        errors = []
        for observer in reversed(self.observers):
            try:
                await observer.close()
            except Exception as exc:
                errors.append(exc)
        if errors:
            raise errors[0]


async def open_target(config: RunConfig, out: TextIO) -> OpenTarget:
    target = resolve(config)
    if target is None:  # Lightning: the node sets the target up
        session, target, requests = await lightning.open_target(config, out)
        return OpenTarget(target, requests, lightning.observers(session))
    requests = 0
    if config.preflight:
        target, requests = await preflight(target, out, config.header_pairs, config.tls)
    observers: list[Observer] = []
    if target.server_timing:
        observers.append(HeaderTiming())
    if config.target_pid is not None:
        pid = config.target_pid
        observers.append(MemoryObserver(lambda interval: pid_probe(pid, interval)))
    return OpenTarget(target, requests, observers)

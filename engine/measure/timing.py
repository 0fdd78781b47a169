"""Server-side timing: per-event durations as the proxy itself measured them.

Two sources fill the same shape: Lightning's telemetry collector and a
Server-Timing response header (metrics total, lookup, upstream, mapped onto
the seed's events request, fetch_channel, upstream).

Which event is "Total request" depends on the Lightning: the seed's wraps the
whole plug call in ``[:lightning, :channel_proxy, :request]``; today's
(lib/lightning_web/plugs/channel_proxy_plug.ex) wraps it in ``:inbound`` and
opens ``:request`` only once the channel is resolved, after ``:fetch_channel``.
The whole plug call is the total on either, so the plug overhead (total - DB
lookup - upstream) means the same thing on both.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

# The seed's rows, in its order.
SEED_EVENTS = ("request", "fetch_channel", "upstream")
# Today's Lightning: the whole plug call, channel resolved or not.
INBOUND = "inbound"
_DUR = re.compile(rb"dur\s*=\s*\"?([0-9.]+)")


def events_used(names: Mapping[str, Any] | list[str]) -> dict[str, str]:
    """Which event fills each of the seed's rows, given the events measured."""
    return {
        "total": INBOUND if INBOUND in names else "request",
        "db_lookup": "fetch_channel",
        "upstream": "upstream",
    }


def plug_overhead(means: Mapping[str, float]) -> float | None:
    """Total request - DB lookup - Upstream proxy, by means (the seed's Plug overhead)."""
    used = events_used(list(means))
    if not all(name in means for name in used.values()):
        return None
    return round(means[used["total"]] - means["fetch_channel"] - means["upstream"], 1)


@dataclass
class EventTiming:
    count: int
    mean_us: float
    min_us: int
    max_us: int
    p50_us: int
    p95_us: int
    p99_us: int
    histogram: str = ""  # HdrHistogram's compressed base64


@dataclass
class ServerTiming:
    events: dict[str, EventTiming] = field(default_factory=dict)
    lost: str | None = None
    source: str = ""
    # Requests the plug answered without resolving a channel, by outcome
    # (today's :inbound metadata: unknown_channel, invalid_uuid); None when
    # the source cannot tell.
    unresolved: dict[str, int] | None = None
    # Server-Timing header: metric values under names past the limit (16 per run).
    ignored: int = 0

    @property
    def plug_overhead_mean_us(self) -> float | None:
        return plug_overhead({name: e.mean_us for name, e in self.events.items()})

    def as_dict(self) -> dict:
        data = asdict(self)
        data["plug_overhead_mean_us"] = self.plug_overhead_mean_us
        data["events_used"] = events_used(self.events) if self.events else None
        return data


# -- the Server-Timing header (W3C Server Timing) ---------------------------------------


def parse_server_timing(value: bytes) -> list[tuple[str, float]]:
    """``[(name, milliseconds)]`` of the metrics that carry a ``dur``."""
    out = []
    for metric in value.split(b","):
        name, _, params = metric.strip().partition(b";")
        m = _DUR.search(params)
        if name and m:
            try:
                out.append((name.decode("ascii", "replace"), float(m.group(1))))
            except ValueError:
                continue
    return out

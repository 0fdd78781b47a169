"""Server-side timing: per-event durations as the proxy itself measured them.

Two sources fill the same shape: Lightning's telemetry collector (events
request, fetch_channel, upstream) and a Server-Timing response header (metrics
total, lookup, upstream, mapped onto the same events).
"""

from __future__ import annotations

from dataclasses import dataclass, field

# The seed's rows, in its order.
SEED_EVENTS = ("request", "fetch_channel", "upstream")


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

    @property
    def plug_overhead_mean_us(self) -> float | None:
        """Total request - DB lookup - Upstream proxy, by means (the seed's Plug overhead)."""
        e = self.events
        if not all(k in e for k in SEED_EVENTS):
            return None
        return round(e["request"].mean_us - e["fetch_channel"].mean_us - e["upstream"].mean_us, 1)

    def as_dict(self) -> dict:
        from dataclasses import asdict

        data = asdict(self)
        data["plug_overhead_mean_us"] = self.plug_overhead_mean_us
        return data

"""The Server-Timing response header (W3C Server Timing): parse and aggregate.

A proxy that says where its time goes (chanproxy does:
``lookup;dur=0.01, upstream;dur=1.23, total;dur=1.30``) gets the same
server-side block as Lightning's telemetry: each metric's durations go into
a histogram, and the report maps total/lookup/upstream onto the seed's rows.
"""

from __future__ import annotations

import re

from engine.metrics import Recorder
from engine.timing import EventTiming, ServerTiming

# Server-Timing metric -> the seed's event (and CSV column group).
SEED_EVENTS = {"total": "request", "lookup": "fetch_channel", "upstream": "upstream"}
_DUR = re.compile(rb"dur\s*=\s*\"?([0-9.]+)")


def parse(value: bytes) -> list[tuple[str, float]]:
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


def summarise(recorder: Recorder) -> dict | None:
    """The ServerTiming dict (the shape Lightning's collector gives) from a Recorder."""
    recorder.fold()
    if not recorder.timing:
        return None
    events = {}
    for name, h in recorder.timing.items():
        count, total, low, high = recorder.timing_stats[name]
        pct = h.get_percentile_to_value_dict([50, 95, 99])
        events[SEED_EVENTS.get(name, name)] = EventTiming(
            count=count,
            mean_us=round(total / count, 1),
            min_us=low,
            max_us=high,
            p50_us=int(pct[50]),
            p95_us=int(pct[95]),
            p99_us=int(pct[99]),
            histogram=h.encode().decode("ascii"),
        )
    return ServerTiming(events, source="Server-Timing header").as_dict()

"""The Server-Timing response header (W3C Server Timing): parse and aggregate.

A proxy that says where its time goes (chanproxy does:
``lookup;dur=0.01, upstream;dur=1.23, total;dur=1.30``) gets the same
server-side block as Lightning's telemetry: each metric's durations go into
a histogram, and the report maps total/lookup/upstream onto the seed's rows.
"""

from __future__ import annotations

from engine.measure.metrics import Recorder
from engine.measure.result import RunResult
from engine.measure.timing import EventTiming, ServerTiming
from engine.observers import Observer

# Server-Timing metric -> the seed's event (and CSV column group).
SEED_EVENTS = {"total": "request", "lookup": "fetch_channel", "upstream": "upstream"}


def summarise(recorder: Recorder) -> dict | None:
    """The ServerTiming dict (the shape Lightning's collector gives) from a Recorder."""
    recorder.fold()
    if not recorder.timing and not recorder.timing_ignored:
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
    timing = ServerTiming(events, source="Server-Timing header", ignored=recorder.timing_ignored)
    return timing.as_dict()


class HeaderTiming(Observer):
    """Server timing from the Server-Timing header of every response (the
    client parses it into the Recorder); summarised into the result."""

    reads_server_timing = True

    def __init__(self) -> None:
        self.recorder: Recorder | None = None

    async def after(self, recorder: Recorder) -> None:
        self.recorder = recorder

    def report(self, result: RunResult) -> None:
        if self.recorder is not None:
            result.server_timing = summarise(self.recorder)

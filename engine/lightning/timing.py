"""The collector's buckets as server-side timing (engine/beam/collector.exs
counts each span's durations in buckets of 3 significant digits)."""

from __future__ import annotations

from engine.lightning.setup import text
from engine.measure.metrics import new_histogram
from engine.measure.timing import INBOUND, EventTiming, ServerTiming

# -- server-side timing ------------------------------------------------------------


def timing_from_collector(summary: dict) -> ServerTiming:
    """The collector's buckets as a ServerTiming (bucket tops: upper-bound percentiles).

    ``summary`` is ``%{events: %{event => stats}, unresolved: %{outcome => n}}``.
    """
    events = {}
    for key, stats in (summary.get("events") or {}).items():
        h = new_histogram()
        low = high = None
        for bucket, n in stats.get("buckets", []):
            top = bucket_top(bucket)
            h.record_value(max(1, top), n)
            low = bucket if low is None else min(low, bucket)
            high = top if high is None else max(high, top)
        count = stats.get("count", 0)
        if not count:
            continue
        pct = h.get_percentile_to_value_dict([50, 95, 99])
        events[text(key)] = EventTiming(
            count=count,
            mean_us=round(stats.get("sum", 0) / count, 1),
            min_us=low or 0,
            max_us=high or 0,
            p50_us=int(pct[50]),
            p95_us=int(pct[95]),
            p99_us=int(pct[99]),
            histogram=h.encode().decode("ascii"),
        )
    unresolved = {text(k): n for k, n in (summary.get("unresolved") or {}).items()}
    # Only a node that emits :inbound can tell requests answered without a channel.
    knows = INBOUND in events or bool(unresolved)
    return ServerTiming(
        events, source="Lightning telemetry", unresolved=unresolved if knows else None
    )


def bucket_top(bucket: int) -> int:
    """The largest value the collector counts in ``bucket`` (3 significant digits above 1 ms).

    Percentiles then read as upper bounds, as HdrHistogram's do on the client side.
    """
    if bucket < 1000:
        return bucket
    return bucket + 10 ** (len(str(bucket)) - 3) - 1

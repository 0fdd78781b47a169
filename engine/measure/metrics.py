"""The Recorder: latencies in HdrHistograms, counters by status and error kind,
and one snapshot per second.

The hot path only appends a latency to a list and bumps a dict entry; the
list is folded into the histograms (as value -> count, a few thousand distinct
values a second) when a snapshot is taken, so recording costs ~50 ns, not the
~850 ns of HdrHistogram.record_value per request.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any

from hdrh.histogram import HdrHistogram

from engine.measure.statuses import DEFAULT, ExpectedStatuses

# Distinct Server-Timing metric names kept per run: each costs a histogram, so
# a target naming a new metric in every response cannot grow our memory
# without bound. Metrics under other names are counted (timing_ignored).
MAX_TIMING_NAMES = 16

# 1 us .. 1 h at 3 significant digits: wrk2 and k6 report at this precision.
LOWEST_US = 1
HIGHEST_US = 3_600_000_000
SIGNIFICANT_DIGITS = 3
# The transport's error kinds, then a failed TLS handshake's (engine/http/tls.py).
TRANSPORT_ERROR_KINDS = ("connect", "timeout", "closed", "reset", "protocol")
TLS_ERROR_KINDS = ("tls_certificate", "tls_hostname", "tls_not_tls", "tls_handshake", "tls_timeout")
ERROR_KINDS = TRANSPORT_ERROR_KINDS + TLS_ERROR_KINDS


def new_histogram() -> HdrHistogram:
    return HdrHistogram(LOWEST_US, HIGHEST_US, SIGNIFICANT_DIGITS)


def histogram_stats(h: HdrHistogram) -> dict[str, Any]:
    """count, p50/p95/p99/max/mean (us) and the encoded histogram (for exact merging)."""
    if not h.get_total_count():
        return {"count": 0}
    pct = h.get_percentile_to_value_dict([50, 95, 99])
    return {
        "count": h.get_total_count(),
        "p50_us": int(pct[50]),
        "p95_us": int(pct[95]),
        "p99_us": int(pct[99]),
        "max_us": int(h.get_max_value()),
        "mean_us": round(h.get_mean_value(), 1),
        "histogram": h.encode().decode("ascii"),
    }


@dataclass
class Snapshot:
    """One second of the run (the time series)."""

    t: float  # seconds since the load started, at the end of this interval
    requests: int
    errors: int
    rps: float
    p50_us: int
    p95_us: int
    p99_us: int
    max_us: int
    bytes_in: int
    bytes_out: int
    vus: int
    statuses: dict[int, int] = field(default_factory=dict)
    elapsed: float = 1.0  # seconds this interval covers (the last one is shorter)
    histogram: str = ""  # the interval's latencies, HdrHistogram-encoded (empty if none)


class Recorder:
    """Everything measured on the client side of one run (one event loop)."""

    def __init__(self, expected: ExpectedStatuses = DEFAULT) -> None:
        # Which statuses are successes (--expect-status); read once a second.
        self.expected = expected
        # Hot path, touched once per request.
        self.latencies: list[int] = []  # open model: from the intended send time
        self.latencies_uncorrected: list[int] = []  # open model only: from the actual send
        self.send_lags: list[int] = []  # open model only: actual - intended send, us
        self.dispatch_lags: list[int] = []  # open model: when the scheduler got to it, us
        self.statuses: dict[int, int] = {}
        self.bytes_in = 0
        self.bytes_out = 0
        self.body_bytes_in = 0
        self.body_bytes_out = 0
        self.memo_hits = 0  # responses counted from the framer's read memo (no parse)
        # Rare events.
        self.errors: dict[str, int] = dict.fromkeys(ERROR_KINDS, 0)
        self.error_samples: dict[str, str] = {}
        self.unknown_body_responses = 0
        self.interim_responses = 0
        self.out_of_range = 0
        # Open model.
        self.scheduled = 0  # sends due by the schedule
        self.late = 0  # due when no connection was free: waited for one (counted)
        self.dropped = 0  # late ones that waited longer than the timeout: never sent
        # Each new connection: its TCP connect and (https) TLS handshake, us.
        self.connect_times: list[int] = []
        self.handshake_times: list[int] = []
        self.tls_info: dict | None = None  # what the first handshake negotiated
        # Interrupted runs: requests still in flight after the grace, given up (not errors).
        self.abandoned = 0
        # VUs that never got a connection (still connecting, or failing, at the end).
        self.unconnected_vus = 0
        # CPU seconds each chanload process used over the load (workers: one each).
        self.cpu_seconds: list[float] = []
        self.histogram_uncorrected = new_histogram()
        self.send_lag = new_histogram()
        self.dispatch_lag = new_histogram()
        # Server-Timing durations (us) per metric, folded like the latencies.
        self.timing_pending: dict[str, list[int]] = {}
        self.timing: dict[str, HdrHistogram] = {}
        self.timing_stats: dict[str, list[int]] = {}  # name -> [count, sum, min, max]
        self.timing_names: set[str] = set()  # at most MAX_TIMING_NAMES
        self.timing_ignored = 0  # metric values under a name past the limit
        # Exact extremes (the histogram's are bucket edges, 0.1% off).
        self.min_us: int | None = None
        self.max_us: int | None = None
        # Folded results.
        self.histogram = new_histogram()
        self._interval = new_histogram()
        self._last = _Totals()
        self.series: list[Snapshot] = []

    # -- recording (beyond the hot path's direct appends) ---------------------

    def timing_slot(self, name: str) -> list[int] | None:
        """The pending list for a metric ``name`` not pending yet; None (and
        counted as ignored) when MAX_TIMING_NAMES other names came first."""
        names = self.timing_names
        if name not in names:
            if len(names) >= MAX_TIMING_NAMES:
                self.timing_ignored += 1
                return None
            names.add(name)
        values = self.timing_pending[name] = []
        return values

    def error(self, kind: str, detail: str = "") -> None:
        self.errors[kind] += 1
        if detail and kind not in self.error_samples:
            self.error_samples[kind] = detail[:300]

    @property
    def responses(self) -> int:
        return sum(self.statuses.values())

    @property
    def transport_errors(self) -> int:
        return sum(self.errors.values())

    @property
    def server_errors(self) -> int:
        return sum(n for s, n in self.statuses.items() if s >= 500)

    @property
    def failed_responses(self) -> int:
        """Responses whose status is not an expected one (default: >= 400)."""
        return self.expected.failed_count(self.statuses)

    @property
    def non_2xx(self) -> int:
        return sum(n for s, n in self.statuses.items() if not 200 <= s < 300)

    # -- folding -------------------------------------------------------------

    def fold(self) -> None:
        """Move pending latencies (and Server-Timing durations) into histograms."""
        if self.timing_pending:
            self._fold_timing()
        for name, target in (
            ("latencies_uncorrected", self.histogram_uncorrected),
            ("send_lags", self.send_lag),
            ("dispatch_lags", self.dispatch_lag),
        ):
            pending = getattr(self, name)
            if pending:
                setattr(self, name, [])
                for value, count in Counter(pending).items():
                    target.record_value(min(max(value, LOWEST_US), HIGHEST_US), count)
        pending = self.latencies
        if not pending:
            return
        self.latencies = []
        record = self._interval.record_value
        counts = Counter(pending)
        low, high = min(counts), max(counts)
        if self.min_us is None or low < self.min_us:
            self.min_us = low
        if self.max_us is None or high > self.max_us:
            self.max_us = high
        for value, count in counts.items():
            if value > HIGHEST_US:
                self.out_of_range += count
                value = HIGHEST_US
            elif value < LOWEST_US:
                value = LOWEST_US
            record(value, count)

    def _fold_timing(self) -> None:
        pending, self.timing_pending = self.timing_pending, {}
        for name, values in pending.items():
            if not values:
                continue
            h = self.timing.get(name)
            if h is None:
                h = self.timing[name] = new_histogram()
                self.timing_stats[name] = [0, 0, values[0], values[0]]
            stats = self.timing_stats[name]
            stats[0] += len(values)
            stats[1] += sum(values)
            stats[2] = min(stats[2], min(values))
            stats[3] = max(stats[3], max(values))
            for value, count in Counter(values).items():
                h.record_value(min(max(value, LOWEST_US), HIGHEST_US), count)

    def _totals(self) -> _Totals:
        """The running totals the per-second snapshots are differences of."""
        return _Totals(
            self.responses,
            self.transport_errors,
            self.failed_responses,
            self.bytes_in,
            self.bytes_out,
            dict(self.statuses),
        )

    def has_news(self) -> bool:
        """Anything recorded since the last snapshot?"""
        last = self._last
        return bool(
            self.latencies
            or self._interval.get_total_count()
            or self.responses != last.responses
            or self.transport_errors != last.transport
            or self.bytes_in != last.bytes_in
            or self.bytes_out != last.bytes_out
        )

    def close(self) -> None:
        """Fold whatever is pending into the whole-run histogram."""
        self.fold()
        if self._interval.get_total_count():
            self.histogram.add(self._interval)
            self._interval.reset()

    def snapshot(self, t: float, elapsed: float, vus: int) -> Snapshot:
        """Close the current interval (``elapsed`` seconds long) and start the next."""
        self.fold()
        interval = self._interval
        count = interval.get_total_count()
        if count:
            pct = interval.get_percentile_to_value_dict([50, 95, 99])
            p50, p95, p99 = int(pct[50]), int(pct[95]), int(pct[99])
            top = int(interval.get_max_value())
        else:
            p50 = p95 = p99 = top = 0
        now = self._totals()
        last = self._last
        requests = (now.responses - last.responses) + (now.transport - last.transport)
        snap = Snapshot(
            t=round(t, 3),
            requests=requests,
            errors=(now.transport - last.transport) + (now.failed - last.failed),
            rps=round(requests / elapsed, 1) if elapsed > 0 else 0.0,
            p50_us=p50,
            p95_us=p95,
            p99_us=p99,
            max_us=top,
            bytes_in=now.bytes_in - last.bytes_in,
            bytes_out=now.bytes_out - last.bytes_out,
            vus=vus,
            elapsed=round(elapsed, 6),
            histogram=interval.encode().decode("ascii") if count else "",
            statuses={
                s: n - last.statuses.get(s, 0)
                for s, n in now.statuses.items()
                if n != last.statuses.get(s, 0)
            },
        )
        self.series.append(snap)
        if count:
            # hdrh's add() of an empty histogram resets the minimum to 0: skip those.
            self.histogram.add(interval)
            interval.reset()
        self._last = now
        return snap

    # -- between processes (--workers) ------------------------------------------

    COUNTERS = (
        "bytes_in",
        "bytes_out",
        "body_bytes_in",
        "body_bytes_out",
        "unknown_body_responses",
        "memo_hits",
        "interim_responses",
        "out_of_range",
        "scheduled",
        "late",
        "dropped",
        "abandoned",
        "unconnected_vus",
        "timing_ignored",
    )
    HISTOGRAMS = ("histogram", "histogram_uncorrected", "send_lag", "dispatch_lag")

    def export(self) -> dict:
        """Everything recorded, closed, as plain data: a worker's report to the parent."""
        self.close()
        return {
            "counters": {name: getattr(self, name) for name in self.COUNTERS},
            "statuses": dict(self.statuses),
            "errors": dict(self.errors),
            "error_samples": dict(self.error_samples),
            "min_us": self.min_us,
            "max_us": self.max_us,
            "histograms": {name: _encode(getattr(self, name)) for name in self.HISTOGRAMS},
            "timing": {name: _encode(h) for name, h in self.timing.items()},
            "timing_stats": {name: list(v) for name, v in self.timing_stats.items()},
            "cpu_seconds": list(self.cpu_seconds),
            "connect_times": list(self.connect_times),
            "handshake_times": list(self.handshake_times),
            "tls_info": self.tls_info,
            "series": [asdict(snap) for snap in self.series],
        }

    def absorb(self, states: list[dict]) -> None:
        """Add the exports of workers that ran at the same time, from the same start.

        Exact: histograms are added, counters summed, extremes kept; the
        series are merged second by second (every worker ticks on whole
        seconds from the shared start).
        """
        for state in states:
            for name, value in state["counters"].items():
                setattr(self, name, getattr(self, name) + value)
            self.cpu_seconds += state["cpu_seconds"]
            self.connect_times += state["connect_times"]
            self.handshake_times += state["handshake_times"]
            self.tls_info = self.tls_info or state["tls_info"]
            for status, n in state["statuses"].items():
                self.statuses[status] = self.statuses.get(status, 0) + n
            for kind, n in state["errors"].items():
                self.errors[kind] = self.errors.get(kind, 0) + n
            for kind, text in state["error_samples"].items():
                self.error_samples.setdefault(kind, text)
            for attr, pick in (("min_us", min), ("max_us", max)):
                theirs, ours = state[attr], getattr(self, attr)
                if theirs is not None:
                    setattr(self, attr, theirs if ours is None else pick(ours, theirs))
            for name, text in state["histograms"].items():
                _add_encoded(getattr(self, name), text)
            for name, (count, total, low, high) in state["timing_stats"].items():
                # Each worker kept its first names; together they keep the first ones seen here.
                if name not in self.timing_names and len(self.timing_names) >= MAX_TIMING_NAMES:
                    self.timing_ignored += count
                    continue
                self.timing_names.add(name)
                _add_encoded(self.timing.setdefault(name, new_histogram()), state["timing"][name])
                mine = self.timing_stats.get(name)
                if mine is None:
                    self.timing_stats[name] = [count, total, low, high]
                else:
                    mine[0] += count
                    mine[1] += total
                    mine[2] = min(mine[2], low)
                    mine[3] = max(mine[3], high)
        self.series = merge_snapshots([st["series"] for st in states])
        self._last = self._totals()


def merge_snapshots(series: list[list[dict]]) -> list[Snapshot]:
    """Interval i of every worker covers the same second: add them up."""
    out: list[Snapshot] = []
    previous_t = 0.0
    for i in range(max((len(s) for s in series), default=0)):
        snaps = [s[i] for s in series if i < len(s)]
        snap = combine_snapshots(snaps, previous_t)
        previous_t = snap.t
        out.append(snap)
    return out


def combine_snapshots(snaps: list[dict], previous_t: float) -> Snapshot:
    """One Snapshot of the same interval as seen by several workers."""
    t = max(s["t"] for s in snaps)
    elapsed = max(t - previous_t, 1e-3)
    h = new_histogram()
    for s in snaps:
        _add_encoded(h, s["histogram"])
    requests = sum(s["requests"] for s in snaps)
    statuses: dict[int, int] = {}
    for s in snaps:
        for status, n in s["statuses"].items():
            statuses[int(status)] = statuses.get(int(status), 0) + n
    count = h.get_total_count()
    if count:
        pct = h.get_percentile_to_value_dict([50, 95, 99])
        p50, p95, p99, top = int(pct[50]), int(pct[95]), int(pct[99]), int(h.get_max_value())
    else:
        p50 = p95 = p99 = top = 0
    return Snapshot(
        t=t,
        requests=requests,
        errors=sum(s["errors"] for s in snaps),
        rps=round(requests / elapsed, 1),
        p50_us=p50,
        p95_us=p95,
        p99_us=p99,
        max_us=top,
        bytes_in=sum(s["bytes_in"] for s in snaps),
        bytes_out=sum(s["bytes_out"] for s in snaps),
        vus=sum(s["vus"] for s in snaps),
        statuses=dict(sorted(statuses.items())),
        elapsed=round(elapsed, 6),
        histogram=h.encode().decode("ascii") if count else "",
    )


def _encode(h: HdrHistogram) -> str:
    return h.encode().decode("ascii") if h.get_total_count() else ""


def _add_encoded(into: HdrHistogram, text: str) -> None:
    # hdrh's add() of an empty histogram resets the minimum to 0: skip those.
    if text:
        other = HdrHistogram.decode(text)
        if other.get_total_count():
            into.add(other)


@dataclass
class _Totals:
    responses: int = 0
    transport: int = 0
    failed: int = 0  # responses with a status not expected
    bytes_in: int = 0
    bytes_out: int = 0
    statuses: dict[int, int] = field(default_factory=dict)

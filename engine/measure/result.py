"""RunResult: the one model every report reads (console, CSV, JSON, later charts).

Figures that are also CSV columns carry the CSV's names (``total_requests``,
``rps``, ``p99_us``...). Latencies are integer microseconds; memory is bytes.
"""

from __future__ import annotations

import platform
import socket
import time
from dataclasses import asdict, dataclass, field
from typing import Any

from common import __version__, tcp
from engine.measure.metrics import (
    ERROR_KINDS,
    LOWEST_US,
    TLS_ERROR_KINDS,
    TRANSPORT_ERROR_KINDS,
    Recorder,
    Snapshot,
    histogram_stats,
    new_histogram,
)
from engine.measure.statuses import DEFAULT_EXPECT

# The seed's CSV columns, in the seed's order; new columns only ever go after.
SEED_COLUMNS = (
    "scenario",
    "concurrency",
    "duration_s",
    "total_requests",
    "rps",
    "error_count",
    "error_rate",
    "p50_us",
    "p95_us",
    "p99_us",
    "min_us",
    "max_us",
    "memory_start_bytes",
    "memory_end_bytes",
    "memory_max_bytes",
    "memory_delta_bytes",
)
# Open model only: blank in closed-model rows.
OPEN_MODEL_COLUMNS = (
    "target_rate",
    "achieved_rate",
    "scheduled",
    "late",
    "dropped",
    "send_lag_p99_us",
    "dispatch_lag_p99_us",
    "kept_up",
    "p50_uncorrected_us",
    "p95_uncorrected_us",
    "p99_uncorrected_us",
    "p999_uncorrected_us",
    "max_uncorrected_us",
)
EXTRA_COLUMNS = (
    "p999_us",
    "mean_us",
    "responses",
    "status_2xx",
    "status_3xx",
    "status_4xx",
    "status_5xx",
    "transport_errors",
    *(f"{kind}_errors" for kind in TRANSPORT_ERROR_KINDS),
    "bytes_in",
    "bytes_out",
    "body_bytes_in",
    "body_bytes_out",
    "parser",
    "target_kind",
    "url",
    "started_at",
    "interrupted",
    *(
        f"server_{event}_{stat}"
        for event in ("request", "fetch_channel", "upstream")
        for stat in ("count", "p50_us", "p95_us", "p99_us", "mean_us")
    ),
    "server_plug_overhead_mean_us",
    "memory_verdict",
    *OPEN_MODEL_COLUMNS,
    "abandoned",
    "unconnected_vus",
    "failed_responses",
    "failed_4xx",
    "failed_5xx",
    "expect_status",
    *(f"server_inbound_{stat}" for stat in ("count", "p50_us", "p95_us", "p99_us", "mean_us")),
    "server_unresolved_count",
    "server_total_event",
    # New connections and TLS (engine/http/tls.py): appended, so older files keep their columns.
    "connections_opened",
    "connect_p50_us",
    "connect_p99_us",
    "tls_handshake_p50_us",
    "tls_handshake_p99_us",
    "tls_version",
    "tls_verified",
    *(f"{kind}_errors" for kind in TLS_ERROR_KINDS),
)
# Open model: the generator kept up when it got to 99% of the due requests
# within this of their time (connection waits do not count: that is the target).
KEPT_UP_LAG_US = 10_000
CSV_COLUMNS = SEED_COLUMNS + EXTRA_COLUMNS


@dataclass
class MemorySummary:
    """The target's memory over the run (filled in by a memory probe)."""

    source: str  # e.g. "beam erlang:memory(total)" or "rss pid 1234"
    start_bytes: int | None = None
    end_bytes: int | None = None
    max_bytes: int | None = None
    samples: list[tuple[float, int]] = field(default_factory=list)  # (seconds, bytes)
    lost_at: float | None = None  # sampling stopped here: the node went away
    lost_reason: str | None = None
    series: list[dict] = field(default_factory=list)  # extra measures per sample

    @property
    def delta_bytes(self) -> int | None:
        if self.start_bytes is None or self.end_bytes is None:
            return None
        return self.end_bytes - self.start_bytes


# At this share of a core, a chanload process may be what limits the run.
BUSY_CPU = 0.9


def connection_stats(recorder: Recorder, tls_verified: bool | None) -> dict[str, Any] | None:
    """The run's new connections: TCP connect and TLS handshake times (k6's
    http_req_connecting and http_req_tls_handshaking), what TLS negotiated,
    and whether the certificate was verified (None: plain http)."""
    if not recorder.connect_times:
        return None
    connect = new_histogram()
    for us in recorder.connect_times:
        connect.record_value(max(us, LOWEST_US))
    out: dict[str, Any] = {
        "opened": len(recorder.connect_times),
        "connect": histogram_stats(connect),
    }
    if tls_verified is not None:
        handshake = new_histogram()
        for us in recorder.handshake_times:
            handshake.record_value(max(us, LOWEST_US))
        out["tls"] = {
            **(recorder.tls_info or {"version": None, "cipher": None, "alpn": None}),
            "verified": tls_verified,
        }
        out["tls_handshake"] = histogram_stats(handshake)
    return out


def generator_cpu(seconds: list[float], elapsed: float) -> dict[str, Any] | None:
    """``{"cores", "busiest_process", "processes", "busy"}`` from each process's CPU seconds."""
    if not seconds or elapsed <= 0:
        return None
    busiest = max(seconds) / elapsed
    return {
        "cores": round(sum(seconds) / elapsed, 3),
        "busiest_process": round(busiest, 3),
        "processes": len(seconds),
        "busy": busiest >= BUSY_CPU,
    }


@dataclass
class RunResult:
    scenario: str
    concurrency: int
    duration_s: float
    total_requests: int
    rps: float
    error_count: int
    error_rate: float  # percent, as the seed
    p50_us: int
    p95_us: int
    p99_us: int
    p999_us: int
    min_us: int
    max_us: int
    mean_us: float
    responses: int
    statuses: dict[int, int]
    transport_errors: int
    errors: dict[str, int]
    error_samples: dict[str, str]
    server_errors: int  # 5xx responses (failed or not)
    non_2xx: int
    bytes_in: int
    bytes_out: int
    body_bytes_in: int
    body_bytes_out: int
    unknown_body_responses: int
    out_of_range: int
    series: list[Snapshot]
    histogram: str  # HdrHistogram's standard compressed, base64 encoding
    url: str
    target_kind: str
    parser: str
    started_at: str
    ended_at: str
    started_epoch: float  # the load's start, seconds since the epoch (to align merged runs)
    command: str
    config: dict[str, Any]
    environment: dict[str, str]
    preflight_requests: int = 0
    # Responses counted from the read memo, without a parse (0 with --no-memo).
    memo_hits: int = 0
    # The generator's self-check: chanload's own CPU over the load, in cores
    # (CPU seconds per second), all processes and the busiest one.
    generator_cpu: dict[str, Any] | None = None
    memory: MemorySummary | None = None
    memory_verdict: str | None = None
    # The memory ladder before the load: its steps and what one figure would have said.
    memory_ladder: dict[str, Any] | None = None
    server_timing: dict[str, Any] | None = None
    interrupted: bool = False
    abandoned: int = 0  # interrupted: requests still in flight after the grace, given up
    unconnected_vus: int = 0  # VUs that never got a connection
    thresholds: list[dict[str, Any]] | None = None
    # Responses whose status was not expected (--expect-status; default >= 400 fails).
    failed_responses: int = 0
    failed_4xx: int = 0
    failed_5xx: int = 0
    failed_other: int = 0  # e.g. a 3xx when only 2xx are expected
    expect_status: str = DEFAULT_EXPECT
    # Lightning mode: which API the node has, and what chanload set up there.
    lightning: dict[str, Any] | None = None
    # Open model (--rate): the seed's latency columns hold the corrected values.
    target_rate: float | None = None
    achieved_rate: float | None = None
    scheduled: int | None = None
    late: int | None = None
    dropped: int | None = None
    dispatch_lag_p99_us: int | None = None
    send_lag_p50_us: int | None = None
    send_lag_p99_us: int | None = None
    send_lag_max_us: int | None = None
    kept_up: bool | None = None
    p50_uncorrected_us: int | None = None
    p95_uncorrected_us: int | None = None
    p99_uncorrected_us: int | None = None
    p999_uncorrected_us: int | None = None
    max_uncorrected_us: int | None = None
    # Open model: the other histograms, encoded, so that merged runs stay exact.
    open_histograms: dict[str, str] | None = None
    # New connections: how many, their TCP connect and (https) TLS handshake
    # times, what TLS negotiated and whether it was verified (connection_stats).
    connections: dict[str, Any] | None = None

    @classmethod
    def build(
        cls,
        *,
        recorder: Recorder,
        elapsed: float,
        started: float,
        ended: float,
        scenario: str,
        concurrency: int,
        url: str,
        target_kind: str,
        parser: str,
        command: str,
        config: dict[str, Any],
        preflight_requests: int = 0,
        memory: MemorySummary | None = None,
        interrupted: bool = False,
        target_rate: float | None = None,
        tls_verified: bool | None = None,
    ) -> RunResult:
        recorder.close()
        h = recorder.histogram
        if h.get_total_count():
            pct = h.get_percentile_to_value_dict([50, 95, 99, 99.9])
            p50, p95, p99, p999 = (int(pct[p]) for p in (50, 95, 99, 99.9))
            low, high, mean = recorder.min_us or 0, recorder.max_us or 0, h.get_mean_value()
        else:
            p50 = p95 = p99 = p999 = low = high = 0
            mean = 0.0
        responses = recorder.responses
        transport = recorder.transport_errors
        failed = recorder.expected.failed(recorder.statuses)
        total = responses + transport
        errors = transport + sum(failed.values())
        result = cls(
            scenario=scenario,
            concurrency=concurrency,
            duration_s=round(elapsed, 1),
            total_requests=total,
            rps=round(total / elapsed, 1) if elapsed > 0 else 0.0,
            error_count=errors,
            error_rate=round(100.0 * errors / total, 1) if total else 0.0,
            p50_us=p50,
            p95_us=p95,
            p99_us=p99,
            p999_us=p999,
            min_us=low,
            max_us=high,
            mean_us=round(mean, 1),
            responses=responses,
            statuses=dict(sorted(recorder.statuses.items())),
            transport_errors=transport,
            errors=dict(recorder.errors),
            error_samples=dict(recorder.error_samples),
            server_errors=recorder.server_errors,
            non_2xx=recorder.non_2xx,
            bytes_in=recorder.bytes_in,
            bytes_out=recorder.bytes_out,
            body_bytes_in=recorder.body_bytes_in,
            body_bytes_out=recorder.body_bytes_out,
            unknown_body_responses=recorder.unknown_body_responses,
            out_of_range=recorder.out_of_range,
            series=list(recorder.series),
            histogram=h.encode().decode("ascii") if h.get_total_count() else "",
            url=url,
            target_kind=target_kind,
            parser=parser,
            started_at=_iso(started),
            ended_at=_iso(ended),
            started_epoch=round(started, 6),
            command=command,
            config=config,
            environment=environment(),
            preflight_requests=preflight_requests,
            memo_hits=recorder.memo_hits,
            memory=memory,
            interrupted=interrupted,
            abandoned=recorder.abandoned,
            unconnected_vus=recorder.unconnected_vus,
            failed_responses=sum(failed.values()),
            failed_4xx=failed["4xx"],
            failed_5xx=failed["5xx"],
            failed_other=failed["other"],
            expect_status=recorder.expected.text,
            generator_cpu=generator_cpu(recorder.cpu_seconds, elapsed),
        )
        if target_rate is not None:
            result._open_model(recorder, target_rate, elapsed)
        result.connections = connection_stats(recorder, tls_verified)
        return result

    def _open_model(self, recorder: Recorder, target_rate: float, elapsed: float) -> None:
        self.target_rate = target_rate
        self.achieved_rate = round(self.total_requests / elapsed, 1) if elapsed > 0 else 0.0
        self.scheduled = recorder.scheduled
        self.late = recorder.late
        self.dropped = recorder.dropped
        dispatch = recorder.dispatch_lag
        self.dispatch_lag_p99_us = (
            int(dispatch.get_value_at_percentile(99)) if dispatch.get_total_count() else 0
        )
        lag = recorder.send_lag
        if lag.get_total_count():
            pct = lag.get_percentile_to_value_dict([50, 99])
            self.send_lag_p50_us, self.send_lag_p99_us = int(pct[50]), int(pct[99])
            self.send_lag_max_us = int(lag.get_max_value())
        else:
            self.send_lag_p50_us = self.send_lag_p99_us = self.send_lag_max_us = 0
        self.kept_up = self.dispatch_lag_p99_us <= KEPT_UP_LAG_US
        self.open_histograms = {
            name: h.encode().decode("ascii") if h.get_total_count() else ""
            for name, h in (
                ("uncorrected", recorder.histogram_uncorrected),
                ("send_lag", recorder.send_lag),
                ("dispatch_lag", recorder.dispatch_lag),
            )
        }
        h = recorder.histogram_uncorrected
        if h.get_total_count():
            pct = h.get_percentile_to_value_dict([50, 95, 99, 99.9])
            self.p50_uncorrected_us, self.p95_uncorrected_us = int(pct[50]), int(pct[95])
            self.p99_uncorrected_us, self.p999_uncorrected_us = int(pct[99]), int(pct[99.9])
            self.max_uncorrected_us = int(h.get_max_value())

    def status_class(self, hundreds: int) -> int:
        return sum(n for s, n in self.statuses.items() if s // 100 == hundreds)

    def csv_row(self) -> dict[str, Any]:
        mem = self.memory
        row: dict[str, Any] = {name: getattr(self, name, "") for name in SEED_COLUMNS}
        row["memory_start_bytes"] = _blank(mem and mem.start_bytes)
        row["memory_end_bytes"] = _blank(mem and mem.end_bytes)
        row["memory_max_bytes"] = _blank(mem and mem.max_bytes)
        row["memory_delta_bytes"] = _blank(mem and mem.delta_bytes)
        for name in EXTRA_COLUMNS:
            row[name] = getattr(self, name, "")
        for hundreds in (2, 3, 4, 5):
            row[f"status_{hundreds}xx"] = self.status_class(hundreds)
        for kind in ERROR_KINDS:
            row[f"{kind}_errors"] = self.errors.get(kind, 0)
        row["interrupted"] = str(self.interrupted).lower()
        events = (self.server_timing or {}).get("events") or {}
        for event in ("request", "fetch_channel", "upstream"):
            e = events.get(event) or {}
            for stat in ("count", "p50_us", "p95_us", "p99_us", "mean_us"):
                row[f"server_{event}_{stat}"] = e.get(stat, "")
        e = events.get("inbound") or {}
        for stat in ("count", "p50_us", "p95_us", "p99_us", "mean_us"):
            row[f"server_inbound_{stat}"] = e.get(stat, "")
        timing = self.server_timing or {}
        overhead = timing.get("plug_overhead_mean_us")
        row["server_plug_overhead_mean_us"] = "" if overhead is None else overhead
        unresolved = timing.get("unresolved")
        row["server_unresolved_count"] = "" if unresolved is None else sum(unresolved.values())
        row["server_total_event"] = (timing.get("events_used") or {}).get("total", "")
        row["memory_verdict"] = self.memory_verdict or ""
        conns = self.connections or {}
        row["connections_opened"] = conns.get("opened", "")
        for name in ("connect", "tls_handshake"):
            stats = conns.get(name) or {}
            row[f"{name}_p50_us"] = stats.get("p50_us", "")
            row[f"{name}_p99_us"] = stats.get("p99_us", "")
        tls = conns.get("tls") or {}
        row["tls_version"] = tls.get("version") or ""
        row["tls_verified"] = "" if "verified" not in tls else str(tls["verified"]).lower()
        for name in OPEN_MODEL_COLUMNS:
            value = getattr(self, name)
            row[name] = (
                "" if value is None else (str(value).lower() if name == "kept_up" else value)
            )
        return row

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["statuses"] = {str(k): v for k, v in self.statuses.items()}
        for snap in data["series"]:
            snap["statuses"] = {str(k): v for k, v in snap["statuses"].items()}
        if self.memory is not None:
            data["memory"]["delta_bytes"] = self.memory.delta_bytes
        data["chanload_version"] = __version__
        return data


def _blank(value: int | None) -> int | str:
    return "" if value is None else value


def _iso(epoch: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(epoch)) + f".{int(epoch % 1 * 1000):03d}Z"


def environment() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    info = {
        "chanload": __version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "hostname": socket.gethostname(),
        "cpus": str(__import__("os").cpu_count()),
        "tcp_congestion_default": tcp.system_default(),
    }
    for pkg in ("uvloop", "httptools", "h11", "hdrhistogram", "orjson"):
        try:
            info[pkg] = version(pkg)
        except PackageNotFoundError:
            info[pkg] = "unknown"
    return info

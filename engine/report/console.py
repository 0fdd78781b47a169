"""The console report: the seed's banner and summary block, plus what it lacked."""

from __future__ import annotations

from engine.measure.metrics import MAX_TIMING_NAMES
from engine.measure.result import RunResult
from engine.measure.statuses import DEFAULT_EXPECT
from engine.measure.units import format_bytes, format_bytes_delta, format_us

HEAVY = "═" * 47
LIGHT = "─" * 47


def banner(
    *,
    url: str,
    scenario: str,
    concurrency: int,
    duration: float,
    payload: int | None,
    response_size: int | None,
    delay: int | None,
    telemetry: str,
    parser: str,
    timeout: float,
    command: str,
    congestion: str | None = None,
    target: str = "",
    headers: tuple[tuple[str, str], ...] = (),
    expect_status: str = DEFAULT_EXPECT,
    tls: str | None = None,
) -> str:
    lines = [
        "",
        "Starting load test...",
        f"  URL:         {url}",
        *([f"  Lightning:   {target}"] if target else []),
        f"  Scenario:    {scenario}",
        f"  Concurrency: {concurrency} VUs",
        f"  Duration:    {duration:g}s",
        f"  Payload:     {payload} bytes" if payload is not None else "  Payload:     none (GET)",
    ]
    if response_size is not None:
        lines.append(f"  Response:    {response_size} bytes")
    if delay is not None:
        lines.append(f"  Delay:       {delay}ms")
    lines += [
        *(f"  Header:      {name}: {value}" for name, value in headers),
        *(
            [f"  Successes:   status {expect_status} (others fail)"]
            if expect_status != DEFAULT_EXPECT
            else []
        ),
        f"  Telemetry:   {telemetry}",
        f"  Parser:      {parser} (timeout {timeout:g}s per request)",
        *([f"  TCP:         {congestion}"] if congestion else []),
        *([f"  TLS:         {tls}"] if tls else []),
        f"  Command:     {command}",
        "",
    ]
    return "\n".join(lines)


def summary(result: RunResult) -> str:
    direct = result.target_kind == "direct"
    label = f"{result.scenario} (baseline)" if direct else result.scenario
    if result.interrupted:
        label += " (interrupted: partial results)"
    lines = [
        "",
        HEAVY,
        " Channel Load Test Results",
        HEAVY,
        f" Scenario:    {label}",
        f" Concurrency: {result.concurrency} VUs",
        f" Duration:    {result.duration_s}s",
        f" Command:     {result.command}",
        LIGHT,
        f" Requests:    {result.total_requests}",
        f" Throughput:  {result.rps} req/s",
        f" Errors:      {result.error_count} ({result.error_rate}%)  [{error_breakdown(result)}]",
    ]
    if result.statuses:
        lines.append(" Status codes:")
        lines += [f"       {code}: {n}" for code, n in sorted(result.statuses.items())]
    if result.unconnected_vus:
        lines.append(
            f" Unconnected: {result.unconnected_vus} of {result.concurrency} VUs never got a"
            " connection (see the connect errors, or a target slow to accept)"
        )
    if result.abandoned:
        lines.append(
            f" Abandoned:   {result.abandoned} (still in flight when the grace after the"
            " interrupt ran out: not counted as requests or errors)"
        )
    kinds = {k: n for k, n in result.errors.items() if n}
    if kinds:
        lines.append(" Error kinds:")
        for kind, n in sorted(kinds.items(), key=lambda kv: -kv[1]):
            sample = result.error_samples.get(kind)
            lines.append(f"       {kind}: {n}" + (f"  ({sample})" if sample else ""))
    elapsed = max(result.duration_s, 1e-9)
    if result.target_rate is not None:
        lines += open_model_section(result)
    lines += generator_lines(result)
    lines += connection_lines(result)
    lines += [
        f" Data:        in {format_bytes(result.bytes_in)}"
        f" ({format_bytes(result.bytes_in / elapsed)}/s),"
        f" out {format_bytes(result.bytes_out)} ({format_bytes(result.bytes_out / elapsed)}/s)",
        LIGHT,
        " Latency (corrected: from the intended send time):"
        if result.target_rate is not None
        else " Latency:",
        f"   p50:   {format_us(result.p50_us)}",
        f"   p95:   {format_us(result.p95_us)}",
        f"   p99:   {format_us(result.p99_us)}",
        f"   p99.9: {format_us(result.p999_us)}",
        f"   min:   {format_us(result.min_us)}",
        f"   max:   {format_us(result.max_us)}",
    ]
    if result.target_rate is not None:
        lines += [
            " Latency (uncorrected: from the actual send):",
            f"   p50:   {format_us(result.p50_uncorrected_us)}",
            f"   p95:   {format_us(result.p95_uncorrected_us)}",
            f"   p99:   {format_us(result.p99_uncorrected_us)}",
            f"   p99.9: {format_us(result.p999_uncorrected_us)}",
            f"   max:   {format_us(result.max_uncorrected_us)}",
        ]
    lines.append(LIGHT)
    lines += memory_section(result)
    lines.append(HEAVY)
    lines += timing_section(result)
    return "\n".join(lines)


TIMING_ROWS = (
    ("request", "Total request"),
    ("fetch_channel", "  DB lookup"),
    ("upstream", "  Upstream proxy"),
)
# The same rows when the proxy reported them in a Server-Timing header.
HEADER_ROWS = (
    ("request", "total"),
    ("fetch_channel", "  lookup"),
    ("upstream", "  upstream"),
)


def error_breakdown(result: RunResult) -> str:
    """'transport 0, 4xx 12, 5xx 0' (failed responses by class), and what counts as success."""
    parts = [
        f"transport {result.transport_errors}",
        f"4xx {result.failed_4xx}",
        f"5xx {result.failed_5xx}",
    ]
    if result.failed_other:
        parts.append(f"other {result.failed_other}")
    if result.expect_status != DEFAULT_EXPECT:
        parts.append(f"successes: {result.expect_status}")
    return ", ".join(parts)


def generator_lines(result: RunResult) -> list[str]:
    """chanload's own CPU over the load, and a warning when it may be the bottleneck."""
    cpu = result.generator_cpu
    if not cpu:
        return []
    busiest = cpu["busiest_process"]
    line = f" Generator:   CPU {cpu['cores']:.2f} cores"
    if cpu["processes"] > 1:
        line += f" in {cpu['processes']} processes (busiest {busiest:.0%} of a core)"
    else:
        line += f" ({busiest:.0%} of a core)"
    lines = [line]
    if cpu["busy"]:
        lines.append(
            f" WARNING:     chanload used {busiest:.0%} of a core: these numbers may measure"
            " chanload rather than the target (try --workers, or a second machine and merge)"
        )
    return lines


def connection_lines(result: RunResult) -> list[str]:
    """New connections: TCP connect and TLS handshake times (apart from request latency)."""
    conns = result.connections
    if not conns or not conns.get("opened"):
        return []

    def times(stats: dict) -> str:
        if not stats.get("count"):
            return "none finished"
        return (
            f"p50 {format_us(stats['p50_us'])}, p99 {format_us(stats['p99_us'])},"
            f" max {format_us(stats['max_us'])}"
        )

    lines = [f" Connections: {conns['opened']} opened, connect {times(conns['connect'])}"]
    tls = conns.get("tls")
    if tls is not None:
        lines.append(f" TLS:         handshake {times(conns.get('tls_handshake') or {})}")
        negotiated = ", ".join(str(tls[k]) for k in ("version", "cipher", "alpn") if tls.get(k))
        verified = "certificate verified" if tls.get("verified") else "NOT verified (--insecure)"
        lines.append(f"              {negotiated + '; ' if negotiated else ''}{verified}")
    return lines


def timing_section(result: RunResult) -> list[str]:
    """The seed's "Channel Proxy Timing (server-side)" block, plus Plug overhead."""
    timing = result.server_timing
    if timing is None:
        return []
    from_header = timing.get("source") == "Server-Timing header"
    title = " Channel Proxy Timing (server-side"
    title += ", from the Server-Timing header):" if from_header else "):"
    lines = [LIGHT, title]
    if timing.get("lost"):
        return [*lines, f"     unavailable: {timing['lost']}"]
    events = timing.get("events") or {}
    if not events:
        return [*lines, "     No telemetry data collected"]
    used = timing.get("events_used") or {}
    rows = list(HEADER_ROWS if from_header else TIMING_ROWS)
    if used.get("total", "request") != "request":
        rows[0] = (used["total"], rows[0][1])  # today's Lightning: the :inbound span
    rows += [(k, f"  {k}") for k in events if k not in dict(rows)]
    for key, label in rows:
        e = events.get(key)
        if e is None:
            continue
        lines.append(
            f"     {label:<18} p50={format_us(e['p50_us'])}, p95={format_us(e['p95_us'])},"
            f" p99={format_us(e['p99_us'])}, n={e['count']}"
        )
    overhead = timing.get("plug_overhead_mean_us")
    if overhead is not None:
        if from_header:
            label, what = "  overhead", "total - lookup - upstream"
        else:
            label, what = "  Plug overhead", "Total request - DB lookup - Upstream proxy"
        lines.append(f"     {label:<18} mean={format_us(max(overhead, 0))} ({what}, by means)")
    if used and not from_header:
        lines.append(
            f"     (events: Total request = {used['total']}, DB lookup = {used['db_lookup']},"
            f" Upstream proxy = {used['upstream']})"
        )
    if timing.get("ignored"):
        lines.append(
            f"     Ignored: {timing['ignored']} metric values under names past the first"
            f" {MAX_TIMING_NAMES} (kept per run, so a target cannot grow chanload's memory)"
        )
    unresolved = {k: n for k, n in (timing.get("unresolved") or {}).items() if n}
    if unresolved:
        kinds = ", ".join(f"{k} {n}" for k, n in sorted(unresolved.items()))
        lines.append(
            f"     Not resolved: {sum(unresolved.values())} answered without a channel"
            f" ({kinds}): not in the rows above"
        )
    return lines


def open_model_section(result: RunResult) -> list[str]:
    target = result.target_rate or 0
    ratio = (result.achieved_rate or 0) / target if target else 0
    lines = [
        f" Open model:  target {target:g} req/s, achieved {result.achieved_rate} req/s"
        f" ({ratio:.1%})",
        f"   late:      {result.late} of {result.scheduled} scheduled found no free connection"
        " and waited for one (their latency includes the wait)",
        f"   dropped:   {result.dropped} (waited longer than the timeout, never sent)",
        f"   send lag:  p50 {_us0(result.send_lag_p50_us)}, p99 {_us0(result.send_lag_p99_us)},"
        f" max {_us0(result.send_lag_max_us)} (intended to actual send)",
    ]
    if result.kept_up:
        lines.append(
            f"   generator: kept up (scheduler lag p99 {_us0(result.dispatch_lag_p99_us)},"
            " within 10ms)"
        )
    else:
        lines.append(
            f"   generator: DID NOT KEEP UP (scheduler lag p99 {_us0(result.dispatch_lag_p99_us)},"
            " over 10ms): this run is INVALID; lower --rate or add --workers"
        )
    return lines


def _us0(us: int | None) -> str:
    return format_us(us) if us else "0us"


def memory_section(result: RunResult) -> list[str]:
    mem = result.memory
    if mem is None:
        if result.target_kind == "direct":
            return [" Memory:     n/a (direct sink baseline)"]
        return [" Memory:     n/a (no memory probe for this target)"]
    lines = [
        f" Memory ({mem.source}):",
        f"   start: {format_bytes(mem.start_bytes)}",
        f"   end:   {format_bytes(mem.end_bytes)}",
        f"   max:   {format_bytes(mem.max_bytes)}",
        f"   delta: {format_bytes_delta(mem.delta_bytes)}",
    ]
    if mem.lost_at is not None:
        lines.append(f"   (sampling lost at {mem.lost_at:.1f}s: {mem.lost_reason})")
    ladder = result.memory_ladder
    if ladder:
        for i, steps in enumerate(ladder["passes"]):
            trace = ", ".join(
                f"{format_bytes(s['body_bytes'])} {format_bytes_delta(s['peak_growth_bytes'])}"
                for s in steps
            )
            when = "cold" if i == 0 else "warm"
            lines.append(f"   ladder ({when}): {trace} (peak growth by body size)")
        if ladder.get("one_figure_verdict"):
            word = ladder["one_figure_verdict"].split(":", 1)[0]
            lines.append(f"   (the seed's one-figure rule, on the cold target: {word})")
    if result.memory_verdict:
        lines.append(f" Verdict:     {result.memory_verdict}")
    return lines

"""chanload: the load generator. `chanload run` is the seed's load_test.exs.

Over 400 lines because `run` and `suite` declare some forty options, each
with its help text, which is the bulk of it; the work is in the engine
(runner, suite, report/deliver), the result commands in cli/results.py and
the shared options in cli/options.py.
"""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path
from typing import Annotated

import typer

from cli.errors import fail, run_app
from cli.options import (
    CaFileOption,
    CookieOption,
    ExpectStatusOption,
    HeaderOption,
    InsecureOption,
    MemoOption,
    MemoryLadderOption,
    NodeOption,
    ParserOption,
    RepointOption,
    SinkOption,
    TargetOption,
    TargetPidOption,
    TimeoutOption,
)
from cli.results import results_app
from common import eventloop, tcp
from common.children import python_module
from engine import __version__, interrupt
from engine.config import (
    DEFAULT_CHANNEL,
    DEFAULT_CONCURRENCY,
    DEFAULT_DURATION,
    DEFAULT_SCENARIO,
    DEFAULT_TARGET,
    DEFAULT_TIMEOUT,
    ConfigError,
    RunConfig,
    masked_argv,
)
from engine.limits import ensure_open_files
from engine.load.scenarios import SCENARIOS
from engine.measure.statuses import DEFAULT_EXPECT
from engine.target import TargetError

PROG = "chanload"
_ARGV: list[str] = []  # what is parsed
_SHOWN: list[str] = []  # what the reconstructed command shows (secrets masked later)
# Set in the environment of the process re-executed without --cookie in its argv.
COOKIE_MOVED = "CHANLOAD_COOKIE_FROM_ARGV"

app = typer.Typer(
    add_completion=False,
    pretty_exceptions_enable=False,
    no_args_is_help=True,
    context_settings={"help_option_names": ["-h", "--help"]},
    help="Benchmark an HTTP channel proxy: drive load through it, measure it, report it.",
)

SCENARIO_HELP = "\n".join(f"  {name:15s} {s.description}" for name, s in SCENARIOS.items())

RUN_HELP = f"""\
Drive HTTP load at a channel proxy (or the sink itself) and report throughput,
latency percentiles, errors and status codes, as the seed's load_test.exs did.

Scenarios:

{SCENARIO_HELP}

Closed model (the default): each VU owns one keep-alive connection and sends
request after request until --duration is over; requests in flight at the end
may finish (up to --timeout) and are counted. Open model (--rate R): requests
leave at fixed times (start + k/R) on up to --concurrency connections; a
request due when no connection is free is counted as dropped, never queued;
latency is reported corrected (from the intended send time) and uncorrected,
and the run is marked invalid if the generator itself fell behind. Errors are
transport failures (connect, timeout, closed, reset, protocol) plus responses
whose status is not a success (by default: 400 and above; see --expect-status),
each request counted once. direct_destination and slow_destination (today's
Lightning's names) are direct_sink and slow_sink.

Targets: direct_sink goes to <--sink>/test. Every other scenario goes through
a proxy: with --channel-url, any proxy at that URL; without it, Lightning:
chanload joins the node (--node, --cookie) as a hidden Erlang node, finds or
creates the channel (--channel) pointing at --sink, samples the node's memory
(erlang:memory, every --sample-interval) and collects the proxy's
server-side timing with a telemetry collector it removes afterwards.

HTTPS: every URL may be https:// (TLS 1.2/1.3, SNI, ALPN http/1.1), verified
against the system's CAs, or --ca-file's; --insecure verifies nothing (said in
the banner and the JSON). The TCP connect and the TLS handshake are timed
apart from request latency; a handshake that fails is counted under its own
error kind (tls_certificate, tls_hostname, tls_not_tls, tls_handshake,
tls_timeout), and before the load it is a one-line error (exit 1).

Exit codes: 0 done, 1 the target (or the node) could not be used, 2 invalid
options, 3 a --threshold failed.
"""


@app.command()
def version() -> None:
    """Show chanload's version."""
    print(f"chanload {__version__}")


@app.command(help=RUN_HELP, short_help="Run one scenario and report it (load_test.exs).")
def run(
    scenario: Annotated[str, typer.Option(help="Scenario to run (see above).")] = DEFAULT_SCENARIO,
    concurrency: Annotated[
        int,
        typer.Option(
            help="Concurrent virtual users (ramp_up: the last step's VUs); with --rate, the"
            " most connections the open model may use."
        ),
    ] = DEFAULT_CONCURRENCY,
    rate: Annotated[
        float | None,
        typer.Option(
            help="Open model: send this many requests a second on a fixed schedule (ramp_up:"
            " up to it in 10 steps); latency is corrected from each request's intended time."
        ),
    ] = None,
    duration: Annotated[float, typer.Option(help="Seconds of load.")] = DEFAULT_DURATION,
    target: TargetOption = DEFAULT_TARGET,
    sink: SinkOption = None,
    channel_url: Annotated[
        str | None,
        typer.Option(help="Send requests to this channel URL of any proxy (no Erlang node)."),
    ] = None,
    node: NodeOption = None,
    cookie: CookieOption = None,
    channel: Annotated[str, typer.Option(help="Channel name to find or create.")] = DEFAULT_CHANNEL,
    payload_size: Annotated[
        int | None,
        typer.Option(help="Request body size in bytes \\[default: 1024; large_payload: 1048576]."),
    ] = None,
    response_size: Annotated[
        int | None,
        typer.Option(
            help="Response body size, asked of the sink with ?response_size=N"
            " \\[default: none; large_response: 1048576]."
        ),
    ] = None,
    delay: Annotated[
        int | None,
        typer.Option(
            help="Sink delay in ms, asked with ?delay=N \\[default: none; slow_sink: 2000]."
        ),
    ] = None,
    timeout: TimeoutOption = DEFAULT_TIMEOUT,
    parser: ParserOption = "httptools",
    memo: MemoOption = True,
    csv: Annotated[
        Path | None, typer.Option(help="Append one result row to this CSV file.")
    ] = None,
    json: Annotated[
        Path | None, typer.Option(help="Write the whole result (series, histogram) as JSON.")
    ] = None,
    target_pid: TargetPidOption = None,
    memory_ladder: MemoryLadderOption = 2.0,
    sample_interval: Annotated[
        float, typer.Option(help="Seconds between memory samples (Lightning node or --target-pid).")
    ] = 1.0,
    slo_p99: Annotated[
        float | None,
        typer.Option(help="saturation: the knee is the last step with p99 within this (ms)."),
    ] = None,
    slo_error_rate: Annotated[
        float, typer.Option(help="saturation: ... and with an error rate within this (%).")
    ] = 1.0,
    workers: Annotated[
        int,
        typer.Option(
            help="Processes sharing the load (connections and rate split), one core each;"
            " their histograms are merged exactly."
        ),
    ] = 1,
    threshold: Annotated[
        list[str] | None,
        typer.Option(
            help="Pass/fail condition, repeatable: 'p99<50ms', 'error_rate<0.1%',"
            " 'memory_delta<50MB', 'rps>1000'... Any failing one: exit 3."
        ),
    ] = None,
    hdr_log: Annotated[
        Path | None,
        typer.Option(help="Write the per-second latency histograms as an HdrHistogram log."),
    ] = None,
    charts: Annotated[
        Path | None,
        typer.Option(
            help="Write PNG charts into this directory (created): latency percentiles and"
            " req/s over time, memory over time, saturation curves. Needs matplotlib.",
            show_default=False,
        ),
    ] = None,
    congestion: Annotated[str, typer.Option(help=tcp.HELP)] = tcp.AUTO,
    header: HeaderOption = None,
    expect_status: ExpectStatusOption = DEFAULT_EXPECT,
    repoint_channel: RepointOption = False,
    ca_file: CaFileOption = None,
    insecure: InsecureOption = False,
    quiet: Annotated[bool, typer.Option(help="No live progress line.")] = False,
    preflight: Annotated[
        bool,
        typer.Option(
            help="Check that the sink (and channel URL) answer before sending load;"
            " --no-preflight for targets that never answer (e.g. chansink --mode timeout)."
        ),
    ] = True,
) -> None:
    config = make_config(
        scenario=scenario,
        concurrency=concurrency,
        duration=duration,
        rate=rate,
        slo_p99_ms=slo_p99,
        slo_error_rate=slo_error_rate,
        workers=workers,
        target=target,
        sink=sink,
        node=node,
        cookie=cookie,
        channel=channel,
        channel_url=channel_url,
        payload_size=payload_size,
        response_size=response_size,
        delay=delay,
        timeout=timeout,
        parser=parser,
        memo=memo,
        congestion=congestion,
        csv=str(csv) if csv else None,
        json=str(json) if json else None,
        quiet=quiet,
        progress=not quiet and sys.stdout.isatty(),
        preflight=preflight,
        sample_interval=sample_interval,
        target_pid=target_pid,
        memory_ladder=memory_ladder,
        headers=tuple(header or ()),
        expect_status=expect_status,
        repoint_channel=repoint_channel,
        ca_file=str(ca_file) if ca_file else None,
        insecure=insecure,
        hdr_log=str(hdr_log) if hdr_log else None,
        charts=str(charts) if charts else None,
        thresholds=tuple(threshold or ()),
        argv=tuple(shown_args("run")),
    )
    if problem := ensure_open_files(config.concurrency):
        raise fail(PROG, problem, 2)

    from engine import runner  # the engine loads only when there is work to do

    try:
        result = eventloop.run(interrupt.guarded(runner.run(config, sys.stdout)))
    except TargetError as exc:
        if exc.hint:
            print(exc.hint, file=sys.stderr)
        raise fail(PROG, str(exc), exc.code) from None
    except asyncio.CancelledError:  # a second Ctrl-C: stopped at once, nothing written
        raise fail(PROG, "interrupted twice: stopped at once, no results written", 130) from None

    from engine.deliver import deliver

    code = deliver(result, config, sys.stdout)
    if code:
        raise typer.Exit(code)


def make_config(*, cookie: str | None, **options) -> RunConfig:
    """A RunConfig, or exit 2 with every problem on its own line (the last one via fail)."""
    try:
        config = RunConfig(cookie=cookie or env_cookie(), **options)
    except ConfigError as exc:
        for problem in exc.problems[:-1]:
            print(f"{PROG}: error: {problem}", file=sys.stderr)
        raise fail(PROG, exc.problems[-1], 2) from None
    for note in config.notes():
        print(f"{PROG}: warning: {note}", file=sys.stderr)
    return config


def shown_args(command: str) -> list[str]:
    """The command line as shown in reports, without the subcommand's own name."""
    return _SHOWN[1:] if _SHOWN[:1] == [command] else list(_SHOWN)


SUITE_HELP = """\
Run the seven scenarios in the seed's order (run_all.sh), with the seed's extra
flags: direct_sink, happy_path, ramp_up, large_payload (--payload-size
1048576), large_response (--response-size 1048576), mixed_methods, slow_sink
(--delay 2000).

Writes <out-dir>/<YYYY.MM.DD-HH.MM>.log (everything printed), .csv (one row
per scenario) and .json (every result, the comparison, the proxy overhead).
Stops at the first scenario that fails and says which. Ends with a table of
all scenarios and the proxy overhead the seed asked users to work out by hand:
happy_path minus direct_sink per percentile, and the throughput ratio.

Targets: --embedded (starts chansink and chanproxy on free loopback ports,
creates the channel, samples chanproxy's memory, stops both at the end, also
on Ctrl-C), any proxy (--channel-url, with {scenario} replaced by the
scenario's name if present), or Lightning (--node, --cookie).
"""


@app.command(
    help=SUITE_HELP, short_help="Run all seven scenarios, compare them, show the proxy overhead."
)
def suite(
    duration: Annotated[float, typer.Option(help="Seconds per scenario.")] = 30.0,
    concurrency: Annotated[int, typer.Option(help="Virtual users.")] = 20,
    embedded: Annotated[
        bool, typer.Option(help="Start chansink and chanproxy here and benchmark them.")
    ] = False,
    proxy_buffer: Annotated[
        bool, typer.Option(help="With --embedded: run chanproxy --buffer (the bad control).")
    ] = False,
    channel_url: Annotated[
        str | None, typer.Option(help="The channel URL of any proxy ({scenario} is replaced).")
    ] = None,
    sink: SinkOption = None,
    node: NodeOption = None,
    cookie: CookieOption = None,
    target: TargetOption = DEFAULT_TARGET,
    channel: Annotated[str, typer.Option(help="Channel name (Lightning).")] = DEFAULT_CHANNEL,
    target_pid: TargetPidOption = None,
    memory_ladder: MemoryLadderOption = 2.0,
    out_dir: Annotated[Path, typer.Option(help="Where the .log, .csv and .json go.")] = Path(
        "bench_results"
    ),
    timeout: TimeoutOption = DEFAULT_TIMEOUT,
    parser: ParserOption = "httptools",
    memo: MemoOption = True,
    congestion: Annotated[
        str, typer.Option(help=tcp.HELP + " --embedded passes it to chansink and chanproxy.")
    ] = tcp.AUTO,
    workers: Annotated[
        int, typer.Option(help="Processes sharing each scenario's load (see run --help).")
    ] = 1,
    threshold: Annotated[
        list[str] | None,
        typer.Option(help="Pass/fail condition on every scenario (see run --help); exit 3."),
    ] = None,
    charts: Annotated[
        bool,
        typer.Option(
            help="Draw PNG charts into <out-dir>/<stamp>-charts/ (latency and req/s over"
            " time, memory, an overview of all scenarios). Needs matplotlib."
        ),
    ] = True,
    header: HeaderOption = None,
    expect_status: ExpectStatusOption = DEFAULT_EXPECT,
    repoint_channel: RepointOption = False,
    ca_file: CaFileOption = None,
    insecure: InsecureOption = False,
    tls: Annotated[
        bool,
        typer.Option(
            help="With --embedded: chansink and chanproxy serve https, chanproxy speaks"
            " https to chansink, all with certificates from a CA made at start (and"
            " verified: chanload trusts that CA).",
        ),
    ] = False,
) -> None:
    from engine import suite as suite_mod
    from engine.embedded import Embedded, EmbeddedError

    if embedded and (channel_url or node):
        raise fail(PROG, "--embedded starts its own proxy: leave out --channel-url and --node", 2)
    if tls and not embedded:
        raise fail(PROG, "--tls is for --embedded; for other targets give https:// URLs", 2)
    if out_dir.exists() and not out_dir.is_dir():
        raise fail(PROG, f"--out-dir {out_dir}: not a directory", 2)
    command = " ".join(["chanload", "suite", *masked_argv(shown_args("suite"))])
    # Every usage error before anything starts; the scenarios are derived from it.
    base = make_config(
        scenario="direct_sink",
        concurrency=concurrency,
        duration=duration,
        target=target,
        sink=sink,
        node=node,
        cookie=cookie,
        channel=channel,
        channel_url=channel_url,
        timeout=timeout,
        parser=parser,
        memo=memo,
        congestion=congestion,
        quiet=True,
        target_pid=target_pid,
        memory_ladder=memory_ladder,
        workers=workers,
        headers=tuple(header or ()),
        expect_status=expect_status,
        repoint_channel=repoint_channel,
        ca_file=str(ca_file) if ca_file else None,
        insecure=insecure,
        thresholds=tuple(threshold or ()),
    )
    if problem := ensure_open_files(concurrency):
        raise fail(PROG, problem, 2)
    try:
        if embedded:
            try:
                with Embedded(
                    proxy_buffer=proxy_buffer, channel=channel, congestion=congestion, tls=tls
                ) as emb:
                    print(emb.describe())
                    base = replace_config(
                        base,
                        sink=emb.sink.url,
                        channel_url=emb.channel_url,
                        target_pid=emb.proxy_pid,
                        ca_file=emb.ca_file or base.ca_file,
                    )
                    outcome = eventloop.run(
                        interrupt.guarded(
                            suite_mod.run_suite(base, out_dir, sys.stdout, command, charts)
                        )
                    )
            except EmbeddedError as exc:
                raise fail(PROG, str(exc), 1) from None
        else:
            outcome = eventloop.run(
                interrupt.guarded(
                    suite_mod.run_suite(base, out_dir, sys.stdout, command, charts)
                )
            )
    except asyncio.CancelledError:  # a second Ctrl-C: stopped at once
        raise fail(PROG, "interrupted twice: stopped at once", 130) from None
    if outcome.interrupted:
        raise typer.Exit(130)
    if outcome.failed:
        raise typer.Exit(1)
    if outcome.thresholds_failed:
        raise typer.Exit(3)


lightning_app = typer.Typer(
    no_args_is_help=True,
    help="What chanload leaves on a Lightning node, and how to remove it.",
)
app.add_typer(lightning_app, name="lightning")
app.add_typer(results_app)  # merge, compare, chart (cli/results.py)


@lightning_app.command(short_help="Remove the channel, project and user chanload created.")
def cleanup(
    node: NodeOption = None,
    cookie: CookieOption = None,
    channel: Annotated[
        str, typer.Option(help="Channel name, on a Lightning that cannot list a project's.")
    ] = DEFAULT_CHANNEL,
) -> None:
    """Remove what chanload created on a Lightning node, through the node's own functions.

    A run leaves its user (chanload-load-test@example.com), the 'load-test'
    project that user owns, and the channels in it (each with the requests
    Lightning recorded). This deletes the channels (delete_channel, with the
    user as the actor, where Lightning has it), the project (delete_project)
    and the user (purge_user or delete_user), and detaches any telemetry
    collector a run could not remove (do not run it while a run is going).
    Same-named channels and projects of anyone else are left alone.
    """
    config = make_config(node=node, cookie=cookie, channel=channel)
    from engine.lightning import mode as lightning

    try:
        removed = eventloop.run(lightning.cleanup(config, sys.stdout))
    except TargetError as exc:
        if exc.hint:
            print(exc.hint, file=sys.stderr)
        raise fail(PROG, str(exc), exc.code) from None
    if not removed:
        print("Nothing of chanload's was on the node.")
        return
    print(f"Removed {len(removed)}:")
    for line in removed:
        print(f"  {line}")


def replace_config(config: RunConfig, **changes) -> RunConfig:
    from dataclasses import replace

    return replace(config, **changes)


def main(argv: list[str] | None = None) -> None:
    _ARGV[:] = list(sys.argv[1:] if argv is None else argv)
    given = [a for a in _ARGV if a == "--cookie" or a.startswith("--cookie=")]
    if len(given) > 1:
        # Which one would win is a guess the user should not have to make, and
        # the re-exec below would leave both in /proc/PID/cmdline.
        print(f"{PROG}: error: --cookie given {len(given)} times; give it once", file=sys.stderr)
        sys.exit(2)
    if argv is None:
        move_cookie_out_of_argv(_ARGV)  # re-executes itself when --cookie is there
    _SHOWN[:] = _ARGV
    if os.environ.pop(COOKIE_MOVED, None) == "1":
        _SHOWN.extend(["--cookie", "***"])
    env_cookie()  # out of the environment before any child starts
    sys.exit(run_app(app, PROG, _ARGV))


_ENV_COOKIE: dict[str, str] = {}


def env_cookie() -> str | None:
    """$CHANLOAD_COOKIE, read once and removed from this process's environment,
    so that no child (workers, embedded chansink/chanproxy) inherits it: none
    of them joins the node."""
    value = os.environ.pop("CHANLOAD_COOKIE", None)
    if value is not None:
        _ENV_COOKIE["cookie"] = value
    return _ENV_COOKIE.get("cookie")


def move_cookie_out_of_argv(argv: list[str]) -> None:
    """Keep the Erlang cookie out of ``ps``: /proc/PID/cmdline is world-readable.

    A ``--cookie`` given on the command line is moved into CHANLOAD_COOKIE
    (the environment is readable by the same user only) and chanload
    re-executes itself once without it. Nothing changes for the user: the
    command shown still says ``--cookie ***``.
    """
    for i, arg in enumerate(argv):
        if arg == "--cookie" and i + 1 < len(argv):
            value, rest = argv[i + 1], argv[:i] + argv[i + 2 :]
            break
        if arg.startswith("--cookie="):
            value, rest = arg.split("=", 1)[1], argv[:i] + argv[i + 1 :]
            break
    else:
        return
    env = dict(os.environ, CHANLOAD_COOKIE=value, **{COOKIE_MOVED: "1"})
    sys.stdout.flush()
    os.execve(sys.executable, python_module("cli.chanload", *rest), env)


if __name__ == "__main__":
    main()

"""chanload run's configuration: one frozen object, validated once, all problems at once."""

from __future__ import annotations

import shlex
import socket
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from common import tcp
from engine.http.tls import TlsSettings
from engine.load.scenarios import SCENARIO_ALIASES, SCENARIO_NAMES, SCENARIOS, Scenario
from engine.measure import thresholds as thresholds_mod
from engine.measure.statuses import DEFAULT_EXPECT, ExpectedStatuses, parse_expect
from engine.outputs import unwritable, unwritable_dir
from engine.procfs import check_pid
from engine.report.charts import ChartsUnavailable, require_matplotlib

# The seed's defaults (load_test.exs).
DEFAULT_TARGET = "http://localhost:4000"
DEFAULT_SINK = "http://localhost:4001"
DEFAULT_CHANNEL = "load-test"
DEFAULT_SCENARIO = "happy_path"
DEFAULT_CONCURRENCY = 10
DEFAULT_DURATION = 30.0
DEFAULT_PAYLOAD_SIZE = 1024
DEFAULT_TIMEOUT = 30.0
# The memory ladder's steps: a few seconds each tell; a minute each is plenty.
MAX_LADDER_STEP = 60.0
PARSERS = ("httptools", "h11")
SECRET_OPTIONS = ("--cookie",)
# Header values never shown (banner, command line, JSON): credentials.
SECRET_HEADERS = frozenset({"authorization", "proxy-authorization", "x-api-key", "cookie"})
HEADER_OPTIONS = ("-H", "--header")
# Headers -H may not set: chanload frames every request itself.
FRAMING_HEADERS = frozenset({"host", "content-length", "transfer-encoding"})
# RFC 9110 5.6.2: a field name is a token.
_TCHAR = frozenset("!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")


class ConfigError(ValueError):
    """Invalid settings; ``problems`` holds one line per option."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems


DEFAULT_PORTS = {"http": 80, "https": 443}


@dataclass(frozen=True, slots=True)
class HttpUrl:
    """An http:// or https:// URL split into what the client needs."""

    scheme: str
    host: str
    port: int
    path: str  # path and query, as sent on the request line

    @property
    def authority(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return host if self.port == DEFAULT_PORTS[self.scheme] else f"{host}:{self.port}"

    def __str__(self) -> str:
        return f"{self.scheme}://{self.authority}{self.path}"

    def join(self, path: str) -> HttpUrl:
        base = self.path.rstrip("/") if self.path != "/" else ""
        return HttpUrl(self.scheme, self.host, self.port, base + path)

    def with_query(self, params: dict[str, int]) -> HttpUrl:
        if not params:
            return self
        extra = "&".join(f"{k}={v}" for k, v in params.items())
        sep = "&" if "?" in self.path else "?"
        return HttpUrl(self.scheme, self.host, self.port, self.path + sep + extra)


def parse_url(value: str, option: str) -> HttpUrl:
    """Parse an http:// or https:// URL or raise ValueError with a message naming ``option``."""
    try:
        parts = urlsplit(value.strip())
        port = parts.port
    except ValueError as exc:
        raise ValueError(f"{option} {value!r} is not a valid URL ({exc})") from None
    scheme = parts.scheme.lower()
    if scheme not in DEFAULT_PORTS or not parts.hostname:
        raise ValueError(f"{option} {value!r} is not a URL like http://host:port or https://host")
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    return HttpUrl(scheme, parts.hostname, port or DEFAULT_PORTS[scheme], path)


def default_node() -> str:
    return f"lightning@{socket.gethostname().split('.')[0]}"


def mask_header(line: str) -> str:
    """``'X-Api-Key: k'`` -> ``'X-Api-Key: ***'``; other headers as they are."""
    name, colon, _ = line.partition(":")
    return f"{name}: ***" if colon and name.strip().lower() in SECRET_HEADERS else line


def masked_headers(pairs: tuple[tuple[str, str], ...]) -> tuple[tuple[str, str], ...]:
    return tuple((n, "***" if n.lower() in SECRET_HEADERS else v) for n, v in pairs)


def masked_argv(argv: tuple[str, ...] | list[str]) -> list[str]:
    """``argv`` with secrets replaced by ``***``: the cookie, credentials in -H."""
    out: list[str] = []
    hide_next = False
    header_next = False
    for arg in argv:
        if hide_next:
            out.append("***")
            hide_next = False
            continue
        if header_next:
            out.append(mask_header(arg))
            header_next = False
            continue
        if arg in HEADER_OPTIONS:
            out.append(arg)
            header_next = True
            continue
        if arg.startswith("--header="):
            out.append("--header=" + mask_header(arg.partition("=")[2]))
            continue
        if arg.startswith("-H") and len(arg) > 2:
            out.append("-H" + mask_header(arg[2:]))
            continue
        name, eq, _ = arg.partition("=")
        if name in SECRET_OPTIONS:
            if eq:
                out.append(f"{name}=***")
            else:
                out.append(arg)
                hide_next = True
            continue
        out.append(arg)
    return out


def parse_header(line: str) -> tuple[str, str]:
    """``'Name: value'`` -> (name, value); ValueError naming what is wrong."""
    name, colon, value = line.partition(":")
    name, value = name.strip(), value.strip()
    if not colon or not name:
        raise ValueError(f"--header {line!r}: expected 'Name: value'")
    if any(c in line for c in "\r\n\0"):
        raise ValueError(f"--header {line!r}: a header may not contain CR, LF or NUL")
    if not set(name) <= _TCHAR:
        raise ValueError(f"--header {line!r}: {name!r} is not a valid header name")
    if name.lower() in FRAMING_HEADERS:
        raise ValueError(
            f"--header {line!r}: chanload sets {name} itself (it frames every request);"
            " it cannot be overridden"
        )
    if any(not (" " <= c <= "~" or c == "\t") for c in value):
        raise ValueError(
            f"--header {line!r}: the value must be printable ASCII (no control characters)"
        )
    return name, value


MAX_WORKERS = 64


@dataclass(frozen=True, slots=True)
class RunConfig:
    scenario: str = DEFAULT_SCENARIO
    concurrency: int = DEFAULT_CONCURRENCY
    duration: float = DEFAULT_DURATION
    target: str = DEFAULT_TARGET
    sink: str | None = None  # None: the default, http://localhost:4001
    node: str | None = None
    cookie: str | None = field(default=None, repr=False)
    channel: str = DEFAULT_CHANNEL
    channel_url: str | None = None
    payload_size: int | None = None  # None: the scenario's default, else 1024
    response_size: int | None = None  # None: the scenario's default, else none
    delay: int | None = None  # ms; None: the scenario's default, else none
    timeout: float = DEFAULT_TIMEOUT
    parser: str = "httptools"
    memo: bool = True  # count a response read again byte for byte from the framer's memo
    csv: str | None = None
    json: str | None = None
    quiet: bool = False
    progress: bool = False
    preflight: bool = True
    sample_interval: float = 1.0  # seconds between memory samples
    # Seconds per step of the memory ladder run before the load (0: none), which
    # tells a proxy's warm-up from buffering (engine/observers/memory.py).
    memory_ladder: float = 2.0
    target_pid: int | None = None  # sample this process tree's RSS
    rate: float | None = None  # open model: requests a second (--concurrency caps connections)
    slo_p99_ms: float | None = None  # saturation: the knee is the last step within this p99
    slo_error_rate: float = 1.0  # saturation: ... and within this error rate (percent)
    workers: int = 1  # processes sharing the load, each with its own event loop
    congestion: str = tcp.AUTO  # TCP congestion control of our connections (common/tcp.py)
    headers: tuple[str, ...] = ()  # -H 'Name: value', sent with every request
    expect_status: str = DEFAULT_EXPECT  # statuses that are successes; others fail
    repoint_channel: bool = False  # Lightning: point a found channel at --sink
    ca_file: str | None = None  # https: trust this CA (PEM) instead of the system's
    insecure: bool = False  # https: verify no certificate (said in the banner and the JSON)
    # What is done with the result (checked here too, before any load).
    hdr_log: str | None = None  # the per-second histograms as an HdrHistogram log
    charts: str | None = None  # a directory for PNG charts (needs matplotlib)
    thresholds: tuple[str, ...] = ()  # pass/fail conditions ('p99<50ms'...)
    argv: tuple[str, ...] = field(default=(), repr=False)  # may hold secrets

    def __post_init__(self) -> None:
        # Today's Lightning benchmark names (benchmarking/channels/) for the seed's.
        if self.scenario in SCENARIO_ALIASES:
            object.__setattr__(self, "scenario", SCENARIO_ALIASES[self.scenario])
        problems = self.problems()
        if problems:
            raise ConfigError(problems)

    def problems(self) -> list[str]:
        out: list[str] = []
        if self.scenario not in SCENARIOS:
            out.append(
                f"--scenario {self.scenario!r} is unknown; expected one of: "
                + ", ".join(SCENARIO_NAMES)
                + " (or "
                + ", ".join(SCENARIO_ALIASES)
                + ")"
            )
        if self.concurrency < 1:
            out.append(f"--concurrency must be a whole number >= 1, got {self.concurrency}")
        if not self.duration > 0:
            out.append(f"--duration must be > 0 seconds, got {self.duration:g}")
        if self.payload_size is not None and self.payload_size < 1:
            out.append(f"--payload-size must be >= 1 byte, got {self.payload_size}")
        if self.response_size is not None and self.response_size < 1:
            out.append(f"--response-size must be >= 1 byte, got {self.response_size}")
        if self.delay is not None and self.delay < 0:
            out.append(f"--delay must be >= 0 ms, got {self.delay}")
        if not self.timeout > 0:
            out.append(f"--timeout must be > 0 seconds, got {self.timeout:g}")
        if self.parser not in PARSERS:
            out.append(f"--parser {self.parser!r} is unknown; expected one of: httptools, h11")
        if problem := tcp.check(self.congestion):
            out.append(problem)
        for option, value in (
            ("--target", self.target),
            ("--sink", self.sink_or_default),
            ("--channel-url", self.channel_url),
        ):
            if value is not None:
                try:
                    parse_url(value, option)
                except ValueError as exc:
                    out.append(str(exc))
        out.extend(self.tls.problems())
        if not self.sample_interval > 0:
            out.append(f"--sample-interval must be > 0 seconds, got {self.sample_interval:g}")
        if not 0 <= self.memory_ladder <= MAX_LADDER_STEP:
            out.append(
                f"--memory-ladder must be 0-{MAX_LADDER_STEP:g} seconds per step (0: no ladder),"
                f" got {self.memory_ladder:g}"
            )
        if self.slo_p99_ms is not None and not self.slo_p99_ms > 0:
            out.append(f"--slo-p99 must be > 0 ms, got {self.slo_p99_ms:g}")
        if not 0 <= self.slo_error_rate <= 100:
            out.append(f"--slo-error-rate must be 0-100 (%), got {self.slo_error_rate:g}")
        if self.rate is not None and not self.rate > 0:
            out.append(f"--rate must be > 0 requests a second, got {self.rate:g}")
        if not 1 <= self.workers <= MAX_WORKERS:
            out.append(f"--workers must be 1-{MAX_WORKERS}, got {self.workers}")
        elif (
            self.concurrency >= 1
            and self.workers > self.concurrency
            and self.scenario != "saturation"
        ):
            out.append(
                f"--workers {self.workers} needs --concurrency of at least {self.workers}"
                f" (each worker has connections of its own), got {self.concurrency}"
            )
        if self.target_pid is not None and self.target_pid < 1:
            out.append(f"--target-pid must be a process id, got {self.target_pid}")
        if not self.channel:
            out.append("--channel must not be empty")
        for line in self.headers:
            try:
                parse_header(line)
            except ValueError as exc:
                out.append(str(exc))
        try:
            parse_expect(self.expect_status)
        except ValueError as exc:
            out.append(str(exc))
        return out + self.output_problems()

    def output_problems(self) -> list[str]:
        """What would make the run fail after its load: outputs, --target-pid, thresholds."""
        out: list[str] = []
        files = (("--csv", self.csv), ("--json", self.json), ("--hdr-log", self.hdr_log))
        for option, path in files:
            if path is not None and (problem := unwritable(Path(path))):
                out.append(f"{option} {path}: {problem}")
        if self.charts is not None:
            try:
                require_matplotlib()
            except ChartsUnavailable as exc:
                out.append(f"--charts: {exc}")
            else:
                if problem := unwritable_dir(Path(self.charts)):
                    out.append(f"--charts {self.charts}: {problem}")
        pid = self.target_pid
        if pid is not None and pid >= 1 and (problem := check_pid(pid)):
            out.append(problem)
        for text in self.thresholds:
            try:
                thresholds_mod.parse(text)
            except thresholds_mod.ThresholdError as exc:
                out.append(str(exc))
        return out

    def notes(self) -> list[str]:
        """Warnings about settings that are valid but probably not meant."""
        out = []
        for name, value in self.header_pairs:
            if name.lower() == "x-request-id" and 20 <= len(value) <= 200:
                out.append(
                    f"--header {name}: every request carries the same id; Lightning keeps"
                    " a client's id of 20-200 characters and records each request under"
                    " it, so it answers all but the first with 503"
                )
        return out

    # -- effective values ----------------------------------------------------

    @property
    def tls(self) -> TlsSettings:
        """--ca-file and --insecure, for https:// URLs."""
        return TlsSettings(self.ca_file, self.insecure)

    @property
    def limits(self) -> list[thresholds_mod.Threshold]:
        """--threshold, parsed (validated at construction)."""
        return [thresholds_mod.parse(text) for text in self.thresholds]

    @property
    def scenario_spec(self) -> Scenario:
        return SCENARIOS[self.scenario]

    @property
    def payload_bytes(self) -> int:
        if self.payload_size is not None:
            return self.payload_size
        return self.scenario_spec.default_payload_size or DEFAULT_PAYLOAD_SIZE

    @property
    def body_of_interest(self) -> int:
        """The body size that should not pile up in a proxy: the larger of the two."""
        payload = self.payload_bytes if self.scenario_spec.sends_bodies else 0
        return max(payload, self.response_bytes or 0)

    @property
    def response_bytes(self) -> int | None:
        if self.response_size is not None:
            return self.response_size
        return self.scenario_spec.default_response_size

    @property
    def delay_ms(self) -> int | None:
        if self.delay is not None:
            return self.delay
        return self.scenario_spec.default_delay_ms

    @property
    def header_pairs(self) -> tuple[tuple[str, str], ...]:
        return tuple(parse_header(line) for line in self.headers)

    @property
    def expected(self) -> ExpectedStatuses:
        return parse_expect(self.expect_status)

    @property
    def node_name(self) -> str:
        return self.node or default_node()

    @property
    def sink_or_default(self) -> str:
        return self.sink or DEFAULT_SINK

    def sink_url(self) -> HttpUrl:
        return parse_url(self.sink_or_default, "--sink")

    def query_overrides(self) -> dict[str, int]:
        """The sink overrides this run puts on every request URL."""
        params: dict[str, int] = {}
        if self.response_bytes is not None:
            params["response_size"] = self.response_bytes
        if self.delay_ms is not None:
            params["delay"] = self.delay_ms
        return params

    def command(self) -> str:
        """The command line that reproduces this run, secrets masked."""
        words = ["chanload", "run"]
        for arg in masked_argv(self.argv):
            words.append(arg if arg == "***" or arg.endswith("=***") else shlex.quote(arg))
        return " ".join(words)

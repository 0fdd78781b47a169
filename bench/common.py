"""Shared pieces of the `make perf-*` benchmarks: processes, wrk, RSS, reports.

Benchmarks compare side by side in one run, repeat, and report medians and
ratios. Each writes a curated Markdown report (committed) and the raw numbers
as JSON under bench_results/raw/ (kept out of git).
"""

from __future__ import annotations

import json
import os
import platform
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from common import tcp

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench_results"
MIB = 1024 * 1024
GIB = 1024 * MIB


def skip_unless(*tools: str) -> None:
    """Exit 0 with a clear message when a tool the benchmark needs is missing."""
    missing = [t for t in tools if shutil.which(t) is None]
    if missing:
        print(
            f"skipped: {', '.join(missing)} not installed"
            " (on Debian: apt-get install -y wrk nginx-light)"
        )
        sys.exit(0)


def cpu_sets() -> tuple[list[str], list[str]]:
    """taskset prefixes pinning the load generator and the server apart.

    On a 2-core machine the generator and the server each get a core, so
    neither steals the other's cycles and rounds are comparable.
    """
    if shutil.which("taskset") and (os.cpu_count() or 1) >= 2:
        return ["taskset", "-c", "0"], ["taskset", "-c", "1"]
    return [], []


def wait_for(predicate, timeout: float, what: str, interval: float = 0.02):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout}s waiting for {what}")


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.2):
            return True
    except OSError:
        return False


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Server:
    name: str
    proc: subprocess.Popen
    port: int
    pid: int  # the process doing the work (nginx: its worker)
    workdir: Path | None = None

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def start_chansink(args: list[str], pin: list[str], log: Path, program: str = "chansink") -> Server:
    """chansink (or chanproxy) on a free port, as a child."""
    exe = Path(sys.executable).with_name(program)
    cmd = [*pin, str(exe) if exe.exists() else program, "--port", "0", *args]
    out = open(log, "w")  # noqa: SIM115 - handed to the child
    proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)

    def listening():
        m = re.search(r"listening on https?://127\.0\.0\.1:(\d+)", log.read_text())
        if proc.poll() is not None:
            raise RuntimeError(f"{program} exited: {log.read_text()}")
        return int(m.group(1)) if m else None

    port = wait_for(listening, 10, f"{program} to listen")
    return Server(program, proc, port, proc.pid)


# The head of every nginx config here: one foreground nginx whose files all
# live in {dir}; the `http {{` block is left open for what follows.
NGINX_HEAD = """\
worker_processes {workers};
daemon off;
pid {dir}/nginx.pid;
error_log {dir}/error.log;
events {{ worker_connections 4096; }}
http {{
  access_log off;
  client_body_temp_path {dir}/body;
  proxy_temp_path {dir}/proxy;
  fastcgi_temp_path {dir}/fastcgi;
  uwsgi_temp_path {dir}/uwsgi;
  scgi_temp_path {dir}/scgi;
"""
NGINX_CONF = (
    NGINX_HEAD
    + """\
  keepalive_requests 10000000;
  server {{
    listen 127.0.0.1:{port}{reuseport};
    client_max_body_size 0;{extra}
    location / {{ default_type application/json; return 200 '{body}'; }}
    location /big {{ root {dir}/www; default_type application/octet-stream; }}
    location /upload {{ default_type application/json; return 200 '{body}'; }}
  }}
}}
"""
)


def start_nginx(
    body: bytes, pin: list[str], big_size: int = MIB, workers: int = 1, extra: str = ""
) -> Server:
    """nginx (one worker unless told): `/` answers ``body``, `/big` is a static file,
    `/upload` discards. Several workers get a listening socket each (reuseport).
    ``extra`` is more directives for the server block (e.g. an add_header)."""

    def prepare(workdir: Path, port: int) -> str:
        (workdir / "www").mkdir(mode=0o755)
        (workdir / "www" / "big").write_bytes(b"x" * big_size)
        (workdir / "www" / "big").chmod(0o644)
        return NGINX_CONF.format(
            dir=workdir,
            port=port,
            body=body.decode(),
            workers=workers,
            reuseport=" reuseport" if workers > 1 else "",
            extra=f"\n    {extra}" if extra else "",
        )

    return start_nginx_with(prepare, pin)


NGINX_TLS_CONF = (
    NGINX_HEAD
    + """\
  keepalive_requests 10000000;
  server {{
    listen 127.0.0.1:{port} ssl;
    ssl_certificate {cert};
    ssl_certificate_key {key};
    ssl_protocols TLSv1.2 TLSv1.3;
    client_max_body_size 0;
    location / {{ default_type application/json; return 200 '{body}'; }}
  }}
}}
"""
)


def start_nginx_tls(body: bytes, pin: list[str], cert: Path, key: Path) -> Server:
    """nginx (one worker) serving https with ``cert``/``key``: `/` answers ``body``."""

    def prepare(workdir: Path, port: int) -> str:
        return NGINX_TLS_CONF.format(
            dir=workdir, port=port, cert=cert, key=key, body=body.decode(), workers=1
        )

    return start_nginx_with(prepare, pin)


# Debian puts nginx in /usr/sbin, which a user's PATH may not hold.
NGINX = shutil.which("nginx") or "/usr/sbin/nginx"


def start_nginx_with(prepare, pin: list[str], env: dict[str, str] | None = None) -> Server:
    """nginx with the config ``prepare(workdir, port)`` returns (one worker, in the
    foreground); ``env`` replaces its environment (e.g. glibc malloc settings)."""
    workdir = Path(tempfile.mkdtemp(prefix="chanload-nginx-"))
    workdir.chmod(0o755)  # nginx's worker drops root and must read what is in here
    port = free_port()
    conf = workdir / "nginx.conf"
    conf.write_text(prepare(workdir, port))
    proc = subprocess.Popen(
        [*pin, NGINX, "-c", str(conf), "-p", str(workdir)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.STDOUT,
        env=env,
    )
    wait_for(lambda: port_open(port), 10, "nginx to listen")
    worker = wait_for(lambda: _children(proc.pid), 10, "nginx's worker")
    return Server("nginx", proc, port, worker[0], workdir)


def _children(pid: int) -> list[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(p) for p in text.split()]


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for {pid}")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a process has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class ProcSampler:
    """Samples a process's RSS every ``interval`` seconds in a thread, and its CPU use."""

    def __init__(self, pid: int, interval: float = 0.05) -> None:
        self.pid = pid
        self.interval = interval
        self.samples: list[int] = []
        self.cpu = 0.0
        self.wall = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.samples.append(rss_bytes(self.pid))
            except (OSError, RuntimeError):
                return
            self._stop.wait(self.interval)

    def __enter__(self) -> ProcSampler:
        self.samples.append(rss_bytes(self.pid))
        self._cpu0 = cpu_seconds(self.pid)
        self._t0 = time.monotonic()
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.samples.append(rss_bytes(self.pid))
        self.cpu = cpu_seconds(self.pid) - self._cpu0
        self.wall = time.monotonic() - self._t0

    def summary(self) -> dict[str, float]:
        return {
            "rss_start": self.samples[0],
            "rss_peak": max(self.samples),
            "rss_end": self.samples[-1],
            "cpu_s": self.cpu,
            "wall_s": self.wall,
            "cpu_cores": self.cpu / self.wall if self.wall else 0.0,
        }


_UNITS = {"": 1, "k": 1e3, "m": 1e6, "g": 1e9, "kb": 1024, "mb": MIB, "gb": GIB, "b": 1}
_TIME = {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0}


def _num(text: str) -> float:
    m = re.fullmatch(r"([\d.]+)([a-zA-Z]*)", text.strip())
    if not m:
        raise ValueError(text)
    return float(m.group(1)) * _UNITS[m.group(2).lower()]


def _dur(text: str) -> float:
    m = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text.strip())
    if not m:
        raise ValueError(text)
    return float(m.group(1)) * _TIME[m.group(2)]


@dataclass
class WrkResult:
    rps: float
    read_bytes_per_s: float
    requests: int
    p50_s: float
    p99_s: float
    errors: dict[str, int] = field(default_factory=dict)
    non_2xx: int = 0
    raw: str = ""


def run_wrk(
    url: str,
    duration: float,
    connections: int,
    pin: list[str],
    threads: int = 1,
    script: Path | None = None,
    headers: tuple[str, ...] = (),
) -> WrkResult:
    cmd = [*pin, "wrk", f"-t{threads}", f"-c{connections}", f"-d{duration:g}s", "--latency"]
    if script is not None:
        cmd += ["-s", str(script)]
    for header in headers:
        cmd += ["-H", header]
    cmd.append(url)
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=duration + 60, check=True)
    text = out.stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", text).group(1))
    transfer = _num(re.search(r"Transfer/sec:\s+(\S+)", text).group(1))
    requests = int(re.search(r"(\d+) requests in", text).group(1))
    p50 = _dur(re.search(r"\s50%\s+(\S+)", text).group(1))
    p99 = _dur(re.search(r"\s99%\s+(\S+)", text).group(1))
    errors: dict[str, int] = {}
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
    if m:
        kinds = ("connect", "read", "write", "timeout")
        errors = dict(zip(kinds, map(int, m.groups()), strict=True))
    m = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    non_2xx = int(m.group(1)) if m else 0
    return WrkResult(rps, transfer, requests, p50, p99, errors, non_2xx, text)


def direct_sink_args(sink: str, duration: float, *extra: str, vus: int = 20) -> list[str]:
    """`chanload run` arguments for direct_sink at ``sink``: ``vus`` VUs, ``duration`` s."""
    return [
        "--scenario",
        "direct_sink",
        "--sink",
        sink,
        "--concurrency",
        str(vus),
        "--duration",
        f"{duration:g}",
        *extra,
    ]


# wrk's side of chanload direct_sink: the same POST of 1 KiB.
POST_1K = (
    'wrk.method = "POST"\n'
    'wrk.body = string.rep("x", 1024)\n'
    'wrk.headers["Content-Type"] = "application/json"\n'
)


def wrk_upload_script(size: int) -> Path:
    path = Path(tempfile.mkdtemp(prefix="chanload-wrk-")) / "upload.lua"
    path.write_text(
        'wrk.method = "POST"\n'
        f'wrk.body = string.rep("x", {size})\n'
        'wrk.headers["Content-Type"] = "application/octet-stream"\n'
    )
    return path


def command_version(cmd: list[str]) -> str:
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return "not installed"
    text = (out.stdout + out.stderr).strip().splitlines()
    return text[0] if text else "unknown"


def versions() -> dict[str, str]:
    from importlib.metadata import version

    info = {
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "python": platform.python_version(),
        "kernel": platform.release(),
        "cpu": _cpu_model(),
        "cpus": str(os.cpu_count()),
        "tcp congestion (system default)": tcp.system_default(),
    }
    for pkg in ("chanload", "uvloop", "httptools", "h11", "hdrhistogram", "orjson"):
        try:
            info[pkg] = version(pkg)
        except Exception:
            info[pkg] = "not installed"
    info["wrk"] = command_version(["wrk", "-v"])
    info["nginx"] = command_version(["nginx", "-v"])
    return info


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def median(values: list[float]) -> float:
    return statistics.median(values)


def write_report(name: str, markdown: str, raw: dict) -> Path:
    RESULTS.mkdir(exist_ok=True)
    report = RESULTS / f"{name}.md"
    report.write_text(markdown)
    raw_dir = RESULTS / "raw"
    raw_dir.mkdir(exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    (raw_dir / f"{name}-{stamp}.json").write_text(json.dumps(raw, indent=2, default=str))
    return report


def fmt_bytes(n: float) -> str:
    for unit, size in (("GiB", GIB), ("MiB", MIB), ("KiB", 1024)):
        if abs(n) >= size:
            return f"{n / size:.1f} {unit}"
    return f"{n:.0f} B"


def versions_table(info: dict[str, str]) -> str:
    rows = "\n".join(f"| {k} | {v} |" for k, v in info.items())
    return "| what | version |\n|---|---|\n" + rows

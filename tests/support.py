"""Test support: real child processes, real sockets, waits with deadlines."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import h11

ROOT = Path(__file__).resolve().parents[1]


def wait_until(predicate, timeout: float = 10.0, what: str = "condition", interval: float = 0.01):
    """Poll ``predicate`` until it returns a truthy value or ``timeout`` passes."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def rss_bytes(pid: int, field_name: str = "VmRSS") -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field_name + ":"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no {field_name} for pid {pid}")


@dataclass
class SinkProcess:
    """A chansink child process on an OS-assigned port."""

    proc: subprocess.Popen
    log: Path
    stderr: Path
    port: int = 0
    host: str = "127.0.0.1"
    summary: dict[str, int] = field(default_factory=dict)
    program: str = "chansink"
    scheme: str = "http"

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def url(self) -> str:
        return f"{self.scheme}://{self.host}:{self.port}"

    def output(self) -> str:
        return self.log.read_text()

    def errors(self) -> str:
        return self.stderr.read_text()

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15.0) -> int:
        """Signal the sink, wait for it to exit, parse its final totals."""
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError(f"{self.program} did not exit after the signal") from None
        m = re.search(rf"{self.program} stopped: (.*)", self.output())
        if m:
            self.summary = {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", m.group(1))}
        return code


def chansink_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "cli.chansink", *args]


def start_sink(
    tmp_path: Path, *args: str, port: int = 0, wait: bool = True, program: str = "chansink"
) -> SinkProcess:
    """Start chansink (or, with ``program``, chanproxy) as a child on a free port."""
    n = len(list(tmp_path.glob(f"{program}-*.log")))
    log = tmp_path / f"{program}-{n}.log"
    err = tmp_path / f"{program}-{n}.err"
    proc = subprocess.Popen(
        [sys.executable, "-m", f"cli.{program}", "--port", str(port), *args],
        stdout=open(log, "wb"),  # noqa: SIM115 - the child owns it
        stderr=open(err, "wb"),  # noqa: SIM115
        cwd=ROOT,
    )
    sink = SinkProcess(proc, log, err, program=program)
    if wait:

        def listening():
            if proc.poll() is not None:
                raise AssertionError(f"{program} exited early: {err.read_text()}{log.read_text()}")
            m = re.search(r"listening on (https?)://([\d.]+):(\d+)", log.read_text())
            return m

        m = wait_until(listening, 15, f"{program} to listen")
        sink.scheme, sink.host, sink.port = m.group(1), m.group(2), int(m.group(3))
    return sink


def admin_token(proxy: SinkProcess) -> str:
    """chanproxy's admin token, from its banner (made at start)."""
    m = re.search(r"X-Admin-Token: (\S+)", proxy.output())
    assert m, f"no admin token in chanproxy's banner: {proxy.output()[:500]}"
    return m.group(1)


# -- a small blocking HTTP/1.1 client on h11, for exact control in tests ------


@dataclass
class Response:
    status: int
    headers: dict[str, str]
    body: bytes
    raw_headers: list[tuple[bytes, bytes]] = field(default_factory=list)
    elapsed: float = 0.0


class H11Client:
    """One keep-alive connection; requests are sent and read with h11."""

    def __init__(self, port: int, host: str = "127.0.0.1", timeout: float = 10.0) -> None:
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.conn = h11.Connection(h11.CLIENT)
        self.host = f"{host}:{port}"

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> H11Client:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def send(self, event) -> None:
        data = self.conn.send(event)
        if data:
            self.sock.sendall(data)

    def request(
        self,
        method: str = "GET",
        target: str = "/test",
        headers: list[tuple[str, str]] | None = None,
        body: bytes | None = None,
        chunks: list[bytes] | None = None,
    ) -> Response:
        started = time.monotonic()
        self.send_request(method, target, headers, body, chunks)
        response = self.read_response(method == "HEAD")
        response.elapsed = time.monotonic() - started
        return response

    def send_request(
        self,
        method: str = "GET",
        target: str = "/test",
        headers: list[tuple[str, str]] | None = None,
        body: bytes | None = None,
        chunks: list[bytes] | None = None,
    ) -> None:
        hdrs = [("Host", self.host), *(headers or [])]
        if chunks is not None:
            hdrs.append(("Transfer-Encoding", "chunked"))
        elif body is not None:
            hdrs.append(("Content-Length", str(len(body))))
        self.send(h11.Request(method=method, target=target, headers=hdrs))
        if chunks is not None:
            for chunk in chunks:
                self.send(h11.Data(data=chunk))
        elif body:
            self.send(h11.Data(data=body))
        self.send(h11.EndOfMessage())

    def read_response(self, head_only: bool = False) -> Response:
        status = 0
        headers: list[tuple[bytes, bytes]] = []
        body = bytearray()
        while True:
            event = self.conn.next_event()
            if event is h11.NEED_DATA:
                data = self.sock.recv(1 << 20)
                self.conn.receive_data(data)
                continue
            if isinstance(event, h11.InformationalResponse):
                continue
            if isinstance(event, h11.Response):
                status = event.status_code
                headers = list(event.headers)
            elif isinstance(event, h11.Data):
                body += event.data
            elif isinstance(event, h11.EndOfMessage):
                break
            elif isinstance(event, h11.ConnectionClosed):
                raise ConnectionError("closed before the response ended")
        if self.conn.our_state is h11.DONE and self.conn.their_state is h11.DONE:
            self.conn.start_next_cycle()
        return Response(
            status,
            {k.decode().lower(): v.decode() for k, v in headers},
            bytes(body),
            headers,
        )


def get(port: int, target: str = "/test", method: str = "GET", **kw) -> Response:
    with H11Client(port) as client:
        return client.request(method, target, **kw)


def raw_exchange(port: int, data: bytes, timeout: float = 5.0) -> bytes:
    """Send raw bytes, read until the server closes (or ``timeout``)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(data)
        out = bytearray()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                chunk = sock.recv(65536)
            except (TimeoutError, ConnectionResetError):
                break
            if not chunk:
                break
            out += chunk
        return bytes(out)


def env_with_root() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    return env


# -- chanload as a child process ------------------------------------------------


def chanload_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "cli.chanload", *args]


@dataclass
class Run:
    code: int
    stdout: str
    stderr: str
    result: dict | None
    elapsed: float


def run_chanload(tmp_path: Path, *args: str, timeout: float = 90, json_out: bool = True) -> Run:
    """Run `chanload run ARGS` to completion; parse its --json result."""
    import json

    out = tmp_path / f"result-{time.monotonic_ns()}.json"
    cmd = chanload_command("run", *args, *(("--json", str(out)) if json_out else ()))
    started = time.monotonic()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=ROOT)
    except subprocess.TimeoutExpired as exc:
        out = exc.stdout.decode(errors="replace") if isinstance(exc.stdout, bytes) else exc.stdout
        raise AssertionError(f"chanload did not finish in {timeout}s; it printed:\n{out}") from None
    elapsed = time.monotonic() - started
    result = json.loads(out.read_text()) if json_out and out.exists() else None
    return Run(proc.returncode, proc.stdout, proc.stderr, result, elapsed)


def start_test_server(
    tmp_path: Path, module: str, *args: str
) -> tuple[subprocess.Popen, int, Path]:
    """One of tests/servers (``module``: flaky, misbehave...) as a child on a free port."""
    log = tmp_path / f"{module}-{time.monotonic_ns()}.log"
    proc = subprocess.Popen(
        [sys.executable, "-m", f"tests.servers.{module}", *args],
        stdout=open(log, "wb"),  # noqa: SIM115
        stderr=subprocess.STDOUT,
        cwd=ROOT,
    )
    m = wait_until(
        lambda: re.search(r"listening on http://127\.0\.0\.1:(\d+)", log.read_text()),
        10,
        f"the {module} server",
    )
    return proc, int(m.group(1)), log


def start_flaky(tmp_path: Path, *args: str) -> tuple[subprocess.Popen, int, Path]:
    return start_test_server(tmp_path, "flaky", *args)


def read_until_closed(sock: socket.socket, limit: float) -> tuple[bytes, float | None]:
    """What the server sends until it closes; (data, seconds until the close, or None
    when it was still open after ``limit`` seconds)."""
    started = time.monotonic()
    data = b""
    sock.settimeout(0.2)
    while time.monotonic() - started < limit:
        try:
            chunk = sock.recv(1 << 20)
        except TimeoutError:
            continue
        except ConnectionResetError:
            return data, time.monotonic() - started
        if not chunk:
            return data, time.monotonic() - started
        data += chunk
    return data, None


class CountingParser:
    """Wraps an httptools parser and counts the reads it is fed (the memo tests)."""

    def __init__(self, parser) -> None:
        self._parser = parser
        self.feeds = 0

    def feed_data(self, data) -> None:
        self.feeds += 1
        self._parser.feed_data(data)

    def __getattr__(self, name):
        return getattr(self._parser, name)


# -- TLS: a throwaway CA and the certificates it issues (trustme) ---------------


class TlsFiles:
    """A CA made for the test session and server certificates it issued, as PEM
    files in a directory others may read (nginx's worker is not root)."""

    def __init__(self, root: Path) -> None:
        import trustme

        self.root = root
        self.ca = trustme.CA()
        self.ca_file = root / "ca.pem"
        self.ca.cert_pem.write_to_path(str(self.ca_file))
        self._issued: dict[tuple, tuple[Path, Path]] = {}

    def server(self, name: str, *identities: str, **validity) -> tuple[Path, Path]:
        """(certificate chain, key) for ``identities`` (host names, IP addresses)."""
        cert = self.ca.issue_cert(*identities, **validity)
        chain, key = self.root / f"{name}.pem", self.root / f"{name}.key"
        cert.private_key_pem.write_to_path(str(key))
        chain.write_bytes(b"".join(blob.bytes() for blob in cert.cert_chain_pems))
        key.chmod(0o644)
        chain.chmod(0o644)
        return chain, key

    def loopback(self) -> tuple[str, ...]:
        """--tls-cert and --tls-key for a server on localhost / 127.0.0.1."""
        key = ("loopback",)
        if key not in self._issued:
            self._issued[key] = self.server("loopback", "localhost", "127.0.0.1")
        chain, private = self._issued[key]
        return ("--tls-cert", str(chain), "--tls-key", str(private))

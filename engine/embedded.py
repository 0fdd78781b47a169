"""--embedded: chansink and chanproxy as child processes on free loopback ports.

Both always stop when the suite does, also on Ctrl-C or failure (the context
manager terminates, waits, then kills).
"""

from __future__ import annotations

import json
import os
import re
import secrets
import signal
import ssl
import subprocess
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from common.children import python_module
from common.tls import throwaway_ca

START_TIMEOUT = 20.0


class EmbeddedError(Exception):
    pass


@dataclass
class Child:
    name: str
    proc: subprocess.Popen
    log: Path
    url: str = ""

    def stop(self, timeout: float = 10.0) -> None:
        if self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def _start(name: str, args: list[str], workdir: Path, env: dict[str, str] | None = None) -> Child:
    log = workdir / f"{name}.log"
    proc = subprocess.Popen(
        python_module(f"cli.{name}", "--port", "0", *args),
        stdout=open(log, "wb"),  # noqa: SIM115 - the child owns it
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        cwd=Path(__file__).resolve().parents[1],
        env=None if env is None else {**os.environ, **env},
    )
    child = Child(name, proc, log)
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        text = log.read_text(errors="replace")
        m = re.search(r"listening on (https?://127\.0\.0\.1:\d+)", text)
        if m:
            child.url = m.group(1)
            return child
        if proc.poll() is not None:
            raise EmbeddedError(f"{name} exited at start: {text.strip()[-500:]}")
        time.sleep(0.02)
    child.stop()
    raise EmbeddedError(f"{name} did not start within {START_TIMEOUT:g}s")


def create_channel(
    proxy_url: str, name: str, sink_url: str, token: str, ca_file: str | None = None
) -> str:
    """POST /_admin/channels (over https, trusting ``ca_file``); the new channel's id."""
    body = json.dumps({"name": name, "sink_url": sink_url}).encode()
    request = urllib.request.Request(
        f"{proxy_url}/_admin/channels",
        data=body,
        method="POST",
        headers={"content-type": "application/json", "x-admin-token": token},
    )
    context = ssl.create_default_context(cafile=ca_file) if ca_file else None
    with urllib.request.urlopen(request, timeout=10, context=context) as response:
        return json.loads(response.read())["id"]


class Embedded:
    """chansink + chanproxy (+ the channel) for the length of a ``with`` block."""

    def __init__(
        self,
        proxy_buffer: bool = False,
        channel: str = "load-test",
        congestion: str = "auto",
        tls: bool = False,
    ) -> None:
        self.proxy_buffer = proxy_buffer
        self.tls = tls  # both legs over TLS, with a CA made at start (common/tls.py)
        self.ca_file: str | None = None
        self.congestion = congestion  # passed on: chansink and chanproxy take --congestion too
        self.channel_name = channel
        self.workdir = Path(tempfile.mkdtemp(prefix="chanload-embedded-"))
        self.sink: Child | None = None
        self.proxy: Child | None = None
        self.channel_url = ""

    def __enter__(self) -> Embedded:
        try:
            tcp_args = ["--congestion", self.congestion]
            proxy_args: list[str] = []
            if self.tls:
                files = throwaway_ca(self.workdir)
                self.ca_file = str(files["ca"])
                tcp_args += ["--tls-cert", str(files["cert"]), "--tls-key", str(files["key"])]
                proxy_args = ["--upstream-ca-file", self.ca_file]
            self.sink = _start("chansink", tcp_args, self.workdir)
            token = secrets.token_urlsafe(24)  # by the environment: a command line shows in ps
            self.proxy = _start(
                "chanproxy",
                [*tcp_args, *proxy_args, *(["--buffer"] if self.proxy_buffer else [])],
                self.workdir,
                env={"CHANPROXY_ADMIN_TOKEN": token},
            )
            channel_id = create_channel(
                self.proxy.url, self.channel_name, self.sink.url, token, self.ca_file
            )
            self.channel_url = f"{self.proxy.url}/channels/{channel_id}/test"
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @property
    def proxy_pid(self) -> int:
        return self.proxy.proc.pid

    def pids(self) -> list[int]:
        return [c.proc.pid for c in (self.sink, self.proxy) if c is not None]

    def close(self) -> None:
        for child in (self.proxy, self.sink):
            if child is not None:
                child.stop()
        for name in ("server.key", "server.pem", "ca.pem"):  # the throwaway CA goes too
            (self.workdir / name).unlink(missing_ok=True)

    def describe(self) -> str:
        mode = " --buffer" if self.proxy_buffer else ""
        tls = f"; TLS on both legs, CA {self.ca_file} (made now)" if self.tls else ""
        return (
            f"embedded: chansink at {self.sink.url} (pid {self.sink.proc.pid}),"
            f" chanproxy{mode} at {self.proxy.url} (pid {self.proxy.proc.pid}){tls}"
        )


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie is dead for our purposes.
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        return state != "Z"
    except OSError:
        return False

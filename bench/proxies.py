"""Proxies for the memory verdict, each streaming or holding whole bodies, started fresh.

Used by tests/e2e/test_memory_verdict.py and `make perf-ladder`:
- nginx (Debian's nginx-light): `buffer` holds each whole request body in
  memory (`client_body_buffer_size` above the body size,
  `proxy_request_buffering on`), run with glibc's mmap threshold fixed
  (MALLOC_MMAP_THRESHOLD_) so each body's buffer is mapped and given back
  (else glibc keeps it for the next body and RSS cannot see it reused);
  `stream` forwards as it reads (`proxy_request_buffering off`,
  `proxy_buffering off`).
- mitmproxy (PyPI, `make mitmproxy`) in reverse-proxy mode: `buffer`, its
  default, holds whole bodies; `stream` (`stream_large_bodies=1`) streams
  every body over one byte. A Python proxy whose allocator warms up on its
  first large bodies.
- chanproxy, streaming or with `--buffer`.
"""

from __future__ import annotations

import json
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

from bench.common import (
    NGINX,
    NGINX_HEAD,
    ROOT,
    Server,
    free_port,
    port_open,
    start_chansink,
    start_nginx_with,
    wait_for,
)

MITMDUMP = Path(os.environ.get("CHANLOAD_MITMDUMP", ROOT / ".cache/mitmproxy/bin/mitmdump"))
CHANNEL = "11111111-1111-4111-8111-111111111111"
KINDS = ("nginx", "chanproxy", "mitmproxy")
MODES = ("buffer", "stream")

NGINX_CONF = (
    NGINX_HEAD
    + """\
  client_max_body_size 0;
  {mode}
  upstream sink {{ server 127.0.0.1:{sink}; keepalive 16; }}
  server {{
    listen 127.0.0.1:{port};
    location / {{
      proxy_pass http://sink;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
    }}
  }}
}}
"""
)
NGINX_MODES = {
    # The whole request body in memory (one buffer above the body size), then upstream.
    "buffer": "client_body_buffer_size 2m; proxy_request_buffering on;",
    "stream": "proxy_request_buffering off; proxy_buffering off;",
}


@dataclass
class Proxy:
    """A proxy in front of the sink: its URL and its process (the one to probe,
    with its children)."""

    name: str
    proc: subprocess.Popen
    url: str

    @property
    def pid(self) -> int:
        return self.proc.pid

    def stop(self) -> None:
        Server(self.name, self.proc, 0, self.proc.pid).stop()


def start_proxy(kind: str, mode: str, sink_port: int, workdir: Path) -> Proxy:
    """A fresh ``kind`` proxy (nginx, chanproxy, mitmproxy) that buffers or
    streams (``mode``), in front of the sink on ``sink_port``."""
    workdir.mkdir(parents=True, exist_ok=True)
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, not {mode!r}")
    name = f"{kind} {mode}"
    if kind == "nginx":
        if not Path(NGINX).exists():
            raise RuntimeError("nginx is needed: apt-get install -y nginx-light")
        server = start_nginx_with(
            lambda d, port: NGINX_CONF.format(
                dir=d, port=port, sink=sink_port, mode=NGINX_MODES[mode], workers=1
            ),
            [],
            env={**os.environ, "MALLOC_MMAP_THRESHOLD_": str(128 * 1024)},
        )
        return Proxy(name, server.proc, f"http://127.0.0.1:{server.port}/test")
    if kind == "chanproxy":
        channels = workdir / "channels.json"
        channels.write_text(
            json.dumps([{"name": "x", "sink_url": f"http://127.0.0.1:{sink_port}", "id": CHANNEL}])
        )
        args = ["--channels", str(channels), *(["--buffer"] if mode == "buffer" else [])]
        server = start_chansink(args, [], workdir / "chanproxy.log", program="chanproxy")
        return Proxy(name, server.proc, f"http://127.0.0.1:{server.port}/channels/{CHANNEL}/test")
    if kind == "mitmproxy":
        return _start_mitmproxy(name, mode, sink_port, workdir)
    raise ValueError(f"kind must be one of {KINDS}, not {kind!r}")


def _start_mitmproxy(name: str, mode: str, sink_port: int, workdir: Path) -> Proxy:
    if not MITMDUMP.exists():
        raise RuntimeError(f"{MITMDUMP} is missing: run `make mitmproxy`")
    port = free_port()
    log = workdir / "mitmdump.log"
    stream = ["--set", "stream_large_bodies=1"] if mode == "stream" else []
    proc = subprocess.Popen(
        [
            str(MITMDUMP), "-q", "--mode", f"reverse:http://127.0.0.1:{sink_port}",
            "--listen-host", "127.0.0.1", "--listen-port", str(port),
            "--set", f"confdir={workdir / 'mitmproxy'}", *stream,
        ],
        stdout=open(log, "wb"),  # noqa: SIM115 - the child owns it
        stderr=subprocess.STDOUT,
    )  # fmt: skip

    def up() -> bool:
        if proc.poll() is not None:
            raise RuntimeError(f"mitmdump exited early: {log.read_text()[-2000:]}")
        return port_open(port)

    try:
        wait_for(up, 30, "mitmdump to listen")
    except BaseException:
        Proxy(name, proc, "").stop()
        raise
    return Proxy(name, proc, f"http://127.0.0.1:{port}/test")

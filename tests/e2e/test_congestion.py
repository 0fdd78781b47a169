"""--congestion on real processes: the algorithm each program's sockets use, read
back with ss(8), the way an operator would check it."""

from __future__ import annotations

import json
import re
import shutil
import socket
import subprocess
import sys

import pytest

from common import tcp
from tests.support import ROOT, chanload_command, chansink_command, wait_until

pytestmark = pytest.mark.skipif(shutil.which("ss") is None, reason="needs ss (iproute2)")

AVAILABLE = set(
    open("/proc/sys/net/ipv4/tcp_available_congestion_control").read().split()  # noqa: SIM115
)
SYSTEM = tcp.system_default()
CHANNEL = "1b4e28ba-2fa1-11d2-883f-0016d3cca427"


def algorithms(filter_: str) -> list[str]:
    """The congestion control of each established TCP socket ss selects with ``filter_``."""
    out = subprocess.run(
        ["ss", "-tinH", "state", "established", filter_],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    found = []
    for line in out.splitlines():
        words = [w for w in line.split() if w in AVAILABLE]
        if words:
            found.append(words[0])
    return found


def listening(port: int) -> list[str]:
    """The congestion control of the socket listening on ``port``, as ss shows it."""
    out = subprocess.run(
        ["ss", "-tlinH", f"sport = :{port}"], capture_output=True, text=True, check=True
    ).stdout
    return [w for w in out.split() if w in AVAILABLE]


def wait_for_sockets(filter_: str, count: int = 1) -> list[str]:
    return wait_until(
        lambda: (got := algorithms(filter_)) and len(got) >= count and got,
        10,
        f"{count} socket(s) matching {filter_}",
    )


def hold_request(port: int) -> socket.socket:
    """A keep-alive connection that has had one answer and stays open."""
    sock = socket.create_connection(("127.0.0.1", port))
    sock.sendall(b"GET /test HTTP/1.1\r\nHost: x\r\n\r\n")
    data = b""
    while b"\r\n\r\n" not in data:
        data += sock.recv(65536)
    return sock


def test_chansink_uses_reno_on_loopback_unless_told(sink_factory):
    default = sink_factory()
    system = sink_factory("--congestion", "system")
    assert "TCP:       reno on loopback" in default.output()
    # On the listening socket, so that connections start with it (common/tcp.py).
    assert listening(default.port) == ["reno"]
    assert listening(system.port) == [SYSTEM]
    with hold_request(default.port), hold_request(system.port):
        assert wait_for_sockets(f"sport = :{default.port}") == ["reno"]
        assert wait_for_sockets(f"sport = :{system.port}") == [SYSTEM]


def test_chanproxy_uses_it_on_both_sides(proxy_factory, sink_factory, tmp_path):
    sink = sink_factory("--congestion", "system")
    channels = tmp_path / "channels.json"
    channels.write_text(
        json.dumps([{"id": CHANNEL, "name": "c", "sink_url": sink.url, "enabled": True}])
    )
    proxy = proxy_factory("--channels", str(channels))
    sock = socket.create_connection(("127.0.0.1", proxy.port))
    with sock:
        sock.sendall(b"GET /channels/" + CHANNEL.encode() + b"/x HTTP/1.1\r\nHost: x\r\n\r\n")
        data = b""
        while b"\r\n\r\n" not in data:
            data += sock.recv(65536)
        assert data.startswith(b"HTTP/1.1 200 ")
        assert listening(proxy.port) == ["reno"]
        assert wait_for_sockets(f"sport = :{proxy.port}") == ["reno"]  # client side
        assert wait_for_sockets(f"dport = :{sink.port}") == ["reno"]  # upstream
        assert wait_for_sockets(f"sport = :{sink.port}") == [SYSTEM]  # the sink's own


@pytest.mark.parametrize("choice", ["auto", SYSTEM])
def test_chanload_sets_it_on_its_connections(sink_factory, choice):
    sink = sink_factory("--congestion", "system" if choice == "auto" else "reno")
    proc = subprocess.Popen(
        chanload_command(
            "run",
            "--scenario",
            "slow_sink",  # requests that take a while: the connections stay up
            "--delay",
            "300",
            "--sink",
            sink.url,
            "--channel-url",
            sink.url + "/test",
            "--concurrency",
            "3",
            "--duration",
            "3",
            "--quiet",
            "--congestion",
            choice,
        ),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=ROOT,
    )
    try:
        mine = wait_for_sockets(f"dport = :{sink.port}", 3)
        theirs = wait_for_sockets(f"sport = :{sink.port}", 3)
    finally:
        out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0, out
    assert set(mine) == {"reno" if choice == "auto" else SYSTEM}
    assert set(theirs) == {SYSTEM if choice == "auto" else "reno"}
    assert re.search(r"TCP:\s+" + re.escape(tcp.describe(choice)), out)


@pytest.mark.parametrize(
    "command",
    [
        chansink_command("--port", "0", "--congestion", "nosuch"),
        [sys.executable, "-m", "cli.chanproxy", "--port", "0", "--congestion", "nosuch"],
        chanload_command("run", "--congestion", "nosuch", "--duration", "1"),
    ],
    ids=["chansink", "chanproxy", "chanload"],
)
def test_an_unknown_algorithm_exits_2_naming_the_option(command):
    proc = subprocess.run(command, capture_output=True, text=True, timeout=30, cwd=ROOT)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert "--congestion 'nosuch' is not available here; expected one of: auto, system" in lines[0]

"""chanload over HTTPS against a real TLS server: nginx (Debian's nginx-light)
with certificates from a throwaway CA (trustme).

What a user meets: verification against --ca-file (or the system's CAs,
which do not know this CA), --insecure, and each bad case -- an untrusted or
expired certificate, a name that does not match, a plain-HTTP server on an
https URL, a server that never finishes the handshake -- as a fast one-line
error before the load, and under its own error kind when it happens mid-run
(--no-preflight). The connect and handshake times are in the JSON apart
from request latency.
"""

from __future__ import annotations

import datetime
import socket
import threading
from pathlib import Path

import pytest

from bench.common import start_nginx_tls
from tests.support import run_chanload, start_sink


def nginx_tls(chain: Path, key: Path):
    return start_nginx_tls(b'{"ok":true}', [], chain, key)


@pytest.fixture(scope="module")
def good_nginx(tls):
    """nginx with a certificate for localhost and 127.0.0.1."""
    server = nginx_tls(*tls.server("good", "localhost", "127.0.0.1"))
    yield server
    server.stop()


def https(server, host: str = "localhost") -> str:
    return f"https://{host}:{server.port}/"


def test_a_run_over_https_verifies_measures_handshakes_and_answers(tmp_path, tls, good_nginx):
    run = run_chanload(
        tmp_path,
        "--channel-url",
        https(good_nginx),
        "--ca-file",
        str(tls.ca_file),
        "--duration",
        "2",
        "--concurrency",
        "4",
    )
    assert run.code == 0, run.stdout + run.stderr
    result = run.result
    assert result["responses"] > 100
    assert result["transport_errors"] == 0, result["error_samples"]
    assert result["statuses"] == {"200": result["responses"]}
    conns = result["connections"]
    assert conns["opened"] == 4  # keep-alive: one connection per VU
    assert conns["tls"]["verified"] is True
    assert conns["tls"]["version"] in ("TLSv1.2", "TLSv1.3")
    assert conns["tls"]["alpn"] == "http/1.1"
    handshake = conns["tls_handshake"]
    assert handshake["count"] == 4
    assert 0 < handshake["p50_us"] <= handshake["max_us"]
    assert conns["connect"]["count"] == 4
    # the handshake is not a request: it is not in the request latencies
    assert result["config"]["insecure"] is False
    assert "certificates verified against" in run.stdout
    assert "TLS:         handshake p50" in run.stdout


def test_insecure_skips_verification_and_says_so(tmp_path, good_nginx):
    run = run_chanload(
        tmp_path, "--channel-url", https(good_nginx), "--insecure", "--duration", "1"
    )
    assert run.code == 0, run.stdout + run.stderr
    assert run.result["responses"] > 0
    assert run.result["connections"]["tls"]["verified"] is False
    assert run.result["config"]["insecure"] is True
    assert "certificates NOT verified (--insecure)" in run.stdout


def one_line_error(run) -> str:
    lines = [line for line in run.stderr.splitlines() if line.startswith("chanload:")]
    assert len(lines) == 1, run.stderr
    return lines[0]


def test_a_certificate_the_system_does_not_trust_is_refused_fast(tmp_path, good_nginx):
    run = run_chanload(tmp_path, "--channel-url", https(good_nginx), "--duration", "1")
    assert run.code == 1, run.stdout + run.stderr
    assert "certificate is not trusted" in one_line_error(run)
    assert "--ca-file" in one_line_error(run)
    assert run.elapsed < 30  # nothing waited for (a chanload start takes a few seconds)


def test_an_expired_certificate_is_refused(tmp_path, tls):
    past = datetime.datetime.now(datetime.UTC) - datetime.timedelta(days=2)
    server = nginx_tls(
        *tls.server(
            "expired",
            "localhost",
            not_before=past - datetime.timedelta(days=30),
            not_after=past,
        )
    )
    try:
        run = run_chanload(tmp_path, "--channel-url", https(server), "--ca-file", str(tls.ca_file))
    finally:
        server.stop()
    assert run.code == 1, run.stdout + run.stderr
    assert "certificate has expired" in one_line_error(run)


def test_a_certificate_for_another_host_is_refused(tmp_path, tls):
    server = nginx_tls(*tls.server("other", "example.test"))
    try:
        run = run_chanload(tmp_path, "--channel-url", https(server), "--ca-file", str(tls.ca_file))
    finally:
        server.stop()
    assert run.code == 1, run.stdout + run.stderr
    assert "not for this host" in one_line_error(run)


def test_a_plain_http_server_on_an_https_url_is_named(tmp_path):
    sink = start_sink(tmp_path)
    try:
        run = run_chanload(tmp_path, "--channel-url", f"https://127.0.0.1:{sink.port}/")
    finally:
        sink.stop()
    assert run.code == 1, run.stdout + run.stderr
    line = one_line_error(run)
    assert "does not speak TLS" in line and "http://" in line


class SilentServer:
    """Accepts connections and never says a word (a TLS handshake that never finishes)."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.conns: list[socket.socket] = []
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.conns.append(conn)

    def close(self) -> None:
        self.sock.close()
        for conn in self.conns:
            conn.close()


@pytest.fixture
def silent():
    server = SilentServer()
    yield server
    server.close()


def test_a_handshake_that_never_finishes_is_named_before_the_load(tmp_path, silent):
    run = run_chanload(tmp_path, "--channel-url", f"https://127.0.0.1:{silent.port}/")
    assert run.code == 1, run.stdout + run.stderr
    assert "TLS handshake did not finish" in one_line_error(run)


# -- mid-run: each failure under its own kind (--no-preflight) -------------------


def kinds(result: dict) -> dict[str, int]:
    return {k: n for k, n in result["errors"].items() if n}


def test_mid_run_failures_are_counted_under_their_own_kinds(tmp_path, tls, good_nginx, silent):
    other = nginx_tls(*tls.server("other-host", "example.test"))
    plain = start_sink(tmp_path)
    ca = ("--ca-file", str(tls.ca_file))
    common = ("--no-preflight", "--duration", "1.5", "--concurrency", "2", "--timeout", "0.5")
    try:
        untrusted = run_chanload(tmp_path, "--channel-url", https(good_nginx), *common)
        hostname = run_chanload(tmp_path, "--channel-url", https(other), *ca, *common)
        not_tls = run_chanload(
            tmp_path, "--channel-url", f"https://127.0.0.1:{plain.port}/", *ca, *common
        )
        timeout = run_chanload(
            tmp_path, "--channel-url", f"https://127.0.0.1:{silent.port}/", *ca, *common
        )
    finally:
        other.stop()
        plain.stop()
    for run, kind, says in (
        (untrusted, "tls_certificate", "not trusted"),
        (hostname, "tls_hostname", "not for this host"),
        (not_tls, "tls_not_tls", "does not speak TLS"),
        (timeout, "tls_timeout", "did not finish in time"),
    ):
        assert run.code == 0, run.stdout + run.stderr
        assert set(kinds(run.result)) == {kind}, (kind, run.result["errors"])
        assert run.result["responses"] == 0
        assert says in run.result["error_samples"][kind]
        assert f"{kind}: " in run.stdout  # the summary's error kinds


def test_workers_each_verify_and_their_handshakes_add_up(tmp_path, tls, good_nginx):
    run = run_chanload(
        tmp_path,
        "--channel-url",
        https(good_nginx),
        "--ca-file",
        str(tls.ca_file),
        "--workers",
        "2",
        "--concurrency",
        "4",
        "--duration",
        "1.5",
    )
    assert run.code == 0, run.stdout + run.stderr
    conns = run.result["connections"]
    assert conns["opened"] == 4 and conns["tls_handshake"]["count"] == 4
    assert conns["tls"]["verified"] is True
    assert run.result["transport_errors"] == 0

"""The client's TLS pieces without a network: the context, the options'
checks, what each handshake failure is called, and the connection figures
in the result (CSV, merge)."""

from __future__ import annotations

import contextlib
import ssl

import pytest
import trustme

from engine.config import ConfigError, RunConfig
from engine.http import tls
from engine.measure.merge import merge_connections
from engine.measure.metrics import Recorder
from engine.measure.result import CSV_COLUMNS, connection_stats


def test_the_context_verifies_by_default_speaks_http11_and_tls12_or_later():
    ctx = tls.TlsSettings().context()
    assert ctx.verify_mode == ssl.CERT_REQUIRED and ctx.check_hostname
    assert ctx.minimum_version == ssl.TLSVersion.TLSv1_2
    insecure = tls.TlsSettings(insecure=True).context()
    assert insecure.verify_mode == ssl.CERT_NONE and not insecure.check_hostname
    assert tls.context_for("http", tls.TlsSettings()) is None
    assert tls.context_for("https", tls.TlsSettings()) is ctx  # one per settings


def test_a_private_ca_is_loaded_and_a_bad_file_is_a_usage_problem(tmp_path):
    ca = trustme.CA()
    good = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(good))
    settings = tls.TlsSettings(str(good))
    assert settings.problems() == []
    assert settings.context().get_ca_certs()  # the CA is in, the system's are not
    bad = tmp_path / "not-a-ca.pem"
    bad.write_text("hello\n")
    assert "not a PEM file" in tls.TlsSettings(str(bad)).problems()[0]
    assert "no such file" in tls.TlsSettings(str(tmp_path / "none.pem")).problems()[0]
    with pytest.raises(ConfigError, match="--ca-file"):
        RunConfig(ca_file=str(bad))


def verify_error(code: int, message: str) -> ssl.SSLCertVerificationError:
    exc = ssl.SSLCertVerificationError(1, f"[SSL: CERTIFICATE_VERIFY_FAILED] {message}")
    exc.verify_code, exc.verify_message = code, message
    return exc


def ssl_error(reason: str) -> ssl.SSLError:
    exc = ssl.SSLError(1, f"[SSL: {reason}] {reason.lower()}")
    exc.reason = reason
    return exc


@pytest.mark.parametrize(
    ("exc", "kind", "says"),
    [
        (verify_error(62, "Hostname mismatch"), "tls_hostname", "not for this host"),
        (verify_error(10, "certificate has expired"), "tls_certificate", "has expired"),
        (verify_error(9, "certificate is not yet valid"), "tls_certificate", "not valid yet"),
        (verify_error(20, "unable to get local issuer"), "tls_certificate", "not trusted"),
        (ssl_error("WRONG_VERSION_NUMBER"), "tls_not_tls", "does not speak TLS"),
        (ssl_error("RECORD_LAYER_FAILURE"), "tls_not_tls", "does not speak TLS"),
        (ssl_error("TLSV1_ALERT_PROTOCOL_VERSION"), "tls_handshake", "handshake failed"),
        (TimeoutError(), "tls_timeout", "did not finish in time"),
        (ConnectionResetError(104, "reset"), "tls_handshake", "ended during the TLS handshake"),
    ],
)
def test_each_handshake_failure_has_its_kind_and_a_line_naming_the_cause(exc, kind, says):
    got, line = tls.classify(exc, "h:443")
    assert got == kind
    assert says in line and line.startswith("h:443: ") and "\n" not in line


def recorder_with(connects, handshakes, info=None) -> Recorder:
    rec = Recorder()
    rec.connect_times += connects
    rec.handshake_times += handshakes
    rec.tls_info = info
    return rec


def test_connection_figures_in_the_result_and_the_csv():
    info = {"version": "TLSv1.3", "cipher": "TLS_AES_128_GCM_SHA256", "alpn": "http/1.1"}
    stats = connection_stats(recorder_with([100, 200, 300], [1000, 2000, 3000], info), True)
    assert stats["opened"] == 3
    assert stats["connect"]["count"] == 3 and stats["connect"]["max_us"] == 300
    assert stats["tls_handshake"]["p50_us"] == 2000
    assert stats["tls"] == {**info, "verified": True}
    plain = connection_stats(recorder_with([50], []), None)
    assert "tls" not in plain and "tls_handshake" not in plain
    assert connection_stats(Recorder(), None) is None
    # appended at the end: an older file's columns keep their places
    tail = CSV_COLUMNS[-12:]
    assert tail[0] == "connections_opened" and tail[-1] == "tls_timeout_errors"


def test_merged_connections_add_their_histograms_exactly():
    a = connection_stats(recorder_with([100] * 3, [1000] * 3, {"version": "TLSv1.3"}), True)
    b = connection_stats(recorder_with([300], [5000], {"version": "TLSv1.3"}), False)
    merged = merge_connections([a, None, b])
    assert merged["opened"] == 4
    assert merged["connect"]["count"] == 4 and merged["connect"]["max_us"] == 300
    assert merged["tls_handshake"]["count"] == 4 and merged["tls_handshake"]["p50_us"] == 1000
    assert merged["tls"]["verified"] is False  # verified only if every part was
    assert merge_connections([None, None]) is None


def test_https_sink_urls_are_keyed_apart_from_http_ones():
    from proxy.registry import Channel

    secure = Channel("id", "a", "https://sink.example/base/")
    plain = Channel("id", "a", "http://sink.example:8080/")
    assert secure.sink_key == ("sink.example", 443, True)
    assert plain.sink_key == ("sink.example", 8080, False)
    assert secure.sink_authority == "sink.example"
    assert plain.sink_authority == "sink.example:8080"


def test_the_throwaway_ca_issues_a_certificate_a_client_verifies(tmp_path):
    from common.tls import server_context, throwaway_ca

    files = throwaway_ca(tmp_path)
    assert oct(files["key"].stat().st_mode & 0o777) == "0o600"
    server = server_context(str(files["cert"]), str(files["key"]))
    client = tls.TlsSettings(str(files["ca"])).context()
    # a handshake in memory: the client verifies the server's certificate for 127.0.0.1
    c_in, c_out, s_in, s_out = (ssl.MemoryBIO() for _ in range(4))
    c = client.wrap_bio(c_in, c_out, server_hostname="127.0.0.1")
    s = server.wrap_bio(s_in, s_out, server_side=True)
    for _ in range(10):
        for side in (c, s):
            with contextlib.suppress(ssl.SSLWantReadError):
                side.do_handshake()
        s_in.write(c_out.read())
        c_in.write(s_out.read())
    assert c.version() in ("TLSv1.2", "TLSv1.3")
    assert c.selected_alpn_protocol() == "http/1.1"
    assert c.getpeercert()["subjectAltName"] == (("DNS", "localhost"), ("IP Address", "127.0.0.1"))

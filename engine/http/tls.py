"""HTTPS for chanload's client: the TLS context of a run, and what a failed
handshake means.

One ``ssl.SSLContext`` per process and settings: TLS 1.2 or 1.3, ALPN
``http/1.1``, certificates verified against the system's CAs (or
``--ca-file``), the host name checked, SNI from the URL's host; with
``--insecure`` nothing is verified (the banner and the JSON say so). The
handshake runs in uvloop's TLS transport, so session resumption is not used:
asyncio's transports give no way to offer a saved session, and every new
connection pays a full handshake -- which is what the handshake histogram
measures.

A handshake that fails is put in one of five kinds, each its own error
count (``tls_certificate``, ``tls_hostname``, ``tls_not_tls``,
``tls_handshake``, ``tls_timeout``), with one line that names the cause.
"""

from __future__ import annotations

import functools
import ssl
from dataclasses import dataclass
from pathlib import Path

ALPN = ["http/1.1"]

# OpenSSL's X509_V_ERR_* codes that say why a certificate was not trusted.
_HOSTNAME_MISMATCH = 62
_EXPIRED = 10
_NOT_YET_VALID = 9
# What OpenSSL says when the bytes that came back are not TLS at all (most
# often a plain-HTTP server answering our ClientHello with a 400).
_NOT_TLS_REASONS = frozenset(
    {"WRONG_VERSION_NUMBER", "RECORD_LAYER_FAILURE", "PACKET_LENGTH_TOO_LONG", "HTTP_REQUEST"}
)


@dataclass(frozen=True, slots=True)
class TlsSettings:
    """The run's TLS options: ``--ca-file`` and ``--insecure``."""

    ca_file: str | None = None
    insecure: bool = False

    def problems(self) -> list[str]:
        """What is wrong with the options (an unreadable or unusable CA file)."""
        if self.ca_file is None:
            return []
        path = Path(self.ca_file)
        if not path.is_file():
            return [f"--ca-file {self.ca_file}: no such file"]
        try:
            self.context()
        except (OSError, ssl.SSLError) as exc:
            return [f"--ca-file {self.ca_file}: not a PEM file of CA certificates ({exc})"]
        return []

    def context(self) -> ssl.SSLContext:
        return _context(self.ca_file, self.insecure)


# The default: verify against the system's CAs.
VERIFY = TlsSettings()


@functools.lru_cache(maxsize=8)
def _context(ca_file: str | None, insecure: bool) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.set_alpn_protocols(ALPN)
    if insecure:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    elif ca_file is not None:
        ctx.load_verify_locations(cafile=ca_file)
    else:
        ctx.load_default_certs(ssl.Purpose.SERVER_AUTH)
    return ctx


def context_for(scheme: str, settings: TlsSettings) -> ssl.SSLContext | None:
    """The context for a URL of ``scheme``; None for plain http."""
    return settings.context() if scheme == "https" else None


def classify(exc: BaseException, authority: str) -> tuple[str, str]:
    """(error kind, one line naming the cause) for a handshake with ``authority`` that failed."""
    if isinstance(exc, TimeoutError):
        return "tls_timeout", f"{authority}: the TLS handshake did not finish in time"
    if isinstance(exc, ssl.SSLCertVerificationError):
        code = exc.verify_code
        message = exc.verify_message or str(exc)
        if code == _HOSTNAME_MISMATCH:
            return "tls_hostname", f"{authority}: the certificate is not for this host ({message})"
        if code == _EXPIRED:
            return "tls_certificate", f"{authority}: the certificate has expired ({message})"
        if code == _NOT_YET_VALID:
            return "tls_certificate", f"{authority}: the certificate is not valid yet ({message})"
        return (
            "tls_certificate",
            f"{authority}: the certificate is not trusted ({message}); --ca-file names a"
            " private CA, --insecure skips the check",
        )
    if isinstance(exc, ssl.SSLError) and exc.reason in _NOT_TLS_REASONS:
        return (
            "tls_not_tls",
            f"{authority}: the server does not speak TLS ({exc.reason}): a plain-HTTP"
            " server? Use an http:// URL",
        )
    if isinstance(exc, ssl.SSLError):
        return "tls_handshake", f"{authority}: the TLS handshake failed ({exc.reason or exc})"
    detail = str(exc) or type(exc).__name__
    return "tls_handshake", f"{authority}: the connection ended during the TLS handshake ({detail})"


def describe(ssl_object) -> dict[str, str | bool | None]:
    """What was negotiated on a connection: version, cipher, ALPN."""
    cipher = ssl_object.cipher()
    return {
        "version": ssl_object.version(),
        "cipher": cipher[0] if cipher else None,
        "alpn": ssl_object.selected_alpn_protocol(),
    }

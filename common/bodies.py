"""Response bytes: status lines, heads, exact-size bodies, built once and reused.

Bodies of up to 1024 bytes are a JSON document of exactly the asked size
(``application/json``); larger ones are exactly that many filler bytes
(``application/octet-stream``), written as slices of one preallocated buffer
so a 1 GB response costs no more memory than a 1 KB one.
"""

from __future__ import annotations

import http
import time
from email.utils import formatdate

SMALL_BODY_MAX = 1024
JSON = b"application/json"
OCTET = b"application/octet-stream"

# One preallocated filler buffer; every large body is sent as slices of it.
# 256 KiB: big enough that a 1 MiB body is four writes, small enough to stay
# below glibc's mmap threshold once the dynamic threshold has adapted.
FILLER_CHUNK = 256 * 1024
FILLER = b"x" * FILLER_CHUNK
FILLER_VIEW = memoryview(FILLER)

# The same filler in an in-memory file, for os.sendfile: the kernel then sends
# page references instead of copying 1 MiB out of our buffer per response.
SENDFILE_FILLER_SIZE = 4 * FILLER_CHUNK


def filler_file() -> int | None:
    """A file descriptor of an in-memory file of filler bytes, or None where unsupported."""
    import os

    if not hasattr(os, "memfd_create") or not hasattr(os, "sendfile"):
        return None
    try:
        fd = os.memfd_create("chansink-filler", os.MFD_CLOEXEC)
    except OSError:
        return None
    os.write(fd, b"x" * SENDFILE_FILLER_SIZE)
    return fd


CONTINUE_100 = b"HTTP/1.1 100 Continue\r\n\r\n"


def _reason(code: int) -> str:
    try:
        return http.HTTPStatus(code).phrase
    except ValueError:
        return ""  # RFC 9112: the reason phrase may be empty; the space is not optional.


STATUS_LINES: dict[int, bytes] = {
    code: f"HTTP/1.1 {code} {_reason(code)}\r\n".encode("ascii") for code in range(100, 600)
}


def has_no_body(status: int) -> bool:
    """RFC 9110 6.4.1: 1xx, 204 and 304 responses never carry content."""
    return status < 200 or status == 204 or status == 304


# The envelope the seed's mock sink used, minus its per-request timestamp
# (which made every body different and every response uncacheable).
_ENVELOPE_OPEN = b'{"ok":true,"server":"chansink","padding":"'
_ENVELOPE_CLOSE = b'"}'
_ENVELOPE_MIN = len(_ENVELOPE_OPEN) + len(_ENVELOPE_CLOSE)


def json_body(size: int) -> bytes:
    """A valid JSON document of exactly ``size`` bytes (empty when 0)."""
    if size <= 0:
        return b""
    if size == 1:
        return b"0"
    if size < _ENVELOPE_MIN:
        return b'"' + b"x" * (size - 2) + b'"'
    return _ENVELOPE_OPEN + b"x" * (size - _ENVELOPE_MIN) + _ENVELOPE_CLOSE


def error_body(message: str) -> bytes:
    return b'{"error":"' + message.encode("ascii") + b'"}'


ERR_MISSING_AUTH = error_body("missing authorization header")
ERR_INVALID_CREDENTIALS = error_body("invalid credentials")
ERR_INVALID_AUTH_HEADER = error_body("invalid authorization header")
ERR_UNAVAILABLE = error_body("service unavailable")
ERR_BAD_REQUEST = error_body("bad request")
ERR_HEADERS_TOO_LARGE = error_body("request header fields too large")
ERR_REQUEST_TIMEOUT = error_body("request timeout: it did not arrive in time")


def http_date(now: float | None = None) -> bytes:
    return formatdate(time.time() if now is None else now, usegmt=True).encode("ascii")


def render_head(
    status: int,
    date: bytes,
    *,
    keep_alive: bool,
    http10: bool,
    content_type: bytes | None = None,
    length: int | None = None,
    chunked: bool = False,
) -> bytes:
    """The status line and header section of one response.

    ``length`` None with ``chunked`` False means no framing header at all
    (1xx and 204 responses).
    """
    parts = [STATUS_LINES[status], b"server: chansink\r\ndate: ", date, b"\r\n"]
    if content_type is not None:
        parts += [b"content-type: ", content_type, b"\r\n"]
    if chunked:
        parts.append(b"transfer-encoding: chunked\r\n")
    elif length is not None:
        parts += [b"content-length: ", str(length).encode("ascii"), b"\r\n"]
    if not keep_alive:
        parts.append(b"connection: close\r\n")
    elif http10:
        parts.append(b"connection: keep-alive\r\n")
    parts.append(b"\r\n")
    return b"".join(parts)


def chunk_frame(data: bytes) -> bytes:
    """``data`` as one chunk of a chunked body (RFC 9112 7.1)."""
    return b"%x\r\n%s\r\n" % (len(data), data) if data else b""


CHUNKED_END = b"0\r\n\r\n"

"""The payload of a chunked response body, told apart from its framing.

llhttp (through httptools) parses a chunked body without handing it to us:
the client never asks for ``on_body``, so body bytes are counted, not copied.
But a chunked body's wire bytes include the chunk-size lines and CRLFs, which
are not payload. ``ChunkedBody`` follows the chunk-size lines of the same
bytes llhttp parsed, skipping each chunk's data without looking at it, and
sums the sizes: the body bytes h11 would count (RFC 9112 section 7.1).

``is_chunked(head)`` says from a header section whether a follower is needed
(Transfer-Encoding whose final coding is ``chunked``).
"""

from __future__ import annotations

# A chunk-size line (size, extensions) longer than this is not followed: the
# payload is then reported unknown (-1) rather than held without bound.
MAX_CHUNK_LINE = 8 * 1024
_NAMES = (b"ransfer-", b"RANSFER-")  # Transfer-/transfer-/TRANSFER-, as servers spell it


def is_chunked(head, end: int) -> bool:
    """True when ``head[:end]`` (a response header section) frames its body as chunked.

    Two ``find`` calls on the common answer (no Transfer-Encoding); only a
    head that has one is copied and read line by line.
    """
    if head.find(_NAMES[0], 0, end) < 0 and head.find(_NAMES[1], 0, end) < 0:
        return False
    codings: list[bytes] = []
    for line in bytes(head[:end]).lower().split(b"\r\n")[1:]:
        name, sep, value = line.partition(b":")
        if sep and name.strip() == b"transfer-encoding":
            codings += [c.strip() for c in value.split(b",") if c.strip()]
    return bool(codings) and codings[-1] == b"chunked"


class ChunkedBody:
    """Counts the payload of a chunked body from its wire bytes, read by read.

    llhttp checks the framing (and fails on a bad one before this is asked);
    this only follows the chunk-size lines to tell payload from framing. Fed
    the bytes after the header section, up to the response's end: what
    follows the last chunk (the trailer section) is framing, and bytes after
    the response are never reached because the last chunk ends the follow.
    """

    __slots__ = ("_line", "_skip", "done", "payload", "unknown")

    def __init__(self) -> None:
        self.payload = 0
        self.done = False  # the last chunk (size 0) was seen
        self.unknown = False  # a size line we could not read: the payload is unknown
        self._skip = 0  # bytes of chunk data (and its CRLF) still to pass over
        self._line = b""  # a chunk-size line split across reads

    def feed(self, buf, pos: int, end: int) -> None:
        """Follow ``buf[pos:end]``, the next bytes of the body on the wire."""
        while pos < end and not self.done:
            skip = self._skip
            if skip:
                take = end - pos if end - pos < skip else skip
                self._skip = skip - take
                pos += take
                continue
            nl = buf.find(b"\n", pos, end)
            if nl < 0:
                self._line += bytes(buf[pos : min(end, pos + MAX_CHUNK_LINE + 1)])
                if len(self._line) > MAX_CHUNK_LINE:
                    self.unknown = self.done = True
                return
            line = self._line + bytes(buf[pos:nl]) if self._line else bytes(buf[pos:nl])
            self._line = b""
            pos = nl + 1
            try:
                size = int(line.split(b";", 1)[0].strip(), 16)
            except ValueError:
                self.unknown = self.done = True
                return
            if size == 0:
                self.done = True
                return
            self.payload += size
            self._skip = size + 2  # the data and its CRLF

    def result(self) -> int:
        """The payload bytes, or -1 when the body did not end or a size line was unreadable."""
        return self.payload if self.done and not self.unknown else -1

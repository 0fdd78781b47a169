"""The request body: the seed's JSON payload, padded to an exact size, built once."""

from __future__ import annotations

import time

_SUFFIX = b'"}'


def json_payload(size: int, timestamp: str | None = None) -> bytes:
    """``{"timestamp":...,"source":"load_test","data":"xxx"}`` of exactly ``size`` bytes.

    Below the size of the bare envelope the seed truncated its JSON (invalid);
    here a shorter valid document of the exact size is used instead.
    """
    if size <= 0:
        return b""
    stamp = timestamp or time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    prefix = b'{"timestamp":"' + stamp.encode() + b'","source":"load_test","data":"'
    minimum = len(prefix) + len(_SUFFIX)
    if size >= minimum:
        return prefix + b"x" * (size - minimum) + _SUFFIX
    if size == 1:
        return b"0"
    return b'"' + b"x" * (size - 2) + b'"'

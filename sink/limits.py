"""Servers raise their soft open-files limit to the hard one at start.

One descriptor per connection: a mock sink or a reference proxy that stops
accepting at the default 1024 would be the bottleneck of any benchmark with
more connections (Go's runtime does the same since 1.19). chanproxy uses this
too.
"""

from __future__ import annotations

import resource

CAP = 1 << 20  # no more than this, even when the hard limit is unlimited


def raise_open_files() -> int:
    """Set the soft RLIMIT_NOFILE to the hard limit (capped); return the soft limit now."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = CAP if hard == resource.RLIM_INFINITY else min(hard, CAP)
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):
            pass
    return soft

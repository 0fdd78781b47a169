"""Open-file limits: thousands of connections need thousands of descriptors.

Each VU (connection) takes one descriptor; the process needs a few dozen more
(the loop, pipes, the Erlang connection, output files). Before any load,
chanload raises its soft RLIMIT_NOFILE up to what the run needs when the
hard limit allows (children, such as --workers, inherit it), and otherwise
says what to run instead of failing with EMFILE half-way through.
"""

from __future__ import annotations

import resource

SPARE = 64  # descriptors besides the connections


def needed_for(connections: int) -> int:
    return connections + SPARE


def ensure_open_files(connections: int) -> str | None:
    """Raise the soft limit if needed and allowed; return a problem, or None when fine."""
    need = needed_for(connections)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft >= need:
        return None
    if hard == resource.RLIM_INFINITY or hard >= need:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (need, hard))
            return None
        except (ValueError, OSError):
            pass
    return (
        f"--concurrency {connections} needs about {need} open files, but this process may"
        f" open {soft} (hard limit {hard}): run 'ulimit -n {need}' first (as root, or after"
        " raising the hard limit in /etc/security/limits.conf), or lower --concurrency"
    )

"""What the executors' ``problems()`` share: a list of checks, the unmet ones' reasons."""

from __future__ import annotations


def unmet(*checks: tuple[bool, str]) -> list[str]:
    """The reasons of the checks that failed, in order: ``(ok, reason)`` pairs."""
    return [reason for ok, reason in checks if not ok]

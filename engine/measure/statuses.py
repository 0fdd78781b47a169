"""Which response statuses count as successes (--expect-status).

As k6's ``http_req_failed``: by default a response fails when its status is
400 or more (successes are 200-399); ``--expect-status 200-299,401`` names
the successes instead, e.g. to load a channel whose 401s are the point.
Everything here works on the per-status counts the hot path keeps anyway, so
the choice costs nothing per request.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

DEFAULT_EXPECT = "200-399"


@dataclass(frozen=True, slots=True)
class ExpectedStatuses:
    """A set of statuses as inclusive ranges; ``text`` is how the user wrote it."""

    ranges: tuple[tuple[int, int], ...]
    text: str = DEFAULT_EXPECT

    def __contains__(self, status: int) -> bool:
        return any(low <= status <= high for low, high in self.ranges)

    def failed(self, statuses: Mapping[int, int]) -> dict[str, int]:
        """Failed responses by class: ``{"4xx": n, "5xx": n, "other": n}``."""
        out = {"4xx": 0, "5xx": 0, "other": 0}
        for status, n in statuses.items():
            status = int(status)
            if status in self:
                continue
            if 400 <= status < 500:
                out["4xx"] += n
            elif 500 <= status < 600:
                out["5xx"] += n
            else:
                out["other"] += n
        return out

    def failed_count(self, statuses: Mapping[int, int]) -> int:
        return sum(n for status, n in statuses.items() if int(status) not in self)


def parse_expect(text: str) -> ExpectedStatuses:
    """``200-299,401`` -> ExpectedStatuses; ValueError naming the bad part."""
    ranges: list[tuple[int, int]] = []
    parts = [p.strip() for p in text.split(",")]
    if not text.strip() or any(not p for p in parts):
        raise ValueError(
            f"--expect-status {text!r}: expected statuses or ranges separated by commas,"
            " e.g. 200-299,401"
        )
    for part in parts:
        low_text, dash, high_text = part.partition("-")
        try:
            low = int(low_text)
            high = int(high_text) if dash else low
        except ValueError:
            raise ValueError(
                f"--expect-status {text!r}: {part!r} is not a status (100-599) or a range"
                " like 200-299"
            ) from None
        if not (100 <= low <= 599 and 100 <= high <= 599) or low > high:
            raise ValueError(
                f"--expect-status {text!r}: {part!r} must be statuses within 100-599,"
                " the lower first"
            )
        ranges.append((low, high))
    return ExpectedStatuses(tuple(ranges), ",".join(parts))


DEFAULT = parse_expect(DEFAULT_EXPECT)

"""Number formats shared by every report (the seed's, where it had one)."""

from __future__ import annotations


def format_us(us: int | float | None) -> str:
    """12us, 12.3ms, 1.23s; 'n/a' when there is no value (the seed's format_us)."""
    if not us:
        return "n/a"
    if us < 1_000:
        return f"{int(us)}us"
    if us < 1_000_000:
        return f"{us / 1_000:.1f}ms"
    return f"{us / 1_000_000:.2f}s"


def format_bytes(n: int | float | None) -> str:
    """The seed's format_bytes: B, KB, MB (binary multiples)."""
    if n is None:
        return "n/a"
    if n < 1024:
        return f"{int(n)} B"
    if n < 1_048_576:
        return f"{n / 1024:.1f} KB"
    if n < 1_073_741_824:
        return f"{n / 1_048_576:.1f} MB"
    return f"{n / 1_073_741_824:.2f} GB"


def format_bytes_delta(n: int | None) -> str:
    if n is None:
        return "n/a"
    if n == 0:
        return "0 B"
    return ("+" if n > 0 else "-") + format_bytes(abs(n))

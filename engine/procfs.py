"""A process tree in /proc (Linux): children, resident memory, its high-water mark."""

from __future__ import annotations

from pathlib import Path


def children(pid: int) -> list[int]:
    out: list[int] = []
    try:
        tasks = list(Path(f"/proc/{pid}/task").iterdir())
    except OSError:
        return out
    for task in tasks:
        try:
            out += [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            continue
    return out


def status(pid: int) -> tuple[int, int] | None:
    """(VmRSS, VmHWM) in bytes, or None when the process is gone."""
    resident = hwm = 0
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                resident = int(line.split()[1]) * 1024
            elif line.startswith("VmHWM:"):
                hwm = int(line.split()[1]) * 1024
    except OSError:
        return None
    return resident, hwm  # zeros for a zombie: no resident memory


def rss(pid: int) -> int | None:
    found = status(pid)
    return None if found is None else found[0]


def reset_peak(pid: int) -> bool:
    """Reset the kernel's RSS high-water mark to the current RSS (Linux >= 4.0)."""
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def check_pid(pid: int) -> str | None:
    """Why ``pid`` cannot be probed, or None."""
    if not Path("/proc").is_dir():
        return "--target-pid needs /proc (Linux)"
    if rss(pid) is None:
        return f"--target-pid {pid}: no such process"
    return None

"""Can the files and directories a run writes be written? Asked before any load."""

from __future__ import annotations

import os
from pathlib import Path


def unwritable(path: Path) -> str | None:
    """Why ``path`` cannot be written, or None when it can."""
    if path.is_dir():
        return "is a directory"
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        return f"the directory {parent} does not exist"
    if path.exists() and not os.access(path, os.W_OK):
        return "is not writable"
    if not path.exists() and not os.access(parent, os.W_OK):
        return f"the directory {parent} is not writable"
    return None


def unwritable_dir(path: Path) -> str | None:
    """Why ``path`` cannot be used as a directory to write into (created when
    missing), or None when it can."""
    if path.exists() and not path.is_dir():
        return "not a directory"
    probe = path if path.exists() else path.parent if str(path.parent) else Path(".")
    while not probe.exists():
        probe = probe.parent
    if not os.access(probe, os.W_OK):
        return f"{probe} is not writable"
    return None

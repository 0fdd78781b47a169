"""The files and directories a run writes: can they be written (asked before
any load), and writing each one whole or not at all."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any


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


def current_umask() -> int:
    """The process's umask, read without changing it where Linux shows it
    (/proc, since 4.7); elsewhere set and put back at once."""
    with contextlib.suppress(OSError, ValueError), open("/proc/self/status") as status:
        for line in status:
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def open_replacement(path: str | Path, mode: str = "wb") -> Iterator[IO[Any]]:
    """A new file that takes ``path``'s place once the block ends without error.

    Readers see the old file or the whole new one, never a part: the block
    writes a temporary file beside ``path`` (same directory, so the rename is
    atomic), which ``os.replace`` then puts in its place. The temporary file
    is made by mkstemp (O_EXCL, an unguessable name: a link planted at a
    predictable name is never followed) and removed on every failure, while
    writing or while replacing, KeyboardInterrupt included. It gets the mode
    open() would have given (0o666 less the umask), not mkstemp's 0600, so a
    result stays as readable as before. No fsync, as before: whole for every
    reader while the machine runs; a power cut may still lose the newest file.
    """
    path = Path(path)
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        try:
            os.fchmod(fd, 0o666 & ~current_umask())
            out = open(fd, mode)  # noqa: SIM115 - closed by the with below
        except BaseException:
            os.close(fd)
            raise
        with out:
            yield out
        os.replace(name, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(name)
        raise

"""Small file-system steps shared by the state machines' snapshot code."""

from __future__ import annotations

import contextlib
import os


def fsync_path(path: str, directory: bool = False) -> None:
    """Make a file (or a directory's entries) durable."""
    fd = os.open(path, os.O_RDONLY | (os.O_DIRECTORY if directory else 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def remove_sqlite_files(path: str) -> None:
    """Remove a SQLite database and whatever journal files it left beside it."""
    for suffix in ("", "-wal", "-shm", "-journal"):
        with contextlib.suppress(FileNotFoundError):
            os.remove(path + suffix)

"""Files that hold personal data or secrets are made private (0600) from their first byte:
created with that mode, never chmod-ed after a moment of being readable by everyone."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

PRIVATE = 0o600


def ensure_private_file(path: str | Path) -> None:
    """Create ``path`` empty with mode 0600 if it does not exist (a database before SQLite
    opens it: SQLite gives its -wal and -shm files the database file's mode)."""
    if str(path) == ":memory:":
        return
    with contextlib.suppress(FileExistsError):
        os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, PRIVATE))


def write_private(path: Path, data: bytes) -> None:
    """Write a new file (a key) that no one but its owner can ever read."""
    fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, PRIVATE)
    with os.fdopen(fd, "wb") as f:
        f.write(data)

"""Files that hold personal data or keys: 0600 from the moment they exist.

A file made and then ``chmod``-ed is readable by everyone in between; made with ``os.open``'s
mode it never is. SQLite makes a database's ``-wal`` and ``-shm`` with the database file's own
mode, so a database created here keeps them private too.
"""

from __future__ import annotations

import os
from pathlib import Path

PRIVATE = 0o600


def create_private(path: Path) -> None:
    """Make ``path`` empty with mode 0600 if it does not exist; an existing file is left as it
    is (an operator may have chosen its mode)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, PRIVATE)
    except FileExistsError:
        return
    os.close(fd)


def write_private(path: Path, data: bytes) -> None:
    """Write a new file ``path`` holding ``data``, mode 0600 from the start. Raises
    ``FileExistsError`` rather than overwrite one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, PRIVATE)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())

"""Where python-escpos keeps its printer-capabilities cache: one fixed folder.

Left alone, python-escpos makes a new temporary folder (``mkdtemp``) at every import and
leaves it behind, so every start of a store's gateway and every command left one more in
/tmp. It reads ``ESCPOS_CAPABILITIES_PICKLE_DIR`` when set (a folder of our own under the
user's cache, else under the system's temporary folder, reused by every run), but still makes
the temporary folder (the default is evaluated all the same): so escpos is first imported
here, with that folder made inside ours and removed again. Import this module before anything
imports escpos.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

VARIABLE = "ESCPOS_CAPABILITIES_PICKLE_DIR"


def _cache_dir() -> Path:
    for base in (os.environ.get("XDG_CACHE_HOME"), Path.home() / ".cache",
                 tempfile.gettempdir()):
        if not base:
            continue
        folder = Path(base) / "membergate-escpos"
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError:
            continue
        if os.access(folder, os.W_OK):
            return folder
    return Path(tempfile.gettempdir())


def _import_escpos(folder: Path) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
        before = set(folder.iterdir())
    except OSError:  # an unusable folder named by the operator: escpos does as it does
        return
    saved, tempfile.tempdir = tempfile.tempdir, str(folder)
    try:
        import escpos.capabilities  # noqa: F401 - its import is what leaves a folder
    finally:
        tempfile.tempdir = saved
    for made in set(folder.iterdir()) - before:
        with contextlib.suppress(OSError):  # only an empty folder escpos made just now
            made.rmdir()


if VARIABLE not in os.environ:
    os.environ[VARIABLE] = str(_cache_dir())
_import_escpos(Path(os.environ[VARIABLE]))

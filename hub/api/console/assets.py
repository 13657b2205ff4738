"""The console's own files (its styles and scripts), served by the hub from the package.

A page names each file with a digest of its content (``console.css?v=…``), and a request that
carries the file's current digest is answered as cacheable for a year: a browser then opens the
next page without asking for the file again, and an upgrade that changes the file changes its
name. A request without the digest, or with an old one, is answered as to be revalidated each
time (the file's ETag makes that a ``304``), so nobody keeps a stale file.
"""

from __future__ import annotations

import functools
import hashlib
from pathlib import Path
from urllib.parse import parse_qs

from starlette.responses import Response
from starlette.staticfiles import StaticFiles
from starlette.types import Scope

HERE = Path(__file__).parent / "static"
KEPT = "public, max-age=31536000, immutable"  # a year: the name changes with the content
ASKED_AGAIN = "no-cache"  # kept, but revalidated before each use


@functools.cache
def digest(name: str) -> str:
    """The first 12 hex digits of the file's SHA-256, read once per process (the package's
    files do not change under a running hub)."""
    return hashlib.sha256((HERE / name).read_bytes()).hexdigest()[:12]


def url(prefix: str, name: str) -> str:
    """The file's address on a page: under ``prefix``, named by its content."""
    return f"{prefix}/static/{name}?v={digest(name)}"


class Files(StaticFiles):
    """The static files, each answer with the caching its name allows."""

    def __init__(self) -> None:
        super().__init__(directory=HERE)

    async def get_response(self, path: str, scope: Scope) -> Response:
        response = await super().get_response(path, scope)
        if response.status_code in (200, 304):
            asked = parse_qs(scope.get("query_string", b"").decode("latin-1")).get("v", [""])[0]
            # ``path`` names a file of the directory here: the parent answered it.
            current = asked == digest(path.replace("\\", "/"))
            response.headers["Cache-Control"] = KEPT if current else ASKED_AGAIN
        return response

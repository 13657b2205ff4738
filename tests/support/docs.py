"""What an offline store's browser needs from ``/docs`` and ``/redoc``: nothing from elsewhere."""

from __future__ import annotations

import re
from urllib.parse import urljoin, urlsplit

import httpx

# Every URL a page can make the browser fetch: src/href attributes and the strings the
# Swagger UI and ReDoc bootstraps hand to their scripts.
_URLS = re.compile(r"""(?:src|href)\s*=\s*["']([^"']+)["']"""
                   r"""|(?:url|spec-url)\s*[:=]\s*["']([^"']+)["']""")


async def assert_docs_served_locally(base: str) -> list[str]:
    """Both doc pages answer, reference no other host, and every asset they name answers 200
    from ``base``. Returns the assets checked."""
    host = urlsplit(base).netloc
    checked: list[str] = []
    async with httpx.AsyncClient() as client:
        for page in ("/docs", "/redoc"):
            r = await client.get(base + page)
            assert r.status_code == 200, page
            urls = [a or b for a, b in _URLS.findall(r.text)]
            assert any(u.endswith(".js") for u in urls), (page, urls)
            for url in urls:
                absolute = urljoin(base + page, url)
                assert urlsplit(absolute).netloc == host, f"{page} loads {url} from elsewhere"
                asset = await client.get(absolute)
                assert asset.status_code == 200, absolute
                checked.append(urlsplit(absolute).path)
    return checked

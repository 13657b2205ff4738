"""``/metrics`` in the Prometheus text format, for the store's gateway and the hub alike.

Two kinds of figure: request latency, observed as requests go by (``RequestTimer``, an ASGI
middleware), and the state of the service (outbox depth, lag, refusals, device health), read
when Prometheus scrapes. The second kind is not counted on the hot path: each scrape builds a
fresh registry from the service's own figures (``Scrape``), so a checkout or a batch pays
nothing for being observed.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from starlette.responses import Response

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


class RequestTimer:
    """ASGI middleware: ``<prefix>_http_request_seconds{method, route, status}``. The route is
    the matched template (``/v1/members/{member_id}``), never the raw path, so member ids do
    not become label values."""

    def __init__(self, app: Any, registry: CollectorRegistry, prefix: str) -> None:
        self.app = app
        self.latency = Histogram(f"{prefix}_http_request_seconds",
                                 "HTTP requests by route and status, seconds",
                                 ("method", "route", "status"), buckets=LATENCY_BUCKETS,
                                 registry=registry)

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start, status = time.perf_counter(), [500]

        async def watch(message: Any) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, watch)
        finally:
            route = scope.get("route")
            template = getattr(route, "path", None) or "unmatched"
            self.latency.labels(scope["method"], template, str(status[0])).observe(
                time.perf_counter() - start)


class Scrape:
    """The figures of one scrape: ``gauge``/``counter`` by name, then ``response``."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.registry = CollectorRegistry()

    def gauge(self, name: str, doc: str, value: float | None = None, *,
              by: str | tuple[str, ...] = (), values: Mapping[Any, float] | None = None) -> None:
        """One value, or one per label value (``by`` names the labels, ``values`` maps each
        label value, or tuple of them, to its figure)."""
        labels = (by,) if isinstance(by, str) else by
        metric = Gauge(f"{self.prefix}_{name}", doc, labels, registry=self.registry)
        _fill(metric, labels, value, values)

    def counter(self, name: str, doc: str, value: float | None = None, *,
                by: str | tuple[str, ...] = (), values: Mapping[Any, float] | None = None
                ) -> None:
        """A running total kept by the service (Prometheus derives rates from it)."""
        labels = (by,) if isinstance(by, str) else by
        metric = Counter(f"{self.prefix}_{name}", doc, labels, registry=self.registry)
        _fill(metric, labels, value, values)

    def response(self, *more: CollectorRegistry) -> Response:
        body = b"".join(generate_latest(r) for r in (self.registry, *more))
        return Response(body, media_type=CONTENT_TYPE_LATEST)


def _fill(metric: Gauge | Counter, labels: Iterable[str], value: float | None,
          values: Mapping[Any, float] | None) -> None:
    setter = "set" if isinstance(metric, Gauge) else "inc"
    if not tuple(labels):
        getattr(metric, setter)(value or 0)
        return
    for key, figure in (values or {}).items():
        keys = key if isinstance(key, tuple) else (key,)
        getattr(metric.labels(*[str(k) for k in keys]), setter)(figure)

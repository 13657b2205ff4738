"""The store's POS API (``edge.api.app``)."""

from edge.api.app import api_server, create_app

__all__ = ["api_server", "create_app"]

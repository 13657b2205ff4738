"""Domain errors with stable, machine-readable codes; the API turns them into JSON 4xx answers
in the shape every membergate API shares (``protocol.errors``)."""

from __future__ import annotations

from typing import Any

from protocol.errors import ServiceError


class EdgeError(ServiceError):
    """A refusal the POS can show: nothing was changed when this is raised."""


def not_found(code: str, message: str, **details: Any) -> EdgeError:
    return EdgeError(code, message, 404, **details)


def invalid(code: str, message: str, **details: Any) -> EdgeError:
    return EdgeError(code, message, 422, **details)


def conflict(code: str, message: str, **details: Any) -> EdgeError:
    return EdgeError(code, message, 409, **details)

"""The one error shape of every membergate HTTP API (the store's POS API and the HQ API).

A refusal is ``{"error": {"code": "...", "message": "...", "details": {...}}}`` with a 4xx
status: ``code`` is stable and machine-readable, ``message`` is for a person, ``details`` says
what was wrong. Raising a ``ServiceError`` means nothing was changed.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field


class ServiceError(Exception):
    """A refusal a client can show: nothing was changed when this is raised."""

    def __init__(self, code: str, message: str, status: int = 409, **details: Any) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.status = status
        self.details = details

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.details:
            out["details"] = self.details
        return out


class ErrorDetail(BaseModel):
    code: str = Field(examples=["member_not_found"])
    message: str
    details: dict[str, Any] | None = None


class ErrorResponse(BaseModel):
    """What every 4xx and 5xx answer carries."""

    error: ErrorDetail


def error_body(code: str, message: str, details: dict[str, Any] | None = None
               ) -> dict[str, Any]:
    """The JSON of an ``ErrorResponse`` (``details`` left out when empty)."""
    out: dict[str, Any] = {"code": code, "message": message}
    if details:
        out["details"] = details
    return {"error": out}


# The error answers every route may give, for OpenAPI (``responses=`` on a router or app).
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorResponse, "description": text}
    for status, text in ((401, "no valid credentials"), (404, "not found"),
                         (409, "refused: conflicts with the current state"),
                         (413, "request body too large"),
                         (422, "the request body or parameters are invalid"))
}


def iso_date_text(value: object) -> object:
    """For an API date field: ISO text ("1990-05-17") or a date, never a number (JSON has no
    date type, and a number would be read as seconds since 1970)."""
    if isinstance(value, bool | int | float):
        raise ValueError("a date is ISO text such as 1990-05-17")
    return value

"""Domain errors with stable, machine-readable codes; the API turns them into JSON 4xx answers."""

from __future__ import annotations

from typing import Any


class EdgeError(Exception):
    """A refusal the POS can show: nothing was changed when this is raised."""

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


def not_found(code: str, message: str, **details: Any) -> EdgeError:
    return EdgeError(code, message, 404, **details)


def invalid(code: str, message: str, **details: Any) -> EdgeError:
    return EdgeError(code, message, 422, **details)


def conflict(code: str, message: str, **details: Any) -> EdgeError:
    return EdgeError(code, message, 409, **details)

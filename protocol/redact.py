"""Secrets as output may show them: never whole. Tokens keep their last four characters, so an
operator can tell which one is configured; passwords keep nothing. And personal data of a
member erased on request, where a stored answer still shows it (``erase_personal``)."""

from __future__ import annotations

import json
from urllib.parse import urlsplit, urlunsplit

from pydantic import ValidationError

HIDDEN = "***"


def mask_token(token: str | None) -> str | None:
    """``***abcd`` for a token of 12 or more characters (the shortest a config takes), else
    ``***``: a quarter at most is shown, never enough to use it."""
    if token is None:
        return None
    return HIDDEN + token[-4:] if len(token) >= 12 else HIDDEN


def mask_password(password: str | None) -> str | None:
    return None if password is None else HIDDEN


def redact_url(url: str) -> str:
    """``postgresql://user:secret@host/db`` as ``postgresql://user:***@host/db``."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    user = f"{parts.username}:" if parts.username else ":"
    host = parts.netloc.rsplit("@", 1)[1]
    return urlunsplit(parts._replace(netloc=f"{user}{HIDDEN}@{host}"))


def validation_summary(exc: ValidationError) -> str:
    """A settings file's errors, each as ``where: why``, without the values given: a value
    there may be a token or a password (pydantic's own text repeats every input)."""
    return "; ".join(f"{'.'.join(str(p) for p in err['loc']) or '(file)'}: {err['msg']}"
                     for err in exc.errors(include_input=False, include_url=False))


_ERASED_TO: dict[str, object] = {"phone": None, "name": "", "birthday": None, "cards": [],
                                 "card_states": [], "tags": []}


def erase_personal(text: str) -> str:
    """A stored JSON answer (kept for retries) with a member's personal fields emptied, its
    shape kept so a retry still gets an answer of the same kind (a member erased on request)."""

    def scrub(value: object) -> object:
        if isinstance(value, dict):
            return {k: (_ERASED_TO[k] if k in _ERASED_TO and v else scrub(v))
                    for k, v in value.items()}
        if isinstance(value, list):
            return [scrub(v) for v in value]
        return value

    return json.dumps(scrub(json.loads(text)), ensure_ascii=False)

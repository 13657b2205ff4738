"""The e-mail channel: SMTP submission with STARTTLS and a login, through the chain's own mail
server or a sending service — stdlib ``smtplib`` in a worker thread, no new dependency.

The mail:

- ``Subject`` is the message's template (``Outgoing.template`` is the channel's template: here
  the subject line) with its ``{name}`` placeholders filled from ``params``; a placeholder
  without a value stays as written, so a typo shows instead of vanishing.
- The body is ``message.text``, UTF-8 plain text.
- ``Message-ID`` is made from the message's key and the sender's domain, the same on every
  attempt: a mail re-sent after a crash is one the receiving side can recognise.
- A marketing mail carries ``List-Unsubscribe`` (``list_unsubscribe``) and, for an https URL,
  ``List-Unsubscribe-Post: List-Unsubscribe=One-Click`` (RFC 8058), which the big mailbox
  providers ask of bulk senders; a transactional one carries neither.

Credentials never go without TLS: with a login the settings must keep ``starttls``, and a
server that offers no STARTTLS is not sent to at all.

How a failure is taken:

- a 4xx reply anywhere, a refused connection, a timeout, a TLS failure: tried again later;
- a recipient refused with 5xx, or the mail's content refused with 5xx after DATA: refused;
- a failed login, a sender address refused, any other 5xx: tried again — these are the hub's
  configuration, not the member's message; the outbox dead-letters the message once its
  attempts are spent, where an operator sees the reason.
"""

from __future__ import annotations

import asyncio
import re
import smtplib
import ssl
from datetime import UTC, datetime
from email.errors import MessageError
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import format_datetime, parseaddr
from pathlib import Path
from urllib.parse import quote

from pydantic import BaseModel, Field, SecretStr, field_validator, model_validator

from hub.notify.channel import Outgoing, Refused, Retry, Sent

PLACEHOLDER = re.compile(r"\{(\w+)\}")
# Words that make a text's own unsubscribe line, when no List-Unsubscribe is configured.
UNSUBSCRIBE_WORDS = ("unsubscribe", "退订", "取消订阅")


def _domain(address: str) -> str:
    return parseaddr(address)[1].rpartition("@")[2]


class EmailSettings(BaseModel, extra="forbid"):
    host: str
    port: int = Field(587, ge=1, le=65535)
    username: str | None = None
    password: SecretStr | None = None
    sender: str  # the From: "会员中心 <members@example.com>" or a bare address
    starttls: bool = True
    ca_file: Path | None = None  # an extra CA to trust besides the system's
    timeout_s: float = Field(20.0, gt=0, le=300)
    list_unsubscribe: str | None = None  # mailto: or https: URL for marketing mails

    @field_validator("sender")
    @classmethod
    def _address(cls, sender: str) -> str:
        address = parseaddr(sender)[1]
        if "@" not in address or not _domain(address):
            raise ValueError(f"sender {sender!r} is not an e-mail address")
        return sender

    @field_validator("list_unsubscribe")
    @classmethod
    def _unsubscribe_url(cls, url: str | None) -> str | None:
        if url is not None and not url.startswith(("mailto:", "https://")):
            raise ValueError(f"list_unsubscribe {url!r} must be a mailto: or https:// URL")
        return url

    @model_validator(mode="after")
    def _credentials_over_tls(self) -> EmailSettings:
        if self.username is not None and not self.starttls:
            raise ValueError("a login (username) needs starttls: credentials never go in clear")
        if (self.username is None) != (self.password is None):
            raise ValueError("username and password go together")
        return self


def subject_of(message: Outgoing) -> str:
    return PLACEHOLDER.sub(lambda m: message.params.get(m.group(1), m.group(0)),
                           message.template)


def message_id(key: str, sender: str) -> str:
    """``<key@sender's domain>``, the key percent-encoded into a valid dot-atom."""
    local = quote(key, safe="-_~").replace(".", "%2E")
    return f"<{local}@{_domain(sender)}>"


class EmailChannel:
    name = "email"

    def __init__(self, settings: EmailSettings) -> None:
        self.settings = settings
        self._context = ssl.create_default_context()
        if settings.ca_file is not None:
            self._context.load_verify_locations(cafile=str(settings.ca_file))

    def build(self, message: Outgoing) -> EmailMessage:
        """The mail for a message; Refused if the message cannot be a mail at all."""
        s = self.settings
        mail = EmailMessage()
        try:
            Address(addr_spec=message.to)  # checks the address's syntax
            mail["From"] = s.sender
            mail["To"] = message.to
            mail["Subject"] = subject_of(message)
        # A bad address (an ASCII one: no SMTPUTF8 here), a line break in the subject.
        except (ValueError, IndexError, MessageError) as exc:
            raise Refused(f"not a mail: {exc}"[:200]) from None
        mail["Date"] = format_datetime(datetime.now(UTC))
        mail["Message-ID"] = message_id(message.key, s.sender)
        if message.purpose == "marketing" and s.list_unsubscribe:
            mail["List-Unsubscribe"] = f"<{s.list_unsubscribe}>"
            if s.list_unsubscribe.startswith("https://"):
                mail["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
        mail.set_content(message.text, charset="utf-8")
        return mail

    async def send(self, message: Outgoing) -> Sent:
        mail = self.build(message)
        await asyncio.to_thread(self._deliver, mail, message.to)
        return Sent(provider_id=str(mail["Message-ID"]))

    def _deliver(self, mail: EmailMessage, to: str) -> None:
        s = self.settings
        try:
            with smtplib.SMTP(s.host, s.port, timeout=s.timeout_s) as smtp:
                if s.starttls:
                    smtp.starttls(context=self._context)  # raises if the server has none
                if s.username is not None and s.password is not None:
                    smtp.login(s.username, s.password.get_secret_value())
                smtp.send_message(mail, to_addrs=[to])
        except smtplib.SMTPRecipientsRefused as exc:
            code, said = next(iter(exc.recipients.values()), (0, b""))
            raise _verdict("recipient refused", code, said, final=code >= 500) from None
        except smtplib.SMTPDataError as exc:
            raise _verdict("mail refused", exc.smtp_code, exc.smtp_error,
                           final=exc.smtp_code >= 500) from None
        except smtplib.SMTPAuthenticationError as exc:
            raise _verdict("login failed", exc.smtp_code, exc.smtp_error, final=False) from None
        except smtplib.SMTPResponseException as exc:  # sender refused, HELO, a 421 ...
            raise _verdict("smtp server", exc.smtp_code, exc.smtp_error, final=False) from None
        except smtplib.SMTPNotSupportedError:
            raise Retry("smtp server offers no STARTTLS or no AUTH: nothing sent") from None
        except (smtplib.SMTPException, OSError) as exc:  # refused, timed out, TLS, cut off
            raise Retry(f"smtp server unreachable: {type(exc).__name__}") from None

    def check(self, purpose: str, text: str) -> None:
        """Whether a rendered text can go as a mail: raises ValueError saying why not."""
        if not text.strip():
            raise ValueError("the message is empty")
        if (purpose == "marketing" and not self.settings.list_unsubscribe
                and not any(w in text.casefold() for w in UNSUBSCRIBE_WORDS)):
            raise ValueError("a marketing mail needs a way to unsubscribe: configure the"
                             " channel's list_unsubscribe (sent as List-Unsubscribe), or put"
                             " an unsubscribe line in the text (with 'unsubscribe', 退订 or"
                             " 取消订阅)")

    async def aclose(self) -> None:
        pass  # a connection lives for one mail: nothing stays open


def _verdict(what: str, code: int, said: bytes | str, final: bool) -> Retry | Refused:
    text = said.decode(errors="replace") if isinstance(said, bytes) else str(said)
    why = f"{what}: {code} {text}".strip()[:200]
    return Refused(why) if final else Retry(why)

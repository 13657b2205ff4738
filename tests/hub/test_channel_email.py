"""The e-mail channel against a real SMTP server on this box (aiosmtpd) that, like a submission
server, takes nothing before STARTTLS and a login; its certificate is made here and trusted by
the channel only through ``ca_file``."""

from __future__ import annotations

import email
import email.policy
import socket
import ssl
from collections.abc import Iterator
from dataclasses import dataclass, field
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session
from pydantic import ValidationError

from hub.notify.channel import Outgoing, Purpose, Refused, Retry, Sent
from hub.notify.channels.email import EmailChannel, EmailSettings, message_id
from tests.hub.test_channel_sms import self_signed

USER = "hub@mail.example.cn"
PASSWORD = "pw-that-must-never-leak"
SENDER = "会员中心 <members@shop.example.cn>"




def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@dataclass
class Received:
    mail_from: str
    rcpt_tos: list[str]
    message: EmailMessage
    authenticated: bool
    tls: bool


@dataclass
class Inbox:
    """The server's handler: refuses gone@ for good and later@ for now, and the content of a
    mail to spamtrap@ after DATA; keeps the rest."""

    mails: list[Received] = field(default_factory=list)
    logins: list[tuple[bytes, bytes]] = field(default_factory=list)

    async def handle_RCPT(self, server: SMTP, session: Session, envelope: Envelope,
                          address: str, rcpt_options: list[str]) -> str:
        if address.startswith("gone@"):
            return "550 5.1.1 <gone@example.cn>: mailbox unavailable"
        if address.startswith("later@"):
            return "451 4.3.0 mailbox busy, try again later"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        if "spamtrap@example.cn" in envelope.rcpt_tos:
            return "554 5.7.1 message content rejected"
        raw = envelope.original_content or b""
        parsed = email.message_from_bytes(raw, policy=email.policy.default)
        assert isinstance(parsed, EmailMessage)
        self.mails.append(Received(str(envelope.mail_from), list(envelope.rcpt_tos), parsed,
                                   bool(session.authenticated), session.ssl is not None))
        return "250 2.0.0 queued"

    def authenticate(self, server: SMTP, session: Session, envelope: Envelope,
                     mechanism: str, auth_data: Any) -> AuthResult:
        assert isinstance(auth_data, LoginPassword)
        self.logins.append((auth_data.login, auth_data.password))
        ok = auth_data.login == USER.encode() and auth_data.password == PASSWORD.encode()
        return AuthResult(success=ok, handled=False)  # not handled: the server says 535


@dataclass
class Server:
    port: int
    ca_file: Path
    inbox: Inbox


def serve(inbox: Inbox, tls: ssl.SSLContext | None) -> Controller:
    kwargs: dict[str, Any] = {"auth_required": True, "authenticator": inbox.authenticate}
    if tls is not None:
        kwargs |= {"tls_context": tls, "require_starttls": True, "auth_require_tls": True}
    controller = Controller(inbox, hostname="127.0.0.1", port=free_port(), **kwargs)
    controller.start()
    return controller


@pytest.fixture
def cert(tmp_path: Path) -> tuple[Path, Path]:
    return self_signed(tmp_path)


@pytest.fixture
def server(cert: tuple[Path, Path]) -> Iterator[Server]:
    tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    tls.load_cert_chain(*cert)
    inbox = Inbox()
    controller = serve(inbox, tls)
    try:
        yield Server(controller.port, cert[0], inbox)
    finally:
        controller.stop()


def settings_for(server: Server, **changes: Any) -> EmailSettings:
    values: dict[str, Any] = {"host": "127.0.0.1", "port": server.port, "username": USER,
                              "password": PASSWORD, "sender": SENDER,
                              "ca_file": server.ca_file, "timeout_s": 5.0,
                              "list_unsubscribe": "https://shop.example.cn/unsubscribe"}
    return EmailSettings(**{**values, **changes})


def outgoing(to: str = "zhang.san@example.cn", purpose: Purpose = "transactional",
             key: str = "journey:j1:m1:2025-06-01:0", **params: str) -> Outgoing:
    return Outgoing(key=key, member_id="m1", to=to, purpose=purpose,
                    template="{name}，您的积分将于{date}到期",
                    params=params or {"name": "张三", "date": "6月30日"},
                    text="张三您好：\n您有 1200 积分将于 6 月 30 日到期。\n")


def assert_clean(exc: BaseException) -> None:
    assert PASSWORD not in str(exc) and "wrong-pw" not in str(exc)
    assert exc.__cause__ is None


# -- sending -------------------------------------------------------------------------------------

async def test_transactional_mail_arrives_over_tls_with_its_headers(server: Server) -> None:
    channel = EmailChannel(settings_for(server))
    sent = await channel.send(outgoing())
    await channel.aclose()
    [got] = server.inbox.mails
    assert got.authenticated and got.tls
    assert got.mail_from == "members@shop.example.cn"
    assert got.rcpt_tos == ["zhang.san@example.cn"]
    mail = got.message
    assert mail["From"].addresses[0].display_name == "会员中心"
    assert mail["From"].addresses[0].addr_spec == "members@shop.example.cn"
    assert mail["To"] == "zhang.san@example.cn"
    assert mail["Subject"] == "张三，您的积分将于6月30日到期"
    expected_id = "<journey%3Aj1%3Am1%3A2025-06-01%3A0@shop.example.cn>"
    assert mail["Message-ID"] == expected_id == message_id(outgoing().key, SENDER)
    assert sent == Sent(provider_id=expected_id)
    assert mail["Date"] is not None
    assert "List-Unsubscribe" not in mail and "List-Unsubscribe-Post" not in mail
    assert mail.get_content_type() == "text/plain"
    body = mail.get_content().replace("\r\n", "\n")  # as sent on the wire
    assert body == "张三您好：\n您有 1200 积分将于 6 月 30 日到期。\n"
    assert server.inbox.logins == [(USER.encode(), PASSWORD.encode())]


async def test_marketing_mail_carries_one_click_unsubscribe(server: Server) -> None:
    channel = EmailChannel(settings_for(server))
    await channel.send(outgoing(purpose="marketing"))
    mail = server.inbox.mails[0].message
    assert mail["List-Unsubscribe"] == "<https://shop.example.cn/unsubscribe>"
    assert mail["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"


async def test_a_mailto_unsubscribe_has_no_one_click_post(server: Server) -> None:
    channel = EmailChannel(settings_for(
        server, list_unsubscribe="mailto:unsubscribe@shop.example.cn"))
    await channel.send(outgoing(purpose="marketing"))
    mail = server.inbox.mails[0].message
    assert mail["List-Unsubscribe"] == "<mailto:unsubscribe@shop.example.cn>"
    assert "List-Unsubscribe-Post" not in mail


async def test_a_resend_has_the_same_message_id(server: Server) -> None:
    channel = EmailChannel(settings_for(server))
    await channel.send(outgoing(key="k.1/2"))
    await channel.send(outgoing(key="k.1/2"))
    await channel.send(outgoing(key="k.1/3"))
    first, again, other = (m.message["Message-ID"] for m in server.inbox.mails)
    assert first == again == "<k%2E1%2F2@shop.example.cn>"
    assert other != first


async def test_a_placeholder_without_a_value_stays_as_written(server: Server) -> None:
    channel = EmailChannel(settings_for(server))
    await channel.send(outgoing(name="李四"))
    assert server.inbox.mails[0].message["Subject"] == "李四，您的积分将于{date}到期"


async def test_a_recipient_refused_for_good_is_refused(server: Server) -> None:
    channel = EmailChannel(settings_for(server))
    with pytest.raises(Refused, match="550") as caught:
        await channel.send(outgoing(to="gone@example.cn"))
    assert_clean(caught.value)
    assert server.inbox.mails == []


async def test_a_recipient_refused_for_now_is_tried_again(server: Server) -> None:
    channel = EmailChannel(settings_for(server))
    with pytest.raises(Retry, match="451") as caught:
        await channel.send(outgoing(to="later@example.cn"))
    assert_clean(caught.value)


async def test_content_refused_after_data_is_refused(server: Server) -> None:
    channel = EmailChannel(settings_for(server))
    with pytest.raises(Refused, match="mail refused: 554") as caught:
        await channel.send(outgoing(to="spamtrap@example.cn"))
    assert_clean(caught.value)


async def test_a_server_down_is_tried_again(server: Server) -> None:
    channel = EmailChannel(settings_for(server, port=free_port()))
    with pytest.raises(Retry, match="unreachable") as caught:
        await channel.send(outgoing())
    assert_clean(caught.value)


async def test_a_wrong_password_is_tried_again(server: Server) -> None:
    channel = EmailChannel(settings_for(server, password="wrong-pw"))
    with pytest.raises(Retry, match="login failed: 535") as caught:
        await channel.send(outgoing())
    assert_clean(caught.value)
    assert server.inbox.mails == []


async def test_an_untrusted_certificate_is_tried_again_and_no_login_goes(server: Server) -> None:
    channel = EmailChannel(settings_for(server, ca_file=None))
    with pytest.raises(Retry, match="unreachable"):
        await channel.send(outgoing())
    assert server.inbox.logins == [] and server.inbox.mails == []


async def test_no_credentials_to_a_server_without_starttls(server: Server) -> None:
    inbox = Inbox()
    plain = serve(inbox, tls=None)
    try:
        channel = EmailChannel(settings_for(server, port=plain.port))
        with pytest.raises(Retry, match="STARTTLS"):
            await channel.send(outgoing())
    finally:
        plain.stop()
    assert inbox.logins == [] and inbox.mails == []


@pytest.mark.parametrize("message", [
    outgoing(to="not an address"),
    outgoing(to="a@example.cn, b@example.cn"),
    outgoing(name="张三\r\nBcc: everyone@example.cn"),
])
async def test_what_cannot_be_a_mail_is_refused(server: Server, message: Outgoing) -> None:
    with pytest.raises(Refused, match="not a mail"):
        await EmailChannel(settings_for(server)).send(message)
    assert server.inbox.mails == []


# -- settings and checks -------------------------------------------------------------------------

@pytest.mark.parametrize("changes", [
    {"starttls": False},  # a login in clear
    {"password": None},
    {"username": None},
    {"sender": "members"},
    {"list_unsubscribe": "http://shop.example.cn/unsubscribe"},
    {"tls": True},
])
def test_settings_refuse(server: Server, changes: dict[str, Any]) -> None:
    with pytest.raises(ValidationError) as caught:
        settings_for(server, **changes)
    assert PASSWORD not in str(caught.value)


def test_settings_without_a_login_may_skip_starttls_and_keep_the_password_hidden(
        server: Server) -> None:
    assert not settings_for(server, username=None, password=None, starttls=False).starttls
    settings = settings_for(server)
    assert PASSWORD not in repr(settings) and PASSWORD not in settings.model_dump_json()


def test_check(server: Server) -> None:
    configured = EmailChannel(settings_for(server))
    bare = EmailChannel(settings_for(server, list_unsubscribe=None))
    configured.check("marketing", "周末双倍积分")
    bare.check("transactional", "您的积分已到账")
    bare.check("marketing", "周末双倍积分。不想再收到？回复退订")
    bare.check("marketing", "Double points. Unsubscribe: https://shop.example.cn/u")
    with pytest.raises(ValueError, match="list_unsubscribe"):
        bare.check("marketing", "周末双倍积分")
    with pytest.raises(ValueError, match="empty"):
        configured.check("transactional", " \n")


async def test_an_address_hq_keeps_reaches_the_member_through_the_outbox(
        hub_db: Any, server: Server) -> None:
    """HQ sets a member's e-mail address (member.profile_changed v3 of the HQ stream); the
    outbox's e-mail loop sends there, a member without one is suppressed (no_address), and
    erasure takes the address out of the member and out of the log."""
    from hub.core.db import HubDatabase
    from hub.ledger import hq_events
    from hub.ledger.hq_events import Merge
    from hub.notify import outbox
    from hub.notify.dispatcher import Dispatcher, NotifySettings
    from protocol.codec import decode
    from protocol.events import ConsentChanged, Event, MemberRegistered
    from protocol.hlc import HybridClock
    from tests.hub.test_journeys import NOW, Fleet

    db: HubDatabase = hub_db
    await Fleet(db).send([
        MemberRegistered(member_id="m1", member_code="C1", name="王芳"),
        MemberRegistered(member_id="m2", member_code="C2"),
        *(ConsentChanged(member_id=m, channel="email", purpose="marketing", granted=True,
                         text_version="v1") for m in ("m1", "m2"))])
    merge = Merge(HybridClock(), NOW)
    changed = await db.transaction(lambda tx: hq_events.change_profile(
        tx, "m1", {"email": "wang.fang@example.cn"}, "hotline 3", merge))
    assert changed["email"] == "wang.fang@example.cn"
    await db.transaction(lambda tx: outbox.enqueue(tx, [
        outbox.Message(key=f"k-{m}", member_id=m, channel="email", purpose="marketing",
                       template="会员日", params={}, text="本周六会员日，全场九折")
        for m in ("m1", "m2")], NOW))
    d = Dispatcher(db, {"email": EmailChannel(settings_for(server))}, NotifySettings(),
                   "Asia/Shanghai", dict, lambda: NOW)
    await d.round("email")
    states = await db.read(lambda tx: sorted(tuple(r) for r in tx.all(
        "SELECT member_id, state, reason FROM outbox")))
    assert states == [("m1", "sent", ""), ("m2", "suppressed", "no_address")]
    assert [m.rcpt_tos for m in server.inbox.mails] == [["wang.fang@example.cn"]]
    assert server.inbox.mails[0].message["Subject"] == "会员日"
    await db.transaction(lambda tx: hq_events.erase_member(tx, "m1", "dpo", "PIPL", merge))
    assert await db.read(lambda tx: tx.scalar(
        "SELECT email FROM members WHERE member_id = 'm1'")) is None
    payloads = await db.read(lambda tx: [bytes(p) for (p,) in tx.all(
        "SELECT payload FROM events WHERE type = 'member.profile_changed'")])
    assert [decode(p, Event).body.email for p in payloads] == [None]  # type: ignore[union-attr]

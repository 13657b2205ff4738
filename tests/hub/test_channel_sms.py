"""The SMS channel: its signature against Alibaba Cloud's own worked example, and the channel
against a stand-in for dysmsapi — a real HTTPS server on this box that checks every request's
signature the way Aliyun does and answers the way Aliyun answers."""

from __future__ import annotations

import base64
import hashlib
import hmac
import ipaddress
import json
import re
import socket
import ssl
import threading
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, quote

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from pydantic import ValidationError

from hub.notify.channel import Outgoing, Refused, Retry, Sent
from hub.notify.channels.sms import (
    SmsChannel,
    SmsReceipt,
    SmsReply,
    SmsSettings,
    inbound,
    parts,
    percent_encode,
    receipts,
    sign,
)

SECRET = "Xy9-secret-that-must-never-leak"
KEY_ID = "LTAI5tTestKeyId"
SIGN_NAME = "会员中心"

# Phone numbers that make the stand-in answer one way or another.
OK, ILLEGAL, THROTTLED, NO_BALANCE, DOWN, SLOW = (f"1380000000{i}" for i in range(1, 7))


# -- Aliyun's worked example ---------------------------------------------------------------------

# Alibaba Cloud SMS documentation, "签名机制" (request signatures), worked example:
# https://help.aliyun.com/document_detail/101343.htm (formerly
# https://help.aliyun.com/document_detail/56189.html). AccessKeyId testId, AccessKeySecret
# testSecret, SendSms to 15300000001 with signature 阿里云短信测试专用, template SMS_71390007,
# TemplateParam {"customer":"test"}, OutId 123, Timestamp 2017-07-12T02:42:19Z, SignatureNonce
# 45e25e9b-0a6f-4070-8c85-2956eda1b466, signed for a GET: Signature zJDF+Lrzhj/ThnlvIToysFRq6t4=.
DOCUMENTED_PARAMS = {
    "SignatureMethod": "HMAC-SHA1",
    "SignatureNonce": "45e25e9b-0a6f-4070-8c85-2956eda1b466",
    "AccessKeyId": "testId",
    "SignatureVersion": "1.0",
    "Timestamp": "2017-07-12T02:42:19Z",
    "Format": "XML",
    "Action": "SendSms",
    "Version": "2017-05-25",
    "RegionId": "cn-hangzhou",
    "PhoneNumbers": "15300000001",
    "SignName": "阿里云短信测试专用",
    "TemplateParam": '{"customer":"test"}',
    "TemplateCode": "SMS_71390007",
    "OutId": "123",
}
DOCUMENTED_SIGNATURE = "zJDF+Lrzhj/ThnlvIToysFRq6t4="


def test_sign_reproduces_the_documented_example() -> None:
    assert sign(DOCUMENTED_PARAMS, "testSecret", method="GET") == DOCUMENTED_SIGNATURE


def test_sign_leaves_out_a_signature_already_there_and_depends_on_everything_else() -> None:
    with_old = {**DOCUMENTED_PARAMS, "Signature": "whatever"}
    assert sign(with_old, "testSecret", method="GET") == DOCUMENTED_SIGNATURE
    assert sign(DOCUMENTED_PARAMS, "testSecret", method="POST") != DOCUMENTED_SIGNATURE
    assert sign(DOCUMENTED_PARAMS, "otherSecret", method="GET") != DOCUMENTED_SIGNATURE
    changed = {**DOCUMENTED_PARAMS, "OutId": "124"}
    assert sign(changed, "testSecret", method="GET") != DOCUMENTED_SIGNATURE


def test_percent_encoding_follows_the_documented_rules() -> None:
    # The doc's rules: A-Z a-z 0-9 - _ . ~ kept; space %20 (not +); * %2A; UTF-8 for the rest.
    assert percent_encode("Az09-_.~") == "Az09-_.~"
    assert percent_encode("a b*c") == "a%20b%2Ac"
    assert percent_encode("/") == "%2F"
    assert percent_encode('"') == "%22"
    assert percent_encode("阿") == "%E9%98%BF"


# -- a stand-in for dysmsapi ---------------------------------------------------------------------

def self_signed(folder: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 that is its own CA, and its key."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "dysmsapi stand-in")])
    now = datetime.now(UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(minutes=5)).not_valid_after(now + timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
                           critical=False)
            .sign(key, hashes.SHA256()))
    cert_file, key_file = folder / "cert.pem", folder / "key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_file, key_file


def aliyun_signature(form: dict[str, str], secret: str) -> str:
    """The provider's side, written apart from the channel's: what Aliyun computes for a POST."""
    def enc(s: str) -> str:
        return quote(s, safe="-_.~")
    canonical = "&".join(f"{enc(k)}={enc(v)}" for k, v in sorted(form.items())
                         if k != "Signature")
    to_sign = "POST&%2F&" + enc(canonical)
    digest = hmac.new(f"{secret}&".encode(), to_sign.encode(), hashlib.sha1).digest()
    return base64.b64encode(digest).decode()


class _Dysmsapi(ThreadingHTTPServer):
    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.requests: list[dict[str, str]] = []
        self.release = threading.Event()  # lets the slow answer go at the end


class _Handler(BaseHTTPRequestHandler):
    server: _Dysmsapi

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _answer(self, status: int, body: dict[str, Any] | str) -> None:
        data = (json.dumps(body, ensure_ascii=False) if isinstance(body, dict) else body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json;charset=utf-8"
                         if isinstance(body, dict) else "text/html")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_POST(self) -> None:
        assert self.headers["Content-Type"].startswith("application/x-www-form-urlencoded")
        raw = self.rfile.read(int(self.headers["Content-Length"])).decode()
        form = dict(parse_qsl(raw, keep_blank_values=True, strict_parsing=True))
        self.server.requests.append(form)
        request_id = "F655A8D5-B967-440B-8683-DAD6FF8DE990"
        expected = aliyun_signature(form, SECRET)
        if form.get("Signature") != expected:
            # Aliyun's own answer quotes the string it signed: the channel must not repeat it.
            self._answer(400, {"Code": "SignatureDoesNotMatch", "RequestId": request_id,
                               "Message": "Specified signature is not matched with our"
                               " calculation. server string to sign is:POST&%2F&"
                               + quote(raw, safe="")})
            return
        common = {"AccessKeyId": KEY_ID, "Action": "SendSms", "Format": "JSON",
                  "SignatureMethod": "HMAC-SHA1", "SignatureVersion": "1.0",
                  "Version": "2017-05-25", "RegionId": "cn-hangzhou"}
        wrong = [k for k, v in common.items() if form.get(k) != v]
        wrong += [k for k in ("SignatureNonce", "Timestamp", "SignName", "TemplateCode")
                  if not form.get(k)]
        if wrong:
            self._answer(400, {"Code": "MissingParameter", "Message": ",".join(wrong),
                               "RequestId": request_id})
            return
        datetime.strptime(form["Timestamp"], "%Y-%m-%dT%H:%M:%SZ")
        phone = form["PhoneNumbers"]
        if phone == ILLEGAL:
            self._answer(200, {"Code": "isv.MOBILE_NUMBER_ILLEGAL", "Message": "非法手机号",
                               "RequestId": request_id})
        elif phone == THROTTLED:
            self._answer(200, {"Code": "isv.BUSINESS_LIMIT_CONTROL",
                               "Message": "触发分钟级流控Permits:1", "RequestId": request_id})
        elif phone == NO_BALANCE:
            self._answer(200, {"Code": "isv.AMOUNT_NOT_ENOUGH", "Message": "账户余额不足",
                               "RequestId": request_id})
        elif phone == DOWN:
            self._answer(503, "<html><body>Service Unavailable</body></html>")
        else:
            if phone == SLOW:
                self.server.release.wait(10)
            self._answer(200, {"Code": "OK", "Message": "OK", "RequestId": request_id,
                               "BizId": f"9006197469364984{len(self.server.requests):02d}^0"})


@dataclass
class Provider:
    endpoint: str
    ca_file: Path
    requests: list[dict[str, str]]


@pytest.fixture
def provider(tmp_path: Path) -> Iterator[Provider]:
    cert, key = self_signed(tmp_path)
    server = _Dysmsapi()
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield Provider(f"https://127.0.0.1:{server.server_address[1]}/", cert, server.requests)
    finally:
        server.release.set()
        server.shutdown()
        server.server_close()
        thread.join(10)


def settings_for(provider: Provider, **changes: Any) -> SmsSettings:
    values: dict[str, Any] = {"endpoint": provider.endpoint, "access_key_id": KEY_ID,
                              "access_key_secret": SECRET, "sign_name": SIGN_NAME,
                              "ca_file": provider.ca_file, "timeout_s": 1.0}
    return SmsSettings(**{**values, **changes})


@pytest.fixture
async def channel(provider: Provider) -> AsyncIterator[SmsChannel]:
    sms = SmsChannel(settings_for(provider))
    yield sms
    await sms.aclose()


def outgoing(to: str, key: str = "journey:j1:m1:2025-06-01:0", **params: str) -> Outgoing:
    return Outgoing(key=key, member_id="m1", to=to, purpose="marketing",
                    template="SMS_465880123", params=params or {"name": "张 三*~", "shop": "A&B"},
                    text="【会员中心】张 三*~，您在A&B的积分即将到期，回T退订")


def assert_clean(exc: BaseException) -> None:
    text = str(exc)
    assert SECRET not in text
    assert "string to sign" not in text.casefold() and "AccessKeyId" not in text
    assert exc.__cause__ is None  # nor a chained httpx error with the request in it
    assert exc.__context__ is None or exc.__suppress_context__


# -- sending -------------------------------------------------------------------------------------

async def test_accepted_message_is_sent_with_every_field_the_provider_needs(
        channel: SmsChannel, provider: Provider) -> None:
    sent = await channel.send(outgoing(OK))
    assert isinstance(sent, Sent)
    assert sent.provider_id == "900619746936498401^0"
    [form] = provider.requests
    assert form["PhoneNumbers"] == OK
    assert form["SignName"] == SIGN_NAME
    assert form["TemplateCode"] == "SMS_465880123"
    assert form["TemplateParam"] == '{"name":"张 三*~","shop":"A&B"}'
    assert json.loads(form["TemplateParam"]) == {"name": "张 三*~", "shop": "A&B"}
    assert form["OutId"] == "journey:j1:m1:2025-06-01:0"
    assert form["Signature"] == aliyun_signature(form, SECRET)


async def test_each_attempt_has_its_own_nonce_and_a_template_without_placeholders_no_param(
        channel: SmsChannel, provider: Provider) -> None:
    bare = Outgoing(key="k2", member_id="m1", to=OK, purpose="transactional",
                    template="SMS_1", text="【会员中心】您的会员卡已开通")
    await channel.send(bare)
    await channel.send(bare)
    first, second = provider.requests
    assert "TemplateParam" not in first
    assert first["OutId"] == second["OutId"] == "k2"
    assert first["SignatureNonce"] != second["SignatureNonce"]


async def test_an_invalid_number_is_refused(channel: SmsChannel) -> None:
    with pytest.raises(Refused, match=r"isv\.MOBILE_NUMBER_ILLEGAL") as caught:
        await channel.send(outgoing(ILLEGAL))
    assert_clean(caught.value)


@pytest.mark.parametrize(("phone", "code"), [(THROTTLED, "isv.BUSINESS_LIMIT_CONTROL"),
                                             (NO_BALANCE, "isv.AMOUNT_NOT_ENOUGH"),
                                             (DOWN, "503")])
async def test_throttling_balance_and_a_provider_down_are_tried_again(
        channel: SmsChannel, phone: str, code: str) -> None:
    with pytest.raises(Retry, match=re.escape(code)) as caught:
        await channel.send(outgoing(phone))
    assert_clean(caught.value)


async def test_a_provider_too_slow_is_tried_again(channel: SmsChannel) -> None:
    with pytest.raises(Retry, match="Timeout") as caught:
        await channel.send(outgoing(SLOW))
    assert_clean(caught.value)


async def test_a_wrong_secret_is_tried_again_without_repeating_what_was_signed(
        provider: Provider) -> None:
    sms = SmsChannel(settings_for(provider, access_key_secret="not-the-secret"))
    try:
        with pytest.raises(Retry, match="SignatureDoesNotMatch") as caught:
            await sms.send(outgoing(OK))
    finally:
        await sms.aclose()
    assert_clean(caught.value)
    assert "not-the-secret" not in str(caught.value)
    assert OK not in str(caught.value)  # the request (the member's number) is not repeated


async def test_an_untrusted_certificate_is_tried_again(provider: Provider) -> None:
    sms = SmsChannel(settings_for(provider, ca_file=None))
    try:
        with pytest.raises(Retry, match="unreachable"):
            await sms.send(outgoing(OK))
    finally:
        await sms.aclose()
    assert provider.requests == []


async def test_nothing_listening_is_tried_again(provider: Provider) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        free = s.getsockname()[1]
    sms = SmsChannel(settings_for(provider, endpoint=f"https://127.0.0.1:{free}/"))
    try:
        with pytest.raises(Retry, match="unreachable") as caught:
            await sms.send(outgoing(OK))
    finally:
        await sms.aclose()
    assert_clean(caught.value)


def test_settings_keep_the_secret_to_themselves(provider: Provider) -> None:
    settings = settings_for(provider)
    assert SECRET not in repr(settings) and SECRET not in str(settings)
    assert SECRET not in repr(SmsChannel(settings).__dict__)
    assert SECRET not in settings.model_dump_json()


@pytest.mark.parametrize("changes", [
    {"endpoint": "http://dysmsapi.aliyuncs.com/"},
    {"sign_name": "【会员中心】"},
    {"sign_name": " "},
    {"region": "cn-shanghai"},
])
def test_settings_refuse(provider: Provider, changes: dict[str, Any]) -> None:
    with pytest.raises(ValidationError) as caught:
        settings_for(provider, **changes)
    assert SECRET not in str(caught.value)


# -- delivery receipts ---------------------------------------------------------------------------

def test_receipts_as_aliyun_pushes_them() -> None:
    body = json.dumps([
        {"phone_number": "1381111****", "send_time": "2017-01-01 00:00:00",
         "report_time": "2017-01-01 00:00:05", "success": True, "err_code": "DELIVERED",
         "err_msg": "用户接收成功", "sms_size": "1", "biz_id": "12345", "out_id": "67890"},
        {"phone_number": "1381111****", "send_time": "2017-01-01 00:00:00",
         "report_time": "2017-01-01 00:01:00", "success": False, "err_code": "MK:0001",
         "err_msg": "用户停机", "sms_size": "2", "biz_id": "12346", "out_id": "k2"},
        {"phone_number": "1381111****", "send_time": "2017-01-01 00:00:00",
         "report_time": "2017-01-01 00:02:00", "success": False, "err_code": "",
         "err_msg": "", "sms_size": "1", "biz_id": "12347"},
    ], ensure_ascii=False).encode()
    assert receipts(body) == [
        SmsReceipt(key="67890", provider_id="12345", delivered=True, error="",
                   at="2017-01-01 00:00:05"),
        SmsReceipt(key="k2", provider_id="12346", delivered=False, error="MK:0001: 用户停机",
                   at="2017-01-01 00:01:00"),
        SmsReceipt(key="", provider_id="12347", delivered=False, error="undelivered",
                   at="2017-01-01 00:02:00"),
    ]
    assert receipts(b"[]") == []


@pytest.mark.parametrize(("body", "why"), [
    (b"DELIVERED", "not JSON"),
    (b"\xff\xfe", "not JSON"),
    (b'{"biz_id": "1"}', "array of objects"),
    (b"[1, 2]", "array of objects"),
    (b'[{"success": "true", "biz_id": "1", "report_time": "t"}]', "success"),
    (b'[{"success": true, "report_time": "t"}]', "biz_id"),
    (b'[{"success": true, "biz_id": 12345, "report_time": "t"}]', "biz_id"),
    (b'[{"success": true, "biz_id": "1"}]', "report_time"),
])
def test_malformed_receipts_are_refused(body: bytes, why: str) -> None:
    with pytest.raises(ValueError, match=why):
        receipts(body)


# -- members' replies ----------------------------------------------------------------------------

def up(content: object) -> bytes:
    return json.dumps([{"phone_number": "13800000001", "send_time": "2017-09-01 00:00:00",
                        "content": content, "sign_name": "会员中心", "dest_code": "1234",
                        "sequence_id": 1234567890}], ensure_ascii=False).encode()


@pytest.mark.parametrize("content", ["T", "t", "Ｔ", "TD", "td", "ｔｄ", "ＴＤ", " TD。", "N",
                                     "n!", "退订", "我要退订，谢谢", "TD退订", "取消", "取消！"])
def test_opt_out_replies(content: str) -> None:
    assert inbound(up(content)) == [SmsReply(phone="13800000001", content=content,
                                             opt_out=True)]


@pytest.mark.parametrize("content", ["好的", "谢谢", "取消订单怎么操作", "TT", "TDD", "不", "",
                                     "Thanks"])
def test_other_replies_are_not_opt_outs(content: str) -> None:
    [reply] = inbound(up(content))
    assert reply.content == content and not reply.opt_out


@pytest.mark.parametrize(("body", "why"), [
    (b"", "not JSON"),
    (b'{"content": "T"}', "array of objects"),
    (up(5), "content"),
    (b'[{"content": "T"}]', "phone_number"),
])
def test_malformed_replies_are_refused(body: bytes, why: str) -> None:
    with pytest.raises(ValueError, match=why):
        inbound(body)


# -- what a text may be --------------------------------------------------------------------------

def test_check(provider: Provider) -> None:
    sms = SmsChannel(settings_for(provider, max_chars=60))
    room = 60 - len("【会员中心】")
    sms.check("transactional", "您的积分已到账")
    sms.check("marketing", "周末双倍积分，回T退订")
    sms.check("transactional", "x" * room)
    with pytest.raises(ValueError, match="61 characters"):
        sms.check("transactional", "x" * (room + 1))
    with pytest.raises(ValueError, match="退订"):
        sms.check("marketing", "周末双倍积分，快来！")
    with pytest.raises(ValueError, match="empty"):
        sms.check("transactional", "  ")


def test_parts() -> None:
    assert parts("") == 0
    assert parts("字" * 70) == 1
    assert parts("字" * 71) == 2
    assert parts("字" * 134) == 2
    assert parts("字" * 135) == 3

"""The SMS channel: Alibaba Cloud Short Message Service (dysmsapi ``SendSms``, RPC style, API
version 2017-05-25), the usual provider of a chain in mainland China.

Aliyun sends only texts it has approved: the message names an approved template
(``TemplateCode``) and its placeholders (``TemplateParam``), and the approved signature
(``SignName``) is put in front as 【signature】. The message's key goes in ``OutId``, the field
Aliyun keeps for the caller's own id and echoes in every delivery receipt.

Requests are signed the RPC way (HMAC-SHA1 over the sorted, percent-encoded parameters, key
``secret + "&"``), written out here rather than taken from the vendor SDK: it is a dozen lines,
tested against the vendor's own worked example, and keeps the hub free of the SDK's dependency
tree.

How an answer is taken:

- ``Code == "OK"``: sent; ``BizId`` is the provider's id, the one receipts carry.
- Flow control and the account's caps (``isv.BUSINESS_LIMIT_CONTROL``, ``isv.DAY_LIMIT_CONTROL``,
  ``Throttling*``), Aliyun's own faults (``isp.*``, ``ServiceUnavailable``), a balance run dry
  (``isv.AMOUNT_NOT_ENOUGH``, ``isv.OUT_OF_SERVICE``: topped up, the message goes) and the
  hub's configuration (a key or signature Aliyun does not accept): tried again later. A
  configuration that stays wrong dead-letters the message after the outbox's attempts, which
  is where an operator sees it.
- What can never go as it is — a number Aliyun calls invalid, a template or signature it
  refuses, missing placeholders, content it forbids, a number on its blacklist: refused.
- A code not listed here is tried again: a transient fault misread as final would lose the
  member's message, and an unknown final one costs only the outbox's few attempts.
- HTTP 5xx, timeouts and connection errors: tried again.

The exception texts end up in the outbox's ``error`` column: they carry Aliyun's code and a
short cut of its message, never the secret nor the request (Aliyun's own message for a bad
signature quotes the whole string it signed, so that part is dropped).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import math
import re
import ssl
import unicodedata
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlparse

import httpx
from pydantic import BaseModel, Field, SecretStr, field_validator

from hub.notify.channel import Outgoing, Refused, Retry, Sent

API_VERSION = "2017-05-25"

# From Aliyun's SendSms error code list (help.aliyun.com/document_detail/101346.html): the
# codes that can never succeed for the message as it is. Every other code is tried again: flow
# control and caps (isv.BUSINESS_LIMIT_CONTROL, isv.DAY_LIMIT_CONTROL, isv.MONTH_LIMIT_CONTROL,
# Throttling*), the balance (isv.AMOUNT_NOT_ENOUGH, isv.OUT_OF_SERVICE), Aliyun's faults (isp.*,
# ServiceUnavailable, InternalError), the hub's setup (SignatureDoesNotMatch, InvalidAccessKeyId.*,
# SignatureNonceUsed, InvalidTimeStamp.Expired, isv.DENY_IP_RANGE, isv.ACCOUNT_*,
# isv.PRODUCT_UN*), and any code not known here.
REFUSED_CODES = frozenset({
    "isv.MOBILE_NUMBER_ILLEGAL", "isv.MOBILE_COUNT_OVER_LIMIT",
    "isv.DOMESTIC_NUMBER_NOT_SUPPORTED", "isv.BLACK_KEY_CONTROL_LIMIT",
    "isv.TEMPLATE_MISSING_PARAMETERS", "isv.TEMPLATE_PARAMS_ILLEGAL", "isv.INVALID_PARAMETERS",
    "isv.INVALID_JSON_PARAM", "isv.PARAM_LENGTH_LIMIT", "isv.PARAM_NOT_SUPPORT_URL",
    "isv.SMS_TEMPLATE_ILLEGAL", "isv.SMS_SIGNATURE_ILLEGAL", "isv.SMS_SIGN_ILLEGAL",
    "isv.SIGN_STATE_ILLEGAL", "isv.SMS_SIGNATURE_SCENE_ILLEGAL", "isv.SMS_CONTENT_ILLEGAL",
    "isv.EXTEND_CODE_ERROR",
})

# Aliyun's answer to a bad signature goes on with the whole string it signed: cut there.
SIGNED_STRING = re.compile(r"(?i)\s*(?:server\s+)?string\s+to\s+sign")

SINGLE_CHARS = 70  # one SMS
PART_CHARS = 67  # each part of a long one: the rest carries the parts' header

# Whole replies that mean "stop" (after NFKC, case-folded, punctuation and spaces dropped);
# "退订" anywhere in a reply means it too. "取消" only alone: "取消订单" is not an opt-out.
OPT_OUT_REPLIES = frozenset({"t", "td", "n", "退订", "取消"})


class SmsSettings(BaseModel, extra="forbid"):
    endpoint: str = "https://dysmsapi.aliyuncs.com/"
    access_key_id: str
    access_key_secret: SecretStr
    sign_name: str  # the approved signature, without its 【】
    region_id: str = "cn-hangzhou"
    timeout_s: float = Field(10.0, gt=0, le=120)
    ca_file: Path | None = None  # an extra CA to trust besides the system's (the tests')
    max_chars: int = Field(500, ge=1)  # a long SMS's limit, signature included
    # The secret in the URLs given to Aliyun for its pushes (delivery reports, replies):
    # ``/v1/providers/sms/receipts?token=…``; None: the hub takes no pushes.
    callback_token: SecretStr | None = None

    @field_validator("endpoint")
    @classmethod
    def _https(cls, url: str) -> str:
        # The body carries the member's number and the message: never in clear.
        parsed = urlparse(url)
        if parsed.scheme != "https" or not parsed.hostname:
            raise ValueError(f"the SMS endpoint {url!r} must be an https URL")
        return url

    @field_validator("sign_name")
    @classmethod
    def _bare(cls, name: str) -> str:
        if not name.strip() or name.startswith("【") or name.endswith("】"):
            raise ValueError(f"sign_name {name!r} must be the signature's name, without 【】")
        return name


def percent_encode(value: str) -> str:
    """RFC 3986 as Aliyun's RPC signature wants it: only A-Z a-z 0-9 - _ . ~ stay as they are
    (so a space is %20, not +, and * is %2A), UTF-8 for the rest."""
    return quote(value, safe="~")


def sign(params: dict[str, str], secret: str, method: str = "POST") -> str:
    """Aliyun's RPC signature (SignatureVersion 1.0, HMAC-SHA1) of a request's parameters,
    base64 — to be sent as ``Signature``, which itself is left out of what is signed."""
    canonical = "&".join(f"{percent_encode(k)}={percent_encode(v)}"
                         for k, v in sorted(params.items()) if k != "Signature")
    string_to_sign = f"{method}&{percent_encode('/')}&{percent_encode(canonical)}"
    mac = hmac.new(f"{secret}&".encode(), string_to_sign.encode(), hashlib.sha1)
    return base64.b64encode(mac.digest()).decode()


def parts(text: str) -> int:
    """How many SMS a text is billed and delivered as, counted the way Aliyun counts: up to 70
    characters (signature included: pass the text with its 【signature】) is one SMS; a longer
    one is split into parts of 67 characters each. For reporting only: the limit a text must
    keep is ``SmsSettings.max_chars``."""
    n = len(text)
    return 0 if n == 0 else 1 if n <= SINGLE_CHARS else math.ceil(n / PART_CHARS)


@dataclass(frozen=True)
class SmsReceipt:
    key: str  # the message's key, from OutId ("" for a message sent without one)
    provider_id: str  # BizId
    delivered: bool
    error: str  # the carrier's code and text when not delivered, else ""
    at: str  # report_time as Aliyun gives it, China time "YYYY-MM-DD hh:mm:ss"


@dataclass(frozen=True)
class SmsReply:
    phone: str
    content: str
    opt_out: bool


def _records(body: bytes, what: str) -> list[dict[str, Any]]:
    try:
        data = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"the {what} push is not JSON: {exc}") from None
    if not isinstance(data, list) or not all(isinstance(r, dict) for r in data):
        raise ValueError(f"the {what} push must be a JSON array of objects")
    return data


def _text(record: dict[str, Any], name: str, what: str, i: int,
          required: bool = True) -> str:
    value = record.get(name)
    if value is None and not required:
        return ""
    if not isinstance(value, str):
        raise ValueError(f"{what}[{i}].{name} must be a string, got {value!r}"[:200])
    return value


def receipts(body: bytes) -> list[SmsReceipt]:
    """Aliyun's HTTP push of delivery reports (``SmsReport``): a JSON array, possibly of many
    reports, each with phone_number, send_time, report_time, success, err_code, err_msg,
    sms_size, biz_id, out_id."""
    found = []
    for i, r in enumerate(_records(body, "SmsReport")):
        success = r.get("success")
        if not isinstance(success, bool):
            raise ValueError(f"SmsReport[{i}].success must be true or false, got {success!r}")
        code = _text(r, "err_code", "SmsReport", i, required=False)
        said = _text(r, "err_msg", "SmsReport", i, required=False)
        found.append(SmsReceipt(
            key=_text(r, "out_id", "SmsReport", i, required=False),
            provider_id=_text(r, "biz_id", "SmsReport", i), delivered=success,
            error="" if success else (": ".join(p for p in (code, said) if p) or "undelivered"),
            at=_text(r, "report_time", "SmsReport", i)))
    return found


def is_opt_out(content: str) -> bool:
    """A member's reply asking for no more messages: T, TD, N, 退订, 取消, or 退订 anywhere,
    whatever the case and width (Ｔ, ｔｄ) and with punctuation around it."""
    text = unicodedata.normalize("NFKC", content).casefold()
    if "退订" in text:
        return True
    bare = "".join(c for c in text if unicodedata.category(c)[0] not in "PSZC")
    return bare in OPT_OUT_REPLIES


def inbound(body: bytes) -> list[SmsReply]:
    """Aliyun's HTTP push of members' replies (``SmsUp``): a JSON array of objects with
    phone_number, send_time, content, sign_name, dest_code, sequence_id."""
    found = []
    for i, r in enumerate(_records(body, "SmsUp")):
        content = _text(r, "content", "SmsUp", i)
        found.append(SmsReply(phone=_text(r, "phone_number", "SmsUp", i), content=content,
                              opt_out=is_opt_out(content)))
    return found


def _said(answer: dict[str, Any]) -> str:
    """A short cut of the provider's message, without the string it signed."""
    text = SIGNED_STRING.split(str(answer.get("Message") or ""))[0]
    return text.strip()[:120]


def _verdict(code: str, said: str) -> Retry | Refused:
    why = f"sms provider: {code}" + (f" ({said})" if said else "")
    return Refused(why) if code in REFUSED_CODES else Retry(why)


class SmsChannel:
    name = "sms"

    def __init__(self, settings: SmsSettings) -> None:
        self.settings = settings
        context = ssl.create_default_context()
        if settings.ca_file is not None:
            context.load_verify_locations(cafile=str(settings.ca_file))
        self._client = httpx.AsyncClient(timeout=settings.timeout_s, verify=context,
                                         limits=httpx.Limits(max_connections=16))

    def request(self, message: Outgoing) -> dict[str, str]:
        """The signed SendSms request for a message (a new nonce and timestamp each time)."""
        s = self.settings
        params = {
            "AccessKeyId": s.access_key_id, "Action": "SendSms", "Format": "JSON",
            "RegionId": s.region_id, "SignatureMethod": "HMAC-SHA1",
            "SignatureNonce": uuid.uuid4().hex, "SignatureVersion": "1.0",
            "Timestamp": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "Version": API_VERSION, "PhoneNumbers": message.to, "SignName": s.sign_name,
            "TemplateCode": message.template, "OutId": message.key,
        }
        if message.params:  # a template without placeholders takes none
            params["TemplateParam"] = json.dumps(message.params, ensure_ascii=False,
                                                 separators=(",", ":"))
        params["Signature"] = sign(params, s.access_key_secret.get_secret_value())
        return params

    async def send(self, message: Outgoing) -> Sent:
        try:
            answer = await self._client.post(self.settings.endpoint, data=self.request(message))
        except httpx.HTTPError as exc:
            raise Retry(f"sms provider unreachable: {type(exc).__name__}") from None
        try:
            body = answer.json()
        except ValueError:
            body = None
        code = body.get("Code") if isinstance(body, dict) else None
        if answer.status_code >= 500 or not isinstance(body, dict) or not isinstance(code, str):
            raise Retry(f"sms provider answered {answer.status_code}"
                        + (f": {code}" if isinstance(code, str) else " without a code"))
        if code == "OK":
            biz_id = body.get("BizId")
            return Sent(provider_id=str(biz_id) if biz_id else None)
        raise _verdict(code, _said(body))

    def check(self, purpose: str, text: str) -> None:
        """Whether a rendered text can go as an SMS: raises ValueError saying why not."""
        if not text.strip():
            raise ValueError("the message is empty")
        whole = f"【{self.settings.sign_name}】{text}"
        if len(whole) > self.settings.max_chars:
            raise ValueError(
                f"the SMS is {len(whole)} characters with its signature 【"
                f"{self.settings.sign_name}】 ({parts(whole)} parts); at most"
                f" {self.settings.max_chars}")
        if purpose == "marketing" and "退订" not in unicodedata.normalize("NFKC", text):
            raise ValueError("a marketing SMS must tell how to opt out, with 退订 in it"
                             " (e.g. 回T退订 at the end)")

    async def aclose(self) -> None:
        await self._client.aclose()

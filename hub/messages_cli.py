"""``membergate-hub messages …``: the outbox from the shell — what waits, what is dead and why,
and sending dead messages again after a provider's long outage (beside a running hub too: its
channel loops pick them up within seconds). Every resend is in the audit log."""

from __future__ import annotations

import argparse
import asyncio
import getpass
import json
import sys
from typing import Any

from hub.auth import audit_log
from hub.config import HubConfig
from hub.core.clock import now_ms
from hub.core.db import HubDatabase, Tx
from hub.core.schema import migrate
from hub.notify import outbox
from protocol.errors import ServiceError


def add_arguments(sub: Any) -> None:
    m = sub.add_parser("messages", help="the message outbox: counts, list, resend dead ones")
    ms = m.add_subparsers(dest="messages_command", required=True)
    counts = ms.add_parser("counts", help="messages per channel and state")
    counts.add_argument("--database")
    ls = ms.add_parser("list", help="messages, newest first (one JSON object a line)")
    ls.add_argument("--state", choices=outbox.STATES)
    ls.add_argument("--journey", help="a journey's id")
    ls.add_argument("--limit", type=int, default=50)
    ls.add_argument("--database")
    again = ms.add_parser("resend", help="dead (or failed) messages out again, with their key")
    which = again.add_mutually_exclusive_group(required=True)
    which.add_argument("--id", help="one message")
    which.add_argument("--channel", help="every dead message of a channel")
    which.add_argument("--all-dead", action="store_true", help="every dead message")
    again.add_argument("--database")


def run(cfg: HubConfig, args: argparse.Namespace) -> int:
    try:
        return asyncio.run(_run(cfg, args))
    except ServiceError as exc:  # the operator's to fix: one line, no traceback
        print(f"membergate-hub messages: {exc.message}", file=sys.stderr)
        return 2


async def _run(cfg: HubConfig, args: argparse.Namespace) -> int:
    command = args.messages_command
    async with HubDatabase(cfg.database_url) as db:
        await db.transaction(migrate)
        if command == "counts":
            print(json.dumps(await db.read(outbox.counts), indent=2))
            return 0
        if command == "list":
            if args.limit < 1:
                raise ServiceError("bad_limit", "--limit must be at least 1", 422)
            for row in await db.read(lambda tx: outbox.listing(
                    tx, state=args.state, journey_id=args.journey, limit=args.limit)):
                print(json.dumps(row, ensure_ascii=False))
            return 0
        now = now_ms()

        def resend(tx: Tx) -> int:
            count = outbox.resend(tx, message_id=args.id, channel=args.channel, now_ms=now)
            audit_log.append(tx, at_ms=now, user_id=None,
                             username=f"cli:{getpass.getuser()}", action="message.resend",
                             subject=args.id, reason=f"dead of {args.channel or 'every channel'}"
                             if args.id is None else "", remote="cli", outcome="ok")
            return count

        print(json.dumps({"resent": await db.transaction(resend)}))
    return 0

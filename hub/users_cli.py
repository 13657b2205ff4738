"""``membergate-hub users …`` and ``tokens …``: HQ users and their API tokens from the shell
(beside a running hub too: it reloads who may call it every few seconds). Passwords are read
from the terminal without echo, or from standard input with ``--password-stdin``; a token is
printed once and kept only as its digest."""

from __future__ import annotations

import argparse
import asyncio
import getpass
import json
import sys
from typing import Any

from hub.auth import audit_log, passwords, tokens, users
from hub.config import HubConfig
from hub.core.clock import now_ms
from hub.core.db import HubDatabase, Tx
from hub.core.schema import migrate
from protocol.errors import ServiceError

DAY_MS = 86_400_000


def add_arguments(sub: Any) -> None:
    u = sub.add_parser("users", help="HQ users: add, list, disable, enable, reset a password")
    us = u.add_subparsers(dest="users_command", required=True)
    add = us.add_parser("add", help="a user with a role and its scope")
    add.add_argument("username")
    add.add_argument("--role", required=True, help="hq_admin, region_manager, store_manager,"
                     " guide, auditor, marketing (or a role the chain added)")
    add.add_argument("--region", action="append", default=[], help="a region_manager's region"
                     " (repeat for several)")
    add.add_argument("--store", action="append", default=[], help="a store_manager's store"
                     " (repeat for several)")
    add.add_argument("--guide", help="a guide's shopping guide id, as the POS names staff")
    add.add_argument("--name", default="", help="display name")
    add.add_argument("--password-stdin", action="store_true")
    add.add_argument("--database")
    ls = us.add_parser("list", help="every user with role and scope")
    ls.add_argument("--json", action="store_true")
    ls.add_argument("--database")
    for name, what in (("disable", "stop a user (and their tokens) at once"),
                       ("enable", "let a disabled user in again"),
                       ("reset", "set a new password (lifts a lock-out)")):
        p = us.add_parser(name, help=what)
        p.add_argument("username")
        if name == "reset":
            p.add_argument("--password-stdin", action="store_true")
        p.add_argument("--database")
    t = sub.add_parser("tokens", help="API tokens for integrations: add, list, revoke")
    ts = t.add_subparsers(dest="tokens_command", required=True)
    tadd = ts.add_parser("add", help="a token acting as a user; printed once")
    tadd.add_argument("username")
    tadd.add_argument("--name", required=True, help="what it is for (an integration's name)")
    tadd.add_argument("--expires-in-days", type=int)
    tadd.add_argument("--database")
    tls = ts.add_parser("list", help="every token (never the secret)")
    tls.add_argument("--database")
    trev = ts.add_parser("revoke", help="stop a token at once")
    trev.add_argument("token_id")
    trev.add_argument("--database")


def read_password(from_stdin: bool) -> str:
    if from_stdin:
        return sys.stdin.readline().rstrip("\n")
    first = getpass.getpass("password: ")
    if getpass.getpass("again: ") != first:
        raise ServiceError("password_mismatch", "the two passwords differ", 422)
    return first


def _audit(tx: Tx, action: str, subject: str | None, outcome: str) -> None:
    """Who ran it: the shell user on the hub's box (``remote`` says it came from the CLI)."""
    audit_log.append(tx, at_ms=now_ms(), user_id=None, username=f"cli:{getpass.getuser()}",
                     action=action, subject=subject, remote="cli", outcome=outcome)


def run(cfg: HubConfig, args: argparse.Namespace) -> int:
    try:
        return asyncio.run(_run(cfg, args))
    except ServiceError as exc:  # the operator's to fix: one line, no traceback
        print(f"membergate-hub {args.command}: {exc.message}", file=sys.stderr)
        return 2


async def _run(cfg: HubConfig, args: argparse.Namespace) -> int:
    command = args.users_command if args.command == "users" else args.tokens_command
    digest = None
    if command in ("add", "reset") and args.command == "users":
        digest = passwords.hash_password(read_password(args.password_stdin))
    now = now_ms()
    async with HubDatabase(cfg.database_url) as db:
        await db.transaction(migrate)

        def change(tx: Tx) -> Any:
            if args.command == "tokens":
                if command == "add":
                    days = args.expires_in_days
                    return tokens.issue(tx, args.username, args.name, now,
                                        now + days * DAY_MS if days else None)
                if command == "revoke":
                    tokens.revoke(tx, args.token_id, now)
                    return None
                return tokens.listed(tx)
            if command == "add":
                assert digest is not None
                return users.add(tx, username=args.username, role=args.role,
                                 password_hash=digest, now_ms=now, regions=args.region,
                                 stores=args.store, guide_id=args.guide,
                                 display_name=args.name)
            if command in ("disable", "enable"):
                return users.set_disabled(tx, args.username, command == "disable", now)
            if command == "reset":
                assert digest is not None
                return users.set_password(tx, args.username, digest, now)
            return users.list_all(tx)

        if command == "list":
            result = await db.transaction(change)
        else:  # a change from the shell is in the audit log too, refused or not
            action = f"{'token' if args.command == 'tokens' else 'user'}.{command}"
            subject = getattr(args, "username", None) or getattr(args, "token_id", None)
            try:
                result = await db.transaction(change)
            except ServiceError as exc:
                refused = exc.code
                await db.transaction(lambda tx: _audit(tx, action, subject, refused))
                raise
            await db.transaction(lambda tx: _audit(tx, action, subject, "ok"))
    if args.command == "tokens" and command == "add":
        token_id, secret = result
        print(json.dumps({"token_id": token_id, "username": args.username, "token": secret},
                         indent=2))
        print("membergate-hub: the token is shown this once; keep it secret", file=sys.stderr)
    elif args.command == "tokens" and command == "list":
        print(json.dumps(result, indent=2, ensure_ascii=False))
    elif command == "list":
        rows = [u.public() for u in result]
        if getattr(args, "json", False):
            print(json.dumps(rows, indent=2, ensure_ascii=False))
        else:
            for r in rows:
                where = ",".join(r["regions"] or r["stores"]) or r["guide_id"] or "-"
                state = "disabled" if r["disabled"] else "active"
                print(f"{r['username']:<24} {r['role']:<16} {where:<24} {state}")
    elif result is not None:
        print(json.dumps(result.public(), ensure_ascii=False))
    else:
        print("revoked")
    return 0

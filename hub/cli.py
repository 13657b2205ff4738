"""``membergate-hub``: run the hub, look at the fleet, push campaigns, check the books, see and
rebuild the projections of the log, demo."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
import tomllib
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any, TextIO

from pydantic import ValidationError

from hub import extensions, messages_cli, users_cli
from hub.app import Hub
from hub.config import HubConfig
from hub.core.db import DatabaseUnavailable
from hub.core.projections import ProjectionRunner, Step, lag
from hub.ledger import audit
from hub.projections.catalog import projections
from hub.stores import fleet, registry
from protocol import logs, signing
from protocol.campaigns import CampaignBundle
from protocol.redact import redact_url, validation_summary
from protocol.runtime import add_log_level, tune_gc, tuned_gc
from protocol.tls import TlsError


def _config(args: argparse.Namespace) -> HubConfig:
    try:
        cfg = HubConfig.load(Path(args.config) if args.config else None)
    except (OSError, tomllib.TOMLDecodeError, ValidationError) as exc:
        # A setting out of range or misspelt is the operator's to fix: the reason, no traceback,
        # and not the values given (a token or a password among them).
        why = validation_summary(exc) if isinstance(exc, ValidationError) else exc
        print(f"membergate-hub: invalid configuration {args.config}: {why}", file=sys.stderr)
        raise SystemExit(2) from None
    if getattr(args, "database", None):
        cfg.hub.database = args.database
    return cfg


async def _run(cfg: HubConfig, seconds: float | None) -> int:
    async with AsyncExitStack() as stack:
        hub = await stack.enter_async_context(Hub(cfg))
        print(f"membergate hub is up: broker 127.0.0.1:{hub.link.broker_port}, database"
              f" {redact_url(cfg.database_url)}, signing key {signing.key_id(hub.key)}", flush=True)
        # The HQ API and its console are served once someone can use them: the configured
        # token, or an HQ user to sign in.
        if cfg.api.token or await hub.has_users():
            from hub.api.app import serving

            docs = await stack.enter_async_context(serving(hub))
            print(f"HQ API: {docs}", flush=True)
            print(f"HQ console: {docs.removesuffix('/docs')}/console/", flush=True)
        if seconds is None:
            await asyncio.Event().wait()
        await asyncio.sleep(seconds or 0)
    return 0


async def _status(cfg: HubConfig, as_json: bool) -> int:
    from hub.core.clock import now_ms
    from hub.core.db import HubDatabase
    from hub.core.schema import migrate

    async with HubDatabase(cfg.database_url) as db:
        await db.transaction(migrate)
        stores = await db.read(lambda tx: fleet.fleet_status(tx, now_ms()))
    if as_json:
        print(json.dumps(stores, indent=2, ensure_ascii=False))
        return 0
    _table(stores, ("store_id", "epoch", "acked_seq", "lag_events", "outbox_depth",
                    "last_seen_s_ago", "refused_at_hub", "campaign_refusals"))
    return 0


def _table(items: list[dict[str, Any]], cols: tuple[str, ...]) -> None:
    rows = [[str(s.get(c, "")) for c in cols] for s in items]
    widths = [max(len(c), *(len(r[i]) for r in rows)) if rows else len(c)
              for i, c in enumerate(cols)]
    print("  ".join(c.ljust(w) for c, w in zip(cols, widths, strict=True)))
    for r in rows:
        print("  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)))


async def _projections_status(cfg: HubConfig, as_json: bool) -> int:
    from hub.core.clock import now_ms
    from hub.core.db import HubDatabase
    from hub.core.schema import migrate

    names = [p.name for p in projections(cfg.hub.timezone)]
    async with HubDatabase(cfg.database_url) as db:
        await db.transaction(migrate)
        rows = await db.read(lambda tx: lag(tx, names, now_ms()))
    if as_json:
        print(json.dumps(rows, indent=2))
    else:
        _table(rows, ("name", "pos", "head", "lag_events", "lag_s"))
    return 0


class ProgressBar:
    """A plain text bar on ``out`` (stderr), redrawn at most every ``every_s`` seconds."""

    def __init__(self, label: str, out: TextIO, *, width: int = 30, every_s: float = 0.2
                 ) -> None:
        self.label, self.out, self.width, self.every_s = label, out, width, every_s
        self._drawn = 0.0

    def __call__(self, step: Step) -> None:
        now = time.monotonic()
        if not step.done and now - self._drawn < self.every_s:
            return
        self._drawn = now
        share = 1.0 if step.done or step.head <= 0 else min(1.0, step.pos / step.head)
        filled = int(share * self.width)
        self.out.write(f"\r{self.label} [{'#' * filled}{'.' * (self.width - filled)}]"
                       f" {share:4.0%}  position {step.pos:,} of {step.head:,}")
        if step.done:
            self.out.write("\n")
        self.out.flush()


async def _projections_rebuild(cfg: HubConfig, name: str) -> int:
    from hub.core.db import HubDatabase
    from hub.core.schema import migrate

    async with HubDatabase(cfg.database_url) as db:
        runner = ProjectionRunner(db, projections(cfg.hub.timezone))
        if name not in runner.names:
            print(f"membergate-hub: no projection {name!r}; there are: "
                  f"{', '.join(runner.names)}", file=sys.stderr)
            return 2
        await db.transaction(migrate)
        names = runner.readers_of(name)
        start = time.monotonic()
        read = await runner.rebuild(name, ProgressBar(f"rebuilding {', '.join(names)}",
                                                      sys.stderr))
    print(f"rebuilt {', '.join(names)} from zero: {read:,} events read in"
          f" {time.monotonic() - start:.1f} s")
    return 0


def _fleet_stores(path: Path) -> list[registry.StoreRecord] | None:
    """The ``[[stores]]`` of a provisioning fleet file, as the hub's registry takes them; None
    (and the reason on stderr) when the file cannot be used: then nothing is written."""
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
        entries = data.get("stores", [])
        if not isinstance(entries, list) or not entries:
            raise ValueError("it has no [[stores]]")
        return [registry.StoreRecord.model_validate(e) for e in entries]
    except (OSError, tomllib.TOMLDecodeError, ValueError) as exc:  # ValidationError too
        print(f"membergate-hub: cannot load stores from {path}: {exc}", file=sys.stderr)
        return None


async def _stores(cfg: HubConfig, command: str, fleet_file: Path | None, as_json: bool) -> int:
    from hub.core.db import HubDatabase
    from hub.core.schema import migrate

    records: list[registry.StoreRecord] = []
    if fleet_file is not None:
        read = _fleet_stores(fleet_file)
        if read is None:
            return 2
        records = read
    zone, entity = cfg.hub.timezone, cfg.hub.legal_entity
    async with HubDatabase(cfg.database_url) as db:
        await db.transaction(migrate)
        if command == "load":
            count = await db.transaction(lambda tx: registry.upsert(tx, records))
            # A running hub reads the zones again within a minute (its "registry" job).
            print(f"loaded {count} stores from {fleet_file}")
            return 0
        stores = await db.read(lambda tx: registry.listing(tx, zone, entity))
    if as_json:
        print(json.dumps(stores, indent=2, ensure_ascii=False))
    else:
        _table(stores, ("store_id", "name", "region", "timezone", "legal_entity", "seen"))
    return 0


async def _rebuild(cfg: HubConfig) -> int:
    from hub.core.db import HubDatabase

    async with HubDatabase(cfg.database_url) as db:
        result = await db.read(audit.compare)
    print(json.dumps({"members": result["members"], "events": result["events"],
                      "mismatches": result["mismatches"][:20],
                      "mismatch_count": len(result["mismatches"])}, indent=2))
    return 0 if not result["mismatches"] else 1


async def _push(cfg: HubConfig, bundle: CampaignBundle) -> int:
    async with Hub(cfg) as hub:
        topic = await hub.push_campaigns(bundle)
    print(f"signed {bundle.scope} bundle version {bundle.version} and published it on {topic}")
    return 0


def _push_campaigns(cfg: HubConfig, args: argparse.Namespace) -> int:
    """Through the running hub's HQ API (``--api``, or ``[api]`` of the config) when it answers;
    with no hub running, by a hub started for the push. Every refusal in one line."""
    from hub.campaign_push import (
        PushError,
        api_token,
        configured_api,
        load_bundle_file,
        push_over_api,
    )
    from hub.campaigns.bundles import StaleBundle
    from hub.sync.broker import BrokerPortBusy

    def fail(message: str) -> int:
        print(f"membergate-hub push-campaigns: {message}", file=sys.stderr)
        return 2

    try:
        bundle = load_bundle_file(args.bundle)
        url = args.api or configured_api(cfg)
        if url is not None:
            try:
                answer = push_over_api(url, api_token(args.token, cfg), bundle, args.ca_file)
            except ConnectionError as exc:
                if args.api:
                    return fail(f"{exc}: is the hub running with its HQ API there?")
            else:
                print(f"the hub at {url} signed {answer['scope']} bundle version"
                      f" {answer['version']} and published it on {answer['topic']}")
                return 0
        return asyncio.run(_push(cfg, bundle))
    except PushError as exc:
        return fail(str(exc))
    except StaleBundle as exc:
        return fail(str(exc))
    except BrokerPortBusy as exc:
        return fail(f"{exc.strerror}: while the hub runs, push through its HQ API (--api URL"
                    " --token, or [api] token in the config this command is given)")
    except TlsError as exc:
        return fail(str(exc))


def _init(cfg: HubConfig, args: argparse.Namespace) -> int:
    from hub.campaigns.bundles import load_or_create_key

    if args.admin:  # the first admin: like ``users add --role hq_admin``
        made = users_cli.run(cfg, argparse.Namespace(
            command="users", users_command="add", username=args.admin, role="hq_admin",
            region=[], store=[], guide=None, name="", password_stdin=args.password_stdin))
        if made:
            return made
    key = load_or_create_key(cfg.hub.data_dir)
    print(json.dumps({"key_id": signing.key_id(key), "hub_public_key": signing.public_b64(key),
                      "key_file": str(cfg.hub.data_dir / "hub_signing_key.pem")}, indent=2))
    return 0


def _backup_or_restore(cfg: HubConfig, args: argparse.Namespace) -> int:
    """Progress on stderr, the result as JSON on stdout; a refusal is one line, exit 2."""
    from hub import backup
    from protocol.sqlite_backup import BackupError

    def say(message: str) -> None:
        print(f"membergate-hub {args.command}: {message}", file=sys.stderr, flush=True)

    try:
        if args.command == "backup":
            out = backup.backup(cfg.database_url, Path(args.dest), say)
        else:
            out = backup.restore(cfg.database_url, Path(args.source), say)
    except (BackupError, OSError) as exc:
        say(f"refused: {exc}")
        return 2
    print(json.dumps(out, indent=2))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="membergate-hub", description=__doc__)
    parser.add_argument("--config", help="hub TOML file (default: built-in demo settings)")
    add_log_level(parser, "WARNING")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run the hub (embedded broker unless one is configured)")
    run.add_argument("--seconds", type=float, default=None, help="stop after N seconds")
    run.add_argument("--database", help="override: a SQLite path or postgresql:// URL")
    init = sub.add_parser("init", help="make the signing key; print the public key for the"
                          " stores; with --admin, make the first HQ admin")
    init.add_argument("--admin", help="username of the first HQ admin (password asked, or"
                      " --password-stdin)")
    init.add_argument("--password-stdin", action="store_true")
    init.add_argument("--database")
    back = sub.add_parser("backup", help="copy the hub's SQLite database while it runs"
                          " (PostgreSQL: pg_dump, README)")
    back.add_argument("dest", help="the backup file to write (never overwritten)")
    rest = sub.add_parser("restore", help="put a backup in place of the hub's SQLite database"
                          " (hub stopped); stores resend what it lacks")
    rest.add_argument("source", help="a file written by membergate-hub backup")
    st = sub.add_parser("status", help="fleet status as a table (or --json)")
    st.add_argument("--json", action="store_true")
    st.add_argument("--database")
    rb = sub.add_parser("rebuild", help="recompute every balance from the event log and compare")
    rb.add_argument("--database")
    proj = sub.add_parser("projections", help="the projections of the event log: how far each"
                          " has read, or one rebuilt from zero")
    proj_sub = proj.add_subparsers(dest="projections_command", required=True)
    proj_status = proj_sub.add_parser("status", help="position and lag of each projection as a"
                                      " table (or --json)")
    proj_status.add_argument("--json", action="store_true")
    proj_status.add_argument("--database")
    proj_rebuild = proj_sub.add_parser("rebuild", help="empty a projection (and what reads it)"
                                       " and catch it up from zero, with a progress bar")
    proj_rebuild.add_argument("name", help="a projection's name (membergate-hub projections"
                              " status lists them), e.g. sales_facts, daily_rollups")
    proj_rebuild.add_argument("--database")
    stores = sub.add_parser("stores", help="the store registry: name, region, time zone, the"
                            " legal entity issuing its stored value")
    stores_sub = stores.add_subparsers(dest="stores_command", required=True)
    load = stores_sub.add_parser("load", help="set the stores of a provisioning fleet file"
                                 " ([[stores]]: store_id, name, region, timezone, legal_entity)")
    load.add_argument("fleet", type=Path)
    load.add_argument("--database")
    listing = stores_sub.add_parser("list", help="every store as the hub knows it")
    listing.add_argument("--json", action="store_true")
    listing.add_argument("--database")
    push = sub.add_parser("push-campaigns", help="validate, sign and publish a campaign bundle"
                          " (through the running hub's HQ API when there is one)")
    push.add_argument("bundle", type=Path, help="a CampaignBundle file, .toml or .json")
    push.add_argument("--api", help="the running hub's HQ API, e.g. http://127.0.0.1:8710"
                      " (default: [api] of --config, when it has a token)")
    push.add_argument("--token", help="HQ bearer token (default: $MEMBERGATE_HQ_TOKEN, then"
                      " [api] token)")
    push.add_argument("--ca-file", help="CA to trust for an https:// HQ API (the fleet's)")
    users_cli.add_arguments(sub)
    messages_cli.add_arguments(sub)
    plugged = extensions.commands()  # the demo fleet, from provisioning
    for name, command in plugged.items():
        command.add_arguments(sub.add_parser(name, help=command.help))
    bench = sub.add_parser("bench", help="measure merge and drain against in-run floors;"
                           " prints one JSON object")
    bench.add_argument("--json", action="store_true", help="one line instead of indented")
    bench.add_argument("--stores", type=int, default=50)
    bench.add_argument("--events", type=int, default=200_000)
    bench.add_argument("--drain-events", type=int, default=100_000, help="0: skip the drain")
    bench.add_argument("--postgres-url", default="postgresql://postgres@127.0.0.1/postgres",
                       help="admin URL; a throwaway database mg_bench_* is made and dropped")
    bench.add_argument("--no-postgres", action="store_true")
    bench.add_argument("--rfm-members", type=int, default=1_000_000,
                       help="members for the RFM run figures (rfm_run_*), a year of sales"
                            " each; 0: skip")
    bench.add_argument("--segment-members", type=int, default=100_000,
                       help="members for the 1,000-segment figures (segments_*: the keeper"
                            " evaluating them whole, then a pass over 2,000 changed members);"
                            " 0: skip")
    bench.add_argument("--segments", type=int, default=1000,
                       help="how many segments the segment figures keep (1,000)")
    bench.add_argument("--journey-members", type=int, default=1_000_000,
                       help="members for the birthday pass (birthday_pass_vs_floor); 0: skip")
    bench.add_argument("--dispatch-messages", type=int, default=5000,
                       help="messages for dispatch_vs_floor and the outage (outage_lost,"
                            " outage_duplicated); 0: skip")
    bench.add_argument("--scope-members", type=int, default=1_000_000,
                       help="members for the scope figures (scoped_vs_unscoped_*); 0: skip")
    bench.add_argument("--report-members", type=int, default=1_000_000,
                       help="members for the consolidated reports' figures (report_*: every"
                            " report for a store, a region and HQ over a year of sales at"
                            " --stores stores, against one bare SQL statement each); 0: skip")
    bench.add_argument("--page-members", type=int, default=1_000_000,
                       help="members for the console's page figures (page_load_*: every page"
                            " each of the report bench's callers may open, loaded in Chromium"
                            " from a running hub); 0: skip")
    bench.add_argument("--chromium",
                       help="the Chromium the page figures drive (default: Debian's,"
                            " /usr/bin/chromium)")
    bench.add_argument("--workdir", help="keep the bench databases here (default: temp, removed)")
    bench.add_argument("--breakdown", action="store_true",
                       help="also apply the merge's batches alone with every statement timed:"
                            " where the apply's time goes, in µs per event")
    args = parser.parse_args(argv)
    logs.setup(args.log_level.upper())
    cfg = _config(args)
    try:
        return _command(cfg, args)
    except DatabaseUnavailable as exc:  # psycopg missing, or the server refuses: say which
        print(f"membergate-hub: {exc}", file=sys.stderr)
        return 2


def _command(cfg: HubConfig, args: argparse.Namespace) -> int:
    if args.command == "run":
        tune_gc()
        from hub.sync.broker import BrokerPortBusy

        try:
            return asyncio.run(_run(cfg, args.seconds))
        except (TlsError, BrokerPortBusy) as exc:  # the configuration or the box, not a bug
            print(f"membergate-hub: cannot start: {exc}", file=sys.stderr)
            return 2
    if args.command == "init":
        return _init(cfg, args)
    if args.command in ("backup", "restore"):
        return _backup_or_restore(cfg, args)
    if args.command in ("users", "tokens"):
        return users_cli.run(cfg, args)
    if args.command == "messages":
        return messages_cli.run(cfg, args)
    if args.command == "status":
        return asyncio.run(_status(cfg, args.json))
    if args.command == "rebuild":
        return asyncio.run(_rebuild(cfg))
    if args.command == "projections":
        if args.projections_command == "status":
            return asyncio.run(_projections_status(cfg, args.json))
        return asyncio.run(_projections_rebuild(cfg, args.name))
    if args.command == "stores":
        return asyncio.run(_stores(cfg, args.stores_command, getattr(args, "fleet", None),
                                   getattr(args, "json", False)))
    if args.command == "push-campaigns":
        return _push_campaigns(cfg, args)
    if args.command == "bench":
        from hub.bench import failed, run_bench

        with tuned_gc():  # as ``run`` has it
            figures = run_bench(stores=args.stores, events=args.events,
                                drain_events=args.drain_events,
                                postgres_url=None if args.no_postgres else args.postgres_url,
                                workdir=args.workdir, breakdown=args.breakdown,
                                scope_members=args.scope_members,
                                rfm_members=args.rfm_members,
                                segment_members=args.segment_members,
                                segment_count=args.segments,
                                journey_members=args.journey_members,
                                dispatch_messages=args.dispatch_messages,
                                report_members=args.report_members,
                                page_members=args.page_members,
                                **({"chromium": args.chromium} if args.chromium else {}))
        print(json.dumps(figures, indent=None if args.json else 2, ensure_ascii=False))
        return 1 if failed(figures) else 0
    plugged = extensions.commands()
    if args.command in plugged:
        return plugged[args.command].run(args)
    return 2


if __name__ == "__main__":
    sys.exit(main())

"""``membergate-hub``: run the hub, look at the fleet, push campaigns, check the books, demo."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
import tomllib
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from hub import directory
from hub.config import HubConfig
from hub.db import DatabaseUnavailable
from hub.service import HubService
from protocol import signing
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
    async with HubService(cfg) as hub:
        print(f"membergate hub is up: broker 127.0.0.1:{hub.broker_port}, database"
              f" {redact_url(cfg.database_url)}, signing key {signing.key_id(hub.key)}", flush=True)
        server = None
        if cfg.api.token:
            from hub.api import api_server

            server = api_server(hub)
            serving = asyncio.create_task(server.serve())
            while not server.started and not serving.done():  # noqa: ASYNC110 - a flag only
                await asyncio.sleep(0.05)
            port = server.servers[0].sockets[0].getsockname()[1] if server.started else None
            print(f"HQ API: {cfg.api.scheme}://{cfg.api.host}:{port}/docs", flush=True)
        try:
            if seconds is None:
                await asyncio.Event().wait()
            await asyncio.sleep(seconds or 0)
        finally:
            if server is not None:
                server.should_exit = True
                await serving
    return 0


async def _status(cfg: HubConfig, as_json: bool) -> int:
    from hub.db import HubDatabase
    from hub.schema import migrate
    from hub.service import now_ms

    async with HubDatabase(cfg.database_url) as db:
        await db.transaction(migrate)
        stores = await db.transaction(lambda tx: directory.fleet_status(tx, now_ms()))
    if as_json:
        print(json.dumps(stores, indent=2, ensure_ascii=False))
        return 0
    cols = ("store_id", "epoch", "acked_seq", "lag_events", "outbox_depth", "last_seen_s_ago",
            "refused_at_hub")
    rows = [[str(s.get(c, "")) for c in cols] for s in stores]
    widths = [max(len(c), *(len(r[i]) for r in rows)) if rows else len(c)
              for i, c in enumerate(cols)]
    print("  ".join(c.ljust(w) for c, w in zip(cols, widths, strict=True)))
    for r in rows:
        print("  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)))
    return 0


async def _rebuild(cfg: HubConfig) -> int:
    from hub.db import HubDatabase

    async with HubDatabase(cfg.database_url) as db:
        result = await db.transaction(directory.compare)
    print(json.dumps({"members": result["members"], "events": result["events"],
                      "mismatches": result["mismatches"][:20],
                      "mismatch_count": len(result["mismatches"])}, indent=2))
    return 0 if not result["mismatches"] else 1


async def _push(cfg: HubConfig, bundle: CampaignBundle) -> int:
    async with HubService(cfg) as hub:
        topic = await hub.push_campaigns(bundle)
    print(f"signed {bundle.scope} bundle version {bundle.version} and published it on {topic}")
    return 0


def _push_campaigns(cfg: HubConfig, args: argparse.Namespace) -> int:
    """Through the running hub's HQ API (``--api``, or ``[api]`` of the config) when it answers;
    with no hub running, by a hub started for the push. Every refusal in one line."""
    from hub.broker import BrokerPortBusy
    from hub.campaign_push import (
        PushError,
        api_token,
        configured_api,
        load_bundle_file,
        push_over_api,
    )
    from hub.campaigns import StaleBundle

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


def _init(cfg: HubConfig) -> int:
    from hub.campaigns import load_or_create_key

    key = load_or_create_key(cfg.hub.data_dir)
    print(json.dumps({"key_id": signing.key_id(key), "hub_public_key": signing.public_b64(key),
                      "key_file": str(cfg.hub.data_dir / "hub_signing_key.pem")}, indent=2))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="membergate-hub", description=__doc__)
    parser.add_argument("--config", help="hub TOML file (default: built-in demo settings)")
    add_log_level(parser, "WARNING")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run the hub (embedded broker unless one is configured)")
    run.add_argument("--seconds", type=float, default=None, help="stop after N seconds")
    run.add_argument("--database", help="override: a SQLite path or postgresql:// URL")
    sub.add_parser("init", help="make the signing key; print the public key for the stores")
    st = sub.add_parser("status", help="fleet status as a table (or --json)")
    st.add_argument("--json", action="store_true")
    st.add_argument("--database")
    rb = sub.add_parser("rebuild", help="recompute every balance from the event log and compare")
    rb.add_argument("--database")
    push = sub.add_parser("push-campaigns", help="validate, sign and publish a campaign bundle"
                          " (through the running hub's HQ API when there is one)")
    push.add_argument("bundle", type=Path, help="a CampaignBundle file, .toml or .json")
    push.add_argument("--api", help="the running hub's HQ API, e.g. http://127.0.0.1:8710"
                      " (default: [api] of --config, when it has a token)")
    push.add_argument("--token", help="HQ bearer token (default: $MEMBERGATE_HQ_TOKEN, then"
                      " [api] token)")
    push.add_argument("--ca-file", help="CA to trust for an https:// HQ API (the fleet's)")
    demo = sub.add_parser("demo", help="hub + embedded broker + two stores, walking a story")
    demo.add_argument("--seconds", type=float, default=None,
                      help="exit 0 when the story is done (after at most N seconds)")
    demo.add_argument("--dir", help="working directory (default: a new temporary one)")
    bench = sub.add_parser("bench", help="measure merge and drain against in-run floors;"
                           " prints one JSON object")
    bench.add_argument("--json", action="store_true", help="one line instead of indented")
    bench.add_argument("--stores", type=int, default=50)
    bench.add_argument("--events", type=int, default=200_000)
    bench.add_argument("--drain-events", type=int, default=100_000, help="0: skip the drain")
    bench.add_argument("--postgres-url", default="postgresql://postgres@127.0.0.1/postgres",
                       help="admin URL; a throwaway database mg_bench_* is made and dropped")
    bench.add_argument("--no-postgres", action="store_true")
    bench.add_argument("--workdir", help="keep the bench databases here (default: temp, removed)")
    bench.add_argument("--breakdown", action="store_true",
                       help="also apply the merge's batches alone with every statement timed:"
                            " where the apply's time goes, in µs per event")
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s %(message)s")
    cfg = _config(args)
    try:
        return _command(cfg, args)
    except DatabaseUnavailable as exc:  # psycopg missing, or the server refuses: say which
        print(f"membergate-hub: {exc}", file=sys.stderr)
        return 2


def _command(cfg: HubConfig, args: argparse.Namespace) -> int:
    if args.command == "run":
        tune_gc()
        from hub.broker import BrokerPortBusy

        try:
            return asyncio.run(_run(cfg, args.seconds))
        except (TlsError, BrokerPortBusy) as exc:  # the configuration or the box, not a bug
            print(f"membergate-hub: cannot start: {exc}", file=sys.stderr)
            return 2
    if args.command == "init":
        return _init(cfg)
    if args.command == "status":
        return asyncio.run(_status(cfg, args.json))
    if args.command == "rebuild":
        return asyncio.run(_rebuild(cfg))
    if args.command == "push-campaigns":
        return _push_campaigns(cfg, args)
    if args.command == "bench":
        from hub.bench import failed, run_bench

        with tuned_gc():  # as ``run`` has it
            figures = run_bench(stores=args.stores, events=args.events,
                                drain_events=args.drain_events,
                                postgres_url=None if args.no_postgres else args.postgres_url,
                                workdir=args.workdir, breakdown=args.breakdown)
        print(json.dumps(figures, indent=None if args.json else 2, ensure_ascii=False))
        return 1 if failed(figures) else 0
    if args.command == "demo":
        from provisioning.demo_fleet import run_demo

        result: dict[str, Any] = asyncio.run(run_demo(args.dir, args.seconds))
        return 0 if result["ok"] else 1
    return 2


if __name__ == "__main__":
    sys.exit(main())

"""``membergate-edge``: run the store gateway, seed demo data, benchmark, and look after the box."""

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

from edge import demo, gateway
from edge.config import EdgeConfig, load_config, shown_token
from edge.service import EdgeService
from protocol import logs, runtime
from protocol.redact import validation_summary
from protocol.tls import TlsError

log = logging.getLogger("membergate.edge")


def _config(args: argparse.Namespace) -> EdgeConfig:
    try:
        config = load_config(Path(args.config) if args.config else None)
    except (OSError, tomllib.TOMLDecodeError, ValidationError) as exc:
        # A setting out of range or misspelt is the operator's to fix: the reason, no traceback,
        # and not the values given (a token or a password among them).
        why = validation_summary(exc) if isinstance(exc, ValidationError) else exc
        print(f"membergate-edge: invalid configuration {args.config}: {why}", file=sys.stderr)
        raise SystemExit(2) from None
    if getattr(args, "db", None):
        config.database.path = Path(args.db)
    if getattr(args, "host", None):
        config.api.host = args.host
    if getattr(args, "port", None) is not None:
        config.api.port = args.port
    return config


async def _seed(service: EdgeService, members: int) -> dict[str, Any]:
    applied = await service.apply_bundle(demo.demo_bundle(service.config.store.region))
    have = (await service.status(live=False))["members"]
    added = 0
    if have < members:
        added = await service.db.write(
            lambda conn: demo.seed_members(conn, service.context, members - have))
    from edge import products

    currency = service.config.store.currency
    await service.db.write(lambda conn: products.upsert(conn, demo.demo_products(), currency))
    return {"members": have + added, "added": added, "campaigns_applied": applied == "applied",
            "products": len(demo.demo_products())}


async def _run(config: EdgeConfig, *, seed_demo: bool, seconds: float | None) -> int:
    from edge.api import api_server

    if config.api.unguarded:
        # Anyone on the LAN could act as a till with the token printed in the README.
        print(f"membergate-edge: cannot start: [api] host = {config.api.host!r} serves the POS"
              " API to the network, and [api.tokens] holds no token or the public demo one:"
              " give each terminal its own token of 12+ characters in [api.tokens], or serve"
              " on 127.0.0.1", file=sys.stderr)
        return 2
    service = EdgeService(config)
    try:
        server = api_server(service)  # an unusable certificate stops us before anything starts
        await gateway.wire(await service.start())
    except (TlsError, RuntimeError) as exc:  # the configuration or the box, not a bug: say it
        print(f"membergate-edge: cannot start: {exc}", file=sys.stderr)
        return 2
    try:
        if seed_demo:
            seeded = await _seed(service, 1000)
            log.info("demo data ready", extra=seeded)
        if not config.api.loopback and config.api.tls_cert_file is None:
            log.warning("the POS API is served on the network without TLS: terminal tokens"
                        " cross it in clear text ([api] tls_cert_file/tls_key_file)",
                        extra={"host": config.api.host})
        task = asyncio.create_task(server.serve())
        while not server.started:
            if task.done():
                await task
                return 1
            await asyncio.sleep(0.05)
        port = server.servers[0].sockets[0].getsockname()[1] if server.servers else config.api.port
        scheme = config.api.scheme
        base = f"{scheme}://{config.api.host}:{port}"
        _print_started(config, base, port, seed_demo)
        if seconds is not None:
            await asyncio.wait({task}, timeout=seconds)
            server.should_exit = True
        await task
        return 0
    finally:
        await service.close()


def _print_started(config: EdgeConfig, base: str, port: int, seed_demo: bool) -> None:
    """Where the POS finds the API. Output ends up in the journal: a configured token is shown
    masked (``$TOKEN``), only the built-in demo token whole."""
    terminal, token = next(iter(config.api.tokens.items()))
    shown = shown_token(terminal, token)
    use = token if shown == token else "$TOKEN"
    print(f"membergate edge {config.store.store_id} is up: {base}", flush=True)
    print(f"  API docs   {base}/docs", flush=True)
    ws = "wss" if config.api.scheme == "https" else "ws"
    print(f"  events     {ws}://{config.api.host}:{port}/v1/events?token={use}", flush=True)
    print(f"  terminal   {terminal}  token {shown}", flush=True)
    if seed_demo:
        print(f"  try        curl -H 'Authorization: Bearer {use}' "
              f"'{base}/v1/members/lookup?card_uid={demo.demo_card_uid(1)}'", flush=True)


async def _with_service(config: EdgeConfig, fn: Any, *, devices: bool = False) -> Any:
    # A one-off command must not join the hub or grab the lane's devices from a running
    # gateway; only ``devices`` opens the devices (to report their health).
    quiet = config.model_copy(update={"sync": config.sync.model_copy(update={"broker_host": None}),
                                      "lanes": config.lanes if devices else []})
    async with gateway.StoreGateway(quiet) as service:
        return await fn(service)


async def _devices(service: EdgeService) -> Any:
    await asyncio.sleep(1.5)  # let each device report its first health
    return {"devices": [h.model_dump() for h in service.device_health()],
            "lanes": [lane.model_dump(exclude_none=True) for lane in service.config.lanes]}


def _receipt_preview(config: EdgeConfig, args: argparse.Namespace) -> dict[str, Any]:
    from drivers.receipt_preview import render_png

    out = Path(args.out)
    if args.escpos:
        render_png(Path(args.escpos).read_bytes(), args.encoding, out)
        return {"png": str(out), "from": args.escpos}

    async def build(service: EdgeService) -> bytes:
        from drivers.printer import render_escpos
        from edge.receipt_layout import build_receipt

        view = await service.receipt(args.sale)
        doc = build_receipt(view, store_name=config.store.name, currency=config.store.currency)
        return render_escpos(doc, args.encoding)

    data = asyncio.run(_with_service(config, build))
    render_png(data, args.encoding, out)
    return {"png": str(out), "sale_id": args.sale, "escpos_bytes": len(data)}


def _bench(args: argparse.Namespace) -> int:
    """Figures on stdout, progress on stderr; Ctrl-C stops it, its temporary files removed."""
    from edge.bench import run_bench

    try:
        result = run_bench(members=args.members, lookups=args.lookups, finalizes=args.finalizes,
                           catchup_entries=args.catchup_entries, workdir=args.workdir)
    except KeyboardInterrupt:
        print("membergate-edge bench: interrupted", file=sys.stderr)
        return 130
    print(json.dumps(result, indent=None if args.json else 2))
    return 0


def _bench_devices(args: argparse.Namespace) -> int:
    from edge.bench_devices import BenchUnavailable, run_bench_devices

    try:
        result = run_bench_devices(taps=args.taps, scans=args.scans, workdir=args.workdir)
    except BenchUnavailable as exc:  # the box lacks what the bench drives: say what
        print(f"membergate-edge bench-devices: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(result, indent=None if args.json else 2))
    return 0


def _backup_or_restore(config: EdgeConfig, args: argparse.Namespace) -> int:
    """Progress on stderr, the result as JSON on stdout; a refusal is one line, exit 2."""
    from edge import backup
    from protocol.sqlite_backup import BackupError

    def say(message: str) -> None:
        print(f"membergate-edge {args.cmd}: {message}", file=sys.stderr, flush=True)

    db = Path(config.database.path)
    try:
        if args.cmd == "backup":
            out = backup.backup(db, Path(args.dest), say)
        else:
            out = backup.restore(Path(args.source), db, config.store.store_id, say)
    except (BackupError, OSError) as exc:
        say(f"refused: {exc}")
        return 2
    print(json.dumps(out, ensure_ascii=False, indent=2))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="membergate-edge", description=__doc__)
    parser.add_argument("--config", help="TOML configuration file (defaults run the demo)")
    runtime.add_log_level(parser, "INFO")
    sub = parser.add_subparsers(dest="cmd", required=True)

    run = sub.add_parser("run", help="serve the POS API")
    run.add_argument("--db")
    run.add_argument("--host")
    run.add_argument("--port", type=int)
    run.add_argument("--demo", action="store_true", help="seed demo members and campaigns")
    run.add_argument("--seconds", type=float, help="stop after this long (smoke tests, CI)")

    seed = sub.add_parser("seed-demo", help="load demo members and campaigns")
    seed.add_argument("--db")
    seed.add_argument("--members", type=int, default=1000)

    bench = sub.add_parser("bench", help="measure lookups and checkouts; prints figures")
    bench.add_argument("--members", type=int, default=1_000_000)
    bench.add_argument("--lookups", type=int, default=5000)
    bench.add_argument("--finalizes", type=int, default=2000)
    bench.add_argument("--catchup-entries", type=int, default=50_000,
                       help="directory entries applied while checkouts are timed (0: skip)")
    bench.add_argument("--json", action="store_true")
    bench.add_argument("--workdir", help="build the bench files here and keep them (default: a"
                       " temporary folder, removed at the end and on Ctrl-C)")
    bench_dev = sub.add_parser("bench-devices", help="card tap and scan → POS event latency "
                               "through a private pcscd + virtual card and an evdev pipe")
    bench_dev.add_argument("--taps", type=int, default=200)
    bench_dev.add_argument("--scans", type=int, default=1000)
    bench_dev.add_argument("--json", action="store_true")
    bench_dev.add_argument("--workdir", help="where to put the database and pcscd (default: temp)")

    sub.add_parser("migrate", help="bring the database schema up to date").add_argument("--db")
    back = sub.add_parser("backup", help="copy the database while the gateway runs")
    back.add_argument("--db")
    back.add_argument("dest", help="the backup file to write (never overwritten)")
    rest = sub.add_parser("restore", help="put a backup in place of the database (gateway"
                          " stopped); the box takes a new epoch")
    rest.add_argument("--db")
    rest.add_argument("source", help="a file written by membergate-edge backup")
    sub.add_parser("status", help="store, epoch, outbox depth").add_argument("--db")
    sub.add_parser("expire-points", help="expire lots past their date").add_argument("--db")
    member = sub.add_parser("member", help="look a member up")
    member.add_argument("--db")
    member.add_argument("by", choices=["card_uid", "member_code", "phone", "qr"])
    member.add_argument("value")
    sub.add_parser("config", help="print the effective configuration")
    camp = sub.add_parser("apply-campaigns", help="apply a campaign bundle file (TOML/JSON)")
    camp.add_argument("--db")
    camp.add_argument("file")

    imp = sub.add_parser("import-products", help="load the catalogue from a CSV file"
                         " (sku,name,category,unit_price)")
    imp.add_argument("--db")
    imp.add_argument("file")
    sub.add_parser("devices", help="list the lanes' devices and their health")
    prev = sub.add_parser("receipt-preview", help="render a receipt to PNG (Chinese included)")
    src = prev.add_mutually_exclusive_group(required=True)
    src.add_argument("--sale", help="a finalized sale id in this store's database")
    src.add_argument("--escpos", help="a file of captured ESC/POS bytes")
    prev.add_argument("--encoding", default="gb18030", choices=["gb18030", "gbk", "big5"])
    prev.add_argument("--out", default="receipt.png")
    prev.add_argument("--db")

    args = parser.parse_args(argv)
    logs.setup(args.log_level)
    config = _config(args)

    if args.cmd == "run":
        # The collector tuned as the hub's (protocol.runtime): a directory page of 1,000
        # entries made the default collector pause the tills 40-50 ms.
        runtime.tune_gc()
        return runtime.run(_run(config, seed_demo=args.demo, seconds=args.seconds))
    if args.cmd == "config":
        print(json.dumps(config.redacted(), indent=2, ensure_ascii=False))
        return 0
    if args.cmd == "bench":
        return _bench(args)
    if args.cmd == "bench-devices":
        return _bench_devices(args)

    if args.cmd in ("backup", "restore"):
        return _backup_or_restore(config, args)
    if args.cmd == "devices":
        print(json.dumps(asyncio.run(_with_service(config, _devices, devices=True)),
                         ensure_ascii=False, indent=2))
        return 0
    from edge.errors import EdgeError

    if args.cmd == "receipt-preview":
        try:
            preview = _receipt_preview(config, args)
        except EdgeError as exc:  # an unknown sale: the error, as the API would give it
            print(json.dumps({"error": exc.as_dict()}, ensure_ascii=False), file=sys.stderr)
            return 2
        except OSError as exc:
            print(f"membergate-edge receipt-preview: {exc.strerror}: {exc.filename}",
                  file=sys.stderr)
            return 2
        print(json.dumps(preview, ensure_ascii=False, indent=2))
        return 0

    async def act(service: EdgeService) -> Any:
        if args.cmd == "seed-demo":
            return await _seed(service, args.members)
        if args.cmd == "migrate":
            return {"schema": "up to date", "path": str(config.database.path)}
        if args.cmd == "status":
            return await service.status(live=False)
        if args.cmd == "expire-points":
            return {"points_expired": await service.expire_points()}
        if args.cmd == "member":
            return await service.lookup_member(args.by, args.value)
        if args.cmd == "import-products":
            from edge import products

            rows = products.parse_csv(await asyncio.to_thread(
                Path(args.file).read_text, encoding="utf-8"))
            currency = service.config.store.currency
            count = await service.db.write(lambda conn: products.upsert(conn, rows, currency))
            return {"products": count}
        if args.cmd == "apply-campaigns":
            # A running edge prices with it from its next quote (it watches campaigns_rev).
            outcome = await service.apply_campaign_file(args.file)
            return {"applied": outcome == "applied", "outcome": outcome}
        raise AssertionError(args.cmd)

    try:
        out = asyncio.run(_with_service(config, act))
    except EdgeError as exc:
        print(json.dumps({"error": exc.as_dict()}, ensure_ascii=False), file=sys.stderr)
        return 2
    print(json.dumps(out, ensure_ascii=False, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())

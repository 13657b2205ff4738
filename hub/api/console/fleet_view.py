"""The fleet page's reading of ``GET /v1/status``: which stores are online, what each waits to
send, which devices need someone at the store, and what was refused — said in words a store
operations manager reads at a glance, not the status's raw fields."""

from __future__ import annotations

from typing import Any

from hub.api.console import i18n

ONLINE_S = 300  # heard from within five minutes: a store reports every few seconds when up


def ago(lang: i18n.Lang, seconds: float | None) -> str:
    if seconds is None:
        return i18n.t(lang, "never")
    for unit, size in (("d", 86_400), ("h", 3_600), ("min", 60)):
        if seconds >= size:
            return i18n.t(lang, f"ago_{unit}").format(n=int(seconds // size))
    return i18n.t(lang, "ago_s").format(n=int(seconds))


def _word(lang: i18n.Lang, prefix: str, value: str) -> str:
    # A health or device kind a newer gateway reports is shown as it came, not hidden.
    key = f"{prefix}_{value}"
    return i18n.t(lang, key) if i18n.known(key) else value


def stores(lang: i18n.Lang, status: dict[str, Any]) -> dict[str, Any]:
    rows = []
    for s in status["stores"]:
        seen = s["last_seen_s_ago"]
        problems = [{"device": d.get("device_id", ""),
                     "kind": _word(lang, "device", str(d.get("kind", ""))),
                     "health": _word(lang, "health", str(d.get("health", ""))),
                     "detail": d.get("detail", "")}
                    for d in s["devices"] if d.get("health") != "connected"]
        refused = {k: int(v) for k, v in s["refused_at_hub"].items()}
        refused_store = {k: int(v) for k, v in s["refused_at_store"].items()}
        rows.append({
            "store_id": s["store_id"], "name": s["name"], "region": s["region"] or "—",
            "online": seen is not None and seen <= ONLINE_S, "seen": ago(lang, seen),
            "outbox": s["outbox_depth"], "lag": int(s["lag_events"]),
            "devices": len(s["devices"]), "problems": problems,
            "refused_hub": refused, "refused_store": refused_store,
            "software": s["software"] or "—",
            "campaigns": ", ".join(f"{k} v{v}" for k, v in sorted(
                s["campaign_versions"].items())) or "—"})
    return {"rows": rows,
            "online": sum(1 for r in rows if r["online"]),
            "offline": sum(1 for r in rows if not r["online"]),
            "waiting": sum(r["lag"] for r in rows),
            "device_issues": sum(len(r["problems"]) for r in rows)}

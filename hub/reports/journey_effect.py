"""What a journey did (HQ.md, principle 9: effect is measured, not assumed).

A journey holds some members back: they enter like everyone else but get nothing (its own
holdout, ``held_out = 1``, and the chain's control group, ``held_out = 2``; both are counted
together here as **held out**). Whatever the treated members did beyond what the held-out
members did is what the journey made happen. This report reads it from the merged log only:
who entered (``journey_entries``), what was given (``journey_actions``, ``coupons``,
``coupon_redemptions``, ``outbox``) and what members bought (``sales_facts``).

How each figure is counted, in the words a marketer reads:

* A **member** is counted once, as the member they now are (ids merged into them count as
  them, as on the member card), in the group and from the moment of their *first* entry into
  the journey. Their **window** is ``window_days`` days from that entry: [entered, entered +
  window_days). Only members whose window has ended are compared; the others are **open**
  (counted, not compared: their purchases are still to come).
* **Visitors**: members with at least one purchase in their window; **visit rate**: visitors
  / members. **Spend**: what they paid in their window, less what was refunded in it (a
  refund in the window counts even for a sale made before it); **spend per member**: spend /
  members, the average, not rounded.
* **Uplift**: treated minus held out, each with a 95 % confidence interval. Visit rate: Wald
  (normal approximation) for a difference of two proportions,
  ``d ± z·√(p₁(1−p₁)/n₁ + p₀(1−p₀)/n₀)``, z = 1.959964. Spend per member: Welch,
  ``d ± t·√(s₁²/n₁ + s₀²/n₀)`` with each group's own sample variance of spend per member
  (n − 1) and t the Student quantile (0.975) at the Welch–Satterthwaite degrees of freedom.
  **Significant**: the interval leaves 0 out. A group with fewer than 2 compared members has
  no interval (null) and ``note`` says so.
* **ROI**, for the compared treated members: incremental spend = spend-per-member difference
  × treated members, ``(S₁·n₀ − S₀·n₁) / n₀``; incremental margin = incremental spend ×
  ``margin_percent`` / 100. Both are whole minor units **rounded towards zero** (the quotient
  of the absolute values, floored, then given the sign back: −12.7 is −12, 12.7 is 12), so
  the report never shows a gain or a loss bigger than the figures give. Costs = the
  discounts their redeemed journey coupons gave (``coupon_redemptions.amount``) + their
  messages sent × ``message_cost[channel]`` (minor units a message, 0 for a channel not
  priced). ROI = (incremental margin − costs) / costs; null when nothing cost anything.
* **Sent**: messages a provider took (``sent``, ``delivered``, or ``failed`` on the
  provider's receipt: it left and is paid for); **delivered**: the provider confirmed it;
  **suppressed**: held back at send time, by reason (no consent, budget, ...).
* **Completeness**: per store, the wall time of the newest event the hub has merged from it
  (``merged_to_ms``) and how many events it last said it had that the hub has not merged
  (``lag_events``); and how many log events the sales facts have yet to read. A window that
  ends after a store's ``merged_to_ms`` may still be missing that store's purchases.

Scope: a caller sees the members they see (``Scope.member_filter`` on the entry's member)
and, below the chain, only the purchases made in their stores (as every scoped read of sales,
and PostgreSQL's row-level security, has it). Journeys themselves are the chain's.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from statistics import NormalDist
from typing import Any, Protocol

from hub.auth.scope import Scope
from hub.core.db import Tx, in_chunks
from hub.core.projections import lag
from hub.reports.period import merged_to_ms
from hub.stores.fleet import fleet_status
from hub.stores.registry import is_virtual
from protocol.errors import ServiceError
from protocol.hlc import COUNTER_BITS, wall_ms

DAY_MS = 86_400_000
Z95 = NormalDist().inv_cdf(0.975)  # 1.959963984540054
SENT = ("sent", "delivered", "failed")  # the provider took it: it left and is paid for
HELD_OUT_KINDS = {1: "journey", 2: "control"}


class Outcome(Protocol):
    """What the comparison reads of one member: whether they bought, what they spent (the
    campaign report's members are compared with the same functions)."""

    @property
    def visited(self) -> bool: ...

    @property
    def spend(self) -> int: ...


@dataclass
class _Unit:
    """One member as they now are: their first entry, its group, what they spent."""

    entered_ms: int
    held_out: int
    visited: bool = False
    spend: int = 0
    coupon_cost: int = 0


def effect(tx: Tx, scope: Scope, journey_id: str, *, window_days: int = 30,
           margin_percent: int = 30, message_cost: dict[str, int] | None = None,
           now_ms: int) -> dict[str, Any]:
    """The journey's effect as the caller may see it (404 for no such journey)."""
    scope.require("reports.read")
    if window_days < 1:
        raise ServiceError("bad_window", "window_days is at least 1", 422)
    if not 0 <= margin_percent <= 100:
        raise ServiceError("bad_margin", "margin_percent is 0 to 100", 422)
    prices = message_cost or {}
    row = tx.one("SELECT name, definition FROM journeys WHERE journey_id = ?", (journey_id,))
    if row is None:
        raise ServiceError("journey_not_found", "no journey with this id", 404)
    window_ms = window_days * DAY_MS

    where, params = scope.member_filter("m")
    entries = [(str(r[0]), int(r[1]), int(r[2])) for r in tx.all(
        "SELECT e.member_id, e.entered_ms, e.held_out FROM journey_entries e JOIN members m"
        f" ON m.member_id = e.member_id WHERE e.journey_id = ? AND {where}"
        " ORDER BY e.entered_ms, e.member_id, e.occasion", (journey_id, *params))]
    entry_members = sorted({m for m, _at, _h in entries})
    now_is = _canonical(tx, entry_members)
    units: dict[str, _Unit] = {}
    for member, entered, kind in entries:  # oldest first: a member's first entry stands
        units.setdefault(now_is[member], _Unit(entered, kind))
    closed = {u for u, x in units.items() if x.entered_ms + window_ms <= now_ms}

    _spend(tx, scope, units, closed, window_ms)
    coupons = _coupons(tx, journey_id, set(entry_members))
    for member, _code, discount in coupons:
        if discount is not None:
            units[now_is[member]].coupon_cost += discount
    messages = _messages(tx, journey_id, entry_members)

    treated = [units[u] for u in sorted(closed) if not units[u].held_out]
    held = [units[u] for u in sorted(closed) if units[u].held_out]
    issued, redeemed = len(coupons), sum(1 for c in coupons if c[2] is not None)
    sent = [(m, ch) for m, ch, state, _r in messages if state in SENT]
    treated_ids = {u for u in closed if not units[u].held_out}
    compared_sent = [ch for m, ch in sent if now_is.get(m, m) in treated_ids]
    suppressed: dict[str, int] = {}
    by_state: dict[str, int] = {}
    for _m, _ch, state, reason in messages:
        by_state[state] = by_state.get(state, 0) + 1
        if state == "suppressed":
            suppressed[reason or "unknown"] = suppressed.get(reason or "unknown", 0) + 1
    held_kinds = {name: sum(1 for x in units.values() if x.held_out == k)
                  for k, name in HELD_OUT_KINDS.items()}
    return {
        "journey_id": journey_id,
        "name": row[0],
        "holdout_percent": int(json.loads(row[1]).get("holdout_percent", 0)),
        "window_days": window_days,
        "now_ms": now_ms,
        "entries": len(entries),
        "entered": len(units),
        "treated": sum(1 for x in units.values() if not x.held_out),
        "held_out": sum(1 for x in units.values() if x.held_out),
        "held_out_by_kind": held_kinds,
        "open": len(units) - len(closed),
        "messages": dict(sorted(by_state.items())),
        "sent": len(sent),
        "delivered": by_state.get("delivered", 0),
        "suppressed": dict(sorted(suppressed.items())),
        "coupons_issued": issued,
        "coupons_redeemed": redeemed,
        "redemption_rate": redeemed / issued if issued else None,
        "groups": {"treated": _group(treated, sum(1 for u, x in units.items()
                                                  if u not in closed and not x.held_out)),
                   "held_out": _group(held, sum(1 for u, x in units.items()
                                                if u not in closed and x.held_out))},
        "uplift": uplift(treated, held),
        "roi": roi(treated, held, margin_percent=margin_percent,
                   coupon_cost=sum(x.coupon_cost for x in treated),
                   sent=compared_sent, prices=prices),
        "completeness": _completeness(tx, scope, units, closed, window_ms, now_ms),
        "notes": [
            "held_out counts the journey's own holdout and the chain's control group"
            " together (held_out_by_kind tells them apart)",
            "a member counts once, as the member they now are, from their first entry",
            "only members whose window has ended are compared (open: still running)"],
    }


def _canonical(tx: Tx, ids: list[str]) -> dict[str, str]:
    """Each id -> the member it now is (merges followed; ``hub.members.identity``)."""
    now_is = {i: i for i in ids}
    todo = list(ids)
    for _hop in range(8):  # merges are kept one step deep; a few hops at most
        moved: dict[str, str] = {}
        for chunk, marks in in_chunks(sorted(set(todo))):
            moved.update({str(a): str(b) for a, b in tx.all(
                f"SELECT member_id, merged_into FROM members WHERE member_id IN ({marks})"
                " AND merged_into IS NOT NULL", chunk)})
        if not moved:
            break
        for member, target in now_is.items():
            if target in moved:
                now_is[member] = moved[target]
        todo = sorted(set(moved.values()))
    return now_is


def _spend(tx: Tx, scope: Scope, units: dict[str, _Unit], closed: set[str],
           window_ms: int) -> None:
    """Each compared member's visits and spend in their window (net of refunds), over every
    id that is now them, at the stores the scope covers."""
    if not closed:
        return
    owner = {u: u for u in closed}
    for chunk, marks in in_chunks(sorted(closed)):
        owner.update({str(a): str(b) for a, b in tx.all(
            f"SELECT member_id, merged_into FROM members WHERE merged_into IN ({marks})",
            chunk)})
    stores = scope.store_ids(tx)
    low = min(units[u].entered_ms for u in closed) << COUNTER_BITS
    high = (max(units[u].entered_ms for u in closed) + window_ms) << COUNTER_BITS
    for chunk, marks in in_chunks(sorted(owner)):
        for member, kind, hlc, amount, store in tx.all(
                "SELECT member_id, kind, hlc, amount, store_id FROM sales_facts WHERE member_id"
                f" IN ({marks}) AND kind IN ('sale', 'refund') AND hlc >= ? AND hlc < ?",
                (*chunk, low, high)):
            if stores is not None and store not in stores:
                continue
            unit = units[owner[str(member)]]
            if unit.entered_ms <= wall_ms(int(hlc)) < unit.entered_ms + window_ms:
                unit.spend += int(amount)
                unit.visited = unit.visited or kind == "sale"


def _coupons(tx: Tx, journey_id: str, members: set[str]
             ) -> list[tuple[str, str, int | None]]:
    """(entry member, code, discount given or None) of every coupon the journey issued to
    ``members``: its coupon steps (``journey_actions``), their redemptions."""
    issued: list[tuple[str, str]] = []
    for member, outcome in tx.all("SELECT member_id, outcome FROM journey_actions"
                                  " WHERE journey_id = ? AND kind = 'coupon'", (journey_id,)):
        code = json.loads(outcome).get("coupon_code")
        if str(member) in members and code:
            issued.append((str(member), str(code)))
    given: dict[str, int] = {}
    for chunk, marks in in_chunks(sorted(c for _m, c in issued)):
        given.update({str(c): int(a) for c, a in tx.all(
            "SELECT r.coupon_code, r.amount FROM coupon_redemptions r JOIN coupons c ON"
            f" c.coupon_code = r.coupon_code WHERE r.coupon_code IN ({marks})"
            " AND c.campaign_id = ?", (*chunk, journey_id))})
    return [(m, c, given.get(c)) for m, c in issued]


def _messages(tx: Tx, journey_id: str, members: list[str]) -> list[tuple[str, str, str, str]]:
    """(member, channel, state, reason) of the journey's messages to ``members``."""
    out: list[tuple[str, str, str, str]] = []
    for chunk, marks in in_chunks(members):
        out += [(str(m), str(ch), str(st), str(r or "")) for m, ch, st, r in tx.all(
            f"SELECT member_id, channel, state, reason FROM outbox WHERE member_id IN ({marks})"
            " AND journey_id = ?", (*chunk, journey_id))]
    return out


def _group(members: list[_Unit], still_open: int) -> dict[str, Any]:
    """A group's compared members (windows ended) and how many of it are still open."""
    n = len(members)
    visitors = sum(1 for x in members if x.visited)
    spend = sum(x.spend for x in members)
    return {"members": n, "open": still_open, "visitors": visitors,
            "visit_rate": visitors / n if n else None, "spend": spend,
            "spend_per_member": spend / n if n else None}


def uplift(treated: Sequence[Outcome], held: Sequence[Outcome]) -> dict[str, Any]:
    """Visit rate and spend per member, treated minus held out, each with its 95 % interval
    (see the module's text for the formulas)."""
    n1, n0 = len(treated), len(held)
    visits = _difference(None, None, None, "Wald (normal approximation), 95 %")
    spend = _difference(None, None, None, "Welch t, Welch-Satterthwaite df, 95 %") | {"df": None}
    if not n1 or not n0:
        empty = "treated" if not n1 else "held-out"
        return {"visit_rate": visits, "spend_per_member": spend,
                "note": f"no {empty} member's window has ended yet: nothing to compare"}
    p1 = sum(1 for x in treated if x.visited) / n1
    p0 = sum(1 for x in held if x.visited) / n0
    s1, s0 = [x.spend for x in treated], [x.spend for x in held]
    m1, m0 = sum(s1) / n1, sum(s0) / n0
    visits["difference"] = p1 - p0
    spend["difference"] = m1 - m0
    if n1 < 2 or n0 < 2:
        small = "treated" if n1 < 2 else "held-out"
        return {"visit_rate": visits, "spend_per_member": spend,
                "note": f"the {small} group has fewer than 2 members whose window has ended:"
                        " no confidence interval"}
    se = math.sqrt(p1 * (1 - p1) / n1 + p0 * (1 - p0) / n0)
    visits.update(_interval(p1 - p0, Z95 * se))
    a, b = variance(s1) / n1, variance(s0) / n0
    df = (a + b) ** 2 / (a * a / (n1 - 1) + b * b / (n0 - 1)) if a + b > 0 else None
    spend.update(_interval(m1 - m0, (t_quantile(0.975, df) * math.sqrt(a + b))
                           if df is not None else 0.0))
    spend["df"] = df
    note = None
    if se == 0 or df is None:
        note = ("every member of a group did the same: an interval without width, not to be"
                " trusted")
    return {"visit_rate": visits, "spend_per_member": spend, "note": note}


def _difference(d: float | None, low: float | None, high: float | None,
                method: str) -> dict[str, Any]:
    return {"difference": d, "ci_low": low, "ci_high": high, "significant": None,
            "method": method}


def _interval(d: float, half: float) -> dict[str, Any]:
    low, high = d - half, d + half
    return {"ci_low": low, "ci_high": high, "significant": low > 0 or high < 0}


def variance(values: list[int]) -> float:
    """The sample variance (n − 1) of whole minor units, summed exactly in integers."""
    n, total = len(values), sum(values)
    return (n * sum(v * v for v in values) - total * total) / (n * (n - 1))


def toward_zero(numerator: int, denominator: int) -> int:
    """``numerator / denominator`` rounded towards zero (``denominator`` > 0)."""
    q = abs(numerator) // denominator
    return q if numerator >= 0 else -q


def roi(treated: Sequence[Outcome], held: Sequence[Outcome], *, margin_percent: int,
        coupon_cost: int, sent: list[str], prices: dict[str, int]) -> dict[str, Any]:
    """What the compared treated members brought beyond the held out, against what they
    cost (rounding: towards zero, see the module's text)."""
    messages = sum(prices.get(ch, 0) for ch in sent)
    costs = coupon_cost + messages
    out: dict[str, Any] = {"margin_percent": margin_percent, "incremental_spend": None,
                           "incremental_margin": None, "coupon_cost": coupon_cost,
                           "messages_sent": len(sent), "message_cost": messages,
                           "costs": costs, "roi": None, "note": None}
    n1, n0 = len(treated), len(held)
    if not n1 or not n0:
        out["note"] = "no incremental spend without both groups' ended windows"
        return out
    spend1, spend0 = sum(x.spend for x in treated), sum(x.spend for x in held)
    incremental = toward_zero(spend1 * n0 - spend0 * n1, n0)
    margin = toward_zero(incremental * margin_percent, 100)
    out.update(incremental_spend=incremental, incremental_margin=margin)
    if costs:
        out["roi"] = (margin - costs) / costs
    else:
        out["note"] = "nothing cost anything: no ROI"
    return out


def _completeness(tx: Tx, scope: Scope, units: dict[str, _Unit], closed: set[str],
                  window_ms: int, now_ms: int) -> dict[str, Any]:
    return store_completeness(tx, scope, now_ms) | {
        "windows_end_ms": (max(units[u].entered_ms for u in closed) + window_ms
                           if closed else None)}


def store_completeness(tx: Tx, scope: Scope, now_ms: int) -> dict[str, Any]:
    """Per store the scope covers, how far the hub has merged its log (``merged_to_ms``,
    ``lag_events``), and how many log events the sales facts have yet to read."""
    where, params = scope.store_filter("s")
    mine = {str(s) for (s,) in tx.all(f"SELECT s.store_id FROM stores s WHERE {where}", params)}
    fleet = [s for s in fleet_status(tx, now_ms)
             if str(s["store_id"]) in mine and not is_virtual(str(s["store_id"]))]
    merged = merged_to_ms(tx, [str(s["store_id"]) for s in fleet])
    stores = [{"store_id": str(s["store_id"]), "merged_to_ms": merged[str(s["store_id"])],
               "lag_events": int(s["lag_events"])} for s in fleet]
    facts = lag(tx, ["sales_facts"], now_ms)[0]
    return {"stores": stores, "sales_facts_behind": int(facts["lag_events"])}


def t_quantile(p: float, df: float) -> float:
    """The Student t quantile at ``p`` (> 0.5) for ``df`` degrees of freedom (not an integer
    in Welch's test): the CDF through the regularized incomplete beta function, inverted by
    bisection to 1e-12."""
    if df > 1e7:
        return NormalDist().inv_cdf(p)
    low, high = 0.0, 2.0
    while t_cdf(high, df) < p:
        low, high = high, high * 2
    while high - low > 1e-12 * max(1.0, high):
        mid = (low + high) / 2
        if t_cdf(mid, df) < p:
            low = mid
        else:
            high = mid
    return (low + high) / 2


def t_cdf(t: float, df: float) -> float:
    tail = 0.5 * _incomplete_beta(df / 2, 0.5, df / (df + t * t))
    return 1 - tail if t > 0 else tail


def _incomplete_beta(a: float, b: float, x: float) -> float:
    """I_x(a, b), by its continued fraction (modified Lentz)."""
    if x <= 0:
        return 0.0
    if x >= 1:
        return 1.0
    front = math.exp(math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b)
                     + a * math.log(x) + b * math.log1p(-x))
    if x < (a + 1) / (a + b + 2):
        return front * _fraction(a, b, x) / a
    return 1 - front * _fraction(b, a, 1 - x) / b


def _fraction(a: float, b: float, x: float) -> float:
    tiny = 1e-300
    c, d = 1.0, 1 - (a + b) * x / (a + 1)
    d = 1 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 500):
        for num in (m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m)),
                    -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1))):
            d = 1 + num * d
            d = 1 / (d if abs(d) > tiny else tiny)
            c = 1 + num / c
            c = c if abs(c) > tiny else tiny
            h *= d * c
        if abs(d * c - 1) < 1e-15:
            break
    return h

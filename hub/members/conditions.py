"""The condition language of segments and rule-based tags: a tree of ``all`` / ``any`` /
``not`` over leaves, validated by pydantic, compiled to one SQL condition on a ``members`` row.

A leaf names a ``field`` and what it must be::

    {"field": "tier", "in": ["gold"]}
    {"field": "days_since_purchase", "gte": 30}
    {"field": "spend", "window_days": 90, "gte": 50000}
    {"all": [..], "any": [..], "not": {..}}

Numbers take ``gte`` and/or ``lte`` (both equal: exactly); lists take ``in``; tags take
``any`` or ``all``. Windows (``window_days``) end today, on the chain's calendar, and a leaf
with one is **date-relative**: its answer changes at midnight with no event, so the segments
holding it are evaluated again just after midnight (``hub.members.segments``). Every other leaf
changes only with merged data and is kept fresh by the member-by-member passes.

What each field reads (``FIELDS``): the member row (profile, tier, registration, guide, store
tags), the activity projection (purchases, spend, items, last purchase, stores visited, months
by category), the sales lines (SKUs: a scan of the window, so a window is required), balances
(shares, points lots), consents, the latest RFM run, lifecycle stages, HQ and rule tags, and
other segments. Members merged into another and erased members are in no segment.

Refused with an error naming the part (``ConditionError``, or pydantic's for the shape): an
unknown field, an operator the field does not take, an unknown tag or segment, a segment that
would contain itself through others (``hub.members.segments`` checks the whole graph), more
than ``MAX_NODES`` nodes or ``MAX_DEPTH`` levels, longer lists than ``MAX_LIST``.
"""

from __future__ import annotations

import calendar
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from typing import Annotated, Any, Literal, get_args
from zoneinfo import ZoneInfo

from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    ValidationError,
    model_validator,
)

from hub.core.db import marks
from protocol.events import Gender
from protocol.hlc import pack

MAX_NODES = 200
MAX_DEPTH = 12
MAX_LIST = 1000
MAX_WINDOW_DAYS = 3660
CHANNELS = ("store", "online", "hq")  # registration channel: a store, the online channel, HQ
ONLINE_STORES = ("ONLINE",)  # the online channel's virtual stores (HQ.md)
HQ_STORES = ("HQ",)


@dataclass(frozen=True)
class Spec:
    kind: Literal["number", "list", "tags", "segments"]
    reads: str  # what it reads (for the documentation and the freshness rules)
    window: Literal["no", "optional", "required"] = "no"
    relative: bool = False  # changes with the date alone
    lo: int = 0  # bounds of a number
    hi: int = 10**12
    values: tuple[str, ...] = ()  # the allowed values of a list, when fixed


FIELDS: dict[str, Spec] = {
    # profile
    "age": Spec("number", "member", relative=True, hi=150),
    "birthday_in_days": Spec("number", "member", relative=True, hi=366),
    "registered_days_ago": Spec("number", "member", relative=True, hi=36600),
    "registered_store": Spec("list", "member"),
    "registered_region": Spec("list", "member"),
    "registration_channel": Spec("list", "member", values=CHANNELS),
    "tier": Spec("list", "member"),
    "guide": Spec("list", "member"),
    "gender": Spec("list", "member", values=get_args(Gender)),
    "tag": Spec("tags", "tags"),
    # scores and stages
    "rfm_r": Spec("number", "rfm", hi=5),
    "rfm_f": Spec("number", "rfm", hi=5),
    "rfm_m": Spec("number", "rfm", hi=5),
    "rfm_group": Spec("list", "rfm"),
    "lifecycle_stage": Spec("list", "lifecycle",
                            values=("new", "active", "sleeping", "lost", "reactivated")),
    # where they shop
    "visited_store": Spec("list", "activity"),
    "visited_region": Spec("list", "activity"),
    "most_visits_store": Spec("list", "activity"),
    "most_visits_region": Spec("list", "activity"),
    # behaviour (a window: the last N days, today included; none: ever)
    "purchases": Spec("number", "activity", window="optional"),
    "spend": Spec("number", "activity", window="optional", lo=-(10**12)),
    "items": Spec("number", "activity", window="optional", lo=-(10**9)),
    "days_since_purchase": Spec("number", "activity", relative=True, hi=36600),
    "category": Spec("list", "activity", window="optional"),
    "sku": Spec("list", "sales", window="required"),
    "coupons_redeemed": Spec("number", "coupons", window="optional"),
    # balances
    "points": Spec("number", "balances", lo=-(10**12)),
    "stored_value": Spec("number", "balances", lo=-(10**12)),
    "points_expiring": Spec("number", "lots", window="required", relative=True),
    # consent and other segments
    "consent": Spec("list", "consent", values=("sms", "email", "wechat", "push")),
    "segment": Spec("segments", "segments"),
}
FieldName = Literal[
    "age", "birthday_in_days", "registered_days_ago", "registered_store", "registered_region",
    "registration_channel", "tier", "guide", "gender", "tag", "rfm_r", "rfm_f", "rfm_m",
    "rfm_group",
    "lifecycle_stage", "visited_store", "visited_region", "most_visits_store",
    "most_visits_region", "purchases", "spend", "items", "days_since_purchase", "category",
    "sku", "coupons_redeemed", "points", "stored_value", "points_expiring", "consent",
    "segment"]
Value = Annotated[str, Field(min_length=1, max_length=100)]
ValueList = Annotated[list[Value], Field(min_length=1, max_length=MAX_LIST)]


class ConditionError(ValueError):
    """A condition refers to something that does not exist or cannot be evaluated."""


class Leaf(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    field: FieldName
    gte: int | None = None
    lte: int | None = None
    in_: ValueList | None = Field(None, alias="in")
    any: ValueList | None = None
    all: ValueList | None = None
    window_days: int | None = Field(None, ge=1, le=MAX_WINDOW_DAYS)

    @model_validator(mode="after")
    def _fits(self) -> Leaf:
        spec = FIELDS[self.field]
        given = {k for k in ("gte", "lte", "in_", "any", "all") if getattr(self, k) is not None}
        wanted = {"number": {"gte", "lte"}, "list": {"in_"}, "segments": {"in_"},
                  "tags": {"any", "all"}}[spec.kind]
        name = self.field
        if not given or not given <= wanted:
            ops = " and/or ".join(sorted(o.rstrip("_") for o in wanted))
            raise ValueError(f"field {name} takes {ops}")
        if spec.kind == "tags" and len(given) > 1:
            raise ValueError("field tag takes any or all, not both")
        if spec.window == "no" and self.window_days is not None:
            raise ValueError(f"field {name} takes no window_days")
        if spec.window == "required" and self.window_days is None:
            raise ValueError(f"field {name} needs window_days (it reads every line in it)")
        for op in ("gte", "lte"):
            v = getattr(self, op)
            if v is not None and not spec.lo <= v <= spec.hi:
                raise ValueError(f"field {name}: {op} must be within {spec.lo}..{spec.hi}")
        if self.gte is not None and self.lte is not None and self.gte > self.lte:
            raise ValueError(f"field {name}: gte is above lte, nothing can match")
        if spec.values and self.in_ is not None:
            bad = sorted(set(self.in_) - set(spec.values))
            if bad:
                raise ValueError(f"field {name}: unknown value {bad[0]!r}"
                                 f" (one of {', '.join(spec.values)})")
        if name == "sku" and self.in_ is not None and len(self.in_) > 200:
            raise ValueError("field sku takes at most 200 SKUs")
        return self


class All(BaseModel):
    model_config = ConfigDict(extra="forbid")
    all: list[Node] = Field(min_length=1, max_length=MAX_NODES)


class AnyOf(BaseModel):
    model_config = ConfigDict(extra="forbid")
    any: list[Node] = Field(min_length=1, max_length=MAX_NODES)


class Not(BaseModel):
    model_config = ConfigDict(extra="forbid")
    not_: Node = Field(alias="not")


def _kind(value: Any) -> str:
    """Which node ``value`` is, so that an error speaks of that node alone."""
    if isinstance(value, dict):
        if "field" not in value:
            for key in ("all", "any", "not"):
                if key in value:
                    return key
        return "leaf"
    kinds: dict[type, str] = {All: "all", AnyOf: "any", Not: "not"}
    return kinds.get(type(value), "leaf")


Node = Annotated[Annotated[All, Tag("all")] | Annotated[AnyOf, Tag("any")]
                 | Annotated[Not, Tag("not")] | Annotated[Leaf, Tag("leaf")],
                 Discriminator(_kind)]
All.model_rebuild()
AnyOf.model_rebuild()
Not.model_rebuild()


class Condition(BaseModel):
    """A whole condition tree, checked for size and depth."""

    model_config = ConfigDict(extra="forbid")
    root: Node

    @model_validator(mode="after")
    def _bounded(self) -> Condition:
        nodes = 0
        for depth, _node in walk(self.root):
            nodes += 1
            if depth > MAX_DEPTH:
                raise ValueError(f"the condition is nested deeper than {MAX_DEPTH} levels")
        if nodes > MAX_NODES:
            raise ValueError(f"the condition has more than {MAX_NODES} parts")
        return self

    @classmethod
    def parse(cls, tree: Any) -> Condition:
        return cls.model_validate({"root": tree})

    def dump(self) -> Any:
        return self.root.model_dump(by_alias=True, exclude_none=True)

    def leaves(self) -> list[Leaf]:
        return [n for _d, n in walk(self.root) if isinstance(n, Leaf)]

    @property
    def relative(self) -> bool:
        return any(FIELDS[leaf.field].relative or leaf.window_days is not None
                   for leaf in self.leaves())

    def reads(self) -> set[str]:
        return {FIELDS[leaf.field].reads for leaf in self.leaves()}

    def segments(self) -> set[str]:
        return {s for leaf in self.leaves() if leaf.field == "segment" for s in leaf.in_ or ()}

    def tags(self) -> set[str]:
        return {t for leaf in self.leaves() if leaf.field == "tag"
                for t in (leaf.any or leaf.all or ())}


def describe(exc: ValidationError) -> str:
    """Pydantic's errors as one line naming each part: ``all[1].not: field spend takes ..``."""
    out = []
    for err in exc.errors():
        parts: list[str | int] = []
        for part in err["loc"]:
            # The node kind ("all" the tag, then "all" the field) is named once; a leaf's not.
            if part in ("root", "leaf") or (parts and part == parts[-1]):
                continue
            parts.append(part)
        path = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in parts)
        message = str(err["msg"]).removeprefix("Value error, ")
        if parts and parts[-1] == "field" and err["type"] == "literal_error":
            message = f"unknown field {err['input']!r}"
        out.append(f"{path.lstrip('.') or 'condition'}: {message}")
    return "; ".join(out)


def walk(node: Node, depth: int = 1) -> Iterator[tuple[int, Node]]:
    yield depth, node
    if isinstance(node, All | AnyOf):
        for child in node.all if isinstance(node, All) else node.any:
            yield from walk(child, depth + 1)
    elif isinstance(node, Not):
        yield from walk(node.not_, depth + 1)


@dataclass
class Context:
    """What a condition is compiled against: today on the chain's calendar, the latest RFM run,
    the tags the chain knows (catalogue) and which segment keeps each rule tag, the segments."""

    today: date
    zone: str
    dialect: str
    rfm_run: str | None = None
    known_tags: set[str] = field(default_factory=set)
    rule_tags: dict[str, str] = field(default_factory=dict)  # tag -> segment id
    segments: set[str] = field(default_factory=set)


def _years_before(day: date, years: int) -> date:
    year = day.year - years
    return day.replace(year=year, day=min(day.day, calendar.monthrange(year, day.month)[1]))


def _window_start(ctx: Context, days: int) -> str:
    return (ctx.today - timedelta(days=days - 1)).isoformat()


def _number(expr: str, leaf: Leaf) -> tuple[str, list[Any]]:
    parts, params = [], []
    if leaf.gte is not None:
        parts.append(f"{expr} >= ?")
        params.append(leaf.gte)
    if leaf.lte is not None:
        parts.append(f"{expr} <= ?")
        params.append(leaf.lte)
    return "(" + " AND ".join(parts) + ")", params


# SQL: the ids that are member ``m`` in rows a store wrote (the member and ids merged into it).
_IDS = "(SELECT m.member_id UNION ALL SELECT x.member_id FROM members x WHERE x.merged_into" \
       " = m.member_id)"
_REGION_STORES = "(SELECT store_id FROM stores WHERE region IN ({}))"
# The list fields that are a column of the member row.
# A member without a guide or a gender is in no list of them, and so under a NOT of one
# (``NOT (NULL IN …)`` would leave them out of both).
_COLUMN_OF = {"registered_store": "m.home_store", "tier": "m.tier",
              "guide": "coalesce(m.guide_id, '')", "gender": "coalesce(m.gender, '')"}


class Compiler:
    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx

    def compile(self, cond: Condition) -> tuple[str, list[Any]]:
        """The SQL condition on ``members m`` and its parameters."""
        return self.node(cond.root)

    def node(self, node: Node) -> tuple[str, list[Any]]:
        if isinstance(node, All | AnyOf):
            children = node.all if isinstance(node, All) else node.any
            joiner = " AND " if isinstance(node, All) else " OR "
            parts = [self.node(c) for c in children]
            return ("(" + joiner.join(p[0] for p in parts) + ")",
                    [v for p in parts for v in p[1]])
        if isinstance(node, Not):
            sql, params = self.node(node.not_)
            return f"(NOT {sql})", params
        return self.leaf(node)

    def leaf(self, leaf: Leaf) -> tuple[str, list[Any]]:
        ctx, f, values = self.ctx, leaf.field, list(leaf.in_ or [])
        w = leaf.window_days
        parts: list[str] = []  # of the fields that build their SQL part by part
        params: list[Any] = []
        if f == "age":
            # age >= n: born on or before today n years ago; age <= n: after n+1 years ago
            if leaf.gte is not None:
                parts.append("m.birthday <= ?")
                params.append(_years_before(ctx.today, leaf.gte).isoformat())
            if leaf.lte is not None:
                parts.append("m.birthday > ?")
                params.append(_years_before(ctx.today, leaf.lte + 1).isoformat())
            return "(m.birthday IS NOT NULL AND " + " AND ".join(parts) + ")", params
        if f == "birthday_in_days":
            days = [ctx.today + timedelta(days=n)
                    for n in range(leaf.gte or 0, (leaf.lte if leaf.lte is not None else 366) + 1)]
            md = {d.strftime("%m-%d") for d in days}
            # A 29 February birthday is kept on the 28th in a year without one.
            md |= {"02-29" for d in days if d.month == 2 and d.day == 28
                   and not calendar.isleap(d.year)}
            ordered = sorted(md)
            return f"substr(m.birthday, 6, 5) IN ({marks(ordered)})", ordered
        if f == "registered_days_ago":
            # registered n days ago or earlier: before the start of that day (chain calendar)
            def hlc_of(n: int) -> int:
                day = ctx.today - timedelta(days=n)
                start = datetime.combine(day, time(), ZoneInfo(ctx.zone))
                return pack(int(start.timestamp() * 1000), 0)
            if leaf.gte is not None:
                parts.append("m.registered_hlc < ?")
                params.append(hlc_of(leaf.gte - 1))
            if leaf.lte is not None:
                parts.append("m.registered_hlc >= ?")
                params.append(hlc_of(leaf.lte))
            return "(" + " AND ".join(parts) + ")", params
        if f in _COLUMN_OF:
            return f"{_COLUMN_OF[f]} IN ({marks(values)})", values
        if f == "registered_region":
            return f"m.home_store IN {_REGION_STORES.format(marks(values))}", values
        if f == "registration_channel":
            # a store: any home store but the virtual ones; online, HQ: theirs
            virtual = {"online": ONLINE_STORES, "hq": HQ_STORES}
            for v in values:
                listed = list(virtual.get(v, (*ONLINE_STORES, *HQ_STORES)))
                parts.append(f"m.home_store {'NOT IN' if v == 'store' else 'IN'}"
                             f" ({marks(listed)})")
                params += listed
            return "(" + " OR ".join(parts) + ")", params
        if f == "tag":
            return self._tags(leaf)
        if f in ("rfm_r", "rfm_f", "rfm_m"):
            if ctx.rfm_run is None:  # no run yet: every member scores 0
                return _number("0", leaf)
            if not _holds_zero(leaf):  # as a semi-join: PostgreSQL plans it as one
                sql, params = _number(f"s.{f[-1]}", leaf)
                return (f"EXISTS (SELECT 1 FROM rfm_scores s WHERE s.run_id = ? AND"
                        f" s.member_id = m.member_id AND {sql})", [ctx.rfm_run, *params])
            sql, params = _number(f"coalesce((SELECT s.{f[-1]} FROM rfm_scores s WHERE"
                                  " s.run_id = ? AND s.member_id = m.member_id), 0)", leaf)
            return sql, _per_use(ctx.rfm_run, params)
        if f == "rfm_group":
            return (f"EXISTS (SELECT 1 FROM rfm_scores s WHERE s.run_id = ? AND s.member_id"
                    f" = m.member_id AND s.grp IN ({marks(values)}))",
                    [ctx.rfm_run or "", *values])
        if f == "lifecycle_stage":
            return (f"EXISTS (SELECT 1 FROM member_lifecycle l WHERE l.member_id = m.member_id"
                    f" AND l.stage IN ({marks(values)}))", values)
        if f == "visited_store":
            return (f"EXISTS (SELECT 1 FROM member_stores v WHERE v.member_id = m.member_id"
                    f" AND v.purchases > 0 AND v.store_id IN ({marks(values)}))", values)
        if f == "visited_region":
            return (f"EXISTS (SELECT 1 FROM member_stores v WHERE v.member_id = m.member_id"
                    f" AND v.purchases > 0 AND v.store_id IN"
                    f" {_REGION_STORES.format(marks(values))})", values)
        if f in ("most_visits_store", "most_visits_region"):
            top = ("(SELECT v.store_id FROM member_stores v WHERE v.member_id = m.member_id"
                   " AND v.purchases > 0 ORDER BY v.purchases DESC, v.store_id LIMIT 1)")
            where = f"({marks(values)})" if f == "most_visits_store" else \
                _REGION_STORES.format(marks(values))
            return f"{top} IN {where}", values
        if f in ("purchases", "spend", "items"):
            if w is None and not _holds_zero(leaf):
                sql, params = _number(f"a.{f}", leaf)
                return (f"EXISTS (SELECT 1 FROM member_activity a WHERE a.member_id"
                        f" = m.member_id AND {sql})", params)
            if w is None:
                return _number(f"coalesce((SELECT a.{f} FROM member_activity a"
                               " WHERE a.member_id = m.member_id), 0)", leaf)
            sql, params = _number(f"coalesce((SELECT sum(d.{f}) FROM member_days d"
                                  " WHERE d.member_id = m.member_id AND d.day >= ?), 0)", leaf)
            return sql, _per_use(_window_start(ctx, w), params)
        if f == "days_since_purchase":
            # n days since the last purchase <=> it was on or before today - n
            if leaf.gte is not None:
                parts.append("a.last_date <= ?")
                params.append((ctx.today - timedelta(days=leaf.gte)).isoformat())
            if leaf.lte is not None:
                parts.append("a.last_date >= ?")
                params.append((ctx.today - timedelta(days=leaf.lte)).isoformat())
            return (f"EXISTS (SELECT 1 FROM member_activity a WHERE a.member_id = m.member_id"
                    f" AND a.last_date IS NOT NULL AND {' AND '.join(parts)})", params)
        if f == "category":
            # Categories are kept by month: a window reaches back to the start of the month
            # its first day falls in.
            since = _window_start(ctx, w)[:7] if w is not None else ""
            return (f"EXISTS (SELECT 1 FROM member_months c WHERE c.member_id = m.member_id"
                    f" AND c.month >= ? AND c.items > 0 AND c.category IN ({marks(values)}))",
                    [since, *values])
        if f == "sku":
            assert w is not None
            return ("m.member_id IN (SELECT coalesce(x.merged_into, s.member_id) FROM"
                    " sales_facts s LEFT JOIN members x ON x.member_id = s.member_id"
                    f" WHERE s.kind = 'line' AND s.member_id IS NOT NULL AND s.qty > 0"
                    f" AND s.local_date >= ? AND s.sku IN ({marks(values)}))",
                    [_window_start(ctx, w), *values])
        if f == "coupons_redeemed":
            from_hlc = 0
            if w is not None:
                start = datetime.combine(date.fromisoformat(_window_start(ctx, w)), time(),
                                         ZoneInfo(ctx.zone))
                from_hlc = pack(int(start.timestamp() * 1000), 0)
            sql, params = _number(
                "(SELECT count(*) FROM coupon_redemptions r JOIN coupons c ON c.coupon_code"
                f" = r.coupon_code WHERE c.member_id IN {_IDS} AND r.hlc >= ?)", leaf)
            return sql, _per_use(from_hlc, params)
        if f in ("points", "stored_value"):
            column = "s.points" if f == "points" else "s.sv_principal + s.sv_bonus"
            return _number(f"coalesce((SELECT sum({column}) FROM shares s"
                           " WHERE s.member_id = m.member_id), 0)", leaf)
        if f == "points_expiring":
            assert w is not None
            until = (ctx.today + timedelta(days=w - 1)).isoformat()
            sql, params = _number(
                "coalesce((SELECT sum(l.remaining) FROM point_lots l WHERE l.member_id IN"
                f" {_IDS} AND l.remaining > 0 AND l.expires_on >= ? AND l.expires_on <= ?),"
                " 0)", leaf)
            out: list[Any] = []
            for p in params:
                out += [ctx.today.isoformat(), until, p]
            return sql, out
        if f == "consent":
            return ("EXISTS (SELECT 1 FROM consents k WHERE k.member_id = m.member_id AND"
                    f" k.purpose = 'marketing' AND k.granted = 1 AND k.channel IN"
                    f" ({marks(values)}))", values)
        if f == "segment":
            unknown = sorted(set(values) - ctx.segments)
            if unknown:
                raise ConditionError(f"unknown segment {unknown[0]!r}")
            return (f"EXISTS (SELECT 1 FROM segment_members g WHERE g.member_id = m.member_id"
                    f" AND g.segment_id IN ({marks(values)}))", values)
        raise ConditionError(f"unknown field {f!r}")  # pragma: no cover - FieldName holds

    def _tags(self, leaf: Leaf) -> tuple[str, list[Any]]:
        wanted = list(leaf.any or leaf.all or [])
        unknown = sorted(t for t in wanted
                         if t not in self.ctx.known_tags and t not in self.ctx.rule_tags)
        if unknown:
            raise ConditionError(f"unknown tag {unknown[0]!r} (add it to the catalogue first)")
        groups = [wanted] if leaf.any is not None else [[t] for t in wanted]
        parts: list[str] = []
        params: list[Any] = []
        for tags in groups:
            sql, p = self._has_any(tags)
            parts.append(sql)
            params += p
        return "(" + " AND ".join(parts) + ")", params

    def _has_any(self, tags: list[str]) -> tuple[str, list[Any]]:
        """SQL: the member has one of ``tags``: set at a store, by HQ, or by a rule."""
        if self.ctx.dialect == "sqlite":
            store = "SELECT 1 FROM json_each(m.tags) j WHERE j.value IN ({})"
        else:
            store = ("SELECT 1 FROM jsonb_array_elements_text(m.tags::jsonb) j(value)"
                     " WHERE j.value IN ({})")
        parts = [f"EXISTS ({store.format(marks(tags))})",
                 f"EXISTS (SELECT 1 FROM hq_member_tags t WHERE t.member_id = m.member_id"
                 f" AND t.tag IN ({marks(tags)}))"]
        params: list[Any] = [*tags, *tags]
        rules = sorted({self.ctx.rule_tags[t] for t in tags if t in self.ctx.rule_tags})
        if rules:
            parts.append(f"EXISTS (SELECT 1 FROM segment_members g WHERE g.member_id"
                         f" = m.member_id AND g.segment_id IN ({marks(rules)}))")
            params += rules
        return "(" + " OR ".join(parts) + ")", params


def _holds_zero(leaf: Leaf) -> bool:
    """Whether 0 is within the leaf's bounds: a member without the row (no run score, no
    activity) counts as 0, so then the lookup needs its ``coalesce``; otherwise the row must
    exist, and ``EXISTS`` says the same and plans as a semi-join."""
    return (leaf.gte is None or leaf.gte <= 0) and (leaf.lte is None or leaf.lte >= 0)


def _per_use(first: Any, params: list[Any]) -> list[Any]:
    """Parameters of ``_number`` over an expression with a parameter of its own (``first``),
    which appears once per bound."""
    out: list[Any] = []
    for p in params:
        out += [first, p]
    return out


def compile_condition(cond: Condition, ctx: Context) -> tuple[str, list[Any]]:
    """``members m`` matches: live (not merged, not erased) and ``cond``."""
    sql, params = Compiler(ctx).compile(cond)
    return f"m.merged_into IS NULL AND m.erased = 0 AND {sql}", params

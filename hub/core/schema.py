"""The hub's tables, as numbered forward-only migrations valid on SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

from hub.core.db import Tx, ddl


class SqliteOnly(NamedTuple):
    """A migration statement for SQLite alone (a storage option PostgreSQL does not have)."""

    sql: str


class PostgresOnly(NamedTuple):
    """A migration statement for PostgreSQL alone (its spelling of what SQLite does apart)."""

    sql: str


def _keyed(table: str, columns: str) -> list[SqliteOnly | PostgresOnly]:
    """A new table clustered on its primary key on SQLite (``WITHOUT ROWID``: one B-tree, not
    a table and its key's index), a heap table on PostgreSQL."""
    return [SqliteOnly(f"CREATE TABLE {table} {columns} WITHOUT ROWID"),
            PostgresOnly(f"CREATE TABLE {table} {columns}")]


def _clustered(table: str, columns: str) -> list[SqliteOnly]:
    """``table`` rebuilt as a ``WITHOUT ROWID`` table of ``columns`` (the same columns, in
    the same order), its rows copied; its indexes go with the old table."""
    return [SqliteOnly(f"CREATE TABLE {table}_clustered {columns} WITHOUT ROWID"),
            SqliteOnly(f"INSERT INTO {table}_clustered SELECT * FROM {table}"),
            SqliteOnly(f"DROP TABLE {table}"),
            SqliteOnly(f"ALTER TABLE {table}_clustered RENAME TO {table}")]


# Row-level security (schema 13): what the membergate_hq role may read of a table, from the
# scope the read set (hub.core.db, ``row_scope``): "all"; "stores" (membergate.stores, comma
# separated); "regions" (membergate.regions: the stores of those regions); "guide"
# (membergate.guide); anything else, "none" included: nothing.
_SCOPE = "current_setting('membergate.scope', true)"
_STORES = "string_to_array(current_setting('membergate.stores', true), ',')"
_REGIONS = "string_to_array(current_setting('membergate.regions', true), ',')"
_SCOPE_STORES = (f"(SELECT store_id FROM stores WHERE ({_SCOPE} = 'stores' AND store_id ="
                 f" ANY({_STORES})) OR ({_SCOPE} = 'regions' AND region = ANY({_REGIONS})))")
_STORE_IN_SCOPE = f"{_SCOPE} = 'all' OR store_id IN {_SCOPE_STORES}"
_MEMBER_IN_SCOPE = (
    f"{_SCOPE} = 'all'"
    f" OR ({_SCOPE} IN ('stores', 'regions') AND (home_store IN {_SCOPE_STORES}"
    f" OR EXISTS (SELECT 1 FROM member_stores ms WHERE ms.member_id = members.member_id"
    f" AND ms.store_id IN {_SCOPE_STORES})))"
    f" OR ({_SCOPE} = 'guide' AND guide_id = current_setting('membergate.guide', true))")
# Schema 15: a region scope's stores are resolved when the scope is set (hub.core.db), into
# membergate.stores, so the policies compare with a list and no longer look stores up per row.
_LISTED = f"({_SCOPE} IN ('stores', 'regions') AND {{column}} = ANY({_STORES}))"
_STORE_LISTED = f"{_SCOPE} = 'all' OR " + _LISTED.format(column="store_id")
_MEMBER_LISTED = (
    f"{_SCOPE} = 'all' OR " + _LISTED.format(column="home_store")
    + f" OR ({_SCOPE} IN ('stores', 'regions') AND EXISTS (SELECT 1 FROM member_stores ms"
    f" WHERE ms.member_id = members.member_id AND ms.store_id = ANY({_STORES})))"
    f" OR ({_SCOPE} = 'guide' AND guide_id = current_setting('membergate.guide', true))")
# Read through members' own policy: a row of a member the scope does not see is not seen.
_OF_A_MEMBER_IN_SCOPE = f"{_SCOPE} = 'all' OR member_id IN (SELECT member_id FROM members)"
# Schema 22: the same policies with each setting read once per query, not once per row (the
# store list no longer parsed again for every row): a scalar subquery PostgreSQL evaluates
# once (an initplan) and compares every row with.
_ONCE_SCOPE = f"(SELECT {_SCOPE})"
_ONCE_STORES = f"CAST((SELECT {_STORES}) AS TEXT[])"
_ONCE_LISTED = f"({_ONCE_SCOPE} IN ('stores', 'regions') AND {{column}} = ANY({_ONCE_STORES}))"
_ONCE_STORE_LISTED = f"{_ONCE_SCOPE} = 'all' OR " + _ONCE_LISTED.format(column="store_id")
_ONCE_MEMBER_LISTED = (
    f"{_ONCE_SCOPE} = 'all' OR " + _ONCE_LISTED.format(column="home_store")
    + f" OR ({_ONCE_SCOPE} IN ('stores', 'regions') AND EXISTS (SELECT 1 FROM member_stores"
    f" ms WHERE ms.member_id = members.member_id AND ms.store_id = ANY({_ONCE_STORES})))"
    f" OR ({_ONCE_SCOPE} = 'guide' AND guide_id ="
    " (SELECT current_setting('membergate.guide', true)))")


# A flow is seen from both of its stores (schema 22).
_SV_FLOWS_VISIBLE = (f"{_ONCE_SCOPE} = 'all' OR " + _ONCE_LISTED.format(column="store_id")
                     + " OR " + _ONCE_LISTED.format(column="from_store"))
# Schema 23: a coupon is seen from the store that issued it and with its member (HQ's
# coupons: with their member only); a redemption or a conflict from the store it was made at,
# a redemption also with its coupon (through the coupons' own policy); an event from its
# store and with its member.
_SCHEMA_23 = {
    "coupons": f"{_ONCE_SCOPE} = 'all' OR " + _ONCE_LISTED.format(column="store_id")
               + " OR EXISTS (SELECT 1 FROM members b WHERE b.member_id = coupons.member_id)",
    "coupon_redemptions": f"{_ONCE_SCOPE} = 'all' OR " + _ONCE_LISTED.format(column="store_id")
                          + " OR EXISTS (SELECT 1 FROM coupons c"
                          " WHERE c.coupon_code = coupon_redemptions.coupon_code)",
    "coupon_conflicts": f"{_ONCE_SCOPE} = 'all' OR " + _ONCE_LISTED.format(column="store_id")
                        + " OR " + _ONCE_LISTED.format(column="kept_store"),
    "events": f"{_ONCE_SCOPE} = 'all' OR " + _ONCE_LISTED.format(column="store_id")
              + " OR EXISTS (SELECT 1 FROM members b WHERE b.member_id = events.member_id)",
}


def _planned(visible: str) -> str:
    """Schema 29: ``visible`` (HQ's scope ``all``, or what the rest of it says) as a CASE.
    The planner cannot know the scope when it plans (an initplan reads it): it took
    ``scope = 'all' OR (scope IN (...) AND store_id = ANY(list))`` to keep 0.7 % of the rows
    the query's own conditions leave, where a report's conditions leave only rows the scope
    sees. A CASE it takes to keep half. A store's member activity, planned for 440 rows
    where 70,000 came, sorted them by member instead of hashing: 120 ms instead of 80."""
    every = f"{_ONCE_SCOPE} = 'all'"
    if visible == every:
        return f"CASE WHEN {every} THEN true ELSE false END"
    if not visible.startswith(f"{every} OR "):
        raise ValueError(f"not a policy of the scope 'all' or more: {visible}")
    return f"CASE WHEN {every} THEN true ELSE {visible.removeprefix(every + ' OR ')} END"


def _once_of_a_member(table: str) -> str:
    """A member-keyed row is seen when its member is, through members' own policy: the
    member looked up by key (schema 13's ``member_id IN (SELECT member_id FROM members)`` read
    every member the scope sees, through that policy, for every query that touched a row)."""
    return (f"{_ONCE_SCOPE} = 'all' OR EXISTS (SELECT 1 FROM members b"
            f" WHERE b.member_id = {table}.member_id)")


# Every table under each policy (schemas 13 to 21), for schema 22 to replace.
_STORE_KEYED = ("member_stores", "sales_facts", "daily_rollups", "rollup_revisions",
                "store_days", "store_hours", "sku_days", "sku_months", "member_refund_days",
                "staff_days", "staff_months", "sv_days", "sv_topups", "points_days",
                "points_expiry", "member_store_days", "sale_refunds")
_MEMBER_KEYED = ("member_activity", "member_months", "cards", "shares", "grants", "consents",
                 "rfm_scores", "member_days", "point_lots", "hq_member_tags",
                 "segment_members", "member_lifecycle", "lifecycle_changes",
                 "journey_entries", "journey_actions", "outbox", "till_messages",
                 "tier_changes", "sv_holdings")


def _relisted(policies: tuple[tuple[str, str], ...]) -> list[str | SqliteOnly | PostgresOnly]:
    """The HQ policy of each table replaced by ``visible`` (PostgreSQL only)."""
    out: list[str | SqliteOnly | PostgresOnly] = []
    for table, visible in policies:
        out += [PostgresOnly(f"DROP POLICY hq_scope ON {table}"),
                PostgresOnly(f"CREATE POLICY hq_scope ON {table} AS RESTRICTIVE FOR SELECT"
                             f" TO membergate_hq USING ({visible})")]
    return out


def _scoped(table: str, visible: str) -> list[SqliteOnly | PostgresOnly]:
    return [PostgresOnly(f"ALTER TABLE {table} ENABLE ROW LEVEL SECURITY"),
            PostgresOnly(f"ALTER TABLE {table} FORCE ROW LEVEL SECURITY"),
            # Anyone may do what their grants allow (the writer: everything) ...
            PostgresOnly(f"CREATE POLICY everyone ON {table} AS PERMISSIVE FOR ALL"
                         " USING (true) WITH CHECK (true)"),
            # ... and HQ's reads only within their scope.
            PostgresOnly(f"CREATE POLICY hq_scope ON {table} AS RESTRICTIVE FOR SELECT"
                         f" TO membergate_hq USING ({visible})")]


# Schema 26's two earliest purchase days, as store-local day numbers (days since 1970-01-01:
# the funnel compares them with a registration day's number plus 7 or 90, where comparing
# dates meant formatting one for each of a year's 250,000 new members), filled from
# ``member_days`` (every purchase day under the member each id now is): the earliest day with
# a purchase, and the earliest by which two purchases were made. Also how
# ``hub.bench_reports`` and the tests fill them; ``day_number``: a dialect's day number of a
# text date.
def _purchase_days(day_number: Callable[[str], str]) -> str:
    first = ("(SELECT min(d.day) FROM member_days d"
             " WHERE d.member_id = member_activity.member_id AND d.purchases > 0)")
    second = ("(SELECT min(d.day) FROM member_days d"
              " WHERE d.member_id = member_activity.member_id AND d.purchases > 0"
              " AND (SELECT sum(e.purchases) FROM member_days e WHERE e.member_id = d.member_id"
              " AND e.day <= d.day) >= 2)")
    return (f"UPDATE member_activity SET purchase_day_1 = {day_number(first)},"
            f" purchase_day_2 = {day_number(second)}")


PURCHASE_DAYS_FROM_MEMBER_DAYS = {
    "sqlite": _purchase_days(lambda day: f"CAST(julianday({day}) - 2440587.5 AS INTEGER)"),
    "postgres": _purchase_days(lambda day: f"(CAST({day} AS DATE) - DATE '1970-01-01')"),
}


# Schema 27's store a coupon counts at (``hub.ledger.apply`` writes it with the coupon): the
# issuing store's own, or for the virtual streams (``hub.stores.registry.VIRTUAL_STORES``) the
# home store of its member (none without one). Also how ``hub.bench_reports`` fills it.
COUPONS_FOR_STORE = (
    "UPDATE coupons SET for_store = CASE WHEN store_id IN ('HQ', 'ONLINE') THEN"
    " (SELECT m.home_store FROM members m WHERE m.member_id = coupons.member_id)"
    " ELSE store_id END")


_STORE_MEMBERS = """(
    store_id TEXT NOT NULL, member_id TEXT NOT NULL, tier TEXT, home_store TEXT,
    registered_hlc BIGINT, stage TEXT, grp TEXT, PRIMARY KEY (store_id, member_id))"""


# Schema 28's row per store and member it counts (``hub.members.store_members`` keeps them):
# a live member at their home store and at each store they bought or brought something back
# at (``member_stores``), with what a store's member structure groups them by: tier, home
# store, registration, lifecycle stage and the latest RFM run's group. ``where``: a condition
# on ``member_id`` for the members to add (rows held already stay). Also how
# ``hub.bench_reports`` fills them.
def store_members_rows(where: str = "1 = 1") -> str:
    return (
        "INSERT INTO store_members(store_id, member_id, tier, home_store, registered_hlc,"
        " stage, grp) SELECT p.store_id, m.member_id, m.tier, m.home_store, m.registered_hlc,"
        " l.stage, r.grp FROM (SELECT member_id, home_store AS store_id FROM members"
        f" WHERE {where} AND home_store IS NOT NULL UNION SELECT member_id, store_id"
        f" FROM member_stores WHERE {where}) p JOIN members m ON m.member_id = p.member_id"
        " LEFT JOIN member_lifecycle l ON l.member_id = m.member_id"
        " LEFT JOIN rfm_scores r ON r.member_id = m.member_id AND r.run_id = (SELECT run_id"
        " FROM rfm_runs ORDER BY created_ms DESC, run_id DESC LIMIT 1)"
        " WHERE m.merged_into IS NULL ON CONFLICT(store_id, member_id) DO NOTHING")


MIGRATIONS: list[tuple[int, str, list[str | SqliteOnly | PostgresOnly]]] = [
    (1, "event log, ledgers, member directory, stores, campaigns", [
        # Every event applied, once: (store_id, epoch, seq) is the idempotency key, and this
        # log is what ``rebuild`` recomputes every balance from.
        """CREATE TABLE events (
            store_id TEXT NOT NULL, epoch BIGINT NOT NULL, seq BIGINT NOT NULL,
            event_id TEXT NOT NULL, hlc BIGINT NOT NULL, type TEXT NOT NULL,
            member_id TEXT, payload BLOB NOT NULL,
            PRIMARY KEY (store_id, epoch, seq))""",
        "CREATE INDEX events_member ON events(member_id)",
        # How far each store's stream is applied, per epoch (a re-provisioned box starts over).
        """CREATE TABLE store_streams (
            store_id TEXT NOT NULL, epoch BIGINT NOT NULL, acked_seq BIGINT NOT NULL,
            PRIMARY KEY (store_id, epoch))""",
        """CREATE TABLE stores (
            store_id TEXT PRIMARY KEY, region TEXT, last_seen_ms BIGINT NOT NULL DEFAULT 0,
            epoch BIGINT NOT NULL DEFAULT 0, status BLOB)""",
        """CREATE TABLE refusals (
            store_id TEXT NOT NULL, reason TEXT NOT NULL, count BIGINT NOT NULL,
            last_detail TEXT NOT NULL DEFAULT '',
            PRIMARY KEY (store_id, reason))""",
        # A member's balances are ledgers: each store's share is the sum of its deltas.
        """CREATE TABLE shares (
            member_id TEXT NOT NULL, store_id TEXT NOT NULL,
            points BIGINT NOT NULL DEFAULT 0, sv_principal BIGINT NOT NULL DEFAULT 0,
            sv_bonus BIGINT NOT NULL DEFAULT 0,
            PRIMARY KEY (member_id, store_id))""",
        # Profile fields merge last-writer-wins by (hlc, store_id); ``stamps`` holds, per field,
        # the stamp of the value kept. ``change_no`` orders the directory stores catch up from.
        """CREATE TABLE members (
            member_id TEXT PRIMARY KEY, member_code TEXT NOT NULL, phone TEXT,
            name TEXT NOT NULL DEFAULT '', birthday TEXT, tier TEXT NOT NULL DEFAULT 'standard',
            tags TEXT NOT NULL DEFAULT '[]', home_store TEXT NOT NULL,
            registered_hlc BIGINT NOT NULL, merged_into TEXT, stamps TEXT NOT NULL DEFAULT '{}',
            spend_total BIGINT NOT NULL DEFAULT 0, change_no BIGINT NOT NULL)""",
        "CREATE INDEX members_change ON members(change_no)",
        "CREATE INDEX members_phone ON members(phone)",
        "CREATE UNIQUE INDEX members_code ON members(member_code)",
        """CREATE TABLE cards (
            card_uid TEXT PRIMARY KEY, member_id TEXT NOT NULL)""",
        "CREATE INDEX cards_member ON cards(member_id)",
        # The first redemption of a coupon (by HLC) stands; later ones are conflicts for HQ.
        """CREATE TABLE coupon_redemptions (
            coupon_code TEXT PRIMARY KEY, store_id TEXT NOT NULL, sale_id TEXT NOT NULL,
            hlc BIGINT NOT NULL, amount BIGINT NOT NULL)""",
        """CREATE TABLE coupon_conflicts (
            coupon_code TEXT NOT NULL, store_id TEXT NOT NULL, sale_id TEXT NOT NULL,
            hlc BIGINT NOT NULL, amount BIGINT NOT NULL, kept_store TEXT NOT NULL,
            kept_sale TEXT NOT NULL, PRIMARY KEY (coupon_code, store_id, sale_id))""",
        """CREATE TABLE campaign_bundles (
            scope TEXT NOT NULL, scope_id TEXT NOT NULL, version BIGINT NOT NULL,
            manifest BLOB NOT NULL, PRIMARY KEY (scope, scope_id))""",
        "CREATE TABLE counters (name TEXT PRIMARY KEY, value BIGINT NOT NULL)",
    ]),
    (2, "online authorisation grants (escrow beyond the offline allowance)", [
        # What the hub authorised a store to spend for a member beyond its offline allowance,
        # and what that store's acknowledged spending has used since: the difference is held
        # back from every other store's authorisations.
        """CREATE TABLE grants (
            member_id TEXT NOT NULL, store_id TEXT NOT NULL,
            points_granted BIGINT NOT NULL DEFAULT 0, points_spent BIGINT NOT NULL DEFAULT 0,
            sv_granted BIGINT NOT NULL DEFAULT 0, sv_spent BIGINT NOT NULL DEFAULT 0,
            PRIMARY KEY (member_id, store_id))""",
    ]),
    (3, "spend per member and month, for tiers over a rolling window", [
        """CREATE TABLE spend_months (
            member_id TEXT NOT NULL, month TEXT NOT NULL, amount BIGINT NOT NULL,
            PRIMARY KEY (member_id, month))""",
    ]),
    (4, "the event log without its member index; no lifetime spend column", [
        # No query reads the log by member (rebuilds read it whole, in stream order), and
        # keeping the index cost every event a second B-tree insert at a random position.
        "DROP INDEX IF EXISTS events_member",
        # Nothing read it: tiers and reports use ``spend_months``, and keeping it current cost
        # a member-row update per spender per batch.
        "ALTER TABLE members DROP COLUMN spend_total",
    ]),
    (5, "the narrow member tables clustered on their keys (SQLite)", [
        # Every batch upserts a row per member in these: as rowid tables each write went to
        # the table and to its primary-key index, two B-trees; clustered on the key it is one.
        # Their rows are a few dozen bytes, where SQLite's WITHOUT ROWID works best.
        # PostgreSQL has no such option and keeps its heap tables.
        *_clustered("shares", """(
            member_id TEXT NOT NULL, store_id TEXT NOT NULL,
            points BIGINT NOT NULL DEFAULT 0, sv_principal BIGINT NOT NULL DEFAULT 0,
            sv_bonus BIGINT NOT NULL DEFAULT 0,
            PRIMARY KEY (member_id, store_id))"""),
        *_clustered("grants", """(
            member_id TEXT NOT NULL, store_id TEXT NOT NULL,
            points_granted BIGINT NOT NULL DEFAULT 0, points_spent BIGINT NOT NULL DEFAULT 0,
            sv_granted BIGINT NOT NULL DEFAULT 0, sv_spent BIGINT NOT NULL DEFAULT 0,
            PRIMARY KEY (member_id, store_id))"""),
        *_clustered("spend_months", """(
            member_id TEXT NOT NULL, month TEXT NOT NULL, amount BIGINT NOT NULL,
            PRIMARY KEY (member_id, month))"""),
        *_clustered("cards", "(card_uid TEXT PRIMARY KEY, member_id TEXT NOT NULL)"),
        SqliteOnly("CREATE INDEX cards_member ON cards(member_id)"),
        *_clustered("store_streams", """(
            store_id TEXT NOT NULL, epoch BIGINT NOT NULL, acked_seq BIGINT NOT NULL,
            PRIMARY KEY (store_id, epoch))"""),
        # A member's aliases: every directory page and member lookup asks for them, and
        # without an index that was a scan of every member. Merges are rare, so the index
        # holds only the merged rows and costs the other members' writes nothing.
        "CREATE INDEX members_merged ON members(merged_into) WHERE merged_into IS NOT NULL",
    ]),
    (6, "escrow books of merged ids moved onto the members they became", [
        # Merges now move them (``hub.ledger.apply.merge_member``); before, they stayed under the
        # old id and their outstanding escrow was held for the member for good, though the
        # stores' spending under the old id was counted against the member's own rows. Moved
        # whole, per store: outstanding = granted - spent adds up the same way afterwards.
        # (``merged_into`` always names the final member: merges repoint chains.)
        """INSERT INTO grants(member_id, store_id, points_granted, points_spent, sv_granted,
               sv_spent)
           SELECT m.merged_into, g.store_id, sum(g.points_granted), sum(g.points_spent),
               sum(g.sv_granted), sum(g.sv_spent)
           FROM grants g JOIN members m ON m.member_id = g.member_id
           WHERE m.merged_into IS NOT NULL
           GROUP BY m.merged_into, g.store_id
           ON CONFLICT(member_id, store_id) DO UPDATE SET
               points_granted = grants.points_granted + excluded.points_granted,
               points_spent = grants.points_spent + excluded.points_spent,
               sv_granted = grants.sv_granted + excluded.sv_granted,
               sv_spent = grants.sv_spent + excluded.sv_spent""",
        """DELETE FROM grants WHERE member_id IN (
               SELECT member_id FROM members WHERE merged_into IS NOT NULL)""",
    ]),
    (7, "a position for every logged event; projections of the log and their checkpoints", [
        # ``pos`` orders the log as it was committed: projections (``hub.core.projections``)
        # keep how far they have read as a position. It grows with each insert, and only one
        # write transaction runs at a time (``HubDatabase``'s single writer thread), so no
        # transaction can commit a position below one already visible: a reader that sees
        # position N has every row below N it will ever see. (With two writers a later commit
        # could take a lower number and a projection would step over it.)
        # SQLite: the rowid already grows in commit order (events are never deleted), but
        # VACUUM may renumber a rowid nobody named, so it becomes a named INTEGER PRIMARY KEY,
        # copied in its current order; the stream key stays unique beside it.
        SqliteOnly("""CREATE TABLE events_positioned (
            pos INTEGER PRIMARY KEY,
            store_id TEXT NOT NULL, epoch BIGINT NOT NULL, seq BIGINT NOT NULL,
            event_id TEXT NOT NULL, hlc BIGINT NOT NULL, type TEXT NOT NULL,
            member_id TEXT, payload BLOB NOT NULL,
            UNIQUE (store_id, epoch, seq))"""),
        SqliteOnly("""INSERT INTO events_positioned(pos, store_id, epoch, seq, event_id, hlc,
                          type, member_id, payload)
                      SELECT rowid, store_id, epoch, seq, event_id, hlc, type, member_id,
                          payload FROM events ORDER BY rowid"""),
        SqliteOnly("DROP TABLE events"),
        SqliteOnly("ALTER TABLE events_positioned RENAME TO events"),
        # PostgreSQL: an identity column (existing rows are numbered in their stored order).
        # Its numbers are taken at insert and may leave gaps (a rolled-back group, a duplicate
        # refused by ON CONFLICT): positions order the log, they do not count it.
        PostgresOnly("ALTER TABLE events ADD COLUMN pos BIGINT GENERATED ALWAYS AS IDENTITY"),
        PostgresOnly("CREATE UNIQUE INDEX events_pos ON events(pos)"),
        # Per projection: the position it has applied up to, and when it last reached the
        # head of the log (every event committed before then is in its rows).
        """CREATE TABLE projection_checkpoints (
            name TEXT PRIMARY KEY, pos BIGINT NOT NULL DEFAULT 0,
            synced_ms BIGINT NOT NULL DEFAULT 0)""",
        # hub.projections.sales: one row per sale, line, tender and discount, and per refund,
        # refund line and refund tender (signed: a refund's rows are negative and name the
        # sale's line), with the store-local date and hour. Clustered on the sale (or refund)
        # id; the position ends the key so that a sale id a store ever sent twice is kept
        # twice, as every other projection counts it, instead of stopping the projection.
        *_keyed("sales_facts", """(
            doc_id TEXT NOT NULL, kind TEXT NOT NULL, n BIGINT NOT NULL,
            sale_id TEXT NOT NULL, pos BIGINT NOT NULL, store_id TEXT NOT NULL, region TEXT,
            terminal_id TEXT NOT NULL, cashier_id TEXT, guide_id TEXT, member_id TEXT,
            hlc BIGINT NOT NULL, local_date TEXT NOT NULL, local_hour BIGINT NOT NULL,
            sku TEXT, category TEXT, code TEXT, ref TEXT,
            qty BIGINT NOT NULL, gross BIGINT NOT NULL, discount BIGINT NOT NULL,
            amount BIGINT NOT NULL, points BIGINT NOT NULL,
            PRIMARY KEY (doc_id, kind, n, pos))"""),
        # hub.projections.activity: per member (as the member now is, merges followed).
        *_keyed("member_activity", """(
            member_id TEXT NOT NULL PRIMARY KEY,
            first_hlc BIGINT, first_store TEXT, first_date TEXT,
            last_hlc BIGINT, last_store TEXT, last_date TEXT,
            purchases BIGINT NOT NULL, refunds BIGINT NOT NULL,
            spend BIGINT NOT NULL, items BIGINT NOT NULL)"""),
        *_keyed("member_months", """(
            member_id TEXT NOT NULL, month TEXT NOT NULL, category TEXT NOT NULL,
            spend BIGINT NOT NULL, items BIGINT NOT NULL,
            PRIMARY KEY (member_id, month, category))"""),
        *_keyed("member_stores", """(
            member_id TEXT NOT NULL, store_id TEXT NOT NULL,
            purchases BIGINT NOT NULL, spend BIGINT NOT NULL,
            last_hlc BIGINT, last_date TEXT,
            PRIMARY KEY (member_id, store_id))"""),
        # hub.projections.rollups: store x store-local day x category, what every report sums.
        *_keyed("daily_rollups", """(
            store_id TEXT NOT NULL, day TEXT NOT NULL, category TEXT NOT NULL, region TEXT,
            sales BIGINT NOT NULL, items BIGINT NOT NULL, gross BIGINT NOT NULL,
            discount BIGINT NOT NULL, amount BIGINT NOT NULL, member_amount BIGINT NOT NULL,
            refunds BIGINT NOT NULL, refund_items BIGINT NOT NULL,
            refund_amount BIGINT NOT NULL,
            PRIMARY KEY (store_id, day, category))"""),
    ]),
    (8, "HQ's own writes: idempotency keys of HQ requests; coupons and their state", [
        # An HQ request that changes the books is applied once: its key, what it asked (hash)
        # and the answer it got are committed in the transaction of its effect, so a retry
        # after a timeout or a hub crash gets the first answer instead of a second effect.
        """CREATE TABLE hq_requests (
            idem_key TEXT PRIMARY KEY, request_hash TEXT NOT NULL, status BIGINT NOT NULL,
            response TEXT NOT NULL, created_ms BIGINT NOT NULL)""",
        # Every coupon issued in a stream the hub applies (a store's or its own), and its
        # state as the merge leaves it: issued -> redeemed (the first redemption stands, a
        # reopen gives it back) or voided. The ones the hub issued itself travel to the stores
        # with their member's directory entry while they are open.
        """CREATE TABLE coupons (
            coupon_code TEXT PRIMARY KEY, store_id TEXT NOT NULL, member_id TEXT,
            campaign_id TEXT, kind TEXT NOT NULL, value BIGINT NOT NULL,
            min_spend BIGINT NOT NULL, categories TEXT NOT NULL DEFAULT '[]', expires_on TEXT,
            state TEXT NOT NULL, hlc BIGINT NOT NULL)""",
        "CREATE INDEX coupons_open ON coupons(member_id) WHERE state = 'issued'",
    ]),
    (9, "the store registry: name, time zone, issuing legal entity; spend months recounted", [
        # ``region`` was there and never written; a null zone or legal entity is the chain's
        # (``[hub] timezone`` / ``legal_entity``).
        "ALTER TABLE stores ADD COLUMN name TEXT NOT NULL DEFAULT ''",
        "ALTER TABLE stores ADD COLUMN timezone TEXT",
        "ALTER TABLE stores ADD COLUMN legal_entity TEXT",
        # Spend months were UTC months before: the hub recounts them from the log on the
        # stores' calendars when it next starts (``hub.members.tiers.recount_spend``, which
        # needs the configured zones, so the migration only asks for it).
        """INSERT INTO counters(name, value) VALUES ('spend_months_recount', 1)
           ON CONFLICT(name) DO UPDATE SET value = 1""",
    ]),
    (10, "who sold it: a member's shopping guide", [
        # Merged last-writer-wins like the other profile fields (hub.ledger.apply), carried in
        # the directory entry. A sale's cashier and guide stay in the log (sales facts read them).
        "ALTER TABLE members ADD COLUMN guide_id TEXT",
    ]),
    (11, "card states, payment PINs, the year of the birthday gift; bundle generations", [
        # A card's state merges last-writer-wins by (hlc, stream) like a profile field; the
        # stamp of a card bound before this is 0, so any later change wins over it.
        "ALTER TABLE cards ADD COLUMN state TEXT NOT NULL DEFAULT 'active'",
        "ALTER TABLE cards ADD COLUMN reason TEXT NOT NULL DEFAULT ''",
        "ALTER TABLE cards ADD COLUMN stamp_hlc BIGINT NOT NULL DEFAULT 0",
        "ALTER TABLE cards ADD COLUMN stamp_store TEXT NOT NULL DEFAULT ''",
        # The PIN's hash and lock merge as one value, stamped by its last change.
        "ALTER TABLE members ADD COLUMN pin_hash TEXT",
        "ALTER TABLE members ADD COLUMN pin_locked BIGINT NOT NULL DEFAULT 0",
        "ALTER TABLE members ADD COLUMN pin_hlc BIGINT NOT NULL DEFAULT 0",
        "ALTER TABLE members ADD COLUMN pin_store TEXT NOT NULL DEFAULT ''",
        "ALTER TABLE members ADD COLUMN birthday_gift_year BIGINT NOT NULL DEFAULT 0",
        # Bundles order by (generation, version): HQ's way past a version pushed too high.
        "ALTER TABLE campaign_bundles ADD COLUMN generation BIGINT NOT NULL DEFAULT 0",
    ]),
    (12, "HQ users, roles as data, API tokens (hashed), the personal-data audit log", [
        # A role says what its users may do (``permissions``), which members and stores they
        # see (``scope``: all, regions, stores, guide, none) and whether personal data is
        # masked for them. Rows, not code: the chain can add a role without a release.
        """CREATE TABLE roles (
            role TEXT PRIMARY KEY, permissions TEXT NOT NULL, scope TEXT NOT NULL,
            masked BIGINT NOT NULL)""",
        """INSERT INTO roles(role, permissions, scope, masked) VALUES
            ('hq_admin', '["*"]', 'all', 0),
            ('region_manager',
             '["members.read", "stores.read", "pii.reveal", "reports.read"]', 'regions', 1),
            ('store_manager',
             '["members.read", "stores.read", "pii.reveal", "reports.read"]', 'stores', 1),
            ('guide', '["members.read"]', 'guide', 1),
            ('auditor', '["auditlog.read"]', 'none', 1),
            ('marketing', '["members.read", "stores.read", "campaigns.push", "reports.read"]',
             'all', 1)""",
        """CREATE TABLE users (
            user_id TEXT PRIMARY KEY, username TEXT NOT NULL UNIQUE,
            display_name TEXT NOT NULL DEFAULT '', role TEXT NOT NULL REFERENCES roles(role),
            regions TEXT NOT NULL DEFAULT '[]', stores TEXT NOT NULL DEFAULT '[]',
            guide_id TEXT, password_hash TEXT, disabled BIGINT NOT NULL DEFAULT 0,
            failed_logins BIGINT NOT NULL DEFAULT 0, locked_until_ms BIGINT NOT NULL DEFAULT 0,
            created_ms BIGINT NOT NULL, updated_ms BIGINT NOT NULL)""",
        # Only a token's SHA-256 is kept: tokens are 256 random bits, beyond guessing, so a
        # fast hash is enough (unlike passwords, which get argon2id).
        """CREATE TABLE api_tokens (
            token_id TEXT PRIMARY KEY, user_id TEXT NOT NULL REFERENCES users(user_id),
            name TEXT NOT NULL, token_sha256 TEXT NOT NULL UNIQUE, created_ms BIGINT NOT NULL,
            expires_ms BIGINT, revoked_ms BIGINT, last_used_ms BIGINT)""",
        # Append-only: who saw, revealed or exported whose personal data, and every refused
        # attempt; nothing updates or deletes a row (kept at least 3 years).
        """CREATE TABLE audit_log (
            entry_id TEXT PRIMARY KEY, at_ms BIGINT NOT NULL, user_id TEXT,
            username TEXT NOT NULL, action TEXT NOT NULL, subject TEXT,
            fields TEXT NOT NULL DEFAULT '[]', reason TEXT NOT NULL DEFAULT '',
            remote TEXT, outcome TEXT NOT NULL)""",
        "CREATE INDEX audit_log_at ON audit_log(at_ms)",
        # Console sign-ins: the session cookie's and its CSRF token's SHA-256, never the values.
        """CREATE TABLE sessions (
            session_sha256 TEXT PRIMARY KEY, user_id TEXT NOT NULL REFERENCES users(user_id),
            csrf_sha256 TEXT NOT NULL, created_ms BIGINT NOT NULL, expires_ms BIGINT NOT NULL,
            ended_ms BIGINT, remote TEXT)""",
        # Consent per member, channel and purpose (HQ.md, principle 8), merged last-writer-wins
        # by (hlc, stream): with which text, where and when it was given or withdrawn.
        """CREATE TABLE consents (
            member_id TEXT NOT NULL, channel TEXT NOT NULL, purpose TEXT NOT NULL,
            granted BIGINT NOT NULL, text_version TEXT NOT NULL, store_id TEXT NOT NULL,
            hlc BIGINT NOT NULL, PRIMARY KEY (member_id, channel, purpose))""",
        # A member erased on request: the directory tells every store to forget them.
        "ALTER TABLE members ADD COLUMN erased BIGINT NOT NULL DEFAULT 0",
    ]),
    (13, "PostgreSQL row-level security: HQ's reads bound to the caller's scope", [
        # The second lock (HQ.md principle 6): HQ's reads run as membergate_hq, a role that
        # owns nothing and may only read; on every table of member or sales data a restrictive
        # policy binds it to the scope the read set with set_config(..., true) (hub.auth.access;
        # the hub's own reads set "all"). FORCE: the owner is bound by the policies too (the
        # permissive one lets the writer through; the restrictive one is for membergate_hq).
        # No function or view here: nothing can run with other rights.
        PostgresOnly("""DO $$ BEGIN
            IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'membergate_hq') THEN
                CREATE ROLE membergate_hq NOLOGIN;
            END IF;
        END $$"""),
        PostgresOnly("GRANT USAGE ON SCHEMA public TO membergate_hq"),
        PostgresOnly("GRANT SELECT ON ALL TABLES IN SCHEMA public TO membergate_hq"),
        PostgresOnly("ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT SELECT ON TABLES TO"
                     " membergate_hq"),
        *_scoped("members", _MEMBER_IN_SCOPE),
        *_scoped("member_stores", _STORE_IN_SCOPE),
        *_scoped("sales_facts", _STORE_IN_SCOPE),
        *_scoped("daily_rollups", _STORE_IN_SCOPE),
        *(sql for t in ("member_activity", "member_months", "cards", "shares", "grants",
                        "consents") for sql in _scoped(t, _OF_A_MEMBER_IN_SCOPE)),
    ]),
    (14, "bulk member exports and their approvals", [
        # An export is asked for, approved (by the size, or by a second person) and taken
        # once (hub.auth.bulk_export); the rows are made when it is taken.
        """CREATE TABLE export_requests (
            export_id TEXT PRIMARY KEY, user_id TEXT NOT NULL, username TEXT NOT NULL,
            store_id TEXT, rows_asked BIGINT NOT NULL, reason TEXT NOT NULL,
            state TEXT NOT NULL, created_ms BIGINT NOT NULL, masked BIGINT NOT NULL,
            decided_by TEXT, decided_ms BIGINT, decision_reason TEXT, downloaded_ms BIGINT)""",
        # Who may export members in bulk (their scope, masked as on screen); approving is
        # hq_admin's ("*"), or any role the chain gives "exports.approve".
        """UPDATE roles SET permissions = '["members.read", "stores.read", "pii.reveal",'
           || ' "reports.read", "members.export"]' WHERE role IN ('region_manager',
           'store_manager') AND permissions = '["members.read", "stores.read", "pii.reveal",'
           || ' "reports.read"]'""",
        """UPDATE roles SET permissions = '["members.read", "stores.read", "campaigns.push",'
           || ' "reports.read", "members.export"]' WHERE role = 'marketing' AND permissions
           = '["members.read", "stores.read", "campaigns.push", "reports.read"]'""",
    ]),
    (15, "row-level security compares with the scope's store list", _relisted((
        ("members", _MEMBER_LISTED), ("member_stores", _STORE_LISTED),
        ("sales_facts", _STORE_LISTED), ("daily_rollups", _STORE_LISTED)))),
    (16, "RFM runs, their members' scores, the chain's names for the RFM groups", [
        # hub.members.rfm: a run is kept whole, its parameters, cut values, group sizes and
        # movement from the previous run in ``summary``; every member's values and scores.
        """CREATE TABLE rfm_runs (
            run_id TEXT PRIMARY KEY, as_of TEXT NOT NULL, params TEXT NOT NULL,
            created_ms BIGINT NOT NULL, members BIGINT NOT NULL, previous_run TEXT,
            summary TEXT NOT NULL)""",
        *_keyed("rfm_scores", """(
            run_id TEXT NOT NULL, member_id TEXT NOT NULL, recency_days BIGINT,
            frequency BIGINT, monetary BIGINT, r BIGINT NOT NULL, f BIGINT NOT NULL,
            m BIGINT NOT NULL, grp TEXT NOT NULL, PRIMARY KEY (run_id, member_id))"""),
        "CREATE INDEX rfm_scores_member ON rfm_scores(member_id)",
        "CREATE TABLE rfm_group_names (grp TEXT PRIMARY KEY, name TEXT NOT NULL)",
        # The merged ids and the member each now is, written by a run for its own SQL.
        "CREATE TABLE rfm_aliases (alias TEXT PRIMARY KEY, member_id TEXT NOT NULL)",
        *_scoped("rfm_scores", _OF_A_MEMBER_IN_SCOPE),
        # Running RFM and naming its groups: HQ admins ("*") and marketing.
        """UPDATE roles SET permissions = '["members.read", "stores.read", "campaigns.push",'
           || ' "reports.read", "members.export", "rfm.run"]' WHERE role = 'marketing'
           AND permissions = '["members.read", "stores.read", "campaigns.push",'
           || ' "reports.read", "members.export"]'""",
    ]),
    (17, "tags, segments, lifecycle stages; spend per member and day; points lots", [
        # hub.projections.activity: per member (as the member now is) and store-local day,
        # purchases, spend and items net of refunds (a refund on its own day): what a
        # segment's "in the last N days" conditions sum, a range of one member's rows.
        *_keyed("member_days", """(
            member_id TEXT NOT NULL, day TEXT NOT NULL, purchases BIGINT NOT NULL,
            spend BIGINT NOT NULL, items BIGINT NOT NULL, PRIMARY KEY (member_id, day))"""),
        # hub.projections.lots: every points lot, what is left of it and when it expires
        # (sums of the earning, draws, expiry and returns, so any order of stores gives it).
        """CREATE TABLE point_lots (
            lot_id TEXT PRIMARY KEY, member_id TEXT, store_id TEXT, earned BIGINT NOT NULL,
            remaining BIGINT NOT NULL, expires_on TEXT)""",
        "CREATE INDEX point_lots_member ON point_lots(member_id)",
        # A member's sales and refunds (the 360 card's recent ones, favourite products): only
        # the rows with a member (a condition every "member_id IN (..)" implies, so SQLite
        # uses it).
        "CREATE INDEX sales_facts_member ON sales_facts(member_id, hlc)"
        " WHERE member_id IS NOT NULL",
        # hub.members.tags: the chain's catalogue of tags, in groups; HQ's tags on members
        # (a store's own tags stay in members.tags; a rule's are its segment's members).
        """CREATE TABLE tag_catalog (
            tag TEXT PRIMARY KEY, grp TEXT NOT NULL DEFAULT '', description TEXT NOT NULL
            DEFAULT '', created_by TEXT NOT NULL, created_ms BIGINT NOT NULL)""",
        *_keyed("hq_member_tags", """(
            member_id TEXT NOT NULL, tag TEXT NOT NULL, set_by TEXT NOT NULL,
            set_ms BIGINT NOT NULL, PRIMARY KEY (member_id, tag))"""),
        "CREATE INDEX hq_member_tags_tag ON hq_member_tags(tag)",
        # hub.members.segments: a segment's current definition and state; every version kept;
        # its members (materialised); every evaluation (when, version, count).
        """CREATE TABLE segments (
            segment_id TEXT PRIMARY KEY, name TEXT NOT NULL UNIQUE, definition TEXT NOT NULL,
            version BIGINT NOT NULL, state TEXT NOT NULL, for_tills BIGINT NOT NULL,
            tag TEXT UNIQUE, relative BIGINT NOT NULL, needs TEXT NOT NULL,
            members BIGINT NOT NULL DEFAULT 0, evaluated_ms BIGINT,
            due BIGINT NOT NULL DEFAULT 1, created_by TEXT NOT NULL,
            created_ms BIGINT NOT NULL, updated_ms BIGINT NOT NULL)""",
        """CREATE TABLE segment_versions (
            segment_id TEXT NOT NULL, version BIGINT NOT NULL, definition TEXT NOT NULL,
            created_by TEXT NOT NULL, created_ms BIGINT NOT NULL,
            PRIMARY KEY (segment_id, version))""",
        *_keyed("segment_members", """(
            segment_id TEXT NOT NULL, member_id TEXT NOT NULL, since_ms BIGINT NOT NULL,
            PRIMARY KEY (segment_id, member_id))"""),
        "CREATE INDEX segment_members_member ON segment_members(member_id)",
        """CREATE TABLE segment_evaluations (
            segment_id TEXT NOT NULL, version BIGINT NOT NULL, at_ms BIGINT NOT NULL,
            kind TEXT NOT NULL, members BIGINT NOT NULL, added BIGINT NOT NULL,
            removed BIGINT NOT NULL, took_ms BIGINT NOT NULL)""",
        "CREATE INDEX segment_evaluations_at ON segment_evaluations(segment_id, at_ms)",
        # Members whose segments must be looked at again for a reason the log does not show
        # (an HQ tag, a lifecycle stage): the next pass takes them.
        """CREATE TABLE segment_dirty (
            member_id TEXT PRIMARY KEY, at_ms BIGINT NOT NULL)""",
        # hub.members.lifecycle: each member's stage since when, and every change of stage.
        *_keyed("member_lifecycle", """(
            member_id TEXT NOT NULL PRIMARY KEY, stage TEXT NOT NULL, since TEXT NOT NULL)"""),
        "CREATE INDEX member_lifecycle_stage ON member_lifecycle(stage)",
        """CREATE TABLE lifecycle_changes (
            member_id TEXT NOT NULL, day TEXT NOT NULL, from_stage TEXT,
            to_stage TEXT NOT NULL, seq BIGINT NOT NULL,
            PRIMARY KEY (member_id, day, to_stage))""",
        "CREATE INDEX lifecycle_changes_day ON lifecycle_changes(day, to_stage)",
        *(sql for t in ("member_days", "point_lots", "hq_member_tags", "segment_members",
                        "member_lifecycle", "lifecycle_changes")
          for sql in _scoped(t, _OF_A_MEMBER_IN_SCOPE)),
        # Tags and segments: HQ admins ("*") and marketing.
        """UPDATE roles SET permissions = '["members.read", "stores.read", "campaigns.push",'
           || ' "reports.read", "members.export", "rfm.run", "segments.write"]'
           WHERE role = 'marketing' AND permissions = '["members.read", "stores.read",'
           || ' "campaigns.push", "reports.read", "members.export", "rfm.run"]'""",
        # The activity projection reads the log again to fill member_days.
        "DELETE FROM member_activity", "DELETE FROM member_months", "DELETE FROM member_stores",
        "DELETE FROM projection_checkpoints WHERE name = 'member_activity'",
    ]),
    (18, "journeys, their entries and actions, once each; the message outbox", [
        # hub.automation.journeys: a journey's current definition and state; every version.
        # ``cursor``: how far an event-driven journey has read its source (the log's ``pos``,
        # a lifecycle change's or a segment entry's ``seq``); it starts at the head when the
        # journey is made, so a journey acts on what happens from then on.
        """CREATE TABLE journeys (
            journey_id TEXT PRIMARY KEY, name TEXT NOT NULL UNIQUE, definition TEXT NOT NULL,
            version BIGINT NOT NULL, state TEXT NOT NULL, trigger TEXT NOT NULL,
            cursor BIGINT NOT NULL DEFAULT 0, scanned TEXT NOT NULL DEFAULT '',
            created_by TEXT NOT NULL, created_ms BIGINT NOT NULL, updated_ms BIGINT NOT NULL)""",
        """CREATE TABLE journey_versions (
            journey_id TEXT NOT NULL, version BIGINT NOT NULL, definition TEXT NOT NULL,
            created_by TEXT NOT NULL, created_ms BIGINT NOT NULL,
            PRIMARY KEY (journey_id, version))""",
        # One row per (journey, member, occasion): the key that makes a journey act once. Its
        # next step and when it is due; ``held_out`` members are recorded and get nothing.
        *_keyed("journey_entries", """(
            journey_id TEXT NOT NULL, member_id TEXT NOT NULL, occasion TEXT NOT NULL,
            version BIGINT NOT NULL, entered_ms BIGINT NOT NULL, held_out BIGINT NOT NULL,
            step BIGINT NOT NULL, due_ms BIGINT NOT NULL, state TEXT NOT NULL,
            context TEXT NOT NULL DEFAULT '{}',
            PRIMARY KEY (journey_id, member_id, occasion))"""),
        "CREATE INDEX journey_entries_due ON journey_entries(state, due_ms)",
        "CREATE INDEX journey_entries_member ON journey_entries(member_id)",
        # Each action taken, written in the transaction of its effect (a coupon's event, a
        # message in the outbox, a tag): an entry's step is never taken twice.
        *_keyed("journey_actions", """(
            journey_id TEXT NOT NULL, member_id TEXT NOT NULL, occasion TEXT NOT NULL,
            step BIGINT NOT NULL, kind TEXT NOT NULL, at_ms BIGINT NOT NULL,
            outcome TEXT NOT NULL, PRIMARY KEY (journey_id, member_id, occasion, step))"""),
        "CREATE INDEX journey_actions_member ON journey_actions(member_id)",
        "CREATE INDEX lifecycle_changes_seq ON lifecycle_changes(seq)",
        # The member's e-mail address (HQ's member.profile_changed v3): the e-mail channel's.
        "ALTER TABLE members ADD COLUMN email TEXT",
        # hub.members.tiers: every change of a member's tier, in order (a journey's trigger).
        """CREATE TABLE tier_changes (
            seq BIGINT PRIMARY KEY, member_id TEXT NOT NULL, from_tier TEXT NOT NULL,
            to_tier TEXT NOT NULL, direction TEXT NOT NULL, at_ms BIGINT NOT NULL)""",
        # Entries into the segments a journey waits on (``watched``), in order.
        "ALTER TABLE segments ADD COLUMN watched BIGINT NOT NULL DEFAULT 0",
        """CREATE TABLE segment_joins (
            seq BIGINT PRIMARY KEY, segment_id TEXT NOT NULL, member_id TEXT NOT NULL,
            at_ms BIGINT NOT NULL)""",
        # hub.notify.outbox: every message once (``key``), its state and attempts.
        """CREATE TABLE outbox (
            message_id TEXT PRIMARY KEY, key TEXT NOT NULL UNIQUE, member_id TEXT NOT NULL,
            channel TEXT NOT NULL, purpose TEXT NOT NULL, template TEXT NOT NULL,
            params TEXT NOT NULL, text TEXT NOT NULL, journey_id TEXT,
            state TEXT NOT NULL, reason TEXT NOT NULL DEFAULT '', attempts BIGINT NOT NULL
            DEFAULT 0, next_ms BIGINT NOT NULL, created_ms BIGINT NOT NULL, sent_ms BIGINT,
            done_ms BIGINT, provider_id TEXT, error TEXT NOT NULL DEFAULT '')""",
        "CREATE INDEX outbox_due ON outbox(channel, state, next_ms)",
        "CREATE INDEX outbox_member ON outbox(member_id, sent_ms)",
        "CREATE INDEX outbox_provider ON outbox(provider_id)",
        # hub.campaigns.bundles: when a campaign was first pushed (a bundle replaces the one
        # before it; the effect report's window starts here when the campaign names no start).
        """CREATE TABLE campaign_first_pushed (
            campaign_id TEXT PRIMARY KEY, issued_ms BIGINT NOT NULL)""",
        # hub.notify.channels.store: messages left for members at every till, in their
        # directory entries until a store reports one printed (``member.message_shown``).
        *_keyed("till_messages", """(
            member_id TEXT NOT NULL, key TEXT NOT NULL, text TEXT NOT NULL, coupon_code TEXT,
            created_ms BIGINT NOT NULL, PRIMARY KEY (member_id, key))"""),
        *(sql for t in ("journey_entries", "journey_actions", "outbox", "till_messages",
                        "tier_changes")
          for sql in _scoped(t, _OF_A_MEMBER_IN_SCOPE)),
        # Journeys: HQ admins ("*") and marketing.
        """UPDATE roles SET permissions = '["members.read", "stores.read", "campaigns.push",'
           || ' "reports.read", "members.export", "rfm.run", "segments.write",'
           || ' "journeys.write"]'
           WHERE role = 'marketing' AND permissions = '["members.read", "stores.read",'
           || ' "campaigns.push", "reports.read", "members.export", "rfm.run",'
           || ' "segments.write"]'""",
    ]),
    (19, "which store-days changed after they had closed (reports say so)", [
        # hub.projections.rollups: a store's day whose figures changed when its log merged
        # more than an hour after the day ended (a store that was offline): when, and by how
        # many events. Not part of the rollups' rebuild: it records when figures changed.
        """CREATE TABLE rollup_revisions (
            store_id TEXT NOT NULL, day TEXT NOT NULL, first_ms BIGINT NOT NULL,
            last_ms BIGINT NOT NULL, events BIGINT NOT NULL, PRIMARY KEY (store_id, day))""",
        *_scoped("rollup_revisions", _STORE_LISTED),
    ]),
    (20, "report rollups: sales per store hour, per sku, per staff member; guides' members", [
        # hub.projections.store_sales: per store and store-local day (and hour); a sale counts
        # once (daily_rollups counts it in each category): sale counts, baskets, profiles.
        *(sql for table, hour in (("store_days", ""), ("store_hours", "hour BIGINT NOT NULL,"))
          for sql in _keyed(table, f"""(
            store_id TEXT NOT NULL, day TEXT NOT NULL, {hour}
            sales BIGINT NOT NULL, items BIGINT NOT NULL, gross BIGINT NOT NULL,
            discount BIGINT NOT NULL, amount BIGINT NOT NULL, member_sales BIGINT NOT NULL,
            member_amount BIGINT NOT NULL, refunds BIGINT NOT NULL,
            refund_items BIGINT NOT NULL, refund_amount BIGINT NOT NULL,
            member_refunds BIGINT NOT NULL, member_refund_amount BIGINT NOT NULL,
            PRIMARY KEY (store_id, day{', hour' if hour else ''}))""")),
        # hub.projections.skus: per store, store-local day (month) and sku, sold and returned.
        *(sql for period in ("day", "month") for sql in _keyed(f"sku_{period}s", f"""(
            store_id TEXT NOT NULL, {period} TEXT NOT NULL, sku TEXT NOT NULL,
            category TEXT NOT NULL, qty BIGINT NOT NULL, amount BIGINT NOT NULL,
            refund_qty BIGINT NOT NULL, refund_amount BIGINT NOT NULL,
            PRIMARY KEY (store_id, {period}, sku, category))""")),
        # ... the same over every store (the chain's ranking; only the chain-wide scope reads it)
        *(sql for period in ("day", "month") for sql in _keyed(f"sku_chain_{period}s", f"""(
            {period} TEXT NOT NULL, sku TEXT NOT NULL, category TEXT NOT NULL,
            qty BIGINT NOT NULL, amount BIGINT NOT NULL, refund_qty BIGINT NOT NULL,
            refund_amount BIGINT NOT NULL, PRIMARY KEY ({period}, sku, category))""")),
        *(sql for t in ("sku_chain_days", "sku_chain_months")
          for sql in _scoped(t, f"{_SCOPE} = 'all'")),
        # ... and what members brought back per category (members' net by category).
        *_keyed("member_refund_days", """(
            store_id TEXT NOT NULL, day TEXT NOT NULL, category TEXT NOT NULL,
            refund_items BIGINT NOT NULL, refund_amount BIGINT NOT NULL,
            PRIMARY KEY (store_id, day, category))"""),
        # hub.projections.staff: per store, day (month), role (cashier, guide) and staff member.
        *(sql for period in ("day", "month") for sql in _keyed(f"staff_{period}s", f"""(
            store_id TEXT NOT NULL, {period} TEXT NOT NULL, role TEXT NOT NULL,
            staff_id TEXT NOT NULL, sales BIGINT NOT NULL, amount BIGINT NOT NULL,
            member_sales BIGINT NOT NULL, member_amount BIGINT NOT NULL,
            refunds BIGINT NOT NULL, refund_amount BIGINT NOT NULL,
            member_refunds BIGINT NOT NULL, member_refund_amount BIGINT NOT NULL,
            PRIMARY KEY (store_id, {period}, role, staff_id))""")),
        *(sql for t in ("store_days", "store_hours", "sku_days", "sku_months",
                        "member_refund_days", "staff_days", "staff_months")
          for sql in _scoped(t, _STORE_LISTED)),
        # hub.reports.staff: the members each guide looks after, registered at a store in a
        # period (a range of one store's rows; the index alone answers the count).
        "CREATE INDEX members_guided ON members(home_store, registered_hlc, guide_id,"
        " merged_into) WHERE guide_id IS NOT NULL AND merged_into IS NULL",
    ]),
    (21, "stored value and points by store and day; members' purchases by store and day", [
        # hub.projections.stored_value: per store and store-local day, stored value topped
        # up, spent and refunded there, and ``held``: the change in what the store holds of
        # members' balances once each spend is traced to the store whose deposit it used.
        *_keyed("sv_days", """(
            store_id TEXT NOT NULL, day TEXT NOT NULL, region TEXT, topups BIGINT NOT NULL,
            topped_up_principal BIGINT NOT NULL, topped_up_bonus BIGINT NOT NULL,
            spent_principal BIGINT NOT NULL, spent_bonus BIGINT NOT NULL,
            refunded_principal BIGINT NOT NULL, refunded_bonus BIGINT NOT NULL,
            held_principal BIGINT NOT NULL, held_bonus BIGINT NOT NULL,
            PRIMARY KEY (store_id, day))"""),
        # Stored value spent at ``store_id`` out of deposits ``from_store`` held: what the one
        # is owed by the other (inter-store settlement), on the day of the event that traced it.
        *_keyed("sv_flows", """(
            store_id TEXT NOT NULL, day TEXT NOT NULL, from_store TEXT NOT NULL,
            principal BIGINT NOT NULL, bonus BIGINT NOT NULL,
            PRIMARY KEY (store_id, day, from_store))"""),
        "CREATE INDEX sv_flows_from ON sv_flows(from_store, day)",
        # Per member (as the member now is) and store: the part of the member's balance that
        # store holds (the projection's state; negative: spent before its top-up merged).
        *_keyed("sv_holdings", """(
            member_id TEXT NOT NULL, store_id TEXT NOT NULL, principal BIGINT NOT NULL,
            bonus BIGINT NOT NULL, PRIMARY KEY (member_id, store_id))"""),
        # Top-ups per store, day and member (the id the store wrote): loyalty rankings.
        *_keyed("sv_topups", """(
            store_id TEXT NOT NULL, day TEXT NOT NULL, member_id TEXT NOT NULL,
            topups BIGINT NOT NULL, principal BIGINT NOT NULL, bonus BIGINT NOT NULL,
            PRIMARY KEY (store_id, day, member_id))"""),
        # hub.projections.points_days: points earned, redeemed, given back to their lots by
        # refunds, expired and otherwise adjusted, per store and store-local day.
        *_keyed("points_days", """(
            store_id TEXT NOT NULL, day TEXT NOT NULL, region TEXT, earned BIGINT NOT NULL,
            redeemed BIGINT NOT NULL, returned BIGINT NOT NULL, expired BIGINT NOT NULL,
            adjusted BIGINT NOT NULL, PRIMARY KEY (store_id, day))"""),
        # ... and what is left of the points lots, by the store that issued them and the month
        # they expire ('never'; '' and '': lots drawn on before their earning merged).
        *_keyed("points_expiry", """(
            store_id TEXT NOT NULL, month TEXT NOT NULL, points BIGINT NOT NULL,
            PRIMARY KEY (store_id, month))"""),
        # hub.projections.visits: per member (as the member now is), store-local day and
        # store, purchases, those not fully refunded (``kept``) and spend net of refunds. The
        # chain's active members stream through the key in member order; a store's are a
        # range of the covering index (the rows again, in store and day order).
        *_keyed("member_store_days", """(
            member_id TEXT NOT NULL, day TEXT NOT NULL, store_id TEXT NOT NULL,
            purchases BIGINT NOT NULL, kept BIGINT NOT NULL, spend BIGINT NOT NULL,
            PRIMARY KEY (member_id, day, store_id))"""),
        "CREATE INDEX member_store_days_store ON member_store_days(store_id, day, member_id,"
        " purchases, kept, spend)",
        # What has been refunded of each sale with a refund (a sale stops being ``kept`` when
        # its refunds reach its total); ``store_id``: the store of its last refund.
        *_keyed("sale_refunds", """(
            sale_id TEXT NOT NULL PRIMARY KEY, store_id TEXT NOT NULL,
            refunded BIGINT NOT NULL)"""),
        *(sql for t in ("sv_days", "sv_topups", "points_days", "points_expiry",
                        "member_store_days", "sale_refunds")
          for sql in _scoped(t, _STORE_LISTED)),
        # A flow is seen from both of its stores.
        *_scoped("sv_flows", f"{_SCOPE} = 'all' OR " + _LISTED.format(column="store_id")
                 + " OR " + _LISTED.format(column="from_store")),
        *_scoped("sv_holdings", _OF_A_MEMBER_IN_SCOPE),
    ]),
    (22, "member reports by index; row-level security reads its settings once per query", [
        # A store's members (the scope's rule: registered there or bought there) are a range
        # of two indexes, not a pass over every member: the stores each member bought at ...
        "CREATE INDEX member_stores_store ON member_stores(store_id, member_id)",
        # ... and the members registered at each store, in registration order (funnel
        # cohorts, new members); the chain's cohorts are a range of registrations. Both
        # carry what a cohort reads of the member, so the index alone answers.
        "CREATE INDEX members_home ON members(home_store, registered_hlc, merged_into,"
        " member_id)",
        "CREATE INDEX members_registered ON members(registered_hlc, home_store, merged_into,"
        " member_id)",
        # The merged ids and whom they now are, the index alone (so that SQLite, which keeps
        # no statistics, reads them there rather than scanning the covering indexes above).
        "CREATE INDEX members_aliases ON members(merged_into, member_id)"
        " WHERE merged_into IS NOT NULL",
        # hub.reports.campaigns: the period's discount and coupon-tender rows (those naming a
        # promotion or coupon), a range of a store's days or of the chain's, not every line
        # and tender of the period's sales.
        "CREATE INDEX sales_facts_discounts ON sales_facts(store_id, local_date, kind, code,"
        " ref, doc_id, pos, amount) WHERE ref IS NOT NULL",
        "CREATE INDEX sales_facts_discount_days ON sales_facts(local_date, kind, code, ref,"
        " store_id, doc_id, pos, amount) WHERE ref IS NOT NULL",
        # ... and the coupons issued and redeemed in the period: a range of their HLCs.
        "CREATE INDEX coupons_issued ON coupons(hlc, store_id, member_id, campaign_id)",
        "CREATE INDEX coupons_store ON coupons(store_id, hlc, member_id, campaign_id)",
        "CREATE INDEX coupon_redemptions_hlc ON coupon_redemptions(hlc, store_id,"
        " coupon_code)",
        *_relisted((("members", _ONCE_MEMBER_LISTED),
                    *((t, _ONCE_STORE_LISTED) for t in _STORE_KEYED),
                    *((t, _once_of_a_member(t)) for t in _MEMBER_KEYED),
                    *((t, f"{_ONCE_SCOPE} = 'all'") for t in ("sku_chain_days",
                                                              "sku_chain_months")),
                    ("sv_flows", _SV_FLOWS_VISIBLE))),
    ]),
    (23, "row-level security on the coupons, the event log and the last member-keyed tables", [
        # What each is seen from: ``_SCHEMA_23``. The log holds every member's name, phone
        # and birthday as the stores sent them.
        *(sql for t, visible in _SCHEMA_23.items() for sql in _scoped(t, visible)),
        *_scoped("spend_months", _once_of_a_member("spend_months")),
        *_scoped("segment_joins", _once_of_a_member("segment_joins")),
    ]),
    (24, "each member's RFM scores keep the previous run's beside them", [
        # hub.members.rfm: a run writes where each member was in the run before (0 and no
        # group: not in it), so its movement and the members whose group changed are a pass
        # over its own rows, not three joins with the run before; and a member's history is
        # read run by run by key, so the member index (1M entries more a run) goes.
        "ALTER TABLE rfm_scores ADD COLUMN was_r BIGINT NOT NULL DEFAULT 0",
        "ALTER TABLE rfm_scores ADD COLUMN was_f BIGINT NOT NULL DEFAULT 0",
        "ALTER TABLE rfm_scores ADD COLUMN was_m BIGINT NOT NULL DEFAULT 0",
        "ALTER TABLE rfm_scores ADD COLUMN was_grp TEXT",
        "DROP INDEX rfm_scores_member",
    ]),
    (25, "a member's gender (HQ's member.profile_changed v4), for segments", [
        "ALTER TABLE members ADD COLUMN gender TEXT",
    ]),
    (26, "each member's two earliest purchase days, for the registration funnel", [
        # hub.projections.activity: the funnel's "a second purchase within 90 days" is the
        # second earliest purchase day (two on one day: that day twice), one column read
        # by key instead of a range of the member's days (each checked by row-level security).
        "ALTER TABLE member_activity ADD COLUMN purchase_day_1 BIGINT",
        "ALTER TABLE member_activity ADD COLUMN purchase_day_2 BIGINT",
        SqliteOnly(PURCHASE_DAYS_FROM_MEMBER_DAYS["sqlite"]),
        PostgresOnly(PURCHASE_DAYS_FROM_MEMBER_DAYS["postgres"]),
    ]),
    (27, "each coupon's store in the reports (HQ's and the online channel's: its member's)", [
        # hub.reports.campaigns: a store's coupons issued are a range of one index, where HQ's
        # were every HQ coupon of the period, each joined to its member (and on PostgreSQL
        # each checked by row-level security) to find the few for the store's members.
        "ALTER TABLE coupons ADD COLUMN for_store TEXT",
        COUPONS_FOR_STORE,
        "CREATE INDEX coupons_for_store ON coupons(for_store, hlc, campaign_id, store_id)",
        "DROP INDEX coupons_store",  # schema 22's, read by that report alone
    ]),
    (28, "each store's members with their tier, stage and RFM group, for member structure", [
        # hub.reports.members: a store's member structure counts one range of this table. It
        # looked each of the store's members up in members, member_lifecycle and rfm_scores
        # (on PostgreSQL each lookup through the member's policy again): 1.3 s at 1M members.
        SqliteOnly(f"CREATE TABLE store_members {_STORE_MEMBERS} WITHOUT ROWID"),
        # Room on each page for a row's new version (an RFM run sets a quarter of the groups
        # or more): an update then writes no index entry. A run's 275,000 of 1M took 1.7 s
        # instead of 4.1.
        PostgresOnly(f"CREATE TABLE store_members {_STORE_MEMBERS} WITH (fillfactor = 70)"),
        "CREATE INDEX store_members_member ON store_members(member_id)",
        *_scoped("store_members", _ONCE_STORE_LISTED),
        store_members_rows(),
    ]),
    (29, "row-level security policies the planner counts as keeping half the rows, not 0.7 %",
     # ``_planned``. The member-keyed tables' ``scope = 'all' OR EXISTS (their member)`` it
     # already counts as half: they stay.
     _relisted((("members", _planned(_ONCE_MEMBER_LISTED)),
                *((t, _planned(_ONCE_STORE_LISTED)) for t in (*_STORE_KEYED, "store_members")),
                *((t, _planned(f"{_ONCE_SCOPE} = 'all'")) for t in ("sku_chain_days",
                                                                   "sku_chain_months")),
                ("sv_flows", _planned(_SV_FLOWS_VISIBLE)),
                *((t, _planned(visible)) for t, visible in _SCHEMA_23.items())))),
    (30, "a member's coupons by key, for the member card", [
        # hub.reports.member360 lists a member's coupons, every state, newest first: only the
        # issued ones had an index (the tills'), so a card read the whole table (~35 ms of a
        # card at 300,000 coupons on SQLite, and growing with every campaign).
        "CREATE INDEX coupons_member ON coupons(member_id, hlc)",
    ]),
]
LATEST = MIGRATIONS[-1][0]


def migrate(tx: Tx, target: int = LATEST) -> int:
    """Bring the schema to ``target`` (the latest by default; tests start older ones)."""
    tx.execute("CREATE TABLE IF NOT EXISTS schema_version (version BIGINT NOT NULL)")
    current = tx.scalar("SELECT max(version) FROM schema_version", default=0)
    if current > LATEST:
        raise RuntimeError(f"hub database schema {current} is newer than this build ({LATEST})")
    for version, _title, statements in MIGRATIONS:
        if current < version <= target:
            for sql in statements:
                if isinstance(sql, SqliteOnly | PostgresOnly):
                    if (tx.dialect == "sqlite") != isinstance(sql, SqliteOnly):
                        continue
                    sql = sql.sql
                tx.execute(ddl(sql, tx.dialect))
            tx.execute("INSERT INTO schema_version(version) VALUES (?)", (version,))
            current = version
    return int(current)


def next_counter(tx: Tx, name: str, by: int = 1) -> int:
    """Take ``by`` numbers from counter ``name``; returns the last one taken."""
    row = tx.one(
        "INSERT INTO counters(name, value) VALUES (?, ?) ON CONFLICT(name) DO UPDATE"
        " SET value = counters.value + excluded.value RETURNING value", (name, by))
    return int(row[0])


def counter(tx: Tx, name: str) -> int:
    return int(tx.scalar("SELECT value FROM counters WHERE name = ?", (name,), default=0))

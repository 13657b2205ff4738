"""The edge store's schema as numbered, forward-only migrations.

A migration is never edited once released: a change is a new entry at the end. ``PRAGMA
user_version`` records how far a database has come; ``edge.db.migrate`` applies the rest, each in
its own transaction.
"""

from __future__ import annotations

MIGRATIONS: list[tuple[int, str, str]] = [
    (
        1,
        "members, cards, ledgers, sales, coupons, campaigns, outbox",
        """
        CREATE TABLE meta (
            key   TEXT PRIMARY KEY,
            value TEXT NOT NULL
        ) WITHOUT ROWID;

        CREATE TABLE members (
            member_id      TEXT PRIMARY KEY,
            member_code    TEXT NOT NULL UNIQUE,
            phone          TEXT UNIQUE,              -- E.164, normalised before it gets here
            name           TEXT NOT NULL DEFAULT '',
            birthday       TEXT,                     -- ISO date
            tier           TEXT NOT NULL DEFAULT 'standard',
            tags           TEXT NOT NULL DEFAULT '[]', -- JSON array
            points_balance INTEGER NOT NULL DEFAULT 0 CHECK (points_balance >= 0),
            points_debt    INTEGER NOT NULL DEFAULT 0 CHECK (points_debt >= 0),
            sv_principal   INTEGER NOT NULL DEFAULT 0 CHECK (sv_principal >= 0),
            sv_bonus       INTEGER NOT NULL DEFAULT 0 CHECK (sv_bonus >= 0),
            home_store     TEXT NOT NULL,
            created_hlc    INTEGER NOT NULL,
            updated_hlc    INTEGER NOT NULL,
            spend_total    INTEGER NOT NULL DEFAULT 0,
            visits         INTEGER NOT NULL DEFAULT 0,
            last_visit     TEXT,
            birthday_gift_year INTEGER
        );

        CREATE TABLE cards (
            card_uid  TEXT PRIMARY KEY,
            member_id TEXT NOT NULL REFERENCES members(member_id),
            bound_hlc INTEGER NOT NULL
        ) WITHOUT ROWID;
        CREATE INDEX cards_member ON cards(member_id);

        -- Points as lots: each earning is a lot that expires on its own date; redemption draws
        -- from the soonest-expiring lot first.
        CREATE TABLE point_lots (
            lot_id     TEXT PRIMARY KEY,
            member_id  TEXT NOT NULL REFERENCES members(member_id),
            earned_on  TEXT NOT NULL,
            expires_on TEXT,                          -- NULL: never expires
            points     INTEGER NOT NULL CHECK (points > 0),
            remaining  INTEGER NOT NULL CHECK (remaining >= 0 AND remaining <= points),
            reason     TEXT NOT NULL,
            sale_id    TEXT
        );
        CREATE INDEX point_lots_open ON point_lots(member_id, expires_on) WHERE remaining > 0;
        CREATE INDEX point_lots_expiry ON point_lots(expires_on) WHERE remaining > 0;

        -- Append-only ledgers of signed deltas; the balance columns above are their running sums.
        CREATE TABLE points_ledger (
            entry_id  INTEGER PRIMARY KEY,
            member_id TEXT NOT NULL,
            delta     INTEGER NOT NULL,
            reason    TEXT NOT NULL,
            lot_id    TEXT,
            ref_id    TEXT,
            hlc       INTEGER NOT NULL
        );
        CREATE INDEX points_ledger_member ON points_ledger(member_id);

        CREATE TABLE sv_ledger (
            entry_id        INTEGER PRIMARY KEY,
            member_id       TEXT NOT NULL,
            principal_delta INTEGER NOT NULL,
            bonus_delta     INTEGER NOT NULL,
            reason          TEXT NOT NULL,
            ref_id          TEXT NOT NULL,
            hlc             INTEGER NOT NULL
        );
        CREATE INDEX sv_ledger_member ON sv_ledger(member_id);

        CREATE TABLE coupons (
            coupon_code TEXT PRIMARY KEY,
            member_id   TEXT,
            campaign_id TEXT,
            kind        TEXT NOT NULL CHECK (kind IN ('amount_off', 'percent_off')),
            value       INTEGER NOT NULL CHECK (value >= 0),
            min_spend   INTEGER NOT NULL DEFAULT 0,
            categories  TEXT NOT NULL DEFAULT '[]',
            expires_on  TEXT,
            state       TEXT NOT NULL CHECK (state IN ('issued', 'redeemed', 'voided')),
            sale_id     TEXT,
            updated_hlc INTEGER NOT NULL
        ) WITHOUT ROWID;
        CREATE INDEX coupons_member ON coupons(member_id);

        CREATE TABLE campaign_bundles (
            scope      TEXT NOT NULL,
            scope_id   TEXT NOT NULL DEFAULT '',
            version    INTEGER NOT NULL,
            bundle     TEXT NOT NULL,                -- JSON of protocol.campaigns.CampaignBundle
            applied_at TEXT NOT NULL,
            PRIMARY KEY (scope, scope_id)
        ) WITHOUT ROWID;

        CREATE TABLE sales (
            sale_id        TEXT PRIMARY KEY,
            terminal_id    TEXT NOT NULL,
            member_id      TEXT,
            currency       TEXT NOT NULL,
            subtotal       INTEGER NOT NULL,
            discount_total INTEGER NOT NULL,
            total          INTEGER NOT NULL,
            points_earned  INTEGER NOT NULL,
            earned_lot_id  TEXT,
            refunded_total INTEGER NOT NULL DEFAULT 0,
            finalized_at   TEXT NOT NULL,
            hlc            INTEGER NOT NULL,
            discounts      TEXT NOT NULL DEFAULT '[]' -- JSON of the applied discounts
        );
        CREATE INDEX sales_member ON sales(member_id);

        CREATE TABLE sale_lines (
            sale_id         TEXT NOT NULL REFERENCES sales(sale_id),
            line_no         INTEGER NOT NULL,
            sku             TEXT NOT NULL,
            name            TEXT NOT NULL,
            category        TEXT NOT NULL,
            qty             INTEGER NOT NULL CHECK (qty > 0),
            unit_price      INTEGER NOT NULL CHECK (unit_price >= 0),
            gross           INTEGER NOT NULL,
            discount        INTEGER NOT NULL,
            net             INTEGER NOT NULL,
            points          INTEGER NOT NULL,
            refunded_qty    INTEGER NOT NULL DEFAULT 0 CHECK (refunded_qty <= qty),
            refunded_amount INTEGER NOT NULL DEFAULT 0 CHECK (refunded_amount <= net),
            points_reversed INTEGER NOT NULL DEFAULT 0 CHECK (points_reversed <= points),
            PRIMARY KEY (sale_id, line_no)
        ) WITHOUT ROWID;

        CREATE TABLE sale_tenders (
            sale_id            TEXT NOT NULL REFERENCES sales(sale_id),
            tender_no          INTEGER NOT NULL,
            kind               TEXT NOT NULL,
            amount             INTEGER NOT NULL CHECK (amount >= 0),
            points             INTEGER NOT NULL DEFAULT 0,
            sv_principal       INTEGER NOT NULL DEFAULT 0,
            sv_bonus           INTEGER NOT NULL DEFAULT 0,
            reference          TEXT,
            refunded_amount    INTEGER NOT NULL DEFAULT 0 CHECK (refunded_amount <= amount),
            refunded_points    INTEGER NOT NULL DEFAULT 0 CHECK (refunded_points <= points),
            refunded_principal INTEGER NOT NULL DEFAULT 0
                CHECK (refunded_principal <= sv_principal),
            refunded_bonus     INTEGER NOT NULL DEFAULT 0 CHECK (refunded_bonus <= sv_bonus),
            PRIMARY KEY (sale_id, tender_no)
        ) WITHOUT ROWID;

        -- Which lots a sale's redeemed points came from, so a refund gives them back there.
        CREATE TABLE redemption_draws (
            sale_id  TEXT NOT NULL,
            lot_id   TEXT NOT NULL,
            points   INTEGER NOT NULL CHECK (points > 0),
            returned INTEGER NOT NULL DEFAULT 0 CHECK (returned <= points),
            PRIMARY KEY (sale_id, lot_id)
        ) WITHOUT ROWID;

        CREATE TABLE sale_coupons (
            sale_id     TEXT NOT NULL,
            coupon_code TEXT NOT NULL,
            amount      INTEGER NOT NULL,
            PRIMARY KEY (sale_id, coupon_code)
        ) WITHOUT ROWID;

        CREATE TABLE refunds (
            refund_id   TEXT PRIMARY KEY,
            sale_id     TEXT NOT NULL REFERENCES sales(sale_id),
            terminal_id TEXT NOT NULL,
            amount      INTEGER NOT NULL,
            created_at  TEXT NOT NULL,
            hlc         INTEGER NOT NULL,
            result      TEXT NOT NULL               -- JSON of what the refund did
        );
        CREATE INDEX refunds_sale ON refunds(sale_id);

        CREATE TABLE topups (
            topup_id    TEXT PRIMARY KEY,
            member_id   TEXT NOT NULL,
            terminal_id TEXT NOT NULL,
            principal   INTEGER NOT NULL,
            bonus       INTEGER NOT NULL,
            campaign_id TEXT,
            paid_by     TEXT NOT NULL,
            created_at  TEXT NOT NULL
        );

        -- The uplink queue. ``seq`` is gap-free per epoch: taken from meta in the same
        -- transaction as the change it records, and pruned only after the hub acknowledges it.
        CREATE TABLE outbox (
            epoch    INTEGER NOT NULL,
            seq      INTEGER NOT NULL,
            event_id TEXT NOT NULL UNIQUE,
            hlc      INTEGER NOT NULL,
            type     TEXT NOT NULL,
            payload  BLOB NOT NULL,                -- msgpack of protocol.events.Event
            PRIMARY KEY (epoch, seq)
        ) WITHOUT ROWID;
        """,
    ),
    (
        2,
        "offline allowances and durable idempotency keys",
        """
        -- Escrow for offline spending: what this store may still let the member spend before
        -- the hub (or online authorisation) says more.
        CREATE TABLE allowances (
            member_id     TEXT PRIMARY KEY,
            points_limit  INTEGER NOT NULL CHECK (points_limit >= 0),
            points_used   INTEGER NOT NULL DEFAULT 0 CHECK (points_used >= 0),
            sv_limit      INTEGER NOT NULL CHECK (sv_limit >= 0),
            sv_used       INTEGER NOT NULL DEFAULT 0 CHECK (sv_used >= 0),
            granted_by    TEXT NOT NULL DEFAULT 'config'
        ) WITHOUT ROWID;

        -- A POS retry of a mutating call gets the first answer: the key and the answer are
        -- committed in the same transaction as the change.
        CREATE TABLE idempotency (
            idem_key     TEXT PRIMARY KEY,
            terminal_id  TEXT NOT NULL,
            operation    TEXT NOT NULL,
            request_hash TEXT NOT NULL,
            status       INTEGER NOT NULL,
            response     TEXT NOT NULL,
            created_at   TEXT NOT NULL
        ) WITHOUT ROWID;
        """,
    ),
    (
        3,
        "what the hub knows: other stores' shares, merges, sync checkpoints",
        """
        -- Balances shown here = this store's own ledgers (complete, acknowledged or not) +
        -- what every other store contributed, as the hub last said. The hub's sums for this
        -- store are never added: they would count this store's acknowledged events twice.
        ALTER TABLE members ADD COLUMN remote_points INTEGER NOT NULL DEFAULT 0;
        ALTER TABLE members ADD COLUMN remote_sv_principal INTEGER NOT NULL DEFAULT 0;
        ALTER TABLE members ADD COLUMN remote_sv_bonus INTEGER NOT NULL DEFAULT 0;
        -- Set when the hub merged this member into another (same phone registered twice).
        ALTER TABLE members ADD COLUMN merged_into TEXT;
        -- 'local': registered here; 'hub': learned from the member directory.
        ALTER TABLE members ADD COLUMN origin TEXT NOT NULL DEFAULT 'local';
        """,
    ),
    (
        4,
        "print queue",
        """
        -- Receipts wait here until their printer can print, across restarts. A job is marked
        -- 'printing' (committed) before its bytes go out, so after a crash it is known to be
        -- 'uncertain' and never sent twice on its own; only a 'reprint' job prints a sale again.
        CREATE TABLE print_jobs (
            job_id     TEXT PRIMARY KEY,
            printer_id TEXT NOT NULL,
            sale_id    TEXT,
            kind       TEXT NOT NULL CHECK (kind IN ('receipt', 'reprint')),
            payload    BLOB NOT NULL,               -- ESC/POS bytes, rendered when queued
            state      TEXT NOT NULL
                CHECK (state IN ('queued', 'printing', 'done', 'uncertain', 'cancelled')),
            attempts   INTEGER NOT NULL DEFAULT 0,
            last_error TEXT,
            created_at TEXT NOT NULL,
            printed_at TEXT
        );
        CREATE INDEX print_jobs_next ON print_jobs(printer_id, state, created_at);
        -- One original receipt per sale and printer, whatever retries the POS makes.
        CREATE UNIQUE INDEX print_jobs_one_receipt ON print_jobs(sale_id, printer_id)
            WHERE kind = 'receipt';
        """,
    ),
    (
        5,
        "index members merged into another",
        """
        -- A member's view adds the local ledgers of members merged into it; without this
        -- index every lookup would scan the whole members table.
        CREATE INDEX members_merged ON members(merged_into) WHERE merged_into IS NOT NULL;
        """,
    ),
    (
        6,
        "the store's product catalogue, for scanned barcodes",
        """
        CREATE TABLE products (
            sku        TEXT PRIMARY KEY,             -- the barcode (GTIN) or the chain's code
            name       TEXT NOT NULL,
            category   TEXT NOT NULL,
            unit_price INTEGER NOT NULL CHECK (unit_price > 0),
            updated_at TEXT NOT NULL
        ) WITHOUT ROWID;
        """,
    ),
    (
        7,
        "stored value and points of other stores spent here",
        """
        -- Stored value topped up in other stores and spent here: this store's ledger holds the
        -- whole spend, its local balance only what came from here, so
        -- ledger = sv_principal - remote_sv_principal_used (and the same for the bonus).
        ALTER TABLE members ADD COLUMN remote_sv_principal_used INTEGER NOT NULL DEFAULT 0;
        ALTER TABLE members ADD COLUMN remote_sv_bonus_used INTEGER NOT NULL DEFAULT 0;
        -- The same for points: redemption takes this store's lots first, then what the member
        -- holds in other stores (drawn as the lot REMOTE_LOT); ledger = balance - used.
        ALTER TABLE members ADD COLUMN remote_points_used INTEGER NOT NULL DEFAULT 0;
        """,
    ),
    (
        8,
        "offline allowances granted by the hub",
        """
        -- The hub's cumulative grant to this store for the member (standing allowances and
        -- online authorisations together), the largest figure seen from the directory or an
        -- online reply; 0 until the hub has granted anything. Once it has, the limit is this
        -- plus the base below, and the configured default no longer applies.
        ALTER TABLE allowances ADD COLUMN hub_points_granted INTEGER NOT NULL DEFAULT 0
            CHECK (hub_points_granted >= 0);
        ALTER TABLE allowances ADD COLUMN hub_sv_granted INTEGER NOT NULL DEFAULT 0
            CHECK (hub_sv_granted >= 0);
        -- Spending here that the hub's books never count against its grants: what a member
        -- had spent under the configured default before this version. 0 for rows made since.
        ALTER TABLE allowances ADD COLUMN points_base INTEGER NOT NULL DEFAULT 0;
        ALTER TABLE allowances ADD COLUMN sv_base INTEGER NOT NULL DEFAULT 0;
        UPDATE allowances SET points_base = points_used, sv_base = sv_used
            WHERE granted_by = 'config';
        """,
    ),
    (
        9,
        "a change counter for the campaign table; day indexes for sales and refunds",
        """
        -- Any process that changes the campaign table (the running edge's downlink, the CLI's
        -- apply-campaigns, a restore) moves this counter in the same transaction; the running
        -- edge compares it before pricing and re-reads the bundles when it moved.
        INSERT OR IGNORE INTO meta(key, value) VALUES ('campaigns_rev', '0');
        CREATE TRIGGER campaign_bundles_inserted AFTER INSERT ON campaign_bundles BEGIN
            UPDATE meta SET value = CAST(value AS INTEGER) + 1 WHERE key = 'campaigns_rev';
        END;
        CREATE TRIGGER campaign_bundles_updated AFTER UPDATE ON campaign_bundles BEGIN
            UPDATE meta SET value = CAST(value AS INTEGER) + 1 WHERE key = 'campaigns_rev';
        END;
        CREATE TRIGGER campaign_bundles_deleted AFTER DELETE ON campaign_bundles BEGIN
            UPDATE meta SET value = CAST(value AS INTEGER) + 1 WHERE key = 'campaigns_rev';
        END;
        -- The day's receipts: timestamps are store-local ISO, so the first ten characters are
        -- the store's calendar day.
        CREATE INDEX sales_day ON sales(substr(finalized_at, 1, 10));
        CREATE INDEX refunds_day ON refunds(substr(created_at, 1, 10));
        """,
    ),
    (
        10,
        "who sold it: a member's shopping guide, a sale's cashier and guide, a refund's cashier",
        """
        ALTER TABLE members ADD COLUMN guide_id TEXT;
        ALTER TABLE sales ADD COLUMN cashier_id TEXT;
        ALTER TABLE sales ADD COLUMN guide_id TEXT;
        ALTER TABLE refunds ADD COLUMN cashier_id TEXT;
        """,
    ),
    (
        11,
        "card states, payment PINs, who changed a member and where, consents, pricing bases",
        """
        -- A card's state merges last-writer-wins by HLC with the hub's (edge.directory):
        -- state_hlc is the stamp of the state held, this store's own change or the hub's.
        ALTER TABLE cards ADD COLUMN state TEXT NOT NULL DEFAULT 'active';
        ALTER TABLE cards ADD COLUMN reason TEXT NOT NULL DEFAULT '';
        ALTER TABLE cards ADD COLUMN state_hlc INTEGER NOT NULL DEFAULT 0;
        -- The PIN's argon2id hash and lock, stamped likewise; failures count here only.
        ALTER TABLE members ADD COLUMN pin_hash TEXT;
        ALTER TABLE members ADD COLUMN pin_locked INTEGER NOT NULL DEFAULT 0;
        ALTER TABLE members ADD COLUMN pin_hlc INTEGER NOT NULL DEFAULT 0;
        ALTER TABLE members ADD COLUMN pin_failures INTEGER NOT NULL DEFAULT 0;
        -- Every change made to a member at this store's tills: what (profile fields with the
        -- value before and after, a card's state, the PIN: never its value), where and by whom.
        CREATE TABLE member_changes (
            change_id   INTEGER PRIMARY KEY,
            member_id   TEXT NOT NULL,
            at          TEXT NOT NULL,
            terminal_id TEXT,
            cashier_id  TEXT,
            what        TEXT NOT NULL,
            detail      TEXT NOT NULL
        );
        CREATE INDEX member_changes_member ON member_changes(member_id, change_id);
        -- Consent to be contacted, per channel and purpose, as given at this store's tills
        -- (or learned since): with the text shown, when, and the stamp of the change.
        CREATE TABLE member_consents (
            member_id    TEXT NOT NULL,
            channel      TEXT NOT NULL,
            purpose      TEXT NOT NULL,
            granted      INTEGER NOT NULL,
            text_version TEXT NOT NULL,
            at           TEXT NOT NULL,
            hlc          INTEGER NOT NULL,
            PRIMARY KEY (member_id, channel, purpose)
        ) WITHOUT ROWID;
        -- What a sale was priced with (edge.pricing_basis), so a partial refund reprices
        -- what is kept; NULL for sales made before: refunded in proportion, as then.
        ALTER TABLE sales ADD COLUMN pricing_basis TEXT;
        """,
    ),
    (
        12,
        "events the hub acknowledged, kept a while for a hub restored from a backup",
        """
        -- Pruned from the outbox once acknowledged, kept here for [sync] keep_acked_days: a
        -- hub restored from a backup asks for them again (edge.outbox.reopen). No index
        -- beyond the key: every acknowledged event passes through here, and the rare sweep
        -- of old ones (edge.outbox.expire_sent) may scan.
        CREATE TABLE outbox_sent (
            epoch    INTEGER NOT NULL,
            seq      INTEGER NOT NULL,
            event_id TEXT NOT NULL,
            hlc      INTEGER NOT NULL,
            type     TEXT NOT NULL,
            payload  BLOB NOT NULL,
            PRIMARY KEY (epoch, seq)
        ) WITHOUT ROWID;
        """,
    ),
    (
        13,
        "what HQ knows of a member that promotions may target: tags, segments, RFM, stage",
        """
        -- From the member directory (edge.directory): tags HQ set and rule tags (JSON list),
        -- the segments marked for the tills the member is in (JSON list of {segment_id,
        -- name}), the latest RFM run's group and the lifecycle stage.
        ALTER TABLE members ADD COLUMN hq_tags TEXT NOT NULL DEFAULT '[]';
        ALTER TABLE members ADD COLUMN till_segments TEXT NOT NULL DEFAULT '[]';
        ALTER TABLE members ADD COLUMN rfm_group TEXT;
        ALTER TABLE members ADD COLUMN stage TEXT;
        """,
    ),
    (
        14,
        "messages HQ left for members at the tills (a journey's in-store message)",
        """
        -- From the member directory (edge.directory): shown on the pole display when the
        -- member is identified, printed on the receipt of their next sale (``shown_sale``,
        -- so a reprint prints it again), then reported to the hub (member.message_shown).
        CREATE TABLE till_messages (
            member_id   TEXT NOT NULL,
            key         TEXT NOT NULL,
            text        TEXT NOT NULL,
            coupon_code TEXT,
            shown_sale  TEXT,
            PRIMARY KEY (member_id, key)
        ) WITHOUT ROWID;
        CREATE INDEX till_messages_sale ON till_messages(shown_sale);
        """,
    ),
]

LATEST_VERSION = MIGRATIONS[-1][0]

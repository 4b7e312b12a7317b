//! The ledger's SQL schema as an ordered list of migrations, one list for SQLite and
//! PostgreSQL. SQLite's `PRAGMA user_version` (PostgreSQL: the row of `licd_schema`) holds how
//! many have been applied; each runs once, in its own transaction, in order. Never edit a
//! shipped migration: add the next one.
//!
//! # Writing SQL that runs on both
//!
//! Migrations and the ledger's statements are written once, in SQLite's spelling, and
//! PostgreSQL gets a mechanical translation ([`super::sql::to_postgres_ddl`],
//! [`super::sql::to_postgres_params`]):
//!
//! - types: `INTEGER` (64-bit in SQLite) becomes `BIGINT`, `BLOB` becomes `BYTEA`; use only
//!   `INTEGER`, `TEXT`, `BLOB` (booleans are `INTEGER` 0/1, times are unix seconds, JSON is
//!   `TEXT`). No `REAL`, no `AUTOINCREMENT`, no `DATETIME` defaults.
//! - placeholders: `?1`, `?2`… become `$1`, `$2`…; never write a `?` anywhere else (not even
//!   in a comment or a string literal).
//! - a parameter PostgreSQL cannot type from its use (`?1 IS NULL`) gets a cast:
//!   `CAST(?1 AS TEXT) IS NULL` (PostgreSQL prepares statements before it sees values).
//! - upserts: `INSERT … ON CONFLICT (key) DO UPDATE SET c = excluded.c` (both have it); never
//!   `INSERT OR REPLACE` / `REPLACE INTO` (SQLite only).
//! - `CREATE TABLE`, `CREATE INDEX`, `ALTER TABLE … ADD COLUMN … DEFAULT …`, `CHECK`,
//!   `REFERENCES … ON DELETE CASCADE` and `--` comments mean the same on both.
//! - no `PRAGMA`, no `IF NOT EXISTS` tricks, no `WITHOUT ROWID`; `rowid` only where
//!   [`POSTGRES_AFTER`] gives the table a real one.
//! - anything PostgreSQL needs beyond that goes in [`POSTGRES_AFTER`] under the migration's
//!   number.
//!
//! The ledger tests run every migration on both (`tests/tests/ledger_backends.rs`).

/// Migrations, oldest first. Index + 1 = the `user_version` after it ran.
pub const MIGRATIONS: &[&str] = &[
    // 1: the first schema.
    r#"
CREATE TABLE customers (
    id          TEXT PRIMARY KEY,
    name        TEXT NOT NULL,
    kind        TEXT NOT NULL CHECK (kind IN ('msp', 'tenant')),
    created_at  INTEGER NOT NULL
);
CREATE TABLE catalog (
    sku           TEXT PRIMARY KEY,
    name          TEXT NOT NULL,
    service       TEXT NOT NULL,
    product_class TEXT NOT NULL,
    vms_per_seat  INTEGER
);
CREATE TABLE subscriptions (
    id         TEXT PRIMARY KEY,
    name       TEXT NOT NULL,
    owner      TEXT,
    claim_key  TEXT UNIQUE,
    term_start INTEGER NOT NULL,
    term_end   INTEGER NOT NULL
);
CREATE TABLE entitlements (
    subscription TEXT NOT NULL REFERENCES subscriptions(id) ON DELETE CASCADE,
    sku          TEXT NOT NULL,
    seat_limit   INTEGER NOT NULL,
    PRIMARY KEY (subscription, sku)
);
CREATE TABLE auto_license (
    service   TEXT PRIMARY KEY,
    inherit   INTEGER NOT NULL,
    paused    INTEGER NOT NULL,
    customers TEXT NOT NULL            -- JSON array of customer ids
);
CREATE TABLE devices (
    tenant           TEXT NOT NULL,
    device           TEXT NOT NULL,
    device_key       BLOB NOT NULL,    -- pinned ed25519 public key, 32 bytes
    model            TEXT NOT NULL,
    serial           TEXT NOT NULL,
    product_class    TEXT NOT NULL,
    firmware_version TEXT NOT NULL,
    agent_version    TEXT NOT NULL,
    vm_count         INTEGER,
    services_wanted  TEXT NOT NULL,    -- JSON array
    first_seen       INTEGER NOT NULL,
    last_report_at   INTEGER NOT NULL,
    reported_clock   INTEGER NOT NULL,
    clock_rollback   INTEGER NOT NULL,
    reported_seq     INTEGER NOT NULL,
    bundle_seq       INTEGER NOT NULL, -- never goes backwards
    bundle_issued_at INTEGER NOT NULL,
    bundle_refresh   INTEGER NOT NULL,
    bundle_basis     TEXT,             -- JSON of what the last bundle said
    unassigned       TEXT NOT NULL,    -- JSON array of services
    violation_since  TEXT NOT NULL,    -- JSON object service -> unix time
    PRIMARY KEY (tenant, device)
);
CREATE TABLE seats (
    tenant       TEXT NOT NULL,
    device       TEXT NOT NULL,
    service      TEXT NOT NULL,
    subscription TEXT NOT NULL,
    sku          TEXT NOT NULL,
    since        INTEGER NOT NULL,
    PRIMARY KEY (tenant, device, service),
    FOREIGN KEY (tenant, device) REFERENCES devices(tenant, device) ON DELETE CASCADE
);
CREATE INDEX seats_by_subscription ON seats (subscription, sku);
CREATE TABLE refused_reports (
    at     INTEGER NOT NULL,
    tenant TEXT NOT NULL,
    device TEXT NOT NULL,
    reason TEXT NOT NULL
);
"#,
    // 2: customers bound to subscriptions they do not own (admin API bind, issue 6).
    r#"
CREATE TABLE subscription_bindings (
    subscription TEXT NOT NULL,
    customer     TEXT NOT NULL,
    PRIMARY KEY (subscription, customer)
);
"#,
    // 3: licensing by file (issue 18): offline flag, nonces seen, last release, history (JSON).
    r#"
ALTER TABLE devices ADD COLUMN offline TEXT NOT NULL DEFAULT '{}';
"#,
    // 4: a seat whose license was moved to another organization ends before its subscription
    // (Meraki co-term move, issue 21): NULL for every seat before.
    r#"
ALTER TABLE seats ADD COLUMN ends_at INTEGER;
"#,
    // 5: Snow license assignments (issue 21 item 3). Tables of their own, so nothing here
    // depends on another migration: assignments to datacenters, organizations, sites and
    // users; what an operator's computer assignment adds to a seat (quantity, VM ids) and a
    // datacenter's seat; the datacenter a host is placed in.
    r#"
CREATE TABLE snow_assignments (
    license          TEXT NOT NULL,    -- <subscription>:<sku>
    kind             TEXT NOT NULL CHECK (kind IN ('datacenter', 'organization', 'site', 'user')),
    target           TEXT NOT NULL,
    subscription     TEXT NOT NULL,
    sku              TEXT NOT NULL,
    quantity         INTEGER NOT NULL,
    virtual_machines TEXT NOT NULL,    -- JSON array of VM ids
    created_at       INTEGER NOT NULL,
    PRIMARY KEY (license, kind, target)
);
CREATE TABLE seat_assignments (
    tenant           TEXT NOT NULL,
    device           TEXT NOT NULL,
    service          TEXT NOT NULL,
    quantity         INTEGER NOT NULL,
    virtual_machines TEXT,             -- JSON array; NULL: not an operator's computer assignment
    datacenter       TEXT,             -- the datacenter assignment the seat comes from
    PRIMARY KEY (tenant, device, service),
    FOREIGN KEY (tenant, device) REFERENCES devices(tenant, device) ON DELETE CASCADE
);
CREATE TABLE device_placement (
    tenant     TEXT NOT NULL,
    device     TEXT NOT NULL,
    datacenter TEXT NOT NULL,
    PRIMARY KEY (tenant, device),
    FOREIGN KEY (tenant, device) REFERENCES devices(tenant, device) ON DELETE CASCADE
);
"#,
    // 6: licensing policy per SKU or subscription (issue 20; issue 18's offline_lease_days):
    // the fields set, as JSON (unset fields inherit). Usage reported by devices (issue 20),
    // one row per (device, report seq): the key makes storing a report twice a no-op.
    r#"
CREATE TABLE license_policies (
    scope  TEXT NOT NULL CHECK (scope IN ('sku', 'subscription')),
    id     TEXT NOT NULL,
    policy TEXT NOT NULL,              -- JSON: strategy, overage_tolerance_pct, warn_before, offline_lease_days
    PRIMARY KEY (scope, id)
);
ALTER TABLE devices ADD COLUMN usage TEXT NOT NULL DEFAULT '{}'; -- JSON: open window, policy kinds, reported compliance
CREATE TABLE usage_windows (
    tenant        TEXT NOT NULL,
    device        TEXT NOT NULL,
    chain         INTEGER NOT NULL,    -- the device's report chain (a new one after a reset)
    window_seq    INTEGER NOT NULL,    -- the report seq the window opened at
    last_seq      INTEGER NOT NULL,    -- the report whose counters are its value
    closed        INTEGER NOT NULL,    -- 1: final; 0: the open window's latest report so far
    period_start  INTEGER NOT NULL,
    period_end    INTEGER NOT NULL,
    peak_vm_count INTEGER,
    refusals      INTEGER NOT NULL,
    grace_seconds TEXT NOT NULL,       -- JSON object service -> seconds
    PRIMARY KEY (tenant, device, chain, window_seq)
);
CREATE INDEX usage_windows_by_end ON usage_windows (period_end);
"#,
    // 7: site delegations (issue 23): the delegation as signed, the seats it reserves from
    // each subscription's SKU (one row per reservation, in the order they were chosen; a
    // pool's seats are the sum of its rows), and the leases its relay reported issuing. Portable SQL (no SQLite-only syntax): times
    // and counts as BIGINT, keys and signed bytes as hex text.
    r#"
CREATE TABLE delegations (
    id         TEXT PRIMARY KEY,
    tenant     TEXT NOT NULL,
    site       TEXT NOT NULL,
    relay_key  TEXT NOT NULL,          -- ed25519 public key, hex
    max_lease  BIGINT NOT NULL,
    not_before BIGINT NOT NULL,
    not_after  BIGINT NOT NULL,
    state      TEXT NOT NULL CHECK (state IN ('active', 'returned', 'revoked')),
    created_at BIGINT NOT NULL,
    ended_at   BIGINT,
    signed     TEXT NOT NULL           -- the kind-12 envelope (certificate, delegation), hex
);
CREATE TABLE delegation_seats (
    delegation   TEXT NOT NULL REFERENCES delegations(id) ON DELETE CASCADE,
    pool         INTEGER NOT NULL,     -- the pool's place in the delegation
    position     INTEGER NOT NULL,     -- the reservation's place in its pool
    service      TEXT NOT NULL,
    subscription TEXT NOT NULL,
    sku          TEXT NOT NULL,
    seats        BIGINT NOT NULL,
    PRIMARY KEY (delegation, pool, position)
);
CREATE TABLE delegated_leases (
    relay_key   TEXT NOT NULL,         -- the relay's public key, hex
    n           BIGINT NOT NULL,       -- the relay's number for the lease (never reused)
    delegation  TEXT NOT NULL REFERENCES delegations(id) ON DELETE CASCADE,
    device      TEXT NOT NULL,
    service     TEXT NOT NULL,
    bundle_seq  BIGINT NOT NULL,
    issued_at   BIGINT NOT NULL,
    lease_until BIGINT NOT NULL,
    reported_at BIGINT NOT NULL,       -- controller time the report arrived
    PRIMARY KEY (relay_key, n)
);
CREATE INDEX delegated_leases_by_delegation ON delegated_leases (delegation, n);
"#,
];

/// Key of the advisory lock PostgreSQL migrations run under, so replicas starting together
/// migrate once ("licd" in ASCII).
pub const MIGRATION_LOCK: i64 = 0x6c69_6364;

/// What PostgreSQL runs after a migration of [`MIGRATIONS`] (by its number), in the same
/// transaction, where the portable text is not enough. Only one rule needs it so far: a
/// table whose queries use SQLite's implicit `rowid` (insertion order) gets a real `rowid`
/// identity column on PostgreSQL, so the same queries work on both.
pub const POSTGRES_AFTER: &[(usize, &str)] = &[(
    1,
    "ALTER TABLE entitlements ADD COLUMN rowid BIGINT GENERATED ALWAYS AS IDENTITY;
     ALTER TABLE refused_reports ADD COLUMN rowid BIGINT GENERATED ALWAYS AS IDENTITY;",
)];

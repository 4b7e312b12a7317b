//! The ledger: the engine's records in a SQLite file (bundled SQLite via `rusqlite`, the
//! default) or a PostgreSQL database (`postgres://…`, for replicas and fleets past one
//! machine: [`pg`]). One set of SQL for both ([`schema`] gives the rules), one API.
//!
//! Created and migrated on open ([`schema::MIGRATIONS`]; the version is SQLite's
//! `PRAGMA user_version`, or the `licd_schema` row on PostgreSQL). The engine
//! stays the in-memory authority; after each engine call the shell hands the changed keys
//! ([`Dirty`]) to [`Ledger::save`], which writes them in one transaction — before any bundle
//! is published, so a restart never hands out a `seq` twice. WAL journal with
//! `synchronous=NORMAL`: an application crash loses nothing; an OS crash or power cut may lose
//! the last few commits, and a device that then reports a `seq` above the ledger's gets its
//! next bundle above its own (see `Engine::handle_report`).

pub mod pg;
pub mod schema;
pub mod sql;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use licd_protocol::{PublicKey, TenantId, UnixTime};
use rusqlite::Connection;

use self::pg::{ChangeLog, PgLedger};
use self::sql::{columns, vals, ColumnKind, Row, Stmt, Value};

use crate::engine::delegation::{DelegatedPool, DelegationRecord, DelegationState, Reservation};
use crate::engine::usage::{UsageCounters, UsageWindow};
use crate::engine::{
    AssignmentKind, AutoLicense, BundleState, CatalogEntry, ComputerAssignment, Customer,
    CustomerKind, Device, DeviceKey, Dirty, Entitlement, Seat, SnowAssignment, SnowKey, State,
    Subscription,
};

/// Why the ledger failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LedgerError {
    /// SQLite reported an error.
    #[error("ledger database: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// PostgreSQL reported an error (or stayed unreachable past the retry budget).
    #[error("ledger database (PostgreSQL): {0}")]
    Postgres(String),
    /// A row does not hold what this version wrote (hand-edited or damaged file).
    #[error("ledger row is invalid: {0}")]
    Corrupt(String),
    /// The file was written by a newer licd-stub.
    #[error("ledger schema version {found} is newer than this build's {supported}")]
    NewerSchema {
        /// Version in the file.
        found: u32,
        /// Newest this build knows.
        supported: u32,
    },
}

/// Most refused reports kept in the ledger (older ones are dropped).
const MAX_REFUSED_KEPT: i64 = 1000;

/// A refused report as recorded.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct RefusedReport {
    /// Controller time.
    pub at: UnixTime,
    /// Tenant claimed by the report.
    pub tenant: String,
    /// Device claimed by the report.
    pub device: String,
    /// Why it was refused.
    pub reason: String,
}

/// Which usage windows [`Ledger::usage_windows`] returns.
#[derive(Debug, Clone, Copy)]
pub struct UsageQuery<'a> {
    /// Only this tenant's devices.
    pub tenant: Option<&'a TenantId>,
    /// Only devices with this id.
    pub device: Option<&'a licd_protocol::DeviceId>,
    /// Periods ending at or after this time.
    pub from: UnixTime,
    /// Periods ending at or before this time.
    pub to: UnixTime,
}

/// A lease a site relay reported issuing, as stored (migration 7).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct DelegatedLease {
    /// The delegation it was issued under.
    pub delegation: String,
    /// The relay's number for it.
    pub n: u64,
    /// The device.
    pub device: String,
    /// The service.
    pub service: String,
    /// The bundle's seq.
    pub bundle_seq: u64,
    /// The bundle's issued_at.
    pub issued_at: UnixTime,
    /// The grant's lease end.
    pub lease_until: UnixTime,
    /// When the controller received it.
    pub reported_at: UnixTime,
}

/// Devices another replica changed, as the ledger holds them (`None`: it has none).
pub type ChangedDevices = Vec<(DeviceKey, Option<Device>)>;

/// An open ledger: a SQLite file or a PostgreSQL database.
#[derive(Debug)]
pub struct Ledger {
    db: Db,
}

/// The backend under the ledger's SQL.
#[derive(Debug)]
enum Db {
    Sqlite(Connection),
    Postgres(PgLedger),
}

/// Runs a read-only query on either backend.
fn query(db: &Db, sql: &'static str, params: Vec<Value>) -> Result<Vec<Row>, LedgerError> {
    match db {
        Db::Sqlite(c) => sql::sqlite_query(c, sql, &params),
        Db::Postgres(p) => p.query(sql, params),
    }
}

/// The statements of one write transaction, collected before any is run (so the
/// PostgreSQL session can run them again, whole, after a lost connection).
#[derive(Debug, Default)]
struct Writes(Vec<Stmt>);

impl Writes {
    /// Adds one statement. Infallible; the `Result` keeps the callers' `?` shape.
    fn exec(&mut self, sql: &'static str, params: Vec<Value>) -> Result<(), LedgerError> {
        self.0.push(Stmt { sql, params });
        Ok(())
    }
}

fn to_i(x: u64) -> i64 {
    // Bit-preserving: SQLite integers are signed 64-bit; `to_u` reverses it exactly.
    x as i64
}

fn to_u(x: i64) -> u64 {
    x as u64
}

fn corrupt(what: impl std::fmt::Display) -> LedgerError {
    LedgerError::Corrupt(what.to_string())
}

fn id<T: TryFrom<String, Error = licd_protocol::IdError>>(s: String) -> Result<T, LedgerError> {
    T::try_from(s).map_err(corrupt)
}

fn json<T: serde::de::DeserializeOwned>(s: &str) -> Result<T, LedgerError> {
    serde_json::from_str(s).map_err(corrupt)
}

fn to_json<T: serde::Serialize>(v: &T) -> Result<String, LedgerError> {
    serde_json::to_string(v).map_err(corrupt)
}

impl Ledger {
    /// Opens (creating if needed) the ledger at `path` and brings its schema up to date.
    pub fn open(path: &Path) -> Result<Self, LedgerError> {
        Self::init(Connection::open(path)?)
    }

    /// A ledger in memory (tests, benches).
    pub fn open_in_memory() -> Result<Self, LedgerError> {
        Self::init(Connection::open_in_memory()?)
    }

    /// Connects to a PostgreSQL database (`postgres://user:password@host:port/db`) and brings
    /// its schema up to date. Calls keep retrying a lost server for up to `retry` (see
    /// [`pg::DEFAULT_RETRY`]) before they fail. Several controllers may open the same
    /// database at once: migrations run under an advisory lock, each once.
    pub fn open_postgres(url: &str, retry: std::time::Duration) -> Result<Self, LedgerError> {
        let pg = PgLedger::connect(url, retry)?;
        pg.call(|s| {
            s.run(|c, _| {
                let mut applied = Vec::new();
                for (i, sql) in schema::MIGRATIONS.iter().enumerate() {
                    let version = i as i64 + 1;
                    let mut tx = c.transaction()?;
                    tx.batch_execute(&format!(
                        "SELECT pg_advisory_xact_lock({});
                         CREATE TABLE IF NOT EXISTS licd_schema (version BIGINT NOT NULL);",
                        schema::MIGRATION_LOCK
                    ))?;
                    let found: i64 = tx
                        .query_opt("SELECT version FROM licd_schema", &[])?
                        .map_or(0, |r| r.get(0));
                    if found == 0 && i == 0 {
                        tx.execute("INSERT INTO licd_schema (version) VALUES (0)", &[])?;
                        // Replicas only exist on PostgreSQL, so their generation counter is
                        // not a migration of both backends: it is made here, once.
                        tx.batch_execute(
                            "CREATE TABLE licd_replication (generation BIGINT NOT NULL);
                             INSERT INTO licd_replication (generation) VALUES (0);",
                        )?;
                    }
                    if found > MIGRATIONS_LEN as i64 {
                        return Ok(Err(LedgerError::NewerSchema {
                            found: u32::try_from(found).unwrap_or(u32::MAX),
                            supported: MIGRATIONS_LEN,
                        }));
                    }
                    if found >= version {
                        continue;
                    }
                    tx.batch_execute(&sql::to_postgres_ddl(sql))?;
                    for (_, extra) in schema::POSTGRES_AFTER.iter().filter(|(n, _)| *n == i + 1) {
                        tx.batch_execute(extra)?;
                    }
                    tx.execute("UPDATE licd_schema SET version = $1", &[&version])?;
                    tx.commit()?;
                    applied.push(version);
                }
                // The replicas' change log (not a migration of both backends, like the
                // generation counter): made once, under the migration lock, also in a ledger
                // created before it.
                let mut tx = c.transaction()?;
                tx.batch_execute(&format!(
                    "SELECT pg_advisory_xact_lock({});
                     CREATE TABLE IF NOT EXISTS licd_changes (generation BIGINT NOT NULL,
                         kind TEXT NOT NULL, tenant TEXT NOT NULL, device TEXT NOT NULL);
                     CREATE INDEX IF NOT EXISTS licd_changes_by_generation
                         ON licd_changes (generation);",
                    schema::MIGRATION_LOCK
                ))?;
                tx.commit()?;
                Ok(Ok(applied))
            })
        })?
        .map(|applied| {
            for version in applied {
                tracing::info!(version, "ledger schema migrated (PostgreSQL)");
            }
        })?;
        Ok(Self {
            db: Db::Postgres(pg),
        })
    }

    fn init(mut conn: Connection) -> Result<Self, LedgerError> {
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        // Room for every statement `save` and `record_refused` run (the controller writes the
        // same few statements for every report, and preparing each anew took a quarter of its
        // CPU in the fleet run, BENCHMARKS.md).
        conn.set_prepared_statement_cache_capacity(32);
        let found: u32 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
        let supported = MIGRATIONS_LEN;
        if found > supported {
            return Err(LedgerError::NewerSchema { found, supported });
        }
        for (i, sql) in schema::MIGRATIONS.iter().enumerate().skip(found as usize) {
            let tx = conn.transaction()?;
            tx.execute_batch(sql)?;
            tx.pragma_update(None, "user_version", i + 1)?;
            tx.commit()?;
            tracing::info!(version = i + 1, "ledger schema migrated");
        }
        Ok(Self {
            db: Db::Sqlite(conn),
        })
    }

    /// Whether this ledger is on PostgreSQL.
    pub fn is_postgres(&self) -> bool {
        matches!(self.db, Db::Postgres(_))
    }

    /// The schema version of the open ledger.
    pub fn schema_version(&self) -> Result<u32, LedgerError> {
        match &self.db {
            Db::Sqlite(c) => Ok(c.pragma_query_value(None, "user_version", |r| r.get(0))?),
            Db::Postgres(_) => query(&self.db, "SELECT version FROM licd_schema", vec![])?
                .first()
                .map_or(Ok(0), |r| r.get(0)),
        }
    }

    /// Runs the collected statements in one transaction.
    fn write(&mut self, out: Writes) -> Result<(), LedgerError> {
        match &mut self.db {
            Db::Sqlite(c) => sql::sqlite_write(c, &out.0),
            Db::Postgres(p) => p.write(out.0),
        }
    }

    /// Loads every record, as of one moment (on PostgreSQL, one snapshot: see
    /// [`PgLedger::snapshot`]).
    pub fn load(&self) -> Result<State, LedgerError> {
        match &self.db {
            Db::Postgres(p) => p.snapshot(|| self.load_now()),
            Db::Sqlite(_) => self.load_now(),
        }
    }

    fn load_now(&self) -> Result<State, LedgerError> {
        let mut state = State::default();
        let c = &self.db;

        for r in query(
            c,
            "SELECT id, name, kind, created_at FROM customers",
            vec![],
        )? {
            let id: TenantId = id(r.get(0)?)?;
            let kind = match r.get::<String>(2)?.as_str() {
                "msp" => CustomerKind::Msp,
                "tenant" => CustomerKind::Tenant,
                other => return Err(corrupt(format!("customer kind {other}"))),
            };
            state.customers.insert(
                id.clone(),
                Customer {
                    id,
                    name: r.get(1)?,
                    kind,
                    created_at: to_u(r.get(3)?),
                },
            );
        }

        for r in query(
            c,
            "SELECT sku, name, service, product_class, vms_per_seat FROM catalog",
            vec![],
        )? {
            let e = CatalogEntry {
                sku: id(r.get(0)?)?,
                name: r.get(1)?,
                service: id(r.get(2)?)?,
                product_class: r.get(3)?,
                vms_per_seat: r.get(4)?,
            };
            state.catalog.insert(e.sku.clone(), e);
        }

        for r in query(
            c,
            "SELECT id, name, owner, claim_key, term_start, term_end FROM subscriptions",
            vec![],
        )? {
            let s = Subscription {
                id: id(r.get(0)?)?,
                name: r.get(1)?,
                owner: r.get::<Option<String>>(2)?.map(id).transpose()?,
                claim_key: r.get(3)?,
                start: to_u(r.get(4)?),
                end: to_u(r.get(5)?),
                entitlements: Vec::new(),
            };
            state.subscriptions.insert(s.id.clone(), s);
        }
        for r in query(
            c,
            "SELECT subscription, sku, seat_limit FROM entitlements ORDER BY subscription, rowid",
            vec![],
        )? {
            let sub = id(r.get(0)?)?;
            let e = Entitlement {
                sku: id(r.get(1)?)?,
                limit: r.get(2)?,
            };
            state
                .subscriptions
                .get_mut(&sub)
                .ok_or_else(|| corrupt(format!("entitlement of unknown subscription {sub}")))?
                .entitlements
                .push(e);
        }
        for r in query(
            c,
            "SELECT subscription, customer FROM subscription_bindings",
            vec![],
        )? {
            let sub: licd_protocol::LicenseId = id(r.get(0)?)?;
            let customer: TenantId = id(r.get(1)?)?;
            state.bindings.entry(sub).or_default().insert(customer);
        }

        for r in query(
            c,
            "SELECT service, inherit, paused, customers FROM auto_license",
            vec![],
        )? {
            let customers: BTreeSet<TenantId> = json(&r.get::<String>(3)?)?;
            state.policies.insert(
                id(r.get(0)?)?,
                AutoLicense {
                    inherit_to_new_tenants: r.get(1)?,
                    paused: r.get(2)?,
                    customers,
                },
            );
        }

        for r in query(c, "SELECT scope, id, policy FROM license_policies", vec![])? {
            let policy: crate::engine::policy::Policy = json(&r.get::<String>(2)?)?;
            match r.get::<String>(0)?.as_str() {
                "sku" => {
                    state.sku_policies.insert(id(r.get(1)?)?, policy);
                }
                "subscription" => {
                    state.subscription_policies.insert(id(r.get(1)?)?, policy);
                }
                other => return Err(corrupt(format!("policy scope {other}"))),
            }
        }

        state.devices = load_devices(c, DeviceRows::All)?;
        load_snow(c, &mut state)?;
        load_delegations(c, &mut state)?;
        Ok(state)
    }

    /// Writes the records named in `dirty` (as they are in `state`) in one transaction.
    pub fn save(&mut self, state: &State, dirty: &Dirty) -> Result<(), LedgerError> {
        if dirty.is_empty() {
            return Ok(());
        }
        let out = writes(state, dirty, self.is_postgres())?;
        self.write(out)
    }

    /// Starts a controller turn. On SQLite (one controller per file) there is nothing to
    /// coordinate: `Ok(None)`. On PostgreSQL the turn holds the database-wide turn lock until
    /// [`Ledger::end_turn`] or [`Ledger::abort_turn`], so the turns of every replica run one
    /// at a time, and the answer is the ledger's generation: when it is not the one this
    /// controller last saw, another replica has written since, and the controller reloads
    /// before it decides anything.
    pub fn begin_turn(&mut self) -> Result<Option<i64>, LedgerError> {
        match &self.db {
            Db::Sqlite(_) => Ok(None),
            Db::Postgres(p) => p.begin_turn().map(Some),
        }
    }

    /// Ends a turn: writes the records named in `dirty`, moves the generation on (when
    /// anything was written) and commits; returns the new generation (`None` on SQLite).
    pub fn end_turn(&mut self, state: &State, dirty: &Dirty) -> Result<Option<i64>, LedgerError> {
        let out = if dirty.is_empty() {
            Writes::default()
        } else {
            writes(state, dirty, self.is_postgres())?
        };
        match &self.db {
            Db::Sqlite(_) if out.0.is_empty() => Ok(None),
            Db::Sqlite(_) => self.write(out).map(|()| None),
            Db::Postgres(p) => {
                let log = if dirty.only_devices() {
                    ChangeLog::Devices(
                        dirty
                            .devices
                            .iter()
                            .map(|(t, d)| (t.to_string(), d.to_string()))
                            .collect(),
                    )
                } else {
                    ChangeLog::All
                };
                p.end_turn(out.0, log).map(Some)
            }
        }
    }

    /// The devices other replicas changed after generation `since` up to `upto`, as the ledger
    /// holds them now (`None` for one the ledger no longer has) — or `None` when the change
    /// log cannot tell: something besides devices changed, or the log does not cover every
    /// generation (pruned, or written by a controller predating it). The caller then reloads
    /// everything. Always `None` on SQLite (one controller per file has nothing to catch up).
    pub fn changed_devices(
        &self,
        since: i64,
        upto: i64,
    ) -> Result<Option<ChangedDevices>, LedgerError> {
        if !self.is_postgres() || upto <= since {
            return Ok(None);
        }
        let c = &self.db;
        let cover = query(
            c,
            "SELECT count(DISTINCT generation), count(*) FILTER (WHERE kind = 'all')
             FROM licd_changes WHERE generation > ?1 AND generation <= ?2",
            vals![since, upto],
        )?;
        let (generations, whole) = match cover.first() {
            Some(r) => (r.get::<i64>(0)?, r.get::<i64>(1)?),
            None => return Ok(None),
        };
        if generations != upto - since || whole > 0 {
            return Ok(None);
        }
        let keys = query(
            c,
            "SELECT DISTINCT tenant, device FROM licd_changes
             WHERE generation > ?1 AND generation <= ?2 AND kind = 'device'",
            vals![since, upto],
        )?;
        let mut loaded = load_devices(c, DeviceRows::Changed(since, upto))?;
        keys.iter()
            .map(|r| {
                let key: DeviceKey = (id(r.get(0)?)?, id(r.get(1)?)?);
                let device = loaded.remove(&key);
                Ok((key, device))
            })
            .collect::<Result<Vec<_>, LedgerError>>()
            .map(Some)
    }

    /// Ends a turn without writing (nothing to store, or the operation was refused).
    pub fn abort_turn(&mut self) {
        if let Db::Postgres(p) = &self.db {
            p.abort_turn();
        }
    }

    /// The ledger's generation (`None` on SQLite): a cheap check whether another replica
    /// wrote since this one last loaded.
    pub fn generation(&self) -> Result<Option<i64>, LedgerError> {
        match &self.db {
            Db::Sqlite(_) => Ok(None),
            Db::Postgres(p) => p.generation().map(Some),
        }
    }
}

/// The statements that store the records named in `dirty` as they are in `state`.
/// With `bulk` (PostgreSQL) several devices are written all at once ([`save_devices_bulk`]).
fn writes(state: &State, dirty: &Dirty, bulk: bool) -> Result<Writes, LedgerError> {
    {
        let mut out = Writes::default();
        for id in &dirty.customers {
            if let Some(c) = state.customers.get(id) {
                let kind = match c.kind {
                    CustomerKind::Msp => "msp",
                    CustomerKind::Tenant => "tenant",
                };
                out.exec(
                    "INSERT INTO customers (id, name, kind, created_at) VALUES (?1, ?2, ?3, ?4)
                     ON CONFLICT (id) DO UPDATE SET name = excluded.name, kind = excluded.kind,
                         created_at = excluded.created_at",
                    vals![c.id.as_str(), c.name, kind, to_i(c.created_at)],
                )?;
            } else {
                out.exec("DELETE FROM customers WHERE id = ?1", vals![id.as_str()])?;
            }
        }
        for sku in &dirty.catalog {
            if let Some(e) = state.catalog.get(sku) {
                out.exec(
                    "INSERT INTO catalog (sku, name, service, product_class, vms_per_seat)
                     VALUES (?1, ?2, ?3, ?4, ?5)
                     ON CONFLICT (sku) DO UPDATE SET name = excluded.name,
                         service = excluded.service, product_class = excluded.product_class,
                         vms_per_seat = excluded.vms_per_seat",
                    vals![
                        e.sku.as_str(),
                        e.name,
                        e.service.as_str(),
                        e.product_class,
                        e.vms_per_seat
                    ],
                )?;
            }
        }
        for id in &dirty.subscriptions {
            if let Some(s) = state.subscriptions.get(id) {
                save_subscription(&mut out, s)?;
            }
            out.exec(
                "DELETE FROM subscription_bindings WHERE subscription = ?1",
                vals![id.as_str()],
            )?;
            for customer in state.bindings.get(id).into_iter().flatten() {
                out.exec(
                    "INSERT INTO subscription_bindings (subscription, customer) VALUES (?1, ?2)",
                    vals![id.as_str(), customer.as_str()],
                )?;
            }
        }
        for service in &dirty.policies {
            if let Some(p) = state.policies.get(service) {
                out.exec(
                    "INSERT INTO auto_license (service, inherit, paused, customers)
                     VALUES (?1, ?2, ?3, ?4)
                     ON CONFLICT (service) DO UPDATE SET inherit = excluded.inherit,
                         paused = excluded.paused, customers = excluded.customers",
                    vals![
                        service.as_str(),
                        p.inherit_to_new_tenants,
                        p.paused,
                        to_json(&p.customers)?
                    ],
                )?;
            }
        }
        // One device goes row by row: its bulk form measured slower (`cargo bench -p
        // licd-stub --bench throughput`, one report per turn: 778 vs ~500 reports/s).
        if bulk && dirty.devices.len() > 1 {
            let devices: Vec<(&Device, bool)> = dirty
                .devices
                .iter()
                .filter_map(|k| Some((state.devices.get(k)?, dirty.new_devices.contains(k))))
                .collect();
            save_devices_bulk(&mut out, &devices)?;
        } else {
            for key in &dirty.devices {
                if let Some(d) = state.devices.get(key) {
                    save_device(&mut out, d, dirty.new_devices.contains(key))?;
                }
            }
        }
        for key in &dirty.snow {
            save_snow(&mut out, key, state.snow.get(key))?;
        }
        // After the devices: a window's row goes with its device's open-window state.
        for w in &dirty.usage_windows {
            save_usage_window(&mut out, w)?;
        }
        for sku in &dirty.sku_policies {
            save_policy(&mut out, "sku", sku.as_str(), state.sku_policies.get(sku))?;
        }
        for sub in &dirty.subscription_policies {
            save_policy(
                &mut out,
                "subscription",
                sub.as_str(),
                state.subscription_policies.get(sub),
            )?;
        }
        for id in &dirty.delegations {
            save_delegation(&mut out, id, state.delegations.get(id))?;
        }
        Ok(out)
    }
}

impl Ledger {
    /// Stores the leases of a relay report, each under its delegation, in one transaction;
    /// a lease already stored (same relay key and number: a replay or a resend) is left as it
    /// is. Returns the highest number stored for the relay key — what the acknowledgement
    /// says. (Not a controller turn: the rows are the relay's, keyed by its numbers, and
    /// change no engine state, so replicas may store them concurrently.)
    pub fn store_delegated_leases(
        &mut self,
        relay_key: &PublicKey,
        leases: &[(String, licd_protocol::IssuedLease)],
        now: UnixTime,
    ) -> Result<u64, LedgerError> {
        let key = relay_key.to_hex();
        let mut out = Writes::default();
        for (delegation, l) in leases {
            out.exec(
                "INSERT INTO delegated_leases (relay_key, n, delegation, device, service,
                     bundle_seq, issued_at, lease_until, reported_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)
                 ON CONFLICT (relay_key, n) DO NOTHING",
                vals![
                    key,
                    to_i(l.n),
                    delegation,
                    l.device.as_str(),
                    l.service.as_str(),
                    to_i(l.bundle_seq),
                    to_i(l.issued_at),
                    to_i(l.lease_until),
                    to_i(now)
                ],
            )?;
        }
        if !out.0.is_empty() {
            self.write(out)?;
        }
        // Read after the write: the numbers only grow, so this is at least what was stored.
        let through = query(
            &self.db,
            "SELECT MAX(n) FROM delegated_leases WHERE relay_key = ?1",
            vals![key],
        )?
        .first()
        .map_or(Ok(None), |r| r.get::<Option<i64>>(0))?;
        Ok(through.map_or(0, to_u))
    }

    /// The leases the relay of `delegation` reported issuing under it, in its order.
    pub fn delegated_leases(&self, delegation: &str) -> Result<Vec<DelegatedLease>, LedgerError> {
        query(
            &self.db,
            "SELECT delegation, n, device, service, bundle_seq, issued_at, lease_until,
                    reported_at
             FROM delegated_leases WHERE delegation = ?1 ORDER BY n",
            vals![delegation],
        )?
        .into_iter()
        .map(|r| {
            Ok(DelegatedLease {
                delegation: r.get(0)?,
                n: to_u(r.get(1)?),
                device: r.get(2)?,
                service: r.get(3)?,
                bundle_seq: to_u(r.get(4)?),
                issued_at: to_u(r.get(5)?),
                lease_until: to_u(r.get(6)?),
                reported_at: to_u(r.get(7)?),
            })
        })
        .collect()
    }

    /// Records a refused report (keeps the newest 1000).
    pub fn record_refused(
        &mut self,
        at: UnixTime,
        tenant: &str,
        device: &str,
        reason: &str,
    ) -> Result<(), LedgerError> {
        let mut out = Writes::default();
        out.exec(
            "INSERT INTO refused_reports (at, tenant, device, reason) VALUES (?1, ?2, ?3, ?4)",
            vals![to_i(at), tenant, device, reason],
        )?;
        out.exec(
            "DELETE FROM refused_reports WHERE rowid <= (SELECT MAX(rowid) FROM refused_reports) - ?1",
            vals![MAX_REFUSED_KEPT],
        )?;
        self.write(out)
    }

    /// The newest refused reports, newest first.
    pub fn refused_reports(&self, limit: u32) -> Result<Vec<RefusedReport>, LedgerError> {
        query(
            &self.db,
            "SELECT at, tenant, device, reason FROM refused_reports ORDER BY rowid DESC LIMIT ?1",
            vals![limit],
        )?
        .iter()
        .map(|r| {
            Ok(RefusedReport {
                at: to_u(r.get(0)?),
                tenant: r.get(1)?,
                device: r.get(2)?,
                reason: r.get(3)?,
            })
        })
        .collect()
    }

    /// The usage history: every window (closed ones final, open ones at their latest
    /// report) of `tenant`'s devices (all when `None`), optionally one device, whose period
    /// ends between `from` and `to` (inclusive); oldest first.
    pub fn usage_windows(&self, q: &UsageQuery<'_>) -> Result<Vec<UsageWindow>, LedgerError> {
        let rows = query(
            &self.db,
            "SELECT tenant, device, window_seq, last_seq, closed, period_start, period_end,
                    peak_vm_count, refusals, grace_seconds, chain
             FROM usage_windows
             WHERE (CAST(?1 AS TEXT) IS NULL OR tenant = ?1)
               AND (CAST(?2 AS TEXT) IS NULL OR device = ?2)
               AND period_end >= ?3 AND period_end <= ?4
             ORDER BY period_end, tenant, device, chain, window_seq",
            vals![
                q.tenant.map(|t| t.as_str()),
                q.device.map(|d| d.as_str()),
                to_i(q.from.min(i64::MAX as u64)),
                to_i(q.to.min(i64::MAX as u64)),
            ],
        )?;
        let mut out = Vec::new();
        for r in rows {
            out.push(UsageWindow {
                device: (id(r.get(0)?)?, id(r.get(1)?)?),
                chain: to_u(r.get(10)?),
                window: to_u(r.get(2)?),
                last_seq: to_u(r.get(3)?),
                closed: r.get(4)?,
                start: to_u(r.get(5)?),
                end: to_u(r.get(6)?),
                counters: UsageCounters {
                    peak_vm_count: r.get(7)?,
                    refusals: r.get(8)?,
                    grace_seconds: json(&r.get::<String>(9)?)?,
                },
            });
        }
        Ok(out)
    }

    /// The stored bundle `seq` of a device (tests and diagnostics).
    pub fn device_seq(&self, key: &DeviceKey) -> Result<Option<u64>, LedgerError> {
        query(
            &self.db,
            "SELECT bundle_seq FROM devices WHERE tenant = ?1 AND device = ?2",
            vals![key.0.as_str(), key.1.as_str()],
        )?
        .first()
        .map(|r| r.get::<i64>(0).map(to_u))
        .transpose()
    }
}

const MIGRATIONS_LEN: u32 = schema::MIGRATIONS.len() as u32;

fn save_subscription(out: &mut Writes, s: &Subscription) -> Result<(), LedgerError> {
    out.exec(
        "INSERT INTO subscriptions (id, name, owner, claim_key, term_start, term_end)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)
         ON CONFLICT(id) DO UPDATE SET name = excluded.name, owner = excluded.owner,
             claim_key = excluded.claim_key, term_start = excluded.term_start,
             term_end = excluded.term_end",
        vals![
            s.id.as_str(),
            s.name,
            s.owner.as_ref().map(|o| o.as_str()),
            s.claim_key,
            to_i(s.start),
            to_i(s.end)
        ],
    )?;
    out.exec(
        "DELETE FROM entitlements WHERE subscription = ?1",
        vals![s.id.as_str()],
    )?;
    for e in &s.entitlements {
        out.exec(
            "INSERT INTO entitlements (subscription, sku, seat_limit) VALUES (?1, ?2, ?3)",
            vals![s.id.as_str(), e.sku.as_str(), e.limit],
        )?;
    }
    Ok(())
}

/// Upserts one usage window by its key: an open window's row follows its latest report, and
/// the closing report's counters replace it once, for good.
fn save_usage_window(out: &mut Writes, w: &UsageWindow) -> Result<(), LedgerError> {
    out.exec(
        "INSERT INTO usage_windows (tenant, device, window_seq, last_seq, closed, period_start,
             period_end, peak_vm_count, refusals, grace_seconds, chain)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)
         ON CONFLICT(tenant, device, chain, window_seq) DO UPDATE SET last_seq = excluded.last_seq,
             closed = excluded.closed, period_start = excluded.period_start,
             period_end = excluded.period_end, peak_vm_count = excluded.peak_vm_count,
             refusals = excluded.refusals, grace_seconds = excluded.grace_seconds
         WHERE usage_windows.closed = 0",
        vals![
            w.device.0.as_str(),
            w.device.1.as_str(),
            to_i(w.window),
            to_i(w.last_seq),
            w.closed,
            to_i(w.start),
            to_i(w.end),
            w.counters.peak_vm_count,
            w.counters.refusals,
            to_json(&w.counters.grace_seconds)?,
            to_i(w.chain),
        ],
    )?;
    Ok(())
}

/// Writes one policy row, or deletes it when the policy is gone (everything inherits).
fn save_policy(
    out: &mut Writes,
    scope: &str,
    id: &str,
    policy: Option<&crate::engine::policy::Policy>,
) -> Result<(), LedgerError> {
    match policy {
        Some(p) => out.exec(
            "INSERT INTO license_policies (scope, id, policy) VALUES (?1, ?2, ?3)
             ON CONFLICT (scope, id) DO UPDATE SET policy = excluded.policy",
            vals![scope, id, to_json(p)?],
        )?,
        None => out.exec(
            "DELETE FROM license_policies WHERE scope = ?1 AND id = ?2",
            vals![scope, id],
        )?,
    };
    Ok(())
}

/// The columns of `devices`, in the order of [`device_row`].
const DEVICE_COLUMNS: [ColumnKind; 23] = {
    use ColumnKind::{Blob as B, Int as I, Text as T};
    [
        T, T, B, T, T, T, T, T, I, T, I, I, I, I, I, I, I, I, T, T, T, T, T,
    ]
};
const SEAT_COLUMNS: [ColumnKind; 7] = {
    use ColumnKind::{Int as I, Text as T};
    [T, T, T, T, T, I, I]
};
const SEAT_EXTRA_COLUMNS: [ColumnKind; 6] = {
    use ColumnKind::{Int as I, Text as T};
    [T, T, T, I, T, T]
};
const PLACEMENT_COLUMNS: [ColumnKind; 3] = [ColumnKind::Text; 3];

/// The upsert of `devices` rows from `$source` (`VALUES …` or a `SELECT`), in the column
/// order of [`device_row`]: one text for the per-row and the bulk writes.
macro_rules! upsert_devices {
    ($source:literal) => {
        concat!(
            "INSERT INTO devices (tenant, device, device_key, model, serial, product_class,
                 firmware_version, agent_version, vm_count, services_wanted, first_seen,
                 last_report_at, reported_clock, clock_rollback, reported_seq, bundle_seq,
                 bundle_issued_at, bundle_refresh, bundle_basis, unassigned, violation_since,
                 offline, usage) ",
            $source,
            " ON CONFLICT(tenant, device) DO UPDATE SET device_key = excluded.device_key,
                 model = excluded.model, serial = excluded.serial,
                 product_class = excluded.product_class,
                 firmware_version = excluded.firmware_version,
                 agent_version = excluded.agent_version, vm_count = excluded.vm_count,
                 services_wanted = excluded.services_wanted,
                 last_report_at = excluded.last_report_at,
                 reported_clock = excluded.reported_clock,
                 clock_rollback = excluded.clock_rollback, reported_seq = excluded.reported_seq,
                 bundle_seq = excluded.bundle_seq, bundle_issued_at = excluded.bundle_issued_at,
                 bundle_refresh = excluded.bundle_refresh, bundle_basis = excluded.bundle_basis,
                 unassigned = excluded.unassigned, violation_since = excluded.violation_since,
                 offline = excluded.offline, usage = excluded.usage"
        )
    };
}

/// A device's row of `devices`.
fn device_row(d: &Device) -> Result<Vec<Value>, LedgerError> {
    let basis = d.bundle.basis.as_ref().map(to_json).transpose()?;
    Ok(vals![
        d.tenant.as_str(),
        d.id.as_str(),
        &d.key.0[..],
        d.model,
        d.serial,
        d.product_class,
        d.firmware_version,
        d.agent_version,
        d.vm_count,
        to_json(&d.services_wanted)?,
        to_i(d.first_seen),
        to_i(d.last_report_at),
        to_i(d.reported_clock),
        d.clock_rollback,
        to_i(d.reported_seq),
        to_i(d.bundle.seq),
        to_i(d.bundle.issued_at),
        to_i(d.bundle.refresh_after),
        basis,
        to_json(&d.unassigned)?,
        to_json(&d.violation_since)?,
        to_json(&d.offline)?,
        to_json(&d.usage)?,
    ])
}

/// A device's rows of `seats`.
fn seat_rows(d: &Device) -> Vec<Vec<Value>> {
    d.seats
        .iter()
        .map(|(service, seat)| {
            vals![
                d.tenant.as_str(),
                d.id.as_str(),
                service.as_str(),
                seat.subscription.as_str(),
                seat.sku.as_str(),
                to_i(seat.since),
                seat.ends_at.map(to_i)
            ]
        })
        .collect()
}

/// A device's rows of `seat_assignments` (migration 5): seats with extras only, so a ledger
/// written before them reads the same.
fn seat_extra_rows(d: &Device) -> Result<Vec<Vec<Value>>, LedgerError> {
    let mut rows = Vec::new();
    for (service, seat) in &d.seats {
        if seat.quantity == 1 && seat.assigned.is_none() && seat.datacenter.is_none() {
            continue;
        }
        let vms = seat
            .assigned
            .as_ref()
            .map(|a| to_json(&a.virtual_machines))
            .transpose()?;
        rows.push(vals![
            d.tenant.as_str(),
            d.id.as_str(),
            service.as_str(),
            seat.quantity,
            vms,
            seat.datacenter
        ]);
    }
    Ok(rows)
}

/// A device's row of `device_placement`, if it is placed in a datacenter.
fn placement_row(d: &Device) -> Option<Vec<Value>> {
    d.datacenter
        .as_ref()
        .map(|dc| vals![d.tenant.as_str(), d.id.as_str(), dc])
}

/// Stores a device: its row, and its seat and placement rows in place of the old ones
/// (`new`: it has none yet, see [`Dirty::new_devices`]).
fn save_device(out: &mut Writes, d: &Device, new: bool) -> Result<(), LedgerError> {
    out.exec(
        upsert_devices!(
            "VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17,
                 ?18, ?19, ?20, ?21, ?22, ?23)"
        ),
        device_row(d)?,
    )?;
    if !new {
        let key = || vals![d.tenant.as_str(), d.id.as_str()];
        out.exec("DELETE FROM seats WHERE tenant = ?1 AND device = ?2", key())?;
        out.exec(
            "DELETE FROM seat_assignments WHERE tenant = ?1 AND device = ?2",
            key(),
        )?;
        out.exec(
            "DELETE FROM device_placement WHERE tenant = ?1 AND device = ?2",
            key(),
        )?;
    }
    for row in seat_extra_rows(d)? {
        out.exec(
            "INSERT INTO seat_assignments (tenant, device, service, quantity, virtual_machines,
                 datacenter) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            row,
        )?;
    }
    if let Some(row) = placement_row(d) {
        out.exec(
            "INSERT INTO device_placement (tenant, device, datacenter) VALUES (?1, ?2, ?3)",
            row,
        )?;
    }
    for row in seat_rows(d) {
        out.exec(
            "INSERT INTO seats (tenant, device, service, subscription, sku, since, ends_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            row,
        )?;
    }
    Ok(())
}

/// The same as [`save_device`] for many devices at once, in seven statements whatever their
/// number (PostgreSQL: each column an array, `unnest`ed). A statement is a round trip to the
/// server, and a turn of 64 reports wrote ~600 of them one by one: this is what the report
/// batch costs on PostgreSQL. Each device comes with whether it is new (no old rows to
/// delete, see [`Dirty::new_devices`]).
fn save_devices_bulk(out: &mut Writes, devices: &[(&Device, bool)]) -> Result<(), LedgerError> {
    if devices.is_empty() {
        return Ok(());
    }
    let rows = devices
        .iter()
        .map(|(d, _)| device_row(d))
        .collect::<Result<Vec<_>, _>>()?;
    out.exec(
        upsert_devices!(
            "SELECT * FROM unnest(?1::text[], ?2::text[], ?3::bytea[], ?4::text[], ?5::text[],
                 ?6::text[], ?7::text[], ?8::text[], ?9::bigint[], ?10::text[], ?11::bigint[],
                 ?12::bigint[], ?13::bigint[], ?14::bigint[], ?15::bigint[], ?16::bigint[],
                 ?17::bigint[], ?18::bigint[], ?19::text[], ?20::text[], ?21::text[], ?22::text[],
                 ?23::text[])"
        ),
        columns(&rows, &DEVICE_COLUMNS)?,
    )?;
    let keys: Vec<Vec<Value>> = devices
        .iter()
        .filter(|(_, new)| !new)
        .map(|(d, _)| vals![d.tenant.as_str(), d.id.as_str()])
        .collect();
    if !keys.is_empty() {
        let keys = columns(&keys, &[ColumnKind::Text; 2])?;
        out.exec(
            "DELETE FROM seats WHERE (tenant, device) IN
                 (SELECT * FROM unnest(?1::text[], ?2::text[]))",
            keys.clone(),
        )?;
        out.exec(
            "DELETE FROM seat_assignments WHERE (tenant, device) IN
                 (SELECT * FROM unnest(?1::text[], ?2::text[]))",
            keys.clone(),
        )?;
        out.exec(
            "DELETE FROM device_placement WHERE (tenant, device) IN
                 (SELECT * FROM unnest(?1::text[], ?2::text[]))",
            keys,
        )?;
    }
    let mut extras = Vec::new();
    for (d, _) in devices {
        extras.extend(seat_extra_rows(d)?);
    }
    if !extras.is_empty() {
        out.exec(
            "INSERT INTO seat_assignments (tenant, device, service, quantity, virtual_machines,
                 datacenter)
             SELECT * FROM unnest(?1::text[], ?2::text[], ?3::text[], ?4::bigint[], ?5::text[],
                 ?6::text[])",
            columns(&extras, &SEAT_EXTRA_COLUMNS)?,
        )?;
    }
    let placements: Vec<Vec<Value>> = devices
        .iter()
        .filter_map(|(d, _)| placement_row(d))
        .collect();
    if !placements.is_empty() {
        out.exec(
            "INSERT INTO device_placement (tenant, device, datacenter)
             SELECT * FROM unnest(?1::text[], ?2::text[], ?3::text[])",
            columns(&placements, &PLACEMENT_COLUMNS)?,
        )?;
    }
    let seats: Vec<Vec<Value>> = devices.iter().flat_map(|(d, _)| seat_rows(d)).collect();
    if !seats.is_empty() {
        out.exec(
            "INSERT INTO seats (tenant, device, service, subscription, sku, since, ends_at)
             SELECT * FROM unnest(?1::text[], ?2::text[], ?3::text[], ?4::text[], ?5::text[],
                 ?6::bigint[], ?7::bigint[])",
            columns(&seats, &SEAT_COLUMNS)?,
        )?;
    }
    Ok(())
}

/// `(every row, the rows of the devices the change log names)` of a device query: the same
/// `SELECT … FROM table` with and without the change-log filter (static text, so PostgreSQL's
/// prepared statements are cached by it).
macro_rules! device_sql {
    ($select:literal) => {
        (
            $select,
            concat!(
                $select,
                " WHERE (tenant, device) IN (SELECT tenant, device FROM licd_changes
                   WHERE generation > ?1 AND generation <= ?2 AND kind = 'device')"
            ),
        )
    };
}

/// Which devices [`load_devices`] reads.
#[derive(Debug, Clone, Copy)]
enum DeviceRows {
    /// Every device.
    All,
    /// Those the change log names in the generations after the first and up to the second
    /// (PostgreSQL only: the log is a replica's table).
    Changed(i64, i64),
}

impl DeviceRows {
    /// Runs the form of `sql` (from [`device_sql!`]) these rows need.
    fn query(self, c: &Db, sql: (&'static str, &'static str)) -> Result<Vec<Row>, LedgerError> {
        match self {
            DeviceRows::All => query(c, sql.0, vec![]),
            DeviceRows::Changed(since, upto) => query(c, sql.1, vals![since, upto]),
        }
    }
}

/// Loads devices with their seats, seat extras and placements.
fn load_devices(c: &Db, rows: DeviceRows) -> Result<BTreeMap<DeviceKey, Device>, LedgerError> {
    let mut devices = BTreeMap::new();
    for r in rows.query(
        c,
        device_sql!(
            "SELECT tenant, device, device_key, model, serial, product_class, firmware_version,
                agent_version, vm_count, services_wanted, first_seen, last_report_at,
                reported_clock, clock_rollback, reported_seq, bundle_seq, bundle_issued_at,
                bundle_refresh, bundle_basis, unassigned, violation_since, offline, usage
         FROM devices"
        ),
    )? {
        let key: Vec<u8> = r.get(2)?;
        let key: [u8; 32] = key
            .try_into()
            .map_err(|_| corrupt("device key is not 32 bytes"))?;
        let basis: Option<String> = r.get(18)?;
        let d = Device {
            tenant: id(r.get(0)?)?,
            id: id(r.get(1)?)?,
            key: PublicKey(key),
            model: r.get(3)?,
            serial: r.get(4)?,
            product_class: r.get(5)?,
            firmware_version: r.get(6)?,
            agent_version: r.get(7)?,
            vm_count: r.get(8)?,
            services_wanted: json(&r.get::<String>(9)?)?,
            first_seen: to_u(r.get(10)?),
            last_report_at: to_u(r.get(11)?),
            reported_clock: to_u(r.get(12)?),
            clock_rollback: r.get(13)?,
            reported_seq: to_u(r.get(14)?),
            seats: BTreeMap::new(),
            unassigned: json(&r.get::<String>(19)?)?,
            violation_since: json(&r.get::<String>(20)?)?,
            bundle: BundleState {
                seq: to_u(r.get(15)?),
                issued_at: to_u(r.get(16)?),
                refresh_after: to_u(r.get(17)?),
                basis: basis.as_deref().map(json).transpose()?,
            },
            offline: json(&r.get::<String>(21)?)?,
            datacenter: None,
            usage: json(&r.get::<String>(22)?)?,
        };
        devices.insert(d.key(), d);
    }
    for r in rows.query(
        c,
        device_sql!("SELECT tenant, device, service, subscription, sku, since, ends_at FROM seats"),
    )? {
        let key: DeviceKey = (id(r.get(0)?)?, id(r.get(1)?)?);
        let seat = Seat {
            subscription: id(r.get(3)?)?,
            sku: id(r.get(4)?)?,
            since: to_u(r.get(5)?),
            ends_at: r.get::<Option<i64>>(6)?.map(to_u),
            ..Seat::new(id(r.get(3)?)?, id(r.get(4)?)?, 0)
        };
        devices
            .get_mut(&key)
            .ok_or_else(|| corrupt("seat of an unknown device"))?
            .seats
            .insert(id(r.get(2)?)?, seat);
    }
    for r in rows.query(
        c,
        device_sql!(
            "SELECT tenant, device, service, quantity, virtual_machines, datacenter
             FROM seat_assignments"
        ),
    )? {
        let key: DeviceKey = (id(r.get(0)?)?, id(r.get(1)?)?);
        let service: licd_protocol::ServiceName = id(r.get(2)?)?;
        let seat = devices
            .get_mut(&key)
            .and_then(|d| d.seats.get_mut(&service))
            .ok_or_else(|| corrupt("seat assignment of an unknown seat"))?;
        seat.quantity = r.get(3)?;
        seat.assigned = r
            .get::<Option<String>>(4)?
            .map(|v| json(&v).map(|virtual_machines| ComputerAssignment { virtual_machines }))
            .transpose()?;
        seat.datacenter = r.get(5)?;
    }
    for r in rows.query(
        c,
        device_sql!("SELECT tenant, device, datacenter FROM device_placement"),
    )? {
        let key: DeviceKey = (id(r.get(0)?)?, id(r.get(1)?)?);
        devices
            .get_mut(&key)
            .ok_or_else(|| corrupt("placement of an unknown device"))?
            .datacenter = Some(r.get(2)?);
    }
    Ok(devices)
}

/// Loads the Snow assignments (migration 5; seat extras and host placements are the devices',
/// [`load_devices`]).
fn load_snow(c: &Db, state: &mut State) -> Result<(), LedgerError> {
    for r in query(
        c,
        "SELECT kind, target, subscription, sku, quantity, virtual_machines, created_at
         FROM snow_assignments",
        vec![],
    )? {
        let kind = match r.get::<String>(0)?.as_str() {
            "datacenter" => AssignmentKind::Datacenter,
            "organization" => AssignmentKind::Organization,
            "site" => AssignmentKind::Site,
            "user" => AssignmentKind::User,
            other => return Err(corrupt(format!("assignment kind {other}"))),
        };
        let a = SnowAssignment {
            kind,
            target: r.get(1)?,
            subscription: id(r.get(2)?)?,
            sku: id(r.get(3)?)?,
            quantity: r.get(4)?,
            virtual_machines: json(&r.get::<String>(5)?)?,
            created_at: to_u(r.get(6)?),
        };
        state.snow.insert(a.key(), a);
    }
    Ok(())
}

/// Writes (or deletes) one Snow assignment.
fn save_snow(
    out: &mut Writes,
    key: &SnowKey,
    a: Option<&SnowAssignment>,
) -> Result<(), LedgerError> {
    out.exec(
        "DELETE FROM snow_assignments WHERE license = ?1 AND kind = ?2 AND target = ?3",
        vals![key.0, key.1.as_str(), key.2],
    )?;
    if let Some(a) = a {
        out.exec(
            "INSERT INTO snow_assignments (license, kind, target, subscription, sku, quantity,
                 virtual_machines, created_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            vals![
                key.0,
                key.1.as_str(),
                key.2,
                a.subscription.as_str(),
                a.sku.as_str(),
                a.quantity,
                to_json(&a.virtual_machines)?,
                to_i(a.created_at)
            ],
        )?;
    }
    Ok(())
}

/// Loads the site delegations and their reservations (migration 7).
fn load_delegations(c: &Db, state: &mut State) -> Result<(), LedgerError> {
    for r in query(
        c,
        "SELECT id, tenant, site, relay_key, max_lease, not_before, not_after, state,
                created_at, ended_at, signed
         FROM delegations",
        vec![],
    )? {
        let state_word: String = r.get(7)?;
        let d = DelegationRecord {
            id: r.get(0)?,
            tenant: id(r.get(1)?)?,
            site: id(r.get(2)?)?,
            relay_key: PublicKey::from_hex(&r.get::<String>(3)?)
                .map_err(|_| corrupt("a delegation's relay key is not 64 hex digits"))?,
            max_lease: to_u(r.get(4)?),
            not_before: to_u(r.get(5)?),
            not_after: to_u(r.get(6)?),
            state: match state_word.as_str() {
                "active" => DelegationState::Active,
                "returned" => DelegationState::Returned,
                "revoked" => DelegationState::Revoked,
                other => return Err(corrupt(format!("delegation state {other}"))),
            },
            created_at: to_u(r.get(8)?),
            ended_at: r.get::<Option<i64>>(9)?.map(to_u),
            signed: hex::decode(r.get::<String>(10)?)
                .map_err(|_| corrupt("a delegation's signed bytes are not hex"))?,
            pools: Vec::new(),
        };
        state.delegations.insert(d.id.clone(), d);
    }
    for r in query(
        c,
        "SELECT delegation, service, subscription, sku, seats FROM delegation_seats
         ORDER BY delegation, pool, position",
        vec![],
    )? {
        let owner: String = r.get(0)?;
        let service: licd_protocol::ServiceName = id(r.get(1)?)?;
        let seats: u32 = r.get(4)?;
        let reservation = Reservation {
            subscription: id(r.get(2)?)?,
            sku: id(r.get(3)?)?,
            seats,
        };
        let d = state
            .delegations
            .get_mut(&owner)
            .ok_or_else(|| corrupt("seats of an unknown delegation"))?;
        match d.pools.last_mut() {
            Some(p) if p.service == service => {
                p.seats = p.seats.saturating_add(seats);
                p.reserved.push(reservation);
            }
            _ => d.pools.push(DelegatedPool {
                service,
                seats,
                reserved: vec![reservation],
            }),
        }
    }
    Ok(())
}

/// Writes (or deletes) one delegation with its reservations.
fn save_delegation(
    out: &mut Writes,
    key: &str,
    d: Option<&DelegationRecord>,
) -> Result<(), LedgerError> {
    out.exec(
        "DELETE FROM delegation_seats WHERE delegation = ?1",
        vals![key],
    )?;
    let Some(d) = d else {
        out.exec("DELETE FROM delegations WHERE id = ?1", vals![key])?;
        return Ok(());
    };
    // An upsert, not delete + insert: the leases its relay reported reference the row.
    out.exec(
        "INSERT INTO delegations (id, tenant, site, relay_key, max_lease, not_before, not_after,
             state, created_at, ended_at, signed)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)
         ON CONFLICT (id) DO UPDATE SET tenant = excluded.tenant, site = excluded.site,
             relay_key = excluded.relay_key, max_lease = excluded.max_lease,
             not_before = excluded.not_before, not_after = excluded.not_after,
             state = excluded.state, created_at = excluded.created_at,
             ended_at = excluded.ended_at, signed = excluded.signed",
        vals![
            d.id,
            d.tenant.as_str(),
            d.site.as_str(),
            d.relay_key.to_hex(),
            to_i(d.max_lease),
            to_i(d.not_before),
            to_i(d.not_after),
            d.state.as_str(),
            to_i(d.created_at),
            d.ended_at.map(to_i),
            hex::encode(&d.signed)
        ],
    )?;
    for (pool, p) in d.pools.iter().enumerate() {
        for (position, r) in p.reserved.iter().enumerate() {
            out.exec(
                "INSERT INTO delegation_seats (delegation, pool, position, service,
                     subscription, sku, seats) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                vals![
                    d.id,
                    to_i(pool as u64),
                    to_i(position as u64),
                    p.service.as_str(),
                    r.subscription.as_str(),
                    r.sku.as_str(),
                    r.seats
                ],
            )?;
        }
    }
    Ok(())
}

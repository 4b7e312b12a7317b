//! The PostgreSQL backend: one session on a thread of its own, reconnecting and retrying a
//! transaction when the server goes away for a while.
//!
//! Why a thread: the controller is synchronous (the engine under a `std` mutex, called from
//! tokio tasks), and the synchronous `postgres` client runs its own runtime, which panics when
//! entered from a tokio worker. `block_in_place` would panic on the current-thread runtimes the
//! tests use, and making the whole controller async would change every caller for no gain: a
//! ledger turn is one round of statements the caller waits for anyway. So the client lives on
//! one plain thread and the ledger sends it jobs over a channel and waits for the answer —
//! the same blocking the SQLite backend does on its disk.
//!
//! TLS: the URL's libpq options `sslmode=verify-full` (or `require`, which here means the
//! same) and `sslrootcert=FILE` make the connection TLS with rustls, the server's certificate
//! checked against that CA (or the system's roots) and its name against the URL's host.
//! libpq's `require` accepts any certificate; a controller sending its ledger password would
//! then talk to whoever answers, so it is not offered. Without `sslmode` the connection is
//! plain, as before (`prefer` too: no unverified opportunistic TLS).
//!
//! Retries: a lost connection (server restart, failover, network) or a serialization failure
//! makes the job run again on a fresh connection, with backoff, for up to the retry budget;
//! each job is a whole transaction of idempotent upserts and deletes, so running one twice
//! after a commit whose answer was lost stores the same. Past the budget the caller gets
//! the error (the controller then keeps its changes to retry on the next commit).

use std::collections::HashMap;
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use postgres::error::SqlState;
use postgres::types::{IsNull, ToSql, Type};
use postgres::{Client, NoTls, Statement};
use tokio_postgres_rustls::MakeRustlsConnect;

use super::sql::{to_postgres_params, Column, Row, Stmt, Value};
use super::LedgerError;

/// How long a ledger call keeps retrying a lost server before it fails (a PostgreSQL restart
/// or a replica promotion takes seconds).
pub const DEFAULT_RETRY: Duration = Duration::from_secs(30);

/// First and longest pause between reconnection attempts.
const BACKOFF_START: Duration = Duration::from_millis(50);
const BACKOFF_MAX: Duration = Duration::from_secs(2);

/// A job for the session thread.
type Job = Box<dyn FnOnce(&mut Session) + Send>;

/// A connection to PostgreSQL, held by its own thread.
pub struct PgLedger {
    jobs: Option<mpsc::Sender<Job>>,
    thread: Option<JoinHandle<()>>,
    /// The URL without its password (logs, Debug).
    shown: String,
}

impl std::fmt::Debug for PgLedger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgLedger")
            .field("url", &self.shown)
            .finish()
    }
}

/// The URL with any password replaced by `***`.
pub fn redact(url: &str) -> String {
    // postgres://user:secret@host/db → postgres://user:***@host/db
    let Some(scheme_end) = url.find("://") else {
        return url.to_string();
    };
    let rest = &url[scheme_end + 3..];
    let auth_end = rest.find('@');
    let path_start = rest.find('/').unwrap_or(rest.len());
    match auth_end {
        Some(at) if at < path_start => match rest[..at].find(':') {
            Some(colon) => format!(
                "{}{}:***{}",
                &url[..scheme_end + 3],
                &rest[..colon],
                &rest[at..]
            ),
            None => url.to_string(),
        },
        _ => url.to_string(),
    }
}

impl PgLedger {
    /// Connects to `url` (e.g. `postgres://licd@db.example/licd`) and starts the session
    /// thread. The first connection is tried for up to `retry` too, so replicas may start
    /// before the database.
    pub fn connect(url: &str, retry: Duration) -> Result<Self, LedgerError> {
        let shown = redact(url);
        let bad =
            |e: &dyn std::fmt::Display| LedgerError::Postgres(format!("bad URL {shown}: {e}"));
        let (driver_url, tls) = tls_options(url).map_err(|e| bad(&e))?;
        let config: postgres::Config = driver_url.parse().map_err(|e| bad(&e))?;
        let (tx, rx) = mpsc::channel::<Job>();
        let mut session = Session {
            config,
            tls,
            shown: shown.clone(),
            client: None,
            cache: HashMap::new(),
            retry,
            epoch: 0,
            turn: None,
            turn_generation: 0,
        };
        let thread = std::thread::Builder::new()
            .name("licd-ledger-pg".into())
            .spawn(move || {
                for job in rx {
                    job(&mut session);
                }
            })
            .map_err(|e| LedgerError::Postgres(format!("start the ledger thread: {e}")))?;
        let pg = Self {
            jobs: Some(tx),
            thread: Some(thread),
            shown,
        };
        let tls = pg.call(|s| {
            s.run(|_, _| Ok(()))?;
            Ok(s.tls.is_some())
        })?;
        tracing::info!(url = %pg.shown, tls, "ledger on PostgreSQL");
        Ok(pg)
    }

    /// Runs `f` on the session thread and waits for its answer.
    pub(crate) fn call<R: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Session) -> Result<R, LedgerError> + Send + 'static,
    ) -> Result<R, LedgerError> {
        let gone = || LedgerError::Postgres("the ledger thread has stopped".into());
        let (tx, rx) = mpsc::sync_channel(1);
        let jobs = self.jobs.as_ref().ok_or_else(gone)?;
        jobs.send(Box::new(move |s: &mut Session| {
            let _ = tx.send(f(s));
        }))
        .map_err(|_| gone())?;
        rx.recv().map_err(|_| gone())?
    }

    /// Runs a query.
    pub(crate) fn query(
        &self,
        sql: &'static str,
        params: Vec<Value>,
    ) -> Result<Vec<Row>, LedgerError> {
        self.call(move |s| s.run(|c, cache| query_on(c, cache, sql, &params)))
    }

    /// Runs `read` (queries through this ledger) on one snapshot of the database. Outside a
    /// turn, in a `REPEATABLE READ READ ONLY` transaction: without it each query saw the
    /// database as of its own start, so a replica starting while others wrote could read a
    /// seat whose device it had not read (`seat of an unknown device`, seen in
    /// `tests/tests/replicas.rs`). Inside a turn, as part of the turn's (its lock keeps every
    /// writer out). A connection lost meanwhile makes `read` run again on a new snapshot.
    pub(crate) fn snapshot<R>(
        &self,
        mut read: impl FnMut() -> Result<R, LedgerError>,
    ) -> Result<R, LedgerError> {
        const ATTEMPTS: u32 = 3;
        let mut attempt = 0;
        loop {
            attempt += 1;
            let opened = self.call(|s| {
                if s.turn.is_some() {
                    return Ok(false);
                }
                s.run(|c, _| c.batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY"))?;
                s.turn = Some(s.epoch);
                Ok(true)
            })?;
            if !opened {
                return read();
            }
            let r = read();
            // Still the snapshot's connection: the reads were all on it.
            let closed = self.call(|s| {
                let done = s
                    .turn_client()
                    .and_then(|(c, _)| c.batch_execute("COMMIT").map_err(|e| pg_error(&e)));
                if done.is_err() {
                    s.rollback();
                }
                s.turn = None;
                done
            });
            match closed {
                Ok(()) => return r,
                Err(e) if attempt >= ATTEMPTS => return Err(e),
                Err(e) => {
                    tracing::warn!(error = %e, attempt, "PostgreSQL ledger read lost its connection; reading again")
                }
            }
        }
    }

    /// Runs `stmts` in one transaction (inside a turn: as part of the turn's).
    pub(crate) fn write(&self, stmts: Vec<Stmt>) -> Result<(), LedgerError> {
        if stmts.is_empty() {
            return Ok(());
        }
        self.call(move |s| {
            if s.turn.is_some() {
                let (c, cache) = s.turn_client()?;
                for st in &stmts {
                    let prepared = prepare(c, cache, st.sql).map_err(|e| pg_error(&e))?;
                    c.execute(&prepared, &refs(&st.params))
                        .map_err(|e| pg_error(&e))?;
                }
                return Ok(());
            }
            s.run(|c, cache| {
                let mut tx = c.transaction()?;
                for st in &stmts {
                    let prepared = prepare(&mut tx, cache, st.sql)?;
                    tx.execute(&prepared, &refs(&st.params))?;
                }
                tx.commit()
            })
        })
    }
}

/// Key of the transaction-scoped advisory lock every controller turn takes ("lturn").
pub const TURN_LOCK: i64 = 0x006c_7475_726e;

/// Generations the change log keeps: a replica further behind reloads everything. Replicas
/// sharing the reports take turns, so each is a few generations behind at most; one that was
/// idle longer pays one whole reload.
pub const CHANGES_KEPT: i64 = 8_192;

/// What a turn tells the other replicas it changed, in the change log (`licd_changes`), so
/// they catch up by reading those records instead of the whole ledger.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChangeLog {
    /// Only these devices (tenant, device id); none: only history (usage windows) changed.
    Devices(Vec<(String, String)>),
    /// Anything else: the others reload everything.
    All,
}

impl PgLedger {
    /// Starts a turn: opens a transaction, waits for the turn lock (every replica's turns
    /// on this database run one at a time), and returns the ledger's generation. Waiting for
    /// a lost server is retried like any call.
    pub(crate) fn begin_turn(&self) -> Result<i64, LedgerError> {
        self.call(|s| {
            if s.turn.is_some() {
                s.rollback();
            }
            // One round trip for the three (a turn's fixed cost is round trips: issue 19).
            let g = s.run(|c, _| {
                let answer = c.simple_query(&format!(
                    "BEGIN; SELECT pg_advisory_xact_lock({TURN_LOCK}); \
                     SELECT generation FROM licd_replication"
                ));
                let generation = answer.as_ref().ok().and_then(|messages| {
                    messages.iter().rev().find_map(|m| match m {
                        postgres::SimpleQueryMessage::Row(r) => r.get(0)?.parse::<i64>().ok(),
                        _ => None,
                    })
                });
                if generation.is_none() {
                    let _ = c.batch_execute("ROLLBACK");
                }
                answer.map(|_| generation)
            })?;
            let g = g.ok_or_else(|| {
                LedgerError::Corrupt("licd_replication holds no generation".into())
            })?;
            s.turn = Some(s.epoch);
            s.turn_generation = g;
            Ok(g)
        })
    }

    /// Ends a turn: runs `stmts`, moves the generation on when anything was written, and
    /// commits. The turn fails whole when its connection was lost since it began.
    pub(crate) fn end_turn(&self, stmts: Vec<Stmt>, log: ChangeLog) -> Result<i64, LedgerError> {
        self.call(move |s| {
            let generation = s.turn_generation;
            let r = (|| {
                let (c, cache) = s.turn_client()?;
                let step = |e: postgres::Error| pg_error(&e);
                for st in &stmts {
                    let prepared = prepare(c, cache, st.sql).map_err(step)?;
                    c.execute(&prepared, &refs(&st.params)).map_err(step)?;
                }
                // Nothing written: the generation is the one read at the start (the lock
                // kept every other writer out since).
                let g = if stmts.is_empty() {
                    generation
                } else {
                    next_generation(c, cache, &log).map_err(step)?
                };
                c.batch_execute("COMMIT").map_err(step)?;
                Ok(g)
            })();
            if r.is_err() {
                s.rollback();
            }
            s.turn = None;
            r
        })
    }

    /// Ends a turn without writing anything (the engine refused the operation).
    pub(crate) fn abort_turn(&self) {
        let _ = self.call(|s| {
            s.rollback();
            Ok(())
        });
    }

    /// The ledger's generation now (no lock: a read outside any turn).
    pub(crate) fn generation(&self) -> Result<i64, LedgerError> {
        self.call(|s| {
            s.run(|c, _| {
                Ok(c.query_one("SELECT generation FROM licd_replication", &[])?
                    .get::<_, i64>(0))
            })
        })
    }
}

/// Moves the generation on and writes the new generation's entry in the change log, in one
/// statement (every generation gets at least one row, so a reader can tell a covered span
/// from a gap); prunes old entries now and then. Returns the new generation.
fn next_generation(
    c: &mut Client,
    cache: &mut Cache,
    log: &ChangeLog,
) -> Result<i64, postgres::Error> {
    let (kind, tenants, devices): (&str, Vec<&str>, Vec<&str>) = match log {
        ChangeLog::Devices(keys) if !keys.is_empty() => {
            let (t, d) = keys.iter().map(|(t, d)| (t.as_str(), d.as_str())).unzip();
            ("device", t, d)
        }
        ChangeLog::Devices(_) => ("none", vec![""], vec![""]),
        ChangeLog::All => ("all", vec![""], vec![""]),
    };
    let st = prepare(
        c,
        cache,
        "WITH g AS (UPDATE licd_replication SET generation = generation + 1 RETURNING generation),
              logged AS (INSERT INTO licd_changes (generation, kind, tenant, device)
                         SELECT g.generation, $1, k.t, k.d
                         FROM g, unnest($2::text[], $3::text[]) AS k(t, d))
         SELECT generation FROM g",
    )?;
    let g: i64 = c.query_one(&st, &[&kind, &tenants, &devices])?.get(0);
    if g % 1_024 == 0 {
        let st = prepare(c, cache, "DELETE FROM licd_changes WHERE generation <= $1")?;
        c.execute(&st, &[&(g - CHANGES_KEPT)])?;
    }
    Ok(g)
}

fn pg_error(e: &postgres::Error) -> LedgerError {
    LedgerError::Postgres(describe(e))
}

impl Drop for PgLedger {
    fn drop(&mut self) {
        // Closing the channel ends the thread's loop; the client closes with it.
        self.jobs = None;
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Prepared statements by their portable SQL (the controller writes the same few for every
/// report; a new connection starts with an empty cache).
pub(crate) type Cache = HashMap<&'static str, Statement>;

/// The thread's state: the connection (when there is one) and how to make a new one.
pub(crate) struct Session {
    config: postgres::Config,
    /// TLS to the server (see the module's doc), or plain.
    tls: Option<MakeRustlsConnect>,
    shown: String,
    client: Option<Client>,
    cache: Cache,
    retry: Duration,
    /// Counts connections made: a turn is bound to the one it began on.
    epoch: u64,
    /// The epoch of the open turn's connection, while a turn is open.
    turn: Option<u64>,
    /// The generation the open turn began at.
    turn_generation: i64,
}

impl Session {
    /// The open turn's connection, if it is still the one the turn began on.
    fn turn_client(&mut self) -> Result<(&mut Client, &mut Cache), LedgerError> {
        let lost = || {
            LedgerError::Postgres(
                "the connection was lost during the turn; it was rolled back".into(),
            )
        };
        if self.turn != Some(self.epoch) {
            return Err(lost());
        }
        match self.client.as_mut() {
            Some(c) if !c.is_closed() => Ok((c, &mut self.cache)),
            _ => Err(lost()),
        }
    }

    /// Ends the open turn's transaction without its changes (a no-op when there is none).
    fn rollback(&mut self) {
        if self.turn.take() == Some(self.epoch) {
            if let Some(c) = self.client.as_mut() {
                if c.batch_execute("ROLLBACK").is_err() {
                    self.client = None;
                }
            }
        }
    }

    /// Runs `f` on a live connection, reconnecting and running it again when the connection
    /// was lost or the transaction must be retried, until the retry budget is spent.
    pub(crate) fn run<R>(
        &mut self,
        mut f: impl FnMut(&mut Client, &mut Cache) -> Result<R, postgres::Error>,
    ) -> Result<R, LedgerError> {
        let started = Instant::now();
        let mut pause = BACKOFF_START;
        let mut failures = 0u32;
        loop {
            let attempt = match self.client.as_mut() {
                Some(c) if !c.is_closed() => f(c, &mut self.cache),
                _ => match match &self.tls {
                    Some(tls) => self.config.connect(tls.clone()),
                    None => self.config.connect(NoTls),
                } {
                    Ok(mut c) => {
                        self.epoch += 1;
                        self.cache.clear();
                        let r = f(&mut c, &mut self.cache);
                        self.client = Some(c);
                        r
                    }
                    Err(e) => Err(e),
                },
            };
            match attempt {
                Ok(v) => {
                    if failures > 0 {
                        tracing::info!(url = %self.shown, failures, waited_ms = started.elapsed().as_millis() as u64,
                            "PostgreSQL ledger is back; the retried transaction went through");
                    }
                    return Ok(v);
                }
                Err(e) if retriable(&e) && started.elapsed() < self.retry => {
                    if failures == 0 {
                        tracing::warn!(url = %self.shown, error = %describe(&e), retry_for_secs = self.retry.as_secs(),
                            "PostgreSQL ledger call failed; reconnecting and retrying");
                    }
                    failures += 1;
                    if self.client.as_ref().is_none_or(|c| c.is_closed()) || !is_db_error(&e) {
                        self.client = None;
                    }
                    std::thread::sleep(pause);
                    pause = (pause * 2).min(BACKOFF_MAX);
                }
                Err(e) => {
                    if retriable(&e) {
                        tracing::error!(url = %self.shown, error = %describe(&e), failures,
                            "PostgreSQL ledger unreachable past the retry budget; giving up on this call");
                        self.client = None;
                    }
                    return Err(LedgerError::Postgres(describe(&e)));
                }
            }
        }
    }
}

/// The driver's error with the server's message (its `Display` says only "db error"), or
/// with its causes (a TLS handshake's says which certificate check failed).
pub(crate) fn describe(e: &postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => {
            let mut s = format!(
                "{}: {} (SQLSTATE {})",
                db.severity(),
                db.message(),
                db.code().code()
            );
            if let Some(d) = db.detail() {
                s.push_str("; ");
                s.push_str(d);
            }
            s
        }
        None => {
            let mut s = e.to_string();
            let mut cause = std::error::Error::source(e);
            while let Some(c) = cause {
                let text = c.to_string();
                // io::Error shows its inner error's text and also hands it out as its source.
                if !s.ends_with(&text) {
                    s.push_str(": ");
                    s.push_str(&text);
                }
                cause = c.source();
            }
            s
        }
    }
}

fn is_db_error(e: &postgres::Error) -> bool {
    e.as_db_error().is_some()
}

/// Worth running again: the connection is gone (restart, network, an administrator's kill),
/// the server is not ready yet or has no connection slot free, or PostgreSQL asks for a retry
/// (serialization, deadlock).
/// A certificate the TLS check refused is not: it stays refused.
fn retriable(e: &postgres::Error) -> bool {
    if e.is_closed() {
        return true;
    }
    if refused_by_tls(e) {
        return false;
    }
    match e.code() {
        Some(code) => {
            code.code().starts_with("08")
                || [
                    SqlState::ADMIN_SHUTDOWN,
                    SqlState::CRASH_SHUTDOWN,
                    SqlState::CANNOT_CONNECT_NOW,
                    // Every connection slot taken (replicas starting with other clients):
                    // one frees up soon.
                    SqlState::TOO_MANY_CONNECTIONS,
                    SqlState::T_R_SERIALIZATION_FAILURE,
                    SqlState::T_R_DEADLOCK_DETECTED,
                ]
                .contains(code)
        }
        // No SQLSTATE: an I/O error or a failed connect, not the server refusing the SQL.
        None => e.as_db_error().is_none(),
    }
}

/// Whether rustls refused the handshake (a certificate, a name, a protocol), somewhere in
/// `e`'s chain of causes. A reset during the handshake (a server restarting) is not this.
fn refused_by_tls(e: &postgres::Error) -> bool {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(c) = cause {
        let inner = c
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
            .map(|i| i as &(dyn std::error::Error + 'static));
        if c.is::<rustls::Error>() || inner.is_some_and(|i| i.is::<rustls::Error>()) {
            return true;
        }
        cause = c.source();
    }
    false
}

/// Takes the TLS options licd handles itself off `url` (libpq's names, see the module's doc):
/// returns the URL for the driver (`sslmode=require` when TLS is asked for, `sslrootcert`
/// removed) and the TLS connector, if any. A mode libpq knows but licd does not offer, or a CA
/// file without TLS, is an error rather than a quietly weaker connection.
pub(crate) fn tls_options(url: &str) -> Result<(String, Option<MakeRustlsConnect>), String> {
    let Some((base, query)) = url.split_once('?') else {
        return Ok((url.to_string(), None));
    };
    let mut tls = false;
    let mut root: Option<String> = None;
    let mut kept = form_urlencoded::Serializer::new(String::new());
    for (key, value) in form_urlencoded::parse(query.as_bytes()) {
        match (key.as_ref(), value.as_ref()) {
            ("sslmode", "require" | "verify-full") => {
                tls = true;
                kept.append_pair("sslmode", "require");
            }
            ("sslmode", "verify-ca") => {
                return Err(
                    "sslmode=verify-ca is not offered: the server's name is always checked \
                     (use sslmode=verify-full)"
                        .into(),
                )
            }
            ("sslmode", "allow") => {
                return Err("sslmode=allow is not offered (use verify-full, or disable)".into())
            }
            ("sslrootcert", path) => root = Some(path.to_string()),
            (k, v) => {
                kept.append_pair(k, v);
            }
        }
    }
    let kept = kept.finish();
    let driver_url = if kept.is_empty() {
        base.to_string()
    } else {
        format!("{base}?{kept}")
    };
    if !tls {
        return match root {
            Some(_) => Err("sslrootcert needs sslmode=verify-full".into()),
            None => Ok((driver_url, None)),
        };
    }
    // libpq's `sslrootcert=system` is the system's roots, as no sslrootcert at all is here.
    let ca = root.filter(|r| r != "system").map(std::path::PathBuf::from);
    let config =
        crate::tls::client_config(ca.as_deref()).map_err(|e| format!("sslrootcert: {e}"))?;
    Ok((driver_url, Some(MakeRustlsConnect::new((*config).clone()))))
}

fn prepare(
    c: &mut impl postgres::GenericClient,
    cache: &mut Cache,
    sql: &'static str,
) -> Result<Statement, postgres::Error> {
    if let Some(s) = cache.get(sql) {
        return Ok(s.clone());
    }
    let s = c.prepare(&to_postgres_params(sql))?;
    cache.insert(sql, s.clone());
    Ok(s)
}

fn refs(params: &[Value]) -> Vec<&(dyn ToSql + Sync)> {
    params.iter().map(|p| p as &(dyn ToSql + Sync)).collect()
}

/// Runs one query on `c` and converts its rows.
pub(crate) fn query_on(
    c: &mut impl postgres::GenericClient,
    cache: &mut Cache,
    sql: &'static str,
    params: &[Value],
) -> Result<Vec<Row>, postgres::Error> {
    let stmt = prepare(c, cache, sql)?;
    let rows = c.query(&stmt, &refs(params))?;
    rows.iter().map(row_values).collect()
}

fn row_values(r: &postgres::Row) -> Result<Row, postgres::Error> {
    let mut out = Vec::with_capacity(r.len());
    for (i, col) in r.columns().iter().enumerate() {
        let t = col.type_();
        let v = if *t == Type::INT8 {
            r.try_get::<_, Option<i64>>(i)?.map(Value::Int)
        } else if *t == Type::INT4 {
            r.try_get::<_, Option<i32>>(i)?
                .map(|v| Value::Int(v.into()))
        } else if *t == Type::INT2 {
            r.try_get::<_, Option<i16>>(i)?
                .map(|v| Value::Int(v.into()))
        } else if *t == Type::BOOL {
            r.try_get::<_, Option<bool>>(i)?
                .map(|v| Value::Int(v.into()))
        } else if *t == Type::BYTEA {
            r.try_get::<_, Option<Vec<u8>>>(i)?.map(Value::Blob)
        } else {
            // TEXT, VARCHAR, NAME; anything else fails here with the driver's message.
            r.try_get::<_, Option<String>>(i)?.map(Value::Text)
        };
        out.push(v.unwrap_or(Value::Null));
    }
    Ok(Row(out))
}

impl ToSql for Value {
    fn to_sql(
        &self,
        ty: &Type,
        out: &mut bytes::BytesMut,
    ) -> Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        match self {
            Value::Null => Ok(IsNull::Yes),
            Value::Int(i) => {
                if *ty == Type::INT8 {
                    i.to_sql(ty, out)
                } else if *ty == Type::INT4 {
                    i32::try_from(*i)?.to_sql(ty, out)
                } else if *ty == Type::INT2 {
                    i16::try_from(*i)?.to_sql(ty, out)
                } else if *ty == Type::BOOL {
                    (*i != 0).to_sql(ty, out)
                } else {
                    Err(format!("integer parameter for a {ty} column").into())
                }
            }
            Value::Text(s) => s.as_str().to_sql(ty, out),
            Value::Blob(b) => b.as_slice().to_sql(ty, out),
            Value::Array(Column::Int(v)) => v.to_sql(ty, out),
            Value::Array(Column::Text(v)) => v.to_sql(ty, out),
            Value::Array(Column::Blob(v)) => v.to_sql(ty, out),
        }
    }

    fn accepts(_: &Type) -> bool {
        // Checked per value in `to_sql`: the parameter's type is known only there.
        true
    }

    postgres::types::to_sql_checked!();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_password_never_shows() {
        assert_eq!(
            redact("postgres://licd:s3cret@db:5432/licd"),
            "postgres://licd:***@db:5432/licd"
        );
        assert_eq!(redact("postgres://licd@db/licd"), "postgres://licd@db/licd");
        assert_eq!(redact("host=/tmp user=x"), "host=/tmp user=x");
    }

    #[test]
    fn tls_is_asked_for_by_the_urls_libpq_options_and_never_weaker_than_asked() {
        let plain = tls_options("postgres://licd@db/licd").unwrap();
        assert_eq!(plain.0, "postgres://licd@db/licd");
        assert!(plain.1.is_none());
        let kept =
            tls_options("postgres://licd@db/licd?connect_timeout=5&sslmode=disable").unwrap();
        assert_eq!(
            kept.0,
            "postgres://licd@db/licd?connect_timeout=5&sslmode=disable"
        );
        assert!(kept.1.is_none());
        // verify-full and require both become the driver's `require` with a verifying connector.
        for mode in ["verify-full", "require"] {
            let (url, tls) = tls_options(&format!(
                "postgres://licd@db/licd?sslmode={mode}&sslrootcert=system&connect_timeout=5"
            ))
            .unwrap();
            assert_eq!(
                url,
                "postgres://licd@db/licd?sslmode=require&connect_timeout=5"
            );
            assert!(tls.is_some());
            assert!(url.parse::<postgres::Config>().is_ok());
        }
        for (url, says) in [
            (
                "postgres://db/x?sslmode=verify-ca",
                "verify-ca is not offered",
            ),
            ("postgres://db/x?sslmode=allow", "allow is not offered"),
            (
                "postgres://db/x?sslrootcert=/etc/ca.pem",
                "needs sslmode=verify-full",
            ),
            (
                "postgres://db/x?sslmode=verify-full&sslrootcert=/nonexistent/ca.pem",
                "/nonexistent/ca.pem",
            ),
        ] {
            let err = tls_options(url).map(|_| ()).unwrap_err();
            assert!(err.contains(says), "{url}: {err}");
        }
    }
}

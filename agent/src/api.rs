//! The local API: a unix socket speaking JSON lines, for `licd check`/`status` and for other
//! processes on the device. Protocol version [`API_VERSION`]:
//!
//! ```text
//! → {"v":1,"op":"check","service":"wifi-ap"}
//! ← {"v":1,"ok":true,"service":"wifi-ap","state":"licensed","until":1800003600,"may_run":true}
//! → {"v":1,"op":"status"}
//! ← {"v":1,"ok":true,"status":{…}}
//! → {"v":1,"op":"watch"}
//! ← {"v":1,"ok":true,"watching":true}
//! ← {"v":1,"event":"changed","service":"wifi-ap","state":"grace","until":…,"reason":"lease_expired"}
//! ← {"v":1,"ok":false,"error":"…"}         (any refused request; the connection stays open)
//! ```
//!
//! A client sends one request per line and gets one answer per line; after `watch` the
//! connection carries events until it closes. Requests over 4 KiB, unknown ops, a newer major
//! version and an invalid service name are refused with a message. The socket is mode 0660 so
//! a group of local daemons can ask.
//!
//! No number of idle, slow or departed clients stops checks being answered:
//! - one-shot connections (`check`, `status`) and watchers have budgets of their own
//!   ([`MAX_CHECK_CONNECTIONS`], [`MAX_WATCHERS`]); a `watch` past its budget is refused;
//! - a one-shot client has [`REQUEST_TIMEOUT`] to send each whole request line (from
//!   connecting, or from the first byte of a later request) and [`WRITE_TIMEOUT`] to take
//!   each answer; an answered connection may idle [`IDLE_TIMEOUT`] for its next request;
//! - when the one-shot budget is full, a new connection evicts an idle one, else the oldest
//!   one past [`EVICTION_GRACE`]; it is never refused (see `slots`);
//! - a watcher that closes its end is noticed at once (its socket is read while events are
//!   awaited) and gives its slot back.

use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{broadcast, watch};
use tokio::time::Instant;

use crate::enforce::ServiceState;
use crate::status::Status;

mod slots;

use slots::{Room, Slots, Ticket};

/// Version of the socket protocol; a client refuses a higher major version.
pub const API_VERSION: u32 = 1;
/// Longest request line accepted.
pub const MAX_REQUEST_LEN: usize = 4096;
/// Most one-shot (`check`, `status`) connections at once; when all are taken a new one
/// evicts an idle or slow one.
pub const MAX_CHECK_CONNECTIONS: usize = 64;
/// Most watchers at once; a `watch` past it is refused (the connection stays usable).
pub const MAX_WATCHERS: usize = 64;
/// A one-shot client must send a whole request line within this long: from connecting for
/// the first, from its first byte for a later one.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(1);
/// An answered connection may wait this long for its next request (it is the first to be
/// evicted when the one-shot budget is full).
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(30);
/// An answer or event a client does not take within this long ends its connection.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(5);
/// A new connection is never evicted sooner than this after it was accepted (unless idle):
/// time for a client to send its request.
pub const EVICTION_GRACE: Duration = Duration::from_millis(50);
/// Read buffer per connection; a request line is at most [`MAX_REQUEST_LEN`], collected
/// beside it.
const READ_BUFFER: usize = 1024;

/// A request line.
#[derive(Debug, Deserialize)]
struct Request {
    #[serde(default = "one")]
    v: u32,
    op: String,
    service: Option<String>,
}

fn one() -> u32 {
    1
}

/// A state change as streamed to watchers and hooks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Event {
    /// The service.
    pub service: String,
    /// The new state.
    #[serde(flatten)]
    pub state: ServiceState,
}

/// Why `service` is not a valid service name (`[A-Za-z0-9._-]{1,64}`, the protocol's rule),
/// as the daemon, the cache fallback and the clients word it; `None` when it is valid.
pub fn invalid_service(service: &str) -> Option<String> {
    licd_protocol::ServiceName::new(service)
        .err()
        .map(|e| format!("invalid service name: {e}"))
}

/// The check answer for one service (a refusal for an invalid name).
pub fn check_answer(status: &Status, service: &str) -> serde_json::Value {
    if let Some(message) = invalid_service(service) {
        return error_answer(message);
    }
    let state = status.state(service);
    let mut v = serde_json::to_value(state).unwrap_or_default();
    if let Some(map) = v.as_object_mut() {
        map.insert("v".into(), json!(API_VERSION));
        map.insert("ok".into(), json!(true));
        map.insert("service".into(), json!(service));
        map.insert("may_run".into(), json!(state.may_run()));
        map.insert(
            "source".into(),
            serde_json::to_value(status.source).unwrap_or_default(),
        );
    }
    v
}

fn error_answer(message: impl std::fmt::Display) -> serde_json::Value {
    json!({"v": API_VERSION, "ok": false, "error": message.to_string()})
}

/// A bound API socket.
#[derive(Debug)]
pub struct ApiServer {
    listener: UnixListener,
    path: PathBuf,
}

/// Why the socket could not be set up.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ApiError {
    /// Another process answers on the socket already.
    #[error("{0} is in use by another running licd; stop it first")]
    InUse(PathBuf),
    /// The path exists and is not a socket.
    #[error("{0} exists and is not a socket; remove it or set api.socket elsewhere")]
    NotASocket(PathBuf),
    /// Binding, removing or chmod failed.
    #[error("{op} {path}: {error}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// The socket path.
        path: PathBuf,
        /// The OS error.
        error: std::io::Error,
    },
}

impl ApiServer {
    /// Binds the socket at `path` (mode 0660), replacing a stale socket left by a crash but
    /// never one a live daemon answers on.
    pub async fn bind(path: &Path) -> Result<Self, ApiError> {
        let io = |op| {
            move |error| ApiError::Io {
                op,
                path: path.to_path_buf(),
                error,
            }
        };
        if let Some(dir) = path.parent() {
            if !dir.as_os_str().is_empty() {
                std::fs::create_dir_all(dir).map_err(io("create directory for"))?;
            }
        }
        match std::fs::symlink_metadata(path) {
            Ok(m) if m.file_type().is_socket() => {
                if UnixStream::connect(path).await.is_ok() {
                    return Err(ApiError::InUse(path.to_path_buf()));
                }
                std::fs::remove_file(path).map_err(io("remove stale socket"))?;
            }
            Ok(_) => return Err(ApiError::NotASocket(path.to_path_buf())),
            Err(_) => {}
        }
        let listener = UnixListener::bind(path).map_err(io("bind"))?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660))
            .map_err(io("chmod"))?;
        Ok(Self {
            listener,
            path: path.to_path_buf(),
        })
    }

    /// Serves until `shutdown` resolves, then removes the socket file.
    pub async fn serve(
        self,
        status: watch::Receiver<Arc<Status>>,
        events: broadcast::Sender<Event>,
        shutdown: impl std::future::Future<Output = ()>,
    ) {
        let slots = Slots::new(MAX_CHECK_CONNECTIONS, MAX_WATCHERS, EVICTION_GRACE);
        tokio::pin!(shutdown);
        'serve: loop {
            let stream = tokio::select! {
                _ = &mut shutdown => break,
                a = self.listener.accept() => match a {
                    Ok((stream, _)) => stream,
                    Err(e) => {
                        // Out of file descriptors, typically: let connections end first.
                        tracing::warn!(error = %e, "api accept failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                },
            };
            // A full one-shot budget: evict, or hold this newcomer until a slot's grace is
            // over (or a slot frees).
            loop {
                match slots.make_room(Instant::now()) {
                    Room::Ready => break,
                    Room::WaitUntil(t) => tokio::select! {
                        _ = &mut shutdown => break 'serve,
                        _ = tokio::time::sleep_until(t) => {}
                        _ = slots.freed() => {}
                    },
                }
            }
            let ticket = slots.admit(Instant::now());
            let id = ticket.id();
            let task = tokio::spawn(handle_connection(
                stream,
                ticket,
                status.clone(),
                events.clone(),
            ));
            slots.set_abort(id, task.abort_handle());
            // The newcomer reads the request it has most likely sent already before further
            // accepts can crowd it.
            tokio::task::yield_now().await;
        }
        let _ = std::fs::remove_file(&self.path);
    }
}

async fn handle_connection(
    stream: UnixStream,
    mut ticket: Ticket,
    status: watch::Receiver<Arc<Status>>,
    events: broadcast::Sender<Event>,
) -> std::io::Result<()> {
    let (read, mut write) = stream.into_split();
    let mut reader = BufReader::with_capacity(READ_BUFFER, read);
    let mut line = Vec::new();
    // The first request is due REQUEST_TIMEOUT after connecting.
    let mut deadline = Instant::now() + REQUEST_TIMEOUT;
    loop {
        line.clear();
        let n = tokio::time::timeout_at(deadline, read_line(&mut reader, &mut line)).await;
        let n = match n {
            Ok(Ok(n)) => n,
            Ok(Err(e)) if e.kind() == std::io::ErrorKind::InvalidData => {
                send(&mut write, &error_answer("request over 4096 bytes")).await?;
                return Ok(());
            }
            Ok(Err(e)) => return Err(e),
            // No whole request in time: a slow or silent client gives its slot up.
            Err(_) => return Ok(()),
        };
        if n == 0 {
            return Ok(());
        }
        let answer = match serde_json::from_slice::<Request>(&line) {
            Err(e) => error_answer(format!("malformed request: {e}")),
            Ok(r) if r.v > API_VERSION => error_answer(format!(
                "api version {} not supported, this agent speaks {API_VERSION}",
                r.v
            )),
            Ok(r) => match (r.op.as_str(), r.service) {
                ("check", Some(service)) => check_answer(&status.borrow(), &service),
                ("check", None) => error_answer("check needs \"service\""),
                ("status", _) => {
                    json!({"v": API_VERSION, "ok": true, "status": &**status.borrow()})
                }
                ("watch", _) if ticket.become_watcher() => {
                    // Subscribed before the confirmation: no change can fall in between.
                    let events = events.subscribe();
                    send(
                        &mut write,
                        &json!({"v": API_VERSION, "ok": true, "watching": true}),
                    )
                    .await?;
                    return stream_events(reader, write, events).await;
                }
                ("watch", _) => error_answer(format!(
                    "too many watchers ({MAX_WATCHERS}): each process should hold one watch"
                )),
                (op, _) => error_answer(format!("unknown op {op:?}; use check, status or watch")),
            },
        };
        send(&mut write, &answer).await?;
        // Idle until the next request's first byte (first in line for eviction meanwhile).
        ticket.idle(Some(Instant::now()));
        match tokio::time::timeout(IDLE_TIMEOUT, reader.fill_buf()).await {
            Ok(Ok(buf)) if !buf.is_empty() => {}
            _ => return Ok(()),
        }
        ticket.idle(None);
        deadline = Instant::now() + REQUEST_TIMEOUT;
    }
}

/// Streams events to a watcher until it goes; its socket is read meanwhile, so a watcher that
/// closes its end is noticed at once, not at the next event.
async fn stream_events(
    mut reader: BufReader<OwnedReadHalf>,
    mut write: OwnedWriteHalf,
    mut events: broadcast::Receiver<Event>,
) -> std::io::Result<()> {
    let mut ignored = [0u8; 256];
    loop {
        let event = tokio::select! {
            r = reader.read(&mut ignored) => match r {
                // The watcher closed its end (or the socket failed): it is gone.
                Ok(0) | Err(_) => return Ok(()),
                // Nothing is asked of a watcher after `watch`; what it sends is dropped.
                Ok(_) => continue,
            },
            e = events.recv() => e,
        };
        match event {
            Ok(ev) => {
                let mut v = serde_json::to_value(&ev).unwrap_or_default();
                if let Some(m) = v.as_object_mut() {
                    m.insert("v".into(), json!(API_VERSION));
                    m.insert("event".into(), json!("changed"));
                }
                send(&mut write, &v).await?;
            }
            Err(broadcast::error::RecvError::Lagged(n)) => {
                // A slow watcher misses events rather than growing our memory; tell it so it
                // can re-read the status.
                send(
                    &mut write,
                    &json!({"v": API_VERSION, "event": "lagged", "missed": n}),
                )
                .await?;
            }
            Err(broadcast::error::RecvError::Closed) => return Ok(()),
        }
    }
}

/// Reads one line of at most [`MAX_REQUEST_LEN`] bytes (without the newline).
async fn read_line<R: tokio::io::AsyncBufRead + Unpin>(
    r: &mut R,
    out: &mut Vec<u8>,
) -> std::io::Result<usize> {
    loop {
        let buf = r.fill_buf().await?;
        if buf.is_empty() {
            return Ok(out.len());
        }
        if let Some(i) = buf.iter().position(|&b| b == b'\n') {
            out.extend_from_slice(&buf[..i]);
            r.consume(i + 1);
            if out.len() > MAX_REQUEST_LEN {
                return Err(std::io::ErrorKind::InvalidData.into());
            }
            // An empty line is not end of stream.
            return Ok(out.len().max(1));
        }
        let n = buf.len();
        out.extend_from_slice(buf);
        r.consume(n);
        if out.len() > MAX_REQUEST_LEN {
            return Err(std::io::ErrorKind::InvalidData.into());
        }
    }
}

/// Writes `v` as one line; a client that does not take it within [`WRITE_TIMEOUT`] is cut.
async fn send(w: &mut OwnedWriteHalf, v: &serde_json::Value) -> std::io::Result<()> {
    let mut bytes = serde_json::to_vec(v).unwrap_or_default();
    bytes.push(b'\n');
    tokio::time::timeout(WRITE_TIMEOUT, w.write_all(&bytes))
        .await
        .map_err(|_| std::io::Error::from(std::io::ErrorKind::TimedOut))?
}

/// A blocking one-shot client (for `licd check` / `licd status`): sends `request`, returns the
/// answer line parsed. No tokio needed.
pub fn query(
    path: &Path,
    request: &serde_json::Value,
    timeout: Duration,
) -> std::io::Result<serde_json::Value> {
    use std::io::{BufRead, Read, Write};
    let mut stream = std::os::unix::net::UnixStream::connect(path)?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    let mut line = serde_json::to_vec(request)?;
    line.push(b'\n');
    stream.write_all(&line)?;
    let mut answer = String::new();
    std::io::BufReader::new(stream.take(1 << 20)).read_line(&mut answer)?;
    serde_json::from_str(&answer).map_err(std::io::Error::other)
}

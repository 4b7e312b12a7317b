//! The local API: a unix socket speaking JSON lines, for `licd check`/`status` and for other
//! processes on the device. The messages are `licd_core::api`'s types (each line documented
//! there, shared with `licd-client` and liblicd); this module is the server: binding,
//! connection budgets and deadlines, reading lines, writing answers.
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

use serde::Serialize;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{broadcast, mpsc, oneshot, watch};
use tokio::time::Instant;

use licd_core::api::{
    CheckAnswer, ErrorAnswer, EventLine, Op, Request, StatusAnswer, WatchAck, WatchEvent,
};
pub use licd_core::api::{Event, FileAnswer, API_VERSION, MAX_IMPORT_REQUEST_LEN, MAX_REQUEST_LEN};

use crate::status::Status;

mod slots;

use slots::{Room, Slots, Ticket};

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
/// How long a file operation (`request`, `import`, `release`) may take in the daemon's loop
/// (the state-directory lock waits up to 5 s) before its client is told it timed out.
pub const FILE_OP_TIMEOUT: Duration = Duration::from_secs(10);
/// Read buffer per connection; a request line is at most [`MAX_REQUEST_LEN`], collected
/// beside it.
const READ_BUFFER: usize = 1024;

/// Why `service` is not a valid service name (`[A-Za-z0-9._-]{1,64}`, the protocol's rule),
/// as the daemon, the cache fallback and the clients word it; `None` when it is valid.
pub fn invalid_service(service: &str) -> Option<String> {
    licd_protocol::ServiceName::new(service)
        .err()
        .map(|e| format!("invalid service name: {e}"))
}

/// The check answer for one service, or the refusal of an invalid name.
pub fn check_answer(status: &Status, service: &str) -> Result<CheckAnswer, ErrorAnswer> {
    match invalid_service(service) {
        Some(message) => Err(ErrorAnswer::new(message)),
        None => {
            let answer = CheckAnswer::new(service, status.state(service), status.source);
            Ok(
                match status
                    .enforcement
                    .services
                    .iter()
                    .find(|s| s.service.as_str() == service)
                {
                    Some(s) => answer.with_policy(s),
                    None => answer,
                },
            )
        }
    }
}

/// A file operation for the daemon's loop, which holds the enforcer (licensing by file).
#[derive(Debug)]
pub enum FileOp {
    /// Write an activation request for these services (configured ones when empty).
    Request(Vec<String>),
    /// Import this file (its bytes, binary or armored).
    Import(Vec<u8>),
    /// Give these services back.
    Release(Vec<String>),
}

/// A [`FileOp`] and where to send its answer.
#[derive(Debug)]
pub struct FileCommand {
    /// The operation.
    pub op: FileOp,
    /// The answer (or the refusal) for the client.
    pub reply: oneshot::Sender<Result<FileAnswer, ErrorAnswer>>,
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
        files: Option<mpsc::Sender<FileCommand>>,
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
                files.clone(),
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
    files: Option<mpsc::Sender<FileCommand>>,
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
                send(
                    &mut write,
                    &ErrorAnswer::new(format!(
                        "request over {MAX_IMPORT_REQUEST_LEN} bytes (import) or {MAX_REQUEST_LEN} bytes (any other op)"
                    )),
                )
                .await?;
                return Ok(());
            }
            Ok(Err(e)) => return Err(e),
            // No whole request in time: a slow or silent client gives its slot up.
            Err(_) => return Ok(()),
        };
        if n == 0 {
            return Ok(());
        }
        let request = match serde_json::from_slice::<Request>(&line) {
            Err(e) => Err(ErrorAnswer::new(format!(
                "malformed request: {e} (ops: check with \"service\", status, watch, request, import with \"file\", release with \"services\")"
            ))),
            Ok(r) if r.v > API_VERSION => Err(ErrorAnswer::new(format!(
                "api version {} not supported, this agent speaks {API_VERSION}",
                r.v
            ))),
            // Only an import carries a file; every other request stays small.
            Ok(r) if line.len() > MAX_REQUEST_LEN && !matches!(r.op, Op::Import { .. }) => {
                Err(ErrorAnswer::new(format!("request over {MAX_REQUEST_LEN} bytes")))
            }
            Ok(r) => Ok(r.op),
        };
        match request {
            Err(refusal) => send(&mut write, &refusal).await?,
            Ok(Op::Check { service }) => {
                let answer = check_answer(&status.borrow(), &service);
                match answer {
                    Ok(answer) => send(&mut write, &answer).await?,
                    Err(refusal) => send(&mut write, &refusal).await?,
                }
            }
            Ok(Op::Status) => {
                let status = status.borrow().clone();
                send(&mut write, &StatusAnswer::new(&*status)).await?
            }
            Ok(Op::Watch) if ticket.become_watcher() => {
                // Subscribed before the confirmation: no change can fall in between.
                let events = events.subscribe();
                send(&mut write, &WatchAck::default()).await?;
                return stream_events(reader, write, events).await;
            }
            Ok(Op::Watch) => {
                let refusal = ErrorAnswer::new(format!(
                    "too many watchers ({MAX_WATCHERS}): each process should hold one watch"
                ));
                send(&mut write, &refusal).await?
            }
            Ok(Op::Request { services }) => {
                let answer = file_op(files.as_ref(), FileOp::Request(services)).await;
                send_file_answer(&mut write, answer).await?
            }
            Ok(Op::Release { services }) => {
                let answer = file_op(files.as_ref(), FileOp::Release(services)).await;
                send_file_answer(&mut write, answer).await?
            }
            Ok(Op::Import { file }) => {
                use base64::Engine as _;
                let answer = match base64::engine::general_purpose::STANDARD.decode(&file) {
                    Ok(bytes) => file_op(files.as_ref(), FileOp::Import(bytes)).await,
                    Err(e) => Err(ErrorAnswer::with_code(
                        format!("\"file\" is not base64: {e}"),
                        "malformed",
                    )),
                };
                send_file_answer(&mut write, answer).await?
            }
        }
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
            Ok(ev) => send(&mut write, &EventLine::new(WatchEvent::Changed(ev))).await?,
            Err(broadcast::error::RecvError::Lagged(n)) => {
                // A slow watcher misses events rather than growing our memory; tell it so it
                // can re-read the status.
                send(
                    &mut write,
                    &EventLine::new(WatchEvent::Lagged { missed: n }),
                )
                .await?;
            }
            Err(broadcast::error::RecvError::Closed) => return Ok(()),
        }
    }
}

async fn send_file_answer(
    w: &mut OwnedWriteHalf,
    answer: Result<FileAnswer, ErrorAnswer>,
) -> std::io::Result<()> {
    match answer {
        Ok(a) => send(w, &a).await,
        Err(e) => send(w, &e).await,
    }
}

/// Hands a file operation to the daemon's loop and waits for its answer.
async fn file_op(
    files: Option<&mpsc::Sender<FileCommand>>,
    op: FileOp,
) -> Result<FileAnswer, ErrorAnswer> {
    let Some(files) = files else {
        return Err(ErrorAnswer::new(
            "this agent takes no file operations on its socket; stop it and run the command again",
        ));
    };
    let (reply, answer) = oneshot::channel();
    let asked = async {
        files
            .send(FileCommand { op, reply })
            .await
            .map_err(|_| ErrorAnswer::new("the daemon is shutting down"))?;
        answer
            .await
            .map_err(|_| ErrorAnswer::new("the daemon dropped the request"))?
    };
    tokio::time::timeout(FILE_OP_TIMEOUT, asked)
        .await
        .unwrap_or_else(|_| Err(ErrorAnswer::new("the daemon did not answer in time")))
}

/// Reads one line of at most [`MAX_IMPORT_REQUEST_LEN`] bytes (without the newline); the op
/// decides whether the line may be longer than [`MAX_REQUEST_LEN`].
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
            if out.len() > MAX_IMPORT_REQUEST_LEN {
                return Err(std::io::ErrorKind::InvalidData.into());
            }
            // An empty line is not end of stream.
            return Ok(out.len().max(1));
        }
        let n = buf.len();
        out.extend_from_slice(buf);
        r.consume(n);
        if out.len() > MAX_IMPORT_REQUEST_LEN {
            return Err(std::io::ErrorKind::InvalidData.into());
        }
    }
}

/// Writes `v` as one line; a client that does not take it within [`WRITE_TIMEOUT`] is cut.
async fn send(w: &mut OwnedWriteHalf, v: &impl Serialize) -> std::io::Result<()> {
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

//! The local API: a unix socket speaking JSON lines, for `licd check`/`status` and for other
//! processes on the device. The messages are `licd_core::api`'s types (documented there, shared
//! with `licd-client`); this module is the server: binding, connection limits, reading lines.
//!
//! A client sends one request per line and gets one answer per line; after `watch` the
//! connection carries events until it closes. Requests over 4 KiB, unknown ops and a newer
//! major version are refused with a message. The socket is mode 0660 so a group of local
//! daemons can ask.

use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{broadcast, watch, Semaphore};

use licd_core::api::{
    CheckAnswer, ErrorAnswer, EventLine, Op, Request, StatusAnswer, WatchAck, WatchEvent,
};
pub use licd_core::api::{Event, API_VERSION, MAX_REQUEST_LEN};

use crate::status::Status;

/// Most concurrent API connections; more wait (mini-redis style back-pressure).
pub const MAX_CONNECTIONS: usize = 64;
/// A silent client is dropped after this long (watchers excepted).
const IDLE_TIMEOUT: Duration = Duration::from_secs(30);

/// The check answer for one service.
pub fn check_answer(status: &Status, service: &str) -> CheckAnswer {
    CheckAnswer::new(service, status.state(service), status.source)
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
    #[error("{op} {path}: {source}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// The socket path.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
}

impl ApiServer {
    /// Binds the socket at `path` (mode 0660), replacing a stale socket left by a crash but
    /// never one a live daemon answers on.
    pub async fn bind(path: &Path) -> Result<Self, ApiError> {
        let io = |op| {
            move |source| ApiError::Io {
                op,
                path: path.to_path_buf(),
                source,
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
        let limit = Arc::new(Semaphore::new(MAX_CONNECTIONS));
        tokio::pin!(shutdown);
        loop {
            let permit = tokio::select! {
                _ = &mut shutdown => break,
                p = limit.clone().acquire_owned() => match p {
                    Ok(p) => p,
                    Err(_) => break,
                },
            };
            let accepted = tokio::select! {
                _ = &mut shutdown => break,
                a = self.listener.accept() => a,
            };
            match accepted {
                Ok((stream, _)) => {
                    let status = status.clone();
                    let events = events.subscribe();
                    tokio::spawn(async move {
                        let _ = handle_connection(stream, status, events).await;
                        drop(permit);
                    });
                }
                Err(e) => {
                    tracing::warn!(error = %e, "api accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
        let _ = std::fs::remove_file(&self.path);
    }
}

async fn handle_connection(
    stream: UnixStream,
    status: watch::Receiver<Arc<Status>>,
    mut events: broadcast::Receiver<Event>,
) -> std::io::Result<()> {
    let (read, mut write) = stream.into_split();
    let mut lines = BufReader::new(read);
    let mut line = Vec::new();
    loop {
        line.clear();
        let n = tokio::time::timeout(IDLE_TIMEOUT, read_line(&mut lines, &mut line)).await;
        let n = match n {
            Ok(Ok(n)) => n,
            Ok(Err(e)) if e.kind() == std::io::ErrorKind::InvalidData => {
                write_json(&mut write, &ErrorAnswer::new("request over 4096 bytes")).await?;
                return Ok(());
            }
            Ok(Err(e)) => return Err(e),
            Err(_) => return Ok(()),
        };
        if n == 0 {
            return Ok(());
        }
        let request = match serde_json::from_slice::<Request>(&line) {
            Err(e) => Err(ErrorAnswer::new(format!(
                "malformed request: {e} (ops: check with \"service\", status, watch)"
            ))),
            Ok(r) if r.v > API_VERSION => Err(ErrorAnswer::new(format!(
                "api version {} not supported, this agent speaks {API_VERSION}",
                r.v
            ))),
            Ok(r) => Ok(r.op),
        };
        match request {
            Err(refusal) => write_json(&mut write, &refusal).await?,
            Ok(Op::Check { service }) => {
                let answer = check_answer(&status.borrow(), &service);
                write_json(&mut write, &answer).await?
            }
            Ok(Op::Status) => {
                let status = status.borrow().clone();
                write_json(&mut write, &StatusAnswer::new(&*status)).await?
            }
            Ok(Op::Watch) => {
                write_json(&mut write, &WatchAck::default()).await?;
                return stream_events(&mut write, &mut events).await;
            }
        }
    }
}

async fn stream_events(
    write: &mut tokio::net::unix::OwnedWriteHalf,
    events: &mut broadcast::Receiver<Event>,
) -> std::io::Result<()> {
    loop {
        match events.recv().await {
            Ok(ev) => write_json(write, &EventLine::new(WatchEvent::Changed(ev))).await?,
            Err(broadcast::error::RecvError::Lagged(n)) => {
                // A slow watcher misses events rather than growing our memory; tell it so it
                // can re-read the status.
                write_json(write, &EventLine::new(WatchEvent::Lagged { missed: n })).await?;
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

async fn write_json(
    w: &mut tokio::net::unix::OwnedWriteHalf,
    v: &impl Serialize,
) -> std::io::Result<()> {
    let mut bytes = serde_json::to_vec(v).unwrap_or_default();
    bytes.push(b'\n');
    w.write_all(&bytes).await
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

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
//! connection carries events until it closes. Requests over 4 KiB, unknown ops and a newer
//! major version are refused with a message. The socket is mode 0660 so a group of local
//! daemons can ask.

use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{broadcast, watch, Semaphore};

use crate::enforce::ServiceState;
use crate::status::Status;

/// Version of the socket protocol; a client refuses a higher major version.
pub const API_VERSION: u32 = 1;
/// Longest request line accepted.
pub const MAX_REQUEST_LEN: usize = 4096;
/// Most concurrent API connections; more wait (mini-redis style back-pressure).
pub const MAX_CONNECTIONS: usize = 64;
/// A silent client is dropped after this long (watchers excepted).
const IDLE_TIMEOUT: Duration = Duration::from_secs(30);

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

/// The check answer for one service.
pub fn check_answer(status: &Status, service: &str) -> serde_json::Value {
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
                write_json(&mut write, &error_answer("request over 4096 bytes")).await?;
                return Ok(());
            }
            Ok(Err(e)) => return Err(e),
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
                ("watch", _) => {
                    write_json(
                        &mut write,
                        &json!({"v": API_VERSION, "ok": true, "watching": true}),
                    )
                    .await?;
                    return stream_events(&mut write, &mut events).await;
                }
                (op, _) => error_answer(format!("unknown op {op:?}; use check, status or watch")),
            },
        };
        write_json(&mut write, &answer).await?;
    }
}

async fn stream_events(
    write: &mut tokio::net::unix::OwnedWriteHalf,
    events: &mut broadcast::Receiver<Event>,
) -> std::io::Result<()> {
    loop {
        match events.recv().await {
            Ok(ev) => {
                let mut v = serde_json::to_value(&ev).unwrap_or_default();
                if let Some(m) = v.as_object_mut() {
                    m.insert("v".into(), json!(API_VERSION));
                    m.insert("event".into(), json!("changed"));
                }
                write_json(write, &v).await?;
            }
            Err(broadcast::error::RecvError::Lagged(n)) => {
                // A slow watcher misses events rather than growing our memory; tell it so it
                // can re-read the status.
                write_json(
                    write,
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

async fn write_json(
    w: &mut tokio::net::unix::OwnedWriteHalf,
    v: &serde_json::Value,
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

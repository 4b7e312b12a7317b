//! The blocking client: one unix-socket connection reused across requests (reconnected once
//! when the agent closed it in between), and [`Watch`], a connection of its own that streams
//! state changes.

use std::io::{self, BufRead, BufReader, Read};
use std::net::Shutdown;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use licd_core::api::{Op, Request};
use serde_json::Value;

use crate::state::{check_answer, check_version};
use crate::{ClientError, Event, State, Verdict};

/// Where the agent listens unless its config says otherwise (`[api] socket`).
pub const DEFAULT_SOCKET: &str = "/run/licd/licd.sock";
/// How long a request waits for the agent by default (as `licd check` does).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(2);
/// Longest answer line accepted (a status document of many services fits easily).
pub const MAX_ANSWER_LEN: usize = 1 << 20;

/// A connection to the agent's local API.
///
/// Requests take `&mut self`: use one client per thread (they are cheap: one socket each).
/// The connection is kept between requests; the agent closes one that sends no whole request
/// within 1 s of connecting, idles 30 s after an answer, or is the idlest when its 64
/// check connections are all taken, and the client then reconnects transparently (requests
/// are idempotent).
#[derive(Debug)]
pub struct Client {
    path: PathBuf,
    timeout: Duration,
    conn: Option<BufReader<UnixStream>>,
}

impl Client {
    /// Connects to the agent at `path` with [`DEFAULT_TIMEOUT`].
    ///
    /// Fails with [`ClientError::NotRunning`] when no agent listens there.
    pub fn connect(path: impl AsRef<Path>) -> Result<Self, ClientError> {
        Self::with_timeout(path, DEFAULT_TIMEOUT)
    }

    /// Connects to the agent at `path`; every read and write waits at most `timeout`.
    pub fn with_timeout(path: impl AsRef<Path>, timeout: Duration) -> Result<Self, ClientError> {
        let path = path.as_ref().to_path_buf();
        let conn = Some(open(&path, timeout)?);
        Ok(Self {
            path,
            timeout,
            conn,
        })
    }

    /// The socket path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The per-request timeout.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// The state of `service` as the agent decides it. A service the agent was never told
    /// about is [`State::Unlicensed`] with reason `never_granted`.
    pub fn check(&mut self, service: &str) -> Result<State, ClientError> {
        Ok(self.verdict(service)?.state)
    }

    /// Like [`Client::check`], with the service name and the source of the answer.
    ///
    /// An invalid name is [`ClientError::InvalidService`], before anything is sent.
    pub fn verdict(&mut self, service: &str) -> Result<Verdict, ClientError> {
        crate::validate_service(service)?;
        let answer = self.request(&Request::new(Op::Check {
            service: service.to_owned(),
        }))?;
        Verdict::from_json(&answer)
    }

    /// The agent's whole status document (identity, clock, connection, bundle, every
    /// service), as JSON: its shape belongs to the agent (`licd status --json` prints the same).
    pub fn status(&mut self) -> Result<Value, ClientError> {
        let mut answer = self.request(&Request::new(Op::Status))?;
        match answer.get_mut("status") {
            Some(status) => Ok(status.take()),
            None => Err(ClientError::Protocol("no \"status\" in the answer".into())),
        }
    }

    /// Opens a second connection that streams state changes; this client stays usable.
    ///
    /// Only changes are sent: to avoid missing one, start the watch first, then read the
    /// current state with [`Client::check`] or [`Client::status`]. The agent serves 64
    /// watchers at once (apart from checks); past that this is [`ClientError::Refused`].
    pub fn watch(&self) -> Result<Watch, ClientError> {
        Watch::open(&self.path, self.timeout)
    }

    /// Sends one request and returns the answer after checking its version and `ok`.
    fn request(&mut self, request: &Request) -> Result<Value, ClientError> {
        let mut line =
            serde_json::to_vec(request).map_err(|e| ClientError::Protocol(e.to_string()))?;
        line.push(b'\n');
        let reused = self.conn.is_some();
        let result = self.exchange(&line);
        let result = match result {
            // The agent closed an idle connection (idle timeout, restart): one fresh try.
            Err(Failure::Gone) if reused => {
                self.conn = None;
                self.exchange(&line)
            }
            other => other,
        };
        match result {
            Ok(answer) => {
                check_answer(&answer)?;
                Ok(answer)
            }
            Err(f) => {
                // After a failure the connection may hold a late answer: never reuse it.
                self.conn = None;
                Err(f.into_error(&self.path, self.timeout))
            }
        }
    }

    fn exchange(&mut self, line: &[u8]) -> Result<Value, Failure> {
        let conn = match &mut self.conn {
            Some(c) => c,
            None => self
                .conn
                .insert(open(&self.path, self.timeout).map_err(Failure::Open)?),
        };
        send_all(conn.get_ref(), line).map_err(Failure::from_io)?;
        let mut buf = Vec::new();
        match read_line(conn, &mut buf).map_err(Failure::from_io)? {
            Line::Complete => serde_json::from_slice(&buf)
                .map_err(|e| Failure::Error(ClientError::Protocol(e.to_string()))),
            Line::Eof => Err(Failure::Gone),
            Line::TooLong => Err(Failure::Error(ClientError::Protocol(format!(
                "answer over {MAX_ANSWER_LEN} bytes"
            )))),
        }
    }
}

/// How one exchange failed, before it is turned into a [`ClientError`].
enum Failure {
    /// Connecting failed (already a precise error).
    Open(ClientError),
    /// The peer closed or reset the connection.
    Gone,
    /// A read or write timed out.
    TimedOut,
    /// Any other I/O error.
    Io(io::Error),
    /// Not an I/O problem.
    Error(ClientError),
}

impl Failure {
    fn from_io(e: io::Error) -> Self {
        match e.kind() {
            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => Failure::TimedOut,
            io::ErrorKind::BrokenPipe
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::UnexpectedEof => Failure::Gone,
            _ => Failure::Io(e),
        }
    }

    fn into_error(self, path: &Path, timeout: Duration) -> ClientError {
        let path = path.to_path_buf();
        match self {
            Failure::Open(e) | Failure::Error(e) => e,
            Failure::Gone => ClientError::Closed { path },
            Failure::TimedOut => ClientError::Timeout { path, timeout },
            Failure::Io(error) => ClientError::Io { path, error },
        }
    }
}

/// Connects with timeouts set, mapping "nobody there" to [`ClientError::NotRunning`].
fn open(path: &Path, timeout: Duration) -> Result<BufReader<UnixStream>, ClientError> {
    let stream = UnixStream::connect(path).map_err(|error| match error.kind() {
        io::ErrorKind::NotFound | io::ErrorKind::ConnectionRefused => ClientError::NotRunning {
            path: path.to_path_buf(),
            error,
        },
        io::ErrorKind::PermissionDenied => ClientError::PermissionDenied {
            path: path.to_path_buf(),
        },
        _ => ClientError::Io {
            path: path.to_path_buf(),
            error,
        },
    })?;
    // A zero duration would be an error for set_*_timeout; treat it as the smallest wait.
    let timeout = Some(timeout.max(Duration::from_millis(1)));
    let io = |error| ClientError::Io {
        path: path.to_path_buf(),
        error,
    };
    stream.set_read_timeout(timeout).map_err(io)?;
    stream.set_write_timeout(timeout).map_err(io)?;
    Ok(BufReader::new(stream))
}

/// Writes all of `buf` with `MSG_NOSIGNAL`: a closed peer is an `EPIPE` error, never a
/// `SIGPIPE` that would kill the calling process (C programs do not ignore it as Rust does).
fn send_all(stream: &UnixStream, mut buf: &[u8]) -> io::Result<()> {
    use rustix::net::{send, SendFlags};
    while !buf.is_empty() {
        match send(stream, buf, SendFlags::NOSIGNAL) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => buf = buf.get(n..).unwrap_or_default(),
            Err(rustix::io::Errno::INTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// What [`read_line`] found.
enum Line {
    /// `buf` holds a whole line (newline stripped).
    Complete,
    /// The peer closed the connection before a whole line.
    Eof,
    /// More than [`MAX_ANSWER_LEN`] bytes without a newline.
    TooLong,
}

/// Appends to `buf` until a newline. On a timeout the bytes read so far stay in `buf`, so a
/// later call continues the same line.
fn read_line(reader: &mut BufReader<UnixStream>, buf: &mut Vec<u8>) -> io::Result<Line> {
    let room = (MAX_ANSWER_LEN + 1).saturating_sub(buf.len()) as u64;
    reader.by_ref().take(room).read_until(b'\n', buf)?;
    if buf.last() == Some(&b'\n') {
        buf.pop();
        Ok(Line::Complete)
    } else if buf.len() > MAX_ANSWER_LEN {
        Ok(Line::TooLong)
    } else {
        Ok(Line::Eof)
    }
}

/// A stream of state changes from the agent: an iterator that blocks until the next event.
///
/// It yields `Err` for a failure and then ends, except for [`ClientError::Timeout`] (only
/// with [`Watch::set_timeout`]), after which iterating again keeps waiting. When the agent
/// stops, it yields [`ClientError::Closed`]: reconnect with [`Client::watch`] and re-read the
/// state. To end a watch from another thread use [`Watch::stopper`].
#[derive(Debug)]
pub struct Watch {
    reader: BufReader<UnixStream>,
    path: PathBuf,
    buf: Vec<u8>,
    timeout: Option<Duration>,
    stopped: Arc<AtomicBool>,
    done: bool,
}

impl Watch {
    /// Connects and subscribes; the subscription is confirmed before this returns.
    pub fn open(path: impl AsRef<Path>, timeout: Duration) -> Result<Self, ClientError> {
        let path = path.as_ref().to_path_buf();
        let mut reader = open(&path, timeout)?;
        let fail = |f: Failure| f.into_error(&path, timeout);
        let mut line = serde_json::to_vec(&Request::new(Op::Watch))
            .map_err(|e| ClientError::Protocol(e.to_string()))?;
        line.push(b'\n');
        send_all(reader.get_ref(), &line).map_err(|e| fail(Failure::from_io(e)))?;
        let mut buf = Vec::new();
        match read_line(&mut reader, &mut buf).map_err(|e| fail(Failure::from_io(e)))? {
            Line::Complete => {}
            Line::Eof => return Err(ClientError::Closed { path }),
            Line::TooLong => return Err(ClientError::Protocol("answer too long".into())),
        }
        let ack: Value =
            serde_json::from_slice(&buf).map_err(|e| ClientError::Protocol(e.to_string()))?;
        check_answer(&ack)?;
        if ack["watching"] != Value::Bool(true) {
            return Err(ClientError::Protocol(format!("watch not confirmed: {ack}")));
        }
        // Events may be hours apart: by default wait for them without a limit.
        reader
            .get_ref()
            .set_read_timeout(None)
            .map_err(|error| ClientError::Io {
                path: path.clone(),
                error,
            })?;
        Ok(Self {
            reader,
            path,
            buf: Vec::new(),
            timeout: None,
            stopped: Arc::new(AtomicBool::new(false)),
            done: false,
        })
    }

    /// Waits at most `timeout` for each event (`None`: forever, the default); a wait that
    /// runs out yields [`ClientError::Timeout`] and the watch goes on.
    pub fn set_timeout(&mut self, timeout: Option<Duration>) -> Result<(), ClientError> {
        let timeout = timeout.map(|t| t.max(Duration::from_millis(1)));
        self.reader
            .get_ref()
            .set_read_timeout(timeout)
            .map_err(|error| ClientError::Io {
                path: self.path.clone(),
                error,
            })?;
        self.timeout = timeout;
        Ok(())
    }

    /// A handle that ends this watch from another thread: the blocked iterator returns
    /// `None`.
    pub fn stopper(&self) -> Result<WatchStopper, ClientError> {
        let stream = self
            .reader
            .get_ref()
            .try_clone()
            .map_err(|error| ClientError::Io {
                path: self.path.clone(),
                error,
            })?;
        Ok(WatchStopper {
            stream,
            stopped: Arc::clone(&self.stopped),
        })
    }

    fn next_event(&mut self) -> Result<Event, ClientError> {
        let line = match read_line(&mut self.reader, &mut self.buf) {
            Ok(line) => line,
            Err(e) => {
                return Err(match Failure::from_io(e) {
                    Failure::TimedOut => ClientError::Timeout {
                        path: self.path.clone(),
                        timeout: self.timeout.unwrap_or_default(),
                    },
                    f => f.into_error(&self.path, Duration::ZERO),
                })
            }
        };
        match line {
            Line::Complete => {}
            Line::Eof => {
                return Err(ClientError::Closed {
                    path: self.path.clone(),
                })
            }
            Line::TooLong => {
                return Err(ClientError::Protocol(format!(
                    "event over {MAX_ANSWER_LEN} bytes"
                )))
            }
        }
        let parsed = serde_json::from_slice::<Value>(&self.buf);
        self.buf.clear();
        let v = parsed.map_err(|e| ClientError::Protocol(e.to_string()))?;
        check_version(&v)?;
        Event::from_json(&v)
    }
}

impl Iterator for Watch {
    type Item = Result<Event, ClientError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        let item = self.next_event();
        if self.stopped.load(Ordering::SeqCst) {
            self.done = true;
            return None;
        }
        match &item {
            Err(ClientError::Timeout { .. }) | Ok(_) => {}
            Err(_) => self.done = true,
        }
        Some(item)
    }
}

/// Ends a [`Watch`] from another thread (see [`Watch::stopper`]).
#[derive(Debug)]
pub struct WatchStopper {
    stream: UnixStream,
    stopped: Arc<AtomicBool>,
}

impl WatchStopper {
    /// Stops the watch: a blocked or later `next()` returns `None`.
    pub fn stop(&self) {
        self.stopped.store(true, Ordering::SeqCst);
        // Wakes the blocked read with end-of-file; an error means it is closed already.
        let _ = self.stream.shutdown(Shutdown::Both);
    }
}

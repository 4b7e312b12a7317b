//! `liblicd`: the licd client for C, a thin layer over `licd-client`. The header is
//! `include/licd.h` at the top of the repository, generated from this file by cbindgen
//! (`client/ffi/cbindgen.toml`) and checked by `tests/header.rs`.
//!
//! Conventions of the C API:
//! - every call returns a [`licd_error`]; `LICD_OK` is 0. A failed call leaves a message for
//!   the calling thread, copied out with [`licd_last_error_message`];
//! - results are written into caller-owned structs ([`licd_state`]); nothing allocated here
//!   is handed to C, so there is nothing to free. Strings returned by the `*_name` functions
//!   are static; the `service` of a [`licd_event`] is valid only during the callback;
//! - [`licd_check`] opens a connection per call (no state shared between threads, safe
//!   across `fork`); all functions may be called from any thread;
//! - settings ([`licd_set_socket_path`], [`licd_set_timeout_ms`]) are process-wide.
//!
//! Naming follows C (`licd_state`, `LICD_OK`) so the header reads like a C header.

// The C ABI needs `unsafe`: `#[no_mangle]` exports and raw pointers coming from C. The
// workspace forbids unsafe code; this crate alone relaxes that (Cargo.toml), and each block
// carries a `// SAFETY:` comment (enforced by clippy::undocumented_unsafe_blocks).
#![allow(unsafe_code)]
// C naming for the exported types and constants.
#![allow(non_camel_case_types)]

use std::cell::RefCell;
use std::ffi::{c_char, c_int, c_void, CStr, CString};
use std::panic::{catch_unwind, AssertUnwindSafe};
#[cfg(feature = "cache-fallback")]
use std::path::Path;
use std::path::PathBuf;
use std::sync::RwLock;
use std::time::Duration;

use licd_client::{Client, ClientError, Event, Reason, Source, State, Verdict, Watch};

/// Result of every call. `LICD_OK` (0) is success.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum licd_error {
    /// Success.
    LICD_OK = 0,
    /// A NULL pointer, a string that is not UTF-8, or a service name licd does not accept
    /// (`[A-Za-z0-9._-]{1,64}`, not `.` or `..`).
    LICD_ERR_INVALID_ARGUMENT = 1,
    /// licd is not running: the socket is missing or refuses connections.
    LICD_ERR_NOT_RUNNING = 2,
    /// The socket exists but this process may not connect (mode 0660: join licd's group).
    LICD_ERR_PERMISSION_DENIED = 3,
    /// licd did not answer within the timeout.
    LICD_ERR_TIMEOUT = 4,
    /// Another I/O error on the socket.
    LICD_ERR_IO = 5,
    /// licd closed the connection (it stopped or restarted).
    LICD_ERR_CLOSED = 6,
    /// licd speaks a newer major version of the socket protocol: upgrade this library.
    LICD_ERR_UNSUPPORTED_VERSION = 7,
    /// licd refused the request (see the message), e.g. a watch past its watcher budget.
    LICD_ERR_REFUSED = 8,
    /// licd's answer was malformed.
    LICD_ERR_PROTOCOL = 9,
    /// The cache could not be evaluated (config, state directory, key) or is unusable
    /// (truncated, another device's bundle).
    LICD_ERR_CACHE = 10,
    /// The function is not built into this library (e.g. the cache fallback).
    LICD_ERR_UNSUPPORTED = 11,
    /// An internal error (a bug): the call did not complete.
    LICD_ERR_INTERNAL = 12,
}

/// The three states of a service.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum licd_state_kind {
    /// Licensed until `until`.
    LICD_LICENSED = 0,
    /// In grace until `until`, because of `reason`: the service may still run.
    LICD_GRACE = 1,
    /// Not licensed, because of `reason`: the service must not run.
    LICD_UNLICENSED = 2,
}

/// Why a service is in grace or unlicensed.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum licd_reason {
    /// No reason (licensed).
    LICD_REASON_NONE = 0,
    /// No bundle has ever granted it.
    LICD_REASON_NEVER_GRANTED = 1,
    /// The controller has not renewed the lease in time.
    LICD_REASON_LEASE_EXPIRED = 2,
    /// The entitlement term ended.
    LICD_REASON_TERM_ENDED = 3,
    /// The entitlement term has not started yet.
    LICD_REASON_NOT_YET_VALID = 4,
    /// The host runs more VMs than the license covers.
    LICD_REASON_OVER_VM_ALLOWANCE = 5,
    /// No longer granted: a newer bundle left it out, or the bundle that granted it was
    /// dropped because its signer stopped being trusted.
    LICD_REASON_REVOKED = 6,
    /// The controller has no entitlement for it.
    LICD_REASON_NOT_ENTITLED = 7,
    /// The controller paused assignment: fewer seats than devices.
    LICD_REASON_SEATS_EXHAUSTED = 8,
    /// An operator removed the license from this device.
    LICD_REASON_UNASSIGNED = 9,
    /// The controller does not know this device's tenant.
    LICD_REASON_UNKNOWN_TENANT = 10,
    /// A reason this library does not know (a newer agent).
    LICD_REASON_OTHER = 11,
    /// Given back with `licd release` (licensing by file).
    LICD_REASON_RELEASED = 12,
}

/// Who decided.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum licd_source {
    /// The running agent.
    LICD_SOURCE_DAEMON = 0,
    /// The agent's cache, evaluated read-only because the agent did not answer.
    LICD_SOURCE_CACHE = 1,
}

/// A service's state, written by [`licd_check`] into caller memory.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct licd_state {
    /// Licensed, grace or unlicensed.
    pub state: licd_state_kind,
    /// True when the service may run (licensed or in grace).
    pub may_run: bool,
    /// Unix time the license or grace ends; 0 when unlicensed.
    pub until: u64,
    /// Why (grace, unlicensed); `LICD_REASON_NONE` when licensed.
    pub reason: licd_reason,
    /// Who decided.
    pub source: licd_source,
}

/// What a watch callback is told about.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum licd_event_kind {
    /// `service` changed to `state`.
    LICD_EVENT_CHANGED = 0,
    /// The watcher fell behind and `missed` events were dropped: re-check your services.
    LICD_EVENT_LAGGED = 1,
    /// Sent once, first: the agent confirmed the subscription. Check the services you care
    /// about now (`licd_check` may be called from the callback): every later change arrives
    /// as an event.
    LICD_EVENT_WATCHING = 2,
}

/// One event passed to a [`licd_watch_cb`]. Valid only during the callback.
#[repr(C)]
#[derive(Debug)]
pub struct licd_event {
    /// What happened.
    pub kind: licd_event_kind,
    /// The service (`LICD_EVENT_CHANGED`), NUL-terminated; NULL for the other kinds.
    /// Points into the library's memory, valid until the callback returns: copy it to keep it.
    pub service: *const c_char,
    /// The new state (`LICD_EVENT_CHANGED`); meaningless for the other kinds.
    pub state: licd_state,
    /// Events dropped (`LICD_EVENT_LAGGED`), else 0.
    pub missed: u64,
}

/// Called by [`licd_watch`] for each event, on the thread that called `licd_watch`. Return 0
/// to keep watching, anything else to stop (`licd_watch` then returns `LICD_OK`).
pub type licd_watch_cb =
    Option<unsafe extern "C" fn(event: *const licd_event, user_data: *mut c_void) -> c_int>;

/// The `state` of a lagged event: nothing to report.
const NO_STATE: licd_state = licd_state {
    state: licd_state_kind::LICD_UNLICENSED,
    may_run: false,
    until: 0,
    reason: licd_reason::LICD_REASON_NONE,
    source: licd_source::LICD_SOURCE_DAEMON,
};

/// Process-wide settings.
struct Settings {
    socket: Option<PathBuf>,
    timeout: Duration,
}

static SETTINGS: RwLock<Settings> = RwLock::new(Settings {
    socket: None,
    timeout: licd_client::DEFAULT_TIMEOUT,
});

thread_local! {
    static LAST_ERROR: RefCell<CString> = RefCell::new(CString::default());
}

fn set_last_error(message: &str) {
    // A message with a NUL in it is cut there rather than lost.
    let text = message.split('\0').next().unwrap_or_default();
    let c = CString::new(text).unwrap_or_default();
    LAST_ERROR.with(|e| *e.borrow_mut() = c);
}

fn fail(code: licd_error, message: &str) -> licd_error {
    set_last_error(message);
    code
}

fn error_code(e: &ClientError) -> licd_error {
    match e {
        ClientError::NotRunning { .. } => licd_error::LICD_ERR_NOT_RUNNING,
        ClientError::PermissionDenied { .. } => licd_error::LICD_ERR_PERMISSION_DENIED,
        ClientError::Timeout { .. } => licd_error::LICD_ERR_TIMEOUT,
        ClientError::Io { .. } => licd_error::LICD_ERR_IO,
        ClientError::Closed { .. } => licd_error::LICD_ERR_CLOSED,
        ClientError::UnsupportedVersion { .. } => licd_error::LICD_ERR_UNSUPPORTED_VERSION,
        ClientError::Refused(_) => licd_error::LICD_ERR_REFUSED,
        ClientError::Protocol(_) => licd_error::LICD_ERR_PROTOCOL,
        ClientError::Cache(_) => licd_error::LICD_ERR_CACHE,
        ClientError::InvalidService(_) => licd_error::LICD_ERR_INVALID_ARGUMENT,
        _ => licd_error::LICD_ERR_INTERNAL,
    }
}

fn client_error(e: ClientError) -> licd_error {
    fail(error_code(&e), &e.to_string())
}

/// Runs `f`, turning a panic (a bug) into `LICD_ERR_INTERNAL` instead of unwinding into C.
/// Needs a build that unwinds: the workspace's `release` profile does; the `firmware` profile
/// (the agent in cross/) aborts, so liblicd is never built with it.
fn guard(f: impl FnOnce() -> licd_error) -> licd_error {
    catch_unwind(AssertUnwindSafe(|| {
        #[cfg(test)]
        panic_hook::fire_if_armed();
        f()
    }))
    .unwrap_or_else(|_| {
        fail(
            licd_error::LICD_ERR_INTERNAL,
            "internal error in liblicd (a bug)",
        )
    })
}

/// Test-only: makes the next guarded call on this thread panic, so a unit test can drive a
/// panic through the real exported functions. It exists only in this crate's unit-test build
/// (`cfg(test)`): no input to a built liblicd can reach it.
#[cfg(test)]
mod panic_hook {
    use std::cell::Cell;

    thread_local! {
        static ARMED: Cell<bool> = const { Cell::new(false) };
    }

    pub(crate) fn arm() {
        ARMED.with(|a| a.set(true));
    }

    pub(crate) fn fire_if_armed() {
        if ARMED.with(|a| a.replace(false)) {
            // Panics holding the settings lock, which poisons it, as a bug inside a call could.
            let _settings = super::SETTINGS.write();
            panic!("liblicd test hook: forced panic");
        }
    }
}

fn reason_code(r: Option<Reason>) -> licd_reason {
    use licd_reason::*;
    match r {
        None => LICD_REASON_NONE,
        Some(Reason::NeverGranted) => LICD_REASON_NEVER_GRANTED,
        Some(Reason::LeaseExpired) => LICD_REASON_LEASE_EXPIRED,
        Some(Reason::TermEnded) => LICD_REASON_TERM_ENDED,
        Some(Reason::NotYetValid) => LICD_REASON_NOT_YET_VALID,
        Some(Reason::OverVmAllowance) => LICD_REASON_OVER_VM_ALLOWANCE,
        Some(Reason::Revoked) => LICD_REASON_REVOKED,
        Some(Reason::NotEntitled) => LICD_REASON_NOT_ENTITLED,
        Some(Reason::SeatsExhausted) => LICD_REASON_SEATS_EXHAUSTED,
        Some(Reason::Unassigned) => LICD_REASON_UNASSIGNED,
        Some(Reason::UnknownTenant) => LICD_REASON_UNKNOWN_TENANT,
        Some(Reason::Other) => LICD_REASON_OTHER,
        Some(Reason::Released) => LICD_REASON_RELEASED,
    }
}

fn to_c_state(state: &State, source: Source) -> licd_state {
    licd_state {
        state: match state {
            // Advisory past grace runs: licensed with a warning (its reason says why).
            State::Licensed { .. } | State::NonCompliant { .. } => licd_state_kind::LICD_LICENSED,
            State::Grace { .. } => licd_state_kind::LICD_GRACE,
            State::Unlicensed { .. } => licd_state_kind::LICD_UNLICENSED,
        },
        may_run: state.may_run(),
        until: state.until().unwrap_or(0),
        reason: reason_code(state.reason()),
        source: match source {
            Source::Daemon => licd_source::LICD_SOURCE_DAEMON,
            Source::Cache => licd_source::LICD_SOURCE_CACHE,
        },
    }
}

/// Reads a C string argument as UTF-8.
///
/// # Safety
/// `ptr` is NULL or points to a NUL-terminated string valid for the duration of the call.
unsafe fn arg<'a>(ptr: *const c_char, what: &str) -> Result<&'a str, licd_error> {
    if ptr.is_null() {
        return Err(fail(
            licd_error::LICD_ERR_INVALID_ARGUMENT,
            &format!("{what} is NULL"),
        ));
    }
    // SAFETY: not NULL (checked above); the caller guarantees a NUL-terminated string that
    // outlives this call, and we copy out of it before returning to C.
    let s = unsafe { CStr::from_ptr(ptr) };
    s.to_str().map_err(|_| {
        fail(
            licd_error::LICD_ERR_INVALID_ARGUMENT,
            &format!("{what} is not UTF-8"),
        )
    })
}

fn current_settings() -> (PathBuf, Duration) {
    let s = SETTINGS.read().unwrap_or_else(|p| p.into_inner());
    (
        s.socket
            .clone()
            .unwrap_or_else(|| PathBuf::from(licd_client::DEFAULT_SOCKET)),
        s.timeout,
    )
}

/// The socket-protocol major version this library speaks (1).
#[no_mangle]
pub extern "C" fn licd_api_version() -> u32 {
    licd_client::API_VERSION
}

/// Sets the agent's socket path for later calls in this process; NULL restores the default
/// `/run/licd/licd.sock`. The string is copied.
///
/// # Safety
/// `path` is NULL or a NUL-terminated string.
#[no_mangle]
pub unsafe extern "C" fn licd_set_socket_path(path: *const c_char) -> licd_error {
    guard(|| {
        let socket = if path.is_null() {
            None
        } else {
            // SAFETY: not NULL; the caller guarantees a NUL-terminated string.
            match unsafe { arg(path, "path") } {
                Ok(p) => Some(PathBuf::from(p)),
                Err(e) => return e,
            }
        };
        SETTINGS.write().unwrap_or_else(|p| p.into_inner()).socket = socket;
        licd_error::LICD_OK
    })
}

/// Sets how long a request waits for the agent, in milliseconds (default 2000; 0 is taken
/// as 1), for later calls in this process.
#[no_mangle]
pub extern "C" fn licd_set_timeout_ms(timeout_ms: u32) -> licd_error {
    guard(|| {
        SETTINGS.write().unwrap_or_else(|p| p.into_inner()).timeout =
            Duration::from_millis(u64::from(timeout_ms.max(1)));
        licd_error::LICD_OK
    })
}

/// Asks the running agent for the state of `service` and writes it to `*out`.
///
/// On any error `*out` is left unchanged: treat the service as the product's policy says for
/// "licensing unknown" (or use [`licd_check_with_fallback`]). A name licd does not accept
/// (`[A-Za-z0-9._-]{1,64}`, not `.` or `..`) is `LICD_ERR_INVALID_ARGUMENT`, before anything
/// is asked, exactly as with [`licd_check_with_fallback`].
///
/// Each call is one short connection. The agent keeps answering checks however many other
/// clients are connected: it serves up to 64 check connections at once and, when they are
/// all taken, closes an idle or slow one (a client must send its request within 1 s of
/// connecting) rather than refusing a new one; watchers have a budget of their own.
///
/// # Safety
/// `service` is a NUL-terminated string; `out` points to writable memory for a `licd_state`.
#[no_mangle]
pub unsafe extern "C" fn licd_check(service: *const c_char, out: *mut licd_state) -> licd_error {
    guard(|| {
        // SAFETY: the caller guarantees `service` is NULL or NUL-terminated.
        let service = match unsafe { arg(service, "service") } {
            Ok(s) => s,
            Err(e) => return e,
        };
        if out.is_null() {
            return fail(licd_error::LICD_ERR_INVALID_ARGUMENT, "out is NULL");
        }
        if let Err(e) = licd_client::validate_service(service) {
            return client_error(e);
        }
        let (socket, timeout) = current_settings();
        match Client::with_timeout(socket, timeout).and_then(|mut c| c.verdict(service)) {
            Ok(verdict) => {
                // SAFETY: `out` is not NULL and the caller guarantees it points to writable
                // memory for a licd_state; `write` does not read the old (maybe uninit) value.
                unsafe { out.write(to_c_state(&verdict.state, verdict.source)) };
                licd_error::LICD_OK
            }
            Err(e) => client_error(e),
        }
    })
}

#[cfg(feature = "cache-fallback")]
fn check_with_fallback(config: &str, service: &str) -> Result<Verdict, licd_error> {
    let (_, timeout) = current_settings();
    licd_client::fallback::check_with_timeout(Path::new(config), service, timeout)
        .map_err(client_error)
}

#[cfg(not(feature = "cache-fallback"))]
fn check_with_fallback(_config: &str, _service: &str) -> Result<Verdict, licd_error> {
    Err(fail(
        licd_error::LICD_ERR_UNSUPPORTED,
        "liblicd was built without the cache-fallback feature",
    ))
}

/// Like [`licd_check`], but reads the agent's config file `config_path` (socket path, state
/// directory) and, when the agent does not answer, evaluates its cache read-only with the
/// same rules as `licd check` (`out->source` is then `LICD_SOURCE_CACHE`). Needs read access
/// to the agent's state directory. Returns `LICD_ERR_UNSUPPORTED` when the library was built
/// without the `cache-fallback` feature. An invalid service name is
/// `LICD_ERR_INVALID_ARGUMENT`, as with [`licd_check`], whichever would have answered.
///
/// # Safety
/// `config_path` and `service` are NUL-terminated strings; `out` points to writable memory
/// for a `licd_state`.
#[no_mangle]
pub unsafe extern "C" fn licd_check_with_fallback(
    config_path: *const c_char,
    service: *const c_char,
    out: *mut licd_state,
) -> licd_error {
    guard(|| {
        // SAFETY: the caller guarantees NULL or NUL-terminated strings.
        let (config, service) =
            match unsafe { (arg(config_path, "config_path"), arg(service, "service")) } {
                (Ok(c), Ok(s)) => (c, s),
                (Err(e), _) | (_, Err(e)) => return e,
            };
        if out.is_null() {
            return fail(licd_error::LICD_ERR_INVALID_ARGUMENT, "out is NULL");
        }
        if let Err(e) = licd_client::validate_service(service) {
            return client_error(e);
        }
        match check_with_fallback(config, service) {
            Ok(verdict) => {
                // SAFETY: `out` is not NULL and points to writable memory for a licd_state
                // (caller's guarantee); `write` does not read the old value.
                unsafe { out.write(to_c_state(&verdict.state, verdict.source)) };
                licd_error::LICD_OK
            }
            Err(e) => e,
        }
    })
}

/// Watches state changes: connects, calls `callback(event, user_data)` once with
/// `LICD_EVENT_WATCHING` when the agent confirmed the subscription, then once per change, all
/// on the calling thread. Blocks until the callback returns non-zero (then `LICD_OK`) or the
/// connection fails (`LICD_ERR_CLOSED` when the agent stops or restarts: call `licd_watch`
/// again, and re-check at its `LICD_EVENT_WATCHING`).
///
/// Only changes are reported, so read the initial state at `LICD_EVENT_WATCHING` (with
/// `licd_check`, which uses a connection of its own): no change can fall between the two.
/// Run it on a dedicated thread; several threads may watch at once (a connection each). To
/// stop a watch from another thread, have the callback check a flag of yours: it runs at the
/// next event.
///
/// The agent serves at most 64 watchers at once (apart from checks, which they never
/// crowd out); past that `licd_watch` returns `LICD_ERR_REFUSED` ("too many watchers"). A
/// watch ended by a process exiting or closing it frees its place at once.
///
/// # Safety
/// `callback` is a valid function pointer; `user_data` is passed to it untouched.
#[no_mangle]
pub unsafe extern "C" fn licd_watch(callback: licd_watch_cb, user_data: *mut c_void) -> licd_error {
    guard(|| {
        let Some(callback) = callback else {
            return fail(licd_error::LICD_ERR_INVALID_ARGUMENT, "callback is NULL");
        };
        let (socket, timeout) = current_settings();
        let watch = match Watch::open(socket, timeout) {
            Ok(w) => w,
            Err(e) => return client_error(e),
        };
        let watching = licd_event {
            kind: licd_event_kind::LICD_EVENT_WATCHING,
            service: std::ptr::null(),
            state: NO_STATE,
            missed: 0,
        };
        // SAFETY: `callback` is a valid function pointer (caller's guarantee); `watching`
        // lives until after the call returns.
        if unsafe { callback(&watching, user_data) } != 0 {
            return licd_error::LICD_OK;
        }
        for item in watch {
            let event = match item {
                Ok(e) => e,
                Err(e) => return client_error(e),
            };
            // Keeps the service name alive while the callback runs.
            let (c_event, _name) = match &event {
                Event::Changed { service, state } => {
                    let name = CString::new(service.as_str()).unwrap_or_default();
                    let c = licd_event {
                        kind: licd_event_kind::LICD_EVENT_CHANGED,
                        service: name.as_ptr(),
                        state: to_c_state(state, Source::Daemon),
                        missed: 0,
                    };
                    (c, Some(name))
                }
                Event::Lagged { missed } => (
                    licd_event {
                        kind: licd_event_kind::LICD_EVENT_LAGGED,
                        service: std::ptr::null(),
                        state: NO_STATE,
                        missed: *missed,
                    },
                    None,
                ),
            };
            // SAFETY: `callback` is a valid function pointer (caller's guarantee); `c_event`
            // and the name it points to live until after the call returns.
            let stop = unsafe { callback(&c_event, user_data) };
            if stop != 0 {
                return licd_error::LICD_OK;
            }
        }
        // The iterator only ends without an error when stopped, which this function never does.
        licd_error::LICD_OK
    })
}

/// Copies the calling thread's message about its last failed call into `buf` (at most
/// `len` bytes, NUL-terminated, truncated if needed) and returns the message's full length
/// (without the NUL), so a caller can size a buffer. `buf` may be NULL when `len` is 0.
///
/// # Safety
/// `buf` points to `len` writable bytes (or `len` is 0).
#[no_mangle]
pub unsafe extern "C" fn licd_last_error_message(buf: *mut c_char, len: usize) -> usize {
    LAST_ERROR.with(|e| {
        let e = e.borrow();
        let bytes = e.as_bytes();
        if !buf.is_null() && len > 0 {
            let n = bytes.len().min(len - 1);
            // SAFETY: `buf` has `len` writable bytes (caller's guarantee) and n + 1 <= len;
            // `bytes` is our own CString, which cannot overlap caller memory.
            unsafe {
                std::ptr::copy_nonoverlapping(bytes.as_ptr().cast::<c_char>(), buf, n);
                buf.add(n).write(0);
            }
        }
        bytes.len()
    })
}

/// A short static description of a `licd_error` ("licd is not running", …); "unknown
/// error" for a value that is none. Takes an `int` so any value from C is safe to pass.
#[no_mangle]
pub extern "C" fn licd_strerror(error: c_int) -> *const c_char {
    use licd_error::*;
    const ALL: [licd_error; 13] = [
        LICD_OK,
        LICD_ERR_INVALID_ARGUMENT,
        LICD_ERR_NOT_RUNNING,
        LICD_ERR_PERMISSION_DENIED,
        LICD_ERR_TIMEOUT,
        LICD_ERR_IO,
        LICD_ERR_CLOSED,
        LICD_ERR_UNSUPPORTED_VERSION,
        LICD_ERR_REFUSED,
        LICD_ERR_PROTOCOL,
        LICD_ERR_CACHE,
        LICD_ERR_UNSUPPORTED,
        LICD_ERR_INTERNAL,
    ];
    let Some(&error) = ALL.iter().find(|&&e| e as c_int == error) else {
        return c"unknown error".as_ptr();
    };
    let s: &'static CStr = match error {
        LICD_OK => c"success",
        LICD_ERR_INVALID_ARGUMENT => c"invalid argument",
        LICD_ERR_NOT_RUNNING => c"licd is not running",
        LICD_ERR_PERMISSION_DENIED => c"permission denied on the licd socket",
        LICD_ERR_TIMEOUT => c"licd did not answer in time",
        LICD_ERR_IO => c"I/O error on the licd socket",
        LICD_ERR_CLOSED => c"licd closed the connection",
        LICD_ERR_UNSUPPORTED_VERSION => c"licd speaks a newer API version than this library",
        LICD_ERR_REFUSED => c"licd refused the request",
        LICD_ERR_PROTOCOL => c"malformed answer from licd",
        LICD_ERR_CACHE => c"cannot evaluate the licd cache",
        LICD_ERR_UNSUPPORTED => c"not supported by this build of liblicd",
        LICD_ERR_INTERNAL => c"internal error in liblicd",
    };
    s.as_ptr()
}

/// The static name of a `licd_state_kind`: "licensed", "grace" or "unlicensed"; "unknown"
/// for a value that is none. Takes an `int` so any value from C is safe to pass.
#[no_mangle]
pub extern "C" fn licd_state_name(state: c_int) -> *const c_char {
    use licd_state_kind::*;
    let s: &'static CStr = match state {
        s if s == LICD_LICENSED as c_int => c"licensed",
        s if s == LICD_GRACE as c_int => c"grace",
        s if s == LICD_UNLICENSED as c_int => c"unlicensed",
        _ => c"unknown",
    };
    s.as_ptr()
}

/// The static name of a `licd_reason` as the agent spells it ("lease_expired", …); "" for
/// `LICD_REASON_NONE`, "other" for `LICD_REASON_OTHER` and for a value that is none. Takes
/// an `int` so any value from C is safe to pass.
#[no_mangle]
pub extern "C" fn licd_reason_name(reason: c_int) -> *const c_char {
    use licd_reason::*;
    const ALL: [licd_reason; 13] = [
        LICD_REASON_NONE,
        LICD_REASON_NEVER_GRANTED,
        LICD_REASON_LEASE_EXPIRED,
        LICD_REASON_TERM_ENDED,
        LICD_REASON_NOT_YET_VALID,
        LICD_REASON_OVER_VM_ALLOWANCE,
        LICD_REASON_REVOKED,
        LICD_REASON_NOT_ENTITLED,
        LICD_REASON_SEATS_EXHAUSTED,
        LICD_REASON_UNASSIGNED,
        LICD_REASON_UNKNOWN_TENANT,
        LICD_REASON_OTHER,
        LICD_REASON_RELEASED,
    ];
    let reason = ALL
        .iter()
        .copied()
        .find(|&r| r as c_int == reason)
        .unwrap_or(LICD_REASON_OTHER);
    let s: &'static CStr = match reason {
        LICD_REASON_NONE => c"",
        LICD_REASON_NEVER_GRANTED => c"never_granted",
        LICD_REASON_LEASE_EXPIRED => c"lease_expired",
        LICD_REASON_TERM_ENDED => c"term_ended",
        LICD_REASON_NOT_YET_VALID => c"not_yet_valid",
        LICD_REASON_OVER_VM_ALLOWANCE => c"over_vm_allowance",
        LICD_REASON_REVOKED => c"revoked",
        LICD_REASON_NOT_ENTITLED => c"not_entitled",
        LICD_REASON_SEATS_EXHAUSTED => c"seats_exhausted",
        LICD_REASON_UNASSIGNED => c"unassigned",
        LICD_REASON_UNKNOWN_TENANT => c"unknown_tenant",
        LICD_REASON_OTHER => c"other",
        LICD_REASON_RELEASED => c"released",
    };
    s.as_ptr()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn last_error() -> String {
        let mut buf = [0 as c_char; 256];
        // SAFETY: `buf` has 256 writable bytes.
        let n = unsafe { licd_last_error_message(buf.as_mut_ptr(), buf.len()) };
        // SAFETY: licd_last_error_message NUL-terminated `buf`.
        let s = unsafe { CStr::from_ptr(buf.as_ptr()) };
        assert_eq!(n, s.to_bytes().len());
        s.to_string_lossy().into_owned()
    }

    #[test]
    fn a_missing_socket_is_not_running_with_a_message_naming_it() {
        let dir = std::env::temp_dir().join(format!("licd-ffi-test-{}", std::process::id()));
        let path = CString::new(dir.join("none.sock").to_string_lossy().as_bytes()).unwrap();
        // SAFETY: a valid C string.
        let rc = unsafe { licd_set_socket_path(path.as_ptr()) };
        assert_eq!(rc, licd_error::LICD_OK);
        let mut out = NO_STATE;
        // SAFETY: a valid C string and a writable licd_state.
        let rc = unsafe { licd_check(c"wifi".as_ptr(), &mut out) };
        assert_eq!(rc, licd_error::LICD_ERR_NOT_RUNNING);
        let message = last_error();
        assert!(message.contains("not running"), "{message}");
        assert!(message.contains("none.sock"), "{message}");
        // SAFETY: NULL restores the default.
        unsafe { licd_set_socket_path(std::ptr::null()) };
    }

    #[test]
    fn a_panic_inside_a_call_is_an_internal_error_and_the_library_keeps_working() {
        let before = licd_state {
            until: 7,
            ..NO_STATE
        };
        let mut out = before;
        panic_hook::arm();
        // A panic escaping an `extern "C"` function aborts the process: reaching the asserts
        // at all is half the test.
        // SAFETY: a valid C string and a writable licd_state.
        let rc = unsafe { licd_check(c"wifi".as_ptr(), &mut out) };
        assert_eq!(rc, licd_error::LICD_ERR_INTERNAL);
        assert_eq!(out, before, "a failed call leaves *out unchanged");
        assert_eq!(last_error(), "internal error in liblicd (a bug)");
        assert!(
            SETTINGS.is_poisoned(),
            "the hook panicked holding the settings lock"
        );

        // The next calls work, on the lock the panic poisoned.
        let dir = std::env::temp_dir().join(format!("licd-ffi-panic-{}", std::process::id()));
        let path = CString::new(dir.join("none.sock").to_string_lossy().as_bytes()).unwrap();
        // SAFETY: a valid C string.
        let rc = unsafe { licd_set_socket_path(path.as_ptr()) };
        assert_eq!(rc, licd_error::LICD_OK);
        // SAFETY: a valid C string and a writable licd_state.
        let rc = unsafe { licd_check(c"wifi".as_ptr(), &mut out) };
        assert_eq!(rc, licd_error::LICD_ERR_NOT_RUNNING, "{}", last_error());
        // SAFETY: NULL restores the default.
        unsafe { licd_set_socket_path(std::ptr::null()) };
    }

    #[test]
    fn null_arguments_are_refused_not_dereferenced() {
        let mut out = NO_STATE;
        // SAFETY: NULL is allowed and must be refused.
        let rc = unsafe { licd_check(std::ptr::null(), &mut out) };
        assert_eq!(rc, licd_error::LICD_ERR_INVALID_ARGUMENT);
        // SAFETY: NULL out must be refused.
        let rc = unsafe { licd_check(c"wifi".as_ptr(), std::ptr::null_mut()) };
        assert_eq!(rc, licd_error::LICD_ERR_INVALID_ARGUMENT);
        // SAFETY: a NULL callback must be refused.
        let rc = unsafe { licd_watch(None, std::ptr::null_mut()) };
        assert_eq!(rc, licd_error::LICD_ERR_INVALID_ARGUMENT);
    }

    #[test]
    fn a_short_buffer_gets_a_truncated_terminated_message() {
        set_last_error("licd is not running");
        let mut buf = [1 as c_char; 5];
        // SAFETY: `buf` has 5 writable bytes.
        let n = unsafe { licd_last_error_message(buf.as_mut_ptr(), buf.len()) };
        assert_eq!(n, "licd is not running".len());
        // SAFETY: NUL-terminated within `buf`.
        let s = unsafe { CStr::from_ptr(buf.as_ptr()) };
        assert_eq!(s.to_bytes(), b"licd");
        // SAFETY: len 0 with NULL only asks for the length.
        let full = unsafe { licd_last_error_message(std::ptr::null_mut(), 0) };
        assert_eq!(full, n);
    }

    #[test]
    fn names_are_static_and_out_of_range_values_are_safe() {
        let name = |p: *const c_char| {
            // SAFETY: the name functions return static C strings.
            unsafe { CStr::from_ptr(p) }.to_str().unwrap().to_owned()
        };
        assert_eq!(name(licd_strerror(2)), "licd is not running");
        assert_eq!(name(licd_strerror(999)), "unknown error");
        assert_eq!(name(licd_state_name(1)), "grace");
        assert_eq!(name(licd_state_name(-1)), "unknown");
        assert_eq!(name(licd_reason_name(6)), "revoked");
        assert_eq!(name(licd_reason_name(77)), "other");
        assert_eq!(licd_api_version(), 1);
    }
}

//! Loopback ports chosen at runtime.

use std::net::{Ipv4Addr, TcpListener};

use crate::{HarnessError, Result};

/// The loopback address every test server binds to.
pub const LOOPBACK: Ipv4Addr = Ipv4Addr::LOCALHOST;

/// A TCP port on 127.0.0.1 that was free a moment ago (the OS picks it; the listener is closed
/// before returning, so a rare race with another process is possible: servers started on it
/// should retry with a new port when the bind fails, as [`crate::Mosquitto::start`] does).
pub fn free_port() -> Result<u16> {
    let listener = TcpListener::bind((LOOPBACK, 0))
        .map_err(|e| HarnessError::io("bind 127.0.0.1:0 to find a free port", e))?;
    let port = listener
        .local_addr()
        .map_err(|e| HarnessError::io("read the local address of a probe listener", e))?
        .port();
    Ok(port)
}

/// Whether something accepts TCP connections on 127.0.0.1:`port` right now.
pub fn is_listening(port: u16) -> bool {
    let addr = (LOOPBACK, port).into();
    std::net::TcpStream::connect_timeout(&addr, std::time::Duration::from_millis(200)).is_ok()
}

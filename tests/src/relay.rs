//! [`Relay`]: a TCP relay on a free loopback port in front of a server, that a test can cut and
//! heal. Put between the controller and its broker, it cuts the controller's broker link alone:
//! the agents stay connected to the broker, their reports go unanswered and their leases run
//! out, which is what a controller outage looks like from the field.
//!
//! Cut: every relayed connection is closed at once and new ones are closed as soon as they are
//! accepted (a refused connection, as the client sees it). Heal: new connections are relayed
//! again; the client reconnects by its own backoff.

use std::net::SocketAddr;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::net::LOOPBACK;
use crate::{HarnessError, Result};

/// A cuttable relay to `127.0.0.1:upstream`; stops when dropped.
pub struct Relay {
    port: u16,
    open: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl Relay {
    /// Listens on a free loopback port and relays each connection to 127.0.0.1:`upstream`.
    /// Spawns onto the current tokio runtime.
    pub async fn start(upstream: u16) -> Result<Self> {
        let listener = TcpListener::bind((LOOPBACK, 0))
            .await
            .map_err(|e| HarnessError::io("bind the relay on 127.0.0.1:0", e))?;
        let port = listener
            .local_addr()
            .map_err(|e| HarnessError::io("read the relay's address", e))?
            .port();
        let (open, open_rx) = watch::channel(true);
        let upstream = SocketAddr::from((LOOPBACK, upstream));
        let task = tokio::spawn(accept_loop(listener, upstream, open_rx));
        Ok(Self { port, open, task })
    }

    /// The port clients connect to.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Closes every relayed connection and refuses new ones until [`Self::heal`].
    pub fn cut(&self) {
        self.open.send_replace(false);
    }

    /// Relays new connections again.
    pub fn heal(&self) {
        self.open.send_replace(true);
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.open.send_replace(false);
        self.task.abort();
    }
}

async fn accept_loop(listener: TcpListener, upstream: SocketAddr, open: watch::Receiver<bool>) {
    while let Ok((client, _)) = listener.accept().await {
        if !*open.borrow() {
            // Dropped at once: the client sees its connection closed before any answer.
            continue;
        }
        tokio::spawn(relay(client, upstream, open.clone()));
    }
}

async fn relay(mut client: TcpStream, upstream: SocketAddr, mut open: watch::Receiver<bool>) {
    let Ok(mut server) = TcpStream::connect(upstream).await else {
        return;
    };
    tokio::select! {
        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
        _ = open.wait_for(|open| !*open) => {}
    }
    // Both streams drop here: the cut closes them.
}

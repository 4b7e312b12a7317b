//! What happens in the running stub, as a stream for live views (the dashboard's event feed,
//! `GET /ui/events`): reports applied or refused, bundles published, operator changes. A
//! broadcast channel: a slow or absent listener never holds the controller up (it misses
//! events and is told how many), and with no listener an event costs one failed send.

use serde::Serialize;
use tokio::sync::broadcast;

/// Events kept for a listener that falls behind.
const CAPACITY: usize = 256;

/// One thing that happened.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StubEvent {
    /// `report`, `refused`, `bundle`, `operator` or `link` (the controller's broker link).
    pub kind: &'static str,
    /// Tenant, when the event concerns one device.
    pub tenant: Option<String>,
    /// Device, when the event concerns one device.
    pub device: Option<String>,
    /// One line for a person (ids, seq, refusal code).
    pub text: String,
}

/// The sender side; listeners call [`Events::subscribe`].
#[derive(Debug)]
pub struct Events(broadcast::Sender<StubEvent>);

impl Default for Events {
    fn default() -> Self {
        Self(broadcast::channel(CAPACITY).0)
    }
}

impl Events {
    /// Sends `event` to the listeners there are (none is fine).
    pub fn send(&self, event: StubEvent) {
        let _ = self.0.send(event);
    }

    /// A new listener, from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<StubEvent> {
        self.0.subscribe()
    }

    /// A device event.
    pub fn device(&self, kind: &'static str, tenant: &str, device: &str, text: String) {
        self.send(StubEvent {
            kind,
            tenant: Some(tenant.to_string()),
            device: Some(device.to_string()),
            text,
        });
    }
}

/// `(tenant, device)` of a `licd/v1/{tenant}/{device}/…` topic, when it is one.
pub fn topic_ids(topic: &str) -> Option<(&str, &str)> {
    let mut parts = topic.split('/');
    match (parts.next(), parts.next(), parts.next(), parts.next()) {
        (Some("licd"), Some("v1"), Some(tenant), Some(device)) => Some((tenant, device)),
        _ => None,
    }
}

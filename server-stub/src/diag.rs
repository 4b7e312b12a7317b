//! Remote diagnostics, controller side: [`crate::StubHandle::request_diag`] signs a
//! [`DiagRequest`] with the controller's certified signing key, publishes it (QoS 1, not
//! retained) on the device's `diag-request` topic, and waits for the response on
//! `diag-response` that carries the same request id and verifies against the device key
//! pinned in the ledger. Anything else arriving there (a stranger's message, an answer to
//! another request) is logged and ignored until the deadline.
//!
//! The session subscribes to `licd/v1/+/+/diag-response` (plain, so the replica that asked
//! gets the answer) and hands each message to [`DiagWaiters`]; the waiting and the
//! verification happen in the caller's task.
//!
//! Two answers come without waiting out the timeout, because the device would never give one:
//! - **offline**: while a request waits, the stub subscribes to the device's retained
//!   `presence` topic; `offline` (the agent's last will, or its clean stop) ends the wait at
//!   once with [`DiagError::Offline`]. With no presence known the wait runs to the timeout.
//! - **rate-limited**: the agent answers one request per
//!   [`DIAG_MIN_INTERVAL`](licd_protocol::diag::DIAG_MIN_INTERVAL) seconds and refuses the
//!   rest without a word (docs/PROTOCOL.md §8.5). The stub remembers when it last asked each
//!   device (and when the answer came) and refuses a request inside that window with
//!   [`DiagError::RateLimited`] and the seconds to wait, before publishing anything. A request
//!   from elsewhere (another controller, a restart of this one) is not known here: the device
//!   then still refuses silently and the wait runs to the timeout.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use licd_protocol::diag::{RequestId, DIAG_MIN_INTERVAL};
use licd_protocol::envelope::open_diag_response;
use licd_protocol::limits::MAX_ENVELOPE_LEN;
use licd_protocol::{DeviceId, DiagRequest, DiagResponse, PublicKey, TenantId, Topic, TopicKind};
use rumqttc::{AsyncClient, QoS};
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::config::Clock;
use crate::controller::Controller;
use crate::error::StubError;

/// Messages buffered per waiting request before further ones are dropped (a flood of forged
/// responses must not grow memory; the genuine one comes from the device once).
const WAITER_QUEUE: usize = 8;

/// Default time to wait for a device's answer: the agent's diagnosis is bounded to 30 s.
pub const DEFAULT_DIAG_TIMEOUT: Duration = Duration::from_secs(45);

/// Why a diagnostic request got no verified answer.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DiagError {
    /// The ledger has no device by that name (no pinned key to verify an answer with).
    #[error("unknown device {tenant}/{device}: it has never reported")]
    UnknownDevice {
        /// Tenant.
        tenant: String,
        /// Device.
        device: String,
    },
    /// The device's presence is `offline`: it cannot answer.
    #[error("device {tenant}/{device} is offline (its presence says so); ask again once it is connected")]
    Offline {
        /// Tenant.
        tenant: String,
        /// Device.
        device: String,
    },
    /// This stub asked the device less than a minute ago; the device answers one request a
    /// minute and would refuse this one silently.
    #[error("device {tenant}/{device} was asked {ago} s ago and answers one request every {DIAG_MIN_INTERVAL} s; retry in {retry_after} s")]
    RateLimited {
        /// Tenant.
        tenant: String,
        /// Device.
        device: String,
        /// Seconds since the last request (or its answer).
        ago: u64,
        /// Seconds until the device accepts another request.
        retry_after: u64,
    },
    /// No verified answer within the timeout (the device refused the request — its log says
    /// why —, or it is offline and no presence said so).
    #[error("no answer from {tenant}/{device} within {after:?} (refused or unreachable: see the device's log)")]
    Timeout {
        /// Tenant.
        tenant: String,
        /// Device.
        device: String,
        /// The timeout.
        after: Duration,
    },
    /// The request could not be handed to the MQTT client.
    #[error("request not published: {0}")]
    Publish(String),
    /// No randomness for the request id.
    #[error("no randomness for the request id: {0}")]
    Random(String),
    /// The stub itself failed.
    #[error(transparent)]
    Stub(#[from] StubError),
}

/// What a waiting request hears about its device.
#[derive(Debug)]
enum Heard {
    /// A message on its `diag-response` topic (to verify).
    Response(Vec<u8>),
    /// Its presence: `true` online, `false` offline.
    Presence(bool),
}

#[derive(Debug)]
struct Waiter {
    tenant: TenantId,
    device: DeviceId,
    tx: mpsc::Sender<Heard>,
}

type DeviceKey = (TenantId, DeviceId);

/// The requests waiting for an answer, keyed by request id, and when each device was last
/// asked (for the rate limit the device applies).
#[derive(Debug, Default)]
pub struct DiagWaiters {
    waiting: Mutex<HashMap<RequestId, Waiter>>,
    asked: Mutex<HashMap<DeviceKey, Instant>>,
}

impl DiagWaiters {
    /// A message arrived on a `diag-response` or `presence` topic: hand it to every request
    /// waiting on that device (they verify responses). Messages for devices nobody asked are
    /// dropped.
    pub(crate) fn deliver(&self, topic: &str, payload: &[u8]) {
        if payload.len() > MAX_ENVELOPE_LEN {
            tracing::warn!(%topic, len = payload.len(), "diagnostic response over the size limit dropped");
            return;
        }
        let Ok(t) = Topic::parse(topic) else {
            tracing::debug!(%topic, "message on an unexpected topic dropped");
            return;
        };
        let heard = || match t.kind {
            TopicKind::DiagResponse => Some(Heard::Response(payload.to_vec())),
            // Presence is plain text and informational (PROTOCOL.md §1): only the two words.
            TopicKind::Presence => match payload {
                b"online" => Some(Heard::Presence(true)),
                b"offline" => Some(Heard::Presence(false)),
                _ => None,
            },
            _ => None,
        };
        let Ok(waiting) = self.waiting.lock() else {
            return;
        };
        let mut delivered = false;
        for w in waiting
            .values()
            .filter(|w| w.tenant == t.tenant && w.device == t.device)
        {
            if let Some(h) = heard() {
                delivered |= w.tx.try_send(h).is_ok();
            }
        }
        if !delivered {
            tracing::debug!(%topic, "diagnostic message nobody waits for dropped");
        }
    }

    /// Registers request `id`; says whether it is the only one waiting on its device (then
    /// the caller subscribes to the device's presence, and unsubscribes when it is done).
    fn register<'a>(
        &'a self,
        client: &'a AsyncClient,
        id: RequestId,
        tenant: &TenantId,
        device: &DeviceId,
    ) -> (Registration<'a>, bool) {
        let (tx, rx) = mpsc::channel(WAITER_QUEUE);
        let mut first = true;
        if let Ok(mut w) = self.waiting.lock() {
            first = !w
                .values()
                .any(|w| w.tenant == *tenant && w.device == *device);
            w.insert(
                id,
                Waiter {
                    tenant: tenant.clone(),
                    device: device.clone(),
                    tx,
                },
            );
        }
        let presence = Topic::new(tenant, device, TopicKind::Presence).to_topic_string();
        let registration = Registration {
            waiters: self,
            client,
            id,
            device: (tenant.clone(), device.clone()),
            presence,
            rx,
        };
        (registration, first)
    }

    /// Seconds since `device` was last asked and until it takes another request, if that is
    /// inside the device's rate limit.
    fn rate_limited(&self, device: &DeviceKey, now: Instant) -> Option<(u64, u64)> {
        let asked = self.asked.lock().ok()?;
        let at = *asked.get(device)?;
        let ago = now.saturating_duration_since(at);
        let window = Duration::from_secs(DIAG_MIN_INTERVAL);
        (ago < window).then(|| (ago.as_secs(), (window - ago).as_secs().max(1)))
    }

    /// Notes that `device` was asked (or answered) at `at`; forgets devices asked longer
    /// ago than the rate limit, so the map holds only recent ones.
    fn note_asked(&self, device: DeviceKey, at: Instant) {
        if let Ok(mut asked) = self.asked.lock() {
            let window = Duration::from_secs(DIAG_MIN_INTERVAL);
            asked.retain(|_, t| at.saturating_duration_since(*t) < window);
            asked.insert(device, at);
        }
    }
}

/// Removes its request from the waiters when the caller stops waiting, however it stops, and
/// unsubscribes from the device's presence when no other request waits on it.
struct Registration<'a> {
    waiters: &'a DiagWaiters,
    client: &'a AsyncClient,
    id: RequestId,
    device: DeviceKey,
    presence: String,
    rx: mpsc::Receiver<Heard>,
}

impl Drop for Registration<'_> {
    fn drop(&mut self) {
        if let Ok(mut w) = self.waiters.waiting.lock() {
            w.remove(&self.id);
            let (tenant, device) = &self.device;
            if !w
                .values()
                .any(|w| w.tenant == *tenant && w.device == *device)
            {
                let _ = self.client.try_unsubscribe(self.presence.clone());
            }
        }
    }
}

/// What [`request`] needs from the running stub.
pub(crate) struct DiagContext<'a> {
    pub(crate) core: &'a Mutex<Controller>,
    pub(crate) client: &'a AsyncClient,
    pub(crate) waiters: &'a Arc<DiagWaiters>,
    pub(crate) clock: &'a Clock,
}

/// The pinned key of a device, from the engine.
fn pinned_key(
    core: &Mutex<Controller>,
    tenant: &TenantId,
    device: &DeviceId,
) -> Result<PublicKey, DiagError> {
    let view = {
        let c = core.lock().map_err(|_| StubError::Poisoned)?;
        c.engine().device_view(tenant, device)
    };
    view.and_then(|v| PublicKey::from_hex(&v.key).ok())
        .ok_or_else(|| DiagError::UnknownDevice {
            tenant: tenant.to_string(),
            device: device.to_string(),
        })
}

/// Asks `device` of `tenant` for its diagnostic report and waits up to `timeout` for the
/// verified answer; answers at once when the device is offline or would refuse the request
/// for its rate limit (see the module docs).
pub(crate) async fn request(
    cx: DiagContext<'_>,
    tenant: &TenantId,
    device: &DeviceId,
    timeout: Duration,
) -> Result<DiagResponse, DiagError> {
    let pinned = pinned_key(cx.core, tenant, device)?;
    let key = (tenant.clone(), device.clone());
    if let Some((ago, retry_after)) = cx.waiters.rate_limited(&key, Instant::now()) {
        return Err(DiagError::RateLimited {
            tenant: tenant.to_string(),
            device: device.to_string(),
            ago,
            retry_after,
        });
    }
    let mut request_id = [0u8; 16];
    getrandom::fill(&mut request_id).map_err(|e| DiagError::Random(e.to_string()))?;
    let request = DiagRequest {
        device: device.clone(),
        tenant: tenant.clone(),
        request_id,
        issued_at: cx.clock.now(),
    };
    let bytes = {
        let c = cx.core.lock().map_err(|_| StubError::Poisoned)?;
        c.signer().seal_diag_request(&request)
    };
    // Listen before asking, so a fast answer is not missed; the device's retained presence
    // arrives right after the subscription.
    let (mut reg, first) = cx.waiters.register(cx.client, request_id, tenant, device);
    if first {
        cx.client
            .subscribe(reg.presence.clone(), QoS::AtLeastOnce)
            .await
            .map_err(|e| DiagError::Publish(e.to_string()))?;
    }
    let topic = Topic::new(tenant, device, TopicKind::DiagRequest).to_topic_string();
    cx.client
        .publish(topic.clone(), QoS::AtLeastOnce, false, bytes)
        .await
        .map_err(|e| DiagError::Publish(e.to_string()))?;
    tracing::info!(%topic, "diagnostic request published");
    cx.waiters.note_asked(key.clone(), Instant::now());
    let wait = async {
        while let Some(heard) = reg.rx.recv().await {
            let raw = match heard {
                Heard::Response(raw) => raw,
                Heard::Presence(true) => continue,
                Heard::Presence(false) => return Err(()),
            };
            match open_diag_response(&raw, &pinned) {
                Ok(r)
                    if r.request_id == request_id && r.device == *device && r.tenant == *tenant =>
                {
                    return Ok(Some(r));
                }
                Ok(_) => {
                    tracing::debug!(%tenant, %device, "diagnostic response to another request ignored")
                }
                Err(e) => {
                    tracing::warn!(%tenant, %device, reason = %e, "diagnostic response refused")
                }
            }
        }
        Ok(None)
    };
    match tokio::time::timeout(timeout, wait).await {
        Ok(Ok(Some(r))) => {
            // The device took the request at or before now: its minute runs from no later.
            cx.waiters.note_asked(key, Instant::now());
            Ok(r)
        }
        Ok(Err(())) => {
            // Nobody received the request: it does not count against the device's limit.
            if let Ok(mut asked) = cx.waiters.asked.lock() {
                asked.remove(&key);
            }
            Err(DiagError::Offline {
                tenant: tenant.to_string(),
                device: device.to_string(),
            })
        }
        _ => Err(DiagError::Timeout {
            tenant: tenant.to_string(),
            device: device.to_string(),
            after: timeout,
        }),
    }
}

/// The human form of a diagnostic document: a header, then one line per step with its
/// verdict, figure and hint.
pub fn render(response: &DiagResponse) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let doc: serde_json::Value = match serde_json::from_str(&response.report) {
        Ok(v) => v,
        Err(e) => {
            return format!(
                "{}/{}: the device sent a report that is not JSON ({e})\n",
                response.tenant, response.device
            )
        }
    };
    let s = |v: &serde_json::Value| v.as_str().map(str::to_owned).unwrap_or_default();
    let _ = writeln!(
        out,
        "{}/{}  agent {}  verdict {}  (generated at {}, offline diagnosis)",
        response.tenant,
        response.device,
        s(&doc["agent_version"]),
        s(&doc["verdict"]),
        response.generated_at
    );
    for step in doc["steps"].as_array().into_iter().flatten() {
        let verdict = match s(&step["verdict"]).as_str() {
            "warn" => "WARN".to_string(),
            "fail" => "FAIL".to_string(),
            other => other.to_string(),
        };
        let _ = writeln!(
            out,
            "  {verdict:<4}  {:<18} {}",
            s(&step["title"]),
            s(&step["figure"])
        );
        if let Some(hint) = step["hint"].as_str() {
            let _ = writeln!(out, "        hint: {hint}");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn response(report: &str) -> DiagResponse {
        DiagResponse {
            device: DeviceId::new("ap-1").unwrap(),
            tenant: TenantId::new("acme").unwrap(),
            request_id: [1; 16],
            generated_at: 42,
            report: report.into(),
        }
    }

    #[test]
    fn render_lists_each_step_with_its_verdict_and_hint() {
        let text = render(&response(
            r#"{"agent_version":"0.1.0","verdict":"warn","steps":[
                {"id":"config","title":"config","verdict":"ok","figure":"fine"},
                {"id":"clock","title":"clock","verdict":"warn","figure":"no NTP","hint":"enable NTP"}]}"#,
        ));
        assert!(
            text.starts_with("acme/ap-1  agent 0.1.0  verdict warn"),
            "{text}"
        );
        assert!(text.contains("ok    config"), "{text}");
        assert!(text.contains("WARN  clock"), "{text}");
        assert!(text.contains("hint: enable NTP"), "{text}");
    }

    #[test]
    fn render_says_so_when_the_report_is_not_json() {
        assert!(render(&response("garbage")).contains("not JSON"));
    }

    fn client() -> AsyncClient {
        AsyncClient::new(rumqttc::MqttOptions::new("t", "127.0.0.1", 1), 8).0
    }

    #[test]
    fn responses_and_presence_go_only_to_requests_waiting_on_that_device() {
        let w = DiagWaiters::default();
        let c = client();
        let (t, d) = (
            TenantId::new("acme").unwrap(),
            DeviceId::new("ap-1").unwrap(),
        );
        let (mut reg, first) = w.register(&c, [1; 16], &t, &d);
        assert!(first);
        assert_eq!(reg.presence, "licd/v1/acme/ap-1/presence");
        let (other, first) = w.register(&c, [2; 16], &t, &d);
        assert!(
            !first,
            "the second request on a device needs no subscription"
        );
        drop(other);
        w.deliver("licd/v1/acme/ap-2/diag-response", b"other");
        w.deliver("licd/v1/acme/ap-1/diag-response", b"mine");
        w.deliver("licd/v1/acme/ap-2/presence", b"offline");
        w.deliver("licd/v1/acme/ap-1/presence", b"whatever");
        w.deliver("licd/v1/acme/ap-1/presence", b"offline");
        w.deliver("not/a/licd/topic", b"x");
        assert!(matches!(reg.rx.try_recv(), Ok(Heard::Response(r)) if r == b"mine"));
        assert!(matches!(reg.rx.try_recv(), Ok(Heard::Presence(false))));
        assert!(reg.rx.try_recv().is_err());
        drop(reg);
        assert!(w.waiting.lock().unwrap().is_empty());
    }

    #[test]
    fn a_device_asked_within_its_interval_is_rate_limited_until_the_interval_ends() {
        let w = DiagWaiters::default();
        let key = (
            TenantId::new("acme").unwrap(),
            DeviceId::new("ap-1").unwrap(),
        );
        let t0 = Instant::now();
        assert_eq!(w.rate_limited(&key, t0), None);
        w.note_asked(key.clone(), t0);
        assert_eq!(
            w.rate_limited(&key, t0 + Duration::from_secs(15)),
            Some((15, 45))
        );
        let end = t0 + Duration::from_secs(DIAG_MIN_INTERVAL);
        assert_eq!(w.rate_limited(&key, end), None);
        // Old entries are forgotten as new devices are asked.
        let other = (key.0.clone(), DeviceId::new("ap-2").unwrap());
        w.note_asked(other, end);
        assert_eq!(w.asked.lock().unwrap().len(), 1);
    }
}

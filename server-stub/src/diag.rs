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

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use licd_protocol::diag::RequestId;
use licd_protocol::envelope::open_diag_response;
use licd_protocol::limits::MAX_ENVELOPE_LEN;
use licd_protocol::{DeviceId, DiagRequest, DiagResponse, PublicKey, TenantId, Topic, TopicKind};
use rumqttc::{AsyncClient, QoS};
use tokio::sync::mpsc;

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
    /// No verified answer within the timeout (device offline, rate-limited, or it refused
    /// the request — its log says why).
    #[error("no answer from {tenant}/{device} within {after:?} (offline, rate-limited, or refused: see the device's log)")]
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

#[derive(Debug)]
struct Waiter {
    tenant: TenantId,
    device: DeviceId,
    tx: mpsc::Sender<Vec<u8>>,
}

/// The requests waiting for an answer, keyed by request id.
#[derive(Debug, Default)]
pub struct DiagWaiters {
    waiting: Mutex<HashMap<RequestId, Waiter>>,
}

impl DiagWaiters {
    /// A message arrived on a `diag-response` topic: hand it to every request waiting on that
    /// device (they verify it). Messages for devices nobody asked are dropped.
    pub(crate) fn deliver(&self, topic: &str, payload: &[u8]) {
        if payload.len() > MAX_ENVELOPE_LEN {
            tracing::warn!(%topic, len = payload.len(), "diagnostic response over the size limit dropped");
            return;
        }
        let Ok(t) = Topic::parse(topic) else {
            tracing::debug!(%topic, "message on an unexpected topic dropped");
            return;
        };
        let Ok(waiting) = self.waiting.lock() else {
            return;
        };
        let mut delivered = false;
        for w in waiting
            .values()
            .filter(|w| w.tenant == t.tenant && w.device == t.device)
        {
            delivered |= w.tx.try_send(payload.to_vec()).is_ok();
        }
        if !delivered {
            tracing::debug!(%topic, "diagnostic response nobody waits for dropped");
        }
    }

    fn register(&self, id: RequestId, tenant: &TenantId, device: &DeviceId) -> Registration<'_> {
        let (tx, rx) = mpsc::channel(WAITER_QUEUE);
        if let Ok(mut w) = self.waiting.lock() {
            w.insert(
                id,
                Waiter {
                    tenant: tenant.clone(),
                    device: device.clone(),
                    tx,
                },
            );
        }
        Registration {
            waiters: self,
            id,
            rx,
        }
    }
}

/// Removes its request from the waiters when the caller stops waiting, however it stops.
struct Registration<'a> {
    waiters: &'a DiagWaiters,
    id: RequestId,
    rx: mpsc::Receiver<Vec<u8>>,
}

impl Drop for Registration<'_> {
    fn drop(&mut self) {
        if let Ok(mut w) = self.waiters.waiting.lock() {
            w.remove(&self.id);
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
/// verified answer.
pub(crate) async fn request(
    cx: DiagContext<'_>,
    tenant: &TenantId,
    device: &DeviceId,
    timeout: Duration,
) -> Result<DiagResponse, DiagError> {
    let pinned = pinned_key(cx.core, tenant, device)?;
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
    // Listen before asking, so a fast answer is not missed.
    let mut reg = cx.waiters.register(request_id, tenant, device);
    let topic = Topic::new(tenant, device, TopicKind::DiagRequest).to_topic_string();
    cx.client
        .publish(topic.clone(), QoS::AtLeastOnce, false, bytes)
        .await
        .map_err(|e| DiagError::Publish(e.to_string()))?;
    tracing::info!(%topic, "diagnostic request published");
    let wait = async {
        while let Some(raw) = reg.rx.recv().await {
            match open_diag_response(&raw, &pinned) {
                Ok(r)
                    if r.request_id == request_id && r.device == *device && r.tenant == *tenant =>
                {
                    return Some(r);
                }
                Ok(_) => {
                    tracing::debug!(%tenant, %device, "diagnostic response to another request ignored")
                }
                Err(e) => {
                    tracing::warn!(%tenant, %device, reason = %e, "diagnostic response refused")
                }
            }
        }
        None
    };
    match tokio::time::timeout(timeout, wait).await {
        Ok(Some(r)) => Ok(r),
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

    #[test]
    fn responses_go_only_to_requests_waiting_on_that_device() {
        let w = DiagWaiters::default();
        let (t, d) = (
            TenantId::new("acme").unwrap(),
            DeviceId::new("ap-1").unwrap(),
        );
        let mut reg = w.register([1; 16], &t, &d);
        w.deliver("licd/v1/acme/ap-2/diag-response", b"other");
        w.deliver("licd/v1/acme/ap-1/diag-response", b"mine");
        w.deliver("not/a/licd/topic", b"x");
        assert_eq!(reg.rx.try_recv().unwrap(), b"mine");
        assert!(reg.rx.try_recv().is_err());
        drop(reg);
        assert!(w.waiting.lock().unwrap().is_empty());
    }
}

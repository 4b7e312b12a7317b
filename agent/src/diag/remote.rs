//! Remote diagnostics: a controller's signed [`DiagRequest`] on the device's `diag-request`
//! topic is answered with the offline `licd diag` document, signed by the device key, on
//! `diag-response`.
//!
//! [`Gate`] is the decision, pure and unit-tested: time comes in as arguments (the trusted
//! unix now for freshness, time since boot for the rate limit). In order: the envelope, the
//! signer's chain to the pinned roots at trusted now and freshness
//! ([`open_diag_request`]); the request names this device; its id was not answered before;
//! at most one request per [`MIN_INTERVAL`]. [`Responder`] is the shell the daemon holds: it
//! runs the offline diagnosis in one spawned, time-bounded task, bounds the document to
//! [`MAX_DIAG_REPORT_LEN`], signs and publishes the response; refusals go back to the daemon,
//! which counts and logs them with every other refusal ([`crate::refusal`]).
//! Network steps are never run for a remote request: they would open a second session with
//! the device's credentials, and the request itself proves the broker path works.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use ed25519_dalek::SigningKey;
use licd_protocol::diag::{RequestId, DIAG_REQUEST_TOLERANCE, MAX_DIAG_REPORT_LEN};
use licd_protocol::envelope::{open_diag_request, seal_diag_response};
use licd_protocol::{
    DeviceId, DiagRequest, DiagResponse, SignerInfo, TenantId, TrustStore, UnixTime,
};
use rumqttc::QoS;
use tokio::task::JoinHandle;

use super::steps::{Step, Verdict};
use super::{Options, Report};
use crate::clock::Clock;
use crate::config::Settings;
use crate::session::Outbox;
use crate::status::AGENT_VERSION;

/// At most one remote diagnosis per minute: a diagnosis reads files and runs probes, and a
/// controller (or someone replaying its requests) must not be able to keep a device busy.
pub const MIN_INTERVAL: Duration = Duration::from_secs(licd_protocol::diag::DIAG_MIN_INTERVAL);

/// Longest a remote diagnosis may run before a "timed out" document is sent instead; below
/// [`MIN_INTERVAL`], so one diagnosis is over before the next may start.
pub const RUN_TIMEOUT: Duration = Duration::from_secs(30);

/// Request ids remembered for the replay check (the rate limit keeps far fewer in the window).
const SEEN_CAPACITY: usize = 64;

/// Why a diagnostic request is not answered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DiagRefusal {
    /// The envelope, the signer's chain or the freshness check refused it.
    #[error(transparent)]
    Protocol(#[from] licd_protocol::Error),
    /// A valid request for another device (or tenant).
    #[error("request is for {tenant}/{device}, not this device")]
    OtherDevice {
        /// Tenant named in the request.
        tenant: String,
        /// Device named in the request.
        device: String,
    },
    /// This request id was answered already (a replay within the freshness window).
    #[error("request {0} was answered already (replay)")]
    Replayed(String),
    /// Another request was answered less than [`MIN_INTERVAL`] ago.
    #[error("rate limited: next request accepted in {}s", retry_in.as_secs())]
    RateLimited {
        /// Until the next request is accepted.
        retry_in: Duration,
    },
    /// A diagnosis is still running.
    #[error("a diagnosis is still running")]
    Busy,
}

impl DiagRefusal {
    /// A stable code for logs and tests.
    pub fn code(&self) -> &'static str {
        match self {
            DiagRefusal::Protocol(_) => "invalid_request",
            DiagRefusal::OtherDevice { .. } => "other_device",
            DiagRefusal::Replayed(_) => "replayed",
            DiagRefusal::RateLimited { .. } => "rate_limited",
            DiagRefusal::Busy => "busy",
        }
    }
}

/// The decision on diagnostic requests for one device.
#[derive(Debug, Clone)]
pub struct Gate {
    device: DeviceId,
    tenant: TenantId,
    tolerance: u64,
    min_interval: Duration,
    last_accepted: Option<Duration>,
    /// Answered request ids with the boot time they were accepted at, oldest first.
    seen: VecDeque<(RequestId, Duration)>,
}

impl Gate {
    /// A gate for `device` of `tenant` with the protocol's freshness tolerance and
    /// [`MIN_INTERVAL`].
    pub fn new(device: DeviceId, tenant: TenantId) -> Self {
        Self::with_limits(device, tenant, DIAG_REQUEST_TOLERANCE, MIN_INTERVAL)
    }

    /// A gate with explicit limits (tests).
    pub fn with_limits(
        device: DeviceId,
        tenant: TenantId,
        tolerance: u64,
        min_interval: Duration,
    ) -> Self {
        Self {
            device,
            tenant,
            tolerance,
            min_interval,
            last_accepted: None,
            seen: VecDeque::new(),
        }
    }

    /// Decides on received `bytes` at trusted unix time `now` and time since boot `boot`.
    /// An accepted request consumes the rate limit and its id.
    pub fn check(
        &mut self,
        bytes: &[u8],
        trust: &TrustStore,
        now: UnixTime,
        boot: Duration,
    ) -> Result<(DiagRequest, SignerInfo), DiagRefusal> {
        let (request, signer) = open_diag_request(bytes, trust, now, self.tolerance)?;
        if request.device != self.device || request.tenant != self.tenant {
            return Err(DiagRefusal::OtherDevice {
                tenant: request.tenant.to_string(),
                device: request.device.to_string(),
            });
        }
        // Ids older than twice the freshness window cannot come back fresh.
        let keep = Duration::from_secs(self.tolerance.saturating_mul(2));
        while self
            .seen
            .front()
            .is_some_and(|(_, at)| boot.saturating_sub(*at) > keep)
        {
            self.seen.pop_front();
        }
        if self.seen.iter().any(|(id, _)| *id == request.request_id) {
            return Err(DiagRefusal::Replayed(hex(&request.request_id)));
        }
        if let Some(last) = self.last_accepted {
            let next = last + self.min_interval;
            if boot < next {
                return Err(DiagRefusal::RateLimited {
                    retry_in: next - boot,
                });
            }
        }
        self.last_accepted = Some(boot);
        if self.seen.len() == SEEN_CAPACITY {
            self.seen.pop_front();
        }
        self.seen.push_back((request.request_id, boot));
        Ok((request, signer))
    }
}

/// Lower-case hex of a request id (logs).
pub fn hex(id: &RequestId) -> String {
    id.iter().map(|b| format!("{b:02x}")).collect()
}

/// The diagnosis document as JSON, at most [`MAX_DIAG_REPORT_LEN`] bytes: whole if it fits,
/// else without the steps' structured details, else with as many steps as fit and a last
/// step saying how many were left out.
pub fn bounded_json(report: &Report) -> String {
    let encode = |r: &Report| serde_json::to_string(r).unwrap_or_else(|_| "{}".into());
    let whole = encode(report);
    if whole.len() <= MAX_DIAG_REPORT_LEN {
        return whole;
    }
    let mut slim = report.clone();
    for s in &mut slim.steps {
        s.detail = serde_json::Value::Null;
    }
    let text = encode(&slim);
    if text.len() <= MAX_DIAG_REPORT_LEN {
        return text;
    }
    let all = std::mem::take(&mut slim.steps);
    let total = all.len();
    // Room for the marker step; hints and figures are bounded, so this converges quickly.
    let budget = MAX_DIAG_REPORT_LEN - 512;
    let mut used = encode(&slim).len();
    for s in all {
        let len = serde_json::to_string(&s).map_or(usize::MAX, |t| t.len() + 1);
        if used.saturating_add(len) > budget {
            break;
        }
        used += len;
        slim.steps.push(s);
    }
    let left_out = total - slim.steps.len();
    slim.steps.push(Step::new(
        "truncated",
        "truncated",
        Verdict::Warn,
        format!("{left_out} of {total} steps left out to fit the 48 KiB response limit"),
    ));
    encode(&slim)
}

/// What a diagnosis task needs, shared by every request.
struct Job {
    settings: Settings,
    clock: Arc<dyn Clock>,
    key: SigningKey,
    client: Outbox,
    topic: String,
}

impl Job {
    async fn answer(&self, request: DiagRequest, now: UnixTime) {
        let options = Options {
            offline: true,
            ..Options::default()
        };
        let run = super::run_with_settings(
            "the running daemon's config",
            &self.settings,
            &options,
            &*self.clock,
        );
        let report = match tokio::time::timeout(RUN_TIMEOUT, run).await {
            Ok(r) => r,
            Err(_) => Report::new(
                AGENT_VERSION,
                self.clock.wall(),
                Some(request.device.to_string()),
                Some(request.tenant.to_string()),
                true,
                vec![Step::new(
                    "diag",
                    "diagnosis",
                    Verdict::Fail,
                    format!("did not finish within {} s", RUN_TIMEOUT.as_secs()),
                )
                .hint("run `licd diag` on the device's console")],
            ),
        };
        let response = DiagResponse {
            device: request.device,
            tenant: request.tenant,
            request_id: request.request_id,
            generated_at: now,
            report: bounded_json(&report),
        };
        let bytes = seal_diag_response(&response, &self.key);
        match self
            .client
            .publish(self.topic.clone(), QoS::AtLeastOnce, false, bytes)
            .await
        {
            Ok(()) => tracing::info!(
                request = %hex(&response.request_id),
                verdict = report.verdict.label(),
                bytes = response.report.len(),
                "diagnostic report sent to the controller"
            ),
            Err(e) => tracing::warn!(error = %e, "diagnostic report not queued"),
        }
    }
}

/// The daemon's side of remote diagnostics: decides with a [`Gate`], answers in a task.
pub struct Responder {
    gate: Gate,
    job: Arc<Job>,
    running: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for Responder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Responder")
            .field("gate", &self.gate)
            .field("running", &self.running.is_some())
            .finish_non_exhaustive()
    }
}

impl Responder {
    /// A responder for this device; responses go to `response_topic`, signed with `key`.
    pub fn new(
        settings: Settings,
        clock: Arc<dyn Clock>,
        device: DeviceId,
        key: SigningKey,
        client: Outbox,
        response_topic: String,
    ) -> Self {
        let gate = Gate::new(device, settings.tenant.clone());
        Self {
            gate,
            job: Arc::new(Job {
                settings,
                clock,
                key,
                client,
                topic: response_topic,
            }),
            running: None,
        }
    }

    /// A message arrived on the device's diag-request topic: decide, then answer in a task.
    /// `Err`: refused, not answered (the daemon counts and logs it).
    pub fn handle(
        &mut self,
        bytes: &[u8],
        trust: &TrustStore,
        now: UnixTime,
    ) -> Result<(), DiagRefusal> {
        let boot = self.job.clock.boot();
        if self.running.as_ref().is_some_and(|t| t.is_finished()) {
            self.running = None;
        }
        let decision = match self.running {
            Some(_) => Err(DiagRefusal::Busy),
            None => self.gate.check(bytes, trust, now, boot),
        };
        let (request, signer) = decision?;
        tracing::info!(
            request = %hex(&request.request_id),
            signer = %signer.signer,
            "diagnostic request accepted; running the offline diagnosis"
        );
        let job = self.job.clone();
        self.running = Some(tokio::spawn(async move { job.answer(request, now).await }));
        Ok(())
    }
}

impl Drop for Responder {
    fn drop(&mut self) {
        if let Some(t) = self.running.take() {
            t.abort();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use licd_protocol::envelope::seal_diag_request;
    use licd_protocol::{Error, PublicKey, SignerCertificate};

    const NOW: UnixTime = 1_767_225_600;
    const BOOT: Duration = Duration::from_secs(1_000);

    fn key(seed: u8) -> SigningKey {
        SigningKey::from_bytes(&[seed; 32])
    }

    fn public(k: &SigningKey) -> PublicKey {
        PublicKey::from(&k.verifying_key())
    }

    fn trust() -> TrustStore {
        TrustStore::new(vec![public(&key(1))])
    }

    fn request(id: u8, issued_at: UnixTime) -> DiagRequest {
        DiagRequest {
            device: DeviceId::new("ap-1").unwrap(),
            tenant: TenantId::new("acme").unwrap(),
            request_id: [id; 16],
            issued_at,
        }
    }

    fn sealed(r: &DiagRequest) -> Vec<u8> {
        let cert = SignerCertificate::issue(&key(1), public(&key(2)), NOW - 86_400, NOW + 86_400);
        seal_diag_request(r, &key(2), &cert)
    }

    fn gate() -> Gate {
        Gate::new(
            DeviceId::new("ap-1").unwrap(),
            TenantId::new("acme").unwrap(),
        )
    }

    #[test]
    fn a_fresh_request_from_a_certified_signer_is_accepted() {
        let (r, signer) = gate()
            .check(&sealed(&request(1, NOW)), &trust(), NOW, BOOT)
            .unwrap();
        assert_eq!(r, request(1, NOW));
        assert_eq!(signer.signer, public(&key(2)).id());
    }

    #[test]
    fn a_second_request_within_the_interval_is_rate_limited_then_accepted_after_it() {
        let mut g = gate();
        g.check(&sealed(&request(1, NOW)), &trust(), NOW, BOOT)
            .unwrap();
        assert_eq!(
            g.check(
                &sealed(&request(2, NOW + 10)),
                &trust(),
                NOW + 10,
                BOOT + Duration::from_secs(10)
            ),
            Err(DiagRefusal::RateLimited {
                retry_in: Duration::from_secs(50)
            })
        );
        assert!(g
            .check(
                &sealed(&request(3, NOW + 60)),
                &trust(),
                NOW + 60,
                BOOT + MIN_INTERVAL
            )
            .is_ok());
    }

    #[test]
    fn a_replayed_request_is_refused_even_after_the_interval() {
        let mut g = gate();
        let bytes = sealed(&request(1, NOW));
        g.check(&bytes, &trust(), NOW, BOOT).unwrap();
        assert_eq!(
            g.check(&bytes, &trust(), NOW + 61, BOOT + Duration::from_secs(61)),
            Err(DiagRefusal::Replayed(hex(&[1; 16])))
        );
        // Once out of the freshness window it is refused as stale.
        assert!(matches!(
            g.check(&bytes, &trust(), NOW + 301, BOOT + Duration::from_secs(301)),
            Err(DiagRefusal::Protocol(Error::StaleRequest { .. }))
        ));
    }

    #[test]
    fn refused_requests_do_not_consume_the_rate_limit() {
        let mut g = gate();
        let stranger = SignerCertificate::issue(&key(9), public(&key(9)), 0, u64::MAX);
        let forged = seal_diag_request(&request(1, NOW), &key(9), &stranger);
        assert_eq!(
            g.check(&forged, &trust(), NOW, BOOT),
            Err(DiagRefusal::Protocol(Error::UnknownSigner(
                public(&key(9)).id()
            )))
        );
        let mut other = request(2, NOW);
        other.device = DeviceId::new("ap-2").unwrap();
        assert_eq!(
            g.check(&sealed(&other), &trust(), NOW, BOOT),
            Err(DiagRefusal::OtherDevice {
                tenant: "acme".into(),
                device: "ap-2".into()
            })
        );
        let mut tenant = request(3, NOW);
        tenant.tenant = TenantId::new("globex").unwrap();
        assert!(matches!(
            g.check(&sealed(&tenant), &trust(), NOW, BOOT),
            Err(DiagRefusal::OtherDevice { .. })
        ));
        assert!(matches!(
            g.check(&sealed(&request(4, NOW - 301)), &trust(), NOW, BOOT),
            Err(DiagRefusal::Protocol(Error::StaleRequest { .. }))
        ));
        assert!(matches!(
            g.check(&sealed(&request(5, NOW + 301)), &trust(), NOW, BOOT),
            Err(DiagRefusal::Protocol(Error::RequestFromFuture { .. }))
        ));
        // None of these used the slot.
        assert!(g
            .check(&sealed(&request(6, NOW)), &trust(), NOW, BOOT)
            .is_ok());
    }

    #[test]
    fn an_oversized_report_is_cut_to_fit_and_stays_json() {
        let steps: Vec<Step> = (0..2_000)
            .map(|i| {
                Step::new(&format!("s{i}"), "step", Verdict::Ok, "x".repeat(60))
                    .detail(serde_json::json!({ "blob": "y".repeat(100) }))
            })
            .collect();
        let report = Report::new("t", 0, None, None, true, steps);
        let text = bounded_json(&report);
        assert!(text.len() <= MAX_DIAG_REPORT_LEN, "{}", text.len());
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        let steps = v["steps"].as_array().unwrap();
        assert_eq!(steps.last().unwrap()["id"], "truncated");
        assert!(steps[0].get("detail").is_none());

        let small = Report::new(
            "t",
            0,
            None,
            None,
            true,
            vec![Step::new("a", "a", Verdict::Ok, "")],
        );
        assert_eq!(bounded_json(&small), serde_json::to_string(&small).unwrap());
    }
}

//! Licensing policy per SKU and per subscription (issue 20, and issue 18's
//! `offline_lease_days`): how a device treats a service when its term ends or its VM count
//! exceeds the allowance, when it warns of the coming end, and how long a grant file's lease
//! runs. Policy travels inside the signed grant, never in device config.
//!
//! A SKU's policy is the default for every subscription's seats of it; a subscription's policy
//! overrides it field by field; what neither sets comes from the controller
//! ([`EffectivePolicy::default`]: today's behaviour, and the config's `offline_lease_days`).
//! Pure data and validation; the engine applies it when it builds bundles.

use licd_protocol::{LicenseId, Sku};
use serde::{Deserialize, Serialize};

use super::{Effects, Engine, EngineError, DAY};
use licd_protocol::UnixTime;

/// The most `warn_before` thresholds a policy may have.
pub const MAX_WARN_THRESHOLDS: usize = 8;
/// The highest overage tolerance accepted, in percent of the allowance (10×).
pub const MAX_TOLERANCE_PCT: u16 = 1000;
/// The longest `warn_before` threshold accepted, in seconds (ten years).
pub const MAX_WARN_BEFORE_SECS: u64 = 3650 * DAY;
/// The longest offline lease accepted, in days (ten years).
pub const MAX_OFFLINE_LEASE_DAYS: u32 = 3650;

/// What a device does with a service once its term ends, its lease runs out, it is revoked or
/// it runs more VMs than tolerated.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Strategy {
    /// Grace, then the service stops (the behaviour before policies existed).
    #[default]
    Restrict,
    /// Grace, then the service keeps running, shown non-compliant with the reason.
    Advisory,
    /// No grace when the term ends or the license is revoked.
    Immediate,
}

impl Strategy {
    /// The name on the wire and in the API.
    pub fn as_str(self) -> &'static str {
        match self {
            Strategy::Restrict => "restrict",
            Strategy::Advisory => "advisory",
            Strategy::Immediate => "immediate",
        }
    }
}

/// A policy as set on a SKU or a subscription: each field unset inherits (subscription → SKU
/// → controller default).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Policy {
    /// Expiry strategy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub strategy: Option<Strategy>,
    /// VMs tolerated, in percent of the allowance (≥ 100; 125 = a quarter over).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub overage_tolerance_pct: Option<u16>,
    /// Seconds before the term end at which the device warns, strictly descending.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub warn_before: Option<Vec<u64>>,
    /// Lease of a grant file (licensing by file), in days.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offline_lease_days: Option<u32>,
}

/// Why a policy was refused. Nothing changed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PolicyError {
    /// Tolerance below 100 % would refuse what the allowance grants.
    #[error("overage_tolerance_pct {0} is below 100 (100 = no overage tolerated)")]
    ToleranceBelowAllowance(u16),
    /// Tolerance above [`MAX_TOLERANCE_PCT`].
    #[error("overage_tolerance_pct {0} is above the most accepted ({MAX_TOLERANCE_PCT})")]
    ToleranceTooHigh(u16),
    /// More thresholds than [`MAX_WARN_THRESHOLDS`].
    #[error("warn_before has {0} thresholds; at most {MAX_WARN_THRESHOLDS} are accepted")]
    TooManyThresholds(usize),
    /// A threshold of zero warns at the moment the term ends: say nothing instead.
    #[error("warn_before thresholds must be above 0 seconds")]
    ZeroThreshold,
    /// A threshold above [`MAX_WARN_BEFORE_SECS`].
    #[error("warn_before threshold {0} s is above the most accepted ({MAX_WARN_BEFORE_SECS} s, ten years)")]
    ThresholdTooLarge(u64),
    /// Thresholds not strictly descending (a device warns at the first, then the next…).
    #[error("warn_before must be strictly descending (e.g. [2592000, 604800]); got {0:?}")]
    ThresholdsNotDescending(Vec<u64>),
    /// An offline lease of 0 days would license nothing.
    #[error("offline_lease_days must be at least 1")]
    ZeroOfflineLease,
    /// An offline lease above [`MAX_OFFLINE_LEASE_DAYS`].
    #[error("offline_lease_days {0} is above the most accepted ({MAX_OFFLINE_LEASE_DAYS})")]
    OfflineLeaseTooLong(u32),
}

impl Policy {
    /// Whether nothing is set (the record can be dropped).
    pub fn is_empty(&self) -> bool {
        self == &Policy::default()
    }

    /// Checks every field set.
    pub fn validate(&self) -> Result<(), PolicyError> {
        if let Some(t) = self.overage_tolerance_pct {
            if t < 100 {
                return Err(PolicyError::ToleranceBelowAllowance(t));
            }
            if t > MAX_TOLERANCE_PCT {
                return Err(PolicyError::ToleranceTooHigh(t));
            }
        }
        if let Some(w) = &self.warn_before {
            if w.len() > MAX_WARN_THRESHOLDS {
                return Err(PolicyError::TooManyThresholds(w.len()));
            }
            if w.contains(&0) {
                return Err(PolicyError::ZeroThreshold);
            }
            if let Some(big) = w.iter().find(|&&x| x > MAX_WARN_BEFORE_SECS) {
                return Err(PolicyError::ThresholdTooLarge(*big));
            }
            if w.windows(2).any(|p| p[0] <= p[1]) {
                return Err(PolicyError::ThresholdsNotDescending(w.clone()));
            }
        }
        match self.offline_lease_days {
            Some(0) => Err(PolicyError::ZeroOfflineLease),
            Some(d) if d > MAX_OFFLINE_LEASE_DAYS => Err(PolicyError::OfflineLeaseTooLong(d)),
            _ => Ok(()),
        }
    }

    /// This policy with every unset field taken from `under`.
    fn over(&self, under: &Policy) -> Policy {
        Policy {
            strategy: self.strategy.or(under.strategy),
            overage_tolerance_pct: self.overage_tolerance_pct.or(under.overage_tolerance_pct),
            warn_before: self
                .warn_before
                .clone()
                .or_else(|| under.warn_before.clone()),
            offline_lease_days: self.offline_lease_days.or(under.offline_lease_days),
        }
    }
}

/// The policy one grant carries, every field decided. Part of a bundle's basis: a change
/// issues a new bundle. Its default is the behaviour before policies existed, so bases stored
/// before (without it) read back equal and cause no re-issue.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EffectivePolicy {
    /// Expiry strategy.
    pub strategy: Strategy,
    /// Tolerance in percent of the VM allowance.
    pub overage_tolerance_pct: u16,
    /// Thresholds in seconds before the term end, strictly descending.
    pub warn_before: Vec<u64>,
    /// Lease of a grant file in seconds; `None` = the controller's `offline_lease_days`.
    pub offline_lease_secs: Option<u64>,
}

impl Default for EffectivePolicy {
    fn default() -> Self {
        Self {
            strategy: Strategy::Restrict,
            overage_tolerance_pct: 100,
            warn_before: Vec::new(),
            offline_lease_secs: None,
        }
    }
}

impl From<&Policy> for EffectivePolicy {
    fn from(p: &Policy) -> Self {
        let d = EffectivePolicy::default();
        Self {
            strategy: p.strategy.unwrap_or(d.strategy),
            overage_tolerance_pct: p.overage_tolerance_pct.unwrap_or(d.overage_tolerance_pct),
            warn_before: p.warn_before.clone().unwrap_or_default(),
            offline_lease_secs: p.offline_lease_days.map(|days| u64::from(days) * DAY),
        }
    }
}

impl EffectivePolicy {
    /// The most VMs tolerated on `allowance` (rounded down, at least the allowance).
    pub fn tolerated_vms(&self, allowance: u32) -> u32 {
        let t = u64::from(allowance) * u64::from(self.overage_tolerance_pct) / 100;
        u32::try_from(t).unwrap_or(u32::MAX).max(allowance)
    }
}

impl Engine {
    /// The policy set on SKU `sku` (empty when none).
    pub fn sku_policy(&self, sku: &Sku) -> Policy {
        self.state
            .sku_policies
            .get(sku)
            .cloned()
            .unwrap_or_default()
    }

    /// The policy set on subscription `sub` (empty when none).
    pub fn subscription_policy(&self, sub: &LicenseId) -> Policy {
        self.state
            .subscription_policies
            .get(sub)
            .cloned()
            .unwrap_or_default()
    }

    /// The policy a seat of `sku` from subscription `sub` carries.
    pub fn effective_policy(&self, sub: &LicenseId, sku: &Sku) -> EffectivePolicy {
        let merged = self.subscription_policy(sub).over(&self.sku_policy(sku));
        EffectivePolicy::from(&merged)
    }

    /// Sets (replaces) the policy of catalogue SKU `sku`; an empty policy removes it. Devices
    /// whose grants change get new bundles.
    pub fn set_sku_policy(
        &mut self,
        sku: &Sku,
        policy: Policy,
        now: UnixTime,
    ) -> Result<Effects, EngineError> {
        if !self.state.catalog.contains_key(sku) {
            return Err(EngineError::UnknownSku(sku.clone()));
        }
        policy.validate().map_err(EngineError::InvalidPolicy)?;
        if policy.is_empty() {
            self.state.sku_policies.remove(sku);
        } else {
            self.state.sku_policies.insert(sku.clone(), policy);
        }
        self.dirty.sku_policies.insert(sku.clone());
        tracing::info!(%sku, "SKU policy set");
        Ok(Effects {
            publish: self.refresh_all(now),
        })
    }

    /// Sets (replaces) the policy of subscription `sub`; an empty policy removes it (its
    /// SKUs' policies apply again). Devices whose grants change get new bundles.
    pub fn set_subscription_policy(
        &mut self,
        sub: &LicenseId,
        policy: Policy,
        now: UnixTime,
    ) -> Result<Effects, EngineError> {
        if !self.state.subscriptions.contains_key(sub) {
            return Err(EngineError::UnknownSubscription(sub.clone()));
        }
        policy.validate().map_err(EngineError::InvalidPolicy)?;
        if policy.is_empty() {
            self.state.subscription_policies.remove(sub);
        } else {
            self.state.subscription_policies.insert(sub.clone(), policy);
        }
        self.dirty.subscription_policies.insert(sub.clone());
        tracing::info!(subscription = %sub, "subscription policy set");
        Ok(Effects {
            publish: self.refresh_all(now),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(w: &[u64]) -> Policy {
        Policy {
            warn_before: Some(w.to_vec()),
            ..Policy::default()
        }
    }

    #[test]
    fn thresholds_must_be_strictly_descending_and_above_zero() {
        assert_eq!(p(&[30, 10, 1]).validate(), Ok(()));
        assert_eq!(p(&[]).validate(), Ok(()));
        assert!(matches!(
            p(&[10, 30]).validate(),
            Err(PolicyError::ThresholdsNotDescending(_))
        ));
        assert!(matches!(
            p(&[10, 10]).validate(),
            Err(PolicyError::ThresholdsNotDescending(_))
        ));
        assert_eq!(p(&[10, 0]).validate(), Err(PolicyError::ZeroThreshold));
        assert_eq!(
            p(&[9, 8, 7, 6, 5, 4, 3, 2, 1]).validate(),
            Err(PolicyError::TooManyThresholds(9))
        );
    }

    #[test]
    fn tolerance_below_100_or_above_the_cap_is_refused() {
        let t = |pct| Policy {
            overage_tolerance_pct: Some(pct),
            ..Policy::default()
        };
        assert_eq!(t(100).validate(), Ok(()));
        assert_eq!(t(125).validate(), Ok(()));
        assert_eq!(
            t(99).validate(),
            Err(PolicyError::ToleranceBelowAllowance(99))
        );
        assert_eq!(t(1001).validate(), Err(PolicyError::ToleranceTooHigh(1001)));
    }

    #[test]
    fn offline_lease_must_be_between_one_day_and_ten_years() {
        let o = |d| Policy {
            offline_lease_days: Some(d),
            ..Policy::default()
        };
        assert_eq!(o(0).validate(), Err(PolicyError::ZeroOfflineLease));
        assert_eq!(o(1).validate(), Ok(()));
        assert_eq!(
            o(3651).validate(),
            Err(PolicyError::OfflineLeaseTooLong(3651))
        );
    }

    #[test]
    fn a_subscription_field_overrides_the_sku_field_and_unset_fields_inherit() {
        let sku = Policy {
            strategy: Some(Strategy::Advisory),
            overage_tolerance_pct: Some(125),
            offline_lease_days: Some(30),
            ..Policy::default()
        };
        let sub = Policy {
            strategy: Some(Strategy::Immediate),
            warn_before: Some(vec![20, 10]),
            ..Policy::default()
        };
        let e = EffectivePolicy::from(&sub.over(&sku));
        assert_eq!(e.strategy, Strategy::Immediate);
        assert_eq!(e.overage_tolerance_pct, 125);
        assert_eq!(e.warn_before, vec![20, 10]);
        assert_eq!(e.offline_lease_secs, Some(30 * DAY));
        assert_eq!(
            EffectivePolicy::from(&Policy::default()),
            EffectivePolicy::default()
        );
    }

    #[test]
    fn tolerated_vms_rounds_down_and_never_below_the_allowance() {
        let e = |pct| EffectivePolicy {
            overage_tolerance_pct: pct,
            ..EffectivePolicy::default()
        };
        assert_eq!(e(125).tolerated_vms(4), 5);
        assert_eq!(e(125).tolerated_vms(3), 3);
        assert_eq!(e(100).tolerated_vms(4), 4);
        assert_eq!(e(1000).tolerated_vms(u32::MAX), u32::MAX);
    }
}

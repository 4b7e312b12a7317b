//! CLI of issue 21's Meraki operations: compliance statuses per subscription and co-term
//! licenses (list, move), over the admin API.

use anyhow::{bail, Result};
use clap::{Args, Subcommand};
use serde_json::{json, Value};

use licd_stub::admin::handlers::meraki::{
    CotermLicense, MoveResponse, SubscriptionComplianceStatus,
};

use super::client::Client;
use super::table::print_table;
use super::{decode, print_json, qs};

/// `compliance-statuses`: per subscription, in seed 002's shape.
#[derive(Debug, Args)]
pub struct ComplianceStatuses {
    /// Organizations (customers) whose devices count (default: all the token sees).
    #[arg(long = "org")]
    orgs: Vec<String>,
    /// Only these subscriptions.
    #[arg(long = "subscription")]
    subscriptions: Vec<String>,
}

/// `coterm`: Meraki co-term licenses.
#[derive(Debug, Args)]
pub struct Coterm {
    #[command(subcommand)]
    cmd: CotermCmd,
}

#[derive(Debug, Subcommand)]
enum CotermCmd {
    /// List an organization's co-term licenses.
    List {
        /// Organization (customer) id.
        org: String,
        /// Only invalidated (true) or valid (false) licenses.
        #[arg(long)]
        invalidated: Option<bool>,
        /// Only expired (true) or running (false) licenses.
        #[arg(long)]
        expired: Option<bool>,
    },
    /// Move seats of licenses to another organization; the source's devices beyond what it
    /// keeps go into grace.
    Move {
        /// Source organization (customer) id.
        org: String,
        /// Destination organization.
        #[arg(long)]
        to: String,
        /// KEY:MODEL=COUNT, e.g. Z2AA-BBBB-CCCC:LIC-AP=2 (repeat for more).
        #[arg(long = "license", required = true)]
        licenses: Vec<String>,
        /// addDevices or renew.
        #[arg(long, default_value = "addDevices")]
        mode: String,
    },
}

/// Runs `compliance-statuses`.
pub async fn compliance_statuses(
    api: &Client,
    c: ComplianceStatuses,
    json_out: bool,
) -> Result<()> {
    let orgs = c.orgs.join(",");
    let subs = c.subscriptions.join(",");
    let mut pairs = Vec::new();
    if !orgs.is_empty() {
        pairs.push(("organizationIds", orgs.as_str()));
    }
    if !subs.is_empty() {
        pairs.push(("subscriptionIds", subs.as_str()));
    }
    let items = api
        .get_all_pages(&format!(
            "/api/v1/subscriptions/compliance/statuses{}",
            qs(&pairs)
        ))
        .await?;
    if json_out {
        return print_json(&Value::Array(items));
    }
    let items: Vec<SubscriptionComplianceStatus> = decode(Value::Array(items))?;
    let mut rows = Vec::new();
    for i in &items {
        let sub = &i.subscription;
        let violations = &i.violations.by_product_class;
        if violations.is_empty() {
            rows.push(vec![
                sub.id.clone(),
                sub.status.clone(),
                "-".into(),
                "compliant".into(),
                "-".into(),
            ]);
        }
        for v in violations {
            let missing: Vec<String> = v
                .missing
                .entitlements
                .iter()
                .map(|m| format!("{} x {}", m.quantity, m.sku))
                .collect();
            rows.push(vec![
                sub.id.clone(),
                sub.status.clone(),
                v.product_class.clone(),
                format!("missing {}", missing.join(", ")),
                v.grace_period_ends_at.clone(),
            ]);
        }
    }
    print_table(
        &["SUBSCRIPTION", "STATUS", "CLASS", "VIOLATION", "GRACE ENDS"],
        rows,
    );
    Ok(())
}

fn license_rows(items: &[CotermLicense]) -> Vec<Vec<String>> {
    items
        .iter()
        .map(|l| {
            let counts: Vec<String> = l
                .counts
                .iter()
                .map(|c| format!("{}={}", c.model, c.count))
                .collect();
            vec![
                l.key.clone(),
                l.organization_id.clone(),
                counts.join(" "),
                l.duration.to_string(),
                if l.invalidated {
                    "invalidated"
                } else if l.expired {
                    "expired"
                } else {
                    "valid"
                }
                .into(),
            ]
        })
        .collect()
}

/// Parses `KEY:MODEL=COUNT` (the key may itself hold `:`; the last one separates).
fn parse_license(arg: &str) -> Result<(String, String, u32)> {
    let Some((key, rest)) = arg.rsplit_once(':') else {
        bail!("--license {arg:?}: expected KEY:MODEL=COUNT, e.g. Z2AA-BBBB-CCCC:LIC-AP=2");
    };
    let Some((model, count)) = rest.split_once('=') else {
        bail!("--license {arg:?}: expected KEY:MODEL=COUNT, e.g. Z2AA-BBBB-CCCC:LIC-AP=2");
    };
    let count: u32 = count
        .parse()
        .map_err(|e| anyhow::anyhow!("--license {arg:?}: count {count:?}: {e}"))?;
    Ok((key.to_string(), model.to_string(), count))
}

/// Runs `coterm`.
pub async fn coterm(api: &Client, c: Coterm, json_out: bool) -> Result<()> {
    match c.cmd {
        CotermCmd::List {
            org,
            invalidated,
            expired,
        } => {
            let inv = invalidated.map(|b| b.to_string());
            let exp = expired.map(|b| b.to_string());
            let mut pairs = Vec::new();
            if let Some(v) = &inv {
                pairs.push(("invalidated", v.as_str()));
            }
            if let Some(v) = &exp {
                pairs.push(("expired", v.as_str()));
            }
            let items = api
                .get_all_pages(&format!(
                    "/api/v1/organizations/{org}/licensing/coterm/licenses{}",
                    qs(&pairs)
                ))
                .await?;
            if json_out {
                return print_json(&Value::Array(items));
            }
            let items: Vec<CotermLicense> = decode(Value::Array(items))?;
            print_table(
                &["KEY", "ORG", "COUNTS", "DAYS", "STATE"],
                license_rows(&items),
            );
            Ok(())
        }
        CotermCmd::Move {
            org,
            to,
            licenses,
            mode,
        } => {
            let mut by_key: Vec<(String, Vec<Value>)> = Vec::new();
            for arg in &licenses {
                let (key, model, count) = parse_license(arg)?;
                let entry = json!({"model": model, "count": count});
                match by_key.iter_mut().find(|(k, _)| *k == key) {
                    Some((_, v)) => v.push(entry),
                    None => by_key.push((key, vec![entry])),
                }
            }
            let body = json!({
                "destination": {"organizationId": to, "mode": mode},
                "licenses": by_key
                    .into_iter()
                    .map(|(key, counts)| json!({"key": key, "counts": counts}))
                    .collect::<Vec<_>>(),
            });
            let v = api
                .post(
                    &format!("/api/v1/organizations/{org}/licensing/coterm/licenses/move"),
                    &body,
                )
                .await?;
            if json_out {
                return print_json(&v);
            }
            let moved: MoveResponse = decode(v)?;
            let mut rows = license_rows(&moved.remainder_licenses);
            rows.extend(license_rows(&moved.moved_licenses));
            print_table(&["KEY", "ORG", "COUNTS", "DAYS", "STATE"], rows);
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_license_argument_splits_at_its_last_colon_and_refuses_what_is_not_one() {
        assert_eq!(
            parse_license("Z2AA:BB:LIC-AP=2").ok(),
            Some(("Z2AA:BB".into(), "LIC-AP".into(), 2))
        );
        assert!(parse_license("Z2AA-LIC-AP=2").is_err());
        assert!(parse_license("Z2AA:LIC-AP").is_err());
        assert!(parse_license("Z2AA:LIC-AP=-1").is_err());
    }
}

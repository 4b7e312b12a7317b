//! `policy`: licensing policy per SKU or subscription (show, set, clear).

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand, ValueEnum};
use licd_stub::admin::handlers::policy::{PolicySettings, PolicyStrategy, PolicyView};

use super::client::Client;
use super::output;
use super::table::{print_table, s};

/// `policy`.
#[derive(Debug, Args)]
pub struct PolicyArgs {
    #[command(subcommand)]
    cmd: PolicyCmd,
}

/// Whose policy.
#[derive(Debug, Args)]
#[group(required = true, multiple = false)]
struct Target {
    /// A catalogue SKU (the default of every subscription's seats of it).
    #[arg(long)]
    sku: Option<String>,
    /// A subscription (overrides its SKUs' policy field by field).
    #[arg(long)]
    subscription: Option<String>,
}

impl Target {
    fn path(&self) -> String {
        match (&self.sku, &self.subscription) {
            (Some(sku), _) => format!("/api/v1/entitlements/{sku}/policy"),
            (None, Some(sub)) => format!("/api/v1/subscriptions/{sub}/policy"),
            // clap's group makes one of them required.
            (None, None) => String::from("/api/v1/entitlements/-/policy"),
        }
    }
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum StrategyArg {
    /// Grace, then the service stops (the default).
    Restrict,
    /// Grace, then the service keeps running, shown non-compliant.
    Advisory,
    /// No grace when the term ends or the license is revoked.
    Immediate,
}

#[derive(Debug, Subcommand)]
enum PolicyCmd {
    /// Show what is set and what the grants carry.
    Show(Target),
    /// Replace the policy: fields not given inherit (subscription → SKU → controller).
    Set {
        #[command(flatten)]
        target: Target,
        /// Expiry strategy.
        #[arg(long, value_enum)]
        strategy: Option<StrategyArg>,
        /// VMs tolerated in percent of the allowance (100–1000).
        #[arg(long)]
        overage_tolerance_pct: Option<u32>,
        /// Expiring-soon thresholds, descending, comma-separated: seconds or with a unit
        /// (`30d,7d`, `12h`, `90m`, `600s`).
        #[arg(long, value_delimiter = ',', value_parser = parse_duration)]
        warn_before: Option<Vec<u64>>,
        /// Lease of a grant file in days (1–3650).
        #[arg(long)]
        offline_lease_days: Option<u32>,
    },
    /// Clear the policy (everything inherits).
    Clear(Target),
}

/// `30d`, `12h`, `90m`, `600s` or `600` as seconds.
fn parse_duration(text: &str) -> Result<u64> {
    let t = text.trim();
    let (num, unit) = match t.char_indices().find(|(_, c)| !c.is_ascii_digit()) {
        Some((i, _)) => t.split_at(i),
        None => (t, "s"),
    };
    let n: u64 = num
        .parse()
        .with_context(|| format!("{text:?}: expected a number of seconds, or 30d, 12h, 90m"))?;
    let mult = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        other => bail!("{text:?}: unknown unit {other:?} (s, m, h or d)"),
    };
    n.checked_mul(mult)
        .with_context(|| format!("{text:?} is too long"))
}

fn print_view(v: &PolicyView) {
    println!("{} {}", s(&v.scope), s(&v.id));
    let set = serde_json::to_string(&v.policy).unwrap_or_default();
    println!("  set: {set}");
    let rows = v
        .effective
        .iter()
        .map(|e| {
            vec![
                s(&e.sku),
                format!("{:?}", e.strategy).to_lowercase(),
                format!("{}%", e.overage_tolerance_pct),
                e.warn_before_secs
                    .iter()
                    .map(|x| x.to_string())
                    .collect::<Vec<_>>()
                    .join(","),
                s(&e.offline_lease_days),
            ]
        })
        .collect();
    print_table(
        &[
            "SKU",
            "STRATEGY",
            "TOLERANCE",
            "WARN BEFORE (S)",
            "OFFLINE LEASE (DAYS)",
        ],
        rows,
    );
}

pub(super) async fn run(api: Client, c: PolicyArgs, json_out: bool) -> Result<()> {
    let v = match c.cmd {
        PolicyCmd::Show(target) => api.get(&target.path()).await?,
        PolicyCmd::Set {
            target,
            strategy,
            overage_tolerance_pct,
            warn_before,
            offline_lease_days,
        } => {
            let body = PolicySettings {
                strategy: strategy.map(|s| match s {
                    StrategyArg::Restrict => PolicyStrategy::Restrict,
                    StrategyArg::Advisory => PolicyStrategy::Advisory,
                    StrategyArg::Immediate => PolicyStrategy::Immediate,
                }),
                overage_tolerance_pct,
                warn_before_secs: warn_before,
                offline_lease_days,
            };
            api.put(&target.path(), &body).await?
        }
        PolicyCmd::Clear(target) => api.put(&target.path(), &PolicySettings::default()).await?,
    };
    output(v, json_out, |p: PolicyView| print_view(&p))
}

#[cfg(test)]
mod tests {
    use super::parse_duration;

    #[test]
    fn durations_take_a_unit_or_mean_seconds() {
        assert_eq!(parse_duration("600").ok(), Some(600));
        assert_eq!(parse_duration("30d").ok(), Some(30 * 86_400));
        assert_eq!(parse_duration("12h").ok(), Some(12 * 3600));
        assert_eq!(parse_duration("90m").ok(), Some(5400));
        assert!(parse_duration("3w").is_err());
        assert!(parse_duration("d").is_err());
        assert!(parse_duration("99999999999999999999d").is_err());
    }
}

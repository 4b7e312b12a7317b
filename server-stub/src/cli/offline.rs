//! `licd-stub offline grant|return`: the admin API's file routes from the command line, with
//! the message that tells the operator which file to carry where.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use serde_json::Value;

use licd_stub::admin::dto::Device;
use licd_stub::admin::handlers::offline::ReturnResponse;

use super::client::Client;
use super::{decode, print_json};

/// `offline`.
#[derive(Debug, Args)]
pub struct Offline {
    #[command(subcommand)]
    cmd: OfflineCmd,
}

#[derive(Debug, Subcommand)]
enum OfflineCmd {
    /// Answer an activation request (`licd request` wrote it) with a grant file.
    Grant {
        /// The request file (binary or armored).
        request: PathBuf,
        /// Where to write the grant file.
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
        /// Write the grant file armored (text lines) instead of binary.
        #[arg(long)]
        armor: bool,
    },
    /// Apply a release receipt (`licd release` wrote it): frees its seats once.
    Return {
        /// The receipt file (binary or armored).
        receipt: PathBuf,
    },
}

fn read(path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))
}

/// Runs one `offline` command against the admin API.
pub async fn run(api: Client, c: Offline, json_out: bool) -> Result<()> {
    match c.cmd {
        OfflineCmd::Grant {
            request,
            out,
            armor,
        } => {
            let file = api
                .post_bytes("/api/v1/offline/requests", read(&request)?)
                .await?;
            let data = if armor {
                licd_protocol::offline::armor(&file)
                    .context("the controller's answer is not a licd file")?
                    .into_bytes()
            } else {
                file.clone()
            };
            std::fs::write(&out, &data)
                .with_context(|| format!("cannot write {}", out.display()))?;
            println!(
                "wrote grant file {} ({} bytes). Carry it to the device and run `licd import {}` there.",
                out.display(),
                data.len(),
                out.display()
            );
            Ok(())
        }
        OfflineCmd::Return { receipt } => {
            let body = api
                .post_bytes("/api/v1/offline/returns", read(&receipt)?)
                .await?;
            let v: Value =
                serde_json::from_slice(&body).context("the controller's answer is not JSON")?;
            if json_out {
                return print_json(&v);
            }
            let r: ReturnResponse = decode(v)?;
            let freed = if r.freed.is_empty() {
                "none".to_string()
            } else {
                r.freed.join(", ")
            };
            println!(
                "receipt of {}/{} (bundle seq {}) applied: released {}; seats freed: {freed}",
                r.tenant_id,
                r.device_id,
                r.bundle_seq,
                r.released.join(", "),
            );
            Ok(())
        }
    }
}

/// The licensing-by-file lines of `devices show`: whether the device is licensed by file and
/// where its seats went.
pub fn print_history(d: &Device) {
    if !d.offline && d.history.is_empty() {
        return;
    }
    println!();
    if d.offline {
        println!("licensed by file (offline): renewals come as activation requests");
    }
    for h in &d.history {
        println!("  {}  {}", h.at, h.event);
    }
}

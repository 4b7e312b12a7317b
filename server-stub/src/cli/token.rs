//! `token`: the admin API's bearer tokens, managed locally in the key directory.

use std::path::{Path, PathBuf};

use anyhow::{bail, Result};
use clap::{Args, Subcommand};
use licd_stub::admin::token::{self, TokenKind, ADMIN_TOKEN_FILE, TOKEN_STORE_FILE};

use super::table::print_table;

/// `token`.
#[derive(Debug, Args)]
pub struct TokenArgs {
    /// Key directory holding the token store (default: the config's key_dir, or ./keys).
    #[arg(long, global = true)]
    key_dir: Option<PathBuf>,
    #[command(subcommand)]
    cmd: TokenCmd,
}

#[derive(Debug, Subcommand)]
enum TokenCmd {
    /// Make a token; writes it to a token file (mode 0600) and prints where.
    Create {
        /// Name: who or what uses it.
        #[arg(long, default_value = "admin")]
        name: String,
        /// admin (everything) or read (GET only).
        #[arg(long, default_value = "admin")]
        kind: TokenKind,
        /// Scope the token to one customer (tenant): it sees and changes only that customer's
        /// devices, subscriptions and licenses. Without it the token is the MSP's (everything).
        #[arg(long)]
        tenant: Option<licd_protocol::TenantId>,
        /// Token file (default: <key dir>/<name>.token).
        #[arg(long)]
        out: Option<PathBuf>,
        /// Replace an existing token file.
        #[arg(long)]
        force: bool,
        /// Also print the token on stdout.
        #[arg(long)]
        print: bool,
    },
    /// List tokens (names and kinds; tokens themselves are never stored).
    List,
    /// Revoke a token by name (takes effect at once on a running stub).
    Revoke {
        /// Token name.
        name: String,
    },
}

/// The key directory: `--key-dir`, else the config's, else `./keys`.
pub(super) fn key_dir(arg: Option<PathBuf>, config: Option<PathBuf>) -> PathBuf {
    arg.or(config).unwrap_or_else(|| PathBuf::from("keys"))
}

/// Makes the first admin token after `keys init` (unless there is a token file already);
/// returns where it was written.
pub fn admin_token_after_init(dir: &Path, now: u64) -> Result<Option<PathBuf>> {
    let file = dir.join(ADMIN_TOKEN_FILE);
    let store = dir.join(TOKEN_STORE_FILE);
    if file.exists() || !token::load(&store)?.is_empty() {
        return Ok(None);
    }
    let t = token::create(&store, "admin", TokenKind::Admin, now)?;
    token::write_token_file(&file, &t, false)?;
    Ok(Some(file))
}

/// Runs `token` on the key directory: `--key-dir`, else the config's, else `./keys`.
pub(super) fn run(t: TokenArgs, config_key_dir: Option<PathBuf>, now: u64) -> Result<()> {
    let dir = key_dir(t.key_dir, config_key_dir);
    let store = dir.join(TOKEN_STORE_FILE);
    match t.cmd {
        TokenCmd::Create {
            name,
            kind,
            tenant,
            out,
            force,
            print,
        } => {
            let out = out.unwrap_or_else(|| dir.join(format!("{name}.token")));
            if out.exists() && !force {
                bail!(
                    "{} exists; pass --out FILE for another token file or --force to replace it",
                    out.display()
                );
            }
            let t = token::create_scoped(&store, &name, kind, tenant.as_ref(), now)?;
            token::write_token_file(&out, &t, force)?;
            eprintln!(
                "{} token {name:?} written to {} (pass it with --token-file)",
                kind.as_str(),
                out.display()
            );
            if print {
                println!("{t}");
            }
            Ok(())
        }
        TokenCmd::List => {
            let rows = token::load(&store)?
                .into_iter()
                .map(|r| {
                    vec![
                        r.name,
                        r.kind.as_str().to_string(),
                        r.tenant.unwrap_or_else(|| "(all: MSP)".into()),
                        licd_stub::admin::query::format_time(r.created_at),
                    ]
                })
                .collect();
            print_table(&["NAME", "KIND", "TENANT", "CREATED"], rows);
            Ok(())
        }
        TokenCmd::Revoke { name } => {
            if !token::revoke(&store, &name)? {
                bail!(
                    "no token named {name:?} in {} (see `licd-stub token list`)",
                    store.display()
                );
            }
            eprintln!("token {name:?} revoked");
            Ok(())
        }
    }
}

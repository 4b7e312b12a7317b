//! Bearer tokens of the admin API. A token is 32 random bytes in hex behind a prefix that
//! names its kind (`lst_admin_…`, `lst_read_…`); the controller keeps only its SHA-256 in a
//! token store (`admin-tokens.json` in the key directory, mode 0600), the client keeps the
//! token itself in a token file (`admin.token`, mode 0600). `licd-stub keys init` makes the
//! first admin token, `licd-stub token create` more.
//!
//! Checking a token hashes it and compares the hash with every stored hash in constant time,
//! so neither the answer time nor an early exit tells how much of a guess was right. The store
//! is re-read when its modification time changes: tokens made while the stub runs work at once.
//! (Kept apart from `keys.rs`, which holds the signing keys.)

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::SystemTime;

use licd_protocol::TenantId;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// File name of the token store in the key directory.
pub const TOKEN_STORE_FILE: &str = "admin-tokens.json";

/// File name of the admin token file `keys init` writes in the key directory.
pub const ADMIN_TOKEN_FILE: &str = "admin.token";

/// What a token may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TokenKind {
    /// Everything.
    Admin,
    /// `GET` only: lists, details, compliance, the OpenAPI document.
    Read,
}

impl TokenKind {
    /// `admin` or `read`.
    pub fn as_str(self) -> &'static str {
        match self {
            TokenKind::Admin => "admin",
            TokenKind::Read => "read",
        }
    }
}

impl std::str::FromStr for TokenKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "admin" => Ok(TokenKind::Admin),
            "read" => Ok(TokenKind::Read),
            other => Err(format!("token kind {other:?}: expected admin or read")),
        }
    }
}

/// One stored token: its name, kind and hash (never the token).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenRecord {
    /// Name chosen by the operator (who or what uses it).
    pub name: String,
    /// Rights.
    pub kind: TokenKind,
    /// SHA-256 of the token, hex.
    pub sha256: String,
    /// When it was made (unix seconds).
    pub created_at: u64,
    /// The one customer (tenant) the token is scoped to; `None` = the MSP's token, which sees
    /// every customer. Stores written before tenant tokens existed have no such field: their
    /// tokens are the MSP's, as they were.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
}

/// Why tokens could not be made or read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TokenError {
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// File.
        path: PathBuf,
        /// Error.
        source: std::io::Error,
    },
    /// The store does not hold what it should.
    #[error("{path}: {why}")]
    Invalid {
        /// File.
        path: PathBuf,
        /// What is wrong.
        why: String,
    },
    /// The token file exists (never overwritten without being asked).
    #[error("{0} already exists; pass another --out or --force")]
    Exists(PathBuf),
    /// A token of that name exists.
    #[error("a token named {0:?} exists; choose another --name")]
    NameTaken(String),
    /// The operating system's random source failed.
    #[error("random source: {0}")]
    Random(String),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> TokenError + '_ {
    move |source| TokenError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// SHA-256 of a token.
pub fn hash(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// Equality of two hashes without an early exit.
fn ct_eq(a: &[u8; 32], b: &[u8; 32]) -> bool {
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The records of a token store; an absent store has none.
pub fn load(store: &Path) -> Result<Vec<TokenRecord>, TokenError> {
    match fs::read_to_string(store) {
        Ok(text) => serde_json::from_str(&text).map_err(|e| TokenError::Invalid {
            path: store.to_path_buf(),
            why: e.to_string(),
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(io(store)(e)),
    }
}

/// Writes `bytes` to `path` through a temporary file and a rename, mode 0600.
fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), TokenError> {
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty());
    if let Some(dir) = dir {
        fs::create_dir_all(dir).map_err(io(dir))?;
    }
    let tmp = path.with_extension("tmp");
    {
        let mut f = open_private(&tmp, true)?;
        f.write_all(bytes).map_err(io(&tmp))?;
        f.sync_all().map_err(io(&tmp))?;
    }
    fs::rename(&tmp, path).map_err(io(path))
}

fn open_private(path: &Path, truncate: bool) -> Result<fs::File, TokenError> {
    let mut o = fs::OpenOptions::new();
    o.write(true);
    if truncate {
        o.create(true).truncate(true);
    } else {
        o.create_new(true);
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        o.mode(0o600);
    }
    o.open(path).map_err(|e| {
        if e.kind() == std::io::ErrorKind::AlreadyExists {
            TokenError::Exists(path.to_path_buf())
        } else {
            io(path)(e)
        }
    })
}

/// Makes a new token of `kind` named `name`, adds its hash to the store and returns the token
/// (shown once: only its hash is kept). The token is the MSP's: it sees every customer.
pub fn create(store: &Path, name: &str, kind: TokenKind, now: u64) -> Result<String, TokenError> {
    create_scoped(store, name, kind, None, now)
}

/// Like [`create`], for a token scoped to `tenant` when one is given: it sees and changes only
/// that customer's customer record, devices, subscriptions and licenses.
pub fn create_scoped(
    store: &Path,
    name: &str,
    kind: TokenKind,
    tenant: Option<&TenantId>,
    now: u64,
) -> Result<String, TokenError> {
    let mut records = load(store)?;
    if records.iter().any(|r| r.name == name) {
        return Err(TokenError::NameTaken(name.to_string()));
    }
    let mut secret = [0u8; 32];
    getrandom::fill(&mut secret).map_err(|e| TokenError::Random(e.to_string()))?;
    let token = format!("lst_{}_{}", kind.as_str(), hex::encode(secret));
    records.push(TokenRecord {
        name: name.to_string(),
        kind,
        sha256: hex::encode(hash(&token)),
        created_at: now,
        tenant: tenant.map(ToString::to_string),
    });
    let json = serde_json::to_vec_pretty(&records).map_err(|e| TokenError::Invalid {
        path: store.to_path_buf(),
        why: e.to_string(),
    })?;
    write_atomic(store, &json)?;
    Ok(token)
}

/// Removes the token named `name` from the store; whether there was one.
pub fn revoke(store: &Path, name: &str) -> Result<bool, TokenError> {
    let mut records = load(store)?;
    let before = records.len();
    records.retain(|r| r.name != name);
    if records.len() == before {
        return Ok(false);
    }
    let json = serde_json::to_vec_pretty(&records).map_err(|e| TokenError::Invalid {
        path: store.to_path_buf(),
        why: e.to_string(),
    })?;
    write_atomic(store, &json)?;
    Ok(true)
}

/// Writes a token to a token file (mode 0600); refuses to replace one unless `overwrite`.
pub fn write_token_file(path: &Path, token: &str, overwrite: bool) -> Result<(), TokenError> {
    if overwrite {
        write_atomic(path, format!("{token}\n").as_bytes())
    } else {
        if let Some(dir) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            fs::create_dir_all(dir).map_err(io(dir))?;
        }
        let mut f = open_private(path, false)?;
        f.write_all(format!("{token}\n").as_bytes())
            .map_err(io(path))?;
        f.sync_all().map_err(io(path))
    }
}

/// Reads a token file (surrounding white space ignored).
pub fn read_token_file(path: &Path) -> Result<String, TokenError> {
    let text = fs::read_to_string(path).map_err(io(path))?;
    let token = text.trim();
    if token.is_empty() {
        return Err(TokenError::Invalid {
            path: path.to_path_buf(),
            why: "empty token file".into(),
        });
    }
    Ok(token.to_string())
}

/// Who a request is: the stored token it presented.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// Token name.
    pub name: String,
    /// Rights.
    pub kind: TokenKind,
    /// Hash of the token (the rate limiter's key).
    pub hash: [u8; 32],
    /// The customer the token is scoped to (`None`: the MSP's token, everything).
    pub tenant: Option<TenantId>,
}

#[derive(Debug, Default)]
struct Cache {
    modified: Option<(SystemTime, u64)>,
    loaded: bool,
    entries: Vec<([u8; 32], String, TokenKind, Option<TenantId>)>,
}

/// Checks presented tokens against the store, re-reading it when it changes.
#[derive(Debug)]
pub struct Verifier {
    store: PathBuf,
    cache: Mutex<Cache>,
}

impl Verifier {
    /// A verifier over the store at `store` (which may not exist yet).
    pub fn new(store: PathBuf) -> Self {
        Self {
            store,
            cache: Mutex::new(Cache::default()),
        }
    }

    /// The store's path.
    pub fn store(&self) -> &Path {
        &self.store
    }

    /// The stored token matching `token`, if any.
    pub fn verify(&self, token: &str) -> Result<Option<Principal>, TokenError> {
        let modified = fs::metadata(&self.store)
            .and_then(|m| Ok((m.modified()?, m.len())))
            .ok();
        let mut cache = self.cache.lock().map_err(|_| TokenError::Invalid {
            path: self.store.clone(),
            why: "token cache poisoned".into(),
        })?;
        if !cache.loaded || cache.modified != modified {
            let mut entries = Vec::new();
            for r in load(&self.store)? {
                let mut h = [0u8; 32];
                hex::decode_to_slice(&r.sha256, &mut h).map_err(|e| TokenError::Invalid {
                    path: self.store.clone(),
                    why: format!("token {:?}: {e}", r.name),
                })?;
                // A scope that is not an id would match no customer: refuse the store rather
                // than let the token see nothing (or, worse, be taken for the MSP's).
                let tenant = r
                    .tenant
                    .as_deref()
                    .map(TenantId::new)
                    .transpose()
                    .map_err(|e| TokenError::Invalid {
                        path: self.store.clone(),
                        why: format!("token {:?}: tenant: {e}", r.name),
                    })?;
                entries.push((h, r.name, r.kind, tenant));
            }
            *cache = Cache {
                modified,
                loaded: true,
                entries,
            };
        }
        let presented = hash(token);
        // Compare with every entry; remember the match without leaving the loop early.
        let mut found = None;
        for (h, name, kind, tenant) in &cache.entries {
            if ct_eq(h, &presented) && found.is_none() {
                found = Some(Principal {
                    name: name.clone(),
                    kind: *kind,
                    hash: presented,
                    tenant: tenant.clone(),
                });
            }
        }
        Ok(found)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn a_created_token_verifies_with_its_kind_and_a_revoked_or_wrong_one_does_not() {
        let dir = tempfile::tempdir().unwrap();
        let store = dir.path().join(TOKEN_STORE_FILE);
        let v = Verifier::new(store.clone());
        assert_eq!(v.verify("lst_admin_00").unwrap(), None);
        let admin = create(&store, "ops", TokenKind::Admin, 1).unwrap();
        let read = create(&store, "ci", TokenKind::Read, 2).unwrap();
        assert!(admin.starts_with("lst_admin_") && read.starts_with("lst_read_"));
        assert!(matches!(
            create(&store, "ops", TokenKind::Read, 3),
            Err(TokenError::NameTaken(_))
        ));
        let text = fs::read_to_string(&store).unwrap();
        assert!(!text.contains(&admin[10..]), "only hashes are stored");
        assert_eq!(v.verify(&admin).unwrap().unwrap().kind, TokenKind::Admin);
        assert_eq!(v.verify(&read).unwrap().unwrap().name, "ci");
        assert_eq!(v.verify(&format!("{admin}x")).unwrap(), None);
        assert!(revoke(&store, "ci").unwrap());
        // A new Verifier: mtime resolution may not tell two writes within a second apart.
        assert_eq!(Verifier::new(store.clone()).verify(&read).unwrap(), None);
    }

    #[test]
    fn a_token_file_is_private_and_never_overwritten_unasked() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t").join(ADMIN_TOKEN_FILE);
        write_token_file(&path, "abc", false).unwrap();
        assert!(matches!(
            write_token_file(&path, "def", false),
            Err(TokenError::Exists(_))
        ));
        assert_eq!(read_token_file(&path).unwrap(), "abc");
        write_token_file(&path, "def", true).unwrap();
        assert_eq!(read_token_file(&path).unwrap(), "def");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }
}

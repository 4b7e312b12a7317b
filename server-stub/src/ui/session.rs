//! Dashboard sign-in: a bearer token (the admin API's, `read` or `admin`) is exchanged for a
//! session cookie — random, `HttpOnly` (no script reads it), `SameSite=Strict` (no other site's
//! page sends it), `Path=/ui` — and a per-session CSRF token that every form carries. The
//! session keeps the token in memory only and checks it against the token store on every
//! request, so a revoked token signs its sessions out at once.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::http::HeaderMap;

use crate::admin::token::{Principal, TokenKind, Verifier};

/// Cookie name.
pub const COOKIE: &str = "licd_ui";
/// A session ends this long after sign-in.
pub const LIFETIME: Duration = Duration::from_secs(8 * 3600);
/// Sessions kept at most; the oldest goes first.
const MAX_SESSIONS: usize = 1024;

/// A signed-in operator.
#[derive(Clone)]
pub struct Session {
    token: String,
    /// Who (re-checked on every request).
    pub principal: Principal,
    /// The CSRF token of this session's forms.
    pub csrf: String,
    started: Instant,
}

impl std::fmt::Debug for Session {
    // Never the token.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("principal", &self.principal.name)
            .finish_non_exhaustive()
    }
}

impl Session {
    /// May this session change things?
    pub fn is_admin(&self) -> bool {
        self.principal.kind == TokenKind::Admin
    }

    /// Does `presented` match this session's CSRF token (constant time)?
    pub fn csrf_ok(&self, presented: &str) -> bool {
        let (a, b) = (self.csrf.as_bytes(), presented.as_bytes());
        a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
    }
}

/// Sessions by cookie value.
#[derive(Debug, Default)]
pub struct Sessions(Mutex<HashMap<String, Session>>);

fn random_hex() -> Option<String> {
    let mut b = [0u8; 32];
    getrandom::fill(&mut b).ok()?;
    Some(hex::encode(b))
}

impl Sessions {
    /// Signs in with `token`: the new session's cookie value and session, or `None` when the
    /// token is not in the store (or randomness failed).
    pub fn sign_in(&self, verifier: &Verifier, token: &str) -> Option<(String, Session)> {
        let token = token.trim();
        let principal = verifier.verify(token).ok().flatten()?;
        let id = random_hex()?;
        let session = Session {
            token: token.to_string(),
            principal,
            csrf: random_hex()?,
            started: Instant::now(),
        };
        let mut map = self.0.lock().ok()?;
        map.retain(|_, s| s.started.elapsed() < LIFETIME);
        if map.len() >= MAX_SESSIONS {
            if let Some(oldest) = map
                .iter()
                .min_by_key(|(_, s)| s.started)
                .map(|(k, _)| k.clone())
            {
                map.remove(&oldest);
            }
        }
        map.insert(id.clone(), session.clone());
        Some((id, session))
    }

    /// The session of the request's cookie, if it is current and its token still valid.
    pub fn current(&self, verifier: &Verifier, headers: &HeaderMap) -> Option<Session> {
        let id = cookie(headers, COOKIE)?;
        let mut map = self.0.lock().ok()?;
        let session = map.get(id)?.clone();
        let principal = match verifier.verify(&session.token) {
            Ok(Some(p)) if session.started.elapsed() < LIFETIME => p,
            _ => {
                map.remove(id);
                return None;
            }
        };
        Some(Session {
            principal,
            ..session
        })
    }

    /// Ends the request's session.
    pub fn sign_out(&self, headers: &HeaderMap) {
        if let (Some(id), Ok(mut map)) = (cookie(headers, COOKIE), self.0.lock()) {
            map.remove(id);
        }
    }
}

/// The `Set-Cookie` value that starts a session.
pub fn set_cookie(id: &str) -> String {
    format!(
        "{COOKIE}={id}; Path=/ui; HttpOnly; SameSite=Strict; Max-Age={}",
        LIFETIME.as_secs()
    )
}

/// The `Set-Cookie` value that ends one.
pub fn clear_cookie() -> String {
    format!("{COOKIE}=; Path=/ui; HttpOnly; SameSite=Strict; Max-Age=0")
}

/// The value of cookie `name` in the request.
fn cookie<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers
        .get_all(axum::http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::admin::token;

    #[test]
    fn a_session_needs_a_stored_token_and_ends_when_the_token_is_revoked() {
        let dir = tempfile::tempdir().unwrap();
        let store = dir.path().join(token::TOKEN_STORE_FILE);
        let t = token::create(&store, "ops", TokenKind::Read, 1).unwrap();
        let verifier = Verifier::new(store.clone());
        let sessions = Sessions::default();
        assert!(sessions.sign_in(&verifier, "not-a-token").is_none());
        let (id, s) = sessions.sign_in(&verifier, &t).unwrap();
        assert!(!s.is_admin());
        assert!(s.csrf_ok(&s.csrf.clone()));
        assert!(!s.csrf_ok("x"));
        let mut headers = HeaderMap::new();
        headers.insert(
            axum::http::header::COOKIE,
            format!("other=1; {COOKIE}={id}").parse().unwrap(),
        );
        assert!(sessions.current(&verifier, &headers).is_some());
        assert!(token::revoke(&store, "ops").unwrap());
        assert!(sessions.current(&verifier, &headers).is_none());
    }
}

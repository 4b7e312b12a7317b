//! The admin API's middleware: a request id on every response (`x-request-id`; a 500 is
//! logged with it), the bearer token check (401), a token bucket per token (429), and rights
//! (403: `read` tokens may only `GET`).

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::time::Instant;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Json;

use super::error::{ApiError, ErrorBody, ErrorDetail, InternalMessage};
use super::token::{Principal, TokenKind};
use super::{App, RateLimit};

/// Header carrying the request id.
pub const REQUEST_ID_HEADER: &str = "x-request-id";

/// The request id, for handlers that log.
#[derive(Debug, Clone)]
pub struct RequestId(pub String);

/// Token buckets by token hash.
#[derive(Debug, Default)]
pub struct Buckets(HashMap<[u8; 32], Bucket>);

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

impl Buckets {
    /// Takes one token from `key`'s bucket at `now`; `Err(seconds to wait)` when empty.
    pub fn take(&mut self, key: [u8; 32], limit: RateLimit, now: Instant) -> Result<(), u64> {
        let burst = f64::from(limit.burst.max(1));
        let rate = f64::from(limit.per_second);
        let b = self.0.entry(key).or_insert(Bucket {
            tokens: burst,
            at: now,
        });
        let elapsed = now.saturating_duration_since(b.at).as_secs_f64();
        b.tokens = (b.tokens + elapsed * rate).min(burst);
        b.at = now;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            Ok(())
        } else if rate > 0.0 {
            Err(((1.0 - b.tokens) / rate).ceil().max(1.0) as u64)
        } else {
            Err(60)
        }
    }
}

/// Outermost layer: gives the request an id, returns it in `x-request-id`, and logs a 500
/// with it (the body then names the id instead of the fault).
pub async fn request_id(State(app): State<App>, mut req: Request, next: Next) -> Response {
    let n = app.0.request_seq.fetch_add(1, Ordering::Relaxed);
    let id = format!("{:08x}-{n:06}", app.0.request_prefix);
    req.extensions_mut().insert(RequestId(id.clone()));
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let mut resp = next.run(req).await;
    if resp.status() == StatusCode::INTERNAL_SERVER_ERROR {
        let detail = resp
            .extensions()
            .get::<InternalMessage>()
            .map(|m| m.0.clone())
            .unwrap_or_else(|| "no detail".to_string());
        tracing::error!(request_id = %id, %method, %path, error = %detail, "admin API request failed");
        let body = ErrorBody {
            error: ErrorDetail {
                code: "internal_error".into(),
                message: format!(
                    "internal error; the controller's log has the details under request id {id}"
                ),
                request_id: Some(id.clone()),
            },
        };
        resp = (StatusCode::INTERNAL_SERVER_ERROR, Json(body)).into_response();
    }
    if let Ok(v) = HeaderValue::from_str(&id) {
        resp.headers_mut().insert(REQUEST_ID_HEADER, v);
    }
    resp
}

fn bearer(req: &Request<Body>) -> Result<&str, ApiError> {
    let value = req.headers().get(header::AUTHORIZATION).ok_or_else(|| {
        ApiError::unauthorized(
            "no bearer token: send `Authorization: Bearer <token>` (make one with \
             `licd-stub token create`)",
        )
    })?;
    let value = value
        .to_str()
        .map_err(|_| ApiError::unauthorized("the Authorization header is not valid text"))?;
    let token = value
        .strip_prefix("Bearer ")
        .or_else(|| value.strip_prefix("bearer "))
        .ok_or_else(|| ApiError::unauthorized("the Authorization header must be `Bearer <token>`"))?
        .trim();
    if token.is_empty() {
        return Err(ApiError::unauthorized("empty bearer token"));
    }
    Ok(token)
}

/// Layer of the `/api` routes: token (401), rate limit (429), rights (403).
pub async fn authorize(State(app): State<App>, mut req: Request, next: Next) -> Response {
    let principal: Principal = {
        let token = match bearer(&req) {
            Ok(t) => t,
            Err(e) => return e.into_response(),
        };
        match app.0.tokens.verify(token) {
            Ok(Some(p)) => p,
            Ok(None) => {
                return ApiError::unauthorized(
                    "unknown or revoked token: check --token-file, or make a new one with \
                     `licd-stub token create`",
                )
                .into_response()
            }
            Err(e) => return ApiError::internal(format!("token store: {e}")).into_response(),
        }
    };
    let taken = match app.0.buckets.lock() {
        Ok(mut b) => b.take(principal.hash, app.0.rate_limit, Instant::now()),
        Err(_) => return ApiError::internal("rate limiter poisoned").into_response(),
    };
    if let Err(wait) = taken {
        return ApiError::rate_limited(wait).into_response();
    }
    let read_only = matches!(*req.method(), Method::GET | Method::HEAD);
    if principal.kind == TokenKind::Read && !read_only {
        return ApiError::forbidden(format!(
            "token {:?} is a read token: it may only GET; use an admin token to change things",
            principal.name
        ))
        .into_response();
    }
    req.extensions_mut().insert(principal);
    next.run(req).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_bucket_allows_its_burst_then_refills_at_its_rate() {
        let mut b = Buckets::default();
        let limit = RateLimit {
            burst: 2,
            per_second: 1,
        };
        let t0 = Instant::now();
        assert_eq!(b.take([1; 32], limit, t0), Ok(()));
        assert_eq!(b.take([1; 32], limit, t0), Ok(()));
        assert_eq!(b.take([1; 32], limit, t0), Err(1));
        assert_eq!(b.take([2; 32], limit, t0), Ok(()), "buckets are per token");
        assert_eq!(b.take([1; 32], limit, t0 + Duration::from_secs(1)), Ok(()));
    }
}

//! Errors of the admin API as the seeds' status codes with a JSON body
//! `{ "error": { "code", "message" } }`, the mapping from engine and runtime errors, and
//! [`ApiJson`], a JSON body extractor whose refusals (bad JSON, missing field, body over the
//! limit) use the same body.

use axum::extract::rejection::{JsonRejection, PathRejection};
use axum::extract::{FromRequest, FromRequestParts, Path, Request};
use axum::http::request::Parts;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::engine::policy::PolicyError;
use crate::engine::EngineError;
use crate::error::StubError;

/// The error body of every refusal.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ErrorBody {
    /// The error.
    pub error: ErrorDetail,
}

/// What went wrong.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ErrorDetail {
    /// Stable code: `invalid_request` (400), `unauthorized` (401), `forbidden` (403),
    /// `not_found` (404), `method_not_allowed` (405), `conflict` or `device_offline` (409),
    /// `payload_too_large` (413), `unprocessable` (422), `rate_limited` (429), `internal_error`
    /// (500), `timeout` (504).
    pub code: String,
    /// What to fix, in words.
    pub message: String,
    /// The request id (500 only; also in the `x-request-id` header of every response).
    #[serde(rename = "requestId", skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
}

/// An error response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// Code of the body.
    pub code: &'static str,
    /// Message of the body.
    pub message: String,
    /// Seconds to wait (429).
    pub retry_after: Option<u64>,
}

/// The message of a 500, for the request-id layer to log (it is not sent as is).
#[derive(Debug, Clone)]
pub(crate) struct InternalMessage(pub String);

impl ApiError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            retry_after: None,
        }
    }

    /// 400: a missing or invalid field or parameter.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_request", message)
    }

    /// 401: no token, or not a known one.
    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
    }

    /// 403: a known token without the right.
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "forbidden", message)
    }

    /// 404: an unknown id.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    /// 405: the path exists, the method does not (the response has an `Allow` header).
    pub fn method_not_allowed(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            message,
        )
    }

    /// 409: the request conflicts with the ledger's state.
    pub fn conflict(message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, "conflict", message)
    }

    /// 422: a request the document allows whose values contradict each other (a term that
    /// ends before it starts). A 400 is always a request the document does not allow.
    pub fn unprocessable(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, "unprocessable", message)
    }

    /// 413: body over the limit.
    pub fn too_large(message: impl Into<String>) -> Self {
        Self::new(StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large", message)
    }

    /// 429: the token's bucket is empty.
    pub fn rate_limited(retry_after: u64) -> Self {
        Self {
            retry_after: Some(retry_after),
            ..Self::new(
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limited",
                format!("rate limit exceeded; retry after {retry_after} s"),
            )
        }
    }

    /// 500: a real fault (the message is logged with the request id, not sent).
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal_error", message)
    }
}

impl From<EngineError> for ApiError {
    fn from(e: EngineError) -> Self {
        use EngineError as E;
        let msg = e.to_string();
        match e {
            E::UnknownCustomer(_)
            | E::UnknownSubscription(_)
            | E::UnknownClaimKey
            | E::UnknownSku(_)
            | E::UnknownService(_)
            | E::UnknownDevice(..)
            | E::UnknownLicenseKey(_)
            | E::UnknownLicense(_)
            | E::UnknownAssignment { .. }
            | E::UnknownDelegation(_)
            | E::NotEntitled(..) => ApiError::not_found(msg),
            E::CustomerExists(_)
            | E::MspExists(_)
            | E::SubscriptionExists(_)
            | E::SkuExists(_)
            | E::ClaimKeyInUse(_)
            | E::AlreadyClaimed(_)
            | E::Unclaimed(_)
            | E::CustomerInUse(..)
            | E::SeatsInUse { .. }
            | E::AssignmentExists { .. }
            | E::NotEnoughSeats { .. }
            | E::NotEnoughForDelegation { .. }
            | E::DelegationEnded { .. }
            | E::SeqExhausted => ApiError::conflict(msg),
            E::InvalidTerm { .. }
            | E::DuplicateSku(_)
            | E::InvalidMove(_)
            | E::InvalidAssignment(_)
            | E::InvalidDelegation(_)
            | E::InvalidPolicy(PolicyError::ThresholdsNotDescending(_)) => {
                ApiError::unprocessable(msg)
            }
            E::NoServices
            | E::NoCustomers
            | E::IncludeAndExclude
            | E::TooManySeats { .. }
            | E::InvalidPolicy(_) => ApiError::bad_request(msg),
        }
    }
}

impl From<StubError> for ApiError {
    fn from(e: StubError) -> Self {
        match e {
            StubError::Engine(e) => e.into(),
            StubError::Conflict(message) => ApiError::conflict(message),
            StubError::Offline(message, kind) => match kind {
                crate::error::OfflineKind::Invalid => ApiError::unprocessable(message),
                crate::error::OfflineKind::NotFound => ApiError::not_found(message),
                crate::error::OfflineKind::Conflict => ApiError::conflict(message),
            },
            other => ApiError::internal(other.to_string()),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let internal = self.status == StatusCode::INTERNAL_SERVER_ERROR;
        let body = ErrorBody {
            error: ErrorDetail {
                code: self.code.to_string(),
                message: if internal {
                    "internal error; the controller's log has the details under this request id"
                        .to_string()
                } else {
                    self.message.clone()
                },
                request_id: None,
            },
        };
        let mut resp = (self.status, Json(body)).into_response();
        if let Some(secs) = self.retry_after {
            if let Ok(v) = HeaderValue::from_str(&secs.to_string()) {
                resp.headers_mut().insert(header::RETRY_AFTER, v);
            }
        }
        if internal {
            resp.extensions_mut().insert(InternalMessage(self.message));
        }
        resp
    }
}

/// A JSON request body; refusals are [`ApiError`]s (400, or 413 over the body limit).
#[derive(Debug, Clone)]
pub struct ApiJson<T>(pub T);

impl<S, T> FromRequest<S> for ApiJson<T>
where
    Json<T>: FromRequest<S, Rejection = JsonRejection>,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match Json::<T>::from_request(req, state).await {
            Ok(Json(v)) => Ok(ApiJson(v)),
            Err(rejection) => Err(match rejection.status() {
                StatusCode::PAYLOAD_TOO_LARGE => {
                    ApiError::too_large("request body is over the admin API's size limit")
                }
                StatusCode::UNSUPPORTED_MEDIA_TYPE => ApiError::bad_request(
                    "send the body as JSON with Content-Type: application/json",
                ),
                _ => ApiError::bad_request(rejection.body_text()),
            }),
        }
    }
}

/// Path parameters; a refusal (e.g. a segment that is not UTF-8 once decoded) is a JSON 400.
#[derive(Debug, Clone)]
pub struct ApiPath<T>(pub T);

impl<S, T> FromRequestParts<S> for ApiPath<T>
where
    Path<T>: FromRequestParts<S, Rejection = PathRejection>,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        Path::<T>::from_request_parts(parts, state)
            .await
            .map(|Path(v)| ApiPath(v))
            .map_err(|rejection| ApiError::bad_request(rejection.body_text()))
    }
}

impl<T: Serialize> IntoResponse for ApiJson<T> {
    fn into_response(self) -> Response {
        Json(self.0).into_response()
    }
}

/// Result of a handler.
pub type ApiResult<T> = Result<T, ApiError>;

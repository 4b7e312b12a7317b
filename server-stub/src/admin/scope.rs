//! Tenant isolation (issue 21 item 4): what a token may see. The MSP's tokens (no tenant in the
//! token store) see every customer; a tenant token sees only its own customer record, the
//! devices reporting under it, the subscriptions it owns (and their licenses) and the seats of
//! its devices.
//!
//! Another tenant's object is answered exactly like one that does not exist: the handlers
//! check the scope where they look the object up and give the same error they give for a
//! missing one (built from the same [`EngineError`]), so neither the status, the code nor the
//! message tells the two apart; lists leave others' items out. Operations that are the MSP's
//! by nature (the catalogue, new customers, subscriptions for sale) are a 403 for tenant tokens,
//! whatever their arguments, which tells nothing about other tenants either.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use licd_protocol::{LicenseId, TenantId};

use super::error::{ApiError, ApiResult};
use super::token::Principal;
use crate::engine::{Engine, EngineError, Subscription};

/// Who the request may see.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenScope {
    /// The MSP's token: every customer.
    Msp,
    /// A tenant token: one customer.
    Tenant(TenantId),
}

impl TokenScope {
    /// The scope of a token.
    pub fn of(principal: &Principal) -> Self {
        match &principal.tenant {
            Some(t) => TokenScope::Tenant(t.clone()),
            None => TokenScope::Msp,
        }
    }

    /// The tenant, for a tenant token.
    pub fn tenant(&self) -> Option<&TenantId> {
        match self {
            TokenScope::Msp => None,
            TokenScope::Tenant(t) => Some(t),
        }
    }

    /// Whether the token sees `customer` (its record, its devices).
    pub fn sees(&self, customer: &TenantId) -> bool {
        match self {
            TokenScope::Msp => true,
            TokenScope::Tenant(t) => t == customer,
        }
    }

    /// Whether the token sees a subscription: a tenant sees the ones it owns.
    pub fn sees_subscription(&self, s: &Subscription) -> bool {
        match self {
            TokenScope::Msp => true,
            TokenScope::Tenant(t) => s.owner.as_ref() == Some(t),
        }
    }

    /// `customer` if the token sees it, else the 404 of an unknown customer.
    pub fn customer(&self, customer: &TenantId) -> ApiResult<()> {
        if self.sees(customer) {
            Ok(())
        } else {
            Err(EngineError::UnknownCustomer(customer.clone()).into())
        }
    }

    /// Every customer of `ids` the token sees, else the 404 of the first it does not.
    pub fn customers<'a>(&self, ids: impl IntoIterator<Item = &'a TenantId>) -> ApiResult<()> {
        ids.into_iter().try_for_each(|c| self.customer(c))
    }

    /// The subscription `id` if it exists and the token sees it, else the 404 of an unknown
    /// subscription (the same for both).
    pub fn subscription(&self, e: &Engine, id: &LicenseId) -> ApiResult<()> {
        match e.state().subscriptions.get(id) {
            Some(s) if self.sees_subscription(s) => Ok(()),
            _ => Err(EngineError::UnknownSubscription(id.clone()).into()),
        }
    }

    /// A 403 for tenant tokens: `what` is the MSP's to do.
    pub fn msp_only(&self, what: &str) -> ApiResult<()> {
        match self {
            TokenScope::Msp => Ok(()),
            TokenScope::Tenant(t) => Err(ApiError::forbidden(format!(
                "this token is scoped to customer {t}: {what} is for the MSP's tokens"
            ))),
        }
    }
}

impl<S: Send + Sync> FromRequestParts<S> for TokenScope {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        // The authorize layer puts the principal on every /api request; a handler reached
        // without one is a wiring fault, answered 500 rather than with everything.
        parts
            .extensions
            .get::<Principal>()
            .map(TokenScope::of)
            .ok_or_else(|| ApiError::internal("no principal on an /api request"))
    }
}

//! Customer selection for auto-licensing and unassign (Aruba seeds 000 and 001):
//! `include_customers` / `exclude_customers`, and what neither list means.

use std::collections::{BTreeMap, BTreeSet};

use licd_protocol::TenantId;
use serde::{Deserialize, Serialize};

use super::model::Customer;
use super::EngineError;

/// Which customers an auto-licensing or unassign request applies to.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Selection {
    /// Only these customers (when non-empty).
    #[serde(default)]
    pub include_customers: Vec<TenantId>,
    /// Every customer but these (when non-empty).
    #[serde(default)]
    pub exclude_customers: Vec<TenantId>,
}

impl Selection {
    /// Every customer: MSP, tenants and, for auto-licensing, future tenants.
    pub fn all() -> Self {
        Self::default()
    }

    /// Only `customers`.
    pub fn only(customers: impl IntoIterator<Item = TenantId>) -> Self {
        Self {
            include_customers: customers.into_iter().collect(),
            exclude_customers: Vec::new(),
        }
    }

    /// Every customer except `customers`.
    pub fn all_except(customers: impl IntoIterator<Item = TenantId>) -> Self {
        Self {
            include_customers: Vec::new(),
            exclude_customers: customers.into_iter().collect(),
        }
    }

    /// Neither list given: the request covers every customer, including future tenants.
    pub fn is_all(&self) -> bool {
        self.include_customers.is_empty() && self.exclude_customers.is_empty()
    }

    /// The existing customers selected: the include list, or everyone but the exclude list.
    /// Naming an unknown customer in either list is an error, so a typo never widens or
    /// narrows a request silently; so is giving both lists (seed 000 defines each alone).
    pub fn resolve(
        &self,
        customers: &BTreeMap<TenantId, Customer>,
    ) -> Result<BTreeSet<TenantId>, EngineError> {
        if !self.include_customers.is_empty() && !self.exclude_customers.is_empty() {
            return Err(EngineError::IncludeAndExclude);
        }
        for id in self.include_customers.iter().chain(&self.exclude_customers) {
            if !customers.contains_key(id) {
                return Err(EngineError::UnknownCustomer(id.clone()));
            }
        }
        let base: BTreeSet<TenantId> = if self.include_customers.is_empty() {
            customers.keys().cloned().collect()
        } else {
            self.include_customers.iter().cloned().collect()
        };
        Ok(base
            .into_iter()
            .filter(|c| !self.exclude_customers.contains(c))
            .collect())
    }
}

//! Customers: the MSP and its tenants (list, create, show, rename, remove).

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;

use crate::admin::dto::{Customer, CustomerKind, CustomerUpdate, NewCustomer};
use crate::admin::error::{ApiJson, ApiPath, ApiResult, ErrorBody};
use crate::admin::query::format_time;
use crate::admin::schema::Id;
use crate::admin::scope::TokenScope;
use crate::admin::App;
use crate::engine::{self, Engine};

use super::tenant_id;

fn view(e: &Engine, c: &engine::Customer) -> Customer {
    let st = e.state();
    Customer {
        id: c.id.to_string(),
        name: c.name.clone(),
        kind: match c.kind {
            engine::CustomerKind::Msp => CustomerKind::Msp,
            engine::CustomerKind::Tenant => CustomerKind::Tenant,
        },
        created_at: format_time(c.created_at),
        devices: u32::try_from(st.devices.keys().filter(|(t, _)| t == &c.id).count())
            .unwrap_or(u32::MAX),
        subscriptions: u32::try_from(
            st.subscriptions
                .values()
                .filter(|s| s.owner.as_ref() == Some(&c.id))
                .count(),
        )
        .unwrap_or(u32::MAX),
    }
}

fn one(app: &App, id: &licd_protocol::TenantId) -> ApiResult<Customer> {
    app.stub()
        .with_engine(|e| e.state().customers.get(id).map(|c| view(e, c)))?
        .ok_or_else(|| engine::EngineError::UnknownCustomer(id.clone()).into())
}

/// List customers.
#[utoipa::path(get, path = "/api/v1/customers", tag = "customers",
    responses((status = 200, body = [Customer])),
    security(("bearer" = [])))]
pub async fn list(State(app): State<App>, scope: TokenScope) -> ApiResult<Json<Vec<Customer>>> {
    Ok(Json(app.stub().with_engine(|e| {
        e.state()
            .customers
            .values()
            .filter(|c| scope.sees(&c.id))
            .map(|c| view(e, c))
            .collect()
    })?))
}

/// Create a customer (a tenant unless `kind` is `msp`). A tenant inherits auto-licensing
/// enabled for all customers. The MSP's tokens only (403 for a tenant token).
#[utoipa::path(post, path = "/api/v1/customers", tag = "customers",
    request_body = NewCustomer,
    responses((status = 201, body = Customer),
              (status = 409, description = "The id exists, or there is an MSP already", body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn create(
    State(app): State<App>,
    scope: TokenScope,
    ApiJson(req): ApiJson<NewCustomer>,
) -> ApiResult<(StatusCode, Json<Customer>)> {
    let id = tenant_id(&req.id)?;
    scope.msp_only("creating customers")?;
    let name = req.name.unwrap_or_else(|| req.id.clone());
    let kind = match req.kind.unwrap_or(CustomerKind::Tenant) {
        CustomerKind::Msp => engine::CustomerKind::Msp,
        CustomerKind::Tenant => engine::CustomerKind::Tenant,
    };
    app.stub().add_customer(id.clone(), &name, kind).await?;
    Ok((StatusCode::CREATED, Json(one(&app, &id)?)))
}

/// Show a customer.
#[utoipa::path(get, path = "/api/v1/customers/{id}", tag = "customers",
    params(("id" = Id, Path, description = "Customer id")),
    responses((status = 200, body = Customer),
              (status = 400, description = "The id is not an id", body = ErrorBody),
              (status = 404, description = "No such customer", body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn show(
    State(app): State<App>,
    scope: TokenScope,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Json<Customer>> {
    let id = tenant_id(&id)?;
    scope.customer(&id)?;
    Ok(Json(one(&app, &id)?))
}

/// Rename a customer.
#[utoipa::path(patch, path = "/api/v1/customers/{id}", tag = "customers",
    params(("id" = Id, Path, description = "Customer id")),
    request_body = CustomerUpdate,
    responses((status = 200, body = Customer),
              (status = 404, description = "No such customer", body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn update(
    State(app): State<App>,
    scope: TokenScope,
    ApiPath(id): ApiPath<String>,
    ApiJson(req): ApiJson<CustomerUpdate>,
) -> ApiResult<Json<Customer>> {
    let id = tenant_id(&id)?;
    scope.customer(&id)?;
    let t = id.clone();
    app.stub()
        .apply(move |e, _| {
            e.rename_customer(&t, req.name)?;
            Ok(((), engine::Effects::default()))
        })
        .await?;
    Ok(Json(one(&app, &id)?))
}

/// Remove a customer that owns no subscription and has no device.
#[utoipa::path(delete, path = "/api/v1/customers/{id}", tag = "customers",
    params(("id" = Id, Path, description = "Customer id")),
    responses((status = 204, description = "Removed"),
              (status = 400, description = "The id is not an id", body = ErrorBody),
              (status = 404, description = "No such customer", body = ErrorBody),
              (status = 409, description = "It owns subscriptions or has devices", body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn remove(
    State(app): State<App>,
    scope: TokenScope,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<StatusCode> {
    let id = tenant_id(&id)?;
    scope.customer(&id)?;
    app.stub()
        .apply(move |e, _| {
            e.remove_customer(&id)?;
            Ok(((), engine::Effects::default()))
        })
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

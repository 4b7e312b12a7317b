//! Snow license assignments (seed 003, issue 21 item 3): a license assigned to computers,
//! datacenters, organizations, sites and users; add, replace and delete one; replace and
//! delete all of a kind; assignment types; the summary; where a host is placed. Thin: the
//! rules are the engine's (`engine::assign`); here ids are parsed, the token's scope applied
//! (another tenant's license, device or organization is answered like a missing one, lists
//! leave others' items out) and the engine's views turned into the seed's shapes.

use axum::extract::{RawQuery, State};
use axum::http::StatusCode;
use axum::Json;
use licd_protocol::{LicenseId, Sku};
use utoipa::openapi::path::{Parameter, ParameterIn};
use utoipa::IntoParams;

use crate::admin::dto::{
    AssignmentCreated, AssignmentSummary, AssignmentType, AssignmentTypePage, ComputerAssignment,
    ComputerAssignmentPage, ComputerAssignmentRequest, DatacenterAssignment,
    DatacenterAssignmentPage, DatacenterAssignmentRequest, OrganizationAssignment,
    OrganizationAssignmentPage, OrganizationAssignmentRequest, Placement, PlacementRequest,
    SiteAssignment, SiteAssignmentRequest, UserAssignment, UserAssignmentPage,
    UserAssignmentRequest,
};
use crate::admin::error::{ApiError, ApiJson, ApiPath, ApiResult, ErrorBody};
use crate::admin::params::{Describe, FilterParam, PAGE_NUMBER, PAGE_SIZE};
use crate::admin::query::{apply_filter, page_numbers, Link, Params};
use crate::admin::schema::{properties_of, Id, LicenseRef as LicenseRefSchema};
use crate::admin::scope::TokenScope;
use crate::admin::App;
use crate::engine::assign::{AssignmentRequest, AssignmentView, LicenseRef, PutMode, Target};
use crate::engine::{AssignmentKind, Effects, Engine, EngineError};

use super::{device_id, tenant_id};

/// The routes of this module.
pub fn routes() -> axum::Router<App> {
    use axum::routing::get;
    const BASE: &str = "/api/v1/licenses/{id}/assignments";
    let r = |tail: &str| format!("{BASE}{tail}");
    axum::Router::new()
        .route("/api/v1/licenses/assignmenttypes", get(assignment_types))
        .route(&r("/summary"), get(summary))
        .route(
            &r("/computers"),
            get(list_computers)
                .post(add_computer)
                .put(replace_computers)
                .delete(delete_computers),
        )
        .route(
            &r("/computers/{assignmentId}"),
            get(show_computer)
                .put(replace_computer)
                .delete(delete_computer),
        )
        .route(
            &r("/datacenters"),
            get(list_datacenters)
                .post(add_datacenter)
                .put(replace_datacenters)
                .delete(delete_datacenters),
        )
        .route(
            &r("/datacenters/{assignmentId}"),
            get(show_datacenter)
                .put(replace_datacenter)
                .delete(delete_datacenter),
        )
        .route(
            &r("/organizations"),
            get(list_organizations)
                .post(add_organization)
                .put(replace_organizations)
                .delete(delete_organizations),
        )
        .route(
            &r("/organizations/{assignmentId}"),
            get(show_organization)
                .put(replace_organization)
                .delete(delete_organization),
        )
        .route(&r("/site"), get(show_site).post(add_site))
        .route(
            &r("/site/{assignmentId}"),
            axum::routing::put(replace_site).delete(delete_site),
        )
        .route(
            &r("/users"),
            get(list_users)
                .post(add_user)
                .put(replace_users)
                .delete(delete_users),
        )
        .route(
            &r("/users/{assignmentId}"),
            get(show_user).delete(delete_user),
        )
        .route(
            "/api/v1/devices/{tenant}/{device}/datacenter",
            get(show_placement).put(place).delete(unplace),
        )
}

/// The license of path `id` if the token sees it (a tenant sees its own subscriptions'
/// licenses), else the 404 of an unknown license — the same for both.
fn license(e: &Engine, scope: &TokenScope, id: &str) -> ApiResult<LicenseRef> {
    let unknown = || ApiError::from(EngineError::UnknownLicense(id.to_string()));
    let (sub, sku) = id.split_once(':').ok_or_else(|| {
        ApiError::bad_request(format!(
            "license id {id:?}: expected <subscriptionId>:<sku>"
        ))
    })?;
    let r = LicenseRef {
        subscription: LicenseId::new(sub)
            .map_err(|err| ApiError::bad_request(format!("license id {id:?}: {err}")))?,
        sku: Sku::new(sku)
            .map_err(|err| ApiError::bad_request(format!("license id {id:?}: {err}")))?,
    };
    match e.state().subscriptions.get(&r.subscription) {
        Some(s) if scope.sees_subscription(s) => {}
        _ => return Err(unknown()),
    }
    e.license(&r)?;
    Ok(r)
}

/// Whether the token sees an assignment: a computer's when it sees the device's tenant.
fn visible(scope: &TokenScope, a: &AssignmentView) -> bool {
    a.device.as_ref().is_none_or(|(t, _)| scope.sees(t))
}

/// The assignments of `kind` of license `id` the token sees.
fn views(
    app: &App,
    scope: &TokenScope,
    id: &str,
    kind: AssignmentKind,
) -> ApiResult<(Vec<AssignmentView>, String)> {
    let now = app.stub().now();
    app.stub().with_engine(|e| {
        let r = license(e, scope, id)?;
        let service = e
            .state()
            .catalog
            .get(&r.sku)
            .map(|c| c.service.to_string())
            .unwrap_or_default();
        let v = e
            .assignments_of(&r, kind, now)?
            .into_iter()
            .filter(|a| visible(scope, a))
            .collect();
        Ok((v, service))
    })?
}

/// One assignment the token sees, or the 404 of an unknown one.
fn one(
    app: &App,
    scope: &TokenScope,
    id: &str,
    kind: AssignmentKind,
    assignment: &str,
) -> ApiResult<(AssignmentView, String)> {
    let (all, service) = views(app, scope, id, kind)?;
    all.into_iter()
        .find(|a| a.id == assignment)
        .map(|a| (a, service))
        .ok_or_else(|| {
            EngineError::UnknownAssignment {
                license: id.to_string(),
                kind: kind.as_str(),
                id: assignment.to_string(),
            }
            .into()
        })
}

fn links(path: String) -> Vec<Link> {
    vec![Link {
        rel: "self".into(),
        href: path,
    }]
}

fn base(id: &str, kind: AssignmentKind) -> String {
    let tail = match kind {
        AssignmentKind::Computer => "computers",
        AssignmentKind::Datacenter => "datacenters",
        AssignmentKind::Organization => "organizations",
        AssignmentKind::Site => "site",
        AssignmentKind::User => "users",
    };
    format!("/api/v1/licenses/{id}/assignments/{tail}")
}

fn reasons(a: &AssignmentView) -> Vec<String> {
    a.invalid_reasons.iter().map(|r| (*r).to_string()).collect()
}

/// An engine view in a kind's seed shape.
trait FromView: serde::Serialize + Sized {
    const KIND: AssignmentKind;
    fn from_view(a: &AssignmentView, service: &str) -> Self;
}

impl FromView for ComputerAssignment {
    const KIND: AssignmentKind = AssignmentKind::Computer;
    fn from_view(a: &AssignmentView, service: &str) -> Self {
        let lic = a.license.to_string();
        let (tenant, device) = a
            .device
            .as_ref()
            .map(|(t, d)| (t.to_string(), d.to_string()))
            .unwrap_or_default();
        Self {
            links: links(format!("{}/{}", base(&lic, Self::KIND), a.id)),
            id: a.id.clone(),
            license_id: lic,
            application_id: service.to_string(),
            computer_id: device,
            customer_id: tenant,
            quantity: a.quantity,
            number_of_supported_virtual_machines: a.number_of_supported_virtual_machines,
            has_vm_use_rights: a.has_vm_use_rights,
            invalid_assignment_reasons: reasons(a),
            virtual_machines: a.virtual_machines.clone(),
            is_auto_allocated: a.is_auto_allocated,
        }
    }
}

impl FromView for DatacenterAssignment {
    const KIND: AssignmentKind = AssignmentKind::Datacenter;
    fn from_view(a: &AssignmentView, service: &str) -> Self {
        let lic = a.license.to_string();
        Self {
            links: links(format!("{}/{}", base(&lic, Self::KIND), a.id)),
            id: a.id.clone(),
            license_id: lic,
            application_id: service.to_string(),
            datacenter_id: a.id.clone(),
            quantity: a.quantity,
            number_of_supported_virtual_machines: a.number_of_supported_virtual_machines,
            has_vm_use_rights: a.has_vm_use_rights,
            invalid_assignment_reasons: reasons(a),
            virtual_machines: a.virtual_machines.clone(),
            covered_computers: a
                .covered_hosts
                .iter()
                .map(|(t, d)| format!("{t}:{d}"))
                .collect(),
        }
    }
}

impl FromView for OrganizationAssignment {
    const KIND: AssignmentKind = AssignmentKind::Organization;
    fn from_view(a: &AssignmentView, service: &str) -> Self {
        let lic = a.license.to_string();
        Self {
            links: links(format!("{}/{}", base(&lic, Self::KIND), a.id)),
            id: a.id.clone(),
            license_id: lic,
            application_id: service.to_string(),
            organization_id: a.id.clone(),
            quantity: a.quantity,
            is_auto_allocated: false,
        }
    }
}

impl FromView for SiteAssignment {
    const KIND: AssignmentKind = AssignmentKind::Site;
    fn from_view(a: &AssignmentView, service: &str) -> Self {
        let lic = a.license.to_string();
        Self {
            links: links(format!("{}/{}", base(&lic, Self::KIND), a.id)),
            id: a.id.clone(),
            license_id: lic,
            application_id: service.to_string(),
            organization_id: a.id.clone(),
            quantity: a.quantity,
        }
    }
}

impl FromView for UserAssignment {
    const KIND: AssignmentKind = AssignmentKind::User;
    fn from_view(a: &AssignmentView, service: &str) -> Self {
        let lic = a.license.to_string();
        Self {
            links: links(format!("{}/{}", base(&lic, Self::KIND), a.id)),
            id: a.id.clone(),
            license_id: lic,
            application_id: service.to_string(),
            user_id: a.id.clone(),
            quantity: a.quantity,
            invalid_assignment_reasons: reasons(a),
        }
    }
}

/// A request body in the engine's terms, with the token's scope applied to what it names.
trait IntoRequest {
    fn into_request(self, e: &Engine, scope: &TokenScope) -> ApiResult<AssignmentRequest>;
}

fn vm_ids(v: Option<Vec<String>>) -> ApiResult<Vec<String>> {
    let v = v.unwrap_or_default();
    for id in &v {
        licd_protocol::id::validate(id)
            .map_err(|err| ApiError::bad_request(format!("virtualMachines: {id:?}: {err}")))?;
    }
    Ok(v)
}

fn plain_id(field: &str, v: &str) -> ApiResult<()> {
    licd_protocol::id::validate(v)
        .map_err(|err| ApiError::bad_request(format!("{field}: {v:?}: {err}")))
}

impl IntoRequest for ComputerAssignmentRequest {
    fn into_request(self, e: &Engine, scope: &TokenScope) -> ApiResult<AssignmentRequest> {
        // A target the body names that does not exist (or the token does not see) is a 422:
        // the request's resource is the license, which exists.
        let unknown = || {
            ApiError::unprocessable(format!(
                "assignment: unknown computer {:?} (a device: <tenant>:<device>)",
                self.computer_id
            ))
        };
        let key = match self.computer_id.split_once(':') {
            Some((t, d)) => {
                let key = (tenant_id(t)?, device_id(d)?);
                if !scope.sees(&key.0) || !e.state().devices.contains_key(&key) {
                    return Err(unknown());
                }
                key
            }
            None => {
                let d = device_id(&self.computer_id)?;
                let mut found = e
                    .state()
                    .devices
                    .keys()
                    .filter(|(t, id)| *id == d && scope.sees(t));
                let key = found.next().cloned().ok_or_else(unknown)?;
                if found.next().is_some() {
                    return Err(ApiError::unprocessable(format!(
                        "computer {:?}: several tenants have a device with this id; give \
                         <tenant>:<device>",
                        self.computer_id
                    )));
                }
                key
            }
        };
        Ok(AssignmentRequest {
            target: Target::Computer(key),
            quantity: self.quantity.unwrap_or(1),
            virtual_machines: vm_ids(self.virtual_machines)?,
        })
    }
}

impl IntoRequest for DatacenterAssignmentRequest {
    fn into_request(self, _: &Engine, _: &TokenScope) -> ApiResult<AssignmentRequest> {
        plain_id("datacenterId", &self.datacenter_id)?;
        Ok(AssignmentRequest {
            target: Target::Other(AssignmentKind::Datacenter, self.datacenter_id),
            quantity: self.quantity.unwrap_or(1),
            virtual_machines: vm_ids(self.virtual_machines)?,
        })
    }
}

fn organization(scope: &TokenScope, id: &str) -> ApiResult<()> {
    plain_id("organizationId", id)?;
    if scope.sees(&tenant_id(id)?) {
        Ok(())
    } else {
        // The engine's words for a customer that does not exist (see `target_error`).
        Err(target_error(EngineError::UnknownCustomer(tenant_id(id)?)).into())
    }
}

/// A target a body names that does not exist is the request's fault, not a missing
/// resource: 422 (the path's license exists), the same whether it is missing or another
/// tenant's.
fn target_error(e: EngineError) -> EngineError {
    match e {
        EngineError::UnknownCustomer(c) => {
            EngineError::InvalidAssignment(format!("unknown customer {c}"))
        }
        EngineError::UnknownDevice(t, d) => {
            EngineError::InvalidAssignment(format!("unknown computer \"{t}:{d}\""))
        }
        other => other,
    }
}

impl IntoRequest for OrganizationAssignmentRequest {
    fn into_request(self, _: &Engine, scope: &TokenScope) -> ApiResult<AssignmentRequest> {
        organization(scope, &self.organization_id)?;
        Ok(AssignmentRequest {
            target: Target::Other(AssignmentKind::Organization, self.organization_id),
            quantity: self.quantity.unwrap_or(1),
            virtual_machines: Vec::new(),
        })
    }
}

impl IntoRequest for SiteAssignmentRequest {
    fn into_request(self, _: &Engine, scope: &TokenScope) -> ApiResult<AssignmentRequest> {
        organization(scope, &self.organization_id)?;
        Ok(AssignmentRequest {
            target: Target::Other(AssignmentKind::Site, self.organization_id),
            quantity: 1,
            virtual_machines: Vec::new(),
        })
    }
}

impl IntoRequest for UserAssignmentRequest {
    fn into_request(self, _: &Engine, _: &TokenScope) -> ApiResult<AssignmentRequest> {
        plain_id("userId", &self.user_id)?;
        Ok(AssignmentRequest {
            target: Target::Other(AssignmentKind::User, self.user_id),
            quantity: 1,
            virtual_machines: Vec::new(),
        })
    }
}

/// Lists a kind's assignments of license `id`: filter, then a page.
fn list<T: FromView>(
    app: &App,
    scope: &TokenScope,
    id: &str,
    filter: &FilterParam,
    q: Option<&str>,
) -> ApiResult<(Vec<T>, crate::admin::query::Pagination, Vec<Link>)> {
    let p = Params::parse(q);
    let conds = filter.read(&p)?;
    let (all, service) = views(app, scope, id, T::KIND)?;
    let items: Vec<T> = all.iter().map(|a| T::from_view(a, &service)).collect();
    let items = apply_filter(items, &conds)?;
    page_numbers(items, &p, &base(id, T::KIND))
}

/// Adds (or with `replace`, replaces) one assignment; returns its id.
async fn put<R: IntoRequest>(
    app: &App,
    scope: &TokenScope,
    id: &str,
    req: R,
    mode: PutMode,
    expect: Option<&str>,
) -> ApiResult<String> {
    let (r, req) = app.stub().with_engine(|e| -> ApiResult<_> {
        let r = license(e, scope, id)?;
        Ok((r, req.into_request(e, scope)?))
    })??;
    let target = req.target.id();
    if let Some(path_id) = expect {
        // PUT …/{assignmentId}: the body names the same target (else 422: a replace does not
        // move an assignment to another target).
        if path_id != target {
            // Unknown first, as for any missing assignment.
            one(app, scope, id, kind_of(&req.target), path_id)?;
            return Err(ApiError::unprocessable(format!(
                "the body names {target:?}, the path {path_id:?}: delete and add to move an \
                 assignment"
            )));
        }
        one(app, scope, id, kind_of(&req.target), path_id)?;
    }
    app.stub()
        .apply(move |e, now| {
            let fx = e.put_assignment(&r, req, mode, now).map_err(target_error)?;
            Ok(((), fx))
        })
        .await?;
    Ok(target)
}

fn kind_of(t: &Target) -> AssignmentKind {
    match t {
        Target::Computer(_) => AssignmentKind::Computer,
        Target::Other(k, _) => *k,
    }
}

async fn remove_one(
    app: &App,
    scope: &TokenScope,
    id: &str,
    kind: AssignmentKind,
    assignment: &str,
) -> ApiResult<StatusCode> {
    one(app, scope, id, kind, assignment)?;
    let r = app.stub().with_engine(|e| license(e, scope, id))??;
    let assignment = assignment.to_string();
    app.stub()
        .apply(move |e, now| Ok(((), e.delete_assignment(&r, kind, &assignment, now)?)))
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn replace_all<R: IntoRequest>(
    app: &App,
    scope: &TokenScope,
    id: &str,
    kind: AssignmentKind,
    reqs: Vec<R>,
) -> ApiResult<()> {
    let (r, reqs) = app.stub().with_engine(|e| -> ApiResult<_> {
        let r = license(e, scope, id)?;
        let reqs = reqs
            .into_iter()
            .map(|q| q.into_request(e, scope))
            .collect::<ApiResult<Vec<_>>>()?;
        Ok((r, reqs))
    })??;
    let scope = scope.clone();
    app.stub()
        .apply(move |e, now| {
            let fx = e
                .replace_assignments(&r, kind, reqs, &|a| visible(&scope, a), now)
                .map_err(target_error)?;
            Ok(((), fx))
        })
        .await?;
    Ok(())
}

async fn remove_all(
    app: &App,
    scope: &TokenScope,
    id: &str,
    kind: AssignmentKind,
) -> ApiResult<StatusCode> {
    let r = app.stub().with_engine(|e| license(e, scope, id))??;
    let scope = scope.clone();
    app.stub()
        .apply(move |e, now| {
            let fx: Effects = e.delete_assignments(&r, kind, &|a| visible(&scope, a), now)?;
            Ok(((), fx))
        })
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

fn created(
    id: &str,
    kind: AssignmentKind,
    assignment: String,
) -> (StatusCode, Json<AssignmentCreated>) {
    (
        StatusCode::CREATED,
        Json(AssignmentCreated {
            links: links(format!("{}/{assignment}", base(id, kind))),
            id: assignment,
        }),
    )
}

macro_rules! filtered_query {
    ($query:ident, $filter:ident, $item:ty, $example:literal) => {
        /// The filter of this list.
        pub const $filter: FilterParam = FilterParam {
            fields: properties_of::<$item>,
            example: $example,
        };

        /// The query of this list: `filter`, `page_number`, `page_size`.
        pub struct $query;

        impl IntoParams for $query {
            fn into_params(_: impl Fn() -> Option<ParameterIn>) -> Vec<Parameter> {
                vec![
                    $filter.parameter(),
                    PAGE_NUMBER.parameter(),
                    PAGE_SIZE.parameter(),
                ]
            }
        }
    };
}

filtered_query!(
    AssignmentTypeQuery,
    ASSIGNMENT_TYPE_FILTER,
    AssignmentType,
    "affectsDevices -eq \"true\""
);
filtered_query!(
    ComputerAssignmentQuery,
    COMPUTER_FILTER,
    ComputerAssignment,
    "customerId -eq \"acme\" -and isAutoAllocated -eq \"false\""
);
filtered_query!(
    DatacenterAssignmentQuery,
    DATACENTER_FILTER,
    DatacenterAssignment,
    "hasVmUseRights -eq \"true\""
);
filtered_query!(
    OrganizationAssignmentQuery,
    ORGANIZATION_FILTER,
    OrganizationAssignment,
    "organizationId -eq \"acme\""
);
filtered_query!(
    UserAssignmentQuery,
    USER_FILTER,
    UserAssignment,
    "userId -eq \"u-1\""
);

/// The assignment types.
#[utoipa::path(get, path = "/api/v1/licenses/assignmenttypes", tag = "licenses",
    params(AssignmentTypeQuery),
    responses((status = 200, body = AssignmentTypePage),
              (status = 400, description = "A parameter is invalid (the message names it)", body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn assignment_types(RawQuery(q): RawQuery) -> ApiResult<Json<AssignmentTypePage>> {
    let p = Params::parse(q.as_deref());
    let conds = ASSIGNMENT_TYPE_FILTER.read(&p)?;
    let items = AssignmentKind::ALL
        .iter()
        .map(|k| AssignmentType {
            id: k.as_str().into(),
            name: match k {
                AssignmentKind::Computer => "Computer",
                AssignmentKind::Datacenter => "Datacenter",
                AssignmentKind::Organization => "Organization",
                AssignmentKind::Site => "Site",
                AssignmentKind::User => "User",
            }
            .into(),
            affects_devices: matches!(k, AssignmentKind::Computer | AssignmentKind::Datacenter),
        })
        .collect();
    let items = apply_filter(items, &conds)?;
    let (items, pagination, links) = page_numbers(items, &p, "/api/v1/licenses/assignmenttypes")?;
    Ok(Json(AssignmentTypePage {
        items,
        pagination,
        links,
    }))
}

/// Which kinds of assignment a license has.
#[utoipa::path(get, path = "/api/v1/licenses/{id}/assignments/summary", tag = "licenses",
    params(("id" = LicenseRefSchema, Path, description = "License id `<subscriptionId>:<sku>`")),
    responses((status = 200, body = AssignmentSummary),
              (status = 400, description = "The license id is malformed", body = ErrorBody),
              (status = 404, description = "No such license", body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn summary(
    State(app): State<App>,
    scope: TokenScope,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Json<AssignmentSummary>> {
    let mut has = [false; 5];
    for (i, k) in AssignmentKind::ALL.iter().enumerate() {
        has[i] = !views(&app, &scope, &id, *k)?.0.is_empty();
    }
    Ok(Json(AssignmentSummary {
        links: links(format!("/api/v1/licenses/{id}/assignments/summary")),
        license_id: id,
        has_computer_assignment: has[0],
        has_datacenter_assignment: has[1],
        has_organization_assignment: has[2],
        has_site_assignment: has[3],
        has_user_assignment: has[4],
    }))
}

/// Generates the list / add / replace-all / delete-all / show / replace / delete handlers
/// of one kind.
macro_rules! kind_handlers {
    (
        kind = $kind:expr,
        what = $what:literal,
        collection = $coll:literal,
        item = $item_path:literal,
        dto = $dto:ty,
        page = $page:ident,
        query = $query:ty,
        filter = $filter:expr,
        request = $req:ty,
        list = $list:ident,
        add = $add:ident,
        replace_all = $replace_all:ident,
        delete_all = $delete_all:ident,
        show = $show:ident,
        replace = $replace:ident,
        delete = $delete:ident $(,)?
    ) => {
        #[doc = concat!("List a license's assignments to ", $what, ".")]
        #[utoipa::path(get, path = $coll, tag = "licenses",
            params(("id" = LicenseRefSchema, Path, description = "License id `<subscriptionId>:<sku>`"), $query),
            responses((status = 200, body = $page),
                      (status = 400, description = "A parameter is invalid (the message names it)", body = ErrorBody),
                      (status = 404, description = "No such license", body = ErrorBody)),
            security(("bearer" = [])))]
        pub async fn $list(
            State(app): State<App>,
            scope: TokenScope,
            ApiPath(id): ApiPath<String>,
            RawQuery(q): RawQuery,
        ) -> ApiResult<Json<$page>> {
            let (items, pagination, links) =
                list::<$dto>(&app, &scope, &id, &$filter, q.as_deref())?;
            Ok(Json($page {
                items,
                pagination,
                links,
            }))
        }

        #[doc = concat!("Add a license assignment to ", $what, ".")]
        #[utoipa::path(post, path = $coll, tag = "licenses",
            params(("id" = LicenseRefSchema, Path, description = "License id `<subscriptionId>:<sku>`")),
            request_body = $req,
            responses((status = 201, body = AssignmentCreated),
                      (status = 404, description = "No such license", body = ErrorBody),
                      (status = 409, description = "The assignment exists, or the license has too few free seats", body = ErrorBody),
                      (status = 422, description = "The target does not exist, or the license cannot have it (product class, a customer that may not use it)", body = ErrorBody)),
            security(("bearer" = [])))]
        pub async fn $add(
            State(app): State<App>,
            scope: TokenScope,
            ApiPath(id): ApiPath<String>,
            ApiJson(req): ApiJson<$req>,
        ) -> ApiResult<(StatusCode, Json<AssignmentCreated>)> {
            let assignment = put(&app, &scope, &id, req, PutMode::Add, None).await?;
            Ok(created(&id, $kind, assignment))
        }

        #[doc = concat!("Replace a license's assignments to ", $what, " (those the token sees).")]
        #[utoipa::path(put, path = $coll, tag = "licenses",
            params(("id" = LicenseRefSchema, Path, description = "License id `<subscriptionId>:<sku>`")),
            request_body = Vec<$req>,
            responses((status = 200, body = $page),
                      (status = 404, description = "No such license", body = ErrorBody),
                      (status = 409, description = "The license has too few free seats", body = ErrorBody),
                      (status = 422, description = "A target is listed twice, does not exist, or the license cannot have it", body = ErrorBody)),
            security(("bearer" = [])))]
        pub async fn $replace_all(
            State(app): State<App>,
            scope: TokenScope,
            ApiPath(id): ApiPath<String>,
            ApiJson(reqs): ApiJson<Vec<$req>>,
        ) -> ApiResult<Json<$page>> {
            replace_all(&app, &scope, &id, $kind, reqs).await?;
            let (items, pagination, links) = list::<$dto>(&app, &scope, &id, &$filter, None)?;
            Ok(Json($page {
                items,
                pagination,
                links,
            }))
        }

        #[doc = concat!("Delete a license's assignments to ", $what, " (those the token sees).")]
        #[utoipa::path(delete, path = $coll, tag = "licenses",
            params(("id" = LicenseRefSchema, Path, description = "License id `<subscriptionId>:<sku>`")),
            responses((status = 204, description = "Removed"),
                      (status = 400, description = "The license id is malformed", body = ErrorBody),
                      (status = 404, description = "No such license", body = ErrorBody)),
            security(("bearer" = [])))]
        pub async fn $delete_all(
            State(app): State<App>,
            scope: TokenScope,
            ApiPath(id): ApiPath<String>,
        ) -> ApiResult<StatusCode> {
            remove_all(&app, &scope, &id, $kind).await
        }

        kind_handlers!(@one kind = $kind, what = $what, item = $item_path, dto = $dto,
            request = $req, show = $show, replace = $replace, delete = $delete);
    };
    (@one kind = $kind:expr, what = $what:literal, item = $item_path:literal, dto = $dto:ty,
     request = $req:ty, show = $show:ident, replace = $replace:ident, delete = $delete:ident) => {
        kind_handlers!(@show kind = $kind, what = $what, item = $item_path, dto = $dto, show = $show);
        kind_handlers!(@replace kind = $kind, what = $what, item = $item_path, dto = $dto,
            request = $req, replace = $replace);
        kind_handlers!(@delete kind = $kind, what = $what, item = $item_path, delete = $delete);
    };
    (@show kind = $kind:expr, what = $what:literal, item = $item_path:literal, dto = $dto:ty,
     show = $show:ident) => {
        #[doc = concat!("Show a license's assignment to ", $what, ".")]
        #[utoipa::path(get, path = $item_path, tag = "licenses",
            params(("id" = LicenseRefSchema, Path, description = "License id `<subscriptionId>:<sku>`"),
                   ("assignmentId" = String, Path, description = "Assignment id")),
            responses((status = 200, body = $dto),
                      (status = 400, description = "The license id is malformed", body = ErrorBody),
                      (status = 404, description = "No such license or assignment", body = ErrorBody)),
            security(("bearer" = [])))]
        pub async fn $show(
            State(app): State<App>,
            scope: TokenScope,
            ApiPath((id, assignment)): ApiPath<(String, String)>,
        ) -> ApiResult<Json<$dto>> {
            let (a, service) = one(&app, &scope, &id, $kind, &assignment)?;
            Ok(Json(<$dto as FromView>::from_view(&a, &service)))
        }
    };
    (@replace kind = $kind:expr, what = $what:literal, item = $item_path:literal, dto = $dto:ty,
     request = $req:ty, replace = $replace:ident) => {
        #[doc = concat!("Replace a license's assignment to ", $what, ".")]
        #[utoipa::path(put, path = $item_path, tag = "licenses",
            params(("id" = LicenseRefSchema, Path, description = "License id `<subscriptionId>:<sku>`"),
                   ("assignmentId" = String, Path, description = "Assignment id")),
            request_body = $req,
            responses((status = 200, body = $dto),
                      (status = 404, description = "No such license or assignment", body = ErrorBody),
                      (status = 409, description = "The license has too few free seats", body = ErrorBody),
                      (status = 422, description = "The body names another target than the path, one that does not exist, or the license cannot have it", body = ErrorBody)),
            security(("bearer" = [])))]
        pub async fn $replace(
            State(app): State<App>,
            scope: TokenScope,
            ApiPath((id, assignment)): ApiPath<(String, String)>,
            ApiJson(req): ApiJson<$req>,
        ) -> ApiResult<Json<$dto>> {
            put(&app, &scope, &id, req, PutMode::Replace, Some(&assignment)).await?;
            let (a, service) = one(&app, &scope, &id, $kind, &assignment)?;
            Ok(Json(<$dto as FromView>::from_view(&a, &service)))
        }
    };
    (@delete kind = $kind:expr, what = $what:literal, item = $item_path:literal,
     delete = $delete:ident) => {
        #[doc = concat!("Delete a license's assignment to ", $what, ".")]
        #[utoipa::path(delete, path = $item_path, tag = "licenses",
            params(("id" = LicenseRefSchema, Path, description = "License id `<subscriptionId>:<sku>`"),
                   ("assignmentId" = String, Path, description = "Assignment id")),
            responses((status = 204, description = "Removed"),
                      (status = 400, description = "The license id is malformed", body = ErrorBody),
                      (status = 404, description = "No such license or assignment", body = ErrorBody)),
            security(("bearer" = [])))]
        pub async fn $delete(
            State(app): State<App>,
            scope: TokenScope,
            ApiPath((id, assignment)): ApiPath<(String, String)>,
        ) -> ApiResult<StatusCode> {
            remove_one(&app, &scope, &id, $kind, &assignment).await
        }
    };
}

kind_handlers!(
    kind = AssignmentKind::Computer,
    what = "computers",
    collection = "/api/v1/licenses/{id}/assignments/computers",
    item = "/api/v1/licenses/{id}/assignments/computers/{assignmentId}",
    dto = ComputerAssignment,
    page = ComputerAssignmentPage,
    query = ComputerAssignmentQuery,
    filter = COMPUTER_FILTER,
    request = ComputerAssignmentRequest,
    list = list_computers,
    add = add_computer,
    replace_all = replace_computers,
    delete_all = delete_computers,
    show = show_computer,
    replace = replace_computer,
    delete = delete_computer,
);

kind_handlers!(
    kind = AssignmentKind::Datacenter,
    what = "datacenters",
    collection = "/api/v1/licenses/{id}/assignments/datacenters",
    item = "/api/v1/licenses/{id}/assignments/datacenters/{assignmentId}",
    dto = DatacenterAssignment,
    page = DatacenterAssignmentPage,
    query = DatacenterAssignmentQuery,
    filter = DATACENTER_FILTER,
    request = DatacenterAssignmentRequest,
    list = list_datacenters,
    add = add_datacenter,
    replace_all = replace_datacenters,
    delete_all = delete_datacenters,
    show = show_datacenter,
    replace = replace_datacenter,
    delete = delete_datacenter,
);

kind_handlers!(
    kind = AssignmentKind::Organization,
    what = "organizations",
    collection = "/api/v1/licenses/{id}/assignments/organizations",
    item = "/api/v1/licenses/{id}/assignments/organizations/{assignmentId}",
    dto = OrganizationAssignment,
    page = OrganizationAssignmentPage,
    query = OrganizationAssignmentQuery,
    filter = ORGANIZATION_FILTER,
    request = OrganizationAssignmentRequest,
    list = list_organizations,
    add = add_organization,
    replace_all = replace_organizations,
    delete_all = delete_organizations,
    show = show_organization,
    replace = replace_organization,
    delete = delete_organization,
);

// Users: the seed has no replace of one user assignment.
kind_handlers!(@show kind = AssignmentKind::User, what = "users",
    item = "/api/v1/licenses/{id}/assignments/users/{assignmentId}", dto = UserAssignment,
    show = show_user);
kind_handlers!(@delete kind = AssignmentKind::User, what = "users",
    item = "/api/v1/licenses/{id}/assignments/users/{assignmentId}", delete = delete_user);

/// List a license's assignments to users.
#[utoipa::path(get, path = "/api/v1/licenses/{id}/assignments/users", tag = "licenses",
    params(("id" = LicenseRefSchema, Path, description = "License id `<subscriptionId>:<sku>`"), UserAssignmentQuery),
    responses((status = 200, body = UserAssignmentPage),
              (status = 400, description = "A parameter is invalid (the message names it)", body = ErrorBody),
              (status = 404, description = "No such license", body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn list_users(
    State(app): State<App>,
    scope: TokenScope,
    ApiPath(id): ApiPath<String>,
    RawQuery(q): RawQuery,
) -> ApiResult<Json<UserAssignmentPage>> {
    let (items, pagination, links) =
        list::<UserAssignment>(&app, &scope, &id, &USER_FILTER, q.as_deref())?;
    Ok(Json(UserAssignmentPage {
        items,
        pagination,
        links,
    }))
}

/// Add a license assignment to a user.
#[utoipa::path(post, path = "/api/v1/licenses/{id}/assignments/users", tag = "licenses",
    params(("id" = LicenseRefSchema, Path, description = "License id `<subscriptionId>:<sku>`")),
    request_body = UserAssignmentRequest,
    responses((status = 201, body = AssignmentCreated),
              (status = 404, description = "No such license", body = ErrorBody),
              (status = 409, description = "The assignment exists", body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn add_user(
    State(app): State<App>,
    scope: TokenScope,
    ApiPath(id): ApiPath<String>,
    ApiJson(req): ApiJson<UserAssignmentRequest>,
) -> ApiResult<(StatusCode, Json<AssignmentCreated>)> {
    let assignment = put(&app, &scope, &id, req, PutMode::Add, None).await?;
    Ok(created(&id, AssignmentKind::User, assignment))
}

/// Replace a license's assignments to users.
#[utoipa::path(put, path = "/api/v1/licenses/{id}/assignments/users", tag = "licenses",
    params(("id" = LicenseRefSchema, Path, description = "License id `<subscriptionId>:<sku>`")),
    request_body = Vec<UserAssignmentRequest>,
    responses((status = 200, body = UserAssignmentPage),
              (status = 404, description = "No such license", body = ErrorBody),
              (status = 422, description = "A user is listed twice", body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn replace_users(
    State(app): State<App>,
    scope: TokenScope,
    ApiPath(id): ApiPath<String>,
    ApiJson(reqs): ApiJson<Vec<UserAssignmentRequest>>,
) -> ApiResult<Json<UserAssignmentPage>> {
    replace_all(&app, &scope, &id, AssignmentKind::User, reqs).await?;
    let (items, pagination, links) = list::<UserAssignment>(&app, &scope, &id, &USER_FILTER, None)?;
    Ok(Json(UserAssignmentPage {
        items,
        pagination,
        links,
    }))
}

/// Delete a license's assignments to users.
#[utoipa::path(delete, path = "/api/v1/licenses/{id}/assignments/users", tag = "licenses",
    params(("id" = LicenseRefSchema, Path, description = "License id `<subscriptionId>:<sku>`")),
    responses((status = 204, description = "Removed"),
              (status = 400, description = "The license id is malformed", body = ErrorBody),
              (status = 404, description = "No such license", body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn delete_users(
    State(app): State<App>,
    scope: TokenScope,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<StatusCode> {
    remove_all(&app, &scope, &id, AssignmentKind::User).await
}

// Site: one per license; the seed shows it without an assignment id, replaces and deletes it
// with one.
kind_handlers!(@replace kind = AssignmentKind::Site, what = "a site",
    item = "/api/v1/licenses/{id}/assignments/site/{assignmentId}", dto = SiteAssignment,
    request = SiteAssignmentRequest, replace = replace_site);
kind_handlers!(@delete kind = AssignmentKind::Site, what = "a site",
    item = "/api/v1/licenses/{id}/assignments/site/{assignmentId}", delete = delete_site);

/// Show a license's site assignment (404 when it has none).
#[utoipa::path(get, path = "/api/v1/licenses/{id}/assignments/site", tag = "licenses",
    params(("id" = LicenseRefSchema, Path, description = "License id `<subscriptionId>:<sku>`")),
    responses((status = 200, body = SiteAssignment),
              (status = 400, description = "The license id is malformed", body = ErrorBody),
              (status = 404, description = "No such license, or it has no site assignment", body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn show_site(
    State(app): State<App>,
    scope: TokenScope,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Json<SiteAssignment>> {
    let (all, service) = views(&app, &scope, &id, AssignmentKind::Site)?;
    all.first()
        .map(|a| Json(SiteAssignment::from_view(a, &service)))
        .ok_or_else(|| ApiError::not_found(format!("license {id} has no site assignment")))
}

/// Add the license's site assignment (409 when it has one).
#[utoipa::path(post, path = "/api/v1/licenses/{id}/assignments/site", tag = "licenses",
    params(("id" = LicenseRefSchema, Path, description = "License id `<subscriptionId>:<sku>`")),
    request_body = SiteAssignmentRequest,
    responses((status = 201, body = AssignmentCreated),
              (status = 404, description = "No such license", body = ErrorBody),
              (status = 409, description = "The license has a site assignment", body = ErrorBody),
              (status = 422, description = "The organization does not exist or may not use the license", body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn add_site(
    State(app): State<App>,
    scope: TokenScope,
    ApiPath(id): ApiPath<String>,
    ApiJson(req): ApiJson<SiteAssignmentRequest>,
) -> ApiResult<(StatusCode, Json<AssignmentCreated>)> {
    let assignment = put(&app, &scope, &id, req, PutMode::Add, None).await?;
    Ok(created(&id, AssignmentKind::Site, assignment))
}

fn placement(app: &App, scope: &TokenScope, t: &str, d: &str) -> ApiResult<Placement> {
    let key = (tenant_id(t)?, device_id(d)?);
    let found = if scope.sees(&key.0) {
        app.stub()
            .with_engine(|e| e.state().devices.get(&key).map(|d| d.datacenter.clone()))?
    } else {
        None
    };
    let datacenter =
        found.ok_or_else(|| EngineError::UnknownDevice(key.0.clone(), key.1.clone()))?;
    Ok(Placement {
        customer_id: key.0.to_string(),
        computer_id: key.1.to_string(),
        datacenter_id: datacenter,
    })
}

async fn set_placement(
    app: &App,
    scope: &TokenScope,
    t: &str,
    d: &str,
    datacenter: Option<String>,
) -> ApiResult<Placement> {
    placement(app, scope, t, d)?;
    let key = (tenant_id(t)?, device_id(d)?);
    app.stub()
        .apply(move |e, now| Ok(((), e.place_device(&key, datacenter, now)?)))
        .await?;
    placement(app, scope, t, d)
}

/// Where a host is placed.
#[utoipa::path(get, path = "/api/v1/devices/{tenant}/{device}/datacenter", tag = "devices",
    params(("tenant" = Id, Path, description = "Tenant id"),
           ("device" = Id, Path, description = "Device id")),
    responses((status = 200, body = Placement),
              (status = 400, description = "An id is not an id", body = ErrorBody),
              (status = 404, description = "No such device", body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn show_placement(
    State(app): State<App>,
    scope: TokenScope,
    ApiPath((t, d)): ApiPath<(String, String)>,
) -> ApiResult<Json<Placement>> {
    Ok(Json(placement(&app, &scope, &t, &d)?))
}

/// Place a host in a datacenter: datacenter assignments with VM use rights cover it.
#[utoipa::path(put, path = "/api/v1/devices/{tenant}/{device}/datacenter", tag = "devices",
    params(("tenant" = Id, Path, description = "Tenant id"),
           ("device" = Id, Path, description = "Device id")),
    request_body = PlacementRequest,
    responses((status = 200, body = Placement),
              (status = 404, description = "No such device", body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn place(
    State(app): State<App>,
    scope: TokenScope,
    ApiPath((t, d)): ApiPath<(String, String)>,
    ApiJson(req): ApiJson<PlacementRequest>,
) -> ApiResult<Json<Placement>> {
    plain_id("datacenterId", &req.datacenter_id)?;
    Ok(Json(
        set_placement(&app, &scope, &t, &d, Some(req.datacenter_id)).await?,
    ))
}

/// Take a host out of its datacenter.
#[utoipa::path(delete, path = "/api/v1/devices/{tenant}/{device}/datacenter", tag = "devices",
    params(("tenant" = Id, Path, description = "Tenant id"),
           ("device" = Id, Path, description = "Device id")),
    responses((status = 200, body = Placement),
              (status = 400, description = "An id is not an id", body = ErrorBody),
              (status = 404, description = "No such device", body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn unplace(
    State(app): State<App>,
    scope: TokenScope,
    ApiPath((t, d)): ApiPath<(String, String)>,
) -> ApiResult<Json<Placement>> {
    Ok(Json(set_placement(&app, &scope, &t, &d, None).await?))
}

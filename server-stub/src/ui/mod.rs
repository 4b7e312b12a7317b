//! The operator dashboard at `/ui` on the admin server (issue 22): customers, devices with
//! each service's state, subscriptions with seats, compliance and paused services, a live
//! event feed (Server-Sent Events), a device page with a "run diagnostics" button, and the
//! operator actions the API allows (enable / unassign auto-licensing, reissue a bundle).
//!
//! Everything is served from the binary: HTML rendered here ([`pages`], escaped by `maud`),
//! one small script and one stylesheet compiled in. Sign-in exchanges an admin-API token for a
//! session ([`session`]): read tokens see, admin tokens act. Forms carry a per-session CSRF
//! token on top of the `SameSite=Strict` cookie, and every page is sent with a
//! Content-Security-Policy that allows only this origin's script and style and no framing.
//! Changes go through the same [`StubHandle`](crate::StubHandle) operations as the API.

pub mod pages;
pub mod session;

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Form, Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::Router;
use licd_protocol::{DeviceId, ServiceName, TenantId};
use maud::Markup;
use serde::Deserialize;

use crate::admin::App;
use crate::engine::Selection;
use session::{Session, Sessions};

/// How long "run diagnostics" waits for the device's answer.
const DIAG_TIMEOUT: Duration = Duration::from_secs(20);

/// Sent with every page: this origin's script and style only, no inline code, no framing.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; \
                   img-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

#[derive(Debug)]
struct Ui {
    app: App,
    sessions: Sessions,
}

type Shared = State<Arc<Ui>>;

/// The dashboard's routes, to be nested at `/ui` in the admin server.
pub fn router(app: App) -> Router {
    let ui = Arc::new(Ui {
        app,
        sessions: Sessions::default(),
    });
    Router::new()
        .route("/", get(overview))
        .route("/login", get(login_page).post(login))
        .route("/logout", post(logout))
        .route("/events", get(events))
        .route("/fragments/devices", get(devices_fragment))
        .route("/devices/{tenant}/{device}", get(device_page))
        .route("/devices/{tenant}/{device}/diag", post(run_diag))
        .route("/devices/{tenant}/{device}/reissue", post(reissue))
        .route("/auto-licensing", post(auto_licensing))
        .route("/static/app.js", get(app_js))
        .route("/static/app.css", get(app_css))
        .fallback(not_found)
        .layer(axum::middleware::map_response(security_headers))
        .with_state(ui)
}

async fn security_headers(mut resp: Response) -> Response {
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.entry(header::CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("no-store"));
    resp
}

fn page(status: StatusCode, markup: Markup) -> Response {
    (status, Html(markup.into_string())).into_response()
}

fn refused(session: Option<&Session>, status: StatusCode, title: &str, text: &str) -> Response {
    page(status, pages::message(session, title, text))
}

impl Ui {
    fn session(&self, headers: &HeaderMap) -> Option<Session> {
        self.sessions.current(&self.app.0.tokens, headers)
    }

    /// The session of a form post with a matching CSRF token (and admin rights when `admin`),
    /// or the page that refuses it.
    // The error is the response the handler returns as it is; boxing it would only add a move.
    #[allow(clippy::result_large_err)]
    fn form_session(
        &self,
        headers: &HeaderMap,
        csrf: &str,
        admin: bool,
    ) -> Result<Session, Response> {
        let Some(s) = self.session(headers) else {
            return Err(refused(
                None,
                StatusCode::UNAUTHORIZED,
                "Signed out",
                "Your session ended: sign in again.",
            ));
        };
        if !s.csrf_ok(csrf) {
            return Err(refused(
                Some(&s),
                StatusCode::FORBIDDEN,
                "Refused",
                "The form's CSRF token does not match this session: reload the page and retry.",
            ));
        }
        if admin && !s.is_admin() {
            return Err(refused(
                Some(&s),
                StatusCode::FORBIDDEN,
                "Refused",
                "This needs an admin token; you signed in with a read token.",
            ));
        }
        Ok(s)
    }
}

fn to_login() -> Response {
    Redirect::to("/ui/login").into_response()
}

fn internal(session: Option<&Session>, e: impl std::fmt::Display) -> Response {
    tracing::error!(error = %e, "dashboard request failed");
    refused(
        session,
        StatusCode::INTERNAL_SERVER_ERROR,
        "Error",
        &format!("The controller could not answer: {e}"),
    )
}

async fn not_found(State(ui): Shared, headers: HeaderMap) -> Response {
    let s = ui.session(&headers);
    refused(
        s.as_ref(),
        StatusCode::NOT_FOUND,
        "Not found",
        "No such page.",
    )
}

async fn app_js() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
        pages::APP_JS,
    )
}

async fn app_css() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/css; charset=utf-8")],
        pages::APP_CSS,
    )
}

async fn login_page(State(ui): Shared, headers: HeaderMap) -> Response {
    if ui.session(&headers).is_some() {
        return Redirect::to("/ui/").into_response();
    }
    page(StatusCode::OK, pages::login(None))
}

#[derive(Deserialize)]
struct LoginForm {
    token: String,
}

async fn login(State(ui): Shared, Form(form): Form<LoginForm>) -> Response {
    // The dashboard shows every tenant's devices: the MSP's tokens only (tenant-scoped tokens
    // use the admin API, which filters by their scope).
    if let Ok(Some(p)) = ui.app.0.tokens.verify(form.token.trim()) {
        if let Some(t) = p.tenant {
            return page(
                StatusCode::FORBIDDEN,
                pages::login(Some(&format!(
                    "This token is scoped to customer {t}; the dashboard is for the MSP's tokens. \
                     Use the admin API or the CLI with it."
                ))),
            );
        }
    }
    match ui.sessions.sign_in(&ui.app.0.tokens, &form.token) {
        Some((id, s)) => {
            tracing::info!(token = %s.principal.name, kind = s.principal.kind.as_str(), "dashboard sign-in");
            (
                [(header::SET_COOKIE, session::set_cookie(&id))],
                Redirect::to("/ui/"),
            )
                .into_response()
        }
        None => page(
            StatusCode::UNAUTHORIZED,
            pages::login(Some(
                "Unknown or revoked token. Make one with `licd-stub token create`.",
            )),
        ),
    }
}

#[derive(Deserialize)]
struct CsrfForm {
    #[serde(default)]
    csrf: String,
}

async fn logout(State(ui): Shared, headers: HeaderMap, Form(form): Form<CsrfForm>) -> Response {
    if let Err(r) = ui.form_session(&headers, &form.csrf, false) {
        return r;
    }
    ui.sessions.sign_out(&headers);
    (
        [(header::SET_COOKIE, session::clear_cookie())],
        Redirect::to("/ui/login"),
    )
        .into_response()
}

/// The devices table: each device with its outlook, the controller's broker link, and when
/// the table changes next by time alone.
fn device_table(app: &App) -> Result<pages::DeviceTable, crate::StubError> {
    let stub = app.stub();
    let now = stub.now();
    // One read of the engine: the seats and the outlooks agree.
    let rows = stub.with_engine(|e| {
        e.device_views(None)
            .into_iter()
            .map(|view| {
                let outlook = e
                    .outlook(&view.tenant, &view.device, now)
                    .unwrap_or_default();
                pages::DeviceRow { view, outlook }
            })
            .collect::<Vec<_>>()
    })?;
    let next = rows.iter().filter_map(|r| r.outlook.next_change).min();
    Ok(pages::DeviceTable {
        rows,
        linked: stub.is_connected(),
        refresh_in: next.map(|t| t.saturating_sub(now)),
    })
}

fn gather(app: &App) -> Result<pages::Overview, crate::StubError> {
    let stub = app.stub();
    let now = stub.now();
    let (customers, policies, compliance) = stub.with_engine(|e| {
        let customers: Vec<_> = e.state().customers.values().cloned().collect();
        let policies = e
            .state()
            .policies
            .iter()
            .map(|(s, p)| {
                if p.paused {
                    format!("{s} (paused)")
                } else {
                    s.to_string()
                }
            })
            .collect();
        let compliance = customers
            .iter()
            .filter_map(|c| e.compliance(&c.id, now).ok())
            .collect();
        (customers, policies, compliance)
    })?;
    Ok(pages::Overview {
        customers,
        devices: device_table(app)?,
        subscriptions: stub.subscriptions()?,
        compliance,
        policies,
    })
}

async fn overview(State(ui): Shared, headers: HeaderMap) -> Response {
    let Some(s) = ui.session(&headers) else {
        return to_login();
    };
    match gather(&ui.app) {
        Ok(o) => page(StatusCode::OK, pages::overview(&s, &o)),
        Err(e) => internal(Some(&s), e),
    }
}

async fn devices_fragment(State(ui): Shared, headers: HeaderMap) -> Response {
    if ui.session(&headers).is_none() {
        return StatusCode::UNAUTHORIZED.into_response();
    }
    match device_table(&ui.app) {
        Ok(d) => Html(pages::devices_fragment(&d).into_string()).into_response(),
        Err(e) => internal(None, e),
    }
}

/// Parses the path's ids; `None` when either is not a valid id (a 404: no such device).
fn ids(tenant: &str, device: &str) -> Option<(TenantId, DeviceId)> {
    Some((TenantId::new(tenant).ok()?, DeviceId::new(device).ok()?))
}

async fn show_device(
    ui: &Ui,
    s: &Session,
    tenant: &str,
    device: &str,
    diag: Option<Result<String, String>>,
) -> Response {
    let Some((t, d)) = ids(tenant, device) else {
        return refused(
            Some(s),
            StatusCode::NOT_FOUND,
            "Not found",
            "No such device.",
        );
    };
    let stub = ui.app.stub();
    let now = stub.now();
    let found = stub.with_engine(|e| {
        e.device_view(&t, &d).map(|view| pages::DeviceRow {
            view,
            outlook: e.outlook(&t, &d, now).unwrap_or_default(),
        })
    });
    match found {
        Ok(Some(row)) => page(StatusCode::OK, pages::device(s, &row, diag)),
        Ok(None) => refused(
            Some(s),
            StatusCode::NOT_FOUND,
            "Not found",
            "No such device.",
        ),
        Err(e) => internal(Some(s), e),
    }
}

async fn device_page(
    State(ui): Shared,
    headers: HeaderMap,
    Path((tenant, device)): Path<(String, String)>,
) -> Response {
    let Some(s) = ui.session(&headers) else {
        return to_login();
    };
    show_device(&ui, &s, &tenant, &device, None).await
}

/// Runs remote diagnostics (allowed to read tokens: it changes nothing on the controller, and
/// the device answers at most once a minute) and shows the device page with the answer.
async fn run_diag(
    State(ui): Shared,
    headers: HeaderMap,
    Path((tenant, device)): Path<(String, String)>,
    Form(form): Form<CsrfForm>,
) -> Response {
    let s = match ui.form_session(&headers, &form.csrf, false) {
        Ok(s) => s,
        Err(r) => return r,
    };
    let Some((t, d)) = ids(&tenant, &device) else {
        return refused(
            Some(&s),
            StatusCode::NOT_FOUND,
            "Not found",
            "No such device.",
        );
    };
    let result = match ui.app.stub().request_diag(&t, &d, DIAG_TIMEOUT).await {
        Ok(r) => Ok(serde_json::from_str::<serde_json::Value>(&r.report)
            .ok()
            .and_then(|v| serde_json::to_string_pretty(&v).ok())
            .unwrap_or(r.report)),
        Err(e) => Err(e.to_string()),
    };
    ui.app.stub().events().device(
        "operator",
        t.as_str(),
        d.as_str(),
        format!(
            "diagnostics requested by {}: {}",
            s.principal.name,
            if result.is_ok() {
                "answered"
            } else {
                "no answer"
            }
        ),
    );
    show_device(&ui, &s, &tenant, &device, Some(result)).await
}

/// Why a form action did not happen: the status and the line the refusal page shows.
struct Refusal(StatusCode, String);

impl Refusal {
    fn no_such_device() -> Self {
        Self(StatusCode::NOT_FOUND, "No such device.".into())
    }

    /// The controller refused the change (bad selection, unknown device, ledger error).
    fn unprocessable(e: impl std::fmt::Display) -> Self {
        Self(StatusCode::UNPROCESSABLE_ENTITY, e.to_string())
    }

    fn bad_request(text: String) -> Self {
        Self(StatusCode::BAD_REQUEST, text)
    }
}

/// The shape of every dashboard action that changes something: check the session, the
/// form's CSRF token and admin rights, run `action` as that session, then redirect to the
/// path it returns (post/redirect/get: a reload does not post again) or show its refusal.
async fn form_action<F, Fut>(ui: &Ui, headers: &HeaderMap, csrf: &str, action: F) -> Response
where
    F: FnOnce(Session) -> Fut,
    Fut: std::future::Future<Output = Result<String, Refusal>>,
{
    let s = match ui.form_session(headers, csrf, true) {
        Ok(s) => s,
        Err(r) => return r,
    };
    match action(s.clone()).await {
        Ok(to) => Redirect::to(&to).into_response(),
        Err(Refusal(status, text)) => {
            let title = if status == StatusCode::NOT_FOUND {
                "Not found"
            } else {
                "Refused"
            };
            refused(Some(&s), status, title, &text)
        }
    }
}

async fn reissue(
    State(ui): Shared,
    headers: HeaderMap,
    Path((tenant, device)): Path<(String, String)>,
    Form(form): Form<CsrfForm>,
) -> Response {
    let stub = ui.app.stub();
    form_action(&ui, &headers, &form.csrf, |s| async move {
        let (t, d) = ids(&tenant, &device).ok_or_else(Refusal::no_such_device)?;
        stub.reissue(&t, &d).await.map_err(Refusal::unprocessable)?;
        tracing::info!(token = %s.principal.name, %t, %d, "dashboard: bundle reissued");
        Ok(format!("/ui/devices/{t}/{d}"))
    })
    .await
}

#[derive(Deserialize)]
struct AutoLicensingForm {
    #[serde(default)]
    csrf: String,
    action: String,
    service: String,
    #[serde(default)]
    customer: String,
}

async fn auto_licensing(
    State(ui): Shared,
    headers: HeaderMap,
    Form(form): Form<AutoLicensingForm>,
) -> Response {
    let stub = ui.app.stub();
    form_action(&ui, &headers, &form.csrf, |s| async move {
        let service = ServiceName::new(form.service.trim())
            .map_err(|e| Refusal::bad_request(format!("service: {e}")))?;
        let (selection, whom) = match form.customer.trim() {
            "" => (Selection::all(), "all customers".to_string()),
            c => {
                let t = TenantId::new(c)
                    .map_err(|e| Refusal::bad_request(format!("customer: {e}")))?;
                (Selection::only([t]), c.to_string())
            }
        };
        let services = std::slice::from_ref(&service);
        match form.action.as_str() {
            "enable" => stub
                .enable_auto_licensing(&selection, services, false)
                .await
                .map(drop),
            "unassign" => stub.unassign(&selection, services).await,
            other => return Err(Refusal::bad_request(format!("unknown action {other:?}"))),
        }
        .map_err(Refusal::unprocessable)?;
        tracing::info!(token = %s.principal.name, action = %form.action, %service, customers = %whom, "dashboard: auto-licensing");
        stub.events().send(crate::events::StubEvent {
            kind: "operator",
            tenant: None,
            device: None,
            text: format!("{} {service} for {whom} by {}", form.action, s.principal.name),
        });
        Ok("/ui/".to_string())
    })
    .await
}

/// The live feed: one SSE message per [`crate::events::StubEvent`], JSON; a listener that
/// fell behind gets a `lagged` message saying how many it missed.
async fn events(State(ui): Shared, headers: HeaderMap) -> Response {
    if ui.session(&headers).is_none() {
        return StatusCode::UNAUTHORIZED.into_response();
    }
    let rx = ui.app.stub().events().subscribe();
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        use tokio::sync::broadcast::error::RecvError;
        let data = match rx.recv().await {
            Ok(e) => serde_json::to_string(&e).unwrap_or_default(),
            Err(RecvError::Lagged(n)) => serde_json::json!({
                "kind": "lagged", "text": format!("{n} events missed")
            })
            .to_string(),
            Err(RecvError::Closed) => return None,
        };
        Some((Ok::<_, Infallible>(Event::default().data(data)), rx))
    });
    Sse::new(stream)
        .keep_alive(KeepAlive::default())
        .into_response()
}

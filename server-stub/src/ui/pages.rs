//! The dashboard's HTML, rendered on the server with `maud`: every value interpolated into a
//! page is escaped by the template engine (device ids, models and serials come from devices,
//! names from operators), and the only script is `/ui/static/app.js`, which writes event text
//! with `textContent`. Elements carry `data-*` attributes and ids so tests (and scripts) can
//! find a device's row and a service's state without parsing prose.

use licd_core::status::fmt_time;
use maud::{html, Markup, DOCTYPE};

use super::session::Session;
use crate::engine::compliance::ComplianceReport;
use crate::engine::model::{Customer, CustomerKind, SubscriptionStatus};
use crate::engine::outlook::Outlook;
use crate::engine::views::{DeviceView, ServiceState, SubscriptionView};
use licd_core::enforce::ServiceState as ExpectedState;

/// Everything the overview shows.
#[derive(Debug)]
pub struct Overview {
    /// Customers.
    pub customers: Vec<Customer>,
    /// Devices.
    pub devices: DeviceTable,
    /// Subscriptions with seats.
    pub subscriptions: Vec<SubscriptionView>,
    /// Compliance of each customer.
    pub compliance: Vec<ComplianceReport>,
    /// Services with an auto-licensing policy.
    pub policies: Vec<String>,
}

/// A device with what it is expected to make of its newest bundle.
#[derive(Debug)]
pub struct DeviceRow {
    /// The controller's view.
    pub view: DeviceView,
    /// The device's expected states.
    pub outlook: Outlook,
}

/// The devices table (the overview's, and the fragment the page re-fetches).
#[derive(Debug)]
pub struct DeviceTable {
    /// The devices.
    pub rows: Vec<DeviceRow>,
    /// The controller's MQTT session is connected and subscribed.
    pub linked: bool,
    /// Seconds until an expected state changes by time alone (the page refreshes the table
    /// then: a lease running out sends no message).
    pub refresh_in: Option<u64>,
}

fn layout(title: &str, session: Option<&Session>, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · licd-stub" }
                link rel="stylesheet" href="/ui/static/app.css";
                script src="/ui/static/app.js" defer {}
            }
            body {
                header {
                    a.brand href="/ui/" { "licd-stub" }
                    @if let Some(s) = session {
                        nav {
                            a href="/ui/#customers" { "Customers" }
                            a href="/ui/#devices" { "Devices" }
                            a href="/ui/#subscriptions" { "Subscriptions" }
                            a href="/ui/#compliance" { "Compliance" }
                        }
                        span.who {
                            "signed in as " strong #"who" { (s.principal.name) }
                            " (" span #"rights" { (s.principal.kind.as_str()) } ")"
                        }
                        form.inline method="post" action="/ui/logout" {
                            (csrf(s))
                            button type="submit" { "Sign out" }
                        }
                    }
                }
                main { (body) }
            }
        }
    }
}

fn csrf(s: &Session) -> Markup {
    html! { input type="hidden" name="csrf" value=(s.csrf); }
}

/// The sign-in page, with an error line when a token was refused.
pub fn login(error: Option<&str>) -> Markup {
    layout(
        "Sign in",
        None,
        html! {
            h1 { "Sign in" }
            p { "Paste an admin API token (" code { "licd-stub token create" } "). "
                "Read tokens see everything; admin tokens can also act." }
            @if let Some(e) = error { p.error #"login-error" { (e) } }
            form #"login" method="post" action="/ui/login" {
                label for="token" { "Token" }
                input #"token" type="password" name="token" autocomplete="off" required;
                button #"sign-in" type="submit" { "Sign in" }
            }
        },
    )
}

/// A page saying why a request was refused.
pub fn message(session: Option<&Session>, title: &str, text: &str) -> Markup {
    layout(
        title,
        session,
        html! { h1 { (title) } p.error #"message" { (text) } p { a href="/ui/" { "Back" } } },
    )
}

fn service_badge(service: &str, state: &ServiceState) -> Markup {
    let (class, label) = match state {
        ServiceState::Granted {
            over_vm_allowance: true,
            ..
        } => ("warn", "granted, over VM allowance".to_string()),
        ServiceState::Granted { sku, .. } => ("ok", format!("granted ({sku})")),
        ServiceState::Withheld { reason } => ("bad", format!("withheld: {}", reason_name(*reason))),
    };
    let (state_name, reason) = match state {
        ServiceState::Granted { .. } => ("granted", None),
        ServiceState::Withheld { reason } => ("withheld", Some(reason_name(*reason))),
    };
    html! {
        span class={"badge " (class)} data-service=(service) data-state=(state_name) data-reason=[reason] {
            strong { (service) } " " (label)
        }
    }
}

fn reason_name(r: licd_protocol::WithheldReason) -> &'static str {
    use licd_protocol::WithheldReason as W;
    match r {
        W::NotEntitled => "not_entitled",
        W::SeatsExhausted => "seats_exhausted",
        W::Unassigned => "unassigned",
        W::UnknownTenant => "unknown_tenant",
    }
}

fn device_href(d: &DeviceView) -> String {
    // Ids are [A-Za-z0-9._-]: nothing to percent-encode; maud escapes the attribute anyway.
    format!("/ui/devices/{}/{}", d.tenant, d.device)
}

fn outlook_badges(o: &Outlook) -> Markup {
    html! {
        @for (service, state) in &o.services {
            @let class = match state {
                ExpectedState::Licensed { .. } => "ok",
                // Advisory policy: runs past grace, shown as a warning (issue 20).
                ExpectedState::Grace { .. } | ExpectedState::NonCompliant { .. } => "warn",
                ExpectedState::Unlicensed { .. } => "bad",
            };
            span class={"badge " (class)} data-service=(service) data-expected=(state.name()) {
                strong { (service) } " " (state.name())
                @if let Some(r) = state.reason() { " (" (r.name()) ")" }
                @if let Some(until) = state.until() { " until " (fmt_time(until)) }
            }
        }
        @if o.services.is_empty() { span.hint { "nothing granted" } }
    }
}

fn device_rows(t: &DeviceTable) -> Markup {
    html! {
        @if t.linked {
            p.link.ok #"broker-link" data-connected="true" { "Controller's broker link: connected." }
        } @else {
            p.link.bad #"broker-link" data-connected="false" {
                "Controller's broker link: down. Reports go unheard and leases are not renewed: "
                "devices fall into grace when their lease ends."
            }
        }
        table #"devices-table" data-refresh-in=[t.refresh_in] {
            thead { tr { th { "Tenant" } th { "Device" } th { "Model" } th { "Class" }
                th { "Last report" } th { "Bundle seq (held)" } th { "Seats (controller)" }
                th { "On the device (expected)" } } }
            tbody {
                @for row in &t.rows {
                    @let d = &row.view;
                    tr data-device={(d.tenant) "/" (d.device)} {
                        td { (d.tenant) }
                        td { a href=(device_href(d)) { (d.device) } }
                        td { (d.model) }
                        td { (d.product_class) }
                        td { (fmt_time(d.last_report_at)) }
                        td { (d.bundle_seq) " (" (d.reported_seq) ")" }
                        td.services {
                            @for (service, state) in &d.services {
                                (service_badge(service.as_str(), state))
                            }
                        }
                        td.expected { (outlook_badges(&row.outlook)) }
                    }
                }
            }
        }
    }
}

fn status_name(s: SubscriptionStatus) -> &'static str {
    match s {
        SubscriptionStatus::Unclaimed => "unclaimed",
        SubscriptionStatus::Inactive => "inactive",
        SubscriptionStatus::Active => "active",
        SubscriptionStatus::Expired => "expired",
    }
}

/// The overview: customers, devices, subscriptions, compliance, actions, live events.
pub fn overview(session: &Session, o: &Overview) -> Markup {
    layout(
        "Overview",
        Some(session),
        html! {
            section #"customers" {
                h2 { "Customers" }
                table { thead { tr { th { "Id" } th { "Name" } th { "Kind" } th { "Devices" } } }
                    tbody { @for c in &o.customers {
                        tr data-customer=(c.id) {
                            td { (c.id) } td { (c.name) }
                            td { @match c.kind { CustomerKind::Msp => "MSP", CustomerKind::Tenant => "tenant" } }
                            td { (o.devices.rows.iter().filter(|r| r.view.tenant == c.id).count()) }
                        }
                    } }
                }
            }
            section #"devices" {
                h2 { "Devices" }
                p.hint { "Each service as the controller last granted or withheld it; the row updates as reports and bundles come in." }
                div #"devices-live" { (device_rows(&o.devices)) }
            }
            section #"subscriptions" {
                h2 { "Subscriptions" }
                table { thead { tr { th { "Id" } th { "Name" } th { "Owner" } th { "Status" } th { "Term" }
                        th { "SKU" } th { "Assigned" } th { "Reserved" } th { "Available" } th { "Limit" } } }
                    tbody { @for s in &o.subscriptions { @for e in &s.entitlements {
                        tr data-seats={(s.id) ":" (e.sku)} {
                            td { (s.id) } td { (s.name) }
                            td { @if let Some(owner) = &s.owner { (owner) } @else { "—" } }
                            td { (status_name(s.status)) }
                            td { (fmt_time(s.start)) " – " (fmt_time(s.end)) }
                            td { (e.sku) }
                            td.assigned { (e.seats.assigned) }
                            // Reserved by site delegations (issue 23).
                            td.reserved { (e.seats.reserved) }
                            td.available { (e.seats.available) }
                            td.limit { (e.seats.limit) }
                        }
                    } } }
                }
            }
            section #"compliance" {
                h2 { "Compliance" }
                table { thead { tr { th { "Customer" } th { "Compliant" } th { "Paused services" }
                        th { "Violations" } th { "VM over-use" } } }
                    tbody { @for c in &o.compliance {
                        tr data-compliance=(c.customer) {
                            td { (c.customer) }
                            td { @if c.compliant { span.badge.ok { "yes" } } @else { span.badge.bad { "no" } } }
                            td { @for s in &c.paused_services { span.badge.warn { (s) } " " } }
                            td { @for v in &c.violations {
                                (v.product_class) ": grace ends " (fmt_time(v.grace_period_ends_at)) "; "
                            } }
                            td { @for v in &c.vm_overuse { (v.device) " (" (v.vm_count) " VMs) " } }
                        }
                    } }
                }
            }
            section #"actions" {
                h2 { "Auto-licensing" }
                p { "Policies: " @if o.policies.is_empty() { "none" } @else { (o.policies.join(", ")) } }
                @if session.is_admin() {
                    form #"auto-licensing" method="post" action="/ui/auto-licensing" {
                        (csrf(session))
                        label for="al-service" { "Service" }
                        input #"al-service" name="service" required pattern="[A-Za-z0-9._-]{1,64}";
                        label for="al-customer" { "Customer" }
                        select #"al-customer" name="customer" {
                            option value="" { "all customers" }
                            @for c in &o.customers { option value=(c.id) { (c.id) } }
                        }
                        button #"al-enable" type="submit" name="action" value="enable" { "Enable" }
                        button #"al-unassign" type="submit" name="action" value="unassign" { "Unassign" }
                    }
                } @else {
                    p.hint { "Signed in with a read token: actions need an admin token." }
                }
            }
            section #"events-section" {
                h2 { "Live events" }
                ul #"events" data-source="/ui/events" {}
            }
        },
    )
}

/// The devices table alone (what the overview's script re-fetches when events arrive).
pub fn devices_fragment(devices: &DeviceTable) -> Markup {
    device_rows(devices)
}

/// One device: its last report as the ledger holds it, its bundle, its services, actions and
/// (after a run) its diagnostic report.
pub fn device(session: &Session, row: &DeviceRow, diag: Option<Result<String, String>>) -> Markup {
    let d = &row.view;
    layout(
        d.device.as_str(),
        Some(session),
        html! {
            h1 { "Device " span #"device-id" { (d.device) } " of " (d.tenant) }
            table.facts #"device-facts" {
                tr { th { "Model" } td { (d.model) } }
                tr { th { "Serial" } td { (d.serial) } }
                tr { th { "Product class" } td { (d.product_class) } }
                tr { th { "Device key" } td { code { (d.key) } } }
                tr { th { "VMs (last report)" } td { @if let Some(n) = d.vm_count { (n) } @else { "—" } } }
                tr { th { "Last report" } td { (fmt_time(d.last_report_at)) } }
                tr { th { "Newest bundle issued" } td #"bundle-seq" { "seq " (d.bundle_seq) } }
                tr { th { "Bundle the device holds" } td { "seq " (d.reported_seq) } }
                @if d.unknown_tenant { tr { th { "Tenant" } td.error { "not a known customer" } } }
            }
            h2 { "Services" }
            div.services #"device-services" data-device={(d.tenant) "/" (d.device)} {
                @for (service, state) in &d.services { (service_badge(service.as_str(), state)) }
            }
            h2 { "On the device (expected)" }
            p.hint { "What the device makes of the newest bundle issued to it, by the device's own rules: "
                "licensed until the lease or term ends, then grace." }
            div.services #"device-expected" { (outlook_badges(&row.outlook)) }
            h2 { "Actions" }
            @let base = device_href(d);
            form.inline #"run-diag" method="post" action={(base) "/diag"} {
                (csrf(session))
                button #"run-diag-button" type="submit" { "Run diagnostics" }
            }
            @if session.is_admin() {
                form.inline #"reissue" method="post" action={(base) "/reissue"} {
                    (csrf(session))
                    button #"reissue-button" type="submit" { "Reissue bundle" }
                }
            }
            @if let Some(result) = diag {
                h2 { "Diagnostics" }
                @match result {
                    Ok(report) => pre #"diag-result" { (report) },
                    Err(e) => p.error #"diag-error" { (e) },
                }
            }
        },
    )
}

/// The static files, compiled in (no CDN, no build step).
pub const APP_JS: &str = include_str!("static/app.js");
/// See [`APP_JS`].
pub const APP_CSS: &str = include_str!("static/app.css");

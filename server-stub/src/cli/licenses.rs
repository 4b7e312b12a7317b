//! `licenses`: Snow-style licenses and assignments, seat counts in bulk.

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use licd_stub::admin::dto::{
    Assignment, AssignmentCreated, AssignmentSummary, AssignmentType, BulkUpdateRequest,
    BulkUpdateResponse, ComputerAssignment, ComputerAssignmentRequest, DatacenterAssignment,
    DatacenterAssignmentRequest, License, LicenseUpdate, OrganizationAssignment,
    OrganizationAssignmentRequest, Placement, PlacementRequest, Scope, SiteAssignment,
    SiteAssignmentRequest, UserAssignment, UserAssignmentRequest,
};
use serde_json::Value;

use super::client::Client;
use super::table::{print_table, s};
use super::{output, qs};

/// `licenses`.
#[derive(Debug, Args)]
pub struct Licenses {
    #[command(subcommand)]
    cmd: Option<LicensesCmd>,
}

#[derive(Debug, Subcommand)]
enum LicensesCmd {
    /// List licenses: seats per subscription and SKU (the default).
    List {
        /// Snow filter, e.g. 'sku -eq "LIC-AP"'.
        #[arg(long)]
        filter: Option<String>,
    },
    /// List assignments of licenses to devices.
    Assignments {
        /// Only this license (`<subscription>:<sku>`).
        #[arg(long)]
        license: Option<String>,
        /// Snow filter, e.g. 'customerId -eq "acme"'.
        #[arg(long)]
        filter: Option<String>,
    },
    /// Set the seat count of licenses: --only IDS, --all-except IDS, or --all.
    SetSeats {
        /// New seat count.
        quantity: u32,
        /// Only these license ids.
        #[arg(long, value_delimiter = ',', conflicts_with_all = ["all_except", "all"])]
        only: Vec<String>,
        /// Every license but these.
        #[arg(long, value_delimiter = ',', conflicts_with = "all")]
        all_except: Vec<String>,
        /// Every license.
        #[arg(long)]
        all: bool,
        /// Narrow with a Snow filter.
        #[arg(long)]
        filter: Option<String>,
    },
    /// List a license's assignments of one kind (Snow; `site` shows its one assignment).
    Assigned {
        /// License (`<subscription>:<sku>`).
        license: String,
        /// computers, datacenters, organizations, site or users.
        kind: Kind,
        /// Snow filter, e.g. 'isAutoAllocated -eq "false"'.
        #[arg(long)]
        filter: Option<String>,
    },
    /// Assign a license to one computer, datacenter, organization, site or user.
    Assign {
        /// License (`<subscription>:<sku>`).
        license: String,
        #[command(flatten)]
        target: TargetArgs,
        /// Seats (computers, datacenters) or quantity allocated (organizations); default 1.
        #[arg(long)]
        quantity: Option<u32>,
        /// A virtual machine id the assignment names (computers, datacenters; repeat).
        #[arg(long = "vm")]
        vms: Vec<String>,
        /// Replace the existing assignment instead of adding one.
        #[arg(long)]
        replace: bool,
    },
    /// Remove one assignment (a computer's: the device loses the service), or with --all
    /// KIND every assignment of that kind.
    Unassign {
        /// License (`<subscription>:<sku>`).
        license: String,
        #[command(flatten)]
        target: TargetArgs,
    },
    /// Replace all of a license's assignments of a kind with TARGET[=QUANTITY]... (none:
    /// remove them all).
    SetAssignments {
        /// License (`<subscription>:<sku>`).
        license: String,
        /// computers, datacenters, organizations, site or users.
        kind: Kind,
        /// `ID` or `ID=QUANTITY` (computers: `<tenant>:<device>`).
        targets: Vec<String>,
    },
    /// Which kinds of assignment a license has.
    Summary {
        /// License (`<subscription>:<sku>`).
        license: String,
    },
    /// The assignment types.
    AssignmentTypes,
    /// Place a host in a datacenter (datacenter assignments with VM use rights cover it), or
    /// with --none take it out.
    Place {
        /// Tenant.
        tenant: String,
        /// Device.
        device: String,
        /// Datacenter id.
        #[arg(long, required_unless_present = "none", conflicts_with = "none")]
        datacenter: Option<String>,
        /// Take the host out of its datacenter.
        #[arg(long)]
        none: bool,
    },
}

/// The kinds of Snow assignment, as the API's path names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Kind {
    Computers,
    Datacenters,
    Organizations,
    Site,
    Users,
}

impl Kind {
    fn segment(self) -> &'static str {
        match self {
            Kind::Computers => "computers",
            Kind::Datacenters => "datacenters",
            Kind::Organizations => "organizations",
            Kind::Site => "site",
            Kind::Users => "users",
        }
    }
}

/// One assignment target: exactly one of these.
#[derive(Debug, Args)]
#[group(required = true, multiple = false)]
struct TargetArgs {
    /// A device: `<tenant>:<device>`.
    #[arg(long)]
    computer: Option<String>,
    /// A datacenter id.
    #[arg(long)]
    datacenter: Option<String>,
    /// An organization (customer) id.
    #[arg(long)]
    organization: Option<String>,
    /// The site, by organization id.
    #[arg(long)]
    site: Option<String>,
    /// A user id.
    #[arg(long)]
    user: Option<String>,
    /// Every assignment of this kind (unassign only).
    #[arg(long)]
    all: Option<Kind>,
}

impl TargetArgs {
    fn kind_and_id(&self) -> (Kind, Option<&str>) {
        let pick = [
            (Kind::Computers, &self.computer),
            (Kind::Datacenters, &self.datacenter),
            (Kind::Organizations, &self.organization),
            (Kind::Site, &self.site),
            (Kind::Users, &self.user),
        ];
        for (k, v) in pick {
            if let Some(v) = v {
                return (k, Some(v.as_str()));
            }
        }
        (self.all.unwrap_or(Kind::Computers), None)
    }
}

fn base(license: &str, kind: Kind) -> String {
    format!("/api/v1/licenses/{license}/assignments/{}", kind.segment())
}

/// The request body of one assignment of `kind` (what the admin API takes).
fn body(kind: Kind, id: &str, quantity: Option<u32>, vms: &[String]) -> Result<Value> {
    let vms = (!vms.is_empty()).then(|| vms.to_vec());
    let v = match kind {
        Kind::Computers => serde_json::to_value(ComputerAssignmentRequest {
            computer_id: id.into(),
            quantity,
            virtual_machines: vms,
        }),
        Kind::Datacenters => serde_json::to_value(DatacenterAssignmentRequest {
            datacenter_id: id.into(),
            quantity,
            virtual_machines: vms,
        }),
        Kind::Organizations => serde_json::to_value(OrganizationAssignmentRequest {
            organization_id: id.into(),
            quantity,
        }),
        Kind::Site | Kind::Users if quantity.is_some() || vms.is_some() => {
            bail!("--quantity and --vm are for computers, datacenters and organizations")
        }
        Kind::Site => serde_json::to_value(SiteAssignmentRequest {
            organization_id: id.into(),
        }),
        Kind::Users => serde_json::to_value(UserAssignmentRequest { user_id: id.into() }),
    };
    Ok(v?)
}

fn print_assigned(kind: Kind, v: Value) -> Result<()> {
    let items = match kind {
        Kind::Site => vec![v],
        _ => v["items"].as_array().cloned().unwrap_or_default(),
    };
    let rows: Vec<Vec<String>> = match kind {
        Kind::Computers => decode_all::<ComputerAssignment>(items)?
            .iter()
            .map(|a| {
                vec![
                    s(&a.id),
                    s(&a.quantity),
                    s(&a.number_of_supported_virtual_machines),
                    s(&a.is_auto_allocated),
                    a.invalid_assignment_reasons.join(","),
                ]
            })
            .collect(),
        Kind::Datacenters => decode_all::<DatacenterAssignment>(items)?
            .iter()
            .map(|a| {
                vec![
                    s(&a.id),
                    s(&a.quantity),
                    s(&a.number_of_supported_virtual_machines),
                    a.covered_computers.join(","),
                    a.invalid_assignment_reasons.join(","),
                ]
            })
            .collect(),
        Kind::Organizations => decode_all::<OrganizationAssignment>(items)?
            .iter()
            .map(|a| {
                vec![
                    s(&a.id),
                    s(&a.quantity),
                    "-".into(),
                    "-".into(),
                    String::new(),
                ]
            })
            .collect(),
        Kind::Site => decode_all::<SiteAssignment>(items)?
            .iter()
            .map(|a| {
                vec![
                    s(&a.id),
                    s(&a.quantity),
                    "-".into(),
                    "-".into(),
                    String::new(),
                ]
            })
            .collect(),
        Kind::Users => decode_all::<UserAssignment>(items)?
            .iter()
            .map(|a| {
                vec![
                    s(&a.id),
                    s(&a.quantity),
                    "-".into(),
                    "-".into(),
                    a.invalid_assignment_reasons.join(","),
                ]
            })
            .collect(),
    };
    let fourth = if kind == Kind::Datacenters {
        "HOSTS"
    } else {
        "AUTO"
    };
    print_table(&["ID", "QUANTITY", "VMS", fourth, "INVALID"], rows);
    Ok(())
}

fn decode_all<T: serde::de::DeserializeOwned>(items: Vec<Value>) -> Result<Vec<T>> {
    items
        .into_iter()
        .map(|v| Ok(serde_json::from_value(v)?))
        .collect()
}

fn print_licenses(licenses: Vec<License>) {
    let rows = licenses
        .iter()
        .map(|l| {
            vec![
                s(&l.id),
                s(&l.service),
                s(&l.customer_id),
                format!("{}/{}", s(&l.assigned), s(&l.quantity)),
                s(&l.number_of_supported_virtual_machines),
                s(&l.status),
            ]
        })
        .collect();
    print_table(
        &["LICENSE", "SERVICE", "OWNER", "USED", "VMS/SEAT", "STATUS"],
        rows,
    );
}

fn print_assignments(assignments: Vec<Assignment>) {
    let rows = assignments
        .iter()
        .map(|a| {
            vec![
                s(&a.customer_id),
                s(&a.computer_id),
                s(&a.service),
                s(&a.license_id),
                s(&a.virtual_machines),
                s(&a.number_of_supported_virtual_machines),
                s(&a.assigned_at),
            ]
        })
        .collect();
    print_table(
        &[
            "TENANT", "DEVICE", "SERVICE", "LICENSE", "VMS", "VMS/SEAT", "SINCE",
        ],
        rows,
    );
}

pub(super) async fn run(api: Client, c: Licenses, json_out: bool) -> Result<()> {
    match c.cmd.unwrap_or(LicensesCmd::List { filter: None }) {
        LicensesCmd::List { filter } => {
            let q = filter
                .as_deref()
                .map(|f| qs(&[("filter", f)]))
                .unwrap_or_default();
            let items = api
                .get_all_numbered(&format!("/api/v1/licenses{q}"))
                .await?;
            output(Value::Array(items), json_out, print_licenses)
        }
        LicensesCmd::Assignments { license, filter } => {
            let base = match &license {
                Some(l) => format!("/api/v1/licenses/{l}/assignments"),
                None => "/api/v1/assignments".to_string(),
            };
            let q = filter
                .as_deref()
                .map(|f| qs(&[("filter", f)]))
                .unwrap_or_default();
            let items = api.get_all_numbered(&format!("{base}{q}")).await?;
            output(Value::Array(items), json_out, print_assignments)
        }
        LicensesCmd::SetSeats {
            quantity,
            only,
            all_except,
            all,
            filter,
        } => {
            let (scope, ids) = if all {
                (Scope::All, vec![])
            } else if !all_except.is_empty() {
                (Scope::AllExcept, all_except)
            } else if !only.is_empty() {
                (Scope::Only, only)
            } else {
                bail!("choose the licenses: --only IDS, --all-except IDS or --all (ids from `licd-stub licenses`)");
            };
            let req = BulkUpdateRequest {
                filter,
                scope,
                ids,
                body: LicenseUpdate { quantity },
            };
            let v = api.post("/api/v1/licenses/bulkUpdate", &req).await?;
            bulk_output(v, json_out)
        }
        LicensesCmd::Assigned {
            license,
            kind,
            filter,
        } => {
            let path = base(&license, kind);
            let v = if kind == Kind::Site {
                api.get(&path).await?
            } else {
                let q = filter
                    .as_deref()
                    .map(|f| qs(&[("filter", f)]))
                    .unwrap_or_default();
                let items = api.get_all_numbered(&format!("{path}{q}")).await?;
                serde_json::json!({ "items": items })
            };
            if json_out {
                let v = if kind == Kind::Site {
                    v
                } else {
                    v["items"].clone()
                };
                return output(v, true, |_: Value| {});
            }
            print_assigned(kind, v)
        }
        LicensesCmd::Assign {
            license,
            target,
            quantity,
            vms,
            replace,
        } => {
            let (kind, id) = target.kind_and_id();
            let Some(id) = id else {
                bail!(
                    "--all is for unassign; assign one target at a time (or use set-assignments)"
                );
            };
            let body = body(kind, id, quantity, &vms)?;
            if replace {
                let v = api
                    .put(&format!("{}/{id}", base(&license, kind)), &body)
                    .await?;
                return output(v, json_out, |_: Value| println!("replaced {id}"));
            }
            let v = api.post(&base(&license, kind), &body).await?;
            output(v, json_out, |c: AssignmentCreated| {
                println!("assigned {license} to {} {}", kind.segment(), c.id);
            })
        }
        LicensesCmd::Unassign { license, target } => {
            let (kind, id) = target.kind_and_id();
            let path = match id {
                Some(id) => format!("{}/{id}", base(&license, kind)),
                None if kind == Kind::Site => {
                    bail!("the site has one assignment: name it with --site ORGANIZATION")
                }
                None => base(&license, kind),
            };
            api.delete(&path).await?;
            if !json_out {
                match id {
                    Some(id) => println!("removed {} {id} from {license}", kind.segment()),
                    None => println!("removed every {} assignment of {license}", kind.segment()),
                }
            }
            Ok(())
        }
        LicensesCmd::SetAssignments {
            license,
            kind,
            targets,
        } => {
            let mut list = Vec::new();
            for t in &targets {
                let (id, quantity) = match t.rsplit_once('=') {
                    Some((id, q)) => {
                        let q: u32 = q
                            .parse()
                            .with_context(|| format!("{t:?}: the quantity after = is a number"))?;
                        (id, Some(q))
                    }
                    None => (t.as_str(), None),
                };
                list.push(body(kind, id, quantity, &[])?);
            }
            let v = api.put(&base(&license, kind), &list).await?;
            if json_out {
                return output(v["items"].clone(), true, |_: Value| {});
            }
            print_assigned(kind, v)
        }
        LicensesCmd::Summary { license } => {
            let v = api
                .get(&format!("/api/v1/licenses/{license}/assignments/summary"))
                .await?;
            output(v, json_out, |a: AssignmentSummary| {
                print_table(
                    &[
                        "LICENSE",
                        "COMPUTER",
                        "DATACENTER",
                        "ORGANIZATION",
                        "SITE",
                        "USER",
                    ],
                    vec![vec![
                        s(&a.license_id),
                        s(&a.has_computer_assignment),
                        s(&a.has_datacenter_assignment),
                        s(&a.has_organization_assignment),
                        s(&a.has_site_assignment),
                        s(&a.has_user_assignment),
                    ]],
                );
            })
        }
        LicensesCmd::AssignmentTypes => {
            let items = api
                .get_all_numbered("/api/v1/licenses/assignmenttypes")
                .await?;
            output(Value::Array(items), json_out, |t: Vec<AssignmentType>| {
                let rows = t
                    .iter()
                    .map(|t| vec![s(&t.id), s(&t.name), s(&t.affects_devices)])
                    .collect();
                print_table(&["ID", "NAME", "AFFECTS DEVICES"], rows);
            })
        }
        LicensesCmd::Place {
            tenant,
            device,
            datacenter,
            none: _,
        } => {
            let path = format!("/api/v1/devices/{tenant}/{device}/datacenter");
            let v = match datacenter {
                Some(dc) => {
                    api.put(&path, &PlacementRequest { datacenter_id: dc })
                        .await?
                }
                None => api.delete(&path).await?,
            };
            output(v, json_out, |p: Placement| {
                println!(
                    "{}:{} is in datacenter {}",
                    s(&p.customer_id),
                    s(&p.computer_id),
                    s(&p.datacenter_id)
                );
            })
        }
    }
}

fn bulk_output(v: Value, json_out: bool) -> Result<()> {
    output(v, json_out, |r: BulkUpdateResponse| {
        println!(
            "{} updated, {} failed",
            s(&r.success_count),
            s(&r.failed_count)
        );
        for f in &r.failed {
            println!("  {}: {}", s(&f.id), s(&f.reason));
        }
    })
}

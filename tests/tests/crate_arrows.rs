//! The crate arrows point one way (issue 17): `licd-agent` → `licd-core` → `licd-protocol`;
//! `licd-client` (with or without its cache fallback) → `licd-core`, never the daemon;
//! `licd-stub` never depends on the agent. Read from `cargo metadata`'s resolved graph, normal
//! dependencies only (dev and build dependencies do not ship), with every feature enabled
//! anywhere in the workspace turned on — the widest tree each crate can have.

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;

use serde_json::Value;

/// `package name → names of its normal dependencies` over the resolved graph.
fn normal_deps() -> BTreeMap<String, BTreeSet<String>> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = Command::new(cargo)
        .args(["metadata", "--format-version", "1", "--all-features"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("cargo metadata runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let meta: Value = serde_json::from_slice(&out.stdout).expect("cargo metadata is JSON");
    let name_of: BTreeMap<&str, &str> = meta["packages"]
        .as_array()
        .expect("packages")
        .iter()
        .map(|p| (p["id"].as_str().unwrap(), p["name"].as_str().unwrap()))
        .collect();
    let mut graph = BTreeMap::new();
    for node in meta["resolve"]["nodes"].as_array().expect("resolve.nodes") {
        let name = name_of[node["id"].as_str().unwrap()].to_string();
        let deps: BTreeSet<String> = node["deps"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|d| {
                d["dep_kinds"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|k| k["kind"].is_null())
            })
            .map(|d| name_of[d["pkg"].as_str().unwrap()].to_string())
            .collect();
        graph.entry(name).or_insert_with(BTreeSet::new).extend(deps);
    }
    graph
}

/// Every crate `root` pulls in, transitively.
fn tree(graph: &BTreeMap<String, BTreeSet<String>>, root: &str) -> BTreeSet<String> {
    let mut seen = BTreeSet::new();
    let mut todo = vec![root.to_string()];
    while let Some(p) = todo.pop() {
        for d in graph.get(&p).into_iter().flatten() {
            if seen.insert(d.clone()) {
                todo.push(d.clone());
            }
        }
    }
    seen
}

fn assert_none_of(graph: &BTreeMap<String, BTreeSet<String>>, root: &str, banned: &[&str]) {
    let t = tree(graph, root);
    let found: Vec<_> = banned.iter().filter(|b| t.contains(**b)).collect();
    assert!(
        found.is_empty(),
        "{root} pulls in {found:?} (run `cargo tree -p {root} --all-features -i <crate>` to see why)"
    );
}

#[test]
fn the_core_has_no_runtime_no_sockets_and_no_tls() {
    let g = normal_deps();
    assert_none_of(
        &g,
        "licd-core",
        &["tokio", "rustls", "rumqttc", "licd-agent", "sysinfo", "mio"],
    );
    assert!(tree(&g, "licd-core").contains("licd-protocol"));
}

#[test]
fn the_client_libraries_stand_on_the_core_not_on_the_daemon() {
    let g = normal_deps();
    for client in ["licd-client", "licd-client-ffi"] {
        assert_none_of(
            &g,
            client,
            &["tokio", "rustls", "rumqttc", "licd-agent", "sysinfo"],
        );
    }
    assert!(tree(&g, "licd-client").contains("licd-core"));
}

#[test]
fn the_agent_stands_on_the_core_and_the_stub_not_on_the_agent() {
    let g = normal_deps();
    assert!(g["licd-agent"].contains("licd-core"));
    assert!(g["licd-core"].contains("licd-protocol"));
    assert_none_of(&g, "licd-stub", &["licd-agent"]);
    assert_none_of(&g, "licd-protocol", &["licd-core", "licd-agent"]);
}

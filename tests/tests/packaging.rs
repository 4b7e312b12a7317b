//! The service files in `packaging/`: the systemd unit passes `systemd-analyze verify` (skipped
//! with a message where systemd-analyze is missing) and keeps its hardening; the OpenWrt UCI
//! renderer turns `/etc/config/licd` into a TOML config the agent loads, escapes what it must
//! and refuses what it cannot write; the procd init script parses; release builds unwind and
//! firmware builds abort on panic.

use std::path::{Path, PathBuf};
use std::process::Command;

use licd_agent::config::Settings;
use licd_tests::process::workspace_root;
use licd_tests::{licd_bin, TempState};

fn packaging() -> PathBuf {
    workspace_root().join("packaging")
}

fn have(tool: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .output()
        .is_ok_and(|o| o.status.success())
}

#[test]
fn the_systemd_unit_is_hardened_and_restarts_with_backoff() {
    let unit = std::fs::read_to_string(packaging().join("systemd/licd.service")).unwrap();
    for line in [
        "User=licd",
        "StateDirectory=licd",
        "StateDirectoryMode=0700",
        "RuntimeDirectory=licd",
        "ProtectSystem=strict",
        "NoNewPrivileges=yes",
        "ProtectHome=yes",
        "PrivateTmp=yes",
        "CapabilityBoundingSet=",
        "Restart=always",
        "RestartSteps=",
        "RestartMaxDelaySec=",
        "StartLimitIntervalSec=0",
        "ExecStart=/usr/bin/licd --config /etc/licd/licd.toml run",
    ] {
        assert!(
            unit.lines().any(|l| l.starts_with(line)),
            "missing {line:?}"
        );
    }
}

/// systemd < 254 does not know these two keys; it ignores them with a warning and keeps the
/// fixed RestartSec (docs/OPERATIONS.md says so).
const NEWER_KEYS: [&str; 2] = ["RestartSteps", "RestartMaxDelaySec"];

fn systemd_version() -> Option<u32> {
    let out = Command::new("systemd-analyze")
        .arg("--version")
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    text.split_whitespace().nth(1)?.parse().ok()
}

#[test]
fn the_systemd_unit_passes_systemd_analyze_verify() {
    if !have("systemd-analyze") {
        eprintln!(
            "SKIPPED: systemd-analyze is not installed (apt-get install systemd); \
             the unit was not verified"
        );
        return;
    }
    let version = systemd_version().unwrap_or(0);
    // verify checks that ExecStart= exists: point it at the freshly built binary.
    let dir = TempState::new("unit").unwrap();
    let unit = std::fs::read_to_string(packaging().join("systemd/licd.service"))
        .unwrap()
        .replace("/usr/bin/licd", &licd_bin().unwrap().display().to_string());
    let path = dir.write("licd.service", unit).unwrap();
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&path)
        .current_dir(dir.path())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    eprintln!("systemd {version}, systemd-analyze verify:\n{stderr}");
    let problems: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("licd.service"))
        .filter(|l| {
            !(version < 254
                && NEWER_KEYS.iter().any(|k| {
                    l.contains(&format!("Unknown key '{k}'"))
                        || l.contains(&format!("Unknown key name '{k}'"))
                }))
        })
        .collect();
    assert!(out.status.success(), "verify failed:\n{stderr}");
    assert!(
        problems.is_empty(),
        "verify complained:\n{}",
        problems.join("\n")
    );
}

/// A stand-in for OpenWrt's `/lib/functions.sh`: the four calls the renderer uses, with the
/// same semantics, over a UCI file sourced as shell (the UCI file format is shell syntax with
/// `config`, `option` and `list` as commands, which is how OpenWrt first loaded it).
const FUNCTIONS_SH: &str = r#"
CONFIG_SECTION=
config() { CONFIG_SECTION="$2"; }
option() { eval "CONFIG_${CONFIG_SECTION}_$1=\$2"; }
list() {
	eval "_n=\${CONFIG_${CONFIG_SECTION}_$1_N:-0}"
	_n=$((_n + 1))
	eval "CONFIG_${CONFIG_SECTION}_$1_N=$_n"
	eval "CONFIG_${CONFIG_SECTION}_$1_ITEM$_n=\$2"
}
config_load() { . "${UCI_CONFIG_DIR:-/etc/config}/$1"; }
config_get() { eval "$1=\${CONFIG_$2_$3:-\$4}"; }
config_get_bool() {
	config_get _b "$2" "$3" "$4"
	case "$_b" in 1|on|true|yes|enabled) eval "$1=1" ;; *) eval "$1=0" ;; esac
}
config_list_foreach() {
	eval "_ln=\${CONFIG_$1_$2_N:-0}"
	_li=1
	while [ "$_li" -le "$_ln" ]; do
		eval "_lv=\$CONFIG_$1_$2_ITEM$_li"
		"$3" "$_lv"
		_li=$((_li + 1))
	done
}
"#;

/// The shells to run the renderer with: busybox ash (what OpenWrt has) and dash when present,
/// else plain sh.
fn shells() -> Vec<Vec<String>> {
    let mut v = Vec::new();
    if have("busybox") {
        v.push(vec!["busybox".into(), "ash".into()]);
    }
    if have("dash") {
        v.push(vec!["dash".into()]);
    }
    if v.is_empty() {
        v.push(vec!["sh".into()]);
    }
    v
}

fn render(shell: &[String], dir: &Path, uci: &str) -> (bool, String, String) {
    std::fs::create_dir_all(dir.join("config")).unwrap();
    std::fs::write(dir.join("config/licd"), uci).unwrap();
    std::fs::write(dir.join("functions.sh"), FUNCTIONS_SH).unwrap();
    let out = Command::new(&shell[0])
        .args(&shell[1..])
        .arg(packaging().join("openwrt/licd-uci-render"))
        .arg("main")
        .env("LICD_FUNCTIONS", dir.join("functions.sh"))
        .env("UCI_CONFIG_DIR", dir.join("config"))
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn the_shipped_uci_file_renders_to_a_config_the_agent_loads() {
    let uci = std::fs::read_to_string(packaging().join("openwrt/licd.uci")).unwrap();
    for shell in shells() {
        let dir = TempState::new("uci").unwrap();
        let (ok, toml, err) = render(&shell, dir.path(), &uci);
        assert!(ok, "{shell:?}: {err}");
        let s = Settings::from_toml(&toml).unwrap_or_else(|e| panic!("{shell:?}: {e}\n{toml}"));
        assert_eq!(s.tenant.as_str(), "acme");
        assert_eq!(s.services.len(), 1);
        assert_eq!(s.state_dir, PathBuf::from("/etc/licd/state"));
        assert_eq!(s.broker.host, "broker.example.com");
        assert!(s.broker.tls.is_some());
        assert_eq!(s.socket, Some(PathBuf::from("/var/run/licd/licd.sock")));
        assert!(s.hook.is_empty());
        // Empty options are left to licd's defaults.
        assert!(!toml.contains("device_id"), "{toml}");
        assert!(!toml.contains("urls"), "no broker_urls, no urls: {toml}");
        assert_eq!(
            s.site, None,
            "an empty site: only the controller licenses it"
        );
    }
}

#[test]
fn uci_values_are_escaped_lists_become_arrays_and_bad_values_are_refused() {
    let root = "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a";
    let uci = format!(
        "config agent 'main'\n\
         \toption tenant 'acme'\n\
         \toption site 'plant-7'\n\
         \tlist service 'wifi-ap'\n\
         \tlist service 'poe-plus'\n\
         \tlist root '{root}'\n\
         \tlist root '{root}'\n\
         \toption broker_url 'mqtt://127.0.0.1:1883'\n\
         \tlist broker_urls 'mqtt://127.0.0.1:1884'\n\
         \tlist broker_urls 'mqtt://[::1]:1885'\n\
         \toption allow_insecure '1'\n\
         \toption keep_alive_secs '30'\n\
         \toption socket ''\n\
         \tlist hook '/usr/bin/logger'\n\
         \tlist hook 'say \"hi\" \\ there'\n\
         \toption model 'AP \"515\"'\n"
    );
    for shell in shells() {
        let dir = TempState::new("uci").unwrap();
        let (ok, toml, err) = render(&shell, dir.path(), &uci);
        assert!(ok, "{shell:?}: {err}");
        let s = Settings::from_toml(&toml).unwrap_or_else(|e| panic!("{shell:?}: {e}\n{toml}"));
        assert_eq!(s.services.len(), 2);
        assert_eq!(s.site.as_ref().map(|x| x.as_str()), Some("plant-7"));
        assert_eq!(s.roots.len(), 2);
        assert!(s.broker.tls.is_none());
        let nodes: Vec<String> = s.broker.nodes().iter().map(|n| n.to_string()).collect();
        assert_eq!(
            nodes,
            ["127.0.0.1:1883", "127.0.0.1:1884", "[::1]:1885"],
            "{toml}"
        );
        assert_eq!(s.broker.keep_alive.as_secs(), 30);
        assert_eq!(s.socket, None, "an empty socket disables it");
        assert_eq!(
            s.hook,
            vec![
                "/usr/bin/logger".to_string(),
                "say \"hi\" \\ there".to_string()
            ]
        );
        assert_eq!(s.identity.model.as_deref(), Some("AP \"515\""));

        let bad = uci.replace("'30'", "'thirty'");
        let (ok, _, err) = render(&shell, dir.path(), &bad);
        assert!(!ok && err.contains("keep_alive_secs"), "{shell:?}: {err}");
        let no_tenant = uci.replace("option tenant 'acme'", "option tenant ''");
        let (ok, _, err) = render(&shell, dir.path(), &no_tenant);
        assert!(!ok && err.contains("tenant"), "{shell:?}: {err}");
    }
}

#[test]
fn the_procd_init_script_and_the_renderer_parse() {
    for file in ["openwrt/licd.init", "openwrt/licd-uci-render"] {
        for shell in shells() {
            let out = Command::new(&shell[0])
                .args(&shell[1..])
                .arg("-n")
                .arg(packaging().join(file))
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "{shell:?} -n {file}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
    let init = std::fs::read_to_string(packaging().join("openwrt/licd.init")).unwrap();
    for needle in [
        "USE_PROCD=1",
        "procd_set_param respawn",
        "procd_add_reload_trigger licd",
        "licd-uci-render",
    ] {
        assert!(init.contains(needle), "missing {needle}");
    }
}

fn toml_file(path: &Path) -> toml::Table {
    let text = std::fs::read_to_string(path).unwrap();
    toml::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Issue 16: `--release` (the stub controller, liblicd, `cargo run --release`) unwinds, so a
/// panic becomes a 500 or `LICD_ERR_INTERNAL` instead of the end of the process; `firmware`
/// (the agent on a device) is release with panics that abort, and cross/ builds with it.
/// cross/ci.sh asks cargo the same question (`--unit-graph`), environment overrides included.
#[test]
fn release_builds_unwind_and_firmware_builds_abort() {
    let root = workspace_root();
    let manifest = toml_file(&root.join("Cargo.toml"));
    let profile = |name: &str| manifest["profile"][name].as_table().cloned().unwrap();
    let panic_of = |t: &toml::Table| t.get("panic").and_then(|v| v.as_str()).map(str::to_owned);

    let release = profile("release");
    assert!(
        matches!(panic_of(&release).as_deref(), None | Some("unwind")),
        "[profile.release] must unwind: {release:?}"
    );
    let firmware = profile("firmware");
    assert_eq!(firmware["inherits"].as_str(), Some("release"));
    assert_eq!(panic_of(&firmware).as_deref(), Some("abort"));
    let config = toml_file(&root.join(".cargo/config.toml"));
    assert!(
        config.get("profile").is_none(),
        ".cargo/config.toml must leave the profiles to Cargo.toml"
    );

    let lib = std::fs::read_to_string(root.join("cross/lib.sh")).unwrap();
    assert!(lib.contains("FIRMWARE_PROFILE=firmware"));
    assert!(lib.contains(r#"--profile "$FIRMWARE_PROFILE""#));
    for entry in std::fs::read_dir(root.join("cross")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "sh") {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        let agent_builds = text
            .lines()
            .filter(|l| !l.trim_start().starts_with('#') && l.contains("licd-agent"));
        for line in agent_builds {
            assert!(
                !line.contains("--release"),
                "{}: the agent's firmware builds use --profile firmware, not --release: {line}",
                path.display()
            );
        }
    }
}

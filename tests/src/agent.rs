//! A real `licd` daemon under test: its config written from [`AgentOptions`], its state in a
//! [`TempState`], and helpers that ask it over its unix socket (the same JSON lines any local
//! process uses) or run `licd check` like a user.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use serde_json::{json, Value};

use crate::process::{licd_bin, spawn_licd, TestProcess};
use crate::state::TempState;
use crate::wait::wait_for;
use crate::{HarnessError, Result};

/// What goes into the agent's config.
#[derive(Debug, Clone)]
pub struct AgentOptions {
    /// Broker URL (`mqtt://…` gets `allow_insecure = true`).
    pub broker_url: String,
    /// CA file for `mqtts://`.
    pub ca_file: Option<PathBuf>,
    /// Client certificate and key for mutual TLS.
    pub client_cert: Option<(PathBuf, PathBuf)>,
    /// Tenant.
    pub tenant: String,
    /// Device id.
    pub device_id: String,
    /// Wanted services.
    pub services: Vec<String>,
    /// Pinned roots (hex).
    pub roots: Vec<String>,
    /// Extra TOML appended at the end (e.g. a `[vm]` table).
    pub extra: String,
    /// `site = …` (site relays, issue 23); `None`: no site.
    pub site: Option<String>,
    /// `log.level` (default `debug,rumqttc=info`; tests that count log lines use `info`).
    pub log_level: String,
}

impl AgentOptions {
    /// Options for a plain-TCP broker on 127.0.0.1:`port`.
    pub fn plain(port: u16, root_hex: &str) -> Self {
        Self {
            broker_url: format!("mqtt://127.0.0.1:{port}"),
            ca_file: None,
            client_cert: None,
            tenant: "acme".into(),
            device_id: "ap-1".into(),
            services: vec!["wifi".into()],
            roots: vec![root_hex.into()],
            extra: String::new(),
            site: None,
            log_level: "debug,rumqttc=info".into(),
        }
    }

    fn render(&self, state: &TempState) -> String {
        let list = |v: &[String]| {
            v.iter()
                .map(|s| format!("{s:?}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let mut broker = format!(
            "url = {:?}\nreconnect_max_secs = 2\nkeep_alive_secs = 5\n",
            self.broker_url
        );
        if self.broker_url.starts_with("mqtt://") {
            broker.push_str("allow_insecure = true\n");
        }
        if let Some(ca) = &self.ca_file {
            broker.push_str(&format!("ca_file = {:?}\n", ca.display().to_string()));
        }
        if let Some((cert, key)) = &self.client_cert {
            broker.push_str(&format!(
                "client_cert = {:?}\nclient_key = {:?}\n",
                cert.display().to_string(),
                key.display().to_string()
            ));
        }
        let site = self
            .site
            .as_ref()
            .map(|s| format!("site = {s:?}\n"))
            .unwrap_or_default();
        format!(
            "{site}tenant = {:?}\nservices = [{}]\nstate_dir = {:?}\nroots = [{}]\n\n[broker]\n{broker}\n\
             [api]\nsocket = {:?}\n\n[log]\nlevel = {:?}\n\n[identity]\ndevice_id = {:?}\n\
             model = \"AP-TEST\"\nserial = \"SN-TEST\"\nproduct_class = \"wireless\"\n\n{}\n",
            self.tenant,
            list(&self.services),
            state.join("state").display().to_string(),
            list(&self.roots),
            state.join("licd.sock").display().to_string(),
            self.log_level,
            self.device_id,
            self.extra,
        )
    }
}

/// `licd/v1/{tenant}/{device}/{kind}` for test ids (panics on an invalid id: a test bug).
pub fn topic(tenant: &str, device: &str, kind: licd_protocol::TopicKind) -> String {
    licd_protocol::Topic::new(
        &tenant.parse().expect("valid tenant id"),
        &device.parse().expect("valid device id"),
        kind,
    )
    .to_topic_string()
}

/// The grants topic of the default test agent ([`AgentOptions::plain`]: `acme`/`ap-1`).
pub fn grants_topic() -> String {
    topic("acme", "ap-1", licd_protocol::TopicKind::Grants)
}

/// A running agent.
pub struct Agent {
    /// Its directory (config, state, socket, log).
    pub state: TempState,
    options: AgentOptions,
    process: Option<TestProcess>,
}

impl Agent {
    /// Writes the config and starts `licd run`.
    pub fn start(options: &AgentOptions) -> Result<Self> {
        let state = TempState::new("agent")?;
        state.write("licd.toml", options.render(&state))?;
        let mut agent = Self {
            state,
            options: options.clone(),
            process: None,
        };
        agent.spawn()?;
        Ok(agent)
    }

    fn spawn(&mut self) -> Result<()> {
        let config = self.config_path();
        let config = config.display().to_string();
        self.process = Some(spawn_licd(&self.state, &["--config", &config, "run"])?);
        Ok(())
    }

    /// The options it was started with.
    pub fn options(&self) -> &AgentOptions {
        &self.options
    }

    /// Its grants topic (`licd/v1/{tenant}/{device}/grants`).
    pub fn grants_topic(&self) -> String {
        topic(
            &self.options.tenant,
            &self.options.device_id,
            licd_protocol::TopicKind::Grants,
        )
    }

    /// The config file.
    pub fn config_path(&self) -> PathBuf {
        self.state.join("licd.toml")
    }

    /// The state directory.
    pub fn state_dir(&self) -> PathBuf {
        self.state.join("state")
    }

    /// The agent's log so far.
    pub fn log(&self) -> String {
        crate::state::read_lossy(&self.state.join("licd.log"))
    }

    /// Stops the agent cleanly (SIGTERM) and returns whether it exited 0.
    pub fn stop(&mut self) -> Result<bool> {
        match self.process.take() {
            Some(mut p) => Ok(p.terminate(Duration::from_secs(10))?.success()),
            None => Ok(true),
        }
    }

    /// Kills the agent (SIGKILL).
    pub fn kill(&mut self) -> Result<()> {
        if let Some(mut p) = self.process.take() {
            p.kill()?;
        }
        Ok(())
    }

    /// Starts the agent again with the same config and state.
    pub fn restart(&mut self) -> Result<()> {
        self.stop()?;
        self.spawn()
    }

    /// One request over the socket; `None` when the daemon does not answer.
    pub fn query(&self, request: &Value) -> Option<Value> {
        let mut s = UnixStream::connect(self.state.join("licd.sock")).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
        let mut line = serde_json::to_vec(request).ok()?;
        line.push(b'\n');
        s.write_all(&line).ok()?;
        let mut answer = String::new();
        BufReader::new(s).read_line(&mut answer).ok()?;
        serde_json::from_str(&answer).ok()
    }

    /// The daemon's `check` answer for `service`.
    pub fn check(&self, service: &str) -> Option<Value> {
        self.query(&json!({"v": 1, "op": "check", "service": service}))
    }

    /// The daemon's status document.
    pub fn status(&self) -> Option<Value> {
        self.query(&json!({"v": 1, "op": "status"}))
            .map(|v| v["status"].clone())
    }

    /// The state name (`licensed`, `grace`, `unlicensed`) the daemon reports for `service`.
    pub fn state_of(&self, service: &str) -> Option<String> {
        self.check(service)
            .and_then(|v| v["state"].as_str().map(str::to_owned))
    }

    /// Waits until `service` is in `state`, failing with the agent's log.
    pub fn wait_state(&self, service: &str, state: &str, timeout: Duration) -> Result<()> {
        wait_for(&format!("{service} to be {state}"), timeout, || {
            self.state_of(service).as_deref() == Some(state)
        })
        .map_err(|e| HarnessError::Timeout {
            what: format!(
                "{e}; last answer {:?}\n--- agent log ---\n{}",
                self.check(service),
                self.log()
            ),
            after: timeout,
        })
    }

    /// Runs `licd --config <this agent's config> ARGS…` as a user would: exit code, stdout,
    /// stderr.
    pub fn cli(&self, args: &[&str]) -> Result<(i32, String, String)> {
        let out = Command::new(licd_bin()?)
            .arg("--config")
            .arg(self.config_path())
            .args(args)
            .output()
            .map_err(|e| HarnessError::io("run licd", e))?;
        Ok((
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        ))
    }

    /// Runs `licd check SERVICE --json` as a user would; returns the exit code and the JSON.
    pub fn check_cli(&self, service: &str, extra: &[&str]) -> Result<(i32, Value)> {
        let args: Vec<&str> = ["check", service, "--json"]
            .into_iter()
            .chain(extra.iter().copied())
            .collect();
        let (code, stdout, _) = self.cli(&args)?;
        Ok((code, serde_json::from_str(&stdout).unwrap_or(Value::Null)))
    }
}

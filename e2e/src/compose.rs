//! A docker compose project: started from a compose file under a unique project name, torn
//! down with its volumes and network when dropped. Works with the compose plugin
//! (`docker compose`) and with the standalone `docker-compose`, whichever is installed.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;

use crate::docker::{self, KEEP_ENV, LOG_TAIL_LINES};
use flotilla_testkit::command::Cmd;
use flotilla_testkit::progress;
use flotilla_testkit::{Error, Result};

/// The compose command line here: `["docker", "compose"]` or `["docker-compose"]`.
pub fn command() -> Result<Vec<String>> {
    static DETECTED: OnceLock<Result<Vec<String>, String>> = OnceLock::new();
    DETECTED
        .get_or_init(detect)
        .clone()
        .map_err(Error::Unavailable)
}

fn detect() -> Result<Vec<String>, String> {
    let candidates: [&[&str]; 2] = [&["docker", "compose"], &["docker-compose"]];
    let mut tried = Vec::new();
    for candidate in candidates {
        let (program, rest) = candidate.split_first().unwrap_or((&"docker-compose", &[]));
        let probe = Cmd::new(*program)
            .args(rest.iter().copied())
            .arg("version")
            .timeout(Duration::from_secs(20));
        match probe.output() {
            Ok(version) => {
                let first = version.lines().next().unwrap_or_default().to_string();
                progress(format!("using `{}` ({first})", candidate.join(" ")));
                return Ok(candidate.iter().map(|s| s.to_string()).collect());
            }
            Err(e) => tried.push(format!("{}: {e}", candidate.join(" "))),
        }
    }
    Err(format!(
        "neither the compose plugin nor docker-compose works: {}",
        tried.join("; ")
    ))
}

/// A compose project. Created before `up` so that whatever `up` made is removed on drop, even
/// when `up` fails half way.
#[derive(Debug)]
pub struct Project {
    name: String,
    file: PathBuf,
    env: Vec<(String, String)>,
    base: Vec<String>,
}

impl Project {
    /// A project `name` over `file`, with `env` set for every compose command (the variables
    /// the compose file reads). Nothing is started yet.
    pub fn new(name: &str, file: &Path, env: Vec<(String, String)>) -> Result<Project> {
        Ok(Project {
            name: name.to_string(),
            file: file.to_path_buf(),
            env,
            base: command()?,
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    fn compose(&self) -> Cmd {
        let (program, rest) = self
            .base
            .split_first()
            .map(|(p, r)| (p.clone(), r.to_vec()))
            .unwrap_or_else(|| ("docker-compose".into(), Vec::new()));
        Cmd::new(program)
            .args(rest)
            .args(["--project-name", self.name.as_str(), "--file"])
            .arg(self.file.display().to_string())
            .envs(&self.env)
            .timeout(Duration::from_secs(120))
    }

    /// `up -d`: creates and starts every service, showing compose's output.
    pub fn up(&self) -> Result<()> {
        progress(format!("compose project {}: up -d", self.name));
        self.compose()
            .args(["up", "-d", "--no-build"])
            .timeout(Duration::from_secs(300))
            .run_visible()
    }

    /// `stop`: stops every service gracefully (SIGTERM, then SIGKILL after 30 seconds).
    pub fn stop(&self) -> Result<()> {
        progress(format!("compose project {}: stop", self.name));
        self.compose()
            .args(["stop", "--timeout", "30"])
            .run_visible()
    }

    /// `start`: starts the stopped services again, with their volumes.
    pub fn start(&self) -> Result<()> {
        progress(format!("compose project {}: start", self.name));
        self.compose().arg("start").run_visible()
    }

    /// The id of the (only) container of `service`, running or not.
    pub fn container(&self, service: &str) -> Result<String> {
        let out = self.compose().args(["ps", "-a", "-q", service]).output()?;
        let ids: Vec<&str> = out
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .collect();
        match ids.as_slice() {
            [id] => Ok(id.to_string()),
            _ => Err(Error::Parse(format!(
                "expected one container of service {service} in project {}, got {out:?}",
                self.name
            ))),
        }
    }

    /// The host address of `service`'s published `port`.
    pub fn published_port(&self, service: &str, port: u16) -> Result<SocketAddr> {
        docker::published_port(&self.container(service)?, port)
    }

    /// `(health, state)` of `service`'s container: see [`docker::health`].
    pub fn health(&self, service: &str) -> Result<(String, String)> {
        docker::health(&self.container(service)?)
    }

    /// The last lines of every service's log.
    pub fn logs_tail(&self) -> String {
        self.compose()
            .args(["logs", "--no-color", "--tail", &LOG_TAIL_LINES.to_string()])
            .output_and_errors()
            .unwrap_or_else(|e| format!("(no logs: {e})"))
    }

    /// `down --volumes --remove-orphans`: removes containers, network and volumes.
    pub fn down(&self) -> Result<()> {
        self.compose()
            .args(["down", "--volumes", "--remove-orphans", "--timeout", "1"])
            .output_and_errors()
            .map(drop)
    }
}

impl Drop for Project {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "---- last {LOG_TAIL_LINES} log lines of every service of {} ----\n{}",
                self.name,
                self.logs_tail()
            );
        }
        if docker::keep() {
            progress(format!(
                "keeping compose project {} ({KEEP_ENV}=1)",
                self.name
            ));
            return;
        }
        match self.down() {
            Ok(()) => progress(format!(
                "compose project {}: containers, network and volumes removed",
                self.name
            )),
            Err(e) => eprintln!(
                "warning: could not tear down compose project {}: {e}",
                self.name
            ),
        }
    }
}

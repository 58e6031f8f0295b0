//! The docker command line: whether the engine is reachable, one container with a guard that
//! removes it, published ports, health, logs.

use std::net::SocketAddr;
use std::time::Duration;

use flotilla_testkit::command::Cmd;
use flotilla_testkit::progress;
use flotilla_testkit::{Error, Result};

/// Label of every container [`Container::run`] starts, to find leftovers of killed runs
/// (`docker ps -a --filter label=dev.flotilla.e2e=1`).
pub const LABEL: &str = "dev.flotilla.e2e=1";

/// Set to `1` to keep containers, volumes and networks after a test, for inspection.
pub const KEEP_ENV: &str = "FLOTILLA_E2E_KEEP";

/// Lines of container logs printed when a test fails.
pub const LOG_TAIL_LINES: usize = 40;

/// A `docker` command line.
pub fn docker() -> Cmd {
    Cmd::new("docker").timeout(Duration::from_secs(60))
}

/// Whether the harness should leave what it created behind (see [`KEEP_ENV`]).
pub fn keep() -> bool {
    std::env::var(KEEP_ENV).is_ok_and(|v| v == "1")
}

/// Checks that the docker CLI is installed and its engine answers; returns the engine version.
pub fn available() -> Result<String> {
    docker()
        .args(["version", "--format", "{{.Server.Version}}"])
        .timeout(Duration::from_secs(20))
        .output()
        .map_err(|e| Error::Unavailable(format!("docker is not usable here: {e}")))
}

/// The host address a container's `port` (TCP) is published on, preferring IPv4.
pub fn published_port(container: &str, port: u16) -> Result<SocketAddr> {
    let out = docker()
        .args(["port", container, &format!("{port}/tcp")])
        .output()?;
    let addrs: Vec<SocketAddr> = out
        .lines()
        .filter_map(|line| line.trim().parse().ok())
        .collect();
    addrs
        .iter()
        .find(|a| a.is_ipv4())
        .or_else(|| addrs.first())
        .copied()
        .ok_or_else(|| {
            Error::Parse(format!(
                "no published address of {container}:{port} in {out:?}"
            ))
        })
}

/// The container's health (`healthy`, `starting`, `unhealthy`, or `none` without a
/// healthcheck) and state (`running`, `exited`, ...), e.g. `("healthy", "running")`.
pub fn health(container: &str) -> Result<(String, String)> {
    let out = docker()
        .args([
            "inspect",
            "--format",
            "{{if .State.Health}}{{.State.Health.Status}}{{else}}none{{end}} {{.State.Status}}",
            container,
        ])
        .output()?;
    let mut words = out.split_whitespace();
    match (words.next(), words.next()) {
        (Some(health), Some(state)) => Ok((health.to_string(), state.to_string())),
        _ => Err(Error::Parse(format!("docker inspect {container}: {out:?}"))),
    }
}

/// `docker kill` (SIGKILL) a container.
pub fn kill(container: &str) -> Result<()> {
    docker().args(["kill", container]).output().map(drop)
}

/// `docker start` a stopped container.
pub fn start(container: &str) -> Result<()> {
    docker().args(["start", container]).output().map(drop)
}

/// Runs a command in a running container and returns its output.
pub fn exec(container: &str, command: &[&str]) -> Result<String> {
    docker()
        .args(["exec", container])
        .args(command.iter().copied())
        .output()
}

/// The last `lines` lines of a container's log (stdout and stderr), or why there are none.
pub fn logs_tail(container: &str, lines: usize) -> String {
    // The node logs to stderr: both streams are wanted.
    docker()
        .args(["logs", "--tail", &lines.to_string(), container])
        .output_and_errors()
        .unwrap_or_else(|e| format!("(no logs: {e})"))
}

/// One value of `docker image inspect --format FORMAT IMAGE`.
pub fn image_inspect(image: &str, format: &str) -> Result<String> {
    docker()
        .args(["image", "inspect", "--format", format, image])
        .output()
}

/// A container started by [`Container::run`]; dropping it removes the container and its
/// anonymous volumes (after printing its log tail when the test is failing).
#[derive(Debug)]
pub struct Container {
    name: String,
}

impl Container {
    /// `docker run -d --name NAME --label dev.flotilla.e2e=1 OPTIONS IMAGE ARGS`.
    pub fn run(name: &str, options: &[&str], image: &str, args: &[&str]) -> Result<Container> {
        // The guard exists before the container does: a half-made container is removed too.
        let container = Container {
            name: name.to_string(),
        };
        docker()
            .args(["run", "-d", "--name", name, "--label", LABEL])
            .args(options.iter().copied())
            .arg(image)
            .args(args.iter().copied())
            .output()?;
        progress(format!("container {name} started from {image}"));
        Ok(container)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// See [`published_port`].
    pub fn published_port(&self, port: u16) -> Result<SocketAddr> {
        published_port(&self.name, port)
    }

    /// See [`health`].
    pub fn health(&self) -> Result<(String, String)> {
        health(&self.name)
    }

    /// See [`exec`].
    pub fn exec(&self, command: &[&str]) -> Result<String> {
        exec(&self.name, command)
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "---- last {LOG_TAIL_LINES} log lines of {} ----\n{}",
                self.name,
                logs_tail(&self.name, LOG_TAIL_LINES)
            );
        }
        if keep() {
            progress(format!("keeping container {} ({KEEP_ENV}=1)", self.name));
            return;
        }
        match docker().args(["rm", "-f", "-v", &self.name]).output() {
            Ok(_) => progress(format!("container {} removed", self.name)),
            Err(e) => eprintln!("warning: could not remove container {}: {e}", self.name),
        }
    }
}

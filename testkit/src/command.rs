//! Running external commands (`ip`, docker, compose, the build script) with a deadline: output
//! captured, or passed through so that a long build shows its progress.

use std::io::Read;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use crate::error::{Error, Result};

/// How often a running command is checked for completion.
const POLL: Duration = Duration::from_millis(20);

/// A command line to run, with its environment and deadline.
#[derive(Debug, Clone)]
pub struct Cmd {
    program: String,
    args: Vec<String>,
    env: Vec<(String, String)>,
    dir: Option<PathBuf>,
    timeout: Duration,
}

impl Cmd {
    /// `program` with no arguments and a 2-minute deadline.
    pub fn new(program: impl Into<String>) -> Self {
        Cmd {
            program: program.into(),
            args: Vec::new(),
            env: Vec::new(),
            dir: None,
            timeout: Duration::from_secs(120),
        }
    }

    pub fn arg(mut self, arg: impl Into<String>) -> Self {
        self.args.push(arg.into());
        self
    }

    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }

    pub fn env(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.env.push((key.into(), value.into()));
        self
    }

    pub fn envs(mut self, vars: &[(String, String)]) -> Self {
        self.env.extend(vars.iter().cloned());
        self
    }

    pub fn current_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.dir = Some(dir.into());
        self
    }

    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The command line, for messages.
    pub fn display(&self) -> String {
        std::iter::once(self.program.as_str())
            .chain(self.args.iter().map(String::as_str))
            .collect::<Vec<_>>()
            .join(" ")
    }

    fn command(&self) -> Command {
        let mut command = Command::new(&self.program);
        command.args(&self.args).stdin(Stdio::null());
        for (k, v) in &self.env {
            command.env(k, v);
        }
        if let Some(dir) = &self.dir {
            command.current_dir(dir);
        }
        // Its own process group, so that a timeout stops everything it started.
        command.process_group(0);
        command
    }

    /// Runs the command and returns its standard output, trimmed. A non-zero exit is an
    /// [`Error::Command`] carrying its standard error.
    pub fn output(&self) -> Result<String> {
        let (stdout, _) = self.capture()?;
        Ok(stdout.trim().to_string())
    }

    /// Runs the command and returns its standard output followed by its standard error.
    pub fn output_and_errors(&self) -> Result<String> {
        let (stdout, stderr) = self.capture()?;
        Ok(format!("{stdout}{stderr}").trim_end().to_string())
    }

    fn capture(&self) -> Result<(String, String)> {
        let mut command = self.command();
        command.stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = self.spawn(&mut command)?;
        let stdout = drain(child.stdout.take());
        let stderr = drain(child.stderr.take());
        let status = self.wait(&mut child)?;
        let stdout = stdout.join().unwrap_or_default();
        let stderr = stderr.join().unwrap_or_default();
        if status.success() {
            Ok((stdout, stderr))
        } else {
            Err(Error::Command {
                command: self.display(),
                status: status.to_string(),
                stderr: stderr.trim().to_string(),
            })
        }
    }

    /// Runs the command with its output passed through to this process's standard error (so
    /// that progress is seen as it happens).
    pub fn run_visible(&self) -> Result<()> {
        let mut command = self.command();
        command
            .stdout(Stdio::from(std::io::stderr()))
            .stderr(Stdio::inherit());
        let mut child = self.spawn(&mut command)?;
        let status = self.wait(&mut child)?;
        if status.success() {
            Ok(())
        } else {
            Err(Error::Command {
                command: self.display(),
                status: status.to_string(),
                stderr: "(see the output above)".into(),
            })
        }
    }

    fn spawn(&self, command: &mut Command) -> Result<Child> {
        command.spawn().map_err(|source| Error::Spawn {
            command: self.display(),
            source,
        })
    }

    /// Waits for the child until the deadline; past it, kills its whole process group.
    fn wait(&self, child: &mut Child) -> Result<ExitStatus> {
        let deadline = Instant::now() + self.timeout;
        loop {
            match child.try_wait() {
                Ok(Some(status)) => return Ok(status),
                Ok(None) if Instant::now() < deadline => thread::sleep(POLL),
                Ok(None) => {
                    kill_group(child);
                    return Err(Error::CommandTimeout {
                        command: self.display(),
                        timeout: self.timeout,
                    });
                }
                Err(source) => {
                    kill_group(child);
                    return Err(Error::Spawn {
                        command: self.display(),
                        source,
                    });
                }
            }
        }
    }
}

/// Reads a pipe to its end on a thread of its own (so that a full pipe never blocks the child).
fn drain<R: Read + Send + 'static>(pipe: Option<R>) -> thread::JoinHandle<String> {
    thread::spawn(move || {
        let mut bytes = Vec::new();
        if let Some(mut pipe) = pipe {
            let _ = pipe.read_to_end(&mut bytes);
        }
        String::from_utf8_lossy(&bytes).into_owned()
    })
}

/// SIGKILL to the child's process group (it leads one: see [`Cmd::command`]), then reaps it.
fn kill_group(child: &mut Child) {
    let group = format!("-{}", child.id());
    let _ = Command::new("kill")
        .args(["-KILL", "--", &group])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    let _ = child.kill();
    let _ = child.wait();
}

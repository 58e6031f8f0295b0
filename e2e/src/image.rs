//! Building the container image with `deploy/build-image.sh`, once per test process.

use std::sync::Mutex;
use std::time::Duration;

use flotilla_testkit::command::Cmd;
use flotilla_testkit::{Error, Result};
use flotilla_testkit::{progress, repo_root};

/// Whether `deploy/base-image.sh` may pull the base image (see the script).
const PULL_ENV: &str = "FLOTILLA_BASE_PULL";

/// A cold debug build of the node on a small machine takes a while.
const BUILD_TIMEOUT: Duration = Duration::from_secs(45 * 60);

/// Cargo profile the binaries in the image are built with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Profile {
    Debug,
    Release,
}

impl Profile {
    fn as_str(self) -> &'static str {
        match self {
            Profile::Debug => "debug",
            Profile::Release => "release",
        }
    }
}

/// Runs `deploy/build-image.sh --profile PROFILE --tag TAG` with its progress shown. The
/// script skips what is already done, and only one build runs at a time in this process
/// (the script itself serialises builds across processes); a tag already built by this
/// process is not built again. The base image is never pulled unless `FLOTILLA_BASE_PULL`
/// says so: it is made with debootstrap from a Debian mirror when missing.
pub fn build(profile: Profile, tag: &str) -> Result<()> {
    static BUILT: Mutex<Vec<String>> = Mutex::new(Vec::new());
    let mut built = BUILT
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let key = format!("{}:{tag}", profile.as_str());
    if built.contains(&key) {
        return Ok(());
    }
    let script = repo_root().join("deploy/build-image.sh");
    if !script.is_file() {
        return Err(Error::Unavailable(format!(
            "{} is missing",
            script.display()
        )));
    }
    progress(format!(
        "building image {tag} ({} binaries) with {}",
        profile.as_str(),
        script.display()
    ));
    let start = std::time::Instant::now();
    let mut cmd = Cmd::new("bash")
        .arg(script.display().to_string())
        .args(["--profile", profile.as_str(), "--tag", tag])
        .current_dir(repo_root());
    // Tests talk to no registry: the base image is made locally unless told otherwise.
    if std::env::var_os(PULL_ENV).is_none() {
        cmd = cmd.env(PULL_ENV, "0");
    }
    cmd.timeout(BUILD_TIMEOUT).run_visible()?;
    progress(format!(
        "image {tag} ready after {:.1}s",
        start.elapsed().as_secs_f64()
    ));
    built.push(key);
    Ok(())
}

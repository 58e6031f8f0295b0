//! What a test does when the machine lacks what it needs (root and network namespaces, docker):
//! under `CI=true` it fails, since CI must run every test; anywhere else it says plainly that it
//! did not run, on the terminal and in the list that `scripts/test.sh` prints at the end, and
//! returns without testing anything. An opt-in test nobody asked for (the Kubernetes scenario
//! without `KUBECONFIG`) says the same, in CI too.

use std::io::Write;

/// The file, named by this environment variable, to which every test that did not run appends
/// one line (`scripts/test.sh` sets it and prints the list when the tests are done).
pub const NOT_RUN_LOG: &str = "FLOTILLA_NOT_RUN_LOG";

/// The libfaketime library (Debian's `faketime` package), if this machine has it.
pub fn faketime_library() -> Option<std::path::PathBuf> {
    [
        "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1",
        "/usr/lib/aarch64-linux-gnu/faketime/libfaketime.so.1",
        "/usr/lib/faketime/libfaketime.so.1",
    ]
    .into_iter()
    .map(std::path::PathBuf::from)
    .find(|p| p.exists())
}

/// True when running in CI (`CI` set to anything but `false`, `0` or nothing): there a missing
/// environment is a failure.
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| !matches!(v.trim(), "" | "0" | "false"))
}

/// Test `test` cannot run here because `missing`. Under CI this panics, failing the test;
/// elsewhere it reports that the test did NOT run, and the caller returns.
#[track_caller]
pub fn not_run(test: &str, missing: impl std::fmt::Display) {
    not_run_where(in_ci(), log(), test, missing);
}

/// The list of tests that did not run, when `scripts/test.sh` keeps one.
fn log() -> Option<std::ffi::OsString> {
    std::env::var_os(NOT_RUN_LOG)
}

#[track_caller]
fn not_run_where(
    ci: bool,
    log: Option<std::ffi::OsString>,
    test: &str,
    missing: impl std::fmt::Display,
) {
    if ci {
        panic!("{test} cannot run: {missing} (CI=true: every test must run)");
    }
    report(log, test, missing);
}

/// Test `test` is opt-in and was not asked for (`reason`: e.g. no Kubernetes cluster given): it
/// reports that it did NOT run, in CI as anywhere, and the caller returns.
pub fn not_configured(test: &str, reason: impl std::fmt::Display) {
    report(log(), test, reason);
}

fn report(log: Option<std::ffi::OsString>, test: &str, why: impl std::fmt::Display) {
    let line = format!("NOT RUN: {test}: {why}");
    // Straight to the process's standard error, past the test harness's capture of `eprintln!`.
    let _ = writeln!(
        std::io::stderr(),
        "{line} (the test passes without testing anything; CI=true makes this a failure)"
    );
    if let Some(path) = log {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path);
        if let Ok(mut file) = file {
            let _ = writeln!(file, "{line}");
        }
    }
}

/// The name of the running test: libtest runs each test on a thread named after it (outside a
/// test, the thread's name or "this test").
pub fn current_test() -> String {
    std::thread::current()
        .name()
        .unwrap_or("this test")
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[should_panic(expected = "cannot run: no docker engine (CI=true: every test must run)")]
    fn a_test_that_cannot_run_fails_in_ci() {
        not_run_where(true, None, "some test", "no docker engine");
    }

    #[test]
    fn a_test_that_cannot_run_elsewhere_returns_and_is_listed() {
        let list = std::env::temp_dir().join(format!("flotilla-not-run-{}", std::process::id()));
        not_run_where(
            false,
            Some(list.clone().into()),
            "some test",
            "no docker engine",
        );
        let listed = std::fs::read_to_string(&list).unwrap_or_default();
        let _ = std::fs::remove_file(&list);
        assert_eq!(listed, "NOT RUN: some test: no docker engine\n");
    }

    #[test]
    fn the_test_is_named_after_its_thread() {
        assert!(current_test().ends_with("the_test_is_named_after_its_thread"));
    }
}

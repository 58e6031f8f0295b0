//! The chart's monitoring kit: the alert rules pass `promtool check rules` and their unit
//! tests (`promtool test rules`), every alert has a test, and the Grafana dashboard is
//! valid JSON whose queries name Flotilla's metrics.

use serde_json::Value;
use std::path::PathBuf;
use std::process::Command;

const RULES: &str = "charts/flotilla-operator/files/prometheus-rules.yaml";
const RULE_TESTS: &str = "operator/tests/monitoring/alerts.test.yaml";
const DASHBOARD: &str = "charts/flotilla-operator/files/dashboards/flotilla.json";

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn read(path: &str) -> String {
    std::fs::read_to_string(root().join(path)).unwrap_or_else(|e| panic!("reading {path}: {e}"))
}

fn promtool(args: &[&str]) {
    let output = Command::new("promtool")
        .args(args)
        .current_dir(root())
        .output()
        .unwrap_or_else(|e| {
            panic!("promtool (Debian's prometheus package; scripts/test.sh installs it): {e}")
        });
    assert!(
        output.status.success(),
        "promtool {args:?}:\n{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// The values of every `key: value` line of a YAML text, for `key`.
fn values_of(text: &str, key: &str) -> Vec<String> {
    text.lines()
        .filter_map(|l| {
            l.trim()
                .trim_start_matches("- ")
                .strip_prefix(&format!("{key}: "))
        })
        .map(|v| v.trim().to_owned())
        .collect()
}

#[test]
fn the_alert_rules_pass_promtool_check_rules() {
    promtool(&["check", "rules", RULES]);
}

#[test]
fn every_alert_fires_as_its_unit_tests_expect() {
    promtool(&["test", "rules", RULE_TESTS]);
}

#[test]
fn every_alert_has_a_unit_test() {
    let alerts = values_of(&read(RULES), "alert");
    assert_eq!(
        alerts,
        [
            "FlotillaNoLeader",
            "FlotillaQuorumAtRisk",
            "FlotillaRehabReplicas",
            "FlotillaReplicationFactorNotMet",
            "FlotillaLeaderFlapping",
            "FlotillaDiskNearlyFull",
            "FlotillaStorageFull",
            "FlotillaFsyncSlow",
            "FlotillaProposalsFailing",
            "FlotillaGrpcErrors",
            "FlotillaOperatorReconcileFailing",
        ]
    );
    let tested = values_of(&read(RULE_TESTS), "alertname");
    for alert in &alerts {
        assert!(
            tested.contains(alert),
            "{alert} has no test in {RULE_TESTS}"
        );
    }
}

#[test]
fn the_dashboard_is_json_whose_queries_name_flotillas_metrics() {
    let dashboard: Value = serde_json::from_str(&read(DASHBOARD)).unwrap_or_else(|e| panic!("{e}"));
    let panels = dashboard["panels"].as_array().cloned().unwrap_or_default();
    assert!(panels.len() >= 10, "{} panels", panels.len());
    for panel in &panels {
        let targets = panel["targets"].as_array().cloned().unwrap_or_default();
        assert!(!targets.is_empty(), "panel {} has no query", panel["title"]);
        for target in targets {
            let expr = target["expr"].as_str().unwrap_or_default();
            assert!(
                expr.contains("flotilla_") || expr.contains("process_"),
                "{expr}"
            );
            assert!(expr.contains("$cluster"), "not filtered by cluster: {expr}");
        }
    }
    let titles: Vec<&str> = panels.iter().filter_map(|p| p["title"].as_str()).collect();
    assert!(
        titles.iter().any(|t| t.contains("gRPC errors")),
        "{titles:?}"
    );
}

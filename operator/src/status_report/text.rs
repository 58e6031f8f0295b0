//! The text form of a [`Report`]: a summary, a nodes table, the shards of every
//! DatabaseGroup, and the problems last.

use super::Report;
use std::fmt::Write;

fn or_dash(value: Option<&str>) -> &str {
    value.filter(|v| !v.is_empty()).unwrap_or("-")
}

fn list(values: &[String]) -> String {
    if values.is_empty() {
        "-".to_owned()
    } else {
        values.join(",")
    }
}

/// Left-aligned columns, two spaces apart.
/// `key=value,key=value`, or `-` when there is none.
fn labels(labels: &std::collections::BTreeMap<String, String>) -> String {
    if labels.is_empty() {
        return "-".to_owned();
    }
    labels
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.len());
        }
    }
    let mut out = String::new();
    let mut line = |cells: Vec<&str>| {
        let text: Vec<String> = cells
            .iter()
            .zip(&widths)
            .map(|(cell, width)| format!("{cell:<width$}"))
            .collect();
        out.push_str(text.join("  ").trim_end());
        out.push('\n');
    };
    line(header.to_vec());
    for row in rows {
        line(row.iter().map(String::as_str).collect());
    }
    out
}

/// The report as text for a terminal.
pub fn render_text(report: &Report) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "Cluster:      {}/{}", report.namespace, report.cluster);
    let _ = writeln!(out, "Phase:        {}", report.phase);
    let _ = writeln!(
        out,
        "Nodes:        {}/{} ready",
        report.ready_nodes, report.desired_nodes
    );
    let _ = writeln!(
        out,
        "Meta leader:  {}",
        or_dash(report.meta_leader.as_deref())
    );
    let _ = writeln!(out, "Image:        {}", report.image);
    let _ = writeln!(
        out,
        "Cluster id:   {}",
        or_dash(report.cluster_id.as_deref())
    );

    let _ = writeln!(out, "\nNodes");
    let rows: Vec<Vec<String>> = report
        .nodes
        .iter()
        .map(|n| {
            vec![
                n.pod.clone(),
                or_dash(n.node_id.as_deref()).to_owned(),
                or_dash(n.role.as_deref()).to_owned(),
                n.state.clone(),
                if n.ready { "yes" } else { "no" }.to_owned(),
                or_dash(n.k8s_node.as_deref()).to_owned(),
                labels(&n.labels),
            ]
        })
        .collect();
    out.push_str(&table(
        &[
            "POD", "NODE ID", "ROLE", "STATE", "READY", "K8S NODE", "LABELS",
        ],
        &rows,
    ));

    for group in &report.database_groups {
        let _ = writeln!(
            out,
            "\nDatabaseGroup {} (database {}, RF {}{})",
            group.name,
            group.database,
            group.replication_factor,
            if group.replication_factor_met {
                ", met"
            } else {
                ", NOT met"
            }
        );
        let rows: Vec<Vec<String>> = group
            .shards
            .iter()
            .map(|s| {
                vec![
                    s.shard.to_string(),
                    or_dash(s.leader.as_deref()).to_owned(),
                    list(&s.members),
                    list(&s.promotables),
                    list(&s.rehab),
                ]
            })
            .collect();
        out.push_str(&table(
            &["SHARD", "LEADER", "MEMBERS", "PROMOTABLES", "REHAB"],
            &rows,
        ));
    }

    if !report.problems.is_empty() {
        let _ = writeln!(out, "\nProblems");
        for problem in &report.problems {
            let _ = writeln!(out, "- {problem}");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::status_report::{GroupReport, NodeRow, ShardRow};

    #[test]
    fn the_text_report_has_summary_tables_and_problems_last() {
        let report = Report {
            cluster: "flotilla".to_owned(),
            namespace: "db".to_owned(),
            phase: "Healthy".to_owned(),
            ready_nodes: 1,
            desired_nodes: 1,
            meta_leader: Some("flotilla-0".to_owned()),
            image: "flotilla/flotilla-node:0.1.0".to_owned(),
            cluster_id: None,
            nodes: vec![NodeRow {
                pod: "flotilla-0".to_owned(),
                node_id: Some("n0".to_owned()),
                role: Some("Voter".to_owned()),
                state: "Member".to_owned(),
                ready: true,
                k8s_node: Some("kind-worker".to_owned()),
                labels: [("topology.kubernetes.io/zone".to_owned(), "eu-1a".to_owned())].into(),
            }],
            database_groups: vec![GroupReport {
                name: "orders".to_owned(),
                database: "orders".to_owned(),
                replication_factor: 1,
                replication_factor_met: true,
                shards: vec![ShardRow {
                    shard: 0,
                    leader: Some("flotilla-0".to_owned()),
                    members: vec!["flotilla-0".to_owned()],
                    ..ShardRow::default()
                }],
            }],
            problems: vec!["something".to_owned()],
        };
        let text = render_text(&report);
        let expected = "\
Cluster:      db/flotilla
Phase:        Healthy
Nodes:        1/1 ready
Meta leader:  flotilla-0
Image:        flotilla/flotilla-node:0.1.0
Cluster id:   -

Nodes
POD         NODE ID  ROLE   STATE   READY  K8S NODE     LABELS
flotilla-0  n0       Voter  Member  yes    kind-worker  topology.kubernetes.io/zone=eu-1a

DatabaseGroup orders (database orders, RF 1, met)
SHARD  LEADER      MEMBERS     PROMOTABLES  REHAB
0      flotilla-0  flotilla-0  -            -

Problems
- something
";
        assert_eq!(text, expected);
    }
}

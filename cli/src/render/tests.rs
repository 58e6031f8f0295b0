//! What each rendering prints, as a person and as a script read it.

use flotilla_client::{
    ChangeKind, Health, MetaRole, NodeStatus, ReplicaState, ReplicaStatus, ShardStatus,
};

use super::*;

fn cluster() -> ClusterStatus {
    let node = |id: u64, role, health, lag| NodeStatus {
        id,
        name: format!("node-{id}"),
        client_addr: format!("127.0.0.1:71{id}0"),
        peer_addr: format!("127.0.0.1:71{id}1"),
        meta_role: role,
        health,
        lag,
        labels: if id == 3 {
            [("zone".to_string(), "b".to_string())].into()
        } else {
            Default::default()
        },
        draining: id == 3,
        replicas: id as u32,
    };
    ClusterStatus {
        cluster_id: "c-1".into(),
        meta_leader_id: Some(2),
        meta_term: 5,
        nodes: vec![
            node(2, MetaRole::Leader, Health::Healthy, 0),
            node(1, MetaRole::Follower, Health::Healthy, 0),
            node(3, MetaRole::Learner, Health::Unreachable, 120),
        ],
        answered_by: 1,
        rebalancing: false,
        auth_enabled: true,
    }
}

fn database() -> DatabaseStatus {
    let replica = |node_id: u64, state, lag| ReplicaStatus {
        node_id,
        client_addr: format!("127.0.0.1:71{node_id}0"),
        state,
        lag,
        matched_index: 50 - lag,
        snapshot_bytes_sent: if state == ReplicaState::Promotable {
            3 << 20
        } else {
            0
        },
        stopped: None,
        broken: false,
    };
    DatabaseStatus {
        database: DatabaseInfo {
            name: "t".into(),
            shards: 2,
            replication_factor: 2,
            replace_after: "15m".into(),
            placement: Default::default(),
            auto_rebalance: false,
        },
        shards: vec![
            ShardStatus {
                shard: 0,
                group_id: 11,
                leader_id: Some(1),
                term: 3,
                commit_index: 50,
                replicas: vec![
                    replica(1, ReplicaState::Member, 0),
                    replica(2, ReplicaState::Rehab, 9),
                    replica(3, ReplicaState::Promotable, 40),
                ],
                replacement: Some(flotilla_client::ReplicaMove { old: 2, new: 3 }),
            },
            ShardStatus {
                shard: 1,
                group_id: 12,
                leader_id: None,
                term: 1,
                commit_index: 0,
                replicas: vec![],
                replacement: None,
            },
        ],
    }
}

fn doc(id: &str, json: &str) -> Document {
    Document {
        collection: "users".into(),
        id: id.into(),
        json: json.into(),
        version: 2,
        revision: 17,
        shard: 1,
    }
}

#[test]
fn cluster_status_json_names_the_meta_leader_and_every_node() {
    let out = cluster_status(&cluster(), Output::Json);
    assert_eq!(out.lines().count(), 1);
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["meta_leader"]["name"], "node-2");
    assert_eq!(v["meta_leader_id"], 2);
    let nodes = v["nodes"].as_array().unwrap();
    assert_eq!(nodes.len(), 3);
    assert_eq!(nodes[2]["id"], 3);
    assert_eq!(nodes[2]["name"], "node-3");
    assert_eq!(nodes[2]["client_addr"], "127.0.0.1:7130");
    assert_eq!(nodes[2]["meta_role"], "learner");
    assert_eq!(nodes[2]["health"], "unreachable");
}

#[test]
fn cluster_status_table_lists_one_node_per_line_by_name() {
    let out = cluster_status(&cluster(), Output::Table);
    assert_eq!(
        out,
        "cluster c-1   meta leader: node-2 (id 2)   term: 5\n\
         \n\
         ID   NAME     CLIENT ADDRESS   META ROLE   HEALTH                   LAG   REPLICAS   LABELS\n\
         1    node-1   127.0.0.1:7110   follower    healthy                  0     1          -\n\
         2    node-2   127.0.0.1:7120   leader      healthy                  0     2          -\n\
         3    node-3   127.0.0.1:7130   learner     unreachable (draining)   120   3          zone=b\n"
    );
}

#[test]
fn a_cluster_without_auth_says_so_on_top_and_in_json() {
    let mut c = cluster();
    assert!(!cluster_status(&c, Output::Table).contains("auth is disabled"));
    c.auth_enabled = false;
    let table = cluster_status(&c, Output::Table);
    assert_eq!(table.lines().nth(1), Some(AUTH_DISABLED), "{table}");
    let v: Value = serde_json::from_str(&cluster_status(&c, Output::Json)).unwrap();
    assert_eq!(v["auth_enabled"], false);
}

#[test]
fn a_cluster_without_leader_says_so() {
    let mut c = cluster();
    c.meta_leader_id = None;
    assert!(cluster_status(&c, Output::Table).contains("meta leader: none"));
    let v: Value = serde_json::from_str(&cluster_status(&c, Output::Json)).unwrap();
    assert_eq!(v["meta_leader"], Value::Null);
    assert_eq!(v["meta_leader_id"], Value::Null);
}

#[test]
fn database_status_json_lists_shards_leaders_and_replicas() {
    let v: Value = serde_json::from_str(&database_status(&database(), Output::Json)).unwrap();
    assert_eq!(v["database"]["name"], "t");
    let shards = v["shards"].as_array().unwrap();
    assert_eq!(shards[0]["leader_id"], 1);
    assert_eq!(shards[1]["leader_id"], Value::Null);
    let r = &shards[0]["replicas"][1];
    assert_eq!(r["node_id"], 2);
    assert_eq!(r["client_addr"], "127.0.0.1:7120");
    assert_eq!(r["state"], "rehab");
    assert_eq!(r["lag"], 9);
}

#[test]
fn a_replica_stopped_on_its_node_says_why() {
    let mut status = database();
    status.shards[0].replicas[1].stopped =
        Some("corrupt log entry 17 of group 5: checksum mismatch".into());
    let out = database_status(&status, Output::Table);
    assert!(
        out.contains("stopped: corrupt log entry 17 of group 5"),
        "{out}"
    );
    let v: Value = serde_json::from_str(&database_status(&status, Output::Json)).unwrap();
    assert_eq!(
        v["shards"][0]["replicas"][1]["stopped"],
        "corrupt log entry 17 of group 5: checksum mismatch"
    );
}

#[test]
fn database_status_table_has_a_row_per_replica() {
    let out = database_status(&database(), Output::Table);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines[0],
        "database t   shards: 2   replication factor: 2   shards with a leader: 1/2"
    );
    assert_eq!(
        lines[1],
        "replace after: 15m   placement: -   auto rebalance: off"
    );
    assert_eq!(
        lines[3],
        "SHARD   LEADER   TERM   COMMIT   NODE   CLIENT ADDRESS   ROLE       STATE        LAG   PROGRESS"
    );
    assert_eq!(
        lines[4],
        "0       1        3      50       1      127.0.0.1:7110   leader     member       0     -"
    );
    assert_eq!(
        lines[5],
        "0       1        3      50       2      127.0.0.1:7120   follower   rehab        9     -"
    );
    assert_eq!(
        lines[6],
        "0       1        3      50       3      127.0.0.1:7130   follower   promotable   40    40 behind, snapshot 3.0 MiB sent"
    );
    assert_eq!(lines[7], "1       -        1      0");
    assert_eq!(lines[8], "shard 0: node 3 is taking the place of node 2");
}

#[test]
fn documents_render_their_body_as_json() {
    let docs = [doc("a", "{\"n\": 1}"), doc("b", "not json")];
    let out = documents(&docs, Output::Json);
    let v: Vec<Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(v[0]["value"], json!({"n": 1}));
    assert_eq!(v[0]["version"], 2);
    assert_eq!(v[1]["value"], "not json");
    let table = documents(&docs, Output::Table);
    assert_eq!(
        table,
        "COLLECTION   ID   VERSION   REVISION   SHARD   VALUE\n\
         users        a    2         17         1       {\"n\":1}\n\
         users        b    2         17         1       not json\n"
    );
}

#[test]
fn write_results_are_one_line() {
    let put = PutResult {
        version: 3,
        revision: 9,
        shard: 0,
    };
    assert_eq!(
        put_result("users", "a", &put, Output::Table),
        "users/a written: version 3, revision 9, shard 0\n"
    );
    let v: Value = serde_json::from_str(&put_result("users", "a", &put, Output::Json)).unwrap();
    assert_eq!(
        v,
        json!({"collection":"users","id":"a","version":3,"revision":9,"shard":0})
    );
    let gone = DeleteResult {
        deleted: false,
        revision: 0,
        shard: 0,
    };
    assert_eq!(
        delete_result("users", "a", &gone, Output::Table),
        "users/a did not exist\n"
    );
}

#[test]
fn watch_rows_line_up_with_the_header() {
    let header = watch_header(Output::Table);
    let put = WatchEvent {
        kind: ChangeKind::Put,
        document: doc("alice", "{\"n\":1}"),
    };
    let row = watch_event(&put, Output::Table);
    let col = |s: &str, name: &str| s.find(name).unwrap();
    assert_eq!(col(&header, "ID"), col(&row, "alice"));
    assert_eq!(col(&header, "VALUE"), col(&row, "{\"n\":1}"));
    let delete = WatchEvent {
        kind: ChangeKind::Delete,
        document: doc("alice", ""),
    };
    let v: Value = serde_json::from_str(&watch_event(&delete, Output::Json)).unwrap();
    assert_eq!(v["type"], "delete");
    assert_eq!(v["value"], Value::Null);
    assert_eq!(watch_header(Output::Json), "");
}

#[test]
fn databases_list_one_json_object_per_line() {
    let dbs = [
        DatabaseInfo {
            name: "a".into(),
            shards: 1,
            replication_factor: 3,
            replace_after: "15m".into(),
            placement: Default::default(),
            auto_rebalance: false,
        },
        DatabaseInfo {
            name: "bb".into(),
            shards: 4,
            replication_factor: 1,
            replace_after: "off".into(),
            placement: [("zone".to_string(), "a".to_string())].into(),
            auto_rebalance: true,
        },
    ];
    let out = databases(&dbs, Output::Json);
    assert_eq!(out.lines().count(), 2);
    assert_eq!(
        databases(&dbs, Output::Table),
        "NAME   SHARDS   REPLICATION FACTOR   REPLACE AFTER   PLACEMENT   AUTO REBALANCE\n\
         a      1        3                    15m             -           off\n\
         bb     4        1                    off             zone=a      on\n"
    );
}

#[test]
fn leadership_transfer_names_the_group() {
    let g = Group::Shard {
        database: "t".into(),
        shard: 2,
    };
    assert_eq!(
        leadership_transferred(&g, 4, Output::Table),
        "leader of shard 2 of database t is now node 4\n"
    );
    let v: Value =
        serde_json::from_str(&leadership_transferred(&Group::Meta, 4, Output::Json)).unwrap();
    assert_eq!(v, json!({"group": "meta", "leader_id": 4}));
}

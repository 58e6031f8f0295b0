//! The meta state's transitions and its stored form.

use super::*;

/// A shard record as earlier versions stored it, with Rehab carrying its start time.
#[derive(Serialize)]
enum OldState {
    Member,
    Promotable,
    Rehab { since_ms: u64 },
}

#[derive(Serialize)]
struct OldShardRecord {
    group_id: GroupId,
    replicas: Vec<NodeId>,
    initial: Vec<NodeId>,
    states: BTreeMap<NodeId, OldState>,
    since_ms: BTreeMap<NodeId, u64>,
    replacement: Option<ReplicaMove>,
}

#[test]
fn a_shard_record_stored_by_an_earlier_version_reads_back() {
    let old = OldShardRecord {
        group_id: 4,
        replicas: vec![1, 2, 3, 5],
        initial: vec![1, 2, 3],
        states: BTreeMap::from([
            (1, OldState::Member),
            (2, OldState::Rehab { since_ms: 7_000 }),
            (5, OldState::Promotable),
        ]),
        since_ms: BTreeMap::from([(2, 7_000), (5, 9_000)]),
        replacement: Some(ReplicaMove { old: 3, new: 5 }),
    };
    let bytes = crate::codec::encode(&old).expect("encode");
    let record: ShardRecord = crate::codec::decode(&bytes).expect("decode");
    assert_eq!(record.state_of(1), Some(ReplicaState::Member));
    assert_eq!(record.state_of(2), Some(ReplicaState::Rehab));
    assert_eq!(record.state_of(3), Some(ReplicaState::Member));
    assert_eq!(record.state_of(5), Some(ReplicaState::Promotable));
    assert_eq!(record.since_ms.get(&2), Some(&7_000));
    assert_eq!(record.replacement, Some(ReplicaMove { old: 3, new: 5 }));
    let again: ShardRecord =
        crate::codec::decode(&crate::codec::encode(&record).expect("encode")).expect("decode");
    assert_eq!(again, record);
}

fn addr(n: &str) -> NodeAddr {
    NodeAddr {
        name: n.into(),
        client_addr: format!("{n}:1"),
        peer_addr: format!("{n}:2"),
    }
}

#[test]
fn create_database_assigns_distinct_group_ids_and_refuses_duplicates() {
    let mut st = MetaState::default();
    let rec = DatabaseRecord {
        name: "a".into(),
        replication_factor: 1,
        shards: vec![ShardRecord::new(0, vec![1]), ShardRecord::new(0, vec![1])],
        replace_after_ms: None,
        placement: BTreeMap::new(),
        auto_rebalance: false,
        collections: Default::default(),
    };
    let out = st
        .apply(&MetaCommand::CreateDatabase {
            record: rec.clone(),
        })
        .unwrap();
    let MetaOutcome::DatabaseCreated(created) = out else {
        panic!("unexpected {out:?}")
    };
    assert_eq!(created.shards[0].group_id, 1);
    assert_eq!(created.shards[1].group_id, 2);
    assert!(
        st.apply(&MetaCommand::CreateDatabase { record: rec })
            .is_err()
    );
    assert_eq!(st.groups_on(1).len(), 2);
    assert_eq!(
        st.shard_by_group(2).map(|(d, i)| (d.name.as_str(), i)),
        Some(("a", 1))
    );
}

#[test]
fn a_removed_node_cannot_register_again() {
    let mut st = MetaState::default();
    st.apply(&MetaCommand::RegisterNode {
        id: 7,
        addr: addr("n7"),
        labels: BTreeMap::new(),
    })
    .unwrap();
    st.apply(&MetaCommand::RemoveNode { id: 7 }).unwrap();
    assert!(
        st.apply(&MetaCommand::RegisterNode {
            id: 7,
            addr: addr("n7"),
            labels: BTreeMap::new(),
        })
        .is_err()
    );
    assert!(!st.nodes.contains_key(&7));
}

#[test]
fn replica_transitions_are_recorded_as_events() {
    let mut st = MetaState::default();
    let rec = DatabaseRecord {
        name: "a".into(),
        replication_factor: 2,
        shards: vec![ShardRecord::new(0, vec![1, 2])],
        replace_after_ms: Some(1000),
        placement: BTreeMap::new(),
        auto_rebalance: false,
        collections: Default::default(),
    };
    st.apply(&MetaCommand::CreateDatabase { record: rec })
        .unwrap();
    let set = |node, state| MetaCommand::SetReplicaState {
        group: 1,
        node,
        state,
        replaces: None,
        at_ms: 5,
        reason: "test".into(),
    };
    st.apply(&set(3, ReplicaState::Promotable)).unwrap();
    st.apply(&set(3, ReplicaState::Member)).unwrap();
    st.apply(&set(2, ReplicaState::Rehab)).unwrap();
    st.apply(&MetaCommand::RemoveReplica {
        group: 1,
        node: 2,
        keep_files: true,
        at_ms: 6,
        reason: "replaced".into(),
    })
    .unwrap();
    let shard = &st.databases["a"].shards[0];
    assert_eq!(shard.replicas, vec![1, 3]);
    assert_eq!(shard.initial, vec![1, 2]);
    assert!(st.is_retired(1, 2));
    let moves: Vec<(u64, &str, &str)> = st
        .events
        .iter()
        .map(|e| (e.node, e.from.as_str(), e.to.as_str()))
        .collect();
    assert_eq!(
        moves,
        vec![
            (3, "absent", "promotable"),
            (3, "promotable", "member"),
            (2, "member", "rehab"),
            (2, "rehab", "removed")
        ]
    );
    assert_eq!(st.events.back().map(|e| e.sequence), Some(4));
}

#[test]
fn shard_of_is_stable_and_in_range() {
    let db = DatabaseRecord {
        name: "d".into(),
        replication_factor: 1,
        shards: (0..8).map(|_| ShardRecord::new(0, vec![])).collect(),
        replace_after_ms: None,
        placement: BTreeMap::new(),
        auto_rebalance: false,
        collections: Default::default(),
    };
    for i in 0..100 {
        let id = format!("doc-{i}");
        let s = db.shard_of(&id);
        assert!(s < 8);
        assert_eq!(s, db.shard_of(&id));
    }
}

#[test]
fn a_meta_state_stored_before_users_and_roles_existed_reads_back_with_auth_off() {
    let mut state = MetaState {
        cluster_id: Some("c".into()),
        next_group_id: 9,
        rebalance_requested: true,
        ..MetaState::default()
    };
    state.nodes.insert(1, addr("a"));
    let bytes = crate::codec::encode(&state).expect("encode");
    let tail = crate::codec::encode(&auth::AuthState::default())
        .expect("encode")
        .len();
    // What an earlier version stored: the same fields, without the trailing auth state.
    let old = &bytes[..bytes.len() - tail];
    let read: MetaState = crate::codec::decode(old).expect("decode");
    assert_eq!(read, state);
    assert!(!read.auth.enabled);
    // And a state with auth reads back whole.
    state.auth.enabled = true;
    state.auth.secret = vec![1, 2, 3];
    let read: MetaState =
        crate::codec::decode(&crate::codec::encode(&state).expect("encode")).expect("decode");
    assert_eq!(read, state);
}

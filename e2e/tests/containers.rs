//! Container tests: the image that `deploy/build-image.sh` builds runs a node that becomes
//! ready, and the three-node cluster of `deploy/docker-compose.yml` comes up healthy, serves
//! linearizable reads from any node, keeps accepting writes after the container of its shard
//! leader is killed, and comes back with its data when every container restarts.
//!
//! Both tests need a docker engine. Without one they say plainly that they did not run, except
//! under `CI=true`, where they fail. The image is built from the debug binaries, which the build
//! script reuses when they are up to date. Set `FLOTILLA_E2E_IMAGE` to test another tag and
//! `FLOTILLA_E2E_KEEP=1` to leave containers and volumes behind for inspection.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use flotilla_client::{Client, ClientOptions, Consistency, Document};
use flotilla_e2e::compose::Project;
use flotilla_e2e::docker::{self, Container};
use flotilla_e2e::image::{self, Profile};
use flotilla_testkit::environment::not_run;
use flotilla_testkit::{http, progress, repo_root, unique_name, wait};

/// The uid and gid the image runs the node as.
const NODE_UID: &str = "65532";
/// The services of deploy/docker-compose.yml.
const SERVICES: [&str; 3] = ["node-1", "node-2", "node-3"];
const CLIENT_PORT: u16 = 7100;
const HTTP_PORT: u16 = 7102;

const READY_TIMEOUT: Duration = Duration::from_secs(90);
const CLUSTER_HEALTHY_TIMEOUT: Duration = Duration::from_secs(150);
const FAILOVER_TIMEOUT: Duration = Duration::from_secs(60);

fn image_tag() -> String {
    std::env::var("FLOTILLA_E2E_IMAGE").unwrap_or_else(|_| "flotilla:e2e".to_string())
}

/// Whether docker can be used. When it cannot, the test fails under `CI=true` and otherwise
/// says that it did not run (false: the caller returns).
fn docker_or_skip(test: &str) -> bool {
    match docker::available() {
        Ok(version) => {
            progress(format!("{test}: docker engine {version}"));
            true
        }
        Err(e) => {
            not_run(test, format!("{e}; it needs a docker engine"));
            false
        }
    }
}

fn build_image() -> String {
    let tag = image_tag();
    image::build(Profile::Debug, &tag).expect("deploy/build-image.sh builds the image");
    tag
}

/// Waits until `container` reports `healthy`; fails at once when it stopped.
fn wait_healthy(what: &str, container: &str, timeout: Duration) {
    wait::until(
        &format!("{what} to be healthy"),
        timeout,
        Duration::from_millis(500),
        || {
            let (health, state) = docker::health(container).map_err(|e| e.to_string())?;
            assert!(
                state == "running" || state == "created" || state == "restarting",
                "{what} is {state}:\n{}",
                docker::logs_tail(container, docker::LOG_TAIL_LINES)
            );
            Ok((health == "healthy").then_some(()))
        },
    )
    .unwrap_or_else(|e| panic!("{e}"));
}

fn timed<T>(step: &str, f: impl FnOnce() -> T) -> T {
    progress(format!("-- {step}"));
    let start = Instant::now();
    let value = f();
    progress(format!(
        "-- {step}: done in {:.1}s",
        start.elapsed().as_secs_f64()
    ));
    value
}

#[test]
fn the_image_runs_a_node_that_becomes_ready() {
    let test = "the_image_runs_a_node_that_becomes_ready";
    if !docker_or_skip(test) {
        return;
    }
    let tag = timed("build the image", build_image);

    timed("check the image's configuration", || {
        let inspect = |format: &str| {
            docker::image_inspect(&tag, format)
                .unwrap_or_else(|e| panic!("docker image inspect {format}: {e}"))
        };
        assert_eq!(
            inspect("{{.Config.User}}"),
            format!("{NODE_UID}:{NODE_UID}")
        );
        assert_eq!(
            inspect("{{json .Config.Entrypoint}}"),
            r#"["flotilla-node"]"#
        );
        assert_eq!(inspect("{{json .Config.Cmd}}"), r#"["serve"]"#);
        let ports = inspect("{{json .Config.ExposedPorts}}");
        for port in ["7100/tcp", "7101/tcp", "7102/tcp"] {
            assert!(ports.contains(port), "port {port} is not exposed: {ports}");
        }
        let volumes = inspect("{{json .Config.Volumes}}");
        assert!(volumes.contains("/var/lib/flotilla"), "volumes: {volumes}");
        let healthcheck = inspect("{{json .Config.Healthcheck.Test}}");
        assert!(
            healthcheck.contains("/readyz"),
            "healthcheck: {healthcheck}"
        );
    });

    let name = unique_name("flotilla-e2e-single");
    let container = timed("start one container", || {
        Container::run(
            &name,
            &[
                "--publish",
                "127.0.0.1::7100",
                "--publish",
                "127.0.0.1::7102",
                "--env",
                "FLOTILLA_NAME=single",
                "--env",
                "FLOTILLA_INITIAL_CLUSTER_STATE=new",
            ],
            &tag,
            &[],
        )
        .expect("docker run starts the node")
    });

    timed("wait for /readyz through the published port", || {
        let addr = container
            .published_port(HTTP_PORT)
            .expect("the HTTP port is published");
        wait::until(
            &format!("/readyz on {addr}"),
            READY_TIMEOUT,
            Duration::from_millis(200),
            || {
                let (_, state) = container.health().map_err(|e| e.to_string())?;
                assert_eq!(
                    state,
                    "running",
                    "the node stopped:\n{}",
                    docker::logs_tail(container.name(), docker::LOG_TAIL_LINES)
                );
                match http::status_blocking(&addr.to_string(), "/readyz", Duration::from_secs(2)) {
                    Ok(200) => Ok(Some(())),
                    Ok(code) => Err(format!("HTTP {code}")),
                    Err(e) => Err(e.to_string()),
                }
            },
        )
        .unwrap_or_else(|e| panic!("{e}"));
    });

    timed("wait for the image's HEALTHCHECK to report healthy", || {
        wait_healthy("the node", container.name(), READY_TIMEOUT);
    });

    timed(
        "check the user, the data directory and the CLI inside",
        || {
            let uid = container.exec(&["id", "-u"]).expect("docker exec id");
            assert_eq!(uid, NODE_UID, "the node must not run as root");
            let owner = container
                .exec(&["stat", "-c", "%u", "/var/lib/flotilla"])
                .expect("docker exec stat");
            assert_eq!(
                owner, NODE_UID,
                "the data directory belongs to the node's user"
            );
            let files = container
                .exec(&["ls", "-A", "/var/lib/flotilla"])
                .expect("docker exec ls");
            assert!(
                !files.is_empty(),
                "the node wrote nothing to its data directory"
            );
            let status = container
                .exec(&["flotilla", "cluster", "status", "--output", "json"])
                .expect("the flotilla CLI in the image answers");
            let status: serde_json::Value = serde_json::from_str(&status)
                .unwrap_or_else(|e| panic!("cluster status is not JSON ({e}): {status}"));
            let nodes = status["nodes"].as_array().map(Vec::len);
            assert_eq!(nodes, Some(1), "one node expected: {status}");
            assert!(
                status["meta_leader_id"].as_u64().is_some(),
                "the node leads its cluster: {status}"
            );
        },
    );
}

/// The client address of every service of `project`, as published on the host.
fn client_endpoints(project: &Project) -> BTreeMap<&'static str, SocketAddr> {
    SERVICES
        .iter()
        .map(|service| {
            let addr = project
                .published_port(service, CLIENT_PORT)
                .unwrap_or_else(|e| panic!("client port of {service}: {e}"));
            (*service, addr)
        })
        .collect()
}

fn client(endpoints: &[SocketAddr]) -> Client {
    let options = ClientOptions {
        total_timeout: Duration::from_secs(15),
        ..ClientOptions::default()
    };
    Client::with_options(endpoints.iter().map(|a| a.to_string()).collect(), options)
        .expect("a client over the published endpoints")
}

/// Polls a read through `client` until it returns the document with `json`.
async fn wait_for_document(
    what: &str,
    client: &Client,
    id: &str,
    json: &str,
    consistency: Consistency,
) -> Document {
    wait::until_async(
        what,
        FAILOVER_TIMEOUT,
        Duration::from_millis(250),
        || async {
            match client.get(DATABASE, COLLECTION, id, consistency).await {
                Ok(Some(doc)) if doc.json == json => Ok(Some(doc)),
                Ok(Some(doc)) => Err(format!("found {}, want {json}", doc.json)),
                Ok(None) => Err("not found".to_string()),
                Err(e) => Err(e.to_string()),
            }
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}"))
}

const DATABASE: &str = "e2e";
const COLLECTION: &str = "docs";

/// Starts the compose cluster under a unique project name and waits until every node is
/// healthy. Returns the project (its guard) and the client endpoints.
fn start_cluster(tag: &str) -> (Project, BTreeMap<&'static str, SocketAddr>) {
    // Empty port variables publish the client ports on free host ports, so that runs in
    // parallel (and a cluster started by hand on 7100/7110/7120) do not collide.
    let env = [
        ("FLOTILLA_IMAGE", tag),
        ("FLOTILLA_NODE1_PORT", ""),
        ("FLOTILLA_NODE2_PORT", ""),
        ("FLOTILLA_NODE3_PORT", ""),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    let project = Project::new(
        &unique_name("flotilla-e2e-compose"),
        &repo_root().join("deploy/docker-compose.yml"),
        env,
    )
    .expect("a compose command is installed");
    timed("docker compose up -d", || {
        project.up().expect("compose up starts the cluster")
    });
    wait_cluster_healthy(&project);
    let endpoints = client_endpoints(&project);
    progress(format!("client endpoints: {endpoints:?}"));
    (project, endpoints)
}

fn wait_cluster_healthy(project: &Project) {
    timed("wait until every node is healthy", || {
        wait::until(
            "node-1, node-2 and node-3 to be healthy",
            CLUSTER_HEALTHY_TIMEOUT,
            Duration::from_secs(1),
            || {
                let mut states = Vec::new();
                for service in SERVICES {
                    let (health, state) = project.health(service).map_err(|e| e.to_string())?;
                    assert_ne!(state, "exited", "{service} stopped");
                    states.push(format!("{service} {health}"));
                }
                if states.iter().all(|s| s.ends_with(" healthy")) {
                    Ok(Some(()))
                } else {
                    Err(states.join(", "))
                }
            },
        )
        .unwrap_or_else(|e| panic!("{e}"));
    });
}

/// Checks that the cluster has the three compose services as nodes, then creates the test
/// database (replication factor 3, one shard) and waits for its shard leader.
async fn create_database(admin: &Client) {
    // Healthy containers have joined; the cluster's own view may trail by a moment.
    wait::until_async(
        "the cluster to list node-1, node-2 and node-3",
        FAILOVER_TIMEOUT,
        Duration::from_millis(250),
        || async {
            let status = admin.cluster_status().await.map_err(|e| e.to_string())?;
            let names: Vec<&str> = status.nodes.iter().map(|n| n.name.as_str()).collect();
            if names.len() == SERVICES.len() && SERVICES.iter().all(|s| names.contains(s)) {
                Ok(Some(()))
            } else {
                Err(format!("nodes: {names:?}"))
            }
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    progress("-- create the database (replication factor 3, one shard)");
    let database = admin
        .create_database(DATABASE, Some(3), Some(1))
        .await
        .expect("create database");
    assert_eq!(database.replication_factor, 3);
    admin
        .wait_for_database(DATABASE, FAILOVER_TIMEOUT, |_| {})
        .await
        .expect("the shard elects a leader");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compose_cluster_keeps_serving_after_the_leader_container_is_killed() {
    let test = "compose_cluster_keeps_serving_after_the_leader_container_is_killed";
    if !docker_or_skip(test) {
        return;
    }
    let tag = timed("build the image", build_image);
    let (project, endpoints) = start_cluster(&tag);
    let all: Vec<SocketAddr> = endpoints.values().copied().collect();
    let admin = client(&all);
    create_database(&admin).await;

    let first = r#"{"step":"before the kill"}"#;
    progress("-- put a document through node-1, read it linearizably through node-2");
    let put = client(&[endpoints["node-1"]])
        .put(DATABASE, COLLECTION, "first", first, None)
        .await
        .expect("put through node-1");
    let read = client(&[endpoints["node-2"]])
        .get(DATABASE, COLLECTION, "first", Consistency::Linearizable)
        .await
        .expect("linearizable get through node-2")
        .expect("node-2 sees the document");
    assert_eq!(read.json, first);
    assert_eq!(read.version, put.version);

    let shard = admin
        .database_status(DATABASE)
        .await
        .expect("database status");
    let leader_id = shard
        .shards
        .first()
        .and_then(|s| s.leader_id)
        .expect("the shard has a leader");
    let cluster = admin.cluster_status().await.expect("cluster status");
    let leader = cluster
        .nodes
        .iter()
        .find(|n| n.id == leader_id)
        .map(|n| n.name.clone())
        .expect("the shard leader is a node of the cluster");
    let leader_service = *SERVICES
        .iter()
        .find(|s| **s == leader)
        .unwrap_or_else(|| panic!("leader {leader} is not a compose service"));
    let leader_container = project.container(leader_service).expect("leader container");
    progress(format!(
        "-- kill the shard leader {leader_service} (node {leader_id}; meta leader too: {})",
        cluster.meta_leader_id == Some(leader_id)
    ));
    docker::kill(&leader_container).expect("docker kill");

    let survivors: Vec<SocketAddr> = endpoints
        .iter()
        .filter(|(service, _)| **service != leader_service)
        .map(|(_, addr)| *addr)
        .collect();
    let rest = client(&survivors);
    let second = r#"{"step":"after the kill"}"#;
    let failover = Instant::now();
    wait::until_async(
        "a write through the surviving nodes",
        FAILOVER_TIMEOUT,
        Duration::from_millis(250),
        || async {
            match rest.put(DATABASE, COLLECTION, "second", second, None).await {
                Ok(put) => Ok(Some(put)),
                Err(e) => Err(e.to_string()),
            }
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    progress(format!(
        "writes resumed {:.1}s after the kill",
        failover.elapsed().as_secs_f64()
    ));

    // The shard's topology as the cluster reports it may trail the election by a moment.
    let new_leader = wait::until_async(
        "the cluster to report a surviving node as the shard leader",
        FAILOVER_TIMEOUT,
        Duration::from_millis(250),
        || async {
            let status = rest
                .database_status(DATABASE)
                .await
                .map_err(|e| e.to_string())?;
            match status.shards.first().and_then(|s| s.leader_id) {
                Some(id) if id != leader_id => Ok(Some(id)),
                Some(id) => Err(format!("leader still reported as {id}")),
                None => Err("no leader reported".to_string()),
            }
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    progress(format!("node {new_leader} now leads the shard"));
    let read = rest
        .get(DATABASE, COLLECTION, "first", Consistency::Linearizable)
        .await
        .expect("linearizable get after the kill")
        .expect("the document written before the kill is still there");
    assert_eq!(read.json, first);
    assert_eq!(read.version, put.version);
    let read = rest
        .get(DATABASE, COLLECTION, "second", Consistency::Linearizable)
        .await
        .expect("linearizable get of the new document")
        .expect("the document written after the kill is there");
    assert_eq!(read.json, second);

    progress(format!("-- restart {leader_service}; it catches up"));
    docker::start(&leader_container).expect("docker start");
    timed("wait for the restarted node to be healthy", || {
        wait_healthy(leader_service, &leader_container, CLUSTER_HEALTHY_TIMEOUT)
    });
    // A restarted container gets a new host port.
    let restarted = project
        .published_port(leader_service, CLIENT_PORT)
        .expect("client port of the restarted node");
    let via_restarted = client(&[restarted]);
    wait_for_document(
        "the restarted node to serve the write it missed (stale read)",
        &via_restarted,
        "second",
        second,
        Consistency::Stale,
    )
    .await;
    wait_for_document(
        "a linearizable read through the restarted node",
        &via_restarted,
        "first",
        first,
        Consistency::Linearizable,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compose_cluster_comes_back_when_every_container_restarts() {
    let test = "compose_cluster_comes_back_when_every_container_restarts";
    if !docker_or_skip(test) {
        return;
    }
    let tag = timed("build the image", build_image);
    let (project, endpoints) = start_cluster(&tag);
    let all: Vec<SocketAddr> = endpoints.values().copied().collect();
    let admin = client(&all);
    create_database(&admin).await;
    let cluster_id = admin
        .cluster_status()
        .await
        .expect("cluster status")
        .cluster_id;

    let json = r#"{"step":"before the restart"}"#;
    let put = admin
        .put(DATABASE, COLLECTION, "kept", json, None)
        .await
        .expect("put");
    drop(admin);

    // node-1 still says `new`: with data in its volume it must restart as a member of the same
    // cluster, not bootstrap another one.
    timed("docker compose stop, then start", || {
        project.stop().expect("compose stop");
        project.start().expect("compose start");
    });
    wait_cluster_healthy(&project);
    // Restarted containers get new host ports.
    let endpoints = client_endpoints(&project);
    let all: Vec<SocketAddr> = endpoints.values().copied().collect();
    let admin = client(&all);
    let status = admin.cluster_status().await.expect("cluster status");
    assert_eq!(status.cluster_id, cluster_id, "the same cluster came back");
    assert_eq!(status.nodes.len(), 3, "the same three nodes: {status:?}");
    let doc = wait_for_document(
        "the document written before the restart (linearizable)",
        &admin,
        "kept",
        json,
        Consistency::Linearizable,
    )
    .await;
    assert_eq!(doc.version, put.version);
    wait::until_async(
        "a write after the restart",
        FAILOVER_TIMEOUT,
        Duration::from_millis(250),
        || async {
            match admin.put(DATABASE, COLLECTION, "after", json, None).await {
                Ok(put) => Ok(Some(put)),
                Err(e) => Err(e.to_string()),
            }
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}"));
}

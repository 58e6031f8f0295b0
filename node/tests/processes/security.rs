//! Transport security with real node processes: a cluster with mutual TLS on the peer port and
//! TLS on the client and HTTP ports serves clients over TLS; whoever lacks a certificate of the
//! cluster CA (or speaks plaintext) is refused; a certificate replaced on disk is presented to
//! new connections without a restart, while open connections keep working. Every peer message
//! is checked for its cluster, sender and target, and a malformed one never reaches Raft.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use flotilla_client::{Client, ClientOptions, ClientTls, Consistency, MetaRole};
use flotilla_proto::peer::peer_client::PeerClient;
use flotilla_proto::peer::{
    AppendEntriesRequest, HeartbeatRequest, JoinClusterRequest, LedShardsRequest, RaftRequest,
};
use flotilla_proto::reason_of;
use flotilla_proto::v1::admin_client::AdminClient;
use flotilla_proto::v1::{ClusterStatusRequest, ErrorReason, NodeInfo};
use flotilla_testkit::cluster::{Cluster, ClusterOptions, Entry, Node, free_addrs};
use flotilla_testkit::wait::{wait_for, wait_until};
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity};

/// A certificate authority made for one test.
struct Ca {
    name: String,
    issuer: CertifiedIssuer<'static, KeyPair>,
}

/// A certificate and its key, as PEM.
#[derive(Clone)]
struct Pair {
    cert: String,
    key: String,
}

impl Ca {
    fn new(name: &str) -> Ca {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA parameters");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        let key = KeyPair::generate().expect("a CA key");
        Ca {
            name: name.to_string(),
            issuer: CertifiedIssuer::self_signed(params, key).expect("a CA certificate"),
        }
    }

    fn pem(&self) -> String {
        self.issuer.pem()
    }

    /// A certificate for 127.0.0.1 and localhost, named `common_name`.
    fn issue(&self, common_name: &str) -> Pair {
        let names = vec!["127.0.0.1".to_string(), "localhost".to_string()];
        let mut params = CertificateParams::new(names).expect("certificate parameters");
        params
            .distinguished_name
            .push(DnType::CommonName, common_name);
        let key = KeyPair::generate().expect("a key");
        let cert = params.signed_by(&key, &self.issuer).expect("a certificate");
        Pair {
            cert: cert.pem(),
            key: key.serialize_pem(),
        }
    }

    /// Writes the CA and a certificate under `dir/<stem>.{crt,key}`; the paths.
    fn write(&self, dir: &Path, stem: &str, pair: &Pair) -> (PathBuf, PathBuf, PathBuf) {
        let ca = dir.join(format!("{}.ca.crt", self.name));
        let cert = dir.join(format!("{stem}.crt"));
        let key = dir.join(format!("{stem}.key"));
        std::fs::write(&ca, self.pem()).expect("writing the CA");
        std::fs::write(&cert, &pair.cert).expect("writing a certificate");
        std::fs::write(&key, &pair.key).expect("writing a key");
        (ca, cert, key)
    }
}

/// Client options trusting `ca`.
fn tls_options(ca: &Ca) -> ClientOptions {
    ClientOptions {
        tls: Some(ClientTls {
            ca_pem: ca.pem().into_bytes(),
            ..ClientTls::default()
        }),
        ..ClusterOptions::default().client_options
    }
}

/// Nodes started by hand (the harness's readiness probe speaks plaintext HTTP).
struct TlsCluster {
    _root: tempfile::TempDir,
    nodes: Vec<Node>,
    ca: Ca,
}

impl TlsCluster {
    /// `n` nodes with TLS on the client and HTTP ports and mutual TLS on the peer port, all
    /// certificates from one CA.
    async fn start(n: usize) -> TlsCluster {
        TlsCluster::start_with(n, &[]).await
    }

    /// Like [`TlsCluster::start`], every node also given `args`.
    async fn start_with(n: usize, args: &[&str]) -> TlsCluster {
        let root = tempfile::Builder::new()
            .prefix("flotilla-tls-")
            .tempdir()
            .expect("a temporary directory");
        let ca = Ca::new("cluster");
        let mut nodes: Vec<Node> = Vec::new();
        for (i, addrs) in free_addrs(n).into_iter().enumerate() {
            let dir = root.path().join(format!("certs-{i}"));
            std::fs::create_dir_all(&dir).expect("a certificate directory");
            let (ca_path, cert, key) = ca.write(&dir, "node", &ca.issue(&format!("node-{i}")));
            let mut options = ClusterOptions {
                client_options: tls_options(&ca),
                ..ClusterOptions::default()
            };
            for (flag, path) in [
                ("--tls-cert", &cert),
                ("--tls-key", &key),
                ("--tls-ca", &ca_path),
                ("--peer-tls-cert", &cert),
                ("--peer-tls-key", &key),
                ("--peer-tls-ca", &ca_path),
            ] {
                options = options.arg(flag).arg(path.display().to_string());
            }
            for arg in args {
                options = options.arg(*arg);
            }
            let entry = match nodes.first() {
                None => Entry::Bootstrap,
                Some(first) => Entry::Join(vec![first.endpoint()]),
            };
            let mut node = Node::new(i, root.path(), addrs, entry, options, None);
            node.spawn();
            nodes.push(node);
            if i == 0 {
                wait_https_ready(&mut nodes[0], &ca).await;
            }
        }
        for node in &mut nodes[1..] {
            wait_https_ready(node, &ca).await;
        }
        let cluster = TlsCluster {
            _root: root,
            nodes,
            ca,
        };
        // As the harness does: no test means to run on a meta group one failure from stopping.
        let client = cluster.client();
        let want = if n >= 3 { 3 } else { 1 };
        wait_until(
            Duration::from_secs(60),
            "the meta group has its voters",
            async || {
                client.cluster_status().await.is_ok_and(|s| {
                    let voters = s
                        .nodes
                        .iter()
                        .filter(|n| matches!(n.meta_role, MetaRole::Leader | MetaRole::Follower));
                    voters.count() >= want
                })
            },
        )
        .await;
        cluster
    }

    fn client(&self) -> Client {
        let endpoints = self.nodes.iter().map(Node::endpoint).collect();
        Client::with_options(endpoints, tls_options(&self.ca)).expect("a client")
    }
}

/// Waits until `/readyz` answers 200 over HTTPS.
async fn wait_https_ready(node: &mut Node, ca: &Ca) {
    let what = format!("{} answers /readyz over HTTPS", node.name);
    let addr = node.http_addr.clone();
    let running = wait_for(Duration::from_secs(60), &what, async || {
        if !node.is_running() {
            return Some(false);
        }
        let ready = https_get(&addr, "/readyz", ca)
            .await
            .ok()?
            .starts_with("HTTP/1.1 200");
        ready.then_some(true)
    })
    .await;
    assert!(running, "{} exited\n{}", node.name, node.describe());
}

/// A TLS client configuration trusting `ca`, offering `alpn`.
fn rustls_client(ca: &Ca, identity: Option<&Pair>, alpn: &[u8]) -> rustls::ClientConfig {
    let mut roots = rustls::RootCertStore::empty();
    let der = CertificateDer::from_pem_slice(ca.pem().as_bytes()).expect("the CA as DER");
    roots.add(der).expect("a root");
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("protocol versions")
        .with_root_certificates(roots);
    let mut config = match identity {
        Some(pair) => {
            let certs = CertificateDer::pem_slice_iter(pair.cert.as_bytes())
                .collect::<Result<Vec<_>, _>>()
                .expect("certificates");
            let key = rustls_pki_types::PrivateKeyDer::from_pem_slice(pair.key.as_bytes())
                .expect("a key");
            builder
                .with_client_auth_cert(certs, key)
                .expect("an identity")
        }
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![alpn.to_vec()];
    config
}

/// A TLS connection to `addr` trusting `ca`, offering `alpn`: the stream and the server's leaf
/// certificate.
async fn tls_connect(
    addr: &str,
    ca: &Ca,
    alpn: &[u8],
) -> std::io::Result<(
    tokio_rustls::client::TlsStream<tokio::net::TcpStream>,
    CertificateDer<'static>,
)> {
    let connector = tokio_rustls::TlsConnector::from(Arc::new(rustls_client(ca, None, alpn)));
    let tcp = tokio::net::TcpStream::connect(addr).await?;
    let name = ServerName::try_from("127.0.0.1").expect("a server name");
    let stream = connector.connect(name, tcp).await?;
    let leaf = stream
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|c| c.first().cloned())
        .ok_or_else(|| std::io::Error::other("no server certificate"))?;
    Ok((stream, leaf))
}

/// `GET path` over HTTPS: the whole answer as text.
async fn https_get(addr: &str, path: &str, ca: &Ca) -> std::io::Result<String> {
    let exchange = async {
        let (mut stream, _) = tls_connect(addr, ca, b"http/1.1").await?;
        let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await?;
        let mut answer = Vec::new();
        // A server closing without close_notify still gave its whole answer.
        let _ = stream.read_to_end(&mut answer).await;
        Ok(String::from_utf8_lossy(&answer).to_string())
    };
    tokio::time::timeout(Duration::from_secs(2), exchange)
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "no HTTPS answer"))?
}

/// A node heartbeat sent to the peer port at `addr` over a connection made with `tls`.
async fn heartbeat(addr: &str, tls: Option<ClientTlsConfig>) -> Result<(), tonic::Status> {
    let scheme = if tls.is_some() { "https" } else { "http" };
    let mut endpoint = Endpoint::from_shared(format!("{scheme}://{addr}"))
        .expect("an endpoint")
        .connect_timeout(Duration::from_secs(2))
        .timeout(Duration::from_secs(2));
    if let Some(tls) = tls {
        endpoint = endpoint.tls_config(tls).expect("TLS settings");
    }
    let channel = endpoint
        .connect()
        .await
        .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
    let beat = HeartbeatRequest {
        from_node_id: 1,
        to_node_id: 0,
        leading: vec![],
        stopped: Default::default(),
        broken: vec![],
    };
    PeerClient::new(channel).heartbeat(beat).await.map(|_| ())
}

/// The call failed in the transport (no connection, a refused handshake): no service saw it.
fn never_served(s: &tonic::Status) -> bool {
    s.code() == tonic::Code::Unavailable || std::error::Error::source(s).is_some()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_with_mutual_tls_serves_clients_over_tls_and_refuses_the_rest() {
    let cluster = TlsCluster::start(3).await;
    let client = cluster.client();
    client.create_database("t", None, None).await.unwrap();
    client
        .wait_for_database("t", Duration::from_secs(30), |_| {})
        .await
        .unwrap();
    let put = client
        .put("t", "users", "alice", r#"{"name":"Alice"}"#, None)
        .await
        .unwrap();
    assert_eq!(put.version, 1);
    // Every node answers over TLS, forwarding over mutual TLS to the shard leader.
    for node in &cluster.nodes {
        let one = Client::with_options(vec![node.endpoint()], tls_options(&cluster.ca)).unwrap();
        let doc = one
            .get("t", "users", "alice", Consistency::Linearizable)
            .await
            .unwrap()
            .unwrap_or_else(|| panic!("{} does not see the document", node.name));
        assert_eq!(doc.version, 1);
    }
    let status = client.cluster_status().await.unwrap();
    assert_eq!(status.nodes.len(), 3, "{status:#?}");
    // A backup read of the shard from one named node goes over TLS too.
    let mut chunks = client
        .read_shard(&cluster.nodes[2].endpoint(), "t", 0)
        .await
        .unwrap();
    let mut read = 0;
    while let Some(chunk) = chunks.message().await.unwrap() {
        read += chunk.documents.len();
    }
    assert_eq!(read, 1, "the shard's one document");

    let node = &cluster.nodes[1];
    // A plaintext client is refused on the TLS client port.
    let plain = ClientOptions {
        total_timeout: Duration::from_secs(2),
        ..ClusterOptions::default().client_options
    };
    let plain = Client::with_options(vec![node.endpoint()], plain).unwrap();
    assert!(plain.cluster_status().await.is_err());
    // A client trusting another CA refuses the node's certificate.
    let stranger = Ca::new("stranger");
    let mut wrong_ca = tls_options(&stranger);
    wrong_ca.total_timeout = Duration::from_secs(2);
    let wrong_ca = Client::with_options(vec![node.endpoint()], wrong_ca).unwrap();
    assert!(wrong_ca.cluster_status().await.is_err());

    // The peer port: refused without a client certificate, with one of another CA, and in
    // plaintext; a certificate of the cluster CA gets through to the service.
    let trust = || {
        ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(cluster.ca.pem()))
            .domain_name("127.0.0.1")
    };
    let refused = |r: Result<(), tonic::Status>, what: &str| match r {
        Err(s) => assert!(never_served(&s), "{what}: {s:?}"),
        Ok(()) => panic!("{what}: the peer port answered"),
    };
    refused(
        heartbeat(&node.peer_addr, Some(trust())).await,
        "no certificate",
    );
    let foreign = stranger.issue("intruder");
    let foreign = Identity::from_pem(&foreign.cert, &foreign.key);
    refused(
        heartbeat(&node.peer_addr, Some(trust().identity(foreign))).await,
        "a certificate of another CA",
    );
    refused(heartbeat(&node.peer_addr, None).await, "plaintext");
    let member = cluster.ca.issue("operator");
    let member = Identity::from_pem(&member.cert, &member.key);
    let answered = heartbeat(&node.peer_addr, Some(trust().identity(member))).await;
    assert!(
        !matches!(&answered, Err(s) if never_served(s)),
        "a certificate of the cluster CA reaches the peer service: {answered:?}"
    );

    // HTTP speaks TLS too.
    let answer = https_get(&node.http_addr, "/healthz", &cluster.ca)
        .await
        .unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(!matches!(node.http_get("/healthz").await, Ok((200, _))));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_replaced_on_disk_under_load_is_presented_to_new_connections_and_loses_no_request()
 {
    let cluster = TlsCluster::start(1).await;
    let node = &cluster.nodes[0];
    let certs = cluster._root.path().join("certs-0");
    let first = std::fs::read(certs.join("node.crt")).unwrap();
    let first = CertificateDer::from_pem_slice(&first).unwrap();
    let (_, seen) = tls_connect(&node.client_addr, &cluster.ca, b"h2")
        .await
        .unwrap();
    assert_eq!(seen, first);

    // A client connected before the swap, and writers that keep writing through it, and
    // through new clients (new connections), all along the rotation.
    let client = cluster.client();
    client.create_database("t", None, None).await.unwrap();
    client
        .wait_for_database("t", Duration::from_secs(30), |_| {})
        .await
        .unwrap();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = |client: Client, name: &'static str, fresh: Option<ClientOptions>| {
        let stop = stop.clone();
        let endpoint = node.endpoint();
        tokio::spawn(async move {
            let mut acked = Vec::new();
            let mut i = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let id = format!("{name}-{i}");
                let client = match &fresh {
                    Some(options) => Client::with_options(vec![endpoint.clone()], options.clone())
                        .map_err(|e| format!("{id}: client: {e}"))?,
                    None => client.clone(),
                };
                client
                    .put("t", "c", &id, "{}", None)
                    .await
                    .map_err(|e| format!("{id}: {e}"))?;
                acked.push(id);
                i += 1;
            }
            Ok::<_, String>(acked)
        })
    };
    let steady = writer(client.clone(), "steady", None);
    let fresh = writer(client.clone(), "fresh", Some(tls_options(&cluster.ca)));

    let second = cluster.ca.issue("node-0 renewed");
    // Key first, then certificate: the node may see the pair half replaced in between and
    // must keep serving with the old one until both match.
    std::fs::write(certs.join("node.key"), &second.key).unwrap();
    std::fs::write(certs.join("node.crt"), &second.cert).unwrap();
    let second = CertificateDer::from_pem_slice(second.cert.as_bytes()).unwrap();
    let ports = [
        (&node.client_addr, &b"h2"[..]),
        (&node.http_addr, &b"http/1.1"[..]),
        (&node.peer_addr, &b"h2"[..]),
    ];
    for (addr, alpn) in ports {
        let what = format!("{addr} presents the renewed certificate");
        wait_until(Duration::from_secs(10), &what, async || {
            // The peer port asks for a client certificate; the handshake's server side is
            // visible before that is checked.
            matches!(tls_connect(addr, &cluster.ca, alpn).await, Ok((_, c)) if c == second)
        })
        .await;
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut acked = Vec::new();
    for (what, task) in [("steady", steady), ("fresh", fresh)] {
        match task.await.unwrap() {
            Ok(ids) => {
                assert!(
                    !ids.is_empty(),
                    "the {what} writer wrote during the rotation"
                );
                acked.extend(ids);
            }
            Err(e) => panic!("a write failed during the rotation: {e}"),
        }
    }
    // Every acknowledged write is there, read through the connection opened before the swap.
    for id in &acked {
        let doc = client
            .get("t", "c", id, Consistency::Linearizable)
            .await
            .unwrap();
        assert!(doc.is_some(), "{id} was acknowledged and is lost");
    }
}

/// A Peer call to `addr` stamped as `from` of `cluster` (as a node's own calls are).
fn stamped<T>(message: T, from: u64, cluster: Option<&str>) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    let metadata = request.metadata_mut();
    metadata.insert("x-flotilla-from", from.to_string().parse().unwrap());
    if let Some(cluster) = cluster {
        metadata.insert("x-flotilla-cluster", cluster.parse().unwrap());
    }
    request
}

fn assert_refused<T: std::fmt::Debug>(
    answer: Result<T, tonic::Status>,
    code: tonic::Code,
    reason: ErrorReason,
    what: &str,
) {
    let status = answer.expect_err(what);
    assert_eq!(status.code(), code, "{what}: {status:?}");
    assert_eq!(reason_of(&status), Some(reason), "{what}: {status:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_peer_message_is_checked_for_its_cluster_sender_and_target() {
    let cluster = Cluster::start(1, ClusterOptions::default()).await;
    let status = cluster.client().cluster_status().await.unwrap();
    let (id, ours) = (status.answered_by, status.cluster_id.as_str());
    let mut peer = PeerClient::connect(format!("http://{}", cluster.node(0).peer_addr))
        .await
        .unwrap();
    let beat = |from: u64, to: u64| HeartbeatRequest {
        from_node_id: from,
        to_node_id: to,
        leading: vec![],
        stopped: Default::default(),
        broken: vec![],
    };
    use tonic::Code::*;
    let answer = peer.heartbeat(stamped(beat(id, 0), id, Some(ours))).await;
    assert_refused(
        answer,
        InvalidArgument,
        ErrorReason::WrongTarget,
        "to node 0",
    );
    let answer = peer
        .heartbeat(stamped(beat(id, id + 1), id, Some(ours)))
        .await;
    assert_refused(
        answer,
        FailedPrecondition,
        ErrorReason::WrongTarget,
        "to another node",
    );
    let answer = peer.heartbeat(stamped(beat(id, id), id, None)).await;
    assert_refused(
        answer,
        FailedPrecondition,
        ErrorReason::WrongCluster,
        "no cluster",
    );
    let answer = peer
        .heartbeat(stamped(beat(id, id), id, Some("other")))
        .await;
    assert_refused(
        answer,
        FailedPrecondition,
        ErrorReason::WrongCluster,
        "another cluster",
    );
    let answer = peer
        .heartbeat(stamped(beat(999, id), 999, Some(ours)))
        .await;
    assert_refused(
        answer,
        PermissionDenied,
        ErrorReason::UnknownSender,
        "unknown sender",
    );
    let answer = peer.heartbeat(stamped(beat(999, id), id, Some(ours))).await;
    assert_refused(
        answer,
        InvalidArgument,
        ErrorReason::UnknownSender,
        "two senders",
    );
    // A heartbeat from a known node of this cluster, for this node, is answered.
    let answer = peer.heartbeat(stamped(beat(id, id), id, Some(ours))).await;
    assert_eq!(answer.unwrap().into_inner().to_node_id, id);

    // Raft messages: the same checks, then the payload, before it reaches Raft.
    let raft = |from: u64, to: u64, payload: &[u8]| AppendEntriesRequest {
        raft: Some(RaftRequest {
            group_id: 0,
            payload: payload.to_vec(),
            to_node_id: to,
            from_node_id: from,
        }),
    };
    let answer = peer
        .append_entries(stamped(raft(999, id, b"x"), 999, Some(ours)))
        .await;
    assert_refused(
        answer,
        PermissionDenied,
        ErrorReason::UnknownSender,
        "forged append",
    );
    let answer = peer
        .append_entries(stamped(raft(id, 0, b"x"), id, Some(ours)))
        .await;
    assert_refused(
        answer,
        InvalidArgument,
        ErrorReason::WrongTarget,
        "append to node 0",
    );
    let answer = peer
        .append_entries(stamped(raft(id, id, b"\xff\xff\xff"), id, Some(ours)))
        .await;
    assert_refused(
        answer,
        InvalidArgument,
        ErrorReason::MalformedMessage,
        "garbage",
    );
    let answer = peer
        .led_shards(stamped(LedShardsRequest {}, 999, Some(ours)))
        .await;
    assert_refused(
        answer,
        PermissionDenied,
        ErrorReason::UnknownSender,
        "led shards",
    );
    // Forwarded requests on the peer port are checked too.
    let mut admin = AdminClient::connect(format!("http://{}", cluster.node(0).peer_addr))
        .await
        .unwrap();
    let answer = admin
        .cluster_status(stamped(ClusterStatusRequest {}, id, Some("other")))
        .await;
    assert_refused(
        answer,
        FailedPrecondition,
        ErrorReason::WrongCluster,
        "forwarded",
    );

    // The node keeps serving: the meta group still answers and takes writes.
    cluster
        .client()
        .create_database("t", None, None)
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_join_cannot_take_the_id_of_a_registered_node() {
    let mut cluster = Cluster::start(3, ClusterOptions::default()).await;
    let status = cluster.client().cluster_status().await.unwrap();
    let node_of = |i: usize| {
        status
            .nodes
            .iter()
            .find(|n| n.client_addr == cluster.node(i).client_addr)
            .cloned()
            .unwrap()
    };
    let (one, two) = (node_of(1), node_of(2));
    let mut peer = PeerClient::connect(format!("http://{}", cluster.node(0).peer_addr))
        .await
        .unwrap();
    let [client_addr, peer_addr, _] = free_addrs(1).remove(0);
    let claim = |id: u64, name: &str| JoinClusterRequest {
        node: Some(NodeInfo {
            id,
            name: name.into(),
            client_addr: client_addr.clone(),
            peer_addr: peer_addr.clone(),
        }),
        labels: Default::default(),
        join_token: String::new(),
    };
    use tonic::Code::FailedPrecondition;
    // Node 1 still answers at its address: nobody else may be node 1.
    let answer = peer.join_cluster(claim(one.id, &one.name)).await;
    assert_refused(
        answer,
        FailedPrecondition,
        ErrorReason::IdentityTaken,
        "live id",
    );
    let answer = peer.join_cluster(claim(one.id, "intruder")).await;
    assert_refused(
        answer,
        FailedPrecondition,
        ErrorReason::IdentityTaken,
        "other name",
    );

    // Node 2 stops: a join under its id and name from a new address is taken for the node
    // itself, moved; when the real node comes back at its own address, it moves back.
    cluster.sigterm(2).await;
    let answer = peer.join_cluster(claim(two.id, "intruder")).await;
    assert_refused(
        answer,
        FailedPrecondition,
        ErrorReason::IdentityTaken,
        "stopped, renamed",
    );
    peer.join_cluster(claim(two.id, &two.name)).await.unwrap();
    cluster.restart(2);
    cluster.wait_ready(2).await;
    let client = cluster.client();
    wait_until(
        Duration::from_secs(30),
        "node 2 is back at its address",
        async || {
            client.cluster_status().await.is_ok_and(|s| {
                s.nodes
                    .iter()
                    .any(|n| n.id == two.id && n.peer_addr == two.peer_addr)
            })
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forwarded_write_for_a_shard_its_id_does_not_hash_to_is_refused() {
    use flotilla_proto::v1::documents_client::DocumentsClient;
    use flotilla_proto::v1::{BatchOp, BatchRequest, PutOp, batch_op};

    let cluster = Cluster::start(1, ClusterOptions::default()).await;
    let client = cluster.client();
    client.create_database("t", None, Some(4)).await.unwrap();
    client
        .wait_for_database("t", Duration::from_secs(30), |_| {})
        .await
        .unwrap();
    let home = client.put("t", "c", "a", "{}", None).await.unwrap().shard;
    let status = client.cluster_status().await.unwrap();
    let (id, ours) = (status.answered_by, status.cluster_id.clone());
    let mut docs = DocumentsClient::connect(format!("http://{}", cluster.node(0).peer_addr))
        .await
        .unwrap();
    let put = |shard: u32| {
        let batch = BatchRequest {
            database: "t".into(),
            ops: vec![BatchOp {
                op: Some(batch_op::Op::Put(PutOp {
                    collection: "c".into(),
                    id: "a".into(),
                    json: r#"{"v":2}"#.into(),
                    if_version: None,
                })),
            }],
            request_id: None,
        };
        let mut request = stamped(batch, id, Some(&ours));
        let shard = shard.to_string().parse().unwrap();
        request.metadata_mut().insert("x-flotilla-shard", shard);
        request
    };
    let answer = docs.batch(put((home + 1) % 4)).await;
    assert_refused(
        answer,
        tonic::Code::FailedPrecondition,
        ErrorReason::WrongShard,
        "a write for another shard",
    );
    let answer = docs.batch(put(home)).await.unwrap().into_inner();
    assert_eq!(answer.shard, home);
    // Nothing landed on the wrong shard: the document has the one write each that was taken.
    let doc = client
        .get("t", "c", "a", Consistency::Linearizable)
        .await
        .unwrap()
        .unwrap();
    assert_eq!((doc.version, doc.shard), (2, home));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_without_the_clusters_join_token_cannot_join() {
    let options = ClusterOptions::default().arg("--join-token").arg("s3cret");
    let mut cluster = Cluster::start(1, options).await;
    let mut peer = PeerClient::connect(format!("http://{}", cluster.node(0).peer_addr))
        .await
        .unwrap();
    let [client_addr, peer_addr, _] = free_addrs(1).remove(0);
    let join = |token: &str| JoinClusterRequest {
        node: Some(NodeInfo {
            id: 4242,
            name: "stranger".into(),
            client_addr: client_addr.clone(),
            peer_addr: peer_addr.clone(),
        }),
        labels: Default::default(),
        join_token: token.into(),
    };
    use tonic::Code::PermissionDenied;
    let answer = peer.join_cluster(join("")).await;
    assert_refused(
        answer,
        PermissionDenied,
        ErrorReason::JoinTokenRequired,
        "no token",
    );
    let answer = peer.join_cluster(join("guess")).await;
    assert_refused(
        answer,
        PermissionDenied,
        ErrorReason::JoinTokenInvalid,
        "a wrong token",
    );
    let status = cluster.client().cluster_status().await.unwrap();
    assert_eq!(status.nodes.len(), 1, "{status:#?}");
    // A node started with the token joins.
    let i = cluster.add_node().await;
    cluster.wait_ready(i).await;
    let client = cluster.client();
    wait_until(
        Duration::from_secs(30),
        "the new node is a member",
        async || {
            client
                .cluster_status()
                .await
                .is_ok_and(|s| s.nodes.len() == 2)
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_certificate_names_its_user_when_certificates_authenticate() {
    let cluster = TlsCluster::start_with(1, &["--client-cert-auth"]).await;
    let setup = cluster.client();
    setup.create_database("t", None, None).await.unwrap();
    setup
        .wait_for_database("t", Duration::from_secs(30), |_| {})
        .await
        .unwrap();
    setup.user_add("root", "rootpw").await.unwrap();
    setup.user_grant_role("root", "root").await.unwrap();
    setup.role_add("t-read").await.unwrap();
    setup
        .role_grant_permission("t-read", "t", flotilla_client::Permission::Read)
        .await
        .unwrap();
    // A user without a password: certificates only.
    setup.user_add("reader", "").await.unwrap();
    setup.user_grant_role("reader", "t-read").await.unwrap();
    setup.auth_enable().await.unwrap();

    let with_cert = |common_name: &str| {
        let pair = cluster.ca.issue(common_name);
        let mut options = tls_options(&cluster.ca);
        if let Some(tls) = options.tls.as_mut() {
            tls.identity = Some((pair.cert.into_bytes(), pair.key.into_bytes()));
        }
        Client::with_options(vec![cluster.nodes[0].endpoint()], options).unwrap()
    };
    let reader = with_cert("reader");
    assert!(
        reader
            .get("t", "c", "k", Consistency::Linearizable)
            .await
            .unwrap()
            .is_none()
    );
    assert!(matches!(
        reader.put("t", "c", "k", "{}", None).await,
        Err(flotilla_client::Error::PermissionDenied(_))
    ));
    let root = with_cert("root");
    root.put("t", "c", "k", "{}", None).await.unwrap();
    assert_eq!(
        root.auth_status().await.unwrap(),
        (true, "root".to_string())
    );
    // A certificate of the CA for a name that is no user, and no certificate at all.
    assert!(matches!(
        with_cert("eve").cluster_status().await,
        Err(flotilla_client::Error::Unauthenticated(_))
    ));
    assert!(matches!(
        cluster.client().cluster_status().await,
        Err(flotilla_client::Error::Unauthenticated(_))
    ));
}

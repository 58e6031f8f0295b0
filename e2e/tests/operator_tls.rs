//! The certificates the operator issues work with a real node: a node started with the TLS
//! flags the operator gives its pods, reading the files of the Secrets the operator fills,
//! serves the operator's admin calls over TLS with its client certificate (common name
//! `root`), keeps doing so once users are enabled (the certificate authenticates as the
//! administrator), and refuses a client without a certificate of the cluster CA.

use flotilla_client::{Client, ClientOptions, ClientTls};
use flotilla_operator::admin::ClusterAdmin;
use flotilla_operator::admin::grpc::GrpcAdmin;
use flotilla_operator::crd::cluster_funcs::{OPERATOR_USER, TLS_DIR};
use flotilla_operator::crd::{Cluster, ClusterSpec, TlsSpec};
use flotilla_operator::desired::node_args;
use flotilla_operator::pki::{self, LeafRequest, Usage};
use flotilla_testkit::cluster::{ClusterOptions, Entry, Node, free_addrs};
use flotilla_testkit::wait::wait_until;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

/// A one-node `Cluster` named `db` in namespace `shop`, with TLS from the operator's CA.
fn cluster() -> Cluster {
    let spec: ClusterSpec = match serde_json::from_value(serde_json::json!({
        "replicas": 1,
        "image": "flotilla/flotilla-node:test",
        "metaVoters": 3,
    })) {
        Ok(spec) => spec,
        Err(error) => panic!("spec: {error}"),
    };
    let mut cluster = Cluster::new("db", spec);
    cluster.metadata.namespace = Some("shop".to_owned());
    cluster.spec.tls = Some(TlsSpec {
        enabled: true,
        ..TlsSpec::default()
    });
    cluster
}

fn made<T>(result: flotilla_operator::Result<T>) -> T {
    match result {
        Ok(value) => value,
        Err(error) => panic!("{error}"),
    }
}

/// The TLS flags the operator gives its pods, with the Secret's mount point replaced by `dir`.
fn tls_flags(cluster: &Cluster, dir: &std::path::Path) -> Vec<String> {
    let args = made(node_args(cluster));
    let first = args
        .iter()
        .position(|a| a == "--tls-cert")
        .unwrap_or(args.len());
    let flags: Vec<String> = args[first..]
        .iter()
        .map(|a| a.replace(TLS_DIR, &dir.display().to_string()))
        .collect();
    assert!(flags.iter().any(|a| a == "--peer-tls-ca"), "{args:?}");
    assert!(flags.iter().any(|a| a == "--client-cert-auth"), "{args:?}");
    flags
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_with_the_operators_certificates_serves_the_operator_as_administrator() {
    flotilla_operator::use_ring_crypto();
    let cluster = cluster();
    let now = SystemTime::now();
    let ca = made(pki::new_ca("db-ca", now, pki::CA_LIFETIME));
    let lifetime = cluster.certificate_lifetime();
    let node_cert = made(pki::issue(
        &ca.pem,
        &LeafRequest {
            common_name: "db-node".to_owned(),
            dns_names: made(cluster.node_certificate_names()),
            usage: Usage::Node,
            lifetime,
        },
        now,
    ));
    let operator_cert = made(pki::issue(
        &ca.pem,
        &LeafRequest {
            common_name: OPERATOR_USER.to_owned(),
            dns_names: Vec::new(),
            usage: Usage::Client,
            lifetime,
        },
        now,
    ));
    let bundle = pki::bundle([ca.pem.cert.as_str()]);

    // The files of the mounted `db-tls` Secret.
    let root = match tempfile::Builder::new().prefix("flotilla-optls-").tempdir() {
        Ok(dir) => dir,
        Err(error) => panic!("a temporary directory: {error}"),
    };
    let certs = root.path().join("tls");
    for (file, text) in [
        ("tls.crt", &node_cert.pem.cert),
        ("tls.key", &node_cert.pem.key),
        ("ca.crt", &bundle),
    ] {
        if let Err(error) =
            std::fs::create_dir_all(&certs).and_then(|()| std::fs::write(certs.join(file), text))
        {
            panic!("writing {file}: {error}");
        }
    }
    let mut options = ClusterOptions::default();
    for flag in tls_flags(&cluster, &certs) {
        options = options.arg(flag);
    }
    let addrs = match free_addrs(1).into_iter().next() {
        Some(addrs) => addrs,
        None => panic!("no free addresses"),
    };
    let mut node = Node::new(0, root.path(), addrs, Entry::Bootstrap, options, None);
    node.spawn();

    // The operator's admin client, reaching the pod's name at the node's address.
    let client_addr = node.endpoint();
    let admin = GrpcAdmin::with_address_map(Arc::new(move |_: &str| client_addr.clone()));
    let operator_tls = ClientTls {
        ca_pem: bundle.clone().into_bytes(),
        identity: Some((
            operator_cert.pem.cert.clone().into_bytes(),
            operator_cert.pem.key.clone().into_bytes(),
        )),
        domain: Some(made(cluster.client_service_dns_name())),
    };
    // Without its certificate the operator does not call a TLS cluster at all.
    assert!(admin.membership(&cluster).await.is_err());
    admin.use_client_tls(&cluster, Some(operator_tls.clone()));
    wait_until(
        Duration::from_secs(60),
        "the operator reads the membership over TLS",
        async || {
            assert!(node.is_running(), "the node exited\n{}", node.describe());
            admin.membership(&cluster).await.is_ok()
        },
    )
    .await;

    // Users enabled: the operator's certificate names the administrator.
    let setup = match Client::with_options(
        vec![node.endpoint()],
        ClientOptions {
            tls: Some(operator_tls.clone()),
            ..ClientOptions::default()
        },
    ) {
        Ok(client) => client,
        Err(error) => panic!("a client: {error}"),
    };
    if let Err(error) = setup.user_add(OPERATOR_USER, "").await {
        panic!("adding the root user: {error}");
    }
    if let Err(error) = setup.user_grant_role(OPERATOR_USER, "root").await {
        panic!("granting root: {error}");
    }
    if let Err(error) = setup.auth_enable().await {
        panic!("enabling auth: {error}");
    }
    match admin.membership(&cluster).await {
        Ok(membership) => assert!(!membership.nodes.is_empty(), "{membership:?}"),
        Err(error) => panic!("the operator as root: {error}"),
    }

    // A client that trusts the CA but has no certificate is not the administrator.
    let anonymous = match Client::with_options(
        vec![node.endpoint()],
        ClientOptions {
            tls: Some(ClientTls {
                identity: None,
                ..operator_tls.clone()
            }),
            ..ClientOptions::default()
        },
    ) {
        Ok(client) => client,
        Err(error) => panic!("a client: {error}"),
    };
    assert!(anonymous.list_databases().await.is_err());

    // A certificate of another CA is refused outright.
    let other = made(pki::new_ca("other-ca", now, pki::CA_LIFETIME));
    let stranger = made(pki::issue(
        &other.pem,
        &LeafRequest {
            common_name: OPERATOR_USER.to_owned(),
            dns_names: Vec::new(),
            usage: Usage::Client,
            lifetime,
        },
        now,
    ));
    let impostor = match Client::with_options(
        vec![node.endpoint()],
        ClientOptions {
            tls: Some(ClientTls {
                identity: Some((
                    stranger.pem.cert.into_bytes(),
                    stranger.pem.key.into_bytes(),
                )),
                ..operator_tls
            }),
            total_timeout: Duration::from_secs(5),
            ..ClientOptions::default()
        },
    ) {
        Ok(client) => client,
        Err(error) => panic!("a client: {error}"),
    };
    assert!(impostor.list_databases().await.is_err());
}

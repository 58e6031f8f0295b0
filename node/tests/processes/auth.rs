//! Users, roles and tokens with real node processes: once auth is enabled every call needs
//! credentials; a user's roles decide what they may read, write and administer, database by
//! database; tokens expire (the client library authenticates again on its own) and stop
//! working when their user's password changes; user and role changes made through any node
//! reach the meta leader. Dropping a database needs its name twice.

use std::time::Duration;

use flotilla_client::{Client, ClientOptions, Consistency, Credentials, Error, Permission};
use flotilla_proto::reason_of;
use flotilla_proto::v1::admin_client::AdminClient;
use flotilla_proto::v1::auth_client::AuthClient;
use flotilla_proto::v1::documents_client::DocumentsClient;
use flotilla_proto::v1::{AuthenticateRequest, DropDatabaseRequest, ErrorReason, GetRequest};
use flotilla_testkit::cluster::{Cluster, ClusterOptions};
use flotilla_testkit::wait::wait_until;

/// How long the nodes' tokens live in these tests.
const TOKEN_TTL: &str = "3s";

fn as_user(cluster: &Cluster, user: &str, password: &str) -> Client {
    cluster.client_with(ClientOptions {
        credentials: Some(Credentials::new(user, password)),
        ..ClusterOptions::default().client_options
    })
}

fn unauthenticated<T: std::fmt::Debug>(r: flotilla_client::Result<T>, what: &str) {
    assert!(matches!(r, Err(Error::Unauthenticated(_))), "{what}: {r:?}");
}

fn denied<T: std::fmt::Debug>(r: flotilla_client::Result<T>, what: &str) {
    assert!(
        matches!(r, Err(Error::PermissionDenied(_))),
        "{what}: {r:?}"
    );
}

/// A raw token of `user` from node `i`.
async fn token(cluster: &Cluster, i: usize, user: &str, password: &str) -> String {
    let mut auth = AuthClient::connect(format!("http://{}", cluster.node(i).client_addr))
        .await
        .unwrap();
    let answer = auth
        .authenticate(AuthenticateRequest {
            user: user.into(),
            password: password.into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(!answer.token.is_empty());
    answer.token
}

/// A linearizable get of shop/c/k with `token` on node `i`.
async fn get_with(cluster: &Cluster, i: usize, token: &str) -> Result<(), tonic::Status> {
    let mut docs = DocumentsClient::connect(format!("http://{}", cluster.node(i).client_addr))
        .await
        .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
    let mut request = tonic::Request::new(GetRequest {
        database: "shop".into(),
        collection: "c".into(),
        id: "k".into(),
        consistency: 0,
        shard_key: String::new(),
        at_least: Vec::new(),
    });
    let bearer = format!("Bearer {token}").parse().unwrap();
    request.metadata_mut().insert("authorization", bearer);
    docs.get(request).await.map(|_| ())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn users_and_roles_decide_every_call_once_auth_is_enabled() {
    let options = ClusterOptions::default()
        .arg("--auth-token-ttl")
        .arg(TOKEN_TTL);
    let cluster = Cluster::start(3, options).await;
    // Prepared without auth, through a node that may not lead the meta group (forwarded).
    let setup = cluster.node_client(2, ClusterOptions::default().client_options);
    for db in ["shop", "hr"] {
        setup.create_database(db, None, None).await.unwrap();
        setup
            .wait_for_database(db, Duration::from_secs(30), |_| {})
            .await
            .unwrap();
    }
    let status = setup.cluster_status().await.unwrap();
    assert!(
        !status.auth_enabled,
        "a new cluster runs without auth and says so"
    );
    let enable = setup.auth_enable().await;
    assert!(
        matches!(enable, Err(Error::FailedPrecondition(_))),
        "auth needs a root user first: {enable:?}"
    );
    setup.user_add("root", "rootpw").await.unwrap();
    setup.user_grant_role("root", "root").await.unwrap();
    setup.role_add("shop-reader").await.unwrap();
    setup
        .role_grant_permission("shop-reader", "shop", Permission::Read)
        .await
        .unwrap();
    setup.role_add("shop-writer").await.unwrap();
    setup
        .role_grant_permission("shop-writer", "shop", Permission::Write)
        .await
        .unwrap();
    for (user, role) in [("ann", "shop-reader"), ("bob", "shop-writer")] {
        setup.user_add(user, &format!("{user}pw")).await.unwrap();
        setup.user_grant_role(user, role).await.unwrap();
    }
    let added = setup.user_add("ann", "again").await;
    assert!(matches!(added, Err(Error::AlreadyExists(_))), "{added:?}");
    setup.auth_enable().await.unwrap();

    // Without credentials nothing but authenticating is served.
    let anonymous = cluster.client();
    unauthenticated(anonymous.cluster_status().await, "anonymous status");
    unauthenticated(
        anonymous.put("shop", "c", "k", "{}", None).await,
        "anonymous put",
    );
    unauthenticated(
        as_user(&cluster, "ann", "wrong").cluster_status().await,
        "a wrong password",
    );
    unauthenticated(
        as_user(&cluster, "eve", "evepw").cluster_status().await,
        "an unknown user",
    );

    let root = as_user(&cluster, "root", "rootpw");
    root.put("shop", "c", "k", r#"{"v":1}"#, None)
        .await
        .unwrap();
    root.put("hr", "c", "k", r#"{"v":1}"#, None).await.unwrap();
    assert!(root.auth_status().await.unwrap() == (true, "root".to_string()));
    assert!(root.cluster_status().await.unwrap().auth_enabled);

    // A reader reads its database only, and writes nothing.
    let ann = as_user(&cluster, "ann", "annpw");
    let doc = ann
        .get("shop", "c", "k", Consistency::Linearizable)
        .await
        .unwrap();
    assert!(doc.is_some());
    denied(ann.put("shop", "c", "k", "{}", None).await, "reader put");
    denied(
        ann.get("hr", "c", "k", Consistency::Linearizable).await,
        "reader of another database",
    );
    denied(ann.user_list().await, "reader lists users");
    // A backup read of a shard carries the client's token, to the one node it names.
    let addr = cluster.node(2).client_addr.clone();
    let mut chunks = ann.read_shard(&addr, "shop", 0).await.unwrap();
    let mut read = 0;
    while let Some(chunk) = chunks.message().await.unwrap() {
        read += chunk.documents.len();
    }
    assert_eq!(read, 1, "the shard's one document");
    unauthenticated(
        anonymous.read_shard(&addr, "shop", 0).await.map(drop),
        "an anonymous backup read",
    );
    denied(
        ann.read_shard(&addr, "hr", 0).await.map(drop),
        "a backup read of another database",
    );
    // A writer writes its database, and administers nothing.
    let bob = as_user(&cluster, "bob", "bobpw");
    bob.put("shop", "c", "k2", "{}", None).await.unwrap();
    denied(bob.drop_database("shop").await, "writer drops");
    denied(bob.remove_node(1).await, "writer removes a node");
    denied(
        bob.list_with("hr", "c", &Default::default()).await,
        "writer lists another database",
    );
    // Calls made together (one Multi request) are answered each on its own.
    let (mine, theirs) = tokio::join!(
        bob.get("shop", "c", "k", Consistency::Linearizable),
        bob.get("hr", "c", "k", Consistency::Linearizable),
    );
    assert!(mine.unwrap().is_some());
    denied(theirs, "a Multi call on another database");

    // Tokens expire; the client library authenticates again on its own.
    let raw = token(&cluster, 0, "ann", "annpw").await;
    get_with(&cluster, 1, &raw).await.unwrap();
    wait_until(
        Duration::from_secs(15),
        "the raw token expires",
        async || {
            matches!(get_with(&cluster, 1, &raw).await,
            Err(s) if reason_of(&s) == Some(ErrorReason::TokenExpired))
        },
    )
    .await;
    assert!(
        ann.get("shop", "c", "k", Consistency::Linearizable)
            .await
            .unwrap()
            .is_some()
    );

    // A new password revokes every token issued before, on every node.
    let raw = token(&cluster, 1, "ann", "annpw").await;
    get_with(&cluster, 2, &raw).await.unwrap();
    root.user_change_password("ann", "annpw2").await.unwrap();
    for i in 0..3 {
        let what = format!("node {i} refuses the token of the old password");
        wait_until(Duration::from_secs(10), &what, async || {
            matches!(get_with(&cluster, i, &raw).await,
                Err(s) if reason_of(&s) == Some(ErrorReason::TokenInvalid))
        })
        .await;
    }
    unauthenticated(
        as_user(&cluster, "ann", "annpw").cluster_status().await,
        "the old password",
    );
    as_user(&cluster, "ann", "annpw2")
        .cluster_status()
        .await
        .unwrap();

    // Revoking a grant takes effect at once, token or not.
    root.role_revoke_permission("shop-reader", "shop")
        .await
        .unwrap();
    let ann = as_user(&cluster, "ann", "annpw2");
    wait_until(Duration::from_secs(10), "the grant is gone", async || {
        matches!(
            ann.get("shop", "c", "k", Consistency::Linearizable).await,
            Err(Error::PermissionDenied(_))
        )
    })
    .await;

    // The root user stays root while auth is on; turning auth off opens every call again.
    let revoked = root.user_revoke_role("root", "root").await;
    assert!(
        matches!(revoked, Err(Error::FailedPrecondition(_))),
        "{revoked:?}"
    );
    root.auth_disable().await.unwrap();
    wait_until(Duration::from_secs(10), "calls need no token", async || {
        anonymous.cluster_status().await.is_ok()
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drop_that_does_not_name_its_database_twice_is_refused() {
    let cluster = Cluster::start(1, ClusterOptions::default()).await;
    let client = cluster.client();
    client.create_database("shop", None, None).await.unwrap();
    let mut admin = AdminClient::connect(format!("http://{}", cluster.node(0).client_addr))
        .await
        .unwrap();
    for confirm in ["", "other"] {
        let answer = admin
            .drop_database(DropDatabaseRequest {
                name: "shop".into(),
                confirm: confirm.into(),
            })
            .await
            .expect_err("refused");
        assert_eq!(answer.code(), tonic::Code::FailedPrecondition);
        assert_eq!(reason_of(&answer), Some(ErrorReason::ConfirmationRequired));
    }
    assert_eq!(client.list_databases().await.unwrap().len(), 1);
    // The client library names it twice.
    client.drop_database("shop").await.unwrap();
    assert!(client.list_databases().await.unwrap().is_empty());
}

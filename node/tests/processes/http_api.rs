//! The HTTP/JSON API against a real three-node cluster, through a real HTTP client (reqwest):
//! every endpoint of the OpenAPI document the node serves is called, every JSON answer (errors
//! included) is validated against the schema the document gives for its path, method and
//! status, and the calls cover every operation the document lists.

use std::collections::BTreeSet;
use std::time::Duration;

use eventsource_stream::Eventsource;
use flotilla_testkit::cluster::{Cluster, ClusterOptions};
use flotilla_testkit::wait::wait_until;
use futures::StreamExt;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

/// The served OpenAPI document, and the operations called so far.
struct Api {
    http: reqwest::Client,
    base: String,
    document: Value,
    called: BTreeSet<(String, String)>,
}

/// One answer: its status, headers and JSON body (`Null` when it has none).
struct Answer {
    status: StatusCode,
    headers: reqwest::header::HeaderMap,
    body: Value,
}

impl Answer {
    fn etag(&self) -> Option<&str> {
        self.headers.get("etag").and_then(|v| v.to_str().ok())
    }

    /// Asserts an error answer: its status, code and reason.
    fn expect_error(&self, status: u16, code: &str, reason: Option<&str>) {
        assert_eq!(self.status.as_u16(), status, "{}", self.body);
        assert_eq!(self.body["code"], code, "{}", self.body);
        assert_eq!(self.body["reason"].as_str(), reason, "{}", self.body);
        assert!(self.body["message"].is_string(), "{}", self.body);
    }
}

impl Api {
    async fn connect(addr: &str) -> Api {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(20))
            .build()
            .unwrap_or_else(|e| panic!("HTTP client: {e}"));
        let base = format!("http://{addr}");
        let response = http
            .get(format!("{base}/openapi.json"))
            .send()
            .await
            .unwrap_or_else(|e| panic!("GET /openapi.json: {e}"));
        assert_eq!(response.status(), StatusCode::OK);
        let text = response.text().await.unwrap_or_default();
        if let Err(e) = oas3::from_json(&text) {
            panic!("/openapi.json is not an OpenAPI 3.1 document: {e}\n{text}");
        }
        let document: Value =
            serde_json::from_str(&text).unwrap_or_else(|e| panic!("/openapi.json: {e}"));
        Api {
            http,
            base,
            document,
            called: BTreeSet::new(),
        }
    }

    /// Every (path template, method) the document lists.
    fn operations(&self) -> BTreeSet<(String, String)> {
        let mut all = BTreeSet::new();
        for (path, item) in self.document["paths"].as_object().into_iter().flatten() {
            for method in item.as_object().into_iter().flatten().map(|(m, _)| m) {
                all.insert((path.clone(), method.clone()));
            }
        }
        all
    }

    /// Calls `method template` with the path parameters filled in from `args`, checks the
    /// answer against the document, and returns it.
    async fn call(
        &mut self,
        method: Method,
        template: &str,
        args: &[&str],
        build: impl FnOnce(reqwest::RequestBuilder) -> reqwest::RequestBuilder,
    ) -> Answer {
        let mut path = String::new();
        let mut args = args.iter();
        for segment in template.split('/').skip(1) {
            path.push('/');
            if segment.starts_with('{') {
                let arg = args
                    .next()
                    .unwrap_or_else(|| panic!("{template}: too few args"));
                path.push_str(&percent(arg));
            } else {
                path.push_str(segment);
            }
        }
        let request = build(
            self.http
                .request(method.clone(), format!("{}{path}", self.base)),
        );
        let response = request
            .send()
            .await
            .unwrap_or_else(|e| panic!("{method} {path}: {e}"));
        let status = response.status();
        let headers = response.headers().clone();
        let text = response.text().await.unwrap_or_default();
        let body = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or_else(|e| {
                panic!("{method} {path} answered {status} with no JSON ({e}): {text}")
            })
        };
        let operation = (template.to_owned(), method.as_str().to_lowercase());
        self.check(&operation, status, &body);
        self.called.insert(operation);
        Answer {
            status,
            headers,
            body,
        }
    }

    /// The answer's status is documented for the operation, and its body is valid against
    /// the schema documented for that status.
    fn check(&self, (path, method): &(String, String), status: StatusCode, body: &Value) {
        let responses = &self.document["paths"][path][method]["responses"];
        let documented = &responses[status.as_str()];
        assert!(
            documented.is_object(),
            "{method} {path} answered {status}, which the document does not list: {body}"
        );
        let schema = &documented["content"]["application/json"]["schema"];
        if schema.is_null() {
            assert!(
                body.is_null(),
                "{method} {path} {status}: undocumented body {body}"
            );
            return;
        }
        self.validate(schema, body, &format!("{method} {path} {status}"));
    }

    fn validate(&self, schema: &Value, instance: &Value, what: &str) {
        let mut root = json!({ "allOf": [schema] });
        root["components"] = self.document["components"].clone();
        let validator = jsonschema::validator_for(&root)
            .unwrap_or_else(|e| panic!("{what}: the documented schema does not compile: {e}"));
        let errors: Vec<String> = validator
            .iter_errors(instance)
            .map(|e| format!("{} at {}", e, e.instance_path()))
            .collect();
        assert!(
            errors.is_empty(),
            "{what}: the answer does not match its schema:\n{}\n{instance:#}",
            errors.join("\n")
        );
    }

    fn schema(&self, name: &str) -> Value {
        json!({ "$ref": format!("#/components/schemas/{name}") })
    }
}

/// `text` as one path segment.
fn percent(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

const DOC: &str = "/v1/databases/{db}/collections/{coll}/documents/{id}";
const DOCS: &str = "/v1/databases/{db}/collections/{coll}/documents";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_endpoint_answers_as_its_openapi_document_says() {
    let mut cluster = Cluster::start(3, ClusterOptions::default()).await;
    cluster.wait_all_ready().await;
    // Through a node that is not necessarily the leader of anything: the API forwards as
    // gRPC does.
    let mut api = Api::connect(&cluster.node(1).http_addr).await;

    // Databases.
    let created = api
        .call(Method::POST, "/v1/databases", &[], |r| {
            r.json(&json!({"name": "web", "shards": 1, "replication_factor": 3}))
        })
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.body);
    assert_eq!(created.body["name"], "web");
    assert_eq!(created.body["replication_factor"], 3);
    api.call(Method::POST, "/v1/databases", &[], |r| {
        r.json(&json!({"name": "web"}))
    })
    .await
    .expect_error(409, "ALREADY_EXISTS", Some("ERROR_REASON_DATABASE_EXISTS"));
    api.call(Method::POST, "/v1/databases", &[], |r| {
        r.json(&json!({"name": "Bad Name"}))
    })
    .await
    .expect_error(400, "INVALID_ARGUMENT", None);
    api.call(Method::POST, "/v1/databases", &[], |r| {
        r.header("content-type", "application/json")
            .body("{not json")
    })
    .await
    .expect_error(400, "INVALID_ARGUMENT", None);
    let listed = api.call(Method::GET, "/v1/databases", &[], |r| r).await;
    assert!(
        listed.body["databases"]
            .as_array()
            .is_some_and(|d| d.iter().any(|d| d["name"] == "web")),
        "{}",
        listed.body
    );
    let client = cluster.client();
    client
        .wait_for_database("web", Duration::from_secs(30), |_| {})
        .await
        .unwrap_or_else(|e| panic!("database web not ready: {e}"));
    let status = api
        .call(Method::GET, "/v1/databases/{db}", &["web"], |r| r)
        .await;
    assert_eq!(status.status, StatusCode::OK, "{}", status.body);
    assert_eq!(status.body["shards"].as_array().map(Vec::len), Some(1));
    api.call(Method::GET, "/v1/databases/{db}", &["nope"], |r| r)
        .await
        .expect_error(404, "NOT_FOUND", Some("ERROR_REASON_DATABASE_NOT_FOUND"));
    let updated = api
        .call(Method::PATCH, "/v1/databases/{db}", &["web"], |r| {
            r.json(&json!({"replace_after": "30m"}))
        })
        .await;
    assert_eq!(updated.status, StatusCode::OK, "{}", updated.body);
    assert_eq!(updated.body["replace_after"], "30m");

    // One document, its versions and conditions.
    let args = ["web", "users", "alice"];
    let put = api
        .call(Method::PUT, DOC, &args, |r| {
            r.json(&json!({"name": "Alice", "n": 1}))
        })
        .await;
    assert_eq!(put.status, StatusCode::CREATED, "{}", put.body);
    assert_eq!(put.etag(), Some("\"1\""));
    let got = api.call(Method::GET, DOC, &args, |r| r).await;
    assert_eq!(got.status, StatusCode::OK);
    assert_eq!(got.etag(), Some("\"1\""));
    assert_eq!(got.body["body"], json!({"name": "Alice", "n": 1}));
    assert_eq!(got.body["version"], 1);
    let stale = api
        .call(Method::GET, DOC, &args, |r| {
            r.query(&[("consistency", "stale")])
                .header("if-none-match", "\"1\"")
        })
        .await;
    assert_eq!(stale.status, StatusCode::NOT_MODIFIED);
    let replaced = api
        .call(Method::PUT, DOC, &args, |r| {
            r.header("if-match", "\"1\"")
                .json(&json!({"name": "Alice", "n": 2}))
        })
        .await;
    assert_eq!(replaced.status, StatusCode::OK, "{}", replaced.body);
    assert_eq!(replaced.etag(), Some("\"2\""));
    api.call(Method::PUT, DOC, &args, |r| {
        r.header("if-match", "\"1\"").json(&json!({"lost": true}))
    })
    .await
    .expect_error(
        412,
        "FAILED_PRECONDITION",
        Some("ERROR_REASON_VERSION_MISMATCH"),
    );
    api.call(Method::PUT, DOC, &args, |r| {
        r.header("if-none-match", "*").json(&json!({"lost": true}))
    })
    .await
    .expect_error(
        412,
        "FAILED_PRECONDITION",
        Some("ERROR_REASON_VERSION_MISMATCH"),
    );
    api.call(Method::PUT, DOC, &args, |r| {
        r.header("if-match", "*").json(&json!({}))
    })
    .await
    .expect_error(400, "INVALID_ARGUMENT", None);
    api.call(Method::PUT, DOC, &args, |r| {
        r.header("content-type", "application/json")
            .body("{\"unterminated\": ")
    })
    .await
    .expect_error(400, "INVALID_ARGUMENT", None);
    let bob = api
        .call(Method::PUT, DOC, &["web", "users", "bob"], |r| {
            r.header("if-none-match", "*").json(&json!({"name": "Bob"}))
        })
        .await;
    assert_eq!(bob.status, StatusCode::CREATED, "{}", bob.body);
    api.call(Method::GET, DOC, &["web", "users", "nobody"], |r| r)
        .await
        .expect_error(404, "NOT_FOUND", Some("ERROR_REASON_DOCUMENT_NOT_FOUND"));
    api.call(Method::GET, DOC, &["nope", "users", "alice"], |r| r)
        .await
        .expect_error(404, "NOT_FOUND", Some("ERROR_REASON_DATABASE_NOT_FOUND"));

    // Listing in pages, by prefix.
    let first = api
        .call(Method::GET, DOCS, &["web", "users"], |r| {
            r.query(&[("limit", "1")])
        })
        .await;
    assert_eq!(first.status, StatusCode::OK, "{}", first.body);
    assert_eq!(first.body["documents"][0]["id"], "alice");
    let token = first.body["next_page_token"]
        .as_str()
        .unwrap_or_else(|| panic!("no page token: {}", first.body))
        .to_owned();
    let second = api
        .call(Method::GET, DOCS, &["web", "users"], |r| {
            r.query(&[("limit", "1"), ("page_token", token.as_str())])
        })
        .await;
    assert_eq!(second.body["documents"][0]["id"], "bob");
    assert!(
        second.body.get("next_page_token").is_none(),
        "{}",
        second.body
    );
    let prefixed = api
        .call(Method::GET, DOCS, &["web", "users"], |r| {
            r.query(&[("prefix", "b"), ("consistency", "lease")])
        })
        .await;
    assert_eq!(prefixed.body["documents"].as_array().map(Vec::len), Some(1));
    api.call(Method::GET, DOCS, &["web", "users"], |r| {
        r.query(&[("page_token", "!!not-a-token")])
    })
    .await
    .expect_error(400, "INVALID_ARGUMENT", None);
    api.call(Method::GET, DOCS, &["web", "users"], |r| {
        r.query(&[("limit", "many")])
    })
    .await
    .expect_error(400, "INVALID_ARGUMENT", None);

    // Atomic batches.
    let batch = api
        .call(Method::POST, "/v1/databases/{db}/batch", &["web"], |r| {
            r.json(&json!({"ops": [
                {"op": "put", "collection": "users", "id": "carol", "body": {"name": "Carol"}},
                {"op": "delete", "collection": "users", "id": "bob", "if_version": 1},
            ]}))
        })
        .await;
    assert_eq!(batch.status, StatusCode::OK, "{}", batch.body);
    assert_eq!(batch.body["results"][0]["version"], 1);
    assert_eq!(batch.body["results"][1]["deleted"], true);
    api.call(Method::POST, "/v1/databases/{db}/batch", &["web"], |r| {
        r.json(&json!({"ops": [
            {"op": "put", "collection": "users", "id": "dave", "body": {}},
            {"op": "put", "collection": "users", "id": "carol", "body": {}, "if_version": 7},
        ]}))
    })
    .await
    .expect_error(
        412,
        "FAILED_PRECONDITION",
        Some("ERROR_REASON_VERSION_MISMATCH"),
    );
    api.call(Method::GET, DOC, &["web", "users", "dave"], |r| r)
        .await
        .expect_error(404, "NOT_FOUND", Some("ERROR_REASON_DOCUMENT_NOT_FOUND"));
    api.call(Method::POST, "/v1/databases/{db}/batch", &["web"], |r| {
        r.json(&json!({"ops": [{"op": "rename"}]}))
    })
    .await
    .expect_error(400, "INVALID_ARGUMENT", None);

    // Deletes with a condition.
    api.call(Method::DELETE, DOC, &args, |r| {
        r.header("if-match", "\"1\"")
    })
    .await
    .expect_error(
        412,
        "FAILED_PRECONDITION",
        Some("ERROR_REASON_VERSION_MISMATCH"),
    );
    let deleted = api
        .call(Method::DELETE, DOC, &args, |r| {
            r.header("if-match", "\"2\"")
        })
        .await;
    assert_eq!(deleted.body["deleted"], true, "{}", deleted.body);
    let again = api.call(Method::DELETE, DOC, &args, |r| r).await;
    assert_eq!(again.body["deleted"], false, "{}", again.body);

    // The change feed from the start, then resumed after its second event.
    let watch_path = format!("{}/v1/databases/web/watch", api.base);
    let events = watch_events(
        &api,
        &watch_path,
        &[("collection", "users"), ("from_revision", "1")],
        None,
        6,
    )
    .await;
    let seen: Vec<(String, String)> = events
        .iter()
        .map(|(name, _, data)| {
            (
                name.clone(),
                data["document"]["id"].as_str().unwrap_or("").to_owned(),
            )
        })
        .collect();
    let expected: Vec<(String, String)> = [
        ("put", "alice"),
        ("put", "alice"),
        ("put", "bob"),
        ("put", "carol"),
        ("delete", "bob"),
        ("delete", "alice"),
    ]
    .iter()
    .map(|(n, id)| (n.to_string(), id.to_string()))
    .collect();
    assert_eq!(seen[..expected.len()], expected[..], "{events:?}");
    for (_, _, data) in &events {
        api.validate(&api.schema("WatchEvent"), data, "a watch event");
    }
    let resumed = watch_events(
        &api,
        &watch_path,
        &[("collection", "users")],
        Some(&events[1].1),
        4,
    )
    .await;
    let resumed: Vec<(String, String)> = resumed
        .iter()
        .map(|(name, _, data)| {
            (
                name.clone(),
                data["document"]["id"].as_str().unwrap_or("").to_owned(),
            )
        })
        .collect();
    assert_eq!(
        resumed[..],
        expected[2..6],
        "resumed after the second event"
    );
    // Only new changes: the next write and nothing before it.
    let http = api.http.clone();
    let new_only = {
        let path = watch_path.clone();
        let http = http.clone();
        tokio::spawn(async move { first_event(&http, &path).await })
    };
    wait_until(
        Duration::from_secs(20),
        "a write seen by a new watch",
        async || {
            let _ = http
                .put(format!(
                    "{}/v1/databases/web/collections/users/documents/erin",
                    api.base
                ))
                .json(&json!({"name": "Erin"}))
                .send()
                .await;
            new_only.is_finished()
        },
    )
    .await;
    let first = new_only.await.unwrap_or_else(|e| panic!("watch task: {e}"));
    assert_eq!(first["document"]["id"], "erin", "{first}");
    api.called
        .insert(("/v1/databases/{db}/watch".into(), "get".into()));
    api.call(Method::GET, "/v1/databases/{db}/watch", &["nope"], |r| r)
        .await
        .expect_error(404, "NOT_FOUND", Some("ERROR_REASON_DATABASE_NOT_FOUND"));
    api.call(Method::GET, "/v1/databases/{db}/watch", &["web"], |r| {
        r.header("last-event-id", "garbage")
    })
    .await
    .expect_error(400, "INVALID_ARGUMENT", None);

    queries_indexes_and_transactions(&mut api, &client).await;

    // The cluster.
    let cluster_status = api.call(Method::GET, "/v1/cluster", &[], |r| r).await;
    assert_eq!(
        cluster_status.body["members"].as_array().map(Vec::len),
        Some(3)
    );
    assert!(
        cluster_status.body["meta_leader_id"].is_u64(),
        "{}",
        cluster_status.body
    );
    let members = api
        .call(Method::GET, "/v1/cluster/members", &[], |r| r)
        .await;
    assert_eq!(members.body["members"].as_array().map(Vec::len), Some(3));

    // A path the API does not have answers a JSON error too.
    let missing = api
        .http
        .get(format!("{}/v1/nothing/here", api.base))
        .send()
        .await
        .unwrap_or_else(|e| panic!("GET /v1/nothing/here: {e}"));
    assert_eq!(missing.status(), StatusCode::NOT_FOUND);
    let body: Value = missing.json().await.unwrap_or(Value::Null);
    assert_eq!(body["code"], "NOT_FOUND", "{body}");

    // The HTTP requests count under their route templates, and the gRPC calls they became
    // passed the client port's request layer (in process, on the node that took them).
    let (code, metrics) = flotilla_testkit::http::get(&cluster.node(1).http_addr, "/metrics")
        .await
        .unwrap_or_else(|e| panic!("GET /metrics: {e}"));
    assert_eq!(code, 200);
    for expected in [
        "flotilla_http_requests_total{path=\"/v1/databases/{db}/collections/{coll}/documents/{id}\",code=\"412\"}",
        "flotilla_grpc_server_handled_total{server=\"client\",grpc_service=\"flotilla.v1.Documents\",grpc_method=\"Put\",grpc_code=\"FailedPrecondition\"}",
        "flotilla_grpc_server_handled_total{server=\"client\",grpc_service=\"flotilla.v1.Admin\",grpc_method=\"CreateDatabase\",grpc_code=\"OK\"}",
    ] {
        assert!(metrics.contains(expected), "no {expected} in\n{metrics}");
    }

    // Dropping the database: only when it is named twice.
    api.call(Method::DELETE, "/v1/databases/{db}", &["web"], |r| r)
        .await
        .expect_error(
            412,
            "FAILED_PRECONDITION",
            Some("ERROR_REASON_CONFIRMATION_REQUIRED"),
        );
    let dropped = api
        .call(Method::DELETE, "/v1/databases/{db}", &["web"], |r| {
            r.query(&[("confirm", "web")])
        })
        .await;
    assert_eq!(dropped.status, StatusCode::NO_CONTENT);
    api.call(Method::DELETE, "/v1/databases/{db}", &["web"], |r| {
        r.query(&[("confirm", "web")])
    })
    .await
    .expect_error(404, "NOT_FOUND", Some("ERROR_REASON_DATABASE_NOT_FOUND"));

    let missed: Vec<_> = api.operations().difference(&api.called).cloned().collect();
    assert!(missed.is_empty(), "operations never called: {missed:?}");
    let undocumented: Vec<_> = api.called.difference(&api.operations()).cloned().collect();
    assert!(
        undocumented.is_empty(),
        "called but not documented: {undocumented:?}"
    );
}

/// Collections with a shard key, secondary indexes, queries (both predicate forms, pages,
/// count, explain, errors) and a transaction across shards, on a database of two shards.
async fn queries_indexes_and_transactions(api: &mut Api, client: &flotilla_client::Client) {
    let created = api
        .call(Method::POST, "/v1/databases", &[], |r| {
            r.json(&json!({"name": "shop", "shards": 2, "replication_factor": 3}))
        })
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.body);
    client
        .wait_for_database("shop", Duration::from_secs(30), |_| {})
        .await
        .unwrap_or_else(|e| panic!("database shop not ready: {e}"));
    const COLLECTIONS: &str = "/v1/databases/{db}/collections";
    let declared = api
        .call(Method::POST, COLLECTIONS, &["shop"], |r| {
            r.json(&json!({"name": "orders", "shard_key": "/customer"}))
        })
        .await;
    assert_eq!(declared.status, StatusCode::CREATED, "{}", declared.body);
    let again = api
        .call(Method::POST, COLLECTIONS, &["shop"], |r| {
            r.json(&json!({"name": "orders", "shard_key": "/customer"}))
        })
        .await;
    assert_eq!(again.status, StatusCode::OK, "{}", again.body);
    api.call(Method::POST, COLLECTIONS, &["shop"], |r| {
        r.json(&json!({"name": "orders", "shard_key": "/other"}))
    })
    .await
    .expect_error(
        412,
        "FAILED_PRECONDITION",
        Some("ERROR_REASON_SHARD_KEY_FIXED"),
    );

    // Twenty orders of four customers, placed by customer.
    for n in 0..20u64 {
        let status = if n % 3 == 0 { "open" } else { "closed" };
        let order = json!({"customer": format!("c{}", n % 4), "total": n * 10, "status": status});
        let put = api
            .call(
                Method::PUT,
                DOC,
                &["shop", "orders", &format!("o{n:02}")],
                |r| r.json(&order),
            )
            .await;
        assert_eq!(put.status, StatusCode::CREATED, "{}", put.body);
    }
    api.call(Method::PUT, DOC, &["shop", "orders", "nokey"], |r| {
        r.json(&json!({"total": 1}))
    })
    .await
    .expect_error(
        400,
        "INVALID_ARGUMENT",
        Some("ERROR_REASON_SHARD_KEY_MISSING"),
    );
    let one = api
        .call(Method::GET, DOC, &["shop", "orders", "o05"], |r| {
            r.query(&[("shard_key", "c1")])
        })
        .await;
    assert_eq!(one.status, StatusCode::OK, "{}", one.body);
    assert_eq!(one.body["body"]["total"], 50);

    // An index, built in the background, then used.
    const INDEXES: &str = "/v1/databases/{db}/collections/{coll}/indexes";
    let index = api
        .call(Method::POST, INDEXES, &["shop", "orders"], |r| {
            r.json(&json!({"name": "by_status", "paths": ["/status"]}))
        })
        .await;
    assert_eq!(index.status, StatusCode::ACCEPTED, "{}", index.body);
    api.call(Method::POST, INDEXES, &["shop", "orders"], |r| {
        r.json(&json!({"name": "bad", "paths": ["no-slash"]}))
    })
    .await
    .expect_error(400, "INVALID_ARGUMENT", Some("ERROR_REASON_INVALID_INDEX"));
    let indexes_url = format!("{}/v1/databases/shop/indexes?collection=orders", api.base);
    let http = api.http.clone();
    wait_until(
        Duration::from_secs(30),
        "index by_status ready",
        async || {
            let Ok(response) = http.get(&indexes_url).send().await else {
                return false;
            };
            let body: Value = response.json().await.unwrap_or(Value::Null);
            body["indexes"][0]["ready"] == true
        },
    )
    .await;
    let listed = api
        .call(Method::GET, "/v1/databases/{db}/indexes", &["shop"], |r| {
            r.query(&[("collection", "orders")])
        })
        .await;
    let shards = &listed.body["indexes"][0]["shards"];
    let indexed: u64 = shards
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|s| s["documents"].as_u64())
        .sum();
    assert_eq!(indexed, 20, "{}", listed.body);
    let collections = api.call(Method::GET, COLLECTIONS, &["shop"], |r| r).await;
    assert_eq!(
        collections.body["collections"][0],
        json!({"name": "orders", "shard_key": "/customer", "indexes": ["by_status"]})
    );

    // Queries: the text form, ordered, in pages, across both shards, served by the index.
    const QUERY: &str = "/v1/databases/{db}/collections/{coll}/query";
    let mut ids = Vec::new();
    let mut token: Option<String> = None;
    loop {
        let mut body = json!({
            "where": "/status = \"open\" and /total >= 30",
            "order_by": [{"path": "/total", "descending": true}],
            "page_size": 2,
            "explain": true,
            "projection": ["/total"],
        });
        if let Some(token) = &token {
            body["page_token"] = json!(token);
        }
        let page = api
            .call(Method::POST, QUERY, &["shop", "orders"], |r| r.json(&body))
            .await;
        assert_eq!(page.status, StatusCode::OK, "{}", page.body);
        assert_eq!(page.body["explain"]["index"], "by_status", "{}", page.body);
        assert_eq!(page.body["shards"].as_array().map(Vec::len), Some(2));
        for d in page.body["documents"].as_array().into_iter().flatten() {
            assert_eq!(d["body"], json!({"total": d["body"]["total"]}), "projected");
            assert!(d["version"].as_u64() >= Some(1), "its version: {d}");
            assert!(
                d["revision"].as_u64() > Some(0),
                "the revision it was written at: {d}"
            );
            ids.push(d["id"].as_str().unwrap_or_default().to_owned());
        }
        match page.body["next_page_token"].as_str() {
            Some(next) => token = Some(next.to_owned()),
            None => break,
        }
    }
    assert_eq!(ids, ["o18", "o15", "o12", "o09", "o06", "o03"]);
    // The selector form, pinned to one shard by the shard key, and a count.
    let pinned = api
        .call(Method::POST, QUERY, &["shop", "orders"], |r| {
            r.json(
                &json!({"selector": {"/customer": "c2", "/total": {"$lt": 100}}, "explain": true}),
            )
        })
        .await;
    assert_eq!(pinned.body["explain"]["pinned"], true, "{}", pinned.body);
    let pinned_ids: Vec<&str> = pinned.body["documents"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|d| d["id"].as_str())
        .collect();
    assert_eq!(pinned_ids, ["o02", "o06"]);
    let counted = api
        .call(Method::POST, QUERY, &["shop", "orders"], |r| {
            r.json(&json!({"selector": {"/status": {"$in": ["open"]}}, "count": true}))
        })
        .await;
    assert_eq!(counted.body["count"], 7, "{}", counted.body);
    api.call(Method::POST, QUERY, &["shop", "orders"], |r| {
        r.json(&json!({"where": "/total >> 3"}))
    })
    .await
    .expect_error(400, "INVALID_ARGUMENT", Some("ERROR_REASON_INVALID_QUERY"));
    api.call(Method::POST, QUERY, &["shop", "orders"], |r| {
        r.json(&json!({"selector": {"/total": {"$near": 3}}}))
    })
    .await
    .expect_error(400, "INVALID_ARGUMENT", Some("ERROR_REASON_INVALID_QUERY"));
    // A live query: the open orders (in pages of two), then resumed after them: a new open
    // order enters and an open one leaves.
    let live_url = format!("{}/v1/databases/shop/collections/orders/live", api.base);
    let open = [("where", "/status = \"open\""), ("page_size", "2")];
    let first = watch_events(api, &live_url, &open, None, 8).await;
    let names: Vec<&str> = first.iter().map(|(n, _, _)| n.as_str()).collect();
    assert_eq!(names[..7], ["initial"; 7], "{first:?}");
    assert_eq!(names[7], "current", "{first:?}");
    for (_, _, data) in &first[..7] {
        api.validate(&api.schema("Document"), data, "an initial event");
        assert_eq!(data["body"]["status"], "open", "{data}");
    }
    let initial: std::collections::BTreeSet<&str> = first[..7]
        .iter()
        .filter_map(|(_, _, data)| data["id"].as_str())
        .collect();
    assert_eq!(initial.len(), 7, "each document once: {first:?}");
    let current = first[7].1.clone();
    api.call(Method::PUT, DOC, &["shop", "orders", "o30"], |r| {
        r.json(&json!({"customer": "c0", "total": 5, "status": "open"}))
    })
    .await;
    api.call(Method::PUT, DOC, &["shop", "orders", "o03"], |r| {
        r.json(&json!({"customer": "c3", "total": 30, "status": "closed"}))
    })
    .await;
    let resumed = watch_events(
        api,
        &live_url,
        &[("where", "/status = \"open\"")],
        Some(&current),
        2,
    )
    .await;
    let seen: Vec<(String, String)> = resumed
        .iter()
        .map(|(name, _, data)| {
            api.validate(&api.schema("LiveEvent"), data, "a live event");
            let id = data["document"]["id"].as_str().unwrap_or_default();
            (name.clone(), id.to_owned())
        })
        .collect();
    let mut seen_sorted = seen.clone();
    seen_sorted.sort();
    assert_eq!(
        seen_sorted,
        [
            ("enter".to_owned(), "o30".to_owned()),
            ("leave".to_owned(), "o03".to_owned())
        ],
        "{resumed:?}"
    );
    api.called.insert((
        "/v1/databases/{db}/collections/{coll}/live".into(),
        "get".into(),
    ));
    api.call(
        Method::GET,
        "/v1/databases/{db}/collections/{coll}/live",
        &["shop", "orders"],
        |r| r.query(&[("where", "/status >> 1")]),
    )
    .await
    .expect_error(400, "INVALID_ARGUMENT", Some("ERROR_REASON_INVALID_QUERY"));

    let dropped = api
        .call(
            Method::DELETE,
            "/v1/databases/{db}/collections/{coll}/indexes/{name}",
            &["shop", "orders", "by_status"],
            |r| r,
        )
        .await;
    assert_eq!(dropped.body["dropped"], true, "{}", dropped.body);
    let scanned = api
        .call(Method::POST, QUERY, &["shop", "orders"], |r| {
            r.json(&json!({"selector": {"/status": "open"}, "explain": true, "count": true}))
        })
        .await;
    assert!(
        scanned.body["explain"]["index"].is_null(),
        "{}",
        scanned.body
    );
    assert_eq!(scanned.body["count"], 7, "{}", scanned.body);
    let deleted = api
        .call(Method::DELETE, DOC, &["shop", "orders", "o05"], |r| {
            r.query(&[("shard_key", "c1")])
        })
        .await;
    assert_eq!(deleted.body["deleted"], true, "{}", deleted.body);

    // A transaction moving a balance between two documents (on either shard), committed; one
    // rolled back; one that conflicts with a write made under it.
    for (id, balance) in [("a0", 100), ("a1", 100), ("a2", 100), ("a3", 100)] {
        let put = api
            .call(Method::PUT, DOC, &["shop", "acct", id], |r| {
                r.json(&json!({"balance": balance}))
            })
            .await;
        assert_eq!(put.status, StatusCode::CREATED, "{}", put.body);
    }
    const TXNS: &str = "/v1/databases/{db}/transactions";
    const TXN_DOC: &str = "/v1/transactions/{txn}/collections/{coll}/documents/{id}";
    let begun = api
        .call(Method::POST, TXNS, &["shop"], |r| r.json(&json!({})))
        .await;
    assert_eq!(begun.status, StatusCode::CREATED, "{}", begun.body);
    let txn = begun.body["txn"].as_str().unwrap_or_default().to_owned();
    let open = api.call(Method::GET, TXNS, &["shop"], |r| r).await;
    assert!(
        open.body["transactions"]
            .as_array()
            .is_some_and(|t| t.iter().any(|t| t["txn"] == txn.as_str())),
        "{}",
        open.body
    );
    let mut moved = 0;
    for (id, delta) in [("a0", -30), ("a3", 30)] {
        let read = api
            .call(Method::GET, TXN_DOC, &[&txn, "acct", id], |r| r)
            .await;
        assert_eq!(read.status, StatusCode::OK, "{}", read.body);
        let balance = read.body["body"]["balance"].as_i64().unwrap_or_default() + delta;
        let version = read.body["version"].as_u64().unwrap_or_default();
        let wrote = api
            .call(Method::PUT, TXN_DOC, &[&txn, "acct", id], |r| {
                r.json(&json!({"body": {"balance": balance}, "if_version": version}))
            })
            .await;
        assert_eq!(wrote.status, StatusCode::NO_CONTENT, "{}", wrote.body);
        moved += delta;
    }
    assert_eq!(moved, 0);
    let own = api
        .call(Method::GET, TXN_DOC, &[&txn, "acct", "a0"], |r| r)
        .await;
    assert_eq!(
        own.body["body"]["balance"], 70,
        "reads see the transaction's writes"
    );
    api.call(Method::GET, TXN_DOC, &[&txn, "acct", "zz"], |r| r)
        .await
        .expect_error(404, "NOT_FOUND", Some("ERROR_REASON_DOCUMENT_NOT_FOUND"));
    const TXN_QUERY: &str = "/v1/transactions/{txn}/collections/{coll}/query";
    let found = api
        .call(Method::POST, TXN_QUERY, &[&txn, "acct"], |r| {
            r.json(&json!({"where": "/balance = 70"}))
        })
        .await;
    assert_eq!(found.status, StatusCode::OK, "{}", found.body);
    assert_eq!(
        found.body["documents"][0]["id"], "a0",
        "a query sees the transaction's writes: {}",
        found.body
    );
    api.call(Method::POST, TXN_QUERY, &[&txn, "acct"], |r| {
        r.json(&json!({"where": "/balance >> 1"}))
    })
    .await
    .expect_error(400, "INVALID_ARGUMENT", Some("ERROR_REASON_INVALID_QUERY"));
    let gone = api
        .call(Method::DELETE, TXN_DOC, &[&txn, "acct", "a2"], |r| r)
        .await;
    assert_eq!(gone.status, StatusCode::NO_CONTENT, "{}", gone.body);
    let committed = api
        .call(
            Method::POST,
            "/v1/transactions/{txn}/commit",
            &[&txn],
            |r| r,
        )
        .await;
    assert_eq!(committed.status, StatusCode::OK, "{}", committed.body);
    assert_eq!(committed.body["writes"].as_array().map(Vec::len), Some(3));
    let a3 = api
        .call(Method::GET, DOC, &["shop", "acct", "a3"], |r| r)
        .await;
    assert_eq!(a3.body["body"]["balance"], 130, "{}", a3.body);
    api.call(Method::GET, DOC, &["shop", "acct", "a2"], |r| r)
        .await
        .expect_error(404, "NOT_FOUND", Some("ERROR_REASON_DOCUMENT_NOT_FOUND"));
    api.call(
        Method::POST,
        "/v1/transactions/{txn}/commit",
        &[&txn],
        |r| r,
    )
    .await
    .expect_error(404, "NOT_FOUND", Some("ERROR_REASON_TXN_NOT_FOUND"));

    let begun = api
        .call(Method::POST, TXNS, &["shop"], |r| {
            r.json(&json!({"timeout_ms": 30000}))
        })
        .await;
    let txn = begun.body["txn"].as_str().unwrap_or_default().to_owned();
    api.call(Method::PUT, TXN_DOC, &[&txn, "acct", "a1"], |r| {
        r.json(&json!({"body": {"balance": 0}}))
    })
    .await;
    let rolled = api
        .call(
            Method::POST,
            "/v1/transactions/{txn}/rollback",
            &[&txn],
            |r| r,
        )
        .await;
    assert_eq!(rolled.status, StatusCode::NO_CONTENT, "{}", rolled.body);
    let a1 = api
        .call(Method::GET, DOC, &["shop", "acct", "a1"], |r| r)
        .await;
    assert_eq!(a1.body["body"]["balance"], 100, "rolled back: {}", a1.body);

    let begun = api
        .call(Method::POST, TXNS, &["shop"], |r| r.json(&json!({})))
        .await;
    let txn = begun.body["txn"].as_str().unwrap_or_default().to_owned();
    let read = api
        .call(Method::GET, TXN_DOC, &[&txn, "acct", "a1"], |r| r)
        .await;
    assert_eq!(read.status, StatusCode::OK, "{}", read.body);
    let outside = api
        .call(Method::PUT, DOC, &["shop", "acct", "a1"], |r| {
            r.json(&json!({"balance": 1}))
        })
        .await;
    assert_eq!(outside.status, StatusCode::OK, "{}", outside.body);
    api.call(Method::PUT, TXN_DOC, &[&txn, "acct", "a1"], |r| {
        r.json(&json!({"body": {"balance": 2}}))
    })
    .await;
    let conflicted = api
        .call(
            Method::POST,
            "/v1/transactions/{txn}/commit",
            &[&txn],
            |r| r,
        )
        .await;
    conflicted.expect_error(409, "ABORTED", Some("ERROR_REASON_TXN_CONFLICT"));
    api.call(
        Method::POST,
        "/v1/transactions/{txn}/rollback",
        &["not-a-txn"],
        |r| r,
    )
    .await
    .expect_error(400, "INVALID_ARGUMENT", None);
    api.call(Method::POST, TXNS, &["nope"], |r| r.json(&json!({})))
        .await
        .expect_error(404, "NOT_FOUND", Some("ERROR_REASON_DATABASE_NOT_FOUND"));
}

/// The first `count` events of a watch (name, id, data), within a deadline.
async fn watch_events(
    api: &Api,
    url: &str,
    query: &[(&str, &str)],
    last_event_id: Option<&str>,
    count: usize,
) -> Vec<(String, String, Value)> {
    let mut request = api
        .http
        .get(url)
        .query(query)
        .timeout(Duration::from_secs(30));
    if let Some(id) = last_event_id {
        request = request.header("last-event-id", id);
    }
    let response = request
        .send()
        .await
        .unwrap_or_else(|e| panic!("GET {url}: {e}"));
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        response
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok()),
        Some("text/event-stream")
    );
    let mut stream = response.bytes_stream().eventsource();
    let mut events = Vec::new();
    let collect = async {
        while events.len() < count {
            match stream.next().await {
                Some(Ok(event)) => {
                    let data: Value = serde_json::from_str(&event.data)
                        .unwrap_or_else(|e| panic!("event data {:?}: {e}", event.data));
                    events.push((event.event, event.id, data));
                }
                Some(Err(e)) => panic!("watch stream: {e}"),
                None => break,
            }
        }
    };
    // Fewer events than asked for is fine once the feed has gone quiet.
    let _ = tokio::time::timeout(Duration::from_secs(5), collect).await;
    events
}

/// The data of the first event of a new watch.
async fn first_event(http: &reqwest::Client, url: &str) -> Value {
    let response = http
        .get(url)
        .send()
        .await
        .unwrap_or_else(|e| panic!("GET {url}: {e}"));
    let mut stream = response.bytes_stream().eventsource();
    match stream.next().await {
        Some(Ok(event)) => serde_json::from_str(&event.data).unwrap_or(Value::Null),
        other => panic!("watch ended: {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_over_several_shards_resumes_from_its_last_event_id_exactly() {
    let cluster = Cluster::start(3, ClusterOptions::default()).await;
    cluster.create_database("many", Some(3), Some(4)).await;
    let api = Api::connect(&cluster.node(0).http_addr).await;
    let ids: Vec<String> = (0..8).map(|i| format!("doc-{i}")).collect();
    for id in &ids {
        let answer = api
            .http
            .put(format!(
                "{}/v1/databases/many/collections/c/documents/{id}",
                api.base
            ))
            .json(&json!({"id": id}))
            .send()
            .await
            .unwrap_or_else(|e| panic!("PUT {id}: {e}"));
        assert_eq!(answer.status(), StatusCode::CREATED, "{id}");
    }
    let url = format!("{}/v1/databases/many/watch", api.base);
    let all = watch_events(&api, &url, &[("from_revision", "1")], None, ids.len()).await;
    let names = |events: &[(String, String, Value)]| -> BTreeSet<String> {
        events
            .iter()
            .map(|(_, _, data)| data["document"]["id"].as_str().unwrap_or("").to_owned())
            .collect()
    };
    assert_eq!(names(&all), ids.iter().cloned().collect(), "{all:?}");
    let shards: BTreeSet<u64> = all
        .iter()
        .filter_map(|(_, _, data)| data["document"]["shard"].as_u64())
        .collect();
    assert!(
        shards.len() > 1,
        "the documents landed on one shard: {all:?}"
    );
    for cut in [0, 3, ids.len() - 2] {
        let rest = watch_events(&api, &url, &[], Some(&all[cut].1), ids.len()).await;
        let expected: BTreeSet<String> = names(&all[cut + 1..]);
        assert_eq!(
            names(&rest),
            expected,
            "resumed after event {cut}: {rest:?}"
        );
        assert_eq!(rest.len(), expected.len(), "an event came twice: {rest:?}");
    }
}

//! `/api/v1` over HTTP: every route of the OpenAPI document is called and does
//! what its gRPC twin does (checked through the gRPC API), errors come back in
//! grpc-gateway's shape, and nothing answers without a current API key.

use crate::support::{Spawn, TestServer};
use headway::grpc::pb;
use serde_json::{Value, json};
use std::collections::BTreeSet;
use std::sync::Mutex;

/// An `/api/v1` client that records which documented routes it called.
pub struct Rest {
    base: String,
    key: String,
    http: reqwest::Client,
    /// The document's `(method, path template)` pairs.
    documented: BTreeSet<(String, String)>,
    called: Mutex<BTreeSet<(String, String)>>,
}

impl Rest {
    pub async fn new(server: &TestServer, key: &str) -> Rest {
        let http = http_client();
        let doc: Value = http
            .get(format!("{}/api/v1/openapi.json", server.url()))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let mut documented = BTreeSet::new();
        for (path, methods) in doc["paths"].as_object().unwrap() {
            for method in methods.as_object().unwrap().keys() {
                documented.insert((method.to_ascii_uppercase(), path.clone()));
            }
        }
        Rest {
            base: server.url(),
            key: key.to_owned(),
            http,
            documented,
            called: Mutex::new(BTreeSet::new()),
        }
    }

    /// Calls `method path` with the key; `route` is the documented template it
    /// exercises. Returns the status and the JSON answer.
    pub async fn call(
        &self,
        method: &str,
        route: &str,
        path: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        self.called
            .lock()
            .unwrap()
            .insert((method.to_owned(), route.to_owned()));
        let (status, text) = self.raw(Some(&self.key), method, path, body).await;
        let json =
            serde_json::from_str(&text).unwrap_or_else(|e| panic!("{method} {path}: {e}: {text}"));
        (status, json)
    }

    /// A call expected to succeed.
    pub async fn ok(&self, method: &str, route: &str, path: &str, body: Option<Value>) -> Value {
        let (status, json) = self.call(method, route, path, body).await;
        assert_eq!(status, 200, "{method} {path}: {json}");
        json
    }

    /// The status and body text of a request with the given credential.
    pub async fn raw(
        &self,
        key: Option<&str>,
        method: &str,
        path: &str,
        body: Option<Value>,
    ) -> (u16, String) {
        let mut request = self
            .http
            .request(method.parse().unwrap(), format!("{}{path}", self.base));
        if let Some(key) = key {
            request = request.bearer_auth(key);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        (status, response.text().await.unwrap())
    }

    /// The documented routes no call has exercised.
    pub fn not_called(&self) -> Vec<(String, String)> {
        let called = self.called.lock().unwrap();
        self.documented.difference(&called).cloned().collect()
    }
}

/// headway's own HTTP client set-up (reqwest on rustls with ring), 10 s a request.
pub fn http_client() -> reqwest::Client {
    headway::fetch::client(
        std::time::Duration::from_secs(10),
        headway::fetch::Redirects::Refuse,
    )
    .unwrap()
}

fn registration_id(n: usize) -> String {
    format!("hskey-authreq-{:0>24}", format!("rest{n}"))
}

/// Asserts grpc-gateway's error answer: HTTP status, gRPC code, message part.
fn refused(answer: (u16, Value), status: u16, code: i64, says: &str) {
    let (got, json) = answer;
    assert_eq!(got, status, "{json}");
    assert_eq!(json["code"], code, "{json}");
    assert!(json["message"].as_str().unwrap().contains(says), "{json}");
    assert_eq!(json["details"], json!([]), "{json}");
}

#[tokio::test]
async fn every_route_does_what_its_grpc_twin_does() {
    let server = TestServer::spawn_with(Spawn {
        extra_config: "policy:\n  mode: database\n".into(),
        ..Spawn::default()
    });
    let rest = Rest::new(&server, &server.api_key()).await;
    let mut grpc = server.grpc().await;

    // Users.
    let created = rest
        .ok(
            "POST",
            "/api/v1/user",
            "/api/v1/user",
            Some(json!({"name": "alice", "displayName": "Alice", "email": "alice@example.com"})),
        )
        .await;
    let user = &created["user"];
    assert_eq!(user["name"], "alice");
    assert_eq!(user["displayName"], "Alice");
    assert_eq!(user["provider"], "", "as Headscale writes API-made users");
    assert_eq!(user["profilePicUrl"], "");
    let uid = user["id"]
        .as_str()
        .expect("64-bit ids are strings")
        .to_owned();
    let listed = grpc
        .list_users(pb::ListUsersRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(listed.users[0].id.to_string(), uid);
    assert_eq!(listed.users[0].email, "alice@example.com");

    let all = rest.ok("GET", "/api/v1/user", "/api/v1/user", None).await;
    assert_eq!(all["users"].as_array().unwrap().len(), 1);
    let by_name = rest
        .ok("GET", "/api/v1/user", "/api/v1/user?name=nobody", None)
        .await;
    assert_eq!(by_name["users"], json!([]), "query parameters filter");
    let by_id = rest
        .ok(
            "GET",
            "/api/v1/user",
            &format!("/api/v1/user?id={uid}"),
            None,
        )
        .await;
    assert_eq!(by_id["users"][0]["name"], "alice");

    let renamed = rest
        .ok(
            "POST",
            "/api/v1/user/{old_id}/rename/{new_name}",
            &format!("/api/v1/user/{uid}/rename/alicia"),
            None,
        )
        .await;
    assert_eq!(renamed["user"]["name"], "alicia");
    let listed = grpc
        .list_users(pb::ListUsersRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(listed.users[0].name, "alicia");
    refused(
        rest.call(
            "POST",
            "/api/v1/user",
            "/api/v1/user",
            Some(json!({"name": "alicia"})),
        )
        .await,
        409,
        6,
        "alicia",
    );

    // Pre-auth keys.
    let created = rest
        .ok(
            "POST",
            "/api/v1/preauthkey",
            "/api/v1/preauthkey",
            Some(json!({"user": uid, "reusable": true, "expiration": "2099-01-01T00:00:00Z", "aclTags": []})),
        )
        .await;
    let key = &created["preAuthKey"];
    assert!(
        key["key"].as_str().unwrap().starts_with("hskey-auth-"),
        "{key}"
    );
    assert_eq!(key["reusable"], true);
    assert_eq!(key["expiration"], "2099-01-01T00:00:00Z");
    assert_eq!(key["user"]["name"], "alicia");
    let kid = key["id"].as_str().unwrap().to_owned();
    let keys = rest
        .ok("GET", "/api/v1/preauthkey", "/api/v1/preauthkey", None)
        .await;
    assert!(
        keys["preAuthKeys"][0]["key"]
            .as_str()
            .unwrap()
            .ends_with("***"),
        "listings mask keys: {keys}"
    );
    rest.ok(
        "POST",
        "/api/v1/preauthkey/expire",
        "/api/v1/preauthkey/expire",
        Some(json!({"id": kid})),
    )
    .await;
    let grpc_keys = grpc
        .list_pre_auth_keys(pb::ListPreAuthKeysRequest::default())
        .await
        .unwrap()
        .into_inner();
    let expires = grpc_keys.pre_auth_keys[0].expiration.unwrap().seconds;
    assert!(expires < 4_000_000_000, "expired through REST: {expires}");
    rest.ok(
        "DELETE",
        "/api/v1/preauthkey",
        &format!("/api/v1/preauthkey?id={kid}"),
        None,
    )
    .await;
    let grpc_keys = grpc
        .list_pre_auth_keys(pb::ListPreAuthKeysRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert!(grpc_keys.pre_auth_keys.is_empty());

    // A policy, so that tags can be set.
    let policy = r#"{"tagOwners": {"tag:server": ["alicia@"]}, "acls": [{"action": "accept", "src": ["*"], "dst": ["*:*"]}]}"#;
    let checked = rest
        .ok(
            "POST",
            "/api/v1/policy/check",
            "/api/v1/policy/check",
            Some(json!({"policy": policy})),
        )
        .await;
    assert_eq!(checked, json!({}));
    refused(
        rest.call(
            "POST",
            "/api/v1/policy/check",
            "/api/v1/policy/check",
            Some(json!({"policy": "{\"acls\": [}"})),
        )
        .await,
        400,
        3,
        "",
    );
    let set = rest
        .ok(
            "PUT",
            "/api/v1/policy",
            "/api/v1/policy",
            Some(json!({"policy": policy})),
        )
        .await;
    assert_eq!(set["policy"], policy);
    assert!(set["updatedAt"].is_string(), "{set}");
    let got = rest
        .ok("GET", "/api/v1/policy", "/api/v1/policy", None)
        .await;
    assert_eq!(got["policy"], policy);
    let grpc_policy = grpc
        .get_policy(pb::GetPolicyRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(grpc_policy.policy, policy);

    // Nodes, registered through the interactive path.
    rest.ok(
        "POST",
        "/api/v1/debug/node",
        "/api/v1/debug/node",
        Some(json!({"user": "alicia", "key": registration_id(1), "name": "laptop", "routes": ["10.1.0.0/24"]})),
    )
    .await;
    let registered = rest
        .ok(
            "POST",
            "/api/v1/node/register",
            &format!(
                "/api/v1/node/register?user=alicia&key={}",
                registration_id(1)
            ),
            None,
        )
        .await;
    let node = &registered["node"];
    assert_eq!(node["registerMethod"], "REGISTER_METHOD_CLI");
    assert_eq!(node["user"]["name"], "alicia");
    assert_eq!(node["preAuthKey"], Value::Null, "an unset message is null");
    let nid = node["id"].as_str().unwrap().to_owned();
    let listed = rest
        .ok("GET", "/api/v1/node", "/api/v1/node?user=alicia", None)
        .await;
    assert_eq!(listed["nodes"][0]["id"], nid);
    let one = rest
        .ok(
            "GET",
            "/api/v1/node/{node_id}",
            &format!("/api/v1/node/{nid}"),
            None,
        )
        .await;
    assert_eq!(one["node"]["givenName"], "laptop");
    assert_eq!(one["node"]["availableRoutes"], json!(["10.1.0.0/24"]));

    let renamed = rest
        .ok(
            "POST",
            "/api/v1/node/{node_id}/rename/{new_name}",
            &format!("/api/v1/node/{nid}/rename/desk"),
            None,
        )
        .await;
    assert_eq!(renamed["node"]["givenName"], "desk");
    let approved = rest
        .ok(
            "POST",
            "/api/v1/node/{node_id}/approve_routes",
            &format!("/api/v1/node/{nid}/approve_routes"),
            Some(json!({"routes": ["10.1.0.0/24"]})),
        )
        .await;
    assert_eq!(approved["node"]["approvedRoutes"], json!(["10.1.0.0/24"]));
    let tagged = rest
        .ok(
            "POST",
            "/api/v1/node/{node_id}/tags",
            &format!("/api/v1/node/{nid}/tags"),
            Some(json!({"tags": ["tag:server"]})),
        )
        .await;
    assert_eq!(tagged["node"]["tags"], json!(["tag:server"]));
    let grpc_node = grpc
        .get_node(pb::GetNodeRequest {
            node_id: nid.parse().unwrap(),
        })
        .await
        .unwrap()
        .into_inner()
        .node
        .unwrap();
    assert_eq!(grpc_node.given_name, "desk");
    assert_eq!(grpc_node.tags, ["tag:server"]);
    refused(
        rest.call(
            "POST",
            "/api/v1/node/{node_id}/tags",
            &format!("/api/v1/node/{nid}/tags"),
            Some(json!({"tags": ["tag:nobody"]})),
        )
        .await,
        400,
        3,
        "tag:nobody",
    );

    // The 0.18-0.25 route API.
    let routes = rest
        .ok("GET", "/api/v1/routes", "/api/v1/routes", None)
        .await;
    let route = &routes["routes"][0];
    assert_eq!(route["prefix"], "10.1.0.0/24");
    assert_eq!(route["enabled"], true);
    let rid = route["id"].as_str().unwrap().to_owned();
    let of_node = rest
        .ok(
            "GET",
            "/api/v1/node/{node_id}/routes",
            &format!("/api/v1/node/{nid}/routes"),
            None,
        )
        .await;
    assert_eq!(of_node["routes"][0]["id"], rid);
    rest.ok(
        "POST",
        "/api/v1/routes/{route_id}/disable",
        &format!("/api/v1/routes/{rid}/disable"),
        None,
    )
    .await;
    let after = grpc
        .get_node(pb::GetNodeRequest {
            node_id: nid.parse().unwrap(),
        })
        .await
        .unwrap()
        .into_inner()
        .node
        .unwrap();
    assert!(after.approved_routes.is_empty(), "disabled through REST");
    rest.ok(
        "POST",
        "/api/v1/routes/{route_id}/enable",
        &format!("/api/v1/routes/{rid}/enable"),
        None,
    )
    .await;
    rest.ok(
        "DELETE",
        "/api/v1/routes/{route_id}",
        &format!("/api/v1/routes/{rid}"),
        None,
    )
    .await;
    let routes = rest
        .ok("GET", "/api/v1/routes", "/api/v1/routes", None)
        .await;
    assert_eq!(routes["routes"], json!([]));

    // Expiry: with a time from the query string, then switched off.
    let expired = rest
        .ok(
            "POST",
            "/api/v1/node/{node_id}/expire",
            &format!("/api/v1/node/{nid}/expire?expiry=2098-05-06T07:08:09Z"),
            None,
        )
        .await;
    assert_eq!(expired["node"]["expiry"], "2098-05-06T07:08:09Z");
    let unexpiring = rest
        .ok(
            "POST",
            "/api/v1/node/{node_id}/expire",
            &format!("/api/v1/node/{nid}/expire?disableExpiry=true"),
            None,
        )
        .await;
    assert_eq!(unexpiring["node"]["expiry"], Value::Null);

    refused(
        rest.call(
            "POST",
            "/api/v1/node/backfillips",
            "/api/v1/node/backfillips",
            None,
        )
        .await,
        400,
        9,
        "confirm",
    );
    let backfill = rest
        .ok(
            "POST",
            "/api/v1/node/backfillips",
            "/api/v1/node/backfillips?confirmed=true",
            None,
        )
        .await;
    assert!(backfill["changes"].is_array(), "{backfill}");

    // Interactive registrations: register, approve (only for a known machine), reject.
    rest.ok(
        "POST",
        "/api/v1/debug/node",
        "/api/v1/debug/node",
        Some(json!({"user": "alicia", "key": registration_id(2), "name": "phone"})),
    )
    .await;
    refused(
        rest.call(
            "POST",
            "/api/v1/auth/approve",
            "/api/v1/auth/approve",
            Some(json!({"authId": registration_id(2)})),
        )
        .await,
        400,
        9,
        "auth register",
    );
    let phone = rest
        .ok(
            "POST",
            "/api/v1/auth/register",
            "/api/v1/auth/register",
            Some(json!({"user": "alicia", "authId": registration_id(2)})),
        )
        .await;
    assert_eq!(phone["node"]["givenName"], "phone");
    rest.ok(
        "POST",
        "/api/v1/debug/node",
        "/api/v1/debug/node",
        Some(json!({"user": "alicia", "key": registration_id(3), "name": "tablet"})),
    )
    .await;
    let rejected = rest
        .ok(
            "POST",
            "/api/v1/auth/reject",
            "/api/v1/auth/reject",
            Some(json!({"authId": registration_id(3)})),
        )
        .await;
    assert_eq!(rejected, json!({}));
    refused(
        rest.call(
            "POST",
            "/api/v1/auth/register",
            "/api/v1/auth/register",
            Some(json!({"user": "alicia", "authId": registration_id(3)})),
        )
        .await,
        404,
        5,
        "",
    );

    // Deleting nodes and users.
    let deleted = rest
        .ok(
            "DELETE",
            "/api/v1/node/{node_id}",
            &format!("/api/v1/node/{nid}"),
            None,
        )
        .await;
    assert_eq!(deleted, json!({}));
    let gone = grpc
        .get_node(pb::GetNodeRequest {
            node_id: nid.parse().unwrap(),
        })
        .await;
    assert_eq!(gone.unwrap_err().code(), tonic::Code::NotFound);
    let bob = rest
        .ok(
            "POST",
            "/api/v1/user",
            "/api/v1/user",
            Some(json!({"name": "bob"})),
        )
        .await;
    let bob_id = bob["user"]["id"].as_str().unwrap().to_owned();
    rest.ok(
        "DELETE",
        "/api/v1/user/{id}",
        &format!("/api/v1/user/{bob_id}"),
        None,
    )
    .await;
    let users = grpc
        .list_users(pb::ListUsersRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert!(users.users.iter().all(|u| u.name != "bob"));

    // API keys: a new one works, and stops working once expired.
    let made = rest
        .ok(
            "POST",
            "/api/v1/apikey",
            "/api/v1/apikey",
            Some(json!({"expiration": "2099-01-01T00:00:00Z"})),
        )
        .await;
    let second = made["apiKey"].as_str().unwrap().to_owned();
    let (status, _) = rest.raw(Some(&second), "GET", "/api/v1/health", None).await;
    assert_eq!(status, 200);
    let keys = rest
        .ok("GET", "/api/v1/apikey", "/api/v1/apikey", None)
        .await;
    assert_eq!(keys["apiKeys"].as_array().unwrap().len(), 2);
    let prefix = second.split('-').nth(2).unwrap().to_owned();
    rest.ok(
        "POST",
        "/api/v1/apikey/expire",
        "/api/v1/apikey/expire",
        Some(json!({"prefix": prefix})),
    )
    .await;
    let (status, text) = rest.raw(Some(&second), "GET", "/api/v1/health", None).await;
    assert_eq!(
        (status, text.as_str()),
        (401, "Unauthorized"),
        "an expired key is refused"
    );
    rest.ok(
        "DELETE",
        "/api/v1/apikey/{prefix}",
        &format!("/api/v1/apikey/{prefix}"),
        None,
    )
    .await;
    let keys = grpc
        .list_api_keys(pb::ListApiKeysRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(keys.api_keys.len(), 1);

    let health = rest
        .ok("GET", "/api/v1/health", "/api/v1/health", None)
        .await;
    assert_eq!(health, json!({"databaseConnectivity": true}));

    // grpc-gateway's errors.
    refused(
        rest.call("GET", "/api/v1/node/{node_id}", "/api/v1/node/abc", None)
            .await,
        400,
        3,
        "node_id",
    );
    refused(
        rest.call("GET", "/api/v1/node/{node_id}", "/api/v1/node/999", None)
            .await,
        404,
        5,
        "999",
    );
    refused(
        rest.call("POST", "/api/v1/user", "/api/v1/user", None)
            .await,
        400,
        3,
        "",
    );
    let (status, text) = rest
        .raw(Some(&rest.key), "POST", "/api/v1/user", None)
        .await;
    assert_eq!(status, 400, "{text}");
    let bad = rest
        .http
        .post(format!("{}/api/v1/user", rest.base))
        .bearer_auth(&rest.key)
        .body("{bad")
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status().as_u16(), 400);
    refused(
        rest.call("PUT", "/api/v1/user", "/api/v1/user", None).await,
        501,
        12,
        "Method Not Allowed",
    );
    let (status, text) = rest
        .raw(Some(&rest.key), "GET", "/api/v1/nothing/here", None)
        .await;
    assert_eq!(status, 404, "{text}");
    assert_eq!(serde_json::from_str::<Value>(&text).unwrap()["code"], 5);

    assert_eq!(
        rest.not_called(),
        Vec::<(String, String)>::new(),
        "every documented route is exercised"
    );
}

#[tokio::test]
async fn nothing_answers_without_a_current_api_key() {
    let server = TestServer::spawn();
    let key = server.api_key();
    let rest = Rest::new(&server, &key).await;
    assert!(rest.documented.len() >= 34, "{:?}", rest.documented);

    // An expired key.
    let expired = server.api_key();
    let prefix = expired.split('-').nth(2).unwrap();
    server.cli(&["apikeys", "expire", "--prefix", prefix]).ok();

    let wrong =
        "hskey-api-AAAAAAAAAAAA-BBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBB";
    for (method, route) in rest
        .documented
        .iter()
        .chain([&("GET".into(), "/api/v1/unknown".into())])
    {
        let path = route
            .replace("{old_id}", "1")
            .replace("{new_name}", "x")
            .replace("{id}", "1")
            .replace("{node_id}", "1")
            .replace("{route_id}", "1")
            .replace("{prefix}", "abc");
        for credential in [None, Some(wrong), Some(expired.as_str()), Some("")] {
            let (status, text) = rest.raw(credential, method, &path, None).await;
            assert_eq!(
                (status, text.as_str()),
                (401, "Unauthorized"),
                "{method} {path} with {credential:?}"
            );
        }
    }
    // Basic credentials are not Bearer.
    let basic = http_client()
        .get(format!("{}/api/v1/user", server.url()))
        .basic_auth(&key, None::<&str>)
        .send()
        .await
        .unwrap();
    assert_eq!(basic.status().as_u16(), 401);
    // The description needs no key; the operations it lists still do.
    let (status, text) = rest.raw(None, "GET", "/api/v1/openapi.yaml", None).await;
    assert_eq!(status, 200);
    assert!(text.contains("openapi: 3.1.0"), "{text}");
    let swagger = http_client()
        .get(format!("{}/swagger", server.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(
        swagger.status().as_u16(),
        308,
        "Headscale's /swagger leads to the docs"
    );
    assert_eq!(swagger.headers()["location"], "/api/v1/docs");
    let (status, text) = rest.raw(None, "GET", "/api/v1/docs", None).await;
    assert_eq!(status, 200);
    assert!(
        text.contains("/api/v1/node/{node_id}/approve_routes"),
        "{text}"
    );
    assert!(
        server.log().contains("refused a REST API call"),
        "{}",
        server.log()
    );
}

//! `/api/v1` beside Headscale v0.29.2's own: the same requests to a real
//! Headscale and to headway, each with an official client attached, give the
//! same statuses, error codes and JSON shapes (field names, types, `null`s,
//! enum names, 64-bit ids as strings); and a Python client written for
//! Headscale's REST API runs against headway.

use crate::rest_api::http_client;
use crate::support::headscale::Headscale;
use crate::support::tailscale::{self, Client};
use crate::support::{Spawn, TestServer, wait_until};
use serde_json::{Value, json};
use std::time::Duration;

/// One server's REST API with a key.
struct Api {
    url: String,
    key: String,
    http: reqwest::Client,
}

impl Api {
    async fn call(&self, method: &str, path: &str, body: Option<&Value>) -> (u16, Value) {
        let mut request = self
            .http
            .request(method.parse().unwrap(), format!("{}{path}", self.url))
            .bearer_auth(&self.key);
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let text = response.text().await.unwrap();
        let json = serde_json::from_str(&text).unwrap_or(Value::String(text));
        (status, json)
    }
}

/// A JSON value with what legitimately differs between two servers (times,
/// ids, keys, key prefixes) replaced by its kind; names, booleans, enums,
/// addresses and routes are kept.
fn shape(value: &Value) -> Value {
    match value {
        Value::String(s) if chrono::DateTime::parse_from_rfc3339(s).is_ok() => json!("<time>"),
        Value::String(s) if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) => {
            json!("<uint64>")
        }
        Value::String(s) => {
            for prefix in [
                "hskey-auth-",
                "hskey-api-",
                "mkey:",
                "nodekey:",
                "discokey:",
            ] {
                if s.starts_with(prefix) {
                    let masked = if s.ends_with("***") { "***" } else { "" };
                    return json!(format!("<{prefix}…{masked}>"));
                }
            }
            value.clone()
        }
        Value::Number(_) => json!("<number>"),
        Value::Array(items) => Value::Array(items.iter().map(shape).collect()),
        Value::Object(fields) => {
            Value::Object(fields.iter().map(|(k, v)| (k.clone(), shape(v))).collect())
        }
        other => other.clone(),
    }
}

/// Sends one request to both servers and asserts the answers agree: the same
/// status; for errors the same gRPC code; for answers the same shape.
async fn same(
    headscale: &Api,
    headway: &Api,
    method: &str,
    path: &str,
    body: Option<Value>,
) -> (Value, Value) {
    same_at(headscale, headway, method, [path, path], body).await
}

/// `same`, with a path for each server (`[Headscale's, headway's]`) where ids
/// may differ: PostgreSQL spends a sequence number on a refused insert.
async fn same_at(
    headscale: &Api,
    headway: &Api,
    method: &str,
    [hs_path, path]: [&str; 2],
    body: Option<Value>,
) -> (Value, Value) {
    let (hs_status, hs) = headscale.call(method, hs_path, body.as_ref()).await;
    let (hw_status, hw) = headway.call(method, path, body.as_ref()).await;
    assert_eq!(
        hw_status, hs_status,
        "{method} {path}: status differs\nHeadscale: {hs}\nheadway:   {hw}"
    );
    if hs_status == 200 {
        let (mut hs_shape, mut hw_shape) = (shape(&hs), shape(&hw));
        // Headscale fills `subnetRoutes` (the routes a node serves: primary subnet
        // routes and approved exit routes) in ListNodes and SetApprovedRoutes only;
        // its other single-node answers say `[]`. headway fills it everywhere.
        if !path.ends_with("/approve_routes") {
            for node in [&mut hs_shape["node"], &mut hw_shape["node"]] {
                if let Some(node) = node.as_object_mut() {
                    node.remove("subnetRoutes");
                }
            }
        }
        assert_eq!(
            hw_shape, hs_shape,
            "{method} {path}: answers differ\nHeadscale: {hs:#}\nheadway:   {hw:#}"
        );
    } else if hs.is_object() {
        assert_eq!(
            hw["code"], hs["code"],
            "{method} {path}: gRPC code differs\nHeadscale: {hs}\nheadway: {hw}"
        );
        assert_eq!(hw["details"], json!([]), "{hw}");
        assert!(hw["message"].is_string(), "{hw}");
    } else {
        assert_eq!(hw, hs, "{method} {path}");
    }
    (hs, hw)
}

/// A request both servers refuse, with codes that differ on purpose.
async fn both_refuse(
    headscale: &Api,
    headway: &Api,
    method: &str,
    path: &str,
    body: Option<Value>,
    headscale_says: (u16, i64),
    headway_says: (u16, i64),
) {
    for (api, (status, code)) in [(headscale, headscale_says), (headway, headway_says)] {
        let (got, json) = api.call(method, path, body.as_ref()).await;
        assert_eq!(
            (got, &json["code"]),
            (status, &json!(code)),
            "{} {method} {path}: {json}",
            api.url
        );
    }
}

/// Starts an official client and logs it in to `url` with `key`, advertising a route.
fn attach(url: &str, key: &str) -> Client {
    let client = Client::start(&tailscale::versions()[0], "laptop");
    client
        .up_with(url, key, &["--advertise-routes=10.9.0.0/24"])
        .ok();
    client
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rest_answers_match_headscale_v0_29_2() {
    let hs_server = Headscale::start();
    let hw_server = TestServer::spawn_with(Spawn {
        port: Some(tailscale::free_port()),
        extra_config: "policy:\n  mode: database\n".into(),
        ..Spawn::default()
    });
    hs_server.cli(&["users", "create", "setup"]).ok();
    let hs_key = hs_server.api_key();
    let hw_key = hw_server.api_key();
    hw_server.cli(&["users", "create", "setup"]).ok();
    let http = http_client();
    let headscale = Api {
        url: hs_server.url.clone(),
        key: hs_key,
        http: http.clone(),
    };
    let headway = Api {
        url: hw_server.url(),
        key: hw_key,
        http,
    };

    // Users.
    same(
        &headscale,
        &headway,
        "POST",
        "/api/v1/user",
        Some(json!({"name": "alice", "displayName": "Alice", "email": "alice@example.com"})),
    )
    .await;
    same(&headscale, &headway, "GET", "/api/v1/user", None).await;
    same(&headscale, &headway, "GET", "/api/v1/user?name=alice", None).await;
    same(
        &headscale,
        &headway,
        "POST",
        "/api/v1/user/2/rename/alicia",
        None,
    )
    .await;
    // Headscale 0.29.2 answers a taken name with 500 Internal; headway says 409
    // AlreadyExists, as Headscale's next release does.
    both_refuse(
        &headscale,
        &headway,
        "POST",
        "/api/v1/user",
        Some(json!({"name": "alicia"})),
        (500, 13),
        (409, 6),
    )
    .await;
    let (hs_bob, hw_bob) = same(
        &headscale,
        &headway,
        "POST",
        "/api/v1/user",
        Some(json!({"name": "bob", "unknownField": 1})),
    )
    .await;
    let delete = |bob: &Value| format!("/api/v1/user/{}", bob["user"]["id"].as_str().unwrap());
    same_at(
        &headscale,
        &headway,
        "DELETE",
        [&delete(&hs_bob), &delete(&hw_bob)],
        None,
    )
    .await;

    // Pre-auth keys: one per server, which its client then uses.
    let (hs, hw) = same(
        &headscale,
        &headway,
        "POST",
        "/api/v1/preauthkey",
        Some(json!({"user": "2", "reusable": true, "expiration": "2099-01-01T00:00:00Z", "aclTags": []})),
    )
    .await;
    let hs_auth = hs["preAuthKey"]["key"].as_str().unwrap().to_owned();
    let hw_auth = hw["preAuthKey"]["key"].as_str().unwrap().to_owned();
    same(&headscale, &headway, "GET", "/api/v1/preauthkey", None).await;

    // Policy (both in database mode).
    let policy = r#"{"tagOwners": {"tag:server": ["alicia@"]}, "acls": [{"action": "accept", "src": ["*"], "dst": ["*:*"]}]}"#;
    same(
        &headscale,
        &headway,
        "POST",
        "/api/v1/policy/check",
        Some(json!({"policy": policy})),
    )
    .await;
    same(
        &headscale,
        &headway,
        "PUT",
        "/api/v1/policy",
        Some(json!({"policy": policy})),
    )
    .await;
    same(&headscale, &headway, "GET", "/api/v1/policy", None).await;

    // A real client on each.
    let hs_client = attach(&hs_server.url, &hs_auth);
    let hw_client = attach(&hw_server.url(), &hw_auth);
    for api in [&headscale, &headway] {
        let mut online = false;
        for _ in 0..100 {
            let (_, nodes) = api.call("GET", "/api/v1/node", None).await;
            online = nodes["nodes"][0]["online"] == true
                && nodes["nodes"][0]["availableRoutes"] == json!(["10.9.0.0/24"]);
            if online {
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        assert!(
            online,
            "{}: the client never showed online with its route",
            api.url
        );
    }
    same(&headscale, &headway, "GET", "/api/v1/node", None).await;
    same(
        &headscale,
        &headway,
        "GET",
        "/api/v1/node?user=alicia",
        None,
    )
    .await;
    same(&headscale, &headway, "GET", "/api/v1/node/1", None).await;
    same(&headscale, &headway, "GET", "/api/v1/preauthkey", None).await;
    same(
        &headscale,
        &headway,
        "POST",
        "/api/v1/node/1/approve_routes",
        Some(json!({"routes": ["10.9.0.0/24"]})),
    )
    .await;
    // Both elect the node primary for its approved route.
    for api in [&headscale, &headway] {
        let mut primary = false;
        for _ in 0..50 {
            let (_, nodes) = api.call("GET", "/api/v1/node", None).await;
            primary = nodes["nodes"][0]["subnetRoutes"] == json!(["10.9.0.0/24"]);
            if primary {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(primary, "{}: the router was never primary", api.url);
    }
    same(&headscale, &headway, "GET", "/api/v1/node", None).await;
    same(
        &headscale,
        &headway,
        "POST",
        "/api/v1/node/1/rename/desk",
        None,
    )
    .await;
    same(
        &headscale,
        &headway,
        "POST",
        "/api/v1/node/1/tags",
        Some(json!({"tags": ["tag:server"]})),
    )
    .await;
    same(
        &headscale,
        &headway,
        "POST",
        "/api/v1/node/1/expire?expiry=2098-05-06T07:08:09Z",
        None,
    )
    .await;

    // API keys.
    same(
        &headscale,
        &headway,
        "POST",
        "/api/v1/apikey",
        Some(json!({"expiration": "2099-01-01T00:00:00Z"})),
    )
    .await;
    let (hs, mut hw) = (
        headscale.call("GET", "/api/v1/apikey", None).await.1,
        headway.call("GET", "/api/v1/apikey", None).await.1,
    );
    // The one difference on purpose: headway records when a key was last used;
    // Headscale 0.29.2 never fills `lastSeen`.
    for key in hw["apiKeys"].as_array_mut().unwrap() {
        assert!(
            key["lastSeen"].is_null() || key["lastSeen"].is_string(),
            "{key}"
        );
        key["lastSeen"] = Value::Null;
    }
    assert_eq!(
        shape(&hw),
        shape(&hs),
        "GET /api/v1/apikey\nHeadscale: {hs:#}\nheadway: {hw:#}"
    );

    // Errors: the same status and gRPC code.
    same(&headscale, &headway, "GET", "/api/v1/node/abc", None).await;
    same(&headscale, &headway, "GET", "/api/v1/node/99", None).await;
    same(&headscale, &headway, "PUT", "/api/v1/user", None).await;
    same(&headscale, &headway, "GET", "/api/v1/no/such/route", None).await;
    // An unknown user: Headscale says 500 Unknown, headway 404 NotFound.
    both_refuse(
        &headscale,
        &headway,
        "POST",
        "/api/v1/preauthkey",
        Some(json!({"user": "77", "reusable": true})),
        (500, 2),
        (404, 5),
    )
    .await;
    let bad = |api: &Api| {
        api.http
            .post(format!("{}/api/v1/user", api.url))
            .bearer_auth(&api.key)
            .body("{bad")
            .send()
    };
    let (hs_bad, hw_bad) = (bad(&headscale).await.unwrap(), bad(&headway).await.unwrap());
    assert_eq!(hw_bad.status(), hs_bad.status());
    let unauthenticated = |api: &Api| api.http.get(format!("{}/api/v1/user", api.url)).send();
    let (hs_401, hw_401) = (
        unauthenticated(&headscale).await.unwrap(),
        unauthenticated(&headway).await.unwrap(),
    );
    assert_eq!(hw_401.status(), hs_401.status());
    assert_eq!(hw_401.text().await.unwrap(), hs_401.text().await.unwrap());

    same(&headscale, &headway, "DELETE", "/api/v1/node/1", None).await;
    same(&headscale, &headway, "GET", "/api/v1/health", None).await;
    drop((hs_client, hw_client));
    assert!(!hs_server.log().contains("panic"), "{}", hs_server.log());
}

/// hsapi-client (PyPI), written for Headscale's REST API, as its users call it.
const HSAPI_SCRIPT: &str = r#"
import json, sys
from hsapi_client import Node, User, PreAuthKey
from hsapi_client.config import APISettings
from hsapi_client.preauthkeys import v1CreatePreAuthKeyRequest
settings = APISettings(server=sys.argv[1], api_token=sys.argv[2])
result = {}
result["users"] = [u.name for u in User(settings).list().users]
result["nodes"] = [n.givenName for n in Node(settings).list().nodes]
try:
    PreAuthKey(settings).create(v1CreatePreAuthKeyRequest(user=sys.argv[3], reusable=True, expiration="2099-01-01T00:00:00Z"))
    result["create"] = "ok"
except Exception as e:
    result["create"] = type(e).__name__ + ": " + str(e).splitlines()[1].strip()
print(json.dumps(result))
"#;

/// The Python of the virtual environment scripts/install-test-deps made for hsapi-client.
fn hsapi_python() -> std::path::PathBuf {
    let python = tailscale::tools_dir().join("hsapi-client-0.9.9/bin/python");
    assert!(
        python.exists(),
        "hsapi-client is not installed at {}: run scripts/install-test-deps",
        python.display()
    );
    python
}

#[test]
fn a_python_client_for_headscales_rest_api_works_against_headway() {
    let server = TestServer::spawn_with(Spawn {
        port: Some(tailscale::free_port()),
        ..Spawn::default()
    });
    server.cli(&["users", "create", "alice"]).ok();
    let key = server.api_key();

    // A node registered by an admin (`nodes register`), with an expiry.
    let client = Client::start(&tailscale::versions()[0], "laptop");
    let mut login = client.login_interactively(&server.url());
    let auth_url = client.wait_auth_url(Duration::from_secs(30));
    let auth_id = auth_url.rsplit('/').next().unwrap().to_owned();
    server
        .cli(&["nodes", "register", "--user", "alice", "--key", &auth_id])
        .ok();
    client.wait_status("Running", Duration::from_secs(30), |s| {
        s["BackendState"] == "Running"
    });
    let _ = login.kill();
    let _ = login.wait();
    server
        .cli(&[
            "nodes",
            "expire",
            "--identifier",
            "1",
            "--expiry",
            "2099-01-01T00:00:00Z",
        ])
        .ok();
    wait_until("the node has an expiry", Duration::from_secs(10), || {
        server.nodes()[0]["expiry"]["seconds"].is_number()
    });

    let out = std::process::Command::new(hsapi_python())
        .arg("-c")
        .arg(HSAPI_SCRIPT)
        .args([&server.url(), &key, "1"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let result: Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(result["users"], json!(["alice"]), "{result}");
    assert_eq!(result["nodes"], json!(["laptop"]), "{result}");
    // The key is created. hsapi-client 0.9.9 still models a pre-auth key's user
    // as a name (Headscale before 0.26), so reading the answer fails in the
    // client, exactly as it does against Headscale 0.29.2, which sends the
    // user as an object too.
    assert_eq!(
        result["create"], "ValidationError: preAuthKey.user",
        "{result}"
    );
    let keys = server
        .cli(&["preauthkeys", "list", "-o", "json"])
        .ok()
        .stdout;
    let keys: Value = serde_json::from_str(&keys).unwrap();
    assert!(
        keys.as_array()
            .unwrap()
            .iter()
            .any(|k| k["reusable"] == true),
        "the pre-auth key hsapi-client asked for exists: {keys}"
    );
}

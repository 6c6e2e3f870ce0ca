//! `/api/v2`, Tailscale's API, over HTTP in process: devices, routes, names,
//! keys, OAuth clients and their scoped tokens, the policy file with its ETag,
//! users, settings, and honest errors in Tailscale's shape. Each change is
//! checked through the gRPC API. (Tailscale's own Go client drives it against
//! real clients in `api_v2_client`.)

use crate::rest_api::http_client;
use crate::support::{Spawn, TestServer};
use headway::grpc::pb;
use serde_json::{Value, json};

struct V2 {
    base: String,
    http: reqwest::Client,
}

/// How a request proves who it is.
#[derive(Clone, Copy)]
enum Auth<'a> {
    None,
    Bearer(&'a str),
    /// Tailscale's clients: the key as the Basic user name, no password.
    Basic(&'a str),
}

impl V2 {
    async fn send(
        &self,
        auth: Auth<'_>,
        method: &str,
        path: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        let mut request = self
            .http
            .request(method.parse().unwrap(), format!("{}{path}", self.base));
        request = match auth {
            Auth::None => request,
            Auth::Bearer(key) => request.bearer_auth(key),
            Auth::Basic(key) => request.basic_auth(key, Some("")),
        };
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let text = response.text().await.unwrap();
        let json = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or_else(|e| panic!("{method} {path}: {e}: {text}"))
        };
        (status, json)
    }
}

/// Asserts an error in Tailscale's shape: the status, and a message saying `says`.
fn refused((status, json): (u16, Value), want: u16, says: &str) {
    assert_eq!(status, want, "{json}");
    assert_eq!(json["status"], want, "{json}");
    let message = json["message"].as_str().unwrap_or_default();
    assert!(message.contains(says), "expected {says:?} in {json}");
}

fn ok((status, json): (u16, Value)) -> Value {
    assert_eq!(status, 200, "{json}");
    json
}

#[tokio::test]
async fn tailscales_api_answers_in_its_own_shapes_with_scopes_and_honest_errors() {
    let server = TestServer::spawn_with(Spawn {
        extra_config: "policy:\n  mode: database\n".into(),
        ..Spawn::default()
    });
    let key = server.api_key();
    let api = V2 {
        base: server.url(),
        http: http_client(),
    };
    let admin = Auth::Basic(&key);
    let mut grpc = server.grpc().await;
    grpc.create_user(pb::CreateUserRequest {
        name: "alice".into(),
        ..Default::default()
    })
    .await
    .unwrap();
    let registration = format!("hskey-authreq-{:0>24}", "v2");
    grpc.debug_create_node(pb::DebugCreateNodeRequest {
        user: "alice".into(),
        key: registration.clone(),
        name: "laptop".into(),
        routes: vec!["10.1.0.0/24".into()],
    })
    .await
    .unwrap();
    let node = grpc
        .register_node(pb::RegisterNodeRequest {
            user: "alice".into(),
            key: registration,
        })
        .await
        .unwrap()
        .into_inner()
        .node
        .unwrap();
    let id = node.id.to_string();

    // Devices, with Basic (as Tailscale's clients send keys) and Bearer.
    let listed = ok(api
        .send(admin, "GET", "/api/v2/tailnet/-/devices", None)
        .await);
    let device = &listed["devices"][0];
    assert_eq!(device["id"], id.as_str());
    assert_eq!(device["nodeId"], id.as_str());
    assert_eq!(device["hostname"], "laptop");
    assert_eq!(device["user"], "alice");
    assert_eq!(device["authorized"], true);
    assert_eq!(device["addresses"], json!(node.ip_addresses));
    assert_eq!(device["advertisedRoutes"], json!(["10.1.0.0/24"]));
    assert_eq!(device["enabledRoutes"], json!([]));
    assert_eq!(device["machineKey"], node.machine_key.as_str());
    assert_eq!(device["nodeKey"], node.node_key.as_str());
    let one = ok(api
        .send(
            Auth::Bearer(&key),
            "GET",
            &format!("/api/v2/device/{id}"),
            None,
        )
        .await);
    assert_eq!(one["hostname"], "laptop");
    refused(
        api.send(Auth::None, "GET", "/api/v2/tailnet/-/devices", None)
            .await,
        401,
        "authorization",
    );
    refused(
        api.send(
            Auth::Basic("hskey-api-AAAAAAAAAAAA-wrong"),
            "GET",
            "/api/v2/tailnet/-/devices",
            None,
        )
        .await,
        401,
        "invalid API key",
    );
    refused(
        api.send(admin, "GET", "/api/v2/tailnet/example.com/devices", None)
            .await,
        404,
        "tailnet",
    );
    refused(
        api.send(admin, "GET", "/api/v2/device/999", None).await,
        404,
        "",
    );
    refused(
        api.send(admin, "GET", "/api/v2/tailnet/-/webhooks", None)
            .await,
        404,
        "no such endpoint",
    );

    // Routes, name, authorization: each through the gRPC operation, seen there.
    let routes = ok(api
        .send(
            admin,
            "POST",
            &format!("/api/v2/device/{id}/routes"),
            Some(json!({"routes": ["10.1.0.0/24"]})),
        )
        .await);
    assert_eq!(routes["enabledRoutes"], json!(["10.1.0.0/24"]));
    let after = grpc
        .get_node(pb::GetNodeRequest { node_id: node.id })
        .await
        .unwrap()
        .into_inner()
        .node
        .unwrap();
    assert_eq!(after.approved_routes, vec!["10.1.0.0/24".to_owned()]);
    let read = ok(api
        .send(admin, "GET", &format!("/api/v2/device/{id}/routes"), None)
        .await);
    assert_eq!(read, routes);
    ok(api
        .send(
            admin,
            "POST",
            &format!("/api/v2/device/{id}/name"),
            Some(json!({"name": "work-laptop"})),
        )
        .await);
    let after = grpc
        .get_node(pb::GetNodeRequest { node_id: node.id })
        .await
        .unwrap()
        .into_inner()
        .node
        .unwrap();
    assert_eq!(after.given_name, "work-laptop");
    ok(api
        .send(
            admin,
            "POST",
            &format!("/api/v2/device/{id}/authorized"),
            Some(json!({"authorized": true})),
        )
        .await);
    refused(
        api.send(
            admin,
            "POST",
            &format!("/api/v2/device/{id}/authorized"),
            Some(json!({"authorized": false})),
        )
        .await,
        400,
        "no device approval",
    );
    refused(
        api.send(
            admin,
            "POST",
            &format!("/api/v2/device/{id}/routes"),
            Some(json!({"routes": "10.1.0.0/24"})),
        )
        .await,
        400,
        "invalid JSON body",
    );

    // The policy file: none yet; set as HuJSON; read back as written and as
    // JSON, with an ETag that guards the next write.
    refused(
        api.send(admin, "GET", "/api/v2/tailnet/-/acl", None).await,
        404,
        "policy",
    );
    let policy = "// who reaches what\n{\"acls\": [{\"action\": \"accept\", \"src\": [\"alice@\"], \"dst\": [\"*:*\"]},],}\n";
    let set = api
        .http
        .post(format!("{}/api/v2/tailnet/-/acl", api.base))
        .basic_auth(&key, Some(""))
        .header("content-type", "application/hujson")
        .body(policy)
        .send()
        .await
        .unwrap();
    assert_eq!(set.status(), 200);
    let etag = set.headers()["etag"].to_str().unwrap().to_owned();
    assert!(etag.starts_with('"') && etag.len() > 2, "{etag}");
    assert_eq!(set.text().await.unwrap(), policy, "HuJSON in, HuJSON out");
    let raw = api
        .http
        .get(format!("{}/api/v2/tailnet/-/acl", api.base))
        .basic_auth(&key, Some(""))
        .header("accept", "application/hujson")
        .send()
        .await
        .unwrap();
    assert_eq!(raw.headers()["etag"].to_str().unwrap(), etag);
    assert_eq!(raw.text().await.unwrap(), policy);
    let as_json = ok(api.send(admin, "GET", "/api/v2/tailnet/-/acl", None).await);
    assert_eq!(as_json["acls"][0]["src"], json!(["alice@"]));
    let stored = grpc
        .get_policy(pb::GetPolicyRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(stored.policy, policy, "set through the same operation");
    let write = |etag: &str| {
        api.http
            .post(format!("{}/api/v2/tailnet/-/acl", api.base))
            .basic_auth(&key, Some(""))
            .header("if-match", etag)
            .json(&json!({"acls": [{"action": "accept", "src": ["*"], "dst": ["*:*"]}]}))
            .send()
    };
    let stale = write("\"0000\"").await.unwrap();
    assert_eq!(stale.status(), 412, "a stale ETag is refused");
    let fresh = write(&etag).await.unwrap();
    assert_eq!(fresh.status(), 200);
    assert_ne!(fresh.headers()["etag"].to_str().unwrap(), etag);
    refused(
        api.send(
            admin,
            "POST",
            "/api/v2/tailnet/-/acl/validate",
            Some(json!({"acls": [{"action": "allow"}]})),
        )
        .await,
        400,
        "",
    );
    let (status, body) = api
        .send(
            admin,
            "POST",
            "/api/v2/tailnet/-/acl/validate",
            Some(json!({"acls": [{"action": "accept", "src": ["*"], "dst": ["*:*"]}]})),
        )
        .await;
    assert_eq!((status, body), (200, Value::Null), "valid: empty answer");

    // Auth keys: an untagged key needs an owner, named with headway's `user`.
    refused(
        api.send(
            admin,
            "POST",
            "/api/v2/tailnet/-/keys",
            Some(json!({"capabilities": {"devices": {"create": {"reusable": true}}}})),
        )
        .await,
        400,
        "\"user\"",
    );
    let made = ok(api
        .send(
            admin,
            "POST",
            "/api/v2/tailnet/-/keys",
            Some(json!({"capabilities": {"devices": {"create": {"reusable": true}}}, "expirySeconds": 3600, "user": "alice"})),
        )
        .await);
    assert!(
        made["key"].as_str().unwrap().starts_with("hskey-auth-"),
        "{made}"
    );
    assert_eq!(made["keyType"], "auth");
    assert_eq!(made["capabilities"]["devices"]["create"]["reusable"], true);
    let key_id = made["id"].as_str().unwrap().to_owned();
    let listed = grpc
        .list_pre_auth_keys(pb::ListPreAuthKeysRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(listed.pre_auth_keys.len(), 1);
    assert_eq!(listed.pre_auth_keys[0].id.to_string(), key_id);
    let got = ok(api
        .send(
            admin,
            "GET",
            &format!("/api/v2/tailnet/-/keys/{key_id}"),
            None,
        )
        .await);
    assert_eq!(got["key"], "", "the secret is shown once");
    refused(
        api.send(
            admin,
            "POST",
            "/api/v2/tailnet/-/keys",
            Some(json!({"keyType": "federated"})),
        )
        .await,
        400,
        "federated",
    );

    // OAuth clients and their scoped, short-lived tokens.
    refused(
        api.send(
            admin,
            "POST",
            "/api/v2/tailnet/-/keys",
            Some(json!({"keyType": "client", "scopes": ["auth_keys"]})),
        )
        .await,
        400,
        "tag",
    );
    refused(
        api.send(
            admin,
            "POST",
            "/api/v2/tailnet/-/keys",
            Some(json!({"keyType": "client", "scopes": ["devices:everything"]})),
        )
        .await,
        400,
        "devices:everything",
    );
    let client = ok(api
        .send(
            admin,
            "POST",
            "/api/v2/tailnet/-/keys",
            Some(json!({"keyType": "client", "scopes": ["devices:core:read", "auth_keys"], "tags": ["tag:ci"], "description": "ci"})),
        )
        .await);
    let client_id = client["id"].as_str().unwrap().to_owned();
    let secret = client["key"].as_str().unwrap().to_owned();
    assert!(secret.starts_with("hskey-client-"), "{client}");
    let token = |form: Vec<(&'static str, String)>| {
        let body = url::form_urlencoded::Serializer::new(String::new())
            .extend_pairs(form)
            .finish();
        api.http
            .post(format!("{}/api/v2/oauth/token", api.base))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body)
            .send()
    };
    let grant = |secret: &str| {
        vec![
            ("grant_type", "client_credentials".to_owned()),
            ("client_id", client_id.clone()),
            ("client_secret", secret.to_owned()),
        ]
    };
    let issued = token(grant(&secret)).await.unwrap();
    assert_eq!(issued.status(), 200);
    let issued: Value = issued.json().await.unwrap();
    assert_eq!(issued["token_type"], "Bearer");
    assert_eq!(issued["expires_in"], 3600);
    assert_eq!(issued["scope"], "devices:core:read auth_keys");
    let access = issued["access_token"].as_str().unwrap().to_owned();
    assert!(access.starts_with("hskey-oauthtok-"), "{issued}");
    let by_token = Auth::Bearer(&access);
    ok(api
        .send(by_token, "GET", "/api/v2/tailnet/-/devices", None)
        .await);
    refused(
        api.send(
            by_token,
            "POST",
            &format!("/api/v2/device/{id}/tags"),
            Some(json!({"tags": ["tag:ci"]})),
        )
        .await,
        403,
        "devices:core",
    );
    refused(
        api.send(by_token, "GET", "/api/v2/tailnet/-/acl", None)
            .await,
        403,
        "policy_file:read",
    );
    refused(
        api.send(
            by_token,
            "POST",
            "/api/v2/tailnet/-/keys",
            Some(json!({"capabilities": {"devices": {"create": {"tags": ["tag:other"]}}}})),
        )
        .await,
        403,
        "tag:other",
    );
    let tagged = ok(api
        .send(
            by_token,
            "POST",
            "/api/v2/tailnet/-/keys",
            Some(json!({"capabilities": {"devices": {"create": {"tags": ["tag:ci"], "ephemeral": true}}}})),
        )
        .await);
    assert_eq!(
        tagged["capabilities"]["devices"]["create"]["tags"],
        json!(["tag:ci"])
    );
    let wrong = token(grant(&format!("{secret}x"))).await.unwrap();
    assert_eq!(wrong.status(), 401);
    assert_eq!(
        wrong.json::<Value>().await.unwrap()["error"],
        "invalid_client"
    );
    let mut wider = grant(&secret);
    wider.push(("scope", "policy_file".to_owned()));
    let wider = token(wider).await.unwrap();
    assert_eq!(wider.status(), 400);
    assert_eq!(
        wider.json::<Value>().await.unwrap()["error"],
        "invalid_scope"
    );
    let mut narrower = grant(&secret);
    narrower.push(("scope", "devices:core:read".to_owned()));
    let narrower: Value = token(narrower).await.unwrap().json().await.unwrap();
    let read_only = narrower["access_token"].as_str().unwrap().to_owned();
    refused(
        api.send(
            Auth::Bearer(&read_only),
            "GET",
            "/api/v2/tailnet/-/keys",
            None,
        )
        .await,
        403,
        "auth_keys:read",
    );
    let keys = ok(api.send(admin, "GET", "/api/v2/tailnet/-/keys", None).await);
    let types: Vec<&str> = keys["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["keyType"].as_str().unwrap())
        .collect();
    assert_eq!(types, ["auth", "auth", "client"], "{keys}");
    ok(api
        .send(
            admin,
            "DELETE",
            &format!("/api/v2/tailnet/-/keys/{client_id}"),
            None,
        )
        .await);
    refused(
        api.send(by_token, "GET", "/api/v2/tailnet/-/devices", None)
            .await,
        401,
        "",
    );
    ok(api
        .send(
            admin,
            "DELETE",
            &format!("/api/v2/tailnet/-/keys/{key_id}"),
            None,
        )
        .await);
    refused(
        api.send(
            admin,
            "GET",
            &format!("/api/v2/tailnet/-/keys/{key_id}"),
            None,
        )
        .await,
        404,
        "",
    );

    // Users and settings.
    let users = ok(api
        .send(admin, "GET", "/api/v2/tailnet/-/users", None)
        .await);
    let alice = &users["users"][0];
    assert_eq!(alice["loginName"], "alice");
    assert_eq!(alice["deviceCount"], 1);
    let uid = alice["id"].as_str().unwrap();
    let one = ok(api
        .send(admin, "GET", &format!("/api/v2/users/{uid}"), None)
        .await);
    assert_eq!(one["loginName"], "alice");
    let shared = ok(api
        .send(admin, "GET", "/api/v2/tailnet/-/users?type=shared", None)
        .await);
    assert_eq!(shared["users"], json!([]));
    let settings = ok(api
        .send(admin, "GET", "/api/v2/tailnet/-/settings", None)
        .await);
    assert_eq!(settings["devicesApprovalOn"], false);
    assert_eq!(settings["aclsExternallyManagedOn"], false, "database mode");
    refused(
        api.send(
            admin,
            "PATCH",
            "/api/v2/tailnet/-/settings",
            Some(json!({"devicesApprovalOn": true})),
        )
        .await,
        400,
        "devicesApprovalOn",
    );
    ok(api
        .send(
            admin,
            "PATCH",
            "/api/v2/tailnet/-/settings",
            Some(json!({"devicesApprovalOn": false, "aclsExternalLink": null})),
        )
        .await);

    // Delete, and the node is gone for the gRPC API too.
    ok(api
        .send(admin, "DELETE", &format!("/api/v2/device/{id}"), None)
        .await);
    let nodes = grpc
        .list_nodes(pb::ListNodesRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert!(nodes.nodes.is_empty());
}

//! Tailscale's official Go API client (`tailscale.com/client/tailscale/v2` v2.12.0,
//! wrapped by tests/go/apiv2 as `headway-apiv2` and built by
//! scripts/install-test-deps) drives headway's `/api/v2` as a user's tooling would,
//! with official clients attached: it lists the machines that joined, approves a
//! subnet route, replaces the policy guarded by ETags, tags a device, makes an auth
//! key a second machine joins with, signs in as an OAuth client whose scope bounds
//! what it may do, renames and deletes devices; and every refusal reaches the
//! client as the API error it understands (an HTTP status and a message).

use crate::clients::{assert_logged_in, sees_peer};
use crate::support::tailscale::{Client, free_port, tools_dir, versions};
use crate::support::{Run, Spawn, TestServer, wait_until};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

/// The Go API client's version, as tests/go/apiv2/go.mod and scripts/install-test-deps pin it.
const CLIENT_VERSION: &str = "2.12.0";

/// The subnet the first machine routes.
const ROUTE: &str = "10.77.0.0/24";

/// The policy a tool writes first: everyone reaches everything.
const DRAFT: &str = r#"// A first draft: everyone reaches everything.
{"acls": [{"action": "accept", "src": ["*"], "dst": ["*:*"]}]}
"#;

/// The policy that replaces it: the same, and alice may tag servers.
const POLICY: &str = r#"{
  // Everyone reaches everything; alice owns tag:server.
  "tagOwners": {"tag:server": ["alice@"]},
  "acls": [{"action": "accept", "src": ["*"], "dst": ["*:*"]}],
}
"#;

/// A write based on the draft's ETag, which would lock everyone out.
const LATE: &str = r#"{"acls": []}"#;

/// Not HuJSON: a doubled comma on line 3.
const BROKEN: &str = "{\n  \"acls\": [\n    {\"action\": \"accept\",,}\n  ]\n}\n";

/// Well formed, but its own test fails: bob may not reach alice's port 22.
const FAILING_TEST: &str = r#"{
  "acls": [{"action": "accept", "src": ["alice@"], "dst": ["bob@:*"]}],
  "tests": [{"src": "bob@", "accept": ["alice@:22"]}],
}"#;

/// `headway-apiv2`, as scripts/install-test-deps built it from the sources in this
/// checkout: its directory is named after the client version and a hash of them
/// (`cat main.go go.mod go.sum | sha256sum`, 16 digits), so a stale build never runs.
fn binary() -> PathBuf {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/go/apiv2");
    let mut hash = Sha256::new();
    for file in ["main.go", "go.mod", "go.sum"] {
        let path = src.join(file);
        hash.update(std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display())));
    }
    let stamp = &hex::encode(hash.finalize())[..16];
    let path = tools_dir().join(format!(
        "apiv2-client-{CLIENT_VERSION}-{stamp}/headway-apiv2"
    ));
    assert!(
        path.exists(),
        "{} is missing (or tests/go/apiv2 changed since it was built): run \
         scripts/install-test-deps (it builds tests/go/apiv2 with Go)",
        path.display()
    );
    path
}

/// The Go program pointed at one server, signed in one way (or not at all).
struct ApiV2 {
    bin: PathBuf,
    url: String,
    env: Vec<(String, String)>,
}

impl ApiV2 {
    /// Calls `server` with these credentials (`HEADWAY_API_KEY`, or
    /// `HEADWAY_OAUTH_CLIENT_ID` and `HEADWAY_OAUTH_CLIENT_SECRET`; none: anonymous).
    fn new(bin: &Path, server: &TestServer, credentials: &[(&str, &str)]) -> ApiV2 {
        ApiV2 {
            bin: bin.to_owned(),
            url: server.url(),
            env: credentials
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
        }
    }

    /// Runs `headway-apiv2 args…`.
    fn run(&self, args: &[&str]) -> Run {
        let mut command = Command::new(&self.bin);
        for var in [
            "HEADWAY_API_KEY",
            "HEADWAY_OAUTH_CLIENT_ID",
            "HEADWAY_OAUTH_CLIENT_SECRET",
            "HEADWAY_OAUTH_SCOPES",
        ] {
            command.env_remove(var);
        }
        let out = command
            .env("HEADWAY_URL", &self.url)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("run headway-apiv2");
        Run {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// The answer to a call that must succeed, as the Go client decoded it.
    #[track_caller]
    fn ok(&self, args: &[&str]) -> Value {
        let run = self.run(args);
        assert_eq!(
            run.code,
            0,
            "`headway-apiv2 {}` failed:\n{run:?}",
            args.join(" ")
        );
        serde_json::from_str(&run.stdout).unwrap_or_else(|e| {
            panic!(
                "`headway-apiv2 {}` printed no JSON: {e}\n{run:?}",
                args.join(" ")
            )
        })
    }

    /// The HTTP status and message of a call the server must refuse with an API
    /// error the Go client understands (`tailscale.APIError`, or the OAuth token
    /// endpoint's error).
    #[track_caller]
    fn refused(&self, args: &[&str]) -> (u64, String) {
        let run = self.run(args);
        assert_eq!(
            run.code,
            2,
            "`headway-apiv2 {}` was not refused with an API error the client understands \
             (exit 0: it succeeded; exit 1: the answer was no API error, e.g. not JSON):\n{run:?}",
            args.join(" ")
        );
        let answer: Value = serde_json::from_str(&run.stdout).unwrap();
        (
            answer["status"].as_u64().unwrap_or_default(),
            answer["error"].as_str().unwrap_or_default().to_owned(),
        )
    }
}

/// A JSON id as text, whether the answer spells it as a string or a number.
fn text(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

/// A JSON list of strings, sorted; absent or `null` reads as empty.
fn strings(value: &Value) -> Vec<String> {
    let mut out: Vec<String> = value
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|s| s.as_str().map(str::to_owned))
        .collect();
    out.sort();
    out
}

/// The device whose `hostname` is `hostname` in a `devices` answer.
fn device_named(devices: &Value, hostname: &str) -> Value {
    devices
        .as_array()
        .into_iter()
        .flatten()
        .find(|d| d["hostname"] == hostname)
        .cloned()
        .unwrap_or_else(|| panic!("no device {hostname} in the device list: {devices:#}"))
}

/// The node `headway nodes list -o json` shows as `given_name`.
fn listed(server: &TestServer, given_name: &str) -> Value {
    let nodes = server.nodes();
    nodes
        .iter()
        .find(|n| n["given_name"] == given_name)
        .cloned()
        .unwrap_or_else(|| panic!("headway's CLI lists no node {given_name}: {nodes:#?}"))
}

/// The routes `status` shows the peer named `name` serving.
fn primary_routes(status: &Value, name: &str) -> Vec<String> {
    status["Peer"]
        .as_object()
        .into_iter()
        .flatten()
        .find(|(_, p)| p["HostName"] == name)
        .map(|(_, p)| strings(&p["PrimaryRoutes"]))
        .unwrap_or_default()
}

#[test]
fn tailscales_go_api_client_drives_headway() {
    let version = versions()
        .pop()
        .expect("HEADWAY_TAILSCALE_VERSIONS names a client");
    let bin = binary();
    let server = TestServer::spawn_with(Spawn {
        port: Some(free_port()),
        // The policy is written through the API, so the database keeps it.
        extra_config: "policy:\n  mode: database\n".into(),
        ..Spawn::default()
    });
    let api_key = server.api_key();
    let api = ApiV2::new(&bin, &server, &[("HEADWAY_API_KEY", &api_key)]);
    let policy_file = |name: &str, contents: &str| {
        let path = server.dir.path().join(name);
        std::fs::write(&path, contents).unwrap();
        path.display().to_string()
    };

    // A machine of alice's joins the usual way and advertises a subnet route.
    let laptop = Client::start(&version, "laptop");
    let advertise = format!("--advertise-routes={ROUTE}");
    let up = laptop.up_with(
        &server.url(),
        &server.reusable_key("alice", &[]),
        &[&advertise],
    );
    assert_logged_in(&laptop, &up);

    // The device list shows it as the machine itself sees it. Route fields come
    // with `fields=all` only (Go's `Device` prints the advertised ones as
    // `AdvertisedRoutes`, and reads `advertisedRoutes` all the same).
    let mut devices = Value::Null;
    wait_until(
        "the device list shows the route the laptop advertises",
        Duration::from_secs(30),
        || {
            devices = api.ok(&["devices", "--all"]);
            devices
                .as_array()
                .is_some_and(|d| d.len() == 1 && strings(&d[0]["AdvertisedRoutes"]) == [ROUTE])
        },
    );
    let device = &devices[0];
    let (id, node_id) = (text(&device["id"]), text(&device["nodeId"]));
    let cli_node = listed(&server, "laptop");
    assert_eq!(
        id,
        text(&cli_node["id"]),
        "a device's numeric id is the node id headway's CLI shows: {device:#}"
    );
    assert!(!node_id.is_empty(), "a device has a nodeId: {device:#}");
    assert_eq!(device["hostname"], "laptop", "{device:#}");
    let status = laptop.status();
    assert_eq!(
        device["name"].as_str(),
        status["Self"]["DNSName"]
            .as_str()
            .map(|n| n.trim_end_matches('.')),
        "a device's name is its MagicDNS name as the machine knows it: {device:#}"
    );
    assert_eq!(
        device["nodeKey"], status["Self"]["PublicKey"],
        "a device's node key is the machine's own: {device:#}"
    );
    assert!(
        device["machineKey"]
            .as_str()
            .is_some_and(|k| k.starts_with("mkey:")),
        "a device shows its machine key: {device:#}"
    );
    let mut ips: Vec<String> = laptop
        .cli(&["ip"])
        .ok()
        .stdout
        .lines()
        .map(str::to_owned)
        .collect();
    ips.sort();
    assert_eq!(
        strings(&device["addresses"]),
        ips,
        "a device's addresses are those `tailscale ip` prints: {device:#}"
    );
    assert_eq!(
        strings(&cli_node["ip_addresses"]),
        ips,
        "headway's CLI agrees"
    );
    assert_eq!(device["authorized"], true, "{device:#}");
    assert_eq!(
        device["connectedToControl"], true,
        "a logged-in machine is connected: {device:#}"
    );
    assert_eq!(device["os"], "linux", "{device:#}");
    assert!(
        device["clientVersion"]
            .as_str()
            .is_some_and(|v| v.contains(version.trim_start_matches('v'))),
        "a device shows its client's version ({version}): {device:#}"
    );
    assert_eq!(device["isEphemeral"], false, "{device:#}");
    assert!(strings(&device["tags"]).is_empty(), "{device:#}");
    assert!(
        strings(&device["enabledRoutes"]).is_empty(),
        "no route is approved yet: {device:#}"
    );
    let owner = text(&device["user"]);
    assert!(owner.contains("alice"), "the laptop is alice's: {device:#}");
    for key in [id.as_str(), node_id.as_str()] {
        assert_eq!(
            api.ok(&["device", key])["id"],
            device["id"],
            "a device is found by its id and by its nodeId ({key})"
        );
    }
    let routes = api.ok(&["routes", &node_id]);
    assert_eq!(strings(&routes["advertisedRoutes"]), [ROUTE], "{routes}");
    assert!(strings(&routes["enabledRoutes"]).is_empty(), "{routes}");

    // Approving the route through the API approves it in headway.
    let routes = api.ok(&["set-routes", &node_id, ROUTE]);
    assert_eq!(
        strings(&routes["enabledRoutes"]),
        [ROUTE],
        "set-routes enables the route: {routes}"
    );
    assert_eq!(strings(&routes["advertisedRoutes"]), [ROUTE], "{routes}");
    let cli_node = listed(&server, "laptop");
    assert_eq!(
        strings(&cli_node["approved_routes"]),
        [ROUTE],
        "headway's CLI shows the route approved: {cli_node:#}"
    );
    assert_eq!(
        strings(&api.ok(&["device", &node_id, "--all"])["enabledRoutes"]),
        [ROUTE]
    );

    // The policy: written, read back word for word, guarded by its ETag.
    let draft = api.ok(&["set-policy", &policy_file("draft.hujson", DRAFT)]);
    assert_eq!(
        draft["hujson"], DRAFT,
        "a policy reads back as written, comments and all: {draft:#}"
    );
    let draft_etag = text(&draft["etag"]);
    assert!(!draft_etag.is_empty(), "a policy has an ETag: {draft:#}");
    assert_eq!(
        api.ok(&["get-policy"]),
        draft,
        "get-policy shows the policy just written, with the same ETag"
    );
    let current = api.ok(&[
        "set-policy",
        &policy_file("policy.hujson", POLICY),
        "--etag",
        &draft_etag,
    ]);
    assert_eq!(
        current["hujson"], POLICY,
        "a write with the current ETag is accepted: {current:#}"
    );
    let etag = text(&current["etag"]);
    assert!(
        !etag.is_empty() && etag != draft_etag,
        "a new policy has a new ETag: {current:#}"
    );
    let (status, message) = api.refused(&[
        "set-policy",
        &policy_file("late.hujson", LATE),
        "--etag",
        &draft_etag,
    ]);
    assert_eq!(
        status, 412,
        "a write based on an old ETag is refused as Precondition Failed: {message}"
    );
    assert_eq!(
        api.ok(&["get-policy"]),
        current,
        "a refused write leaves the policy as it was"
    );
    let parsed = api.ok(&["get-policy-json"]);
    assert_eq!(
        parsed["acl"]["tagOwners"],
        json!({"tag:server": ["alice@"]}),
        "the policy as JSON: {parsed:#}"
    );
    assert_eq!(
        parsed["acl"]["acls"],
        json!([{"action": "accept", "src": ["*"], "dst": ["*:*"]}]),
        "{parsed:#}"
    );
    assert!(!text(&parsed["etag"]).is_empty(), "{parsed:#}");
    let broken = policy_file("broken.hujson", BROKEN);
    let (status, message) = api.refused(&["validate-policy", &broken]);
    assert_eq!(
        status, 400,
        "validating a policy that does not parse answers Bad Request: {message}"
    );
    assert!(!message.is_empty(), "and says what is wrong");
    let (status, message) = api.refused(&["set-policy", &broken]);
    assert_eq!(
        status, 400,
        "writing a policy that does not parse answers Bad Request: {message}"
    );
    // A policy whose own tests fail is refused too: Tailscale answers such a
    // validation with 200 and the failures, which the client turns into an error
    // of its own (exit 1); a 4xx reaches it as an API error (exit 2).
    let failing = api.run(&[
        "validate-policy",
        &policy_file("failing.hujson", FAILING_TEST),
    ]);
    assert_ne!(
        failing.code, 0,
        "validating a policy whose tests fail reports the failure: {failing:?}"
    );
    assert_eq!(
        api.ok(&["validate-policy", &policy_file("again.hujson", POLICY)]),
        json!({"valid": true}),
        "a good policy validates"
    );
    assert_eq!(
        api.ok(&["get-policy"]),
        current,
        "neither validating nor a refused write changes the policy"
    );

    // Tags: set through the API, seen by headway and by the machine itself.
    let tagged = api.ok(&["set-tags", &node_id, "tag:server"]);
    assert_eq!(
        strings(&tagged["tags"]),
        ["tag:server"],
        "set-tags tags the device: {tagged:#}"
    );
    assert_eq!(
        strings(&listed(&server, "laptop")["tags"]),
        ["tag:server"],
        "headway's CLI shows the tag"
    );
    laptop.wait_status("itself tagged tag:server", Duration::from_secs(30), |s| {
        strings(&s["Self"]["Tags"]) == ["tag:server"]
    });
    let (status, message) = api.refused(&["set-tags", &node_id, "tag:nope"]);
    assert_eq!(
        status, 400,
        "a tag the policy does not define is refused as Bad Request: {message}"
    );
    assert_eq!(
        strings(&api.ok(&["device", &node_id])["tags"]),
        ["tag:server"],
        "and the device keeps its tags"
    );

    // An auth key made through the API: a second machine joins with it, tagged.
    let created = api.ok(&[
        "create-key",
        "--tag",
        "tag:server",
        "--preauthorized",
        "--expiry-seconds",
        "3600",
        "--description",
        "web server",
    ]);
    let secret = text(&created["key"]);
    assert!(
        secret.starts_with("hskey-auth-"),
        "create-key shows the new key's secret once: {created:#}"
    );
    let key_id = text(&created["id"]);
    assert!(!key_id.is_empty(), "{created:#}");
    let create = &created["capabilities"]["devices"]["create"];
    assert_eq!(strings(&create["tags"]), ["tag:server"], "{created:#}");
    assert_eq!(create["preauthorized"], true, "{created:#}");
    assert_eq!(create["reusable"], false, "{created:#}");
    assert_eq!(create["ephemeral"], false, "{created:#}");
    // headway's pre-auth keys keep no description (README says so).
    let keys = api.ok(&["keys"]);
    assert!(
        keys.as_array()
            .is_some_and(|k| k.iter().any(|k| text(&k["id"]) == key_id)),
        "the key list shows the new key {key_id}: {keys:#}"
    );
    let shown = api.ok(&["key", &key_id]);
    assert_eq!(
        shown["key"], "",
        "reading a key back never shows its secret: {shown:#}"
    );
    assert_eq!(
        strings(&shown["capabilities"]["devices"]["create"]["tags"]),
        ["tag:server"],
        "{shown:#}"
    );
    let web = Client::start(&version, "web");
    let up = web.up_with_key(&server.url(), &secret);
    assert_logged_in(&web, &up);
    let devices = api.ok(&["devices"]);
    assert_eq!(
        devices.as_array().map(Vec::len),
        Some(2),
        "the device list shows both machines: {devices:#}"
    );
    let web_device = device_named(&devices, "web");
    assert_eq!(
        strings(&web_device["tags"]),
        ["tag:server"],
        "a machine that joined with the key has its tag: {web_device:#}"
    );
    let web_id = text(&web_device["nodeId"]);
    let (laptop_ip, web_ip) = (laptop.ipv4(), web.ipv4());
    laptop.wait_status("web among its peers", Duration::from_secs(30), |s| {
        sees_peer(s, "web", &web_ip)
    });
    web.wait_status(
        "the laptop among its peers, serving the approved route",
        Duration::from_secs(30),
        |s| sees_peer(s, "laptop", &laptop_ip) && primary_routes(s, "laptop") == [ROUTE],
    );

    // Users and tailnet settings.
    let users = api.ok(&["users"]);
    let alice = users
        .as_array()
        .into_iter()
        .flatten()
        .find(|u| text(&u["loginName"]) == owner)
        .cloned()
        .unwrap_or_else(|| panic!("the user list shows the laptop's owner {owner}: {users:#}"));
    let alice_id = text(&alice["id"]);
    assert!(!alice_id.is_empty(), "{alice:#}");
    assert_eq!(
        text(&api.ok(&["user", &alice_id])["loginName"]),
        owner,
        "a user is found by id"
    );
    let settings = api.ok(&["settings"]);
    assert!(settings.is_object(), "the tailnet settings: {settings}");

    // An OAuth client made with the API key: it signs in, reads what its scope
    // grants and nothing more; a wrong secret gets no token.
    let oauth_client = api.ok(&[
        "create-oauth-client",
        "--scope",
        "devices:core:read",
        "--tag",
        "tag:server",
        "--description",
        "inventory",
    ]);
    let (client_id, client_secret) = (text(&oauth_client["id"]), text(&oauth_client["key"]));
    assert!(
        !client_id.is_empty() && !client_secret.is_empty() && client_id != client_secret,
        "a new OAuth client shows its id and its secret: {oauth_client:#}"
    );
    assert_eq!(
        strings(&oauth_client["scopes"]),
        ["devices:core:read"],
        "{oauth_client:#}"
    );
    let reader = ApiV2::new(
        &bin,
        &server,
        &[
            ("HEADWAY_OAUTH_CLIENT_ID", &client_id),
            ("HEADWAY_OAUTH_CLIENT_SECRET", &client_secret),
        ],
    );
    let seen = reader.ok(&["devices"]);
    assert_eq!(
        seen.as_array().map(Vec::len),
        Some(2),
        "an OAuth client with devices:core:read lists the devices: {seen:#}"
    );
    let (status, message) = reader.refused(&["set-tags", &node_id, "tag:server"]);
    assert_eq!(
        status, 403,
        "a read-only OAuth client may not tag a device (Forbidden): {message}"
    );
    let (status, message) = reader.refused(&["create-key", "--tag", "tag:server"]);
    assert_eq!(
        status, 403,
        "a read-only OAuth client may not make auth keys (Forbidden): {message}"
    );
    let greedy = ApiV2::new(
        &bin,
        &server,
        &[
            ("HEADWAY_OAUTH_CLIENT_ID", &client_id),
            ("HEADWAY_OAUTH_CLIENT_SECRET", &client_secret),
            ("HEADWAY_OAUTH_SCOPES", "devices:core"),
        ],
    );
    let (status, message) = greedy.refused(&["devices"]);
    assert_eq!(
        status, 400,
        "a token for more than the client's scopes is refused (RFC 6749 invalid_scope): {message}"
    );
    let impostor = ApiV2::new(
        &bin,
        &server,
        &[
            ("HEADWAY_OAUTH_CLIENT_ID", &client_id),
            ("HEADWAY_OAUTH_CLIENT_SECRET", "not-the-secret"),
        ],
    );
    let (status, message) = impostor.refused(&["devices"]);
    assert!(
        status == 400 || status == 401,
        "a wrong client secret gets no token (RFC 6749 invalid_client, 400 or 401), got {status}: {message}"
    );

    // No key, or a made-up one: Unauthorized.
    let (status, message) = ApiV2::new(&bin, &server, &[]).refused(&["devices"]);
    assert_eq!(
        status, 401,
        "a call without a key is Unauthorized: {message}"
    );
    let forged = ApiV2::new(
        &bin,
        &server,
        &[("HEADWAY_API_KEY", "hskey-api-abcdefghijkl-notarealsecret")],
    );
    let (status, message) = forged.refused(&["devices"]);
    assert_eq!(status, 401, "a made-up key is Unauthorized: {message}");

    // Renaming, key expiry, authorization and deletion of devices; deleting a key.
    let renamed = api.ok(&["set-name", &web_id, "webserver"]);
    assert!(
        renamed["name"]
            .as_str()
            .is_some_and(|n| n.starts_with("webserver.")),
        "set-name renames the device: {renamed:#}"
    );
    listed(&server, "webserver");
    let pinned = api.ok(&["set-key-expiry-disabled", &node_id, "true"]);
    assert_eq!(
        pinned["keyExpiryDisabled"], true,
        "the laptop's key no longer expires: {pinned:#}"
    );
    let authorized = api.ok(&["authorize", &node_id, "true"]);
    assert_eq!(authorized["authorized"], true, "{authorized:#}");
    api.ok(&["delete-device", &web_id]);
    let devices = api.ok(&["devices"]);
    assert_eq!(
        devices.as_array().map(Vec::len),
        Some(1),
        "a deleted device leaves the list: {devices:#}"
    );
    device_named(&devices, "laptop");
    assert!(
        server
            .nodes()
            .iter()
            .all(|n| n["given_name"] != "webserver"),
        "and headway: {:#?}",
        server.nodes()
    );
    let (status, message) = api.refused(&["device", &web_id]);
    assert_eq!(status, 404, "a deleted device is Not Found: {message}");
    let spare = api.ok(&["create-key", "--reusable", "--tag", "tag:server"]);
    let spare_id = text(&spare["id"]);
    api.ok(&["delete-key", &spare_id]);
    // Tailscale keeps a revoked key readable for a while, marked invalid; gone is as good.
    let after = api.run(&["key", &spare_id]);
    let gone = after.code == 2 && after.stdout.contains("\"status\":404");
    let revoked = after.code == 0
        && serde_json::from_str::<Value>(&after.stdout).is_ok_and(|k| k["invalid"] == true);
    assert!(
        gone || revoked,
        "a deleted key is Not Found, or shown invalid: {after:?}"
    );
}

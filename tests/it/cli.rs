//! The `headway` CLI end to end against a live server, in the spellings the
//! popular Headscale guides use (../shared/journeys.md J1-J5, J10).

use crate::support::{Spawn, TestServer, headway_bin};
use headway::grpc::pb;

/// Queues an interactive registration as a waiting client would, and returns its
/// registration id and node key.
async fn waiting_client(
    server: &TestServer,
    n: usize,
    hostname: &str,
    routes: &[&str],
) -> (String, String) {
    let key = format!("hskey-authreq-{:0>24}", format!("c{n}"));
    let node = server
        .grpc()
        .await
        .debug_create_node(pb::DebugCreateNodeRequest {
            user: "default".into(),
            key: key.clone(),
            name: hostname.into(),
            routes: routes.iter().map(|r| r.to_string()).collect(),
        })
        .await
        .unwrap()
        .into_inner()
        .node
        .unwrap();
    (key, node.node_key)
}

fn json(text: &str) -> serde_json::Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}):\n{text}"))
}

/// The acceptance line, verbatim, against a server started with no config file.
#[test]
fn guide_commands_work_with_no_config_file() {
    let server = TestServer::spawn_with(Spawn {
        no_config: true,
        env: vec![("HEADWAY_LISTEN_ADDR".into(), "127.0.0.1:0".into())],
        ..Spawn::default()
    });
    assert!(
        server.dir.path().join("headway-data/db.sqlite").exists(),
        "data lives under ./headway-data"
    );
    let created = server.cli(&["namespaces", "create", "default"]).ok();
    assert!(
        created.stderr.contains("users"),
        "one note names the modern form: {}",
        created.stderr
    );
    assert_eq!(
        created
            .stderr
            .lines()
            .filter(|l| l.starts_with("note:"))
            .count(),
        1,
        "{}",
        created.stderr
    );
    let key = server
        .cli(&["preauthkeys", "create", "-e", "24h", "-n", "default"])
        .ok();
    assert!(
        key.stdout.trim().starts_with("hskey-auth-"),
        "{}",
        key.stdout
    );
    let nodes = server.cli(&["nodes", "list"]).ok();
    assert!(nodes.stdout.contains("Hostname"), "{}", nodes.stdout);
}

/// J1's guide-style config: legacy keys, a custom range, the embedded relay
/// switched off as the guides do, `{dir}` for the test directory.
pub(crate) const J1_CONFIG: &str = "\
server_url: http://127.0.0.1:8080
listen_addr: 127.0.0.1:0
metrics_listen_addr: 127.0.0.1:9090
grpc_listen_addr: 127.0.0.1:0
grpc_allow_insecure: false
private_key_path: {dir}/private.key
noise:
  private_key_path: {dir}/noise_private.key
ip_prefixes:
  - fd7a:115c:a1e0::/48
  - 10.1.0.0/16
db_type: sqlite3
db_path: {dir}/db.sqlite
unix_socket: {dir}/headway.sock
dns_config:
  magic_dns: false
  base_domain: example.com
randomize_client_port: false
derp:
  server:
    enabled: false
log_level: info
";

/// J1's guide-style config with legacy keys, then the same commands.
#[test]
fn guide_commands_work_with_a_legacy_config_file() {
    let config = J1_CONFIG;
    let server = TestServer::spawn_with(Spawn {
        config_file: Some(config.into()),
        ..Spawn::default()
    });
    let log = server.log();
    for legacy in [
        "ip_prefixes",
        "db_type",
        "db_path",
        "dns_config",
        "log_level",
        "private_key_path",
    ] {
        assert!(
            log.contains(legacy),
            "the legacy key {legacy} is named in a warning:\n{log}"
        );
    }
    assert!(
        log.contains("remote gRPC is off"),
        "J1: gRPC without TLS says why it is off:\n{log}"
    );
    assert!(
        log.contains("the embedded relay runs anyway"),
        "J1: relay off with no other relay is overridden, and says so:\n{log}"
    );
    server.cli(&["namespaces", "create", "default"]).ok();
    let key = server
        .cli(&["preauthkeys", "create", "-e", "24h", "-n", "default"])
        .ok();
    assert!(key.stdout.trim().starts_with("hskey-auth-"));
    server.cli(&["nodes", "list"]).ok();
    assert!(
        server.dir.path().join("db.sqlite").exists(),
        "db_path was honoured"
    );
}

#[test]
fn j2_namespaces_in_every_spelling() {
    let server = TestServer::spawn();
    server.cli(&["namespaces", "create", "default"]).ok();
    let list = server.cli(&["namespaces", "list"]).ok();
    let header = list.stdout.lines().next().unwrap();
    assert!(
        header.starts_with("ID") && header.contains("Name") && header.contains("Created"),
        "{header}"
    );
    assert!(list.stdout.contains("default"));
    server
        .cli(&["namespace", "rename", "default", "myspace"])
        .ok();
    assert!(
        server
            .cli(&["users", "list"])
            .ok()
            .stdout
            .contains("myspace")
    );
    server.cli(&["users", "create", "second"]).ok();
    server
        .cli(&["users", "rename", "-n", "second", "-r", "third"])
        .ok();
    server.cli(&["namespace", "destroy", "myspace"]).ok();
    server
        .cli(&["users", "destroy", "-n", "third", "--force"])
        .ok();
    let list = server.cli(&["users", "list", "-o", "json"]).ok();
    assert_eq!(json(&list.stdout), serde_json::json!([]));
}

#[tokio::test]
async fn j3_register_in_every_spelling() {
    let server = TestServer::spawn();
    server.cli(&["namespaces", "create", "default"]).ok();

    let (id, _) = waiting_client(&server, 1, "laptop", &[]).await;
    let out = server
        .cli(&["-n", "default", "nodes", "register", "--key", &id])
        .ok();
    assert!(out.stdout.contains("laptop"), "{}", out.stdout);

    let (_, node_key) = waiting_client(&server, 2, "desktop", &[]).await;
    server
        .cli(&["nodes", "register", "--user", "default", "--key", &node_key])
        .ok();

    let (id, _) = waiting_client(&server, 3, "phone", &[]).await;
    server
        .cli(&["auth", "register", "--auth-id", &id, "--user", "default"])
        .ok();

    let (id, _) = waiting_client(&server, 4, "tablet", &[]).await;
    let bare = id.trim_start_matches("hskey-authreq-");
    server
        .cli(&["nodes", "register", "-u", "1", "-k", bare])
        .ok();

    let nodes = json(&server.cli(&["nodes", "list", "-o", "json"]).ok().stdout);
    let names: Vec<_> = nodes
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["given_name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["laptop", "desktop", "phone", "tablet"]);
    assert_eq!(nodes[0]["ip_addresses"][0], "100.64.0.1");

    let unknown = server
        .cli(&["nodes", "register", "--user", "default", "--key", &id])
        .failed();
    assert!(
        unknown.stderr.contains("no pending registration"),
        "{}",
        unknown.stderr
    );
    let nobody = server
        .cli(&["nodes", "register", "--user", "nobody", "--key", &id])
        .failed();
    assert!(nobody.stderr.contains("nobody"), "{}", nobody.stderr);
}

#[test]
fn j4_preauth_keys_in_every_spelling() {
    let server = TestServer::spawn();
    server.cli(&["users", "create", "default"]).ok();
    let by_name = server
        .cli(&[
            "preauthkeys",
            "create",
            "--user",
            "default",
            "--reusable",
            "--ephemeral",
        ])
        .ok();
    let by_id = server
        .cli(&["preauthkeys", "create", "--user", "1", "-e", "90d"])
        .ok();
    let by_n = server
        .cli(&["preauthkeys", "create", "-e", "24h", "-n", "default"])
        .ok();
    for run in [&by_name, &by_id, &by_n] {
        assert!(
            run.stdout.trim().starts_with("hskey-auth-"),
            "{}",
            run.stdout
        );
    }
    let listed = server.cli(&["-n", "default", "preauthkeys", "list"]).ok();
    assert_eq!(
        listed.stdout.lines().count(),
        4,
        "header and three keys:\n{}",
        listed.stdout
    );
    let keys = json(
        &server
            .cli(&["preauthkeys", "list", "-o", "json"])
            .ok()
            .stdout,
    );
    assert_eq!(keys[0]["reusable"], true);
    assert_eq!(keys[0]["ephemeral"], true);
    assert!(keys[0]["key"].as_str().unwrap().ends_with("-***"));

    // ≤0.27's `expire -n USER KEY` finds the key by its prefix.
    server
        .cli(&["preauthkeys", "expire", "-n", "default", by_n.stdout.trim()])
        .ok();
    server.cli(&["preauthkeys", "expire", "--id", "1"]).ok();
    server.cli(&["preauthkeys", "delete", "--id", "2"]).ok();
    let keys = json(
        &server
            .cli(&["preauthkeys", "list", "-o", "json"])
            .ok()
            .stdout,
    );
    assert_eq!(keys.as_array().unwrap().len(), 2);
    let unknown_user = server
        .cli(&["preauthkeys", "create", "--user", "bob"])
        .failed();
    assert!(
        unknown_user.stderr.contains("bob"),
        "{}",
        unknown_user.stderr
    );
    let bad_duration = server
        .cli(&["preauthkeys", "create", "--user", "default", "-e", "soon"])
        .failed();
    assert!(
        bad_duration.stderr.contains("soon"),
        "{}",
        bad_duration.stderr
    );
}

#[tokio::test]
async fn j5_and_j10_routes_and_cheat_sheet_commands() {
    let server = TestServer::spawn();
    server.cli(&["users", "create", "default"]).ok();
    let (id, _) = waiting_client(
        &server,
        1,
        "router",
        &["192.168.10.0/24", "192.168.100.0/24", "0.0.0.0/0", "::/0"],
    )
    .await;
    server
        .cli(&["nodes", "register", "--user", "default", "--key", &id])
        .ok();
    let (id, _) = waiting_client(&server, 2, "client", &[]).await;
    server
        .cli(&["nodes", "register", "--user", "default", "--key", &id])
        .ok();

    let routes = server.cli(&["routes", "list", "-i=1"]).ok();
    assert!(
        routes.stdout.contains("192.168.10.0/24"),
        "{}",
        routes.stdout
    );
    server
        .cli(&["routes", "enable", "-i=1", "-r=192.168.10.0/24"])
        .ok();
    server
        .cli(&["routes", "enable", "-i", "1", "-r", "192.168.100.0/24"])
        .ok();
    let approved = |server: &TestServer| {
        let node = json(&server.cli(&["nodes", "list", "-o", "json"]).ok().stdout)[0].clone();
        let mut routes: Vec<String> = node["approved_routes"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .iter()
            .map(|r| r.as_str().unwrap().to_owned())
            .collect();
        routes.sort();
        routes
    };
    assert_eq!(approved(&server), ["192.168.10.0/24", "192.168.100.0/24"]);
    server
        .cli(&["routes", "disable", "-i", "1", "-r", "192.168.10.0/24"])
        .ok();
    assert_eq!(approved(&server), ["192.168.100.0/24"]);
    server.cli(&["routes", "enable", "-i", "1", "-a"]).ok();
    assert_eq!(approved(&server).len(), 4);
    server
        .cli(&["nodes", "approve-routes", "-i", "1", "-r", ""])
        .ok();
    assert!(approved(&server).is_empty());
    let routes = json(&server.cli(&["routes", "list", "-o", "json"]).ok().stdout);
    let lan = routes
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["prefix"] == "192.168.10.0/24")
        .unwrap();
    let route_id = lan["id"].as_u64().unwrap();
    server
        .cli(&["routes", "enable", "-r", &route_id.to_string()])
        .ok();
    assert_eq!(approved(&server).len(), 1);
    server
        .cli(&["nodes", "approve-routes", "-i", "1", "-r", "0.0.0.0/0"])
        .ok();
    assert_eq!(
        approved(&server),
        ["0.0.0.0/0", "::/0"],
        "an exit route brings its partner"
    );
    let refused = server
        .cli(&["nodes", "approve-routes", "-i", "1", "-r", "10.0.0.0/8"])
        .failed();
    assert!(
        refused.stderr.contains("does not advertise"),
        "{}",
        refused.stderr
    );
    let list_routes = server.cli(&["nodes", "list-routes", "-i", "1"]).ok();
    assert!(
        list_routes.stdout.contains("0.0.0.0/0"),
        "{}",
        list_routes.stdout
    );

    // J10 cheat sheet.
    server.cli(&["node", "list"]).ok();
    let with_t = server.cli(&["node", "ls", "-t"]).ok();
    assert!(with_t.stderr.contains("note:"), "{}", with_t.stderr);
    server.cli(&["-user", "default", "node", "ls"]).ok();
    server.cli(&["node", "tag", "-i=2", "-t=tag:test"]).ok();
    let nodes = json(&server.cli(&["nodes", "list", "-o", "json"]).ok().stdout);
    assert_eq!(nodes[1]["tags"], serde_json::json!(["tag:test"]));
    server
        .cli(&["node", "rename", "-i", "2", "workstation"])
        .ok();
    server.cli(&["node", "expire", "-i", "2"]).ok();
    server.cli(&["node", "delete", "-i=2", "--force"]).ok();
    let nodes = json(&server.cli(&["nodes", "list", "-o", "json"]).ok().stdout);
    assert_eq!(nodes.as_array().unwrap().len(), 1);
    let missing = server.cli(&["node", "delete", "-i", "999"]).failed();
    assert!(missing.stderr.contains("not found"), "{}", missing.stderr);
    let malformed = server.cli(&["node", "delete", "-i", "abc"]).failed();
    assert!(malformed.stderr.contains("abc"), "{}", malformed.stderr);
}

#[test]
fn machine_readable_output_formats() {
    let server = TestServer::spawn();
    server
        .cli(&["users", "create", "default", "-e", "a@example.com"])
        .ok();
    let pretty = json(&server.cli(&["users", "list", "-o", "json"]).ok().stdout);
    assert_eq!(pretty[0]["name"], "default");
    assert_eq!(pretty[0]["email"], "a@example.com");
    assert!(
        pretty[0]["created_at"]["seconds"].is_u64(),
        "Headscale's timestamp shape: {pretty}"
    );
    assert!(
        pretty[0].get("display_name").is_none(),
        "empty fields are left out like Headscale's CLI"
    );
    let line = server.cli(&["users", "list", "-o", "json-line"]).ok();
    assert_eq!(line.stdout.trim().lines().count(), 1);
    assert_eq!(json(&line.stdout), pretty);
    let yaml = server.cli(&["users", "list", "-o", "yaml"]).ok();
    assert!(yaml.stdout.contains("name: default"), "{}", yaml.stdout);
    let dup = server
        .cli(&["users", "create", "default", "-o", "json"])
        .failed();
    assert!(dup.stderr.contains("already exists"), "{}", dup.stderr);
}

#[test]
fn golden_users_table() {
    let server = TestServer::spawn();
    server.cli(&["users", "create", "alice"]).ok();
    server
        .cli(&[
            "users",
            "create",
            "bob",
            "-d",
            "Bob B.",
            "-e",
            "bob@example.com",
        ])
        .ok();
    let table = server.cli(&["users", "list"]).ok().stdout;
    // Creation times vary; everything else is fixed.
    let normalised: String = table
        .lines()
        .map(|l| {
            let mut l = l.to_owned();
            if let Some(pos) = l
                .find("2026-")
                .or_else(|| l.find("20"))
                .filter(|_| !l.starts_with("ID"))
            {
                l.replace_range(pos..pos + 19, "YYYY-MM-DD hh:mm:ss");
            }
            l
        })
        .collect::<Vec<_>>()
        .join("\n");
    let expected = "\
ID | Name   | Username | Email           | Created
1  | alice  | alice    |                 | YYYY-MM-DD hh:mm:ss
2  | Bob B. | bob      | bob@example.com | YYYY-MM-DD hh:mm:ss";
    assert_eq!(normalised, expected, "\n{table}");
}

#[test]
fn a_stopped_server_is_named_with_how_to_start_it() {
    let dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(headway_bin())
        .current_dir(dir.path())
        .env("HOME", dir.path())
        .env_remove("HEADWAY_CONFIG")
        .env_remove("HEADSCALE_CONFIG")
        .args(["users", "list"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("headway-data/headway.sock"),
        "names the socket it tried: {err}"
    );
    assert!(
        err.contains("headway serve"),
        "says how to start the server: {err}"
    );
}

#[test]
fn invoked_as_headscale_it_behaves_the_same() {
    let server = TestServer::spawn();
    let link = server.dir.path().join("headscale");
    std::os::unix::fs::symlink(headway_bin(), &link).unwrap();
    server
        .cli_as(&link, &["namespaces", "create", "default"])
        .ok();
    let list = server.cli_as(&link, &["users", "list", "-o", "json"]).ok();
    assert_eq!(json(&list.stdout)[0]["name"], "default");
}

#[test]
fn version_generate_and_configtest() {
    let server = TestServer::spawn();
    let version = server.cli(&["version"]).ok();
    assert!(
        version.stdout.contains(env!("CARGO_PKG_VERSION")),
        "{}",
        version.stdout
    );
    let key = server.cli(&["generate", "private-key"]).ok();
    let key = key.stdout.trim();
    assert!(
        key.starts_with("privkey:") && key.len() == "privkey:".len() + 64,
        "{key}"
    );
    let check = server.cli(&["configtest"]).ok();
    assert!(
        check.stdout.contains("OK") || check.stderr.contains("OK"),
        "{check:?}"
    );
    server.cli(&["health"]).ok();
}

/// `cli.address` + `cli.api_key` (here from the environment) reach the TCP listener.
#[test]
fn the_cli_works_remotely_with_an_api_key() {
    let server = TestServer::spawn_with(Spawn {
        extra_config: "grpc_listen_addr: 127.0.0.1:0\ngrpc_allow_insecure: true\n".into(),
        ..Spawn::default()
    });
    let tcp = crate::support::field_after(&server.log(), "admin API on TCP", "addr=")
        .expect("TCP listener logged");
    server.cli(&["users", "create", "remote"]).ok();
    let key = server
        .cli(&["apikeys", "create", "-e", "1h"])
        .ok()
        .stdout
        .trim()
        .to_owned();
    assert!(key.starts_with("hskey-api-"), "{key}");

    let remote = |key: &str, args: &[&str]| {
        let mut cmd = std::process::Command::new(headway_bin());
        cmd.current_dir(server.dir.path())
            .env("HOME", server.dir.path())
            // Plaintext, as `grpc_allow_insecure` serves it: said by the scheme.
            .env("HEADWAY_CLI_ADDRESS", format!("http://{tcp}"))
            .env("HEADWAY_CLI_API_KEY", key)
            // A config without a socket: only the remote address can answer.
            .env("HEADWAY_UNIX_SOCKET", server.dir.path().join("absent.sock"))
            .args(args);
        cmd.output().unwrap()
    };
    let ok = remote(&key, &["users", "list", "-o", "json"]);
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    assert_eq!(
        json(&String::from_utf8_lossy(&ok.stdout))[0]["name"],
        "remote"
    );
    let bad = remote("hskey-api-AAAAAAAAAAAA-wrong", &["users", "list"]);
    assert_eq!(bad.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("API key"),
        "{}",
        String::from_utf8_lossy(&bad.stderr)
    );
    // The refusal is logged with its source (for fail2ban).
    let log = server.log();
    assert!(
        log.lines()
            .any(|l| l.contains("refused an admin API call") && l.contains("source=127.0.0.1")),
        "{log}"
    );
}

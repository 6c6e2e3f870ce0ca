//! Headscale v0.29.2's own CLI drives headway's admin socket: the gRPC API is
//! wire-compatible for the commands admins and tools use most.

use crate::support::{TestServer, headscale_bin};

/// A minimal Headscale config that points its CLI at our socket.
fn headscale_config(server: &TestServer) -> std::path::PathBuf {
    let dir = server.dir.path();
    let text = format!(
        "server_url: http://127.0.0.1:8080\nlisten_addr: 127.0.0.1:0\n\
         noise:\n  private_key_path: {d}/hs-noise.key\n\
         prefixes:\n  v4: 100.64.0.0/10\n  v6: fd7a:115c:a1e0::/48\n\
         database:\n  type: sqlite\n  sqlite:\n    path: {d}/hs-unused.sqlite\n\
         dns:\n  magic_dns: true\n  base_domain: tailnet.test\n  nameservers:\n    global: [1.1.1.1]\n\
         derp:\n  urls: []\n  paths: []\n\
         unix_socket: {s}\ndisable_check_updates: true\n",
        d = dir.display(),
        s = server.socket.display()
    );
    let path = dir.join("headscale.yaml");
    std::fs::write(&path, text).unwrap();
    path
}

fn headscale(
    server: &TestServer,
    config: &std::path::Path,
    args: &[&str],
) -> (i32, String, String) {
    let out = std::process::Command::new(headscale_bin())
        .current_dir(server.dir.path())
        .env("HOME", server.dir.path())
        .env("HEADSCALE_CONFIG", config)
        .args(args)
        .output()
        .expect("run headscale");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn headscale_cli_drives_headway() {
    let server = TestServer::spawn();
    let config = headscale_config(&server);

    let (code, out, err) = headscale(&server, &config, &["users", "create", "alice"]);
    assert_eq!(code, 0, "users create: {out}{err}");

    let (code, out, err) = headscale(&server, &config, &["users", "list", "-o", "json"]);
    assert_eq!(code, 0, "users list: {out}{err}");
    let users: serde_json::Value =
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
    assert_eq!(users[0]["name"], "alice", "{out}");
    let id = users[0]["id"].as_u64().unwrap().to_string();

    let (code, out, err) = headscale(&server, &config, &["users", "list"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("alice"), "{out}");

    let (code, out, err) = headscale(
        &server,
        &config,
        &[
            "preauthkeys",
            "create",
            "--user",
            &id,
            "--reusable",
            "-e",
            "24h",
        ],
    );
    assert_eq!(code, 0, "preauthkeys create: {out}{err}");
    assert!(out.trim().starts_with("hskey-auth-"), "{out}");

    let (code, out, err) = headscale(&server, &config, &["preauthkeys", "list", "-o", "json"]);
    assert_eq!(code, 0, "preauthkeys list: {out}{err}");
    assert!(out.contains("hskey-auth-"), "{out}");

    let (code, out, err) = headscale(&server, &config, &["nodes", "list"]);
    assert_eq!(code, 0, "nodes list: {out}{err}");

    // Our CLI sees what Headscale's created.
    let ours = server.cli(&["users", "list", "-o", "json"]).ok();
    assert!(ours.stdout.contains("alice"), "{}", ours.stdout);
}

#[test]
fn headscale_cli_sets_gets_and_checks_the_policy() {
    let server = crate::support::TestServer::spawn_with(crate::support::Spawn {
        extra_config: "policy:\n  mode: database\n".into(),
        ..Default::default()
    });
    let config = headscale_config(&server);
    let dir = server.dir.path();
    let good = dir.join("good.hujson");
    let policy = "// from Headscale's CLI\n{\"acls\": [{\"action\": \"accept\", \"src\": [\"*\"], \"dst\": [\"*:*\"]}]}";
    std::fs::write(&good, policy).unwrap();
    let bad = dir.join("bad.hujson");
    std::fs::write(
        &bad,
        r#"{"acls": [{"action": "deny", "src": ["*"], "dst": ["*:*"]}]}"#,
    )
    .unwrap();

    let (code, out, err) = headscale(
        &server,
        &config,
        &["policy", "check", "-f", bad.to_str().unwrap()],
    );
    assert_ne!(code, 0, "a bad policy passed: {out}{err}");
    assert!(
        format!("{out}{err}").contains("is not supported"),
        "{out}{err}"
    );
    let (code, out, err) = headscale(
        &server,
        &config,
        &["policy", "check", "-f", good.to_str().unwrap()],
    );
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("Policy is valid"), "{out}{err}");
    let (code, out, err) = headscale(
        &server,
        &config,
        &["policy", "set", "-f", good.to_str().unwrap()],
    );
    assert_eq!(code, 0, "{out}{err}");
    let (code, out, err) = headscale(&server, &config, &["policy", "get"]);
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(out.trim(), policy);
}

//! Official Tailscale clients (the oldest Headscale 0.29 supports and the newest
//! this machine builds) join headway and talk through the tunnel. Userspace mode:
//! nothing of the host is touched.

use crate::support::tailscale::{
    Client, echo_server, free_port, printed_register_command, versions,
};
use crate::support::{Spawn, TestServer, http_get};
use std::time::Duration;

pub(crate) fn server() -> TestServer {
    TestServer::spawn_with(Spawn {
        port: Some(free_port()),
        ..Spawn::default()
    })
}

/// A reusable pre-auth key of user `default`.
pub(crate) fn key(server: &TestServer, flags: &[&str]) -> String {
    server.cli(&["users", "create", "default"]);
    let mut args = vec!["preauthkeys", "create", "--user", "default", "-e", "1h"];
    args.extend_from_slice(flags);
    server.cli(&args).ok().stdout.trim().to_owned()
}

/// `tailscale up` returns once the client is Running, which needs a DERP relay
/// (v1.102) or a live peer: the embedded relay, on by default, gives it one.
pub(crate) fn assert_logged_in(client: &Client, up: &crate::support::Run) {
    let state = client.status()["BackendState"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(
        up.code == 0 && state == "Running",
        "{} ({}) did not log in: state {state}\n{up:?}\n{}",
        client.name,
        client.version,
        client.log_tail()
    );
}

/// A line sent from `from` to an echo server reached at `to_ip` comes back. The
/// first packets may race the peer's first map, so attempts repeat within a deadline.
pub(crate) fn assert_tcp_crosses(from: &Client, to_ip: &str, version: &str) {
    let port = echo_server();
    assert_tcp_reaches(from, &format!("{to_ip}:{port}"), version);
}

/// A line sent from `from` through its tunnel to the echo server at `target`
/// (`ip:port`) comes back, within a deadline.
pub(crate) fn assert_tcp_reaches(from: &Client, target: &str, version: &str) {
    let payload = format!("hello through headway with {version}");
    let target = target.parse().unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let back = loop {
        match from.tcp_exchange(target, payload.as_bytes()) {
            Ok(back) => break back,
            Err(err) if std::time::Instant::now() < deadline => {
                eprintln!("{version}: TCP through the tunnel not ready yet: {err}");
                std::thread::sleep(Duration::from_millis(500));
            }
            Err(err) => panic!(
                "{version}: no TCP through the tunnel: {err}\n{}",
                from.log_tail()
            ),
        }
    };
    assert_eq!(String::from_utf8_lossy(&back), payload);
}

/// `tailscale ping` from `from` to `to_ip` is answered through the relay of
/// region `region` (`via DERP(<region>)`); `context` (a server's or relay's log)
/// goes into the failure message.
pub(crate) fn assert_pings_via_derp(
    from: &Client,
    to_ip: &str,
    region: &str,
    count: u32,
    context: &str,
) {
    let ping = from.cli(&["ping", "--c", &count.to_string(), "--timeout", "5s", to_ip]);
    assert!(
        ping.stdout.contains(&format!("via DERP({region})")),
        "{} ({}): {ping:?}\n{}\n{context}",
        from.name,
        from.version,
        from.log_tail()
    );
}

pub(crate) fn sees_peer(status: &serde_json::Value, name: &str, ip: &str) -> bool {
    status["Peer"].as_object().is_some_and(|peers| {
        peers.values().any(|p| {
            p["HostName"] == name
                && p["TailscaleIPs"]
                    .as_array()
                    .is_some_and(|ips| ips.iter().any(|i| i == ip))
        })
    })
}

#[test]
fn two_clients_join_with_a_key_ping_and_carry_tcp() {
    for version in versions() {
        let server = server();
        let key = key(&server, &["--reusable"]);
        let a = Client::start(&version, "node-a");
        let b = Client::start(&version, "node-b");
        for client in [&a, &b] {
            let up = client.up_with_key(&server.url(), &key);
            assert_logged_in(client, &up);
        }
        let (ip_a, ip_b) = (a.ipv4(), b.ipv4());
        assert!(
            ip_a.starts_with("100.64.") && ip_b.starts_with("100.64.") && ip_a != ip_b,
            "{ip_a} {ip_b}"
        );
        a.wait_status("node-b", Duration::from_secs(30), |s| {
            sees_peer(s, "node-b", &ip_b)
        });
        b.wait_status("node-a", Duration::from_secs(30), |s| {
            sees_peer(s, "node-a", &ip_a)
        });

        let ping = a.cli(&["ping", "--c", "10", "--timeout", "5s", &ip_b]);
        assert!(
            ping.stdout.contains("pong from node-b"),
            "{version}: {ping:?}\n{}",
            a.log_tail()
        );

        assert_tcp_crosses(&a, &ip_b, &version);

        let nodes: serde_json::Value =
            serde_json::from_str(&server.cli(&["nodes", "list", "-o", "json"]).ok().stdout)
                .unwrap();
        let names: Vec<_> = nodes
            .as_array()
            .unwrap()
            .iter()
            .map(|n| (n["given_name"].clone(), n["online"].clone()))
            .collect();
        assert_eq!(
            names,
            [
                (serde_json::json!("node-a"), serde_json::json!(true)),
                (serde_json::json!("node-b"), serde_json::json!(true))
            ]
        );
    }
}

#[test]
fn a_client_joins_interactively_through_the_printed_command() {
    for version in versions() {
        let server = server();
        server.cli(&["users", "create", "default"]).ok();
        let client = Client::start(&version, "laptop");
        // `tailscale up` prints the auth URL and waits; run it in the background.
        let mut login = client.login_interactively(&server.url());
        let url = client.wait_auth_url(Duration::from_secs(30));
        assert!(
            url.starts_with(&format!("{}/register/hskey-authreq-", server.url())),
            "{url}"
        );
        let (status, _, page) = http_get(&server.http_addr, url.trim_start_matches(&server.url()));
        assert_eq!(status, 200);
        // Run exactly what the page prints, with the user filled in.
        let args = printed_register_command(&page, "default");
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let registered = server.cli(&args).ok();
        assert!(registered.stdout.contains("laptop"), "{registered:?}");
        let _ = login.kill();
        let _ = login.wait();
        client.wait_status("logged in", Duration::from_secs(30), |s| {
            s["Self"]["TailscaleIPs"]
                .as_array()
                .is_some_and(|ips| !ips.is_empty())
        });
        assert_eq!(client.ipv4(), "100.64.0.1");
    }
}

#[test]
fn bad_keys_are_refused_with_a_message_the_client_prints() {
    for version in versions() {
        let server = server();
        let single = key(&server, &[]);
        let expired = server
            .cli(&["preauthkeys", "create", "--user", "default", "-e", "1h"])
            .ok()
            .stdout
            .trim()
            .to_owned();
        server.cli(&["preauthkeys", "expire", "--id", "2"]).ok();

        let used = Client::start(&version, "first");
        assert_logged_in(&used, &used.up_with_key(&server.url(), &single));

        for (key, expect) in [
            (
                "hskey-auth-AAAAAAAAAAAA-nosuchkeynosuchkeynosuchkeynosuchkeynosuchkeynosuchkeynosuc",
                "invalid pre-auth key",
            ),
            (expired.as_str(), "expired"),
            (single.as_str(), "already used"),
        ] {
            let client = Client::start(&version, "refused");
            let up = client.up_with_key(&server.url(), key);
            assert_ne!(up.code, 0, "{version}: {key} was accepted");
            assert!(
                up.stderr.contains(expect),
                "{version}: expected {expect:?} in: {up:?}"
            );
        }
        // Each refusal is in the log with where it came from (for fail2ban).
        let log = server.log();
        let refusals: Vec<&str> = log
            .lines()
            .filter(|l| l.contains("refused a registration") && l.contains("client=127.0.0.1:"))
            .collect();
        assert!(refusals.len() >= 3, "{version}: {log}");
    }
}

/// Two clients joined with a reusable key, each seeing the other.
fn joined_pair(server: &TestServer, version: &str) -> (Client, Client, String, String) {
    joined_pair_with_env(server, version, &[])
}

/// [`joined_pair`] with extra `tailscaled` environment on both clients.
pub(crate) fn joined_pair_with_env(
    server: &TestServer,
    version: &str,
    env: &[(&str, &str)],
) -> (Client, Client, String, String) {
    joined_pair_at(server, &server.url(), version, env)
}

/// [`joined_pair_with_env`] with the clients' `--login-server` given (an https
/// URL, say).
pub(crate) fn joined_pair_at(
    server: &TestServer,
    login_server: &str,
    version: &str,
    env: &[(&str, &str)],
) -> (Client, Client, String, String) {
    let key = key(server, &["--reusable"]);
    let a = Client::start_with_env(version, "node-a", env);
    let b = Client::start_with_env(version, "node-b", env);
    for client in [&a, &b] {
        assert_logged_in(client, &client.up_with_key(login_server, &key));
    }
    let (ip_a, ip_b) = (a.ipv4(), b.ipv4());
    a.wait_status("node-b", Duration::from_secs(30), |s| {
        sees_peer(s, "node-b", &ip_b)
    });
    b.wait_status("node-a", Duration::from_secs(30), |s| {
        sees_peer(s, "node-a", &ip_a)
    });
    (a, b, ip_a, ip_b)
}

#[test]
fn admin_actions_reach_connected_clients() {
    for version in versions() {
        let server = server();
        let (a, b, _ip_a, ip_b) = joined_pair(&server, &version);

        server.cli(&["nodes", "rename", "-i", "2", "database"]).ok();
        a.wait_status("the new name", Duration::from_secs(15), |s| {
            s["Peer"].as_object().is_some_and(|p| {
                p.values().any(|p| {
                    p["DNSName"]
                        .as_str()
                        .is_some_and(|n| n.starts_with("database."))
                })
            })
        });

        // A namespace rename reaches the clients' user profiles.
        server
            .cli(&["namespace", "rename", "default", "renamed"])
            .ok();
        a.wait_status("the new user name", Duration::from_secs(15), |s| {
            s["User"]
                .as_object()
                .is_some_and(|users| users.values().any(|u| u["LoginName"] == "renamed"))
        });

        server.cli(&["nodes", "expire", "-i", "1"]).ok();
        a.wait_status("NeedsLogin", Duration::from_secs(15), |s| {
            s["BackendState"] == "NeedsLogin"
        });

        server.cli(&["nodes", "delete", "-i", "2"]).ok();
        drop(b);
        let gone = |s: &serde_json::Value| {
            !sees_peer(s, "database", &ip_b) && !sees_peer(s, "node-b", &ip_b)
        };
        let c = Client::start(&version, "node-c");
        let key = server
            .cli(&["preauthkeys", "create", "--user", "renamed"])
            .ok()
            .stdout
            .trim()
            .to_owned();
        assert_logged_in(&c, &c.up_with_key(&server.url(), &key));
        c.wait_status("only live nodes", Duration::from_secs(15), gone);
        let nodes: serde_json::Value =
            serde_json::from_str(&server.cli(&["nodes", "list", "-o", "json"]).ok().stdout)
                .unwrap();
        assert_eq!(nodes.as_array().unwrap().len(), 2, "{nodes:#}");
    }
}

#[test]
fn clients_come_back_by_themselves_after_the_server_is_killed() {
    for version in versions() {
        let port = free_port();
        let server = TestServer::spawn_with(Spawn {
            port: Some(port),
            ..Spawn::default()
        });
        let (a, _b, ip_a, ip_b) = joined_pair(&server, &version);
        let dir = server.kill();

        let server = TestServer::spawn_with(Spawn {
            port: Some(port),
            dir: Some(dir),
            ..Spawn::default()
        });
        let online = |server: &TestServer| {
            let nodes: serde_json::Value =
                serde_json::from_str(&server.cli(&["nodes", "list", "-o", "json"]).ok().stdout)
                    .unwrap();
            nodes
                .as_array()
                .unwrap()
                .iter()
                .filter(|n| n["online"] == true)
                .count()
        };
        let deadline = std::time::Instant::now() + Duration::from_secs(90);
        while online(&server) < 2 {
            assert!(
                std::time::Instant::now() < deadline,
                "{version}: clients did not reconnect:\n{}",
                a.log_tail()
            );
            std::thread::sleep(Duration::from_millis(500));
        }
        assert_eq!((a.ipv4(), ip_a.clone()), (ip_a.clone(), ip_a));
        sees_node_b_again_without_a_login(&a, &ip_b, "node-b again");
    }
}

/// After a server restart: `a` sees node-b at `ip_b` again, and was not asked to
/// log in.
fn sees_node_b_again_without_a_login(a: &Client, ip_b: &str, what: &str) {
    a.wait_status(what, Duration::from_secs(30), |s| {
        sees_peer(s, "node-b", ip_b)
    });
    assert_ne!(
        a.status()["BackendState"],
        "NeedsLogin",
        "no re-login needed"
    );
}

/// Moving an install from SQLite to PostgreSQL: stop headway, `headway db copy`,
/// start it on PostgreSQL with the same Noise key. Clients reconnect by themselves
/// and keep their addresses and peers, with no new login.
#[test]
fn an_install_copied_from_sqlite_to_postgres_keeps_its_clients() {
    let cluster = headway::db::testing::cluster();
    for version in versions() {
        let port = free_port();
        let server = TestServer::spawn_with(Spawn {
            port: Some(port),
            sqlite: true,
            ..Spawn::default()
        });
        let (a, _b, ip_a, ip_b) = joined_pair(&server, &version);
        let before = server.nodes();
        let dir = server.kill();

        let database = cluster.create_database();
        let copy = std::process::Command::new(crate::support::headway_bin())
            .arg("db")
            .arg("copy")
            .arg("--from")
            .arg(dir.path().join("db.sqlite"))
            .arg("--to")
            .arg(cluster.url(&database))
            .output()
            .unwrap();
        let said = String::from_utf8_lossy(&copy.stdout);
        assert!(
            copy.status.success(),
            "{said}{}",
            String::from_utf8_lossy(&copy.stderr)
        );
        assert!(
            said.contains("copied 1 users, 1 pre-auth keys, 0 API keys, 0 OAuth clients, 2 nodes"),
            "{said}"
        );

        let config =
            crate::support::config_with_database(dir.path(), "", &cluster.config_yaml(&database));
        let server = TestServer::spawn_with(Spawn {
            port: Some(port),
            dir: Some(dir),
            config_file: Some(config),
            ..Spawn::default()
        });
        assert!(
            server.log().contains("backend=\"postgres\""),
            "{}",
            server.log()
        );
        crate::support::wait_until(
            &format!("{version}: both clients online through PostgreSQL"),
            Duration::from_secs(90),
            || {
                server
                    .nodes()
                    .iter()
                    .filter(|n| n["online"] == true)
                    .count()
                    == 2
            },
        );
        // The same nodes, ids, keys and addresses as before the move.
        let strip = |v: Vec<serde_json::Value>| -> Vec<(String, String, String)> {
            v.iter()
                .map(|n| {
                    (
                        n["id"].to_string(),
                        n["node_key"].to_string(),
                        n["ip_addresses"].to_string(),
                    )
                })
                .collect()
        };
        assert_eq!(strip(server.nodes()), strip(before));
        assert_eq!(a.ipv4(), ip_a);
        sees_node_b_again_without_a_login(&a, &ip_b, "node-b through PostgreSQL");
    }
}

#[test]
fn an_ephemeral_node_disappears_after_the_inactivity_timeout() {
    for version in versions() {
        let server = TestServer::spawn_with(Spawn {
            port: Some(free_port()),
            // The shortest timeout headway accepts.
            extra_config: "node:\n  ephemeral:\n    inactivity_timeout: 65s\n".into(),
            ..Spawn::default()
        });
        let key = key(&server, &["--ephemeral"]);
        let client = Client::start(&version, "short-lived");
        assert_logged_in(&client, &client.up_with_key(&server.url(), &key));
        let nodes = |server: &TestServer| -> serde_json::Value {
            serde_json::from_str(&server.cli(&["nodes", "list", "-o", "json"]).ok().stdout).unwrap()
        };
        assert_eq!(
            nodes(&server)[0]["pre_auth_key"]["ephemeral"],
            true,
            "the key that admitted it is ephemeral"
        );
        drop(client);
        let deadline = std::time::Instant::now() + Duration::from_secs(120);
        while !nodes(&server).as_array().unwrap().is_empty() {
            assert!(
                std::time::Instant::now() < deadline,
                "{version}: the ephemeral node stayed:\n{}",
                server.log()
            );
            std::thread::sleep(Duration::from_secs(1));
        }
    }
}

//! `headway import headscale` end to end: a real Headscale install (v0.29.2, and
//! the older v0.23.0) with a user, keys, a subnet router and a laptop in TUN mode,
//! each in a network namespace of its own, is stopped, imported and replaced by
//! headway at the same address. The clients are never touched again: they come
//! back online by themselves with the same names and addresses, reach each other
//! and the LAN, and the old API key and pre-auth key keep working.

use crate::clients::assert_logged_in;
use crate::routes::machine;
use crate::support::headscale::{Headscale, HeadscaleSpawn, headscale_bin_version};
use crate::support::netns::{Netns, Switch};
use crate::support::tailscale::Client;
use crate::support::{Run, Spawn, TestServer, headway_bin, poll_until, test_config};
use std::net::SocketAddr;
use std::process::Stdio;
use std::time::{Duration, Instant};

const HUB: &str = "10.99.0.1";
const PORT: u16 = 8080;
const LAN: &str = "192.168.100.0/24";
const LAN_HOST: &str = "192.168.100.10";
/// headway's remote gRPC listener, in the hub namespace.
const GRPC: &str = "10.99.0.1:50443";
/// The reference release, whose CLI is the remote admin's.
const REFERENCE: &str = "v0.29.2";

/// A Headscale release and the client version its install runs.
struct Release {
    headscale: &'static str,
    tailscale: &'static str,
}

impl Release {
    /// 0.23 names users and approves routes by route id; 0.26 and later take
    /// user ids and approve prefixes on the node.
    fn is_old(&self) -> bool {
        self.headscale == "v0.23.0"
    }
}

#[test]
fn a_headscale_0_29_install_moves_to_headway_without_clients_logging_in_again() {
    move_to_headway(Release {
        headscale: "v0.29.2",
        tailscale: "v1.102.5",
    });
}

#[test]
fn a_headscale_0_23_install_moves_to_headway_without_clients_logging_in_again() {
    move_to_headway(Release {
        headscale: "v0.23.0",
        tailscale: "v1.80.3",
    });
}

/// What `nodes list -o json` says of a node, as both servers print it: what
/// admins' scripts and the clients themselves hold on to.
#[derive(Debug, PartialEq, Eq, PartialOrd, Ord, Clone)]
struct Listed {
    given_name: String,
    id: String,
    user: String,
    addresses: Vec<String>,
    machine_key: String,
    node_key: String,
}

fn listed(json: &str) -> Vec<Listed> {
    let nodes: serde_json::Value =
        serde_json::from_str(json).unwrap_or_else(|e| panic!("nodes list -o json: {e}\n{json}"));
    let mut out: Vec<Listed> = nodes
        .as_array()
        .unwrap_or_else(|| panic!("not a list: {json}"))
        .iter()
        .map(|n| {
            let mut addresses: Vec<String> = n["ip_addresses"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|a| a.as_str().map(str::to_owned))
                .collect();
            addresses.sort();
            let text = |v: &serde_json::Value| v.as_str().unwrap_or_default().to_owned();
            Listed {
                given_name: text(&n["given_name"]),
                // A number in Headscale's JSON, a string in protobuf's JSON mapping.
                id: n["id"].to_string().trim_matches('"').to_owned(),
                user: text(&n["user"]["name"]),
                addresses,
                machine_key: text(&n["machine_key"]),
                node_key: text(&n["node_key"]),
            }
        })
        .collect();
    out.sort();
    out
}

/// The `id` of the node named `name` in `nodes list -o json`.
fn node_id(json: &str, name: &str) -> String {
    let nodes: serde_json::Value = serde_json::from_str(json).unwrap();
    nodes
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["given_name"] == name)
        .unwrap_or_else(|| panic!("no node {name}: {json}"))["id"]
        .to_string()
        .trim_matches('"')
        .to_owned()
}

/// The number on the summary line that starts with `what` (`  nodes   2 (…)`).
fn count(summary: &str, what: &str) -> Option<u64> {
    summary.lines().find_map(|l| {
        let rest = l.trim_start().strip_prefix(what)?;
        let rest = rest.strip_prefix(char::is_whitespace)?;
        rest.split_whitespace().next()?.parse().ok()
    })
}

/// Everything the scenario runs, in drop order; on a failure its logs are printed.
struct Scene {
    release: Release,
    desktop: Option<Client>,
    laptop: Client,
    router: Client,
    headway: Option<TestServer>,
    headscale: Headscale,
    _desktop_ns: Option<Netns>,
    laptop_ns: Netns,
    _router_ns: Netns,
    _lan: Switch,
    hub: Switch,
    /// The LAN host's echo server, reached only through the router.
    target: SocketAddr,
    started: Instant,
}

impl Scene {
    /// Prints how long the scenario has run, with what it reached.
    fn step(&self, what: &str) {
        eprintln!(
            "import {}: {what} ({:.1} s)",
            self.release.headscale,
            self.started.elapsed().as_secs_f64()
        );
    }

    /// The laptop reaches the LAN host's echo server (through the router), within
    /// `timeout`.
    fn lan_reachable(&self, timeout: Duration) -> bool {
        self.laptop_ns.ping_until(LAN_HOST, timeout).is_some()
            && poll_until(Duration::from_secs(10), || {
                self.laptop_ns
                    .tcp_exchange(self.target, "hello from the laptop")
                    .is_ok_and(|back| back == "hello from the laptop")
            })
    }
}

/// The last `n` lines of `text`.
fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

impl Drop for Scene {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            return;
        }
        let v = self.release.headscale;
        eprintln!(
            "==== import {v}: Headscale log ====\n{}",
            tail(&self.headscale.log(), 60)
        );
        if let Some(server) = &self.headway {
            eprintln!(
                "==== import {v}: headway log ====\n{}",
                tail(&server.log(), 80)
            );
        }
        let clients = [
            Some(&self.router),
            Some(&self.laptop),
            self.desktop.as_ref(),
        ];
        for client in clients.into_iter().flatten() {
            eprintln!(
                "==== import {v}: {} ({}) ====\n{}",
                client.name,
                client.version,
                client.log_tail()
            );
        }
    }
}

/// `tailscale ping` from `from` to `ip` answers within `timeout` (repeated: the
/// first pings may race the peer's new map).
fn pings(from: &Client, ip: &str, timeout: Duration) -> bool {
    poll_until(timeout, || {
        from.cli(&["ping", "--c", "5", "--timeout", "3s", ip])
            .stdout
            .contains("pong from")
    })
}

/// `tailscale up` on every client at once: a client reports Running once it has a
/// relay or a live peer, and Headscale's relay map here leads nowhere.
fn up_together(clients: &[(&Client, &[&str])], url: &str, key: &str) {
    std::thread::scope(|s| {
        for (client, flags) in clients {
            s.spawn(move || {
                let up = client.up_with(url, key, flags);
                assert_logged_in(client, &up);
            });
        }
    });
}

/// A headway command run from the host, in `dir`.
fn headway(dir: &std::path::Path, config: &std::path::Path, args: &[&str]) -> Run {
    let out = std::process::Command::new(headway_bin())
        .current_dir(dir)
        .env("HOME", dir)
        .env("NO_COLOR", "1")
        .env_remove("HEADWAY_CONFIG")
        .env_remove("HEADSCALE_CONFIG")
        .arg("-c")
        .arg(config)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run headway");
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// headway's config in `dir`, written to `dir/config.yaml`: Headscale's address and
/// URL, remote gRPC over TLS (Headscale's CLI speaks nothing else to an address)
/// with a self-signed certificate, the policy in the database as Headscale had it.
/// Its noise key path differs from Headscale's: the import copies the key.
fn headway_config(dir: &std::path::Path) -> std::path::PathBuf {
    let d = dir.display().to_string();
    let cert = rcgen::generate_simple_self_signed(vec![HUB.to_owned()]).unwrap();
    std::fs::write(dir.join("tls.crt"), cert.cert.pem()).unwrap();
    std::fs::write(dir.join("tls.key"), cert.signing_key.serialize_pem()).unwrap();
    let text = test_config(
        dir,
        &format!(
            "grpc_listen_addr: {GRPC}\ntls_cert_path: {d}/tls.crt\ntls_key_path: {d}/tls.key\n\
             policy:\n  mode: database\n"
        ),
    )
    // As `Spawn` would with `host` and `port`, for the import to read too.
    .replace(
        "listen_addr: 127.0.0.1:0",
        &format!("listen_addr: {HUB}:{PORT}"),
    )
    .replace(
        "server_url: http://127.0.0.1:8080",
        &format!("server_url: http://{HUB}:{PORT}"),
    );
    let config = dir.join("config.yaml");
    std::fs::write(&config, text).unwrap();
    config
}

fn move_to_headway(release: Release) {
    let started = Instant::now();
    // The uplink switch, with Headscale (later headway) on its gateway address.
    let hub = Switch::new("hub", &format!("{HUB}/24"));
    // The LAN: a host that runs no Tailscale, behind the router.
    let lan = Switch::new("lan", &format!("{LAN_HOST}/24"));
    let (echo_port, _seen) = lan.ns.echo_server(LAN_HOST);
    let router_ns = machine(&hub, "rt", 11);
    lan.attach(&router_ns, "lan0", "192.168.100.1/24", false);
    router_ns.forward();
    let laptop_ns = machine(&hub, "lp", 10);

    let headscale = Headscale::start_with(HeadscaleSpawn {
        version: Some(release.headscale),
        netns: Some(&hub.ns),
        host: Some(HUB),
        port: Some(PORT),
    });
    let router = Client::start_in(&router_ns, release.tailscale, "router");
    let laptop = Client::start_in(&laptop_ns, release.tailscale, "laptop");
    let mut scene = Scene {
        release,
        desktop: None,
        laptop,
        router,
        headway: None,
        headscale,
        _desktop_ns: None,
        laptop_ns,
        _router_ns: router_ns,
        _lan: lan,
        hub,
        target: format!("{LAN_HOST}:{echo_port}").parse().unwrap(),
        started,
    };
    let hs = &scene.headscale;
    let old = scene.release.is_old();
    scene.step("Headscale is up");

    // The admin's setup, with Headscale's own CLI.
    hs.cli(&["users", "create", "alice"]).ok();
    let user = if old {
        "alice".to_owned()
    } else {
        let users = hs.cli(&["users", "list", "-o", "json"]).ok().stdout;
        let users: serde_json::Value = serde_json::from_str(&users).unwrap();
        users[0]["id"].to_string()
    };
    let auth_key = hs
        .cli(&[
            "preauthkeys",
            "create",
            "--user",
            &user,
            "--reusable",
            "-e",
            "24h",
        ])
        .ok()
        .stdout
        .trim()
        .to_owned();
    assert!(
        !auth_key.is_empty() && !auth_key.contains(' '),
        "{auth_key}"
    );
    let api_key = hs.api_key();
    assert!(!api_key.is_empty() && !api_key.contains(' '), "{api_key}");

    let advertise = format!("--advertise-routes={LAN}");
    up_together(
        &[
            (&scene.router, &[advertise.as_str()]),
            (&scene.laptop, &["--accept-routes"]),
        ],
        &hs.url,
        &auth_key,
    );
    scene.step("both clients joined Headscale");

    // The router's LAN approved as each release spells it.
    if old {
        let mut route = String::new();
        assert!(
            poll_until(Duration::from_secs(20), || {
                let routes = hs.cli(&["routes", "list", "-o", "json"]).ok().stdout;
                let routes: serde_json::Value = serde_json::from_str(&routes).unwrap();
                let found = routes
                    .as_array()
                    .into_iter()
                    .flatten()
                    .find(|r| r["prefix"] == LAN && r["node"]["given_name"] == "router");
                if let Some(r) = found {
                    route = r["id"].to_string();
                }
                found.is_some()
            }),
            "Headscale never listed the router's route"
        );
        hs.cli(&["routes", "enable", "-r", &route]).ok();
    } else {
        let nodes = hs.cli(&["nodes", "list", "-o", "json"]).ok().stdout;
        let id = node_id(&nodes, "router");
        hs.cli(&[
            "nodes",
            "approve-routes",
            "--identifier",
            &id,
            "--routes",
            LAN,
        ])
        .ok();
    }
    scene.step("the router's route is approved");
    // Sanity: the setup works under Headscale, so a failure later is headway's.
    assert!(
        scene.lan_reachable(Duration::from_secs(60)),
        "under Headscale {}, the laptop never reached the LAN host",
        scene.release.headscale
    );
    scene.step("under Headscale the laptop reaches the LAN");
    let router_ip = scene.router.ipv4();
    let laptop_ip = scene.laptop.ipv4();
    assert!(
        pings(&scene.laptop, &router_ip, Duration::from_secs(30)),
        "under Headscale, the laptop cannot ping the router"
    );
    scene.step("under Headscale the laptop reaches the router and the LAN");

    let before = listed(&hs.cli(&["nodes", "list", "-o", "json"]).ok().stdout);
    assert_eq!(
        before
            .iter()
            .map(|n| n.given_name.as_str())
            .collect::<Vec<_>>(),
        ["laptop", "router"],
        "{before:?}"
    );
    let from = scene.headscale.config.display().to_string();

    // headway's own directory and config.
    let dir = tempfile::Builder::new().prefix("hw").tempdir().unwrap();
    let config = headway_config(dir.path());

    // A Headscale that still runs could write on: the import refuses.
    let early = headway(
        dir.path(),
        &config,
        &["import", "headscale", "--from", &from],
    );
    eprintln!("import beside a running Headscale said:\n{}", early.stderr);
    assert_ne!(
        early.code, 0,
        "imported from a running Headscale: {early:?}"
    );
    assert!(early.stderr.contains("still running"), "{early:?}");

    let code = scene.headscale.stop();
    scene.step(&format!("Headscale stopped (exit code {code})"));

    let dry = headway(
        dir.path(),
        &config,
        &["import", "headscale", "--from", &from, "--dry-run"],
    );
    eprintln!("import --dry-run said:\n{}{}", dry.stdout, dry.stderr);
    let dry = dry.ok();
    assert!(
        dry.stdout
            .lines()
            .any(|l| l.starts_with("dry run: nothing was written")),
        "{dry:?}"
    );
    // What would move, counted as the admin made it.
    for (what, expected) in [
        ("users", 1),
        ("nodes", 2),
        ("routes", 1),
        ("pre-auth keys", 1),
        ("API keys", 1),
    ] {
        assert_eq!(count(&dry.stdout, what), Some(expected), "{what}: {dry:?}");
    }
    let imported = headway(
        dir.path(),
        &config,
        &["import", "headscale", "--from", &from],
    );
    eprintln!("import said:\n{}{}", imported.stdout, imported.stderr);
    let imported = imported.ok();
    assert!(
        imported
            .stdout
            .lines()
            .any(|l| l.starts_with("imported ") && l.contains(" 2 nodes")),
        "{imported:?}"
    );
    assert!(
        !imported.stdout.contains("already imported"),
        "the dry run wrote something: {imported:?}"
    );
    let again = headway(
        dir.path(),
        &config,
        &["import", "headscale", "--from", &from],
    );
    eprintln!("import again said:\n{}{}", again.stdout, again.stderr);
    let again = again.ok();
    assert!(
        format!("{}{}", again.stdout, again.stderr).contains("already imported"),
        "{again:?}"
    );
    scene.step("imported");

    // headway where Headscale was; no command on the clients from here on.
    let server = TestServer::spawn_with(Spawn {
        config_file: Some(std::fs::read_to_string(&config).unwrap()),
        dir: Some(dir),
        netns: Some(scene.hub.ns.name.clone()),
        host: Some(HUB.into()),
        port: Some(PORT),
        ..Spawn::default()
    });
    scene.headway = Some(server);
    let server = scene.headway.as_ref().unwrap();
    scene.step("headway is up");
    let mut now = Vec::new();
    let back = poll_until(Duration::from_secs(120), || {
        let nodes = server.nodes();
        now = listed(&serde_json::to_string(&nodes).unwrap());
        nodes.len() == 2 && nodes.iter().all(|n| n["online"] == true)
    });
    assert!(
        back,
        "the clients did not come back online by themselves: {:#?}",
        server.nodes()
    );
    assert_eq!(now, before, "ids, names, owners, addresses or keys changed");
    scene.step("both clients are online with headway");
    for client in [&scene.router, &scene.laptop] {
        let status = client.status();
        assert_eq!(
            status["BackendState"], "Running",
            "{}: {status:#}",
            client.name
        );
    }
    assert_eq!(scene.router.ipv4(), router_ip);
    assert_eq!(scene.laptop.ipv4(), laptop_ip);

    assert!(
        pings(&scene.laptop, &router_ip, Duration::from_secs(60)),
        "with headway, the laptop cannot ping the router"
    );
    assert!(
        scene.lan_reachable(Duration::from_secs(60)),
        "with headway, the laptop no longer reaches the LAN through the router"
    );
    scene.step("with headway the laptop reaches the router and the LAN");

    // The old API key, from the reference Headscale's CLI on a remote machine
    // (the hub namespace reaches headway's gRPC address). Older CLIs speak an
    // older API: v0.23's fails to decode a pre-auth key's user (a message since
    // then) from Headscale v0.29.2 as from headway.
    let cli_dir = tempfile::Builder::new().prefix("hscli").tempdir().unwrap();
    let cli_config = cli_dir.path().join("config.yaml");
    std::fs::write(
        &cli_config,
        format!(
            "cli:\n  address: {GRPC}\n  api_key: {api_key}\n  insecure: true\n\
             disable_check_updates: true\n"
        ),
    )
    .unwrap();
    let out = scene
        .hub
        .ns
        .command(headscale_bin_version(REFERENCE))
        .current_dir(cli_dir.path())
        .env("HOME", cli_dir.path())
        .env("HEADSCALE_CONFIG", &cli_config)
        .args(["nodes", "list", "-o", "json"])
        .stdin(Stdio::null())
        .output()
        .expect("run headscale");
    let remote = Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    };
    assert_eq!(
        remote.code, 0,
        "Headscale's CLI with the old API key: {remote:?}"
    );
    assert_eq!(listed(&remote.stdout), before, "{remote:?}");
    scene.step("the old API key works from Headscale's CLI");

    // The old reusable pre-auth key brings a new machine in.
    let desktop_ns = machine(&scene.hub, "dt", 12);
    let desktop = Client::start_in(&desktop_ns, scene.release.tailscale, "desktop");
    scene._desktop_ns = Some(desktop_ns);
    scene.desktop = Some(desktop);
    let desktop = scene.desktop.as_ref().unwrap();
    let up = desktop.up_with(&format!("http://{HUB}:{PORT}"), &auth_key, &[]);
    assert_eq!(
        desktop.status()["BackendState"],
        "Running",
        "the old pre-auth key did not register a new client: {up:?}"
    );
    assert!(
        pings(desktop, &laptop_ip, Duration::from_secs(60)),
        "the new client cannot ping the laptop"
    );
    let names: Vec<String> = listed(&serde_json::to_string(&server.nodes()).unwrap())
        .into_iter()
        .map(|n| n.given_name)
        .collect();
    assert_eq!(names, ["desktop", "laptop", "router"]);
    scene.step("the old pre-auth key registered a new client");
}

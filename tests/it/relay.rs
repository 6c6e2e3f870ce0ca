//! The embedded DERP relay and STUN responder with official Tailscale clients, on
//! an IP-only `http://` server URL (the guides' set-up): clients verify the pinned
//! self-signed certificate (v1.82+) or are told to skip the check (v1.80), relay
//! traffic when direct UDP is off, and measure the region's latency over STUN.
//! Tailscale's own `derper`, asking headway's `/verify`, relays only headway's
//! nodes. `headway bench-relay` measures the embedded relay and derper alike.

use crate::cli::J1_CONFIG;
use crate::clients::{
    assert_logged_in, assert_pings_via_derp, assert_tcp_crosses, joined_pair_with_env, key, server,
};
use crate::support::netns::{Netns, link};
use crate::support::tailscale::{Client, bin_dir, free_port, versions};
use crate::support::{Spawn, TestServer, http_post_json};
use std::time::Duration;

/// With UDP disabled in both clients (`TS_DEBUG_ALWAYS_USE_DERP`), every packet
/// must cross headway's relay: pings say `via DERP(headway)` and TCP still works.
#[test]
fn clients_talk_through_the_embedded_relay_when_udp_is_off() {
    for version in versions() {
        let server = server();
        let (a, b, _ip_a, ip_b) =
            joined_pair_with_env(&server, &version, &[("TS_DEBUG_ALWAYS_USE_DERP", "true")]);
        for client in [&a, &b] {
            let status = client.status();
            assert_eq!(
                status["Self"]["Relay"],
                "headway",
                "{version}: {} has no home relay: {status}\n{}",
                client.name,
                client.log_tail()
            );
        }
        assert_pings_via_derp(&a, &ip_b, "headway", 10, &server.log());
        assert_tcp_crosses(&a, &ip_b, &version);

        // An external derper with --verify-client-url asks the same question.
        let node_key = a.status()["Self"]["PublicKey"].as_str().unwrap().to_owned();
        let ask = |key: &str| {
            http_post_json(
                &server.http_addr,
                "/verify",
                &format!(r#"{{"NodePublic":"{key}","Source":"127.0.0.1"}}"#),
            )
        };
        let (status, _, body) = ask(&node_key);
        assert_eq!((status, body.as_str()), (200, r#"{"Allow":true}"#));
        let stranger = format!("nodekey:{}", "ab".repeat(32));
        let (status, _, body) = ask(&stranger);
        assert_eq!((status, body.as_str()), (200, r#"{"Allow":false}"#));
        let (status, _, body) = http_post_json(&server.http_addr, "/verify", "{not json");
        assert_eq!(status, 400, "{body}");
        server.cli(&["nodes", "expire", "--identifier", "1"]).ok();
        let (_, _, body) = ask(&node_key);
        assert_eq!(body, r#"{"Allow":false}"#, "an expired node is refused");
    }
}

/// `tailscale netcheck` lists the embedded region with a latency, which needs the
/// STUN responder to answer.
#[test]
fn netcheck_measures_the_embedded_region_over_stun() {
    for version in versions() {
        let server = server();
        let key = key(&server, &[]);
        let client = Client::start(&version, "netcheck");
        let up = client.up_with_key(&server.url(), &key);
        assert_logged_in(&client, &up);
        // netcheck waits for the relay map from a logged-in daemon.
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            let run = client.cli(&["netcheck"]);
            let region_line = run
                .stdout
                .lines()
                .find(|l| l.trim_start().starts_with("- headway:"))
                .map(str::to_owned);
            // A measured region shows a duration ("0.4ms", "812µs"); an unmeasured one is blank.
            if region_line
                .as_deref()
                .is_some_and(|l| l.contains("ms") || l.contains("µs"))
                && run.stdout.contains("UDP: true")
            {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{version}: netcheck has no latency for region headway:\n{run:?}\n{}",
                server.log()
            );
            std::thread::sleep(Duration::from_secs(1));
        }
    }
}

/// J1–J4 as a guide reader does them: the guide's legacy config (which switches the
/// embedded relay off and names no other relay), `namespaces create`, a key per
/// node with `-n`, then `tailscale up` returns by itself and ping works.
#[test]
fn a_guide_reader_gets_a_working_ping_with_the_j1_config() {
    for version in versions() {
        let server = TestServer::spawn_with(Spawn {
            port: Some(free_port()),
            config_file: Some(J1_CONFIG.into()),
            ..Spawn::default()
        });
        server.cli(&["namespaces", "create", "default"]).ok();
        let clients: Vec<Client> = ["guide-a", "guide-b"]
            .into_iter()
            .map(|name| {
                let key = server
                    .cli(&["preauthkeys", "create", "-e", "24h", "-n", "default"])
                    .ok()
                    .stdout
                    .trim()
                    .to_owned();
                let client = Client::start(&version, name);
                let up = client.up_with_key(&server.url(), &key);
                assert_logged_in(&client, &up);
                client
            })
            .collect();
        let ip_b = clients[1].ipv4();
        assert!(ip_b.starts_with("10.1."), "J1's custom range: {ip_b}");
        let ping = clients[0].cli(&["ping", "--c", "10", "--timeout", "5s", &ip_b]);
        assert!(
            ping.stdout.contains("pong from guide-b"),
            "{version}: {ping:?}\n{}",
            clients[0].log_tail()
        );
    }
}

/// Two TUN-mode clients in their own namespaces, on two subnets that the server's
/// namespace routes between. While that router drops UDP between the subnets,
/// the clients talk through the relay (`via DERP(headway)`), TCP included; once
/// the block is lifted, their path upgrades to direct by itself.
#[test]
fn blocked_udp_goes_through_the_relay_and_upgrades_to_direct_when_lifted() {
    for version in versions() {
        let router = Netns::new("rt");
        let (a_ns, b_ns) = (Netns::new("a"), Netns::new("b"));
        for (ns, n) in [(&a_ns, 1), (&b_ns, 2)] {
            link(
                &router,
                &format!("lan{n}"),
                Some(&format!("10.98.{n}.1/24")),
                ns,
                "eth0",
                Some(&format!("10.98.{n}.2/24")),
            );
            ns.ip(&["route", "add", "default", "via", &format!("10.98.{n}.1")]);
        }
        router.forward();
        let block = ["FORWARD", "-p", "udp", "-j", "DROP"];
        let iptables = |op: &str| {
            let ok = router
                .command("iptables")
                .arg(op)
                .args(block)
                .status()
                .expect("iptables (scripts/install-test-deps installs it)")
                .success();
            assert!(ok, "iptables {op} in the router namespace");
        };
        iptables("-A");
        let server = TestServer::spawn_with(Spawn {
            port: Some(8080),
            host: Some("10.98.1.1".into()),
            netns: Some(router.name.clone()),
            ..Spawn::default()
        });
        let key = key(&server, &["--reusable"]);
        let a = Client::start_in(&a_ns, &version, "node-a");
        let b = Client::start_in(&b_ns, &version, "node-b");
        for client in [&a, &b] {
            assert_logged_in(client, &client.up_with(&server.url(), &key, &[]));
        }
        let ip_b = b.ipv4();
        assert_pings_via_derp(&a, &ip_b, "headway", 3, "");
        let (port, _) = b_ns.echo_server("0.0.0.0");
        let target = format!("{ip_b}:{port}").parse().unwrap();
        let back = a_ns.tcp_exchange(target, "relayed line");
        assert_eq!(back.ok().as_deref(), Some("relayed line"), "{version}");

        // Lift the block: the next pings find the direct path.
        iptables("-D");
        let start = std::time::Instant::now();
        let direct = loop {
            let ping = a.cli(&["ping", "--c", "20", "--timeout", "3s", &ip_b]);
            if ping.stdout.contains("via 10.98.2.2:") {
                break ping;
            }
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "{version}: never direct after the block was lifted: {ping:?}\n{}",
                a.log_tail()
            );
        };
        eprintln!(
            "{version}: direct {} ms after the block was lifted: {}",
            start.elapsed().as_millis(),
            direct.stdout.lines().last().unwrap_or_default()
        );
    }
}

/// A node of `other` (UDP off, so it needs a relay) logs in; its only relay,
/// `region_name`, refuses it, which its health shows. Returns the client.
fn refused_stranger(other: &TestServer, version: &str, region_name: &str) -> Client {
    let other_key = key(other, &[]);
    let stranger =
        Client::start_with_env(version, "stranger", &[("TS_DEBUG_ALWAYS_USE_DERP", "true")]);
    stranger
        .cli(&[
            "up",
            &format!("--login-server={}", other.url()),
            &format!("--authkey={other_key}"),
            "--hostname=stranger",
            "--timeout=30s",
        ])
        .ok();
    let refused = format!("could not connect to the '{region_name}' relay");
    stranger.wait_status("the relay refused", Duration::from_secs(30), |status| {
        status["Health"].as_array().is_some_and(|h| {
            h.iter()
                .any(|m| m.as_str().is_some_and(|m| m.contains(&refused)))
        })
    });
    stranger
}

/// Tailscale's `derper` on loopback with a self-signed certificate for 127.0.0.1,
/// admitting only the clients that `verify_url` allows (no fail-open). Killed on
/// drop.
struct Derper {
    child: std::process::Child,
    dir: tempfile::TempDir,
    port: u16,
    /// `sha256-raw:<hex>`, the pin derper prints for its certificate.
    pin: String,
}

impl Derper {
    /// A derper for 127.0.0.1 with its self-signed certificate; with `verify_url`,
    /// it asks that URL about every client and refuses when it cannot.
    fn start(version: &str, verify_url: Option<&str>) -> Derper {
        let bin = bin_dir(version).join("derper");
        assert!(
            bin.exists(),
            "{} is missing: run scripts/install-test-deps",
            bin.display()
        );
        let dir = tempfile::Builder::new().prefix("derper").tempdir().unwrap();
        let port = free_port();
        let log = std::fs::File::create(dir.path().join("derper.log")).unwrap();
        let mut command = std::process::Command::new(bin);
        command
            .arg(format!("-a=127.0.0.1:{port}"))
            .args([
                "--http-port=-1",
                "--stun=false",
                "--certmode=manual",
                "--hostname=127.0.0.1",
            ])
            .arg(format!("--certdir={}", dir.path().display()));
        if let Some(url) = verify_url {
            command
                .arg(format!("--verify-client-url={url}"))
                .arg("--verify-client-url-fail-open=false");
        }
        let child = command
            .stdin(std::process::Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start derper");
        let mut derper = Derper {
            child,
            dir,
            port,
            pin: String::new(),
        };
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        derper.pin = loop {
            let pin = derper
                .log()
                .split("\"CertName\":\"")
                .nth(1)
                .and_then(|rest| rest.split('"').next())
                .map(str::to_owned);
            if let Some(pin) = pin
                && std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
            {
                break pin;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "derper did not start:\n{}",
                derper.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        };
        derper
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("derper.log")).unwrap_or_default()
    }

    /// The certificate derper made for 127.0.0.1 (PEM).
    fn cert(&self) -> std::path::PathBuf {
        self.dir.path().join("127.0.0.1.crt")
    }

    /// A `derp.paths` file naming this derper as region 900, `derper`.
    fn region_file(&self, dir: &std::path::Path) -> String {
        let path = dir.join("derper.yaml");
        std::fs::write(
            &path,
            format!(
                "regions:\n  900:\n    regionid: 900\n    regioncode: derper\n    regionname: Tailscale derper\n    nodes:\n      - name: 900a\n        regionid: 900\n        hostname: 127.0.0.1\n        ipv4: 127.0.0.1\n        certname: \"{}\"\n        derpport: {}\n        stunport: -1\n",
                self.pin, self.port
            ),
        )
        .unwrap();
        path.display().to_string()
    }
}

impl Drop for Derper {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A headway server whose only relay is `derper`.
fn server_behind(derper: &Derper, port: u16) -> TestServer {
    let dir = tempfile::Builder::new().prefix("hw").tempdir().unwrap();
    let regions = derper.region_file(dir.path());
    TestServer::spawn_with(Spawn {
        port: Some(port),
        dir: Some(dir),
        extra_config: format!(
            "derp:\n  urls: []\n  paths: [{regions}]\n  auto_update_enabled: false\n"
        ),
        ..Spawn::default()
    })
}

/// `derper --verify-client-url=<headway>/verify` relays headway's nodes (with UDP
/// off, every packet crosses it) and refuses a node that another server made.
#[test]
fn a_derper_that_asks_headway_relays_only_headways_nodes() {
    // The newest client: v1.80 cannot check a sha256-raw certificate pin.
    let version = versions().pop().expect("a client version");
    let port = free_port();
    let derper = Derper::start(&version, Some(&format!("http://127.0.0.1:{port}/verify")));
    let server = server_behind(&derper, port);
    let (a, b, _ip_a, ip_b) =
        joined_pair_with_env(&server, &version, &[("TS_DEBUG_ALWAYS_USE_DERP", "true")]);
    assert_eq!(a.status()["Self"]["Relay"], "derper", "{}", a.log_tail());
    assert_pings_via_derp(&a, &ip_b, "derper", 3, &derper.log());
    assert_tcp_crosses(&a, &ip_b, &version);

    // A node of another server, told to use the same derper: headway has never
    // heard of its key, so the derper turns it away and it never gets a relay.
    let other = server_behind(&derper, free_port());
    let stranger = refused_stranger(&other, &version, "Tailscale derper");
    let log = derper.log();
    let rejected: Vec<&str> = log.lines().filter(|l| l.contains("rejected")).collect();
    let stranger_key = stranger.status()["Self"]["PublicKey"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(
        rejected.iter().any(|l| l.contains(&stranger_key)),
        "derper did not refuse the stranger {stranger_key}:\n{log}"
    );
    for node in [&a, &b] {
        let key = node.status()["Self"]["PublicKey"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        assert!(
            !rejected.iter().any(|l| l.contains(&key)),
            "derper refused {} of headway:\n{log}",
            node.name
        );
    }
}

/// With `derp.server.verify_clients`, the embedded relay carries headway's own
/// nodes and refuses a node of another server that was pointed at it.
#[test]
fn the_embedded_relay_with_verify_clients_refuses_other_servers_nodes() {
    // The newest client: the borrowed region is pinned with sha256-raw.
    let version = versions().pop().expect("a client version");
    let server = TestServer::spawn_with(Spawn {
        port: Some(free_port()),
        extra_config: "derp:\n  server:\n    enabled: true\n    verify_clients: true\n".into(),
        ..Spawn::default()
    });
    let (a, _b, _ip_a, ip_b) =
        joined_pair_with_env(&server, &version, &[("TS_DEBUG_ALWAYS_USE_DERP", "true")]);
    assert_pings_via_derp(&a, &ip_b, "headway", 3, "");

    // Another server hands its node headway's relay, as the map shows it.
    let map: serde_json::Value =
        serde_json::from_str(&a.cli(&["debug", "derp-map"]).ok().stdout).unwrap();
    let node = &map["Regions"]["999"]["Nodes"][0];
    let dir = tempfile::Builder::new().prefix("hw").tempdir().unwrap();
    let regions = dir.path().join("borrowed.yaml");
    std::fs::write(
        &regions,
        format!(
            "regions:\n  900:\n    regionid: 900\n    regioncode: borrowed\n    regionname: Borrowed relay\n    nodes:\n      - name: 900a\n        regionid: 900\n        hostname: {}\n        ipv4: {}\n        certname: \"{}\"\n        derpport: {}\n        stunport: -1\n",
            node["HostName"].as_str().unwrap(),
            node["HostName"].as_str().unwrap(),
            node["CertName"].as_str().unwrap(),
            node["DERPPort"]
        ),
    )
    .unwrap();
    let other = TestServer::spawn_with(Spawn {
        port: Some(free_port()),
        dir: Some(dir),
        extra_config: format!("derp:\n  urls: []\n  paths: [{}]\n", regions.display()),
        ..Spawn::default()
    });
    refused_stranger(&other, &version, "Borrowed relay");
    let log = server.log();
    assert!(
        log.contains("refused a DERP client that may not use this relay"),
        "{log}"
    );
}

/// A headway whose embedded relay keeps its key and self-signed certificate in
/// the server's directory, with client admission as given.
fn relay_server(verify_clients: bool) -> TestServer {
    let dir = tempfile::Builder::new().prefix("hw").tempdir().unwrap();
    let extra_config = format!(
        "derp:\n  server:\n    enabled: true\n    verify_clients: {verify_clients}\n    private_key_path: {}\n",
        dir.path().join("derp_server_private.key").display()
    );
    TestServer::spawn_with(Spawn {
        dir: Some(dir),
        extra_config,
        ..Spawn::default()
    })
}

/// `headway bench-relay` measures headway's embedded relay and Tailscale's derper
/// with the same client: in every throughput run each pair's packets arrive, all
/// from the right sender, and the memory measurement has its number. A relay that
/// refuses the client, or a certificate other than the one given, is an error
/// that says so.
#[test]
fn the_relay_benchmark_measures_the_embedded_relay_and_derper() {
    let version = versions().pop().expect("a client version");
    let derper = Derper::start(&version, None);
    let server = relay_server(false);
    let headway_cert = server.dir.path().join("derp_server_cert.pem");
    let targets = [
        (
            "headway",
            format!("https://{}", server.http_addr),
            headway_cert.clone(),
            server.pid(),
        ),
        (
            "derper",
            format!("https://127.0.0.1:{}", derper.port),
            derper.cert(),
            derper.child.id(),
        ),
    ];
    for (name, url, cert, pid) in &targets {
        let out = server.dir.path().join(format!("{name}.json"));
        let run = server
            .cli(&[
                "bench-relay",
                "--url",
                url,
                "--cert",
                &cert.display().to_string(),
                "--pairs",
                "1,4",
                "--warmup",
                "300ms",
                "--window",
                "1s",
                "--idle-clients",
                "20",
                "--server-pid",
                &pid.to_string(),
                "--out",
                &out.display().to_string(),
            ])
            .ok();
        let report: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap();
        assert_eq!(report["memory"]["clients"], 20, "{name}: {report:#}");
        assert!(
            report["memory"]["rss_per_client_kib"].is_number(),
            "{name}: {report:#}"
        );
        let runs = report["throughput"].as_array().unwrap();
        assert_eq!(runs.len(), 2, "{name}: {report:#}");
        for (run_report, pairs) in runs.iter().zip([1, 4]) {
            assert_eq!(run_report["pairs"], pairs);
            assert_eq!(run_report["misdelivered"], 0, "{name}: {run_report:#}");
            assert!(
                run_report["slowest_pair_per_sec"].as_f64().unwrap() > 0.0,
                "{name}: a pair got nothing through: {run_report:#}"
            );
            assert!(
                run_report["mb_per_sec"].as_f64().unwrap() > 0.0,
                "{name}: {run_report:#}"
            );
            assert!(
                run_report["server_cpu_secs"].is_number(),
                "{name}: {run_report:#}"
            );
        }
        assert!(run.stderr.contains("4 pairs:"), "{name}: {}", run.stderr);
    }

    // The wrong certificate: the TLS handshake fails and the error says why.
    let wrong = server
        .cli(&[
            "bench-relay",
            "--url",
            &format!("https://{}", server.http_addr),
            "--cert",
            &derper.cert().display().to_string(),
        ])
        .failed();
    assert!(
        wrong
            .stderr
            .contains("a certificate other than the pinned one"),
        "{}",
        wrong.stderr
    );

    // Admission on (headway's default): a stranger's key is refused at login.
    let guarded = relay_server(true);
    let refused = guarded
        .cli(&[
            "bench-relay",
            "--url",
            &format!("https://{}", guarded.http_addr),
            "--cert",
            &guarded
                .dir
                .path()
                .join("derp_server_cert.pem")
                .display()
                .to_string(),
        ])
        .failed();
    assert!(
        refused.stderr.contains("logging in to the relay") && refused.stderr.contains("refused"),
        "{}",
        refused.stderr
    );
    assert!(
        guarded
            .log()
            .contains("refused a DERP client that may not use this relay"),
        "{}",
        guarded.log()
    );
}

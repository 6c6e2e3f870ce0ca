//! A second, independent client: Tailscale's Rust implementation (the
//! `tailscale` crate, wrapped by `tools/ts-rs-client` and built into the tool
//! cache by `scripts/install-test-deps`) joins headway beside an official Go
//! client, gets a usable map, completes a WireGuard handshake with it and
//! carries TCP both ways with it, and two Rust clients carry TCP through
//! headway.
//!
//! The Rust client cannot pin a self-signed relay certificate and fetches the
//! control key only over https; its test-only switches `insecure-derp` and
//! `insecure-keyfetch` cover both, and the relay here is marked
//! `InsecureForTests` in a `derp.paths` file.

use crate::clients::{assert_logged_in, key};
use crate::support::tailscale::{Client, echo_server, free_port, tools_dir, versions};
use crate::support::{Spawn, TestServer};
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

pub const VERSION: &str = "0.6.1";

/// `ts-rs-client`, as install-test-deps built it.
fn binary() -> std::path::PathBuf {
    let path = tools_dir().join(format!("ts-rs-client-{VERSION}/ts-rs-client"));
    assert!(
        path.exists(),
        "{} is missing: run scripts/install-test-deps (it builds tools/ts-rs-client)",
        path.display()
    );
    path
}

/// The running Rust client and the lines it prints.
struct RustClient {
    child: Child,
    lines: mpsc::Receiver<String>,
    dir: tempfile::TempDir,
}

impl RustClient {
    fn start(
        server: &str,
        key: &str,
        hostname: &str,
        echo_port: u16,
        dial: Option<(&str, &str)>,
    ) -> RustClient {
        let dir = tempfile::tempdir().unwrap();
        let mut command = Command::new(binary());
        command
            .args([server, key, hostname])
            .arg(dir.path().join("keys.json"))
            .arg(echo_port.to_string());
        if let Some((target, message)) = dial {
            command.args([target, message]);
        }
        let mut child = command
            .env("TS_RS_EXPERIMENT", "this_is_unstable_software")
            .env(
                "RUST_LOG",
                std::env::var("TSRS_LOG").unwrap_or_else(|_| "info".into()),
            )
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(dir.path().join("stderr.log")).unwrap())
            .spawn()
            .expect("start ts-rs-client");
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        RustClient { child, lines, dir }
    }

    /// What it logged (the last 60 lines).
    fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(self.dir.path().join("stderr.log")).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(400)..].join("\n")
    }

    /// The next line it prints, within `timeout`.
    fn next_line(&self, timeout: Duration) -> String {
        self.lines
            .recv_timeout(timeout)
            .expect("a line from ts-rs-client in time")
    }
}

impl Drop for RustClient {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// headway, whose only relay (its own, embedded) is marked `InsecureForTests`,
/// a Go client of `version` logged in, and the Rust client started: it echoes on
/// `RUST_ECHO` and sends one line to an echo server behind the Go client.
struct Tailnet {
    server: TestServer,
    key: String,
    go: Client,
    rust: RustClient,
    rust_ip: String,
    version: String,
}

const RUST_ECHO: u16 = 7777;
const LINE: &str = "hello from tailscale-rs";

fn tailnet(version: &str) -> Tailnet {
    let port = free_port();
    let dir = tempfile::Builder::new().prefix("hw").tempdir().unwrap();
    let regions = dir.path().join("derp.yaml");
    std::fs::write(
        &regions,
        format!(
            "regions:\n  900:\n    regionid: 900\n    regioncode: headway\n    regionname: headway\n    \
             nodes:\n      - name: 900a\n        regionid: 900\n        hostname: 127.0.0.1\n        \
             ipv4: 127.0.0.1\n        derpport: {port}\n        stunport: -1\n        insecurefortests: true\n"
        ),
    )
    .unwrap();
    let server = TestServer::spawn_with(Spawn {
        port: Some(port),
        dir: Some(dir),
        extra_config: format!(
            "derp:\n  server:\n    enabled: true\n    automatically_add_embedded_derp_region: false\n  \
             urls: []\n  paths: [{}]\n",
            regions.display()
        ),
        ..Spawn::default()
    });
    let key = key(&server, &["--reusable"]);
    let go = Client::start(version, "go-node");
    let up = go.up_with_key(&server.url(), &key);
    assert_logged_in(&go, &up);
    let target = format!("{}:{}", go.ipv4(), echo_server());
    let rust = RustClient::start(
        &server.url(),
        &key,
        "rusty",
        RUST_ECHO,
        Some((&target, LINE)),
    );
    let ready = rust.next_line(Duration::from_secs(60));
    let rust_ip = ready
        .strip_prefix("ready ")
        .unwrap_or_else(|| panic!("{ready}\n{}\n{}", rust.log_tail(), server.log()))
        .to_owned();
    Tailnet {
        server,
        key,
        go,
        rust,
        rust_ip,
        version: version.to_owned(),
    }
}

/// The Rust client registers and gets a usable map (it reports its home relay,
/// which the Go client learns); it and the Go client complete a WireGuard
/// handshake through the relay and carry TCP both ways; and a second Rust
/// client carries TCP to the first through headway's map and relay. One
/// tailnet per Go client version serves every step.
#[test]
fn the_rust_client_joins_and_carries_tcp_with_go_and_rust_clients() {
    for version in versions() {
        joins_and_carries_tcp(&version);
    }
}

fn joins_and_carries_tcp(version: &str) {
    let net = tailnet(version);
    assert!(net.rust_ip.starts_with("100.64."), "{}", net.rust_ip);
    let list = net.server.cli(&["nodes", "list"]).ok().stdout;
    assert!(list.contains("rusty"), "{list}");
    // Its Hostinfo (spelt `HostInfo`, `PreferredDerp`) was read: the Go client
    // knows where to reach it, and a handshake crossed the relay.
    net.go.wait_status(
        "a handshake with the Rust node",
        Duration::from_secs(60),
        |s| {
            s["Peer"].as_object().is_some_and(|p| {
                p.values().any(|p| {
                    p["HostName"] == "rusty"
                        && p["Relay"] == "headway"
                        && p["LastHandshake"]
                            .as_str()
                            .is_some_and(|t| !t.starts_with("0001-"))
                        && p["RxBytes"].as_u64().is_some_and(|b| b > 0)
                })
            })
        },
    );
    // Rust to Go: the line it sent the echo server behind the Go client came back.
    assert_eq!(
        net.rust.next_line(Duration::from_secs(90)),
        format!("echoed {LINE}"),
        "{}\n\nthe Rust client:\n{}",
        net.go.log_tail(),
        net.rust.log_tail()
    );
    // Go to Rust: the Go client reaches the Rust client's echo server.
    let target = format!("{}:{RUST_ECHO}", net.rust_ip);
    let reached = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        crate::clients::assert_tcp_reaches(&net.go, &target, &net.version)
    }));
    assert!(reached.is_ok(), "the Rust client:\n{}", net.rust.log_tail());
    // Rust to Rust.
    let second = RustClient::start(
        &net.server.url(),
        &net.key,
        "rusty-two",
        RUST_ECHO + 1,
        Some((&target, "rust to rust")),
    );
    assert!(
        second
            .next_line(Duration::from_secs(60))
            .starts_with("ready ")
    );
    assert_eq!(
        second.next_line(Duration::from_secs(90)),
        "echoed rust to rust",
        "{}\n\n{}",
        second.log_tail(),
        net.rust.log_tail()
    );
}

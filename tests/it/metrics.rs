//! Prometheus metrics on `metrics_listen_addr`: the real server's listener
//! scraped by hand (in-process tier), and a real Prometheus scraping a server
//! that two official Tailscale clients are connected to (`full-suite`).

use crate::support::{Spawn, TestServer, field_after, http_get, wait_until};
use std::time::Duration;

/// A server with metrics on a free loopback port, and that port's address.
fn server_with_metrics(port: Option<u16>) -> (TestServer, String) {
    let server = TestServer::spawn_with(Spawn {
        port,
        env: vec![("HEADWAY_METRICS_LISTEN_ADDR".into(), "127.0.0.1:0".into())],
        ..Spawn::default()
    });
    let mut addr = None;
    wait_until(
        "the server logs its metrics address",
        Duration::from_secs(10),
        || {
            addr = field_after(&server.log(), "serving Prometheus metrics", "addr=");
            addr.is_some()
        },
    );
    (server, addr.unwrap())
}

/// The value of the sample `series` (name and labels as written) in `text`.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|line| {
        let rest = line.strip_prefix(series)?;
        rest.strip_prefix(' ')?.trim().parse().ok()
    })
}

#[test]
fn the_server_serves_metrics_on_metrics_listen_addr_only() {
    let (server, metrics) = server_with_metrics(None);
    server.cli(&["users", "create", "alice"]).ok();
    server.cli(&["nodes", "list"]).ok();
    let (status, _, _) = http_get(&server.http_addr, "/health");
    assert_eq!(status, 200);

    let (status, head, text) = http_get(&metrics, "/metrics");
    assert_eq!(status, 200, "{head}\n{text}");
    assert!(
        head.contains("content-type: application/openmetrics-text; version=1.0.0"),
        "{head}"
    );
    assert!(text.ends_with("# EOF\n"), "{text}");
    let build = format!(
        "headway_build_info{{version=\"{}\"}}",
        env!("CARGO_PKG_VERSION")
    );
    for (series, value) in [
        (build.as_str(), 1.0),
        // Admin API calls by method, over the Unix socket.
        (
            "headway_grpc_duration_seconds_count{method=\"CreateUser\"}",
            1.0,
        ),
        (
            "headway_grpc_duration_seconds_count{method=\"ListNodes\"}",
            1.0,
        ),
        // listen_addr's requests by matched route.
        (
            "headscale_http_requests_total{code=\"200\",method=\"GET\",path=\"/health\"}",
            1.0,
        ),
        ("headway_connected_nodes", 0.0),
    ] {
        assert_eq!(sample(&text, series), Some(value), "{series} in\n{text}");
    }
    assert!(
        sample(
            &text,
            "headway_db_statement_duration_seconds_count{on=\"write\"}"
        )
        .is_some_and(|n| n >= 1.0),
        "creating a user writes: {text}"
    );

    let (status, _, runtime) = http_get(&metrics, "/debug/runtime");
    assert_eq!(status, 200, "{runtime}");
    let runtime: serde_json::Value = serde_json::from_str(&runtime).unwrap();
    assert!(
        runtime["alive_tasks"].as_u64().is_some_and(|n| n > 0),
        "{runtime}"
    );
    assert!(
        runtime["workers"].as_u64().is_some_and(|n| n > 0),
        "{runtime}"
    );

    // The public listener does not serve them.
    let (status, _, _) = http_get(&server.http_addr, "/metrics");
    assert_eq!(status, 404);
}

#[test]
fn an_empty_metrics_listen_addr_serves_nothing_and_says_nothing() {
    // The test config sets `metrics_listen_addr: ""`.
    let server = TestServer::spawn();
    let log = server.log();
    assert!(!log.contains("Prometheus"), "{log}");
    assert!(!log.contains("metrics_listen_addr"), "{log}");
}

#[cfg(feature = "full-suite")]
mod prometheus {
    use super::*;
    use crate::clients::{assert_logged_in, key};
    use crate::support::tailscale::{Client, free_port, versions};
    use std::io::{Read, Write};
    use std::path::{Path, PathBuf};
    use std::process::{Child, Command, Stdio};

    const PROMETHEUS: &str = "/usr/bin/prometheus";

    /// A Prometheus server of the test's own, killed on drop.
    struct Prometheus {
        child: Child,
        addr: String,
        log: PathBuf,
        _dir: tempfile::TempDir,
    }

    impl Prometheus {
        /// Starts Prometheus scraping `target` (host:port) every second.
        fn scraping(target: &str) -> Prometheus {
            assert!(
                Path::new(PROMETHEUS).exists(),
                "{PROMETHEUS} is missing: run scripts/install-test-deps (Debian's prometheus package)"
            );
            let dir = tempfile::tempdir().unwrap();
            let config = dir.path().join("prometheus.yml");
            std::fs::write(
                &config,
                format!(
                    "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n\
                     scrape_configs:\n  - job_name: headway\n    scrape_interval: 1s\n    \
                     scrape_timeout: 1s\n    static_configs:\n      - targets: ['{target}']\n"
                ),
            )
            .unwrap();
            let addr = format!("127.0.0.1:{}", free_port());
            let log = dir.path().join("prometheus.log");
            let out = std::fs::File::create(&log).unwrap();
            let child = Command::new(PROMETHEUS)
                .arg(format!("--config.file={}", config.display()))
                .arg(format!(
                    "--storage.tsdb.path={}",
                    dir.path().join("data").display()
                ))
                .arg(format!("--web.listen-address={addr}"))
                .current_dir(dir.path())
                .stdin(Stdio::null())
                .stdout(out.try_clone().unwrap())
                .stderr(out)
                .spawn()
                .unwrap_or_else(|e| panic!("cannot start {PROMETHEUS}: {e}"));
            Prometheus {
                child,
                addr,
                log,
                _dir: dir,
            }
        }

        fn log(&self) -> String {
            std::fs::read_to_string(&self.log).unwrap_or_default()
        }

        /// The value of an instant query's single sample; `None` while there is
        /// none (Prometheus starting, no scrape yet, no such series).
        fn query(&self, promql: &str) -> Option<String> {
            let query =
                percent_encoding::utf8_percent_encode(promql, percent_encoding::NON_ALPHANUMERIC);
            let body = get(&self.addr, &format!("/api/v1/query?query={query}"))?;
            let answer: serde_json::Value = serde_json::from_str(&body).ok()?;
            answer["data"]["result"][0]["value"][1]
                .as_str()
                .map(str::to_owned)
        }
    }

    impl Drop for Prometheus {
        fn drop(&mut self) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }

    /// An HTTP/1.0 GET's body (no chunked encoding to undo); `None` when the
    /// server does not answer 200 yet.
    fn get(addr: &str, path: &str) -> Option<String> {
        let mut conn = std::net::TcpStream::connect(addr).ok()?;
        conn.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
        write!(conn, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").ok()?;
        let mut raw = String::new();
        conn.read_to_string(&mut raw).ok()?;
        let (head, body) = raw.split_once("\r\n\r\n")?;
        let status = head.split_whitespace().nth(1)?;
        (status == "200").then(|| body.to_owned())
    }

    #[test]
    fn prometheus_sees_two_connected_clients() {
        let version = versions().pop().expect("a Tailscale version to test");
        let (server, metrics) = server_with_metrics(Some(free_port()));
        let key = key(&server, &["--reusable"]);
        let prometheus = Prometheus::scraping(&metrics);
        let a = Client::start(&version, "metrics-a");
        let b = Client::start(&version, "metrics-b");
        for client in [&a, &b] {
            let up = client.up_with_key(&server.url(), &key);
            assert_logged_in(client, &up);
        }

        let mut last = None;
        let seen = crate::support::poll_until(Duration::from_secs(60), || {
            last = prometheus.query("headway_connected_nodes");
            last.as_deref() == Some("2")
        });
        assert!(
            seen,
            "Prometheus never read headway_connected_nodes = 2 (last: {last:?})\n\
             prometheus log:\n{}\nserver log:\n{}",
            prometheus.log(),
            server.log()
        );
        // The scrape itself is healthy, and what it read agrees with the server.
        assert_eq!(
            prometheus.query("up{job=\"headway\"}").as_deref(),
            Some("1")
        );
        // Each client registered with the key (a client may send it again later).
        let registered = prometheus
            .query("headway_registrations_total{method=\"authkey\",outcome=\"success\"}")
            .and_then(|v| v.parse::<f64>().ok());
        assert!(registered.is_some_and(|n| n >= 2.0), "{registered:?}");
        assert_eq!(
            prometheus
                .query(&format!(
                    "headway_build_info{{version=\"{}\"}}",
                    env!("CARGO_PKG_VERSION")
                ))
                .as_deref(),
            Some("1")
        );
    }
}

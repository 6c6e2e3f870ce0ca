//! Prometheus metrics on `metrics_listen_addr`: the real server's listener
//! scraped by hand.

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

//! The registry's exposition: names, labels and values as Prometheus reads them.

use super::*;
use axum::body::Body;
use axum::http::Request;
use tower::ServiceExt;

/// The value of the sample `series` (name with labels, as written) in `text`.
pub(crate) fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|line| {
        let rest = line.strip_prefix(series)?;
        rest.strip_prefix(' ')?.trim().parse().ok()
    })
}

#[test]
fn a_new_registry_holds_build_info_and_zeroed_series() {
    let metrics = Metrics::new();
    let text = metrics.encode().unwrap();
    assert!(text.ends_with("# EOF\n"), "{text}");
    let version = format!(
        "headway_build_info{{version=\"{}\"}}",
        env!("CARGO_PKG_VERSION")
    );
    assert_eq!(sample(&text, &version), Some(1.0), "{text}");
    assert_eq!(sample(&text, "headway_connected_nodes"), Some(0.0));
    assert_eq!(sample(&text, "headscale_nodestore_nodes"), Some(0.0));
    assert_eq!(
        sample(
            &text,
            "headscale_mapresponse_sent_total{status=\"ok\",type=\"keepalive\"}"
        ),
        Some(0.0)
    );
    assert_eq!(
        sample(
            &text,
            "headway_relay_packets_dropped_total{reason=\"queue_full\"}"
        ),
        Some(0.0)
    );
    assert_eq!(
        sample(
            &text,
            "headway_db_statement_duration_seconds_count{on=\"transaction\"}"
        ),
        Some(0.0)
    );
    assert!(text.contains("# TYPE headway_policy_compile_duration_seconds histogram"));
}

#[test]
fn recorded_values_reach_the_exposition() {
    let metrics = Metrics::new();
    metrics.map.connected_nodes.inc();
    metrics.map.sent(MapFrame::Full, 1200);
    metrics.map.sent(MapFrame::Delta, 30);
    metrics.map.sent(MapFrame::Delta, 40);
    metrics.map.session_ended(SessionEnd::Removed);
    metrics
        .registrations
        .record(RegisterMethod::AuthKey, RegisterOutcome::Success);
    metrics.relay.dropped(RelayDrop::UnknownDestination);
    observe(&metrics.db.read, Duration::from_millis(2));
    let text = metrics.encode().unwrap();
    for (series, value) in [
        ("headway_connected_nodes", 1.0),
        (
            "headscale_mapresponse_sent_total{status=\"ok\",type=\"delta\"}",
            2.0,
        ),
        (
            "headway_mapresponse_sent_bytes_total{type=\"full\"}",
            1200.0,
        ),
        ("headway_mapresponse_sent_bytes_total{type=\"delta\"}", 70.0),
        ("headscale_mapresponse_ended_total{reason=\"removed\"}", 1.0),
        (
            "headway_registrations_total{method=\"authkey\",outcome=\"success\"}",
            1.0,
        ),
        (
            "headway_relay_packets_dropped_total{reason=\"unknown_dest\"}",
            1.0,
        ),
        (
            "headway_db_statement_duration_seconds_count{on=\"read\"}",
            1.0,
        ),
    ] {
        assert_eq!(sample(&text, series), Some(value), "{series} in\n{text}");
    }
}

#[tokio::test]
async fn http_requests_are_labelled_by_matched_route_never_by_raw_path() {
    let metrics = Metrics::new();
    let app = record::instrument_http(
        axum::Router::new().route("/register/{id}", axum::routing::get(|| async { "page" })),
        metrics.http.clone(),
    );
    for uri in ["/register/abc", "/register/def", "/nothing/here"] {
        let response = app
            .clone()
            .oneshot(Request::get(uri).body(Body::empty()).unwrap())
            .await
            .unwrap();
        drop(response);
    }
    let text = metrics.encode().unwrap();
    assert_eq!(
        sample(
            &text,
            "headscale_http_requests_total{code=\"200\",method=\"GET\",path=\"/register/{id}\"}"
        ),
        Some(2.0),
        "{text}"
    );
    assert_eq!(
        sample(
            &text,
            "headscale_http_requests_total{code=\"404\",method=\"GET\",path=\"unmatched\"}"
        ),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        sample(
            &text,
            "headscale_http_duration_seconds_count{path=\"/register/{id}\"}"
        ),
        Some(2.0)
    );
    assert!(
        !text.contains("abc") && !text.contains("/nothing"),
        "{text}"
    );
}

#[tokio::test]
async fn the_listener_serves_openmetrics_and_the_runtime() {
    let app = listener::router(Metrics::new());
    let response = app
        .clone()
        .oneshot(Request::get("/metrics").body(Body::empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], listener::OPENMETRICS);
    let body = axum::body::to_bytes(response.into_body(), 1 << 20)
        .await
        .unwrap();
    let text = String::from_utf8(body.to_vec()).unwrap();
    assert!(text.contains("headway_tokio_alive_tasks "), "{text}");

    let response = app
        .oneshot(Request::get("/debug/runtime").body(Body::empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let body = axum::body::to_bytes(response.into_body(), 1 << 20)
        .await
        .unwrap();
    let figures: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert!(
        figures["workers"].as_u64().is_some_and(|w| w >= 1),
        "{figures}"
    );
    assert!(figures["alive_tasks"].is_u64(), "{figures}");
    assert!(figures["worker_busy_seconds"].is_array(), "{figures}");
}

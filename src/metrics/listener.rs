//! The router of `metrics_listen_addr`: `GET /metrics` (the OpenMetrics text
//! format, which Prometheus asks for and reads) and `GET /debug/runtime` (the
//! tokio runtime's figures as JSON). Served by the composition root on its own
//! listener, never on `listen_addr`: nothing here is for clients.

use super::Metrics;
use super::runtime::RuntimeFigures;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};

/// The content type of the OpenMetrics text format.
pub const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// `GET /metrics` and `GET /debug/runtime` for `metrics`.
pub fn router(metrics: Metrics) -> Router {
    Router::new()
        .route("/metrics", get(scrape))
        .route("/debug/runtime", get(runtime))
        .route("/", get(index))
        .with_state(metrics)
}

/// `GET /metrics`: every metric in the OpenMetrics text format.
async fn scrape(State(metrics): State<Metrics>) -> Response {
    match metrics.encode() {
        Ok(text) => ([(header::CONTENT_TYPE, OPENMETRICS)], text).into_response(),
        Err(err) => {
            tracing::error!(%err, "could not encode the metrics");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                "could not encode the metrics\n",
            )
                .into_response()
        }
    }
}

/// `GET /debug/runtime`: the tokio runtime's workers, live tasks, shared queue
/// and each worker's busy time, as JSON.
async fn runtime() -> Response {
    match RuntimeFigures::current() {
        Some(figures) => Json(figures).into_response(),
        None => (
            StatusCode::SERVICE_UNAVAILABLE,
            "no tokio runtime to describe\n",
        )
            .into_response(),
    }
}

/// `GET /`: what this listener serves.
async fn index() -> &'static str {
    "headway metrics: GET /metrics (OpenMetrics text), GET /debug/runtime (tokio runtime, JSON)\n"
}

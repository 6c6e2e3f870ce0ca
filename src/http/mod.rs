//! The public HTTP router: health and version now; the TS2021 control
//! protocol joins it in the next milestone.
//!
//! Knows `state` for health checks; nothing of gRPC or the CLI.

use crate::state::State;
use axum::extract::{DefaultBodyLimit, State as Shared};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use std::sync::Arc;

/// Request bodies larger than this are refused before they are read.
pub const MAX_BODY_BYTES: usize = 1 << 20;

/// The router for `listen_addr`.
pub fn router(state: Arc<State>) -> Router {
    Router::new()
        .route("/health", get(health))
        .route("/version", get(version))
        .route("/", get(index))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(state)
}

/// `GET /health`: `{"status":"pass"}` while the database answers, else 503 `fail`.
async fn health(Shared(state): Shared<Arc<State>>) -> impl IntoResponse {
    if state.database_ok().await {
        (StatusCode::OK, Json(serde_json::json!({"status": "pass"})))
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(serde_json::json!({"status": "fail"})),
        )
    }
}

/// `GET /version`: the server's version.
async fn version() -> impl IntoResponse {
    Json(serde_json::json!({"version": env!("CARGO_PKG_VERSION"), "name": "headway"}))
}

/// `GET /`: a one-line pointer for people who open the server URL in a browser.
async fn index() -> &'static str {
    "headway: a Tailscale coordination server. Point `tailscale up --login-server` at this URL.\n"
}

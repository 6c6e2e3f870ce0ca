//! The HTTP admin APIs on `listen_addr`: `/api/v1`, Headscale's REST form of
//! `headscale.v1` (`v1`), built from the RPCs' HTTP rules in the compiled
//! descriptors (`schema`), with grpc-gateway's JSON (`json`), and the OpenAPI
//! document generated from the same descriptors (`openapi`); and `/api/v2`,
//! Tailscale's API (`v2`).
//!
//! Knows `grpc` (the one implementation of every operation) and `state` (API
//! keys, OAuth clients, reads); nothing of the database or the control protocol.

pub mod json;
pub mod openapi;
pub mod schema;
pub mod v1;
pub mod v2;

use crate::grpc::AdminApi;
use crate::state::State;
use axum::Router;
use std::sync::Arc;

/// Logs a refused call with its path and client address (through
/// `trusted_proxies`), one line each, for tools such as fail2ban.
fn log_refused(request: &axum::extract::Request, why: &str) {
    let source = crate::limits::request_client(request)
        .map_or_else(|| "unknown".to_owned(), |addr| addr.ip().to_string());
    tracing::warn!(%source, path = %request.uri().path(), "refused a REST API call: {why}");
}

/// Every API route: the operations behind a key, their description without one.
pub fn router(state: Arc<State>, tailnet: v2::Tailnet) -> Router {
    let admin = AdminApi::new(state.clone());
    Router::new()
        .merge(v1::router(state.clone(), admin.clone()))
        .merge(v2::router(state, admin, tailnet))
        .merge(openapi::router())
}

//! The public HTTP router: health and version now; the TS2021 control
//! protocol joins it in the next milestone.
//!
//! Knows `state` for health checks; nothing of gRPC or the CLI.

pub mod listener;
pub mod oidc;
pub mod pages;

use crate::state::State;
use crate::tailcfg::{DERPAdmitClientRequest, DERPAdmitClientResponse};
use axum::extract::{DefaultBodyLimit, FromRef, State as Shared};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use std::sync::Arc;

/// Request bodies larger than this are refused before they are read.
pub const MAX_BODY_BYTES: usize = 1 << 20;

/// What the public pages need: the coordinator and the URL clients use.
#[derive(Clone, Debug)]
pub struct Site {
    pub state: Arc<State>,
    /// `server_url`, as clients and set-up pages show it.
    pub server_url: String,
    /// Sign-in through the OIDC provider, when `oidc.issuer` is set.
    pub sign_in: Option<Arc<oidc::SignIn>>,
}

impl FromRef<Site> for Arc<State> {
    fn from_ref(site: &Site) -> Arc<State> {
        site.state.clone()
    }
}

/// The router for `listen_addr`.
/// `control` holds the TS2021 routes (`/key`, `/ts2021`), mounted beside the pages.
/// `sign_in` is the OIDC provider's part, when one is configured.
pub fn router(
    state: Arc<State>,
    server_url: &str,
    control: Router,
    sign_in: Option<Arc<oidc::SignIn>>,
) -> Router {
    let http_metrics = state.metrics().http.clone();
    let site = Site {
        state,
        server_url: server_url.trim_end_matches('/').to_owned(),
        sign_in,
    };
    let router = Router::new()
        .route("/health", get(health))
        .route("/version", get(version))
        .route("/register/{id}", get(pages::register))
        .route("/auth/{id}", get(pages::auth))
        .route("/oidc/callback", get(oidc::callback))
        .route("/admin/login/oidc", get(oidc::admin_start))
        .route("/register/confirm/{id}", axum::routing::post(oidc::confirm))
        .route("/apple", get(pages::apple))
        .route("/apple/{platform}", get(pages::apple_profile))
        .route("/windows", get(pages::windows))
        .route("/verify", axum::routing::post(verify))
        .route("/", get(index))
        .with_state(site)
        .merge(control)
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES));
    // By matched route: the control, relay and page routes alike.
    crate::metrics::record::instrument_http(router, http_metrics)
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

/// `POST /verify`: whether a DERP client may use a relay, asked by external
/// `derper --verify-client-url=<server_url>/verify` relays: only current, unexpired
/// nodes of this server are allowed. derper sends the JSON body without a
/// `Content-Type`, so the body is read as JSON whatever the header says.
async fn verify(
    Shared(state): Shared<Arc<State>>,
    body: axum::body::Bytes,
) -> axum::response::Response {
    if body.len() > VERIFY_BODY_LIMIT {
        return (
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("an admission request is at most {VERIFY_BODY_LIMIT} bytes\n"),
        )
            .into_response();
    }
    let request: DERPAdmitClientRequest = match serde_json::from_slice(&body) {
        Ok(request) => request,
        Err(err) => {
            return (
                StatusCode::BAD_REQUEST,
                format!("not a DERPAdmitClientRequest: {err}\n"),
            )
                .into_response();
        }
    };
    let allow = state.is_current_node_key(&request.node_public);
    tracing::debug!(node_key = %request.node_public.short(), source = %request.source, allow, "relay admission asked");
    Json(DERPAdmitClientResponse { allow }).into_response()
}

/// An admission request is a node key and an address: a few hundred bytes.
const VERIFY_BODY_LIMIT: usize = 4096;

/// `GET /version`: the server's version.
async fn version() -> impl IntoResponse {
    Json(serde_json::json!({"version": env!("CARGO_PKG_VERSION"), "name": "headway"}))
}

/// `GET /`: a one-line pointer for people who open the server URL in a browser.
async fn index() -> &'static str {
    "headway: a Tailscale coordination server. Point `tailscale up --login-server` at this URL.\n"
}

//! The HTTP side of TS2021: `GET /key`, the `/ts2021` upgrade, and serving the
//! control router over HTTP/2 inside the Noise stream of each upgraded connection.
//!
//! Knows HTTP and the Noise transport; what the requests inside Noise mean is the
//! caller's router's business. Mirrors Tailscale's `controlhttpserver` and
//! Headscale's `noise.go`.

use super::key::ServerKey;
use super::noise;
use super::{MIN_NOISE_VERSION, NOISE_BODY_LIMIT};
use crate::types::MachineKey;
use axum::Router;
use axum::body::Body;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Json, Response};
use axum::routing::get;
use base64::Engine;
use http_body_util::Limited;
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use serde::Serialize;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tower::ServiceExt;

/// The `Upgrade` token of the TS2021 protocol.
pub const UPGRADE_PROTOCOL: &str = "tailscale-control-protocol";
/// The request header carrying the base64 handshake initiation.
pub const HANDSHAKE_HEADER: &str = "x-tailscale-handshake";
/// HTTP/2 pings this often notice a client that vanished without closing TCP.
const KEEP_ALIVE_INTERVAL: Duration = Duration::from_secs(60);
const KEEP_ALIVE_TIMEOUT: Duration = Duration::from_secs(20);
/// Go's HTTP/2 default; a client runs its long poll beside register, lite map
/// updates and others on one connection.
const MAX_CONCURRENT_STREAMS: u32 = 250;

/// Who is on the other end of a Noise connection: an extension on every request
/// served inside it. Handlers check that a body's node key belongs to this machine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NoisePeer {
    /// The client's Noise static key, proven by the handshake.
    pub machine_key: MachineKey,
    /// The capability version from the handshake (at least 113).
    pub protocol_version: u16,
}

struct Shared {
    key: Arc<ServerKey>,
    noise_router: Router,
}

/// The public routes of the control protocol: `GET /key` and `GET`/`POST /ts2021`.
/// `noise_router` serves the requests inside each Noise connection
/// (`/machine/register`, `/machine/map`, …), with [`NoisePeer`] on every request and
/// bodies capped at 1 MiB.
pub fn public_routes(key: Arc<ServerKey>, noise_router: Router) -> Router {
    let shared = Arc::new(Shared {
        key,
        noise_router: noise_router.layer(DefaultBodyLimit::max(NOISE_BODY_LIMIT)),
    });
    Router::new()
        .route("/key", get(server_key))
        .route("/ts2021", get(ts2021).post(ts2021))
        .with_state(shared)
}

/// `tailcfg.OverTLSPublicKeyResponse`: lowercase JSON names.
#[derive(Serialize)]
struct OverTlsPublicKeyResponse {
    /// The pre-Noise key; always the zero key, never `""` (clients fail on it).
    #[serde(rename = "legacyPublicKey")]
    legacy_public_key: String,
    #[serde(rename = "publicKey")]
    public_key: String,
}

/// `GET /key?v=N`: the server's Noise public key. Every client headway supports
/// sends `v` ≥ 113, so the JSON form is the only one served.
async fn server_key(State(shared): State<Arc<Shared>>) -> Json<OverTlsPublicKeyResponse> {
    Json(OverTlsPublicKeyResponse {
        legacy_public_key: MachineKey::zero().to_string(),
        public_key: shared.key.public().to_string(),
    })
}

/// `POST /ts2021` (and `GET`): checks the upgrade request, answers `101 Switching
/// Protocols`, then runs the handshake and HTTP/2 on the upgraded connection.
async fn ts2021(State(shared): State<Arc<Shared>>, mut request: Request) -> Response {
    let init = match check_upgrade_request(&request) {
        Ok(init) => init,
        Err((status, message)) => return (status, format!("{message}\n")).into_response(),
    };
    let on_upgrade = hyper::upgrade::on(&mut request);
    // The connection outlives this handler; like hyper's own per-connection
    // tasks, it ends when the client goes away.
    tokio::spawn(serve_upgraded(on_upgrade, init, shared));
    let mut response = StatusCode::SWITCHING_PROTOCOLS.into_response();
    let headers = response.headers_mut();
    headers.insert(header::UPGRADE, HeaderValue::from_static(UPGRADE_PROTOCOL));
    headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    response
}

/// The handshake initiation of a well-formed upgrade request, or the status and
/// message refusing it.
fn check_upgrade_request(request: &Request) -> Result<Vec<u8>, (StatusCode, &'static str)> {
    let headers = request.headers();
    let upgrade = headers
        .get(header::UPGRADE)
        .and_then(|value| value.to_str().ok())
        .map(str::to_ascii_lowercase)
        .unwrap_or_default();
    if upgrade.is_empty() {
        tracing::warn!(
            "a /ts2021 request arrived without an Upgrade header; a reverse proxy in front \
             of headway must forward the Upgrade and Connection headers"
        );
        return Err((
            StatusCode::BAD_REQUEST,
            "missing Upgrade header: a reverse proxy in front of headway must forward \
             the Upgrade and Connection headers for /ts2021",
        ));
    }
    if upgrade == "websocket" {
        return Err((
            StatusCode::NOT_IMPLEMENTED,
            "WebSocket ts2021 is not supported yet",
        ));
    }
    if upgrade != UPGRADE_PROTOCOL {
        return Err((StatusCode::BAD_REQUEST, "unknown next protocol"));
    }
    let Some(encoded) = headers.get(HANDSHAKE_HEADER) else {
        return Err((
            StatusCode::BAD_REQUEST,
            "missing Tailscale handshake header",
        ));
    };
    match base64::engine::general_purpose::STANDARD.decode(encoded.as_bytes()) {
        Ok(init) if init.len() == noise::INITIATION_LEN => Ok(init),
        _ => Err((
            StatusCode::BAD_REQUEST,
            "invalid Tailscale handshake header",
        )),
    }
}

/// Runs one upgraded connection to its end. Every failure ends only this
/// connection, with one log line.
async fn serve_upgraded(on_upgrade: OnUpgrade, init: Vec<u8>, shared: Arc<Shared>) {
    let upgraded = match on_upgrade.await {
        Ok(upgraded) => upgraded,
        Err(err) => {
            tracing::debug!(error = %err, "ts2021 upgrade failed");
            return;
        }
    };
    let accepted = match noise::accept(&shared.key, &init) {
        Ok(accepted) => accepted,
        Err(err) => {
            // Go's server sends nothing either: the client sees EOF after the 101.
            tracing::info!(error = %err, "refused a ts2021 handshake");
            return;
        }
    };
    let peer = NoisePeer {
        machine_key: accepted.peer(),
        protocol_version: accepted.protocol_version(),
    };
    if peer.protocol_version < MIN_NOISE_VERSION {
        // Too old to speak this transport at all: the response is never sent.
        tracing::info!(
            machine_key = %peer.machine_key,
            version = peer.protocol_version,
            "refused a Tailscale client too old for the Noise protocol (capability version {MIN_NOISE_VERSION})"
        );
        return;
    }
    let mut stream = accepted.into_stream(TokioIo::new(upgraded));
    let started = async {
        stream
            .write_all(&noise::node_key_challenge_payload())
            .await?;
        stream.flush().await
    };
    if let Err(err) = started.await {
        tracing::debug!(machine_key = %peer.machine_key, error = %err, "ts2021 connection lost during the handshake");
        return;
    }
    tracing::debug!(
        machine_key = %peer.machine_key,
        version = peer.protocol_version,
        "ts2021 connection established"
    );

    let router = shared.noise_router.clone();
    let request_peer = peer.clone();
    let service =
        hyper::service::service_fn(move |request: hyper::Request<hyper::body::Incoming>| {
            let router = router.clone();
            let peer = request_peer.clone();
            async move {
                let (mut parts, body) = request.into_parts();
                parts.extensions.insert(peer);
                let body = Body::new(Limited::new(body, NOISE_BODY_LIMIT));
                router.oneshot(Request::from_parts(parts, body)).await
            }
        });
    let result = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
        .timer(TokioTimer::new())
        .keep_alive_interval(KEEP_ALIVE_INTERVAL)
        .keep_alive_timeout(KEEP_ALIVE_TIMEOUT)
        .max_concurrent_streams(MAX_CONCURRENT_STREAMS)
        .serve_connection(TokioIo::new(stream), service)
        .await;
    match result {
        Ok(()) => tracing::debug!(machine_key = %peer.machine_key, "ts2021 connection closed"),
        Err(err) => tracing::debug!(
            machine_key = %peer.machine_key,
            error = %err,
            "ts2021 connection ended with an error"
        ),
    }
}

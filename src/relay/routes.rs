//! The relay's HTTP surface: the `/derp` upgrade (`Upgrade: DERP` with any method, or
//! WebSocket for browser clients) that hands connections to [`Relay::accept`],
//! the latency probes `/derp/probe` and `/derp/latency-check`, and the
//! captive-portal check `/generate_204`.
//!
//! Knows HTTP, not frames. Mirrors Tailscale's `derp/derpserver/handler.go` and
//! `websocket.go`. A connection admitted by the listener's limits (a
//! `limits::Conn` on the request) gets a new handshake phase at the upgrade and
//! is handed to the relay's own timeouts once its client has logged in.

use super::frame::PROTOCOL_VERSION;
use super::server::Relay;
use crate::limits::Conn;
use crate::tasks::Tasks;
use crate::websocket::{self, ByteStream};
use axum::Router;
use axum::extract::ws::WebSocketUpgrade;
use axum::extract::{FromRequestParts, Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;

/// The `Upgrade` token of DERP over HTTP.
pub const UPGRADE_PROTOCOL: &str = "DERP";
/// The WebSocket subprotocol of DERP over WebSocket.
pub const WEBSOCKET_PROTOCOL: &str = "derp";
/// The response header carrying the protocol version.
pub const VERSION_HEADER: &str = "derp-version";
/// The response header carrying the relay's key as 64 hex digits.
pub const PUBLIC_KEY_HEADER: &str = "derp-public-key";
/// The captive-portal challenge a client sends to `/generate_204`…
pub const CHALLENGE_HEADER: &str = "x-tailscale-challenge";
/// …and the header echoing it as `response <challenge>`.
pub const RESPONSE_HEADER: &str = "x-tailscale-response";
/// A challenge longer than this is not echoed.
const MAX_CHALLENGE_LEN: usize = 64;

/// The relay's routes. `GET` routes answer `HEAD` too. Relay connections run
/// under `tasks`, and end when the server stops.
pub fn routes(relay: Arc<Relay>, tasks: Tasks) -> Router {
    Router::new()
        // Any method that carries `Upgrade: DERP` (as Tailscale's derper and
        // Headscale accept); clients send GET, some send POST.
        .route("/derp", any(derp))
        .route("/derp/probe", get(probe))
        .route("/derp/latency-check", get(probe))
        .route("/generate_204", get(generate_204))
        .with_state(Served { relay, tasks })
}

/// What the `/derp` handlers share.
#[derive(Clone)]
struct Served {
    relay: Arc<Relay>,
    tasks: Tasks,
}

/// `GET /derp` with `Upgrade: DERP`: answers `101 Switching Protocols` with the
/// relay's key and runs the DERP connection on the upgraded stream.
///
/// Fast start (`Derp-Fast-Start: 1`, no HTTP response) is never used by clients
/// of this relay: they ask for it only when the TLS chain has a meta
/// certificate, and headway adds none. `Upgrade: websocket` goes to
/// [`derp_websocket`].
async fn derp(State(Served { relay, tasks }): State<Served>, mut request: Request) -> Response {
    let upgrade = request
        .headers()
        .get(header::UPGRADE)
        .and_then(|value| value.to_str().ok())
        .unwrap_or_default();
    if upgrade.eq_ignore_ascii_case("websocket") {
        return derp_websocket(relay, tasks, request).await;
    }
    if !upgrade.eq_ignore_ascii_case(UPGRADE_PROTOCOL) {
        if !upgrade.is_empty() {
            tracing::debug!(upgrade, "refused a /derp request for an unknown protocol");
        }
        return (
            StatusCode::UPGRADE_REQUIRED,
            "DERP requires connection upgrade\n",
        )
            .into_response();
    }
    // Only an HTTP/1.1 connection can be taken over; over HTTP/2 the request
    // has nothing to upgrade, and a 101 would leave the client hanging.
    let Some(on_upgrade) = request.extensions_mut().remove::<OnUpgrade>() else {
        return (
            StatusCode::UPGRADE_REQUIRED,
            "DERP requires an HTTP/1.1 connection upgrade\n",
        )
            .into_response();
    };
    let remote = remote_addr(&request);
    let conn = request.extensions().get::<Conn>().cloned();

    let public_key = HeaderValue::from_str(&relay.public_key().untyped_hex());
    let Ok(public_key) = public_key else {
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    };
    // The ClientInfo is due within the handshake timeout from here.
    if let Some(conn) = &conn {
        conn.begin_handshake();
    }
    // The connection outlives this handler: it ends when the client goes away
    // or the server stops.
    tasks.spawn(async move {
        match on_upgrade.await {
            Ok(upgraded) => {
                let io = TokioIo::new(upgraded);
                relay.accept_then(io, remote, || logged_in(conn)).await;
            }
            Err(err) => tracing::debug!(%remote, error = %err, "DERP upgrade failed"),
        }
    });
    let mut response = StatusCode::SWITCHING_PROTOCOLS.into_response();
    let headers = response.headers_mut();
    headers.insert(header::UPGRADE, HeaderValue::from_static(UPGRADE_PROTOCOL));
    headers.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    headers.insert(
        HeaderName::from_static(VERSION_HEADER),
        HeaderValue::from(PROTOCOL_VERSION),
    );
    headers.insert(HeaderName::from_static(PUBLIC_KEY_HEADER), public_key);
    response
}

/// `GET /derp` with `Upgrade: websocket` and subprotocol `derp`, the form
/// browser (js/wasm) clients use: binary messages carry the same DERP byte
/// stream, and the 101 carries no DERP headers (the greeting has the key).
///
/// Without the subprotocol the request is refused with 426. Go's relay instead
/// treats such a request as plain DERP (very old clients sent `Upgrade:
/// WebSocket` and then spoke raw DERP); no client headway serves does that.
async fn derp_websocket(relay: Arc<Relay>, tasks: Tasks, request: Request) -> Response {
    if !websocket::offers_protocol(request.headers(), WEBSOCKET_PROTOCOL) {
        tracing::debug!("refused a /derp WebSocket without the derp subprotocol");
        return (
            StatusCode::UPGRADE_REQUIRED,
            "DERP over WebSocket requires the WebSocket subprotocol \"derp\" \
             (Sec-WebSocket-Protocol: derp)\n",
        )
            .into_response();
    }
    let remote = remote_addr(&request);
    let conn = request.extensions().get::<Conn>().cloned();
    let (mut parts, _body) = request.into_parts();
    let upgrade = match WebSocketUpgrade::from_request_parts(&mut parts, &()).await {
        Ok(upgrade) => upgrade,
        Err(rejection) => return rejection.into_response(),
    };
    websocket::with_limits(upgrade)
        .protocols([WEBSOCKET_PROTOCOL])
        .on_failed_upgrade(move |err| {
            tracing::debug!(%remote, error = %err, "DERP WebSocket upgrade failed");
        })
        .on_upgrade(move |socket| {
            if let Some(conn) = &conn {
                conn.begin_handshake();
            }
            let session = relay.accept_then(ByteStream::new(socket), remote, || logged_in(conn));
            async move {
                tasks.own(session).await;
            }
        })
}

/// A DERP client logged in: its connection is a node's, kept alive by the
/// relay's keep-alives and ended by its write timeouts.
fn logged_in(conn: Option<Conn>) {
    if let Some(conn) = conn {
        conn.promote();
        conn.free();
    }
}

/// The client's address, for the relay's log lines: the peer the listener
/// recorded, or behind one of `trusted_proxies` the address its forwarding
/// headers name (else every client behind a reverse proxy is the proxy).
fn remote_addr(request: &Request) -> SocketAddr {
    crate::limits::request_client(request).unwrap_or(SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0)))
}

/// `GET|HEAD /derp/probe` and `/derp/latency-check`: an empty 200 that clients
/// without UDP time to pick their nearest relay (browsers too, hence CORS).
async fn probe() -> impl IntoResponse {
    (
        StatusCode::OK,
        [(
            header::ACCESS_CONTROL_ALLOW_ORIGIN,
            HeaderValue::from_static("*"),
        )],
    )
}

/// `GET /generate_204`: the captive-portal check. A well-formed
/// `X-Tailscale-Challenge` is echoed as `X-Tailscale-Response: response <challenge>`,
/// proving a real relay answered and not a portal.
async fn generate_204(headers: HeaderMap) -> Response {
    let mut response = StatusCode::NO_CONTENT.into_response();
    let response_headers = response.headers_mut();
    response_headers.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("no-cache, no-store, must-revalidate, no-transform, max-age=0"),
    );
    let challenge = headers
        .get(CHALLENGE_HEADER)
        .and_then(|value| value.to_str().ok())
        .filter(|challenge| is_valid_challenge(challenge));
    if let Some(challenge) = challenge
        && let Ok(value) = HeaderValue::from_str(&format!("response {challenge}"))
    {
        response_headers.insert(HeaderName::from_static(RESPONSE_HEADER), value);
    }
    response
}

/// Short, and only letters, digits and `.`, `-`, `_`, `:` (Go's set).
fn is_valid_challenge(challenge: &str) -> bool {
    !challenge.is_empty()
        && challenge.len() <= MAX_CHALLENGE_LEN
        && challenge
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_' | b':'))
}

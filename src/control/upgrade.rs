//! The HTTP side of TS2021: `GET /key`, the `/ts2021` upgrade (`Upgrade:
//! tailscale-control-protocol`, or WebSocket for browser clients), and serving the
//! control router over HTTP/2 inside the Noise stream of each upgraded connection.
//!
//! Knows HTTP and the Noise transport; what the requests inside Noise mean is the
//! caller's router's business. Mirrors Tailscale's `controlhttpserver` and
//! Headscale's `noise.go`. A connection admitted by the listener's limits (a
//! `limits::Conn` on the upgrade request) starts a new handshake phase at the
//! upgrade, counts each request inside Noise as in progress until its response
//! ends, and is proven to be a node's by its first successful map.

use super::key::ServerKey;
use super::noise;
use super::{MIN_NOISE_VERSION, NOISE_BODY_LIMIT};
use crate::limits::{Conn, TimedBody, Tracked};
use crate::tasks::Tasks;
use crate::types::MachineKey;
use crate::websocket::{self, ByteStream};
use axum::Router;
use axum::body::Body;
use axum::extract::ws::{WebSocket, WebSocketUpgrade, close_code};
use axum::extract::{ConnectInfo, DefaultBodyLimit, FromRequestParts, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Json, Response};
use axum::routing::get;
use base64::Engine;
use http_body_util::Limited;
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::{TokioIo, TokioTimer};
use serde::Serialize;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tower::ServiceExt;

/// The `Upgrade` token of the TS2021 protocol.
pub const UPGRADE_PROTOCOL: &str = "tailscale-control-protocol";
/// The request header carrying the base64 handshake initiation.
pub const HANDSHAKE_HEADER: &str = "x-tailscale-handshake";
/// The query parameter carrying it on the WebSocket form (browsers cannot set
/// headers there); matched exactly, as Go's `r.Form.Get`.
pub const HANDSHAKE_PARAMETER: &str = "X-Tailscale-Handshake";
/// HTTP/2 pings this often notice a client that vanished without closing TCP.
const KEEP_ALIVE_INTERVAL: Duration = Duration::from_secs(60);
const KEEP_ALIVE_TIMEOUT: Duration = Duration::from_secs(20);
/// Go's HTTP/2 default; a client runs its long poll beside register, lite map
/// updates and others on one connection.
const MAX_CONCURRENT_STREAMS: u32 = 250;
/// Request bodies inside Noise must arrive within this when no listener limits
/// say otherwise (`limits.request_timeout`).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

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
    /// Upgraded connections run here, and end when the server stops.
    tasks: Tasks,
}

/// What the upgrade request tells about the connection under it: its slot in
/// the listener's limits (absent when served some other way, as in tests), and
/// the client's address, put on every request inside Noise as `ConnectInfo`.
#[derive(Clone, Debug, Default)]
struct Link {
    conn: Option<Conn>,
    client: Option<SocketAddr>,
}

impl Link {
    fn of(request: &Request) -> Link {
        Link {
            conn: request.extensions().get::<Conn>().cloned(),
            client: crate::limits::request_client(request),
        }
    }
}

/// The public routes of the control protocol: `GET /key` and `GET`/`POST /ts2021`.
/// `noise_router` serves the requests inside each Noise connection
/// (`/machine/register`, `/machine/map`, …), with [`NoisePeer`] on every request and
/// bodies capped at 1 MiB.
pub fn public_routes(key: Arc<ServerKey>, noise_router: Router, tasks: Tasks) -> Router {
    let shared = Arc::new(Shared {
        key,
        tasks,
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
/// `Upgrade: websocket` goes to [`ts2021_websocket`].
async fn ts2021(State(shared): State<Arc<Shared>>, mut request: Request) -> Response {
    let wants_websocket = request
        .headers()
        .get(header::UPGRADE)
        .is_some_and(|upgrade| upgrade.as_bytes().eq_ignore_ascii_case(b"websocket"));
    if wants_websocket {
        return ts2021_websocket(shared, request).await;
    }
    let init = match check_upgrade_request(&request) {
        Ok(init) => init,
        Err((status, message)) => return (status, format!("{message}\n")).into_response(),
    };
    let link = Link::of(&request);
    // From here the first request inside Noise is due within the handshake timeout.
    if let Some(conn) = &link.conn {
        conn.begin_handshake();
    }
    let on_upgrade = hyper::upgrade::on(&mut request);
    // The connection outlives this handler: it ends when the client goes away
    // or the server stops.
    shared
        .tasks
        .clone()
        .spawn(serve_upgraded(on_upgrade, init, shared, link));
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
        // Anyone can send this request: at most one line per interval.
        static SAID: crate::limits::Throttle = crate::limits::Throttle::new();
        if let Some(suppressed) = SAID.ready() {
            tracing::warn!(
                suppressed,
                "a /ts2021 request arrived without an Upgrade header; a reverse proxy in front \
                 of headway must forward the Upgrade and Connection headers"
            );
        }
        return Err((
            StatusCode::BAD_REQUEST,
            "missing Upgrade header: a reverse proxy in front of headway must forward \
             the Upgrade and Connection headers for /ts2021",
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

/// `GET /ts2021?X-Tailscale-Handshake=<base64>` with `Upgrade: websocket`, the
/// form browser (js/wasm) clients use: subprotocol `tailscale-control-protocol`,
/// binary messages carrying the same byte stream, and no early payload.
///
/// As Go's `acceptWebsocket`, the WebSocket is accepted first and a client that
/// does not speak the subprotocol, or whose handshake parameter is missing or not
/// base64, is then closed with "policy violation" (1008) and a reason; a browser
/// sees nothing of a refused HTTP upgrade but the close reason reaches its page.
async fn ts2021_websocket(shared: Arc<Shared>, request: Request) -> Response {
    let link = Link::of(&request);
    let (mut parts, _body) = request.into_parts();
    let upgrade = match WebSocketUpgrade::from_request_parts(&mut parts, &()).await {
        Ok(upgrade) => upgrade,
        Err(rejection) => return rejection.into_response(),
    };
    let upgrade = websocket::with_limits(upgrade).protocols([UPGRADE_PROTOCOL]);
    let speaks_protocol = upgrade.selected_protocol().is_some();
    let init = handshake_parameter(parts.uri.query().unwrap_or_default());
    upgrade
        .on_failed_upgrade(|err| tracing::debug!(error = %err, "ts2021 WebSocket upgrade failed"))
        .on_upgrade(move |socket| {
            let tasks = shared.tasks.clone();
            let session = serve_websocket(socket, speaks_protocol, init, shared, link);
            async move {
                tasks.own(session).await;
            }
        })
}

/// The handshake initiation from a WebSocket request's query, or why there is none.
fn handshake_parameter(query: &str) -> Result<Vec<u8>, &'static str> {
    let encoded = url::form_urlencoded::parse(query.as_bytes())
        .find(|(name, _)| name == HANDSHAKE_PARAMETER)
        .map(|(_, value)| value)
        .filter(|value| !value.is_empty())
        .ok_or("missing Tailscale handshake parameter")?;
    base64::engine::general_purpose::STANDARD
        .decode(encoded.as_bytes())
        .map_err(|_| "invalid Tailscale handshake parameter")
}

/// Runs one WebSocket connection to its end, or closes it with a reason.
async fn serve_websocket(
    socket: WebSocket,
    speaks_protocol: bool,
    init: Result<Vec<u8>, &'static str>,
    shared: Arc<Shared>,
    link: Link,
) {
    if let Some(conn) = &link.conn {
        conn.begin_handshake();
    }
    if !speaks_protocol {
        tracing::info!("refused a ts2021 WebSocket without the {UPGRADE_PROTOCOL} subprotocol");
        let reason = "client must speak the control subprotocol";
        websocket::close(socket, close_code::POLICY, reason).await;
        return;
    }
    let init = match init {
        Ok(init) => init,
        Err(reason) => {
            tracing::info!("refused a ts2021 WebSocket: {reason}");
            websocket::close(socket, close_code::POLICY, reason).await;
            return;
        }
    };
    let Some((accepted, peer)) = accept_handshake(&shared.key, &init) else {
        // Go closes normally, without a reason: Noise failures stay unexplained.
        websocket::close(socket, close_code::NORMAL, "").await;
        return;
    };
    // Tailscale's server sends no early payload on this path.
    serve_noise(ByteStream::new(socket), accepted, peer, None, &shared, link).await;
}

/// Runs one upgraded connection to its end. Every failure ends only this
/// connection, with one log line.
async fn serve_upgraded(on_upgrade: OnUpgrade, init: Vec<u8>, shared: Arc<Shared>, link: Link) {
    let upgraded = match on_upgrade.await {
        Ok(upgraded) => upgraded,
        Err(err) => {
            tracing::debug!(error = %err, "ts2021 upgrade failed");
            return;
        }
    };
    let Some((accepted, peer)) = accept_handshake(&shared.key, &init) else {
        // Go's server sends nothing either: the client sees EOF after the 101.
        return;
    };
    let early_payload = noise::node_key_challenge_payload();
    serve_noise(
        TokioIo::new(upgraded),
        accepted,
        peer,
        Some(&early_payload),
        &shared,
        link,
    )
    .await;
}

/// Runs the responder side of the handshake, and refuses clients too old for
/// this transport; every refusal is logged here.
fn accept_handshake(key: &ServerKey, init: &[u8]) -> Option<(noise::Accepted, NoisePeer)> {
    let accepted = match noise::accept(key, init) {
        Ok(accepted) => accepted,
        Err(err) => {
            tracing::info!(error = %err, "refused a ts2021 handshake");
            return None;
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
        return None;
    }
    Some((accepted, peer))
}

/// Sends the handshake response (with the early payload, if any, in the same
/// write), then serves the noise router over HTTP/2 inside the Noise stream on
/// `io` until the connection ends.
async fn serve_noise<IO>(
    io: IO,
    accepted: noise::Accepted,
    peer: NoisePeer,
    early_payload: Option<&[u8]>,
    shared: &Shared,
    link: Link,
) where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let mut stream = accepted.into_stream(io);
    let started = async {
        if let Some(early_payload) = early_payload {
            stream.write_all(early_payload).await?;
        }
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
    let request_timeout = link
        .conn
        .as_ref()
        .map_or(REQUEST_TIMEOUT, |conn| conn.settings().request_timeout);
    let service =
        hyper::service::service_fn(move |request: hyper::Request<hyper::body::Incoming>| {
            let router = router.clone();
            let peer = request_peer.clone();
            let link = link.clone();
            // Counted until the response body ends: a map long-poll is not idle.
            let in_flight = link.conn.as_ref().map(Conn::request);
            async move {
                let (mut parts, body) = request.into_parts();
                parts.extensions.insert(peer);
                if let Some(client) = link.client {
                    parts.extensions.insert(ConnectInfo(client));
                }
                let is_map = parts.uri.path() == "/machine/map";
                let body = TimedBody::new(body, request_timeout);
                let body = Body::new(Limited::new(body, NOISE_BODY_LIMIT));
                let response = router.oneshot(Request::from_parts(parts, body)).await?;
                // Only a node of this machine key is served a map: the connection
                // is a node's from now on.
                if is_map
                    && response.status().is_success()
                    && let Some(conn) = &link.conn
                {
                    conn.promote();
                }
                Ok::<_, std::convert::Infallible>(
                    response.map(|body| Body::new(Tracked::new(body, in_flight))),
                )
            }
        });
    let result = hyper::server::conn::http2::Builder::new(shared.tasks.executor(false))
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

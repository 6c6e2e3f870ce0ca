//! The control protocol through real sockets: `GET /key`, the `/ts2021` upgrade
//! written by hand over TCP, the handshake, then HTTP/2 inside Noise reaching a
//! test router that reports the `NoisePeer` it sees.

use super::noise::{self, Initiator, NoiseStream};
use super::*;
use crate::types::{MachineKey, PrivateKey};
use axum::routing::post;
use axum::serve::ListenerExt;
use axum::{Extension, Json, Router};
use base64::Engine;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::StatusCode;
use hyper::client::conn::http2::SendRequest;
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const WAIT: Duration = Duration::from_secs(10);

struct TestServer {
    addr: SocketAddr,
    key: Arc<ServerKey>,
}

async fn spawn_server() -> TestServer {
    let key = Arc::new(ServerKey::from_private(&PrivateKey::generate()));
    let inner = Router::new().route("/machine/whoami", post(whoami)).route(
        "/machine/length",
        post(|body: Bytes| async move { body.len().to_string() }),
    );
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let listener = listener.tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
    });
    let app = public_routes(key.clone(), inner);
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    TestServer { addr, key }
}

async fn whoami(Extension(peer): Extension<NoisePeer>) -> Json<serde_json::Value> {
    Json(serde_json::json!({
        "machine_key": peer.machine_key.to_string(),
        "version": peer.protocol_version,
    }))
}

fn public_of(private: &PrivateKey) -> MachineKey {
    ServerKey::from_private(private).public()
}

/// Reads an HTTP/1.1 response head byte by byte, so nothing after it is consumed.
async fn read_head<IO: AsyncRead + Unpin>(io: &mut IO) -> (u16, Vec<(String, String)>) {
    let mut bytes = Vec::new();
    while !bytes.ends_with(b"\r\n\r\n") {
        bytes.push(io.read_u8().await.unwrap());
    }
    let text = String::from_utf8(bytes).unwrap();
    let mut lines = text.split("\r\n");
    let status = lines.next().unwrap().split(' ').nth(1).unwrap();
    let headers = lines
        .filter(|line| !line.is_empty())
        .map(|line| {
            let (name, value) = line.split_once(':').unwrap();
            (name.to_ascii_lowercase(), value.trim().to_owned())
        })
        .collect();
    (status.parse().unwrap(), headers)
}

fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.as_str())
}

/// Sends a raw request and reads a complete (non-upgrade) response.
async fn raw_exchange(addr: SocketAddr, request: &str) -> (u16, Vec<(String, String)>, String) {
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    tcp.write_all(request.as_bytes()).await.unwrap();
    let (status, headers) = read_head(&mut tcp).await;
    let len: usize = header(&headers, "content-length").unwrap().parse().unwrap();
    let mut body = vec![0u8; len];
    tcp.read_exact(&mut body).await.unwrap();
    (status, headers, String::from_utf8(body).unwrap())
}

fn upgrade_request(method: &str, upgrade: Option<&str>, handshake: Option<&str>) -> String {
    let mut request = format!("{method} /ts2021 HTTP/1.1\r\nHost: 127.0.0.1\r\n");
    if let Some(upgrade) = upgrade {
        request += &format!("Connection: upgrade\r\nUpgrade: {upgrade}\r\n");
    }
    if let Some(handshake) = handshake {
        request += &format!("X-Tailscale-Handshake: {handshake}\r\n");
    }
    request + "Content-Length: 0\r\n\r\n"
}

fn base64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// Upgrades a TCP connection and runs the client handshake, as tailscaled does.
async fn connect_on<IO: AsyncRead + AsyncWrite + Unpin>(
    mut tcp: IO,
    server: &TestServer,
    machine: &PrivateKey,
    version: u16,
) -> Result<NoiseStream<IO>, noise::Error> {
    let (initiator, init) = Initiator::new(&server.key.public(), machine, version)?;
    let request = upgrade_request("POST", Some(UPGRADE_PROTOCOL), Some(&base64(&init)));
    tcp.write_all(request.as_bytes()).await?;
    let (status, headers) = read_head(&mut tcp).await;
    assert_eq!(status, 101);
    assert_eq!(header(&headers, "upgrade"), Some(UPGRADE_PROTOCOL));
    assert_eq!(
        header(&headers, "connection").map(str::to_ascii_lowercase),
        Some("upgrade".into())
    );
    tokio::time::timeout(WAIT, initiator.finish(tcp))
        .await
        .expect("handshake response in time")
}

/// A full client connection: upgrade, handshake, early payload, HTTP/2.
async fn connect(
    server: &TestServer,
    machine: &PrivateKey,
    version: u16,
) -> SendRequest<Full<Bytes>> {
    let tcp = TcpStream::connect(server.addr).await.unwrap();
    let mut stream = connect_on(tcp, server, machine, version).await.unwrap();
    let early = stream
        .read_early_payload()
        .await
        .unwrap()
        .expect("early payload");
    let early: serde_json::Value = serde_json::from_slice(&early).unwrap();
    assert!(
        early["nodeKeyChallenge"]
            .as_str()
            .unwrap()
            .starts_with("chalpub:")
    );
    let (sender, connection) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(connection);
    sender
}

async fn send_post(
    sender: &mut SendRequest<Full<Bytes>>,
    path: &str,
    body: impl Into<Bytes>,
) -> (StatusCode, Bytes) {
    let request = hyper::Request::post(format!("https://unused{path}"))
        .body(Full::new(body.into()))
        .unwrap();
    let response = tokio::time::timeout(WAIT, sender.send_request(request))
        .await
        .unwrap()
        .unwrap();
    let status = response.status();
    (
        status,
        response.into_body().collect().await.unwrap().to_bytes(),
    )
}

#[tokio::test]
async fn key_serves_the_noise_public_key_as_json() {
    let server = spawn_server().await;
    let (status, headers, body) = raw_exchange(
        server.addr,
        "GET /key?v=142 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(header(&headers, "content-type"), Some("application/json"));
    let json: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        json,
        serde_json::json!({
            "legacyPublicKey": format!("mkey:{}", "0".repeat(64)),
            "publicKey": server.key.public().to_string(),
        })
    );
}

#[tokio::test]
async fn malformed_upgrade_requests_are_refused() {
    let server = spawn_server().await;
    let init = Initiator::new(&server.key.public(), &PrivateKey::generate(), 142)
        .unwrap()
        .1;
    let good = base64(&init);
    let cases = [
        (None, Some(good.as_str()), 400, "reverse proxy"),
        (
            Some("h2c"),
            Some(good.as_str()),
            400,
            "unknown next protocol",
        ),
        (
            Some("WebSocket"),
            Some(good.as_str()),
            501,
            "WebSocket ts2021 is not supported yet",
        ),
        (
            Some(UPGRADE_PROTOCOL),
            None,
            400,
            "missing Tailscale handshake",
        ),
        (
            Some(UPGRADE_PROTOCOL),
            Some("!!not base64!!"),
            400,
            "invalid",
        ),
        (
            Some(UPGRADE_PROTOCOL),
            Some(&base64(&init[..100])),
            400,
            "invalid",
        ),
        (
            Some(UPGRADE_PROTOCOL),
            Some(&base64(&[init.as_slice(), b"x"].concat())),
            400,
            "invalid",
        ),
    ];
    for (upgrade, handshake, want_status, want_text) in cases {
        let request = upgrade_request("POST", upgrade, handshake);
        let (status, _, body) = raw_exchange(server.addr, &request).await;
        assert_eq!(status, want_status, "{upgrade:?} {handshake:?}: {body}");
        assert!(
            body.contains(want_text),
            "{upgrade:?} {handshake:?}: {body}"
        );
    }
}

#[tokio::test]
async fn the_upgrade_token_is_matched_case_insensitively_and_get_works() {
    let server = spawn_server().await;
    let machine = PrivateKey::generate();
    let (initiator, init) = Initiator::new(&server.key.public(), &machine, 142).unwrap();
    let mut tcp = TcpStream::connect(server.addr).await.unwrap();
    let request = upgrade_request(
        "GET",
        Some("Tailscale-Control-Protocol"),
        Some(&base64(&init)),
    );
    tcp.write_all(request.as_bytes()).await.unwrap();
    let (status, _) = read_head(&mut tcp).await;
    assert_eq!(status, 101);
    let mut stream = initiator.finish(&mut tcp).await.unwrap();
    assert!(stream.read_early_payload().await.unwrap().is_some());
}

#[tokio::test]
async fn requests_inside_noise_carry_the_noise_peer() {
    let server = spawn_server().await;
    for version in [113, 142] {
        let machine = PrivateKey::generate();
        let mut sender = connect(&server, &machine, version).await;
        let (status, body) = send_post(&mut sender, "/machine/whoami", "{}").await;
        assert_eq!(status, StatusCode::OK);
        let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "machine_key": public_of(&machine).to_string(),
                "version": version,
            })
        );
    }
}

#[tokio::test]
async fn many_streams_share_one_noise_connection() {
    let server = spawn_server().await;
    let machine = PrivateKey::generate();
    let sender = connect(&server, &machine, 142).await;
    let mut requests = tokio::task::JoinSet::new();
    for i in 0..40 {
        let mut sender = sender.clone();
        requests.spawn(async move {
            // Bodies of several records each, so frames and records interleave.
            let (status, body) =
                send_post(&mut sender, "/machine/length", vec![7u8; 5000 + i]).await;
            assert_eq!(status, StatusCode::OK);
            assert_eq!(body, (5000 + i).to_string());
        });
    }
    while let Some(done) = requests.join_next().await {
        done.unwrap();
    }
}

#[tokio::test]
async fn request_bodies_inside_noise_are_capped_at_one_mebibyte() {
    let server = spawn_server().await;
    let mut sender = connect(&server, &PrivateKey::generate(), 142).await;
    let (status, body) =
        send_post(&mut sender, "/machine/length", vec![0u8; NOISE_BODY_LIMIT]).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, NOISE_BODY_LIMIT.to_string());
    let (status, _) = send_post(
        &mut sender,
        "/machine/length",
        vec![0u8; NOISE_BODY_LIMIT + 1],
    )
    .await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
}

#[tokio::test]
async fn clients_too_old_for_noise_get_the_101_and_then_eof() {
    let server = spawn_server().await;
    let mut tcp = TcpStream::connect(server.addr).await.unwrap();
    // v1.78 (112) completes the handshake: registration tells it to update.
    assert!(
        connect_on(&mut tcp, &server, &PrivateKey::generate(), 112)
            .await
            .is_ok()
    );
    let mut tcp = TcpStream::connect(server.addr).await.unwrap();
    let err = connect_on(&mut tcp, &server, &PrivateKey::generate(), 38)
        .await
        .err()
        .unwrap();
    assert!(
        matches!(&err, noise::Error::Io(e) if e.kind() == std::io::ErrorKind::UnexpectedEof),
        "{err}"
    );

    let mut tcp = TcpStream::connect(server.addr).await.unwrap();
    assert!(
        connect_on(
            &mut tcp,
            &server,
            &PrivateKey::generate(),
            MIN_CAPABILITY_VERSION
        )
        .await
        .is_ok()
    );
}

#[tokio::test]
async fn a_handshake_for_a_stale_server_key_gets_eof() {
    let server = spawn_server().await;
    let stale = TestServer {
        addr: server.addr,
        key: Arc::new(ServerKey::from_private(&PrivateKey::generate())),
    };
    let mut tcp = TcpStream::connect(server.addr).await.unwrap();
    let err = connect_on(&mut tcp, &stale, &PrivateKey::generate(), 142)
        .await
        .err()
        .unwrap();
    assert!(matches!(err, noise::Error::Io(_)), "{err}");
}

#[tokio::test]
async fn garbage_on_one_connection_closes_only_that_connection() {
    let server = spawn_server().await;
    let mut healthy = connect(&server, &PrivateKey::generate(), 142).await;

    let mut tcp = TcpStream::connect(server.addr).await.unwrap();
    let stream = connect_on(&mut tcp, &server, &PrivateKey::generate(), 142)
        .await
        .unwrap();
    drop(stream);
    // Not a record: the server must drop this connection.
    tcp.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
        .await
        .unwrap();
    let mut sink = Vec::new();
    let closed = tokio::time::timeout(WAIT, tcp.read_to_end(&mut sink)).await;
    assert!(closed.is_ok(), "the server kept the broken connection open");

    let (status, _) = send_post(&mut healthy, "/machine/whoami", "{}").await;
    assert_eq!(status, StatusCode::OK);
}

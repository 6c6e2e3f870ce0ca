//! The control protocol through real sockets: `GET /key`, the `/ts2021` upgrade
//! written by hand over TCP (and its WebSocket form through a WebSocket client),
//! the handshake, then HTTP/2 inside Noise reaching a test router that reports
//! the `NoisePeer` it sees.

use super::noise::{self, Initiator, NoiseStream};
use super::*;
use crate::types::{MachineKey, PrivateKey};
use crate::websocket::test_client;
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
use tokio_tungstenite::tungstenite::error::ProtocolError;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

const WAIT: Duration = Duration::from_secs(10);

struct TestServer {
    addr: SocketAddr,
    key: Arc<ServerKey>,
}

async fn spawn_server() -> TestServer {
    let inner = Router::new().route("/machine/whoami", post(whoami)).route(
        "/machine/length",
        post(|body: Bytes| async move { body.len().to_string() }),
    );
    spawn_server_with(inner).await
}

async fn spawn_server_with(inner: Router) -> TestServer {
    let key = Arc::new(ServerKey::from_private(&PrivateKey::generate()));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let listener = listener.tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
    });
    // With the peer address, as the real listener gives it (the registration
    // rate limit counts per address).
    let app = public_routes(key.clone(), inner, crate::tasks::Tasks::new())
        .into_make_service_with_connect_info::<SocketAddr>();
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

/// Opens the WebSocket form of `/ts2021` with `query` (the `?…` part), offering
/// `protocol`.
async fn open_websocket(
    server: &TestServer,
    query: &str,
    protocol: Option<&str>,
) -> Result<test_client::Client, tokio_tungstenite::tungstenite::Error> {
    let (client, response) =
        test_client::connect(server.addr, &format!("/ts2021{query}"), protocol).await?;
    assert_eq!(response.status(), 101);
    Ok(client)
}

/// `?X-Tailscale-Handshake=<base64 init>`, percent-encoded as Go's `url.Values` does.
fn handshake_query(init: &[u8]) -> String {
    let encoded: String = url::form_urlencoded::byte_serialize(base64(init).as_bytes()).collect();
    format!("?{HANDSHAKE_PARAMETER}={encoded}")
}

/// A full browser-style connection: WebSocket with the handshake in the query,
/// the handshake response, no early payload, then HTTP/2.
async fn connect_websocket(
    server: &TestServer,
    machine: &PrivateKey,
    version: u16,
) -> SendRequest<Full<Bytes>> {
    let (initiator, init) = Initiator::new(&server.key.public(), machine, version).unwrap();
    let client = open_websocket(server, &handshake_query(&init), Some(UPGRADE_PROTOCOL))
        .await
        .unwrap();
    let bytes = test_client::bridge(client);
    let mut stream = tokio::time::timeout(WAIT, initiator.finish(bytes))
        .await
        .expect("handshake response in time")
        .unwrap();
    // The server's first plaintext is its HTTP/2 SETTINGS, not an early payload.
    assert_eq!(stream.read_early_payload().await.unwrap(), None);
    let (sender, connection) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(connection);
    sender
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
async fn websocket_clients_speak_http2_inside_noise_with_the_subprotocol_echoed() {
    let server = spawn_server().await;
    let machine = PrivateKey::generate();
    let (_, init) = Initiator::new(&server.key.public(), &machine, 142).unwrap();
    let (_, response) = test_client::connect(
        server.addr,
        &format!("/ts2021{}", handshake_query(&init)),
        Some(UPGRADE_PROTOCOL),
    )
    .await
    .unwrap();
    assert_eq!(
        response.headers()["sec-websocket-protocol"],
        UPGRADE_PROTOCOL
    );

    let mut sender = connect_websocket(&server, &machine, 142).await;
    let (status, body) = send_post(&mut sender, "/machine/whoami", "{}").await;
    assert_eq!(status, StatusCode::OK);
    let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(
        json,
        serde_json::json!({"machine_key": public_of(&machine).to_string(), "version": 142})
    );
    // Bodies of many records and many WebSocket messages, both ways.
    let (status, body) = send_post(&mut sender, "/machine/length", vec![1u8; 300_000]).await;
    assert_eq!((status, body), (StatusCode::OK, Bytes::from("300000")));
}

#[tokio::test]
async fn a_websocket_without_the_subprotocol_is_closed_as_a_policy_violation() {
    let server = spawn_server().await;
    let (_, init) = Initiator::new(&server.key.public(), &PrivateKey::generate(), 142).unwrap();
    let query = handshake_query(&init);

    let mut client = open_websocket(&server, &query, None).await.unwrap();
    let close = tokio::time::timeout(WAIT, test_client::next_close(&mut client))
        .await
        .unwrap()
        .expect("a close frame");
    assert_eq!(close.code, CloseCode::Policy);
    assert_eq!(close.reason, "client must speak the control subprotocol");

    // Another subprotocol is never selected, so the client fails the handshake
    // itself (as browsers do).
    let err = open_websocket(&server, &query, Some("chat"))
        .await
        .expect_err("the handshake fails");
    assert!(
        matches!(
            err,
            tokio_tungstenite::tungstenite::Error::Protocol(
                ProtocolError::SecWebSocketSubProtocolError(_)
            )
        ),
        "{err}"
    );

    // Upgrade: websocket is a GET, as Go's WebSocket library requires.
    let request = format!(
        "POST /ts2021{query} HTTP/1.1\r\nHost: x\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
         Sec-WebSocket-Protocol: {UPGRADE_PROTOCOL}\r\nContent-Length: 0\r\n\r\n"
    );
    let (status, _, _) = raw_exchange(server.addr, &request).await;
    assert_eq!(status, 405);
}

#[tokio::test]
async fn a_bad_websocket_handshake_closes_only_that_connection() {
    let server = spawn_server().await;
    let mut healthy = connect_websocket(&server, &PrivateKey::generate(), 142).await;

    let (_, init) = Initiator::new(&server.key.public(), &PrivateKey::generate(), 142).unwrap();
    let stale_key = ServerKey::from_private(&PrivateKey::generate()).public();
    let (_, stale) = Initiator::new(&stale_key, &PrivateKey::generate(), 142).unwrap();
    let cases = [
        (
            String::new(),
            CloseCode::Policy,
            "missing Tailscale handshake parameter",
        ),
        (
            format!("?{HANDSHAKE_PARAMETER}="),
            CloseCode::Policy,
            "missing Tailscale handshake parameter",
        ),
        (
            format!("?x-tailscale-handshake={}", base64(&init)),
            CloseCode::Policy,
            "missing Tailscale handshake parameter",
        ),
        (
            format!("?{HANDSHAKE_PARAMETER}=!!not-base64!!"),
            CloseCode::Policy,
            "invalid Tailscale handshake parameter",
        ),
        // Well-formed parameters whose handshakes fail: closed without a reason.
        (handshake_query(&init[..100]), CloseCode::Normal, ""),
        (handshake_query(&[0u8; 101]), CloseCode::Normal, ""),
        (handshake_query(&stale), CloseCode::Normal, ""),
    ];
    for (query, code, reason) in cases {
        let mut client = open_websocket(&server, &query, Some(UPGRADE_PROTOCOL))
            .await
            .unwrap();
        let close = tokio::time::timeout(WAIT, test_client::next_close(&mut client))
            .await
            .unwrap()
            .unwrap_or_else(|| panic!("{query}: no close frame"));
        assert_eq!(
            (close.code, close.reason.as_str()),
            (code, reason),
            "{query}"
        );
    }

    // Garbage after a good handshake ends that connection too.
    let (_, init) = Initiator::new(&server.key.public(), &PrivateKey::generate(), 142).unwrap();
    let client = open_websocket(&server, &handshake_query(&init), Some(UPGRADE_PROTOCOL))
        .await
        .unwrap();
    let mut bytes = test_client::bridge(client);
    let mut response = [0u8; noise::RESPONSE_LEN];
    bytes.read_exact(&mut response).await.unwrap();
    bytes
        .write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
        .await
        .unwrap();
    let mut sink = Vec::new();
    let closed = tokio::time::timeout(WAIT, bytes.read_to_end(&mut sink)).await;
    assert!(closed.is_ok(), "the server kept the broken connection open");

    let (status, _) = send_post(&mut healthy, "/machine/whoami", "{}").await;
    assert_eq!(status, StatusCode::OK);
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

/// The real `/machine/*` routes over a temp database, behind the real transport.
mod protocol {
    use super::*;
    use crate::config::Database;
    use crate::db::Db;
    use crate::derp::DerpMaps;
    use crate::state::{Settings, State};
    use crate::tailcfg::DERPMap;
    use crate::types::NodeKey;

    struct Rig {
        server: TestServer,
        state: Arc<State>,
        control: Control,
        _dir: tempfile::TempDir,
    }

    async fn rig() -> Rig {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(&Database::Sqlite {
            path: dir.path().join("db.sqlite"),
            write_ahead_log: true,
            wal_autocheckpoint: 1000,
        })
        .await
        .unwrap();
        let settings = Settings::for_test();
        let state = Arc::new(State::load(db, settings).await.unwrap());
        let map_settings = map::MapSettings {
            base_domain: "tailnet.test".into(),
            domain: "127.0.0.1".into(),
            dns: None,
            disable_log_tail: true,
            taildrop: true,
            auto_update: false,
            randomize_client_port: false,
            ..map::MapSettings::default()
        };
        let mut control = Control::new(
            state.clone(),
            DerpMaps::fixed(DERPMap::default()),
            map_settings,
            crate::config::ServerUrl::parse("http://127.0.0.1:1").unwrap(),
        );
        control.acme = Some(Arc::new(super::acme::AcmeRecords::new(Arc::new(
            crate::dns::Challenges::new(),
        ))));
        control.spawn_dispatcher();
        let server = spawn_server_with(control.machine_routes()).await;
        Rig {
            server,
            state,
            control,
            _dir: dir,
        }
    }

    impl Rig {
        /// A pre-auth key of a new user `default`.
        async fn preauth_key(
            &self,
            reusable: bool,
        ) -> crate::state::NewCredential<crate::types::PreAuthKey> {
            let (user, _) = self.state.create_user("default", "", "", "").await.unwrap();
            self.state
                .create_preauth_key(Some(user.id), reusable, false, None, &[])
                .await
                .unwrap()
        }
    }

    fn register_body(node_key: &NodeKey, auth_key: &str, hostname: &str) -> String {
        serde_json::json!({
            "Version": 142,
            "NodeKey": node_key.to_string(),
            "OldNodeKey": NodeKey::zero().to_string(),
            "Auth": {"AuthKey": auth_key},
            "Expiry": "0001-01-01T00:00:00Z",
            "Hostinfo": {"Hostname": hostname, "OS": "linux"},
        })
        .to_string()
    }

    fn map_body(node_key: &NodeKey, stream: bool) -> String {
        serde_json::json!({
            "Version": 142, "Compress": "zstd", "KeepAlive": true, "Stream": stream,
            "NodeKey": node_key.to_string(),
            "DiscoKey": format!("discokey:{}", "ab".repeat(32)),
            "Endpoints": ["192.0.2.1:41641"],
            // No Hostname: a hostname would rename the node (`tailscale set --hostname`).
            "Hostinfo": {"OS": "linux"},
        })
        .to_string()
    }

    /// A new machine registered as `hostname` with pre-auth key `key`: its Noise
    /// connection and node key.
    async fn registered(
        rig: &Rig,
        key: &str,
        hostname: &str,
    ) -> (SendRequest<Full<Bytes>>, NodeKey) {
        let mut sender = connect(&rig.server, &PrivateKey::generate(), 142).await;
        let node_key = NodeKey::from_bytes([7; 32]);
        let (status, _) = send_post(
            &mut sender,
            "/machine/register",
            register_body(&node_key, key, hostname),
        )
        .await;
        assert_eq!(status, StatusCode::OK);
        (sender, node_key)
    }

    /// Reads one framed map message from a streaming body.
    async fn next_message(
        body: &mut hyper::body::Incoming,
        pending: &mut Vec<u8>,
    ) -> serde_json::Value {
        loop {
            if let Some((json, used)) = frame::decode(pending).unwrap() {
                pending.drain(..used);
                return serde_json::from_slice(&json).unwrap();
            }
            let frame = tokio::time::timeout(WAIT, body.frame())
                .await
                .expect("a map message in time")
                .unwrap()
                .unwrap();
            if let Ok(data) = frame.into_data() {
                pending.extend_from_slice(&data);
            }
        }
    }

    #[tokio::test]
    async fn cached_peers_make_the_same_full_map_and_never_a_stale_one() {
        let rig = rig().await;
        let (user, _) = rig.state.create_user("default", "", "", "").await.unwrap();
        let key = rig
            .state
            .create_preauth_key(Some(user.id), true, false, None, &[])
            .await
            .unwrap()
            .record;
        let mut ids = Vec::new();
        for n in 1..=4u8 {
            let admission = crate::state::Admission {
                machine_key: MachineKey::from_bytes([n; 32]),
                node_key: NodeKey::from_bytes([n + 50; 32]),
                hostname: format!("host{n}"),
                hostinfo: None,
                advertised_routes: Vec::new(),
                user_id: Some(user.id),
                tags: Vec::new(),
                requested_tags: Vec::new(),
                ephemeral: false,
                register_method: crate::types::RegisterMethod::AuthKey,
                auth_key: Some(key.clone()),
                requested_expiry: None,
            };
            ids.push(rig.state.admit(admission).await.unwrap().0.id);
        }
        rig.state.session_opened(ids[1]);
        let fresh = |rig: &Rig| {
            let snapshot = rig.state.snapshot();
            let users = std::collections::HashMap::from([(user.id, user.clone())]);
            let online = |id| rig.state.is_online(id);
            let mut value = serde_json::to_value(
                rig.control
                    .inputs(&snapshot, &users, &online)
                    .full(ids[0], &DERPMap::default())
                    .unwrap(),
            )
            .unwrap();
            value.as_object_mut().unwrap().remove("ControlTime");
            value
        };
        let cached = |json: Vec<u8>| {
            let mut value: serde_json::Value = serde_json::from_slice(&json).unwrap();
            value.as_object_mut().unwrap().remove("ControlTime");
            value
        };
        let first = cached(rig.control.full_map_json(ids[0], 142).unwrap());
        assert_eq!(first, fresh(&rig));
        assert_eq!(first["Peers"].as_array().unwrap().len(), 3);
        assert_eq!(
            cached(rig.control.full_map_json(ids[0], 142).unwrap()),
            first,
            "served from the cache"
        );

        rig.state.rename_node(ids[2], "renamed").await.unwrap();
        rig.state.session_closed(ids[1]).await;
        let after = cached(rig.control.full_map_json(ids[0], 142).unwrap());
        assert_eq!(after, fresh(&rig));
        assert_eq!(after["Peers"][1]["Name"], "renamed.tailnet.test.");
        assert_eq!(
            after["Peers"][0]["Online"], false,
            "online state is part of the version"
        );
    }

    #[tokio::test]
    async fn bootstrap_dns_resolves_only_this_servers_own_names() {
        use tower::ServiceExt;
        let rig = rig().await;
        let get = |uri: &str| {
            let request = hyper::Request::get(uri)
                .body(axum::body::Body::empty())
                .unwrap();
            let routes = rig.control.bootstrap_routes();
            async move {
                let response = routes.oneshot(request).await.unwrap();
                assert_eq!(response.status(), StatusCode::OK);
                let body = response.into_body().collect().await.unwrap().to_bytes();
                serde_json::from_slice::<serde_json::Value>(&body).unwrap()
            }
        };
        let all = get("/bootstrap-dns").await;
        assert_eq!(all, serde_json::json!({"127.0.0.1": ["127.0.0.1"]}));
        assert_eq!(get("/bootstrap-dns?q=127.0.0.1.").await, all);
        assert_eq!(
            get("/bootstrap-dns?q=example.com").await,
            serde_json::json!({}),
            "not an open resolver"
        );
    }

    #[tokio::test]
    async fn set_dns_publishes_only_a_nodes_own_challenge_and_unknown_paths_are_501() {
        let rig = rig().await;
        let key = rig.preauth_key(true).await.secret;
        let (mut sender, node_key) = registered(&rig, &key, "laptop").await;
        let set_dns = |node_key: &NodeKey, name: &str, kind: &str, value: &str| {
            serde_json::json!({
                "Version": 142, "NodeKey": node_key.to_string(),
                "Name": name, "Type": kind, "Value": value,
            })
            .to_string()
        };
        let own = "_acme-challenge.laptop.tailnet.test";
        let published = || {
            rig.control
                .acme
                .as_ref()
                .unwrap()
                .challenges()
                .txt(own, std::time::Instant::now())
        };

        let (status, body) = send_post(
            &mut sender,
            "/machine/set-dns",
            set_dns(&node_key, own, "TXT", "tok3n"),
        )
        .await;
        assert_eq!((status, &body[..]), (StatusCode::OK, &b"{}"[..]));
        assert_eq!(published(), ["tok3n"]);

        for (request, status, says) in [
            (
                set_dns(
                    &node_key,
                    "_acme-challenge.desktop.tailnet.test",
                    "TXT",
                    "x",
                ),
                StatusCode::FORBIDDEN,
                "may only set _acme-challenge.laptop.tailnet.test",
            ),
            (
                set_dns(&node_key, "laptop.tailnet.test", "TXT", "x"),
                StatusCode::FORBIDDEN,
                "may only set",
            ),
            (
                set_dns(&node_key, own, "A", "100.64.0.1"),
                StatusCode::BAD_REQUEST,
                "only TXT records",
            ),
            (
                set_dns(&node_key, own, "TXT", ""),
                StatusCode::BAD_REQUEST,
                "",
            ),
            (
                set_dns(&NodeKey::from_bytes([9; 32]), own, "TXT", "x"),
                StatusCode::FORBIDDEN,
                "node not found",
            ),
            (
                "[1,2".into(),
                StatusCode::BAD_REQUEST,
                "invalid set-dns request",
            ),
        ] {
            let (got, body) = send_post(&mut sender, "/machine/set-dns", request.clone()).await;
            let body = String::from_utf8_lossy(&body);
            assert_eq!(got, status, "{request}: {body}");
            assert!(body.contains(says), "{request}: {body}");
        }
        assert_eq!(published(), ["tok3n"], "refusals change nothing");

        let audit = serde_json::json!({
            "Version": 142, "NodeKey": node_key.to_string(),
            "Action": "DISCONNECT_NODE", "Details": "maintenance",
        });
        let (status, _) = send_post(&mut sender, "/machine/audit-log", audit.to_string()).await;
        assert_eq!(status, StatusCode::OK);
        let (status, body) = send_post(&mut sender, "/machine/tka/init/begin", "{}").await;
        assert_eq!(status, StatusCode::NOT_IMPLEMENTED, "{body:?}");

        // A client that asks for no compression reads the JSON itself.
        let mut request: serde_json::Value =
            serde_json::from_str(&map_body(&node_key, false)).unwrap();
        request["Compress"] = "".into();
        let (status, body) = send_post(&mut sender, "/machine/map", request.to_string()).await;
        assert_eq!(status, StatusCode::OK);
        let len = u32::from_le_bytes(body[..4].try_into().unwrap()) as usize;
        let map: serde_json::Value = serde_json::from_slice(&body[4..4 + len]).unwrap();
        assert_eq!(map["Node"]["Name"], "laptop.tailnet.test.");

        // Renamed, the node no longer owns the name it published at: the record goes.
        let id = rig.state.snapshot().by_node_key(&node_key).unwrap().id;
        let (_, change) = rig.state.rename_node(id, "laptop-2").await.unwrap();
        rig.state.notifier().publish(change);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while !published().is_empty() {
            assert!(
                std::time::Instant::now() < deadline,
                "still published after a rename"
            );
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }

    #[tokio::test]
    async fn a_burst_of_joins_reaches_a_session_in_few_batches_and_none_is_lost() {
        let rig = rig().await;
        let key = rig.preauth_key(true).await.secret;
        let (mut sender, node_key) = registered(&rig, &key, "watcher").await;
        let (mut body, mut pending, _) = open_stream(&mut sender, &node_key).await;

        // Fifteen machines join back to back, each its own change (under the
        // registration limit of one source address).
        const JOINS: usize = 15;
        for n in 0..JOINS {
            let mut machine = connect(&rig.server, &PrivateKey::generate(), 142).await;
            let (status, _) = send_post(
                &mut machine,
                "/machine/register",
                register_body(
                    &NodeKey::from_bytes([100 + n as u8; 32]),
                    &key,
                    &format!("joiner{n}"),
                ),
            )
            .await;
            assert_eq!(status, StatusCode::OK);
        }
        let mut seen = std::collections::BTreeSet::new();
        let mut deltas = 0;
        while seen.len() < JOINS {
            let message = next_message(&mut body, &mut pending).await;
            if let Some(peers) = message["PeersChanged"].as_array() {
                deltas += 1;
                for peer in peers {
                    seen.insert(peer["Name"].as_str().unwrap().to_owned());
                }
            }
        }
        for n in 0..JOINS {
            assert!(
                seen.contains(&format!("joiner{n}.tailnet.test.")),
                "{seen:?}"
            );
        }
        assert!(
            deltas < JOINS,
            "joins that come while a batch is paced are merged: {deltas} deltas for {JOINS} joins"
        );
    }

    #[test]
    fn batches_are_paced_more_slowly_as_sessions_grow_within_bounds() {
        use crate::control::dispatch::batch_interval;
        assert_eq!(batch_interval(0), std::time::Duration::from_millis(50));
        assert_eq!(batch_interval(5000), std::time::Duration::from_millis(500));
        assert_eq!(batch_interval(1 << 40), std::time::Duration::from_secs(1));
        assert!(batch_interval(2000) < batch_interval(3000));
    }

    #[tokio::test]
    async fn bad_requests_get_clear_answers_and_valid_ones_a_map() {
        let rig = rig().await;
        let key = rig.preauth_key(true).await.secret;
        let machine = PrivateKey::generate();
        let mut sender = connect(&rig.server, &machine, 142).await;
        let node_key = NodeKey::from_bytes([7; 32]);

        let (status, _) = send_post(&mut sender, "/machine/register", "{not json").await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        let (status, body) = send_post(
            &mut sender,
            "/machine/register",
            register_body(&node_key, "hskey-auth-nope", "a"),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "register errors are 200 with Error");
        let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert!(
            body["Error"]
                .as_str()
                .unwrap()
                .contains("invalid pre-auth key"),
            "{body}"
        );

        let (_, body) = send_post(
            &mut sender,
            "/machine/register",
            register_body(&node_key, &key, "laptop"),
        )
        .await;
        let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(
            (body["MachineAuthorized"].clone(), body["Error"].clone()),
            (true.into(), "".into()),
            "{body}"
        );

        let (status, body) = send_post(
            &mut sender,
            "/machine/map",
            map_body(&NodeKey::from_bytes([9; 32]), false),
        )
        .await;
        assert_eq!(status, StatusCode::NOT_FOUND, "unknown node key: {body:?}");
        let (status, _) = send_post(&mut sender, "/machine/map", "[]").await;
        assert_eq!(status, StatusCode::BAD_REQUEST);

        // Another machine may not use this node's key.
        let mut intruder = connect(&rig.server, &PrivateKey::generate(), 142).await;
        let (status, body) =
            send_post(&mut intruder, "/machine/map", map_body(&node_key, false)).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert!(
            String::from_utf8_lossy(&body).contains("does not match"),
            "{body:?}"
        );

        // The stream: a full map first, then the delta for a node that joins.
        let (mut body, mut pending, first) = open_stream(&mut sender, &node_key).await;
        assert_eq!(first["Node"]["Name"], "laptop.tailnet.test.");
        assert_eq!(
            first["Node"]["Addresses"],
            serde_json::json!(["100.64.0.1/32", "fd7a:115c:a1e0::1/128"])
        );
        assert_eq!(first["Node"]["MachineAuthorized"], true);
        assert!(first.get("Peers").is_none(), "no empty Peers: {first}");
        assert_eq!(
            first["PacketFilters"]["base"][0]["SrcIPs"],
            serde_json::json!(["*"])
        );
        assert!(first["DERPMap"].is_object() && first["ControlTime"].is_string());
        assert_eq!(first["Debug"]["DisableLogTail"], true);
        let caps = &first["Node"]["CapMap"];
        assert_eq!(caps["default-auto-update"], serde_json::json!([false]));
        assert_eq!(caps["suggest-exit-node-ui"], serde_json::json!([]));

        let mut second = connect(&rig.server, &PrivateKey::generate(), 113).await;
        let other_key = NodeKey::from_bytes([8; 32]);
        send_post(
            &mut second,
            "/machine/register",
            register_body(&other_key, &key, "desktop"),
        )
        .await;
        let delta = loop {
            let message = next_message(&mut body, &mut pending).await;
            if message.get("PeersChanged").is_some() {
                break message;
            }
        };
        assert_eq!(delta["PeersChanged"][0]["Name"], "desktop.tailnet.test.");
        assert!(
            delta.get("Node").is_none() && delta.get("Peers").is_none(),
            "a delta, not a full map: {delta}"
        );
    }

    #[tokio::test]
    async fn registration_past_the_burst_gets_429_with_retry_after_and_maps_are_not_limited() {
        let rig = rig().await;
        let key = rig.preauth_key(true).await.secret;
        let mut sender = connect(&rig.server, &PrivateKey::generate(), 142).await;
        let node_key = NodeKey::from_bytes([3; 32]);
        let register = register_body(&node_key, &key, "busy");
        // The first attempt registers the node; the rest of the burst are restarts.
        for attempt in 0..REGISTER_BURST {
            let (status, body) =
                send_post(&mut sender, "/machine/register", register.clone()).await;
            assert_eq!(status, StatusCode::OK, "attempt {attempt}: {body:?}");
        }
        let post = |sender: &mut SendRequest<Full<Bytes>>, body: String| {
            let request = hyper::Request::post("https://unused/machine/register")
                .body(Full::new(Bytes::from(body)))
                .unwrap();
            sender.send_request(request)
        };
        let refused = post(&mut sender, register.clone()).await.unwrap();
        assert_eq!(refused.status(), StatusCode::TOO_MANY_REQUESTS);
        let retry_after: u64 = refused.headers()["retry-after"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        assert_eq!(retry_after, REGISTER_INTERVAL.as_secs());
        // The limit is the address's, not the connection's.
        let mut other = connect(&rig.server, &PrivateKey::generate(), 142).await;
        let other_key = NodeKey::from_bytes([4; 32]);
        let refused = post(&mut other, register_body(&other_key, &key, "other"))
            .await
            .unwrap();
        assert_eq!(refused.status(), StatusCode::TOO_MANY_REQUESTS);
        // Map polls are not counted.
        for _ in 0..3 {
            let (status, body) =
                send_post(&mut sender, "/machine/map", map_body(&node_key, false)).await;
            assert_eq!(status, StatusCode::OK, "{body:?}");
        }
        // After Retry-After, an attempt gets through and registers.
        tokio::time::sleep(Duration::from_secs(retry_after)).await;
        let (status, body) = send_post(
            &mut other,
            "/machine/register",
            register_body(&other_key, &key, "other"),
        )
        .await;
        assert_eq!(status, StatusCode::OK);
        let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(body["MachineAuthorized"], true, "{body}");
    }

    #[tokio::test]
    async fn a_websocket_client_registers_with_a_preauth_key() {
        let rig = rig().await;
        let key = rig.preauth_key(false).await.secret;
        let machine = PrivateKey::generate();
        let mut sender = connect_websocket(&rig.server, &machine, 142).await;
        let node_key = NodeKey::from_bytes([5; 32]);
        let (status, body) = send_post(
            &mut sender,
            "/machine/register",
            register_body(&node_key, &key, "browser"),
        )
        .await;
        assert_eq!(status, StatusCode::OK);
        let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(
            (body["MachineAuthorized"].clone(), body["Error"].clone()),
            (true.into(), "".into()),
            "{body}"
        );
        let node = rig.state.snapshot().by_node_key(&node_key).unwrap().clone();
        assert_eq!(node.machine_key, public_of(&machine));

        // And its map stream starts with a full map.
        let (_body, _pending, _) = open_stream(&mut sender, &node_key).await;
    }

    /// Opens a streaming map session on `sender`: its body, the bytes read past the
    /// first map, and that first map.
    async fn open_stream(
        sender: &mut SendRequest<Full<Bytes>>,
        node_key: &NodeKey,
    ) -> (hyper::body::Incoming, Vec<u8>, serde_json::Value) {
        let request = hyper::Request::post("https://unused/machine/map")
            .body(Full::new(Bytes::from(map_body(node_key, true))))
            .unwrap();
        let response = sender.send_request(request).await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        let mut body = response.into_body();
        let mut pending = Vec::new();
        let first = next_message(&mut body, &mut pending).await;
        assert!(first["Node"].is_object(), "a full map first: {first}");
        (body, pending, first)
    }

    /// Waits for a `PeersChanged` that carries the peer named `name`.
    async fn wait_peer_changed(
        body: &mut hyper::body::Incoming,
        pending: &mut Vec<u8>,
        name: &str,
    ) {
        wait_peer(body, pending, name, |_| true).await;
    }

    /// Waits for a delta whose `PeersChanged` carries peer `name` in a form that
    /// `wanted` accepts, and returns that peer.
    async fn wait_peer(
        body: &mut hyper::body::Incoming,
        pending: &mut Vec<u8>,
        name: &str,
        wanted: impl Fn(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        loop {
            let message = next_message(body, pending).await;
            let peers = message["PeersChanged"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            if let Some(peer) = peers.into_iter().find(|p| p["Name"] == name && wanted(p)) {
                assert!(message.get("Node").is_none(), "a delta: {message}");
                return peer;
            }
        }
    }

    #[tokio::test]
    async fn every_session_of_a_node_gets_deltas_and_it_stays_online_until_the_last_ends() {
        let rig = rig().await;
        let key = rig.preauth_key(true).await.secret;
        let machine = PrivateKey::generate();
        let node_key = NodeKey::from_bytes([7; 32]);
        let mut first_conn = connect(&rig.server, &machine, 142).await;
        send_post(
            &mut first_conn,
            "/machine/register",
            register_body(&node_key, &key, "laptop"),
        )
        .await;
        let node = rig.state.snapshot().by_node_key(&node_key).unwrap().id;
        // Two Noise connections of the same machine, one stream each.
        let mut second_conn = connect(&rig.server, &machine, 142).await;
        let (mut body_a, mut pending_a, _) = open_stream(&mut first_conn, &node_key).await;
        let (body_b, mut pending_b, _) = open_stream(&mut second_conn, &node_key).await;
        let mut body_b = Some(body_b);
        assert!(rig.state.is_online(node));

        let mut other = connect(&rig.server, &PrivateKey::generate(), 142).await;
        send_post(
            &mut other,
            "/machine/register",
            register_body(&NodeKey::from_bytes([8; 32]), &key, "desktop"),
        )
        .await;
        for (body, pending) in [
            (&mut body_a, &mut pending_a),
            (body_b.as_mut().unwrap(), &mut pending_b),
        ] {
            wait_peer_changed(body, pending, "desktop.tailnet.test.").await;
        }

        // One session ends: the node is still online through the other.
        drop(body_b.take());
        drop(second_conn);
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(rig.state.is_online(node), "one session is still open");
        let mut third = connect(&rig.server, &PrivateKey::generate(), 142).await;
        send_post(
            &mut third,
            "/machine/register",
            register_body(&NodeKey::from_bytes([6; 32]), &key, "tablet"),
        )
        .await;
        wait_peer_changed(&mut body_a, &mut pending_a, "tablet.tailnet.test.").await;

        // The last one ends: offline.
        drop(body_a);
        drop(first_conn);
        let deadline = tokio::time::Instant::now() + WAIT;
        while rig.state.is_online(node) {
            assert!(tokio::time::Instant::now() < deadline, "still online");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Scrapes `metrics_listen_addr`'s router over a real socket: the whole
    /// exposition text.
    async fn scrape(addr: SocketAddr) -> String {
        let (status, headers, body) = raw_exchange(
            addr,
            "GET /metrics HTTP/1.1\r\nHost: metrics\r\nConnection: close\r\n\r\n",
        )
        .await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(
            header(&headers, "content-type"),
            Some(crate::metrics::listener::OPENMETRICS)
        );
        body
    }

    fn value(text: &str, series: &str) -> f64 {
        crate::metrics::tests::sample(text, series)
            .unwrap_or_else(|| panic!("no sample {series} in\n{text}"))
    }

    #[tokio::test]
    async fn registrations_and_map_sessions_show_in_the_scraped_metrics() {
        let rig = rig().await;
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let metrics_addr = listener.local_addr().unwrap();
        let router = crate::metrics::listener::router(rig.state.metrics().clone());
        tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
        let authkey_success = "headway_registrations_total{method=\"authkey\",outcome=\"success\"}";
        let authkey_rejected =
            "headway_registrations_total{method=\"authkey\",outcome=\"rejected\"}";
        let before = scrape(metrics_addr).await;
        assert!(crate::metrics::tests::sample(&before, authkey_success).is_none());
        assert_eq!(value(&before, "headway_connected_nodes"), 0.0);

        // One registration with a good key, one with a key that does not exist.
        let key = rig.preauth_key(true).await.secret;
        let node_key = NodeKey::from_bytes([9; 32]);
        let mut conn = connect(&rig.server, &PrivateKey::generate(), 142).await;
        send_post(
            &mut conn,
            "/machine/register",
            register_body(&node_key, &key, "laptop"),
        )
        .await;
        let mut stranger = connect(&rig.server, &PrivateKey::generate(), 142).await;
        let (_, refused) = send_post(
            &mut stranger,
            "/machine/register",
            register_body(
                &NodeKey::from_bytes([10; 32]),
                "hskey-auth-nope-nope",
                "stranger",
            ),
        )
        .await;
        assert!(
            String::from_utf8_lossy(&refused).contains("Error"),
            "{refused:?}"
        );
        let (body, _pending, _) = open_stream(&mut conn, &node_key).await;

        let during = scrape(metrics_addr).await;
        assert_eq!(value(&during, authkey_success), 1.0);
        assert_eq!(value(&during, authkey_rejected), 1.0);
        assert_eq!(value(&during, "headway_connected_nodes"), 1.0);
        assert_eq!(value(&during, "headscale_nodestore_nodes"), 1.0);
        assert_eq!(value(&during, "headway_map_sessions_open"), 1.0);
        assert!(
            value(
                &during,
                "headscale_mapresponse_sent_total{status=\"ok\",type=\"full\"}"
            ) >= 1.0
        );
        assert!(
            value(
                &during,
                "headway_mapresponse_sent_bytes_total{type=\"full\"}"
            ) > 0.0
        );
        // Requests inside Noise are counted by route.
        assert_eq!(
            value(
                &during,
                "headscale_http_requests_total{code=\"200\",method=\"POST\",path=\"/machine/register\"}"
            ),
            2.0
        );
        // The registration wrote through a transaction, and reads ran.
        assert!(
            value(
                &during,
                "headway_db_statement_duration_seconds_count{on=\"transaction\"}"
            ) > 0.0
        );

        // The session ends: the node is no longer connected.
        drop(body);
        drop(conn);
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let after = scrape(metrics_addr).await;
            if value(&after, "headway_connected_nodes") == 0.0 {
                assert_eq!(value(&after, "headway_map_sessions_open"), 0.0);
                assert_eq!(
                    value(&after, "headscale_mapresponse_ended_total{reason=\"done\"}"),
                    1.0
                );
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "the node still counts as connected:\n{after}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// A router: registered, streaming, advertising `LAN` in its Hostinfo.
    async fn router(
        rig: &Rig,
        key: &str,
        seed: u8,
        hostname: &str,
    ) -> (
        crate::types::NodeId,
        SendRequest<Full<Bytes>>,
        hyper::body::Incoming,
    ) {
        let node_key = NodeKey::from_bytes([seed; 32]);
        let mut conn = connect(&rig.server, &PrivateKey::generate(), 142).await;
        send_post(
            &mut conn,
            "/machine/register",
            register_body(&node_key, key, hostname),
        )
        .await;
        let mut body: serde_json::Value = serde_json::from_str(&map_body(&node_key, true)).unwrap();
        body["Hostinfo"] =
            serde_json::json!({"Hostname": hostname, "OS": "linux", "RoutableIPs": [LAN]});
        let request = hyper::Request::post("https://unused/machine/map")
            .body(Full::new(Bytes::from(body.to_string())))
            .unwrap();
        let response = conn.send_request(request).await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        let id = rig.state.snapshot().by_node_key(&node_key).unwrap().id;
        (id, conn, response.into_body())
    }

    const LAN: &str = "192.168.100.0/24";

    fn serves_lan(peer: &serde_json::Value) -> bool {
        let has = |field: &str| {
            peer[field]
                .as_array()
                .is_some_and(|list| list.iter().any(|p| p == LAN))
        };
        has("PrimaryRoutes") && has("AllowedIPs")
    }

    #[tokio::test]
    async fn peers_learn_approved_routes_and_the_standby_router_when_the_primary_leaves() {
        let rig = rig().await;
        let key = rig.preauth_key(true).await.secret;
        let (first, first_conn, first_body) = router(&rig, &key, 21, "router-a").await;
        let (second, _second_conn, _second_body) = router(&rig, &key, 22, "router-b").await;
        let mut client = connect(&rig.server, &PrivateKey::generate(), 142).await;
        let client_key = NodeKey::from_bytes([23; 32]);
        send_post(
            &mut client,
            "/machine/register",
            register_body(&client_key, &key, "laptop"),
        )
        .await;
        let (mut body, mut pending, first_map) = open_stream(&mut client, &client_key).await;
        let peers = first_map["Peers"].as_array().unwrap();
        assert!(
            peers.iter().all(|p| !serves_lan(p)),
            "nothing is approved yet: {first_map}"
        );
        let publish = |change| rig.state.notifier().publish(change);

        // Approval reaches the client as a delta: AllowedIPs and PrimaryRoutes.
        for router in [first, second] {
            let (_, change) = rig
                .state
                .set_approved_routes(router, &[LAN.to_owned()])
                .await
                .unwrap();
            publish(change);
        }
        wait_peer(
            &mut body,
            &mut pending,
            "router-a.tailnet.test.",
            serves_lan,
        )
        .await;

        // The primary's session ends: the standby serves the prefix, and the client
        // is told about both routers.
        drop(first_body);
        drop(first_conn);
        wait_peer(
            &mut body,
            &mut pending,
            "router-b.tailnet.test.",
            serves_lan,
        )
        .await;
        assert_eq!(
            rig.state.snapshot().primary_for(&LAN.parse().unwrap()),
            Some(second)
        );
        assert!(rig.state.snapshot().primary_routes(first).is_empty());

        // Disabling the route takes it away from the client the same way.
        let (_, change) = rig.state.set_approved_routes(second, &[]).await.unwrap();
        publish(change);
        let peer = wait_peer(&mut body, &mut pending, "router-b.tailnet.test.", |p| {
            !serves_lan(p)
        })
        .await;
        assert!(
            !peer["AllowedIPs"]
                .as_array()
                .unwrap()
                .iter()
                .any(|p| p == LAN),
            "{peer}"
        );
    }
}

#[test]
fn clients_before_v1_82_get_the_pinned_relay_without_its_pin() {
    use crate::tailcfg::{DERPMap, DERPNode, DERPRegion};
    let node = DERPNode {
        name: "999".into(),
        region_id: 999,
        host_name: "203.0.113.5".into(),
        cert_name: "sha256-raw:00ff".into(),
        ..DERPNode::default()
    };
    let derp = std::sync::Arc::new(DERPMap {
        regions: [(
            999,
            DERPRegion {
                region_id: 999,
                nodes: vec![node],
                ..DERPRegion::default()
            },
        )]
        .into(),
        ..DERPMap::default()
    });
    let new = map::derp_map_for(&derp, 115);
    assert!(std::sync::Arc::ptr_eq(&new, &derp), "v1.82+ share the map");
    let old = map::derp_map_for(&derp, 113);
    let node = &old.regions[&999].nodes[0];
    assert_eq!(node.cert_name, "");
    assert!(node.insecure_for_tests);
    assert_eq!(node.host_name, "203.0.113.5");
}

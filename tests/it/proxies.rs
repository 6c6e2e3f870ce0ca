//! headway behind nginx and behind Caddy, each run with the configuration that
//! docs/reverse-proxy.md shows (support/web_proxy.rs), terminating TLS on a
//! loopback port with headway's `server_url` set to the proxy's URL:
//!
//! - official clients, the oldest and the newest pinned, log in through the
//!   proxy (`/key`, the `/ts2021` upgrade), see each other, and with UDP off
//!   (`TS_DEBUG_ALWAYS_USE_DERP`) carry pings and TCP through the embedded relay,
//!   which the DERP map places at the proxy's port (`/derp` upgrades through it);
//! - in process: the WebSocket forms of `/ts2021` (a registration inside Noise)
//!   and `/derp` (a DERP login), and the `Upgrade: DERP` form, through the proxy;
//! - `trusted_proxies`: a registration refused for a bad key is logged with the
//!   address the proxy saw (127.0.0.2) when the proxy is trusted, and with the
//!   proxy's own (127.0.0.1) when it is not.
//!
//! Plain HTTP in front would not do: clients speak DERP over TLS only, to the
//! host and port of `server_url`, so the proxy that carries `/derp` is the one
//! that terminates TLS.

use crate::clients::{assert_logged_in, assert_pings_via_derp, assert_tcp_crosses, sees_peer};
use crate::support::control_client::{Control, connect_from, post, register_body};
use crate::support::tailscale::{Client, free_port, versions};
use crate::support::web_proxy::{Kind, WebProxy};
use crate::support::{Spawn, TestServer, wait_until};
use futures_util::{SinkExt, StreamExt};
use headway::bench::derp_client::{self, Dialer, Io};
use headway::bench::node::{CAPVER, Target, fetch_server_key, upgrade};
use headway::control::noise::Initiator;
use headway::control::{HANDSHAKE_PARAMETER, UPGRADE_PROTOCOL};
use headway::relay::routes::WEBSOCKET_PROTOCOL as DERP_PROTOCOL;
use headway::types::{MachineKey, PrivateKey};
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, DuplexStream};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;

/// The address the in-process client connects from, so that the proxy's
/// `X-Forwarded-For` differs from the proxy's own address, 127.0.0.1.
const CLIENT_SOURCE: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 2);

#[test]
fn headway_works_behind_nginx() {
    works_behind(Kind::Nginx);
}

#[test]
fn headway_works_behind_caddy() {
    works_behind(Kind::Caddy);
}

/// Without `trusted_proxies`, headway takes the proxy for the client: the
/// forwarding headers anyone could send are not believed.
#[test]
fn forwarding_headers_of_an_untrusted_proxy_are_ignored() {
    let (server, proxy) = behind(Kind::Nginx, false);
    runtime().block_on(async {
        refused_registration_from(&server, &proxy, CLIENT_SOURCE).await;
        refused_relay_client_from(&proxy, CLIENT_SOURCE).await;
    });
    let (registration, relay) = refusal_lines(&server, &proxy);
    assert!(
        registration.contains("client=127.0.0.1:"),
        "without trusted_proxies the client is the proxy: {registration}"
    );
    assert!(
        relay.contains("remote=127.0.0.1:"),
        "without trusted_proxies the relay's client is the proxy: {relay}"
    );
}

/// headway on loopback with `server_url` = the proxy's URL and the embedded
/// relay on, `trusted_proxies` listing the proxy (127.0.0.1/32) or not, and
/// `kind` in front of it.
fn behind(kind: Kind, trusted: bool) -> (TestServer, WebProxy) {
    let port = free_port();
    let trusted_proxies = if trusted {
        "trusted_proxies: [127.0.0.1/32]\n"
    } else {
        ""
    };
    let server = TestServer::spawn_with(Spawn {
        server_url: Some(format!("https://127.0.0.1:{port}")),
        extra_config: format!("{trusted_proxies}derp:\n  server:\n    enabled: true\n"),
        ..Spawn::default()
    });
    let proxy = WebProxy::start(kind, port, &server.http_addr);
    (server, proxy)
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

fn works_behind(kind: Kind) {
    let (server, proxy) = behind(kind, true);
    let context = || {
        format!(
            "--- headway ---\n{}\n--- {kind} ---\n{}",
            server.log(),
            proxy.log()
        )
    };

    // Official clients, oldest and newest, know only the proxy's URL and trust
    // only its certificate; with UDP off every packet crosses the relay.
    let versions = versions();
    let (oldest, newest) = (versions.first().unwrap(), versions.last().unwrap());
    let cert = proxy.cert_path().display().to_string();
    let env = [
        ("SSL_CERT_FILE", cert.as_str()),
        ("TS_DEBUG_ALWAYS_USE_DERP", "true"),
    ];
    let key = server.reusable_key("proxied", &[]);
    let a = Client::start_with_env(oldest, "node-a", &env);
    let b = Client::start_with_env(newest, "node-b", &env);
    for client in [&a, &b] {
        let up = client.up_with_key(&proxy.url(), &key);
        assert!(up.code == 0, "{kind}: {up:?}\n{}", context());
        assert_logged_in(client, &up);
    }
    let (ip_a, ip_b) = (a.ipv4(), b.ipv4());
    a.wait_status("node-b", Duration::from_secs(30), |s| {
        sees_peer(s, "node-b", &ip_b)
    });
    b.wait_status("node-a", Duration::from_secs(30), |s| {
        sees_peer(s, "node-a", &ip_a)
    });
    // The relay is where the clients reach the server: at the proxy.
    for client in [&a, &b] {
        let map: serde_json::Value =
            serde_json::from_str(&client.cli(&["debug", "derp-map"]).ok().stdout).unwrap();
        let node = &map["Regions"]["999"]["Nodes"][0];
        assert_eq!(
            (node["HostName"].as_str(), node["DERPPort"].as_u64()),
            (Some("127.0.0.1"), Some(u64::from(proxy.port()))),
            "{kind}: {} ({}) relay map: {map:#}",
            client.name,
            client.version
        );
        assert_eq!(client.status()["Self"]["Relay"], "headway", "{kind}");
    }
    assert_pings_via_derp(&a, &ip_b, "headway", 10, &context());
    assert_pings_via_derp(&b, &ip_a, "headway", 10, &context());
    let pair = format!("{kind}, {oldest} and {newest}");
    assert_tcp_crosses(&a, &ip_b, &pair);
    assert_tcp_crosses(&b, &ip_a, &pair);

    // The WebSocket forms, and Upgrade: DERP from a client of our own.
    let runtime = runtime();
    runtime.block_on(async {
        let node = PrivateKey::generate();
        let registered = register_over_websocket(&server, &proxy, &node, &key).await;
        assert!(
            registered.contains(r#""MachineAuthorized":true"#),
            "{kind}: registration over the /ts2021 WebSocket: {registered}\n{}",
            context()
        );
        let ws = websocket(&proxy, Ipv4Addr::LOCALHOST, "/derp", DERP_PROTOCOL).await;
        let io: Box<dyn Io> = Box::new(bridge(ws));
        derp_client::log_in(io, &node).await.unwrap_or_else(|e| {
            panic!(
                "{kind}: DERP login over the /derp WebSocket: {e:#}\n{}",
                context()
            )
        });
        let dialer = Dialer::new(&proxy.url(), Some(proxy.cert_path().as_path()))
            .await
            .unwrap();
        dialer.login(&node).await.unwrap_or_else(|e| {
            panic!(
                "{kind}: DERP login with Upgrade: DERP: {e:#}\n{}",
                context()
            )
        });

        refused_registration_from(&server, &proxy, CLIENT_SOURCE).await;
        refused_relay_client_from(&proxy, CLIENT_SOURCE).await;
    });
    // A trusted proxy's X-Forwarded-For names the client, to the control
    // protocol and to the relay.
    let (registration, relay) = refusal_lines(&server, &proxy);
    assert!(
        registration.contains(&format!("client={CLIENT_SOURCE}:")),
        "{kind}: with trusted_proxies the client is the address the proxy saw: {registration}"
    );
    assert!(
        relay.contains(&format!("remote={CLIENT_SOURCE}:")),
        "{kind}: with trusted_proxies the relay's client is the address the proxy saw: {relay}"
    );
}

/// Registers `node` with `auth_key` over the WebSocket form of `/ts2021`
/// through the proxy (the Noise handshake in the query, then HTTP/2 inside
/// Noise inside WebSocket messages); returns the `RegisterResponse` body.
async fn register_over_websocket(
    server: &TestServer,
    proxy: &WebProxy,
    node: &PrivateKey,
    auth_key: &str,
) -> String {
    let (initiator, init) =
        Initiator::new(&server_key(server).await, &PrivateKey::generate(), CAPVER).unwrap();
    let handshake = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, init);
    let query: String = url::form_urlencoded::byte_serialize(handshake.as_bytes()).collect();
    let ws = websocket(
        proxy,
        Ipv4Addr::LOCALHOST,
        &format!("/ts2021?{HANDSHAKE_PARAMETER}={query}"),
        UPGRADE_PROTOCOL,
    )
    .await;
    let mut stream = initiator.finish(bridge(ws)).await.unwrap();
    assert_eq!(
        stream.read_early_payload().await.unwrap(),
        None,
        "the WebSocket form has no early payload"
    );
    let (mut control, connection) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(connection);
    let node_key = headway::relay::frame::public_key(node);
    let response = post(
        &mut control,
        "/machine/register",
        register_body(&node_key, auth_key),
    )
    .await;
    String::from_utf8_lossy(response.body()).into_owned()
}

/// A registration with a key that does not exist, over the `/ts2021` upgrade
/// through the proxy from `source`: headway logs the refusal with the client's
/// address as it believes it.
async fn refused_registration_from(server: &TestServer, proxy: &WebProxy, source: Ipv4Addr) {
    let target = Target {
        addr: proxy.addr(),
        host: format!("127.0.0.1:{}", proxy.port()),
        server_key: server_key(server).await,
    };
    let tls = tls_from(proxy, source).await;
    let stream = upgrade(tls, &target, &PrivateKey::generate())
        .await
        .unwrap_or_else(|e| panic!("{}: /ts2021 upgrade: {e:#}\n{}", proxy.kind, proxy.log()));
    let (mut control, connection): (Control, _) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(connection);
    let node_key = headway::relay::frame::public_key(&PrivateKey::generate());
    let bogus = format!("hskey-auth-{}-{}", "a".repeat(12), "b".repeat(64));
    let response = post(
        &mut control,
        "/machine/register",
        register_body(&node_key, &bogus),
    )
    .await;
    let body = String::from_utf8_lossy(response.body()).into_owned();
    assert!(
        body.contains(r#""Error":""#),
        "a bogus key is refused: {body}"
    );
}

/// A DERP login over the `/derp` WebSocket through the proxy from `source`
/// with a key of no node: the relay (which verifies its clients) logs the
/// refusal with the client's address as it believes it.
async fn refused_relay_client_from(proxy: &WebProxy, source: Ipv4Addr) {
    let ws = websocket(proxy, source, "/derp", DERP_PROTOCOL).await;
    let io: Box<dyn Io> = Box::new(bridge(ws));
    let login = derp_client::log_in(io, &PrivateKey::generate()).await;
    assert!(
        login.is_err(),
        "{}: a stranger logged in to the relay",
        proxy.kind
    );
}

/// The one "refused a registration" line and the one line of the relay
/// refusing a stranger in `server`'s log.
fn refusal_lines(server: &TestServer, proxy: &WebProxy) -> (String, String) {
    let lines = |marker: &str| -> Vec<String> {
        server
            .log()
            .lines()
            .filter(|l| l.contains(marker))
            .map(str::to_owned)
            .collect()
    };
    let markers = [
        "refused a registration",
        "refused a DERP client that may not use this relay",
    ];
    wait_until("both refusals in the log", Duration::from_secs(10), || {
        markers.iter().all(|m| !lines(m).is_empty())
    });
    let [registration, relay] = markers.map(|marker| {
        let found = lines(marker);
        assert_eq!(found.len(), 1, "{}: one {marker:?}: {found:?}", proxy.kind);
        found[0].clone()
    });
    (registration, relay)
}

/// The server's Noise key, read from its own listener (`/key` through the
/// proxy is what the official clients above read).
async fn server_key(server: &TestServer) -> MachineKey {
    let addr: SocketAddr = server.http_addr.parse().unwrap();
    fetch_server_key(addr, &server.http_addr).await.unwrap()
}

/// TLS to the proxy from the loopback address `source`, trusting only the
/// proxy's certificate.
async fn tls_from(proxy: &WebProxy, source: Ipv4Addr) -> TlsStream<TcpStream> {
    let tcp = connect_from(source, proxy.addr()).await.unwrap();
    tcp.set_nodelay(true).unwrap();
    let trust = headway::tls_trust::Trust::Only(CertificateDer::from(proxy.cert_der().to_vec()));
    let config = headway::tls_trust::client_config(trust, &[b"http/1.1"]).unwrap();
    TlsConnector::from(Arc::new(config))
        .connect(ServerName::from(IpAddr::V4(Ipv4Addr::LOCALHOST)), tcp)
        .await
        .unwrap_or_else(|e| panic!("{}: TLS: {e}\n{}", proxy.kind, proxy.log()))
}

/// A WebSocket to `path_and_query` through the proxy from `source`, offering
/// `protocol`, which the server must accept.
async fn websocket(
    proxy: &WebProxy,
    source: Ipv4Addr,
    path_and_query: &str,
    protocol: &str,
) -> tokio_tungstenite::WebSocketStream<TlsStream<TcpStream>> {
    let mut request = format!("wss://127.0.0.1:{}{path_and_query}", proxy.port())
        .into_client_request()
        .unwrap();
    request.headers_mut().insert(
        "sec-websocket-protocol",
        HeaderValue::from_str(protocol).unwrap(),
    );
    let tls = tls_from(proxy, source).await;
    let (ws, response) = tokio_tungstenite::client_async(request, tls)
        .await
        .unwrap_or_else(|e| {
            panic!(
                "{}: WebSocket {path_and_query}: {e}\n{}",
                proxy.kind,
                proxy.log()
            )
        });
    assert_eq!(response.status(), 101);
    ws
}

/// A WebSocket as a byte stream: each write goes out as one binary message,
/// binary messages that arrive are read in order; a close ends the stream.
fn bridge<S>(ws: tokio_tungstenite::WebSocketStream<S>) -> DuplexStream
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (ours, theirs) = tokio::io::duplex(256 * 1024);
    tokio::spawn(async move {
        let (mut sink, mut messages) = ws.split();
        let (mut reader, mut writer) = tokio::io::split(theirs);
        let outbound = async {
            let mut buf = vec![0u8; 16 * 1024];
            while let Ok(n @ 1..) = reader.read(&mut buf).await {
                let message = Message::Binary(buf[..n].to_vec().into());
                if sink.send(message).await.is_err() {
                    break;
                }
            }
            let _ = sink.close().await;
        };
        let inbound = async {
            while let Some(Ok(message)) = messages.next().await {
                let written = match message {
                    Message::Binary(bytes) => writer.write_all(&bytes).await,
                    Message::Close(_) => break,
                    _ => Ok(()),
                };
                if written.is_err() {
                    break;
                }
            }
            let _ = writer.shutdown().await;
        };
        tokio::join!(outbound, inbound);
    });
    ours
}

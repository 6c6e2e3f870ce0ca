//! Tests of the DERP relay through its real surface: a relay served by axum on
//! 127.0.0.1, and test clients that do the HTTP upgrade (or open a WebSocket)
//! and the DERP login by hand, with frame bytes spelled out from the protocol
//! rather than borrowed from `frame.rs`.

use super::frame::{
    self, ClientInfo, FrameError, FrameReader, FrameType, FrameWriter, MAX_FRAME_LEN,
    PeerGoneReason,
};
use super::{Admission, AdmitAll, Relay, routes};
use crate::types::{NodeKey, PrivateKey};
use crate::websocket::test_client;
use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use crypto_box::aead::Aead;
use crypto_box::{Nonce, PublicKey, SalsaBox, SecretKey};
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tower::ServiceExt;

// Frame types as protocol.md §9.2 lists them.
const SERVER_KEY: u8 = 0x01;
const CLIENT_INFO: u8 = 0x02;
const SERVER_INFO: u8 = 0x03;
const SEND_PACKET: u8 = 0x04;
const RECV_PACKET: u8 = 0x05;
const KEEP_ALIVE: u8 = 0x06;
const NOTE_PREFERRED: u8 = 0x07;
const PEER_GONE: u8 = 0x08;
const WATCH_CONNS: u8 = 0x10;
const PING: u8 = 0x12;
const PONG: u8 = 0x13;
const HEALTH: u8 = 0x14;
const MAGIC: [u8; 8] = [0x44, 0x45, 0x52, 0x50, 0xF0, 0x9F, 0x94, 0x91];
const MAX_PACKET: usize = 64 * 1024;

/// How long any one step may take before the test is declared hung. A guard
/// against hangs, not a performance bound.
const HANG_GUARD: Duration = Duration::from_secs(10);

async fn guarded<F: Future>(what: &str, future: F) -> F::Output {
    match tokio::time::timeout(HANG_GUARD, future).await {
        Ok(output) => output,
        Err(_) => panic!("hung: {what}"),
    }
}

// ---------------------------------------------------------------------------
// Harness: a relay on a real port, and a hand-written DERP client.
// ---------------------------------------------------------------------------

struct TestRelay {
    relay: Arc<Relay>,
    addr: SocketAddr,
}

async fn spawn_relay(admission: Arc<dyn Admission>) -> TestRelay {
    spawn_relay_with(admission, crate::metrics::RelayMetrics::default()).await
}

async fn spawn_relay_with(
    admission: Arc<dyn Admission>,
    metrics: crate::metrics::RelayMetrics,
) -> TestRelay {
    let relay = Relay::with_metrics(PrivateKey::generate(), admission, metrics);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = routes(Arc::clone(&relay), crate::tasks::Tasks::new())
        .into_make_service_with_connect_info::<SocketAddr>();
    tokio::spawn(async move { axum::serve(listener, app).await });
    TestRelay { relay, addr }
}

impl TestRelay {
    /// Waits until the relay counts `n` logged-in connections.
    async fn wait_for_clients(&self, n: usize) {
        guarded(&format!("waiting for {n} connected clients"), async {
            while self.relay.connected_clients() != n {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await;
    }
}

/// Admits everyone except one key.
struct RefuseOne(NodeKey);

impl Admission for RefuseOne {
    fn admits(&self, client: &NodeKey) -> bool {
        *client != self.0
    }
}

fn new_secret() -> SecretKey {
    SecretKey::from_bytes(*PrivateKey::generate().as_bytes())
}

fn node_key(secret: &SecretKey) -> NodeKey {
    NodeKey::from_bytes(secret.public_key().to_bytes())
}

/// The 101 response of a hand-made upgrade: status code and lower-cased headers.
struct UpgradeResponse {
    status: u16,
    headers: Vec<(String, String)>,
}

impl UpgradeResponse {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Sends `GET /derp` with `Upgrade: DERP` and reads the response head byte by
/// byte, so that no DERP byte after it is consumed.
async fn upgrade(stream: &mut TcpStream) -> UpgradeResponse {
    upgrade_with(stream, "GET").await
}

async fn upgrade_with(stream: &mut TcpStream, method: &str) -> UpgradeResponse {
    let request = format!(
        "{method} /derp HTTP/1.1\r\nHost: relay.test\r\nUpgrade: DERP\r\nConnection: Upgrade\r\nContent-Length: 0\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut head = Vec::new();
    guarded("reading the upgrade response", async {
        while !head.ends_with(b"\r\n\r\n") {
            head.push(stream.read_u8().await.unwrap());
        }
    })
    .await;
    let head = String::from_utf8(head).unwrap();
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap();
    let status = status_line.split(' ').nth(1).unwrap().parse().unwrap();
    let headers = lines
        .filter(|line| !line.is_empty())
        .map(|line| {
            let (name, value) = line.split_once(':').unwrap();
            (name.trim().to_ascii_lowercase(), value.trim().to_owned())
        })
        .collect();
    UpgradeResponse { status, headers }
}

/// Whatever carries a test client's DERP bytes: TCP after `Upgrade: DERP`, or a
/// WebSocket bridged to a byte stream.
trait Transport: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Transport for T {}

struct TestClient {
    stream: Box<dyn Transport>,
    secret: SecretKey,
    key: NodeKey,
    server_key: NodeKey,
}

impl TestClient {
    /// Upgrades and logs in with a fresh key.
    async fn connect(relay: &TestRelay) -> TestClient {
        TestClient::connect_as(relay, new_secret()).await
    }

    /// Upgrades and logs in with `secret`, checking the ServerInfo.
    async fn connect_as(relay: &TestRelay, secret: SecretKey) -> TestClient {
        let mut client = TestClient::greeted(relay, secret).await;
        client.log_in().await;
        client
    }

    /// Sends the ClientInfo and checks the ServerInfo.
    async fn log_in(&mut self) {
        let payload = self.client_info_payload(br#"{"version":2,"CanAckPings":true}"#);
        self.send(CLIENT_INFO, &payload).await;
        let (kind, payload) = self.recv().await.expect("ServerInfo");
        assert_eq!(kind, SERVER_INFO);
        assert_eq!(self.open_server_info(&payload), r#"{"version":2}"#);
    }

    /// Upgrades and reads the greeting, without logging in.
    async fn greeted(relay: &TestRelay, secret: SecretKey) -> TestClient {
        let stream = TcpStream::connect(relay.addr).await.unwrap();
        TestClient::greeted_on(stream, relay, secret).await
    }

    async fn greeted_on(mut stream: TcpStream, relay: &TestRelay, secret: SecretKey) -> TestClient {
        let response = upgrade(&mut stream).await;
        assert_eq!(response.status, 101);
        TestClient::greeted_over(Box::new(stream), relay, secret).await
    }

    /// Opens `/derp` as a WebSocket with subprotocol `derp` and logs in with a
    /// fresh key, as browser clients do.
    async fn connect_websocket(relay: &TestRelay) -> TestClient {
        let (socket, response) = test_client::connect(relay.addr, "/derp", Some("derp"))
            .await
            .unwrap();
        assert_eq!(response.status(), 101);
        assert_eq!(response.headers()["sec-websocket-protocol"], "derp");
        let stream = Box::new(test_client::bridge(socket));
        let mut client = TestClient::greeted_over(stream, relay, new_secret()).await;
        client.log_in().await;
        client
    }

    /// Reads the greeting on an upgraded `stream`.
    async fn greeted_over(
        stream: Box<dyn Transport>,
        relay: &TestRelay,
        secret: SecretKey,
    ) -> TestClient {
        let key = node_key(&secret);
        let mut client = TestClient {
            stream,
            secret,
            key,
            server_key: relay.relay.public_key(),
        };
        let (kind, payload) = client.recv().await.expect("ServerKey");
        assert_eq!(kind, SERVER_KEY);
        assert_eq!(payload.len(), 40);
        assert_eq!(payload[..8], MAGIC);
        assert_eq!(payload[8..], relay.relay.public_key().as_bytes()[..]);
        client
    }

    /// Client key ‖ nonce ‖ box(json) to the server key.
    fn client_info_payload(&self, json: &[u8]) -> Vec<u8> {
        let nonce = [7u8; 24];
        let sealed = SalsaBox::new(
            &PublicKey::from_bytes(*self.server_key.as_bytes()),
            &self.secret,
        )
        .encrypt(&Nonce::from(nonce), json)
        .unwrap();
        [self.key.as_bytes().as_slice(), &nonce, &sealed].concat()
    }

    fn open_server_info(&self, payload: &[u8]) -> String {
        let (nonce, sealed) = payload.split_at(24);
        let json = SalsaBox::new(
            &PublicKey::from_bytes(*self.server_key.as_bytes()),
            &self.secret,
        )
        .decrypt(Nonce::from_slice(nonce), sealed)
        .expect("ServerInfo opens with the client's key");
        String::from_utf8(json).unwrap()
    }

    async fn send_raw(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.unwrap();
    }

    async fn send(&mut self, kind: u8, payload: &[u8]) {
        let mut frame = vec![kind];
        frame.extend_from_slice(&(payload.len() as u32).to_be_bytes());
        frame.extend_from_slice(payload);
        self.send_raw(&frame).await;
    }

    async fn send_packet(&mut self, dst: &NodeKey, packet: &[u8]) {
        self.send(SEND_PACKET, &[dst.as_bytes().as_slice(), packet].concat())
            .await;
    }

    /// The next frame, or `None` once the relay closed the connection.
    async fn recv(&mut self) -> Option<(u8, Vec<u8>)> {
        guarded("reading a frame", async {
            let mut header = [0u8; 5];
            if self.stream.read_exact(&mut header).await.is_err() {
                return None;
            }
            let len = u32::from_be_bytes([header[1], header[2], header[3], header[4]]);
            let mut payload = vec![0u8; len as usize];
            self.stream.read_exact(&mut payload).await.ok()?;
            Some((header[0], payload))
        })
        .await
    }

    /// The next frame that is not a keep-alive.
    async fn recv_skipping_keep_alives(&mut self) -> (u8, Vec<u8>) {
        loop {
            let (kind, payload) = self.recv().await.expect("a frame, not a closed connection");
            if kind != KEEP_ALIVE {
                return (kind, payload);
            }
        }
    }

    /// The next packet: its source and bytes.
    async fn recv_packet(&mut self) -> (NodeKey, Vec<u8>) {
        let (kind, payload) = self.recv_skipping_keep_alives().await;
        assert_eq!(kind, RECV_PACKET, "expected RecvPacket, got {kind:#04x}");
        let (src, packet) = payload.split_at(32);
        (
            NodeKey::from_bytes(src.try_into().unwrap()),
            packet.to_vec(),
        )
    }

    /// Sends a ping and expects its pong as the next frame: nothing else was queued.
    async fn ping_pong(&mut self, data: [u8; 8]) {
        self.send(PING, &data).await;
        let (kind, payload) = self.recv_skipping_keep_alives().await;
        assert_eq!(kind, PONG, "expected Pong, got {kind:#04x} {payload:?}");
        assert_eq!(payload, data);
    }

    /// Reads until the relay closes the connection; returns the frame types seen.
    async fn expect_closed(&mut self) -> Vec<u8> {
        let mut seen = Vec::new();
        while let Some((kind, _)) = self.recv().await {
            seen.push(kind);
        }
        seen
    }
}

/// A packet that looks like a disco message (`TS💬` ‖ key ‖ nonce ‖ …).
fn disco_packet() -> Vec<u8> {
    let mut packet = vec![0x54, 0x53, 0xF0, 0x9F, 0x92, 0xAC];
    packet.extend_from_slice(&[1u8; 32 + 24 + 16]);
    packet
}

/// Two fresh clients can still exchange a packet.
async fn assert_still_relays(relay: &TestRelay) {
    let mut a = TestClient::connect(relay).await;
    let mut b = TestClient::connect(relay).await;
    a.send_packet(&b.key, b"still here").await;
    assert_eq!(b.recv_packet().await, (a.key, b"still here".to_vec()));
}

// ---------------------------------------------------------------------------
// Upgrade and login.
// ---------------------------------------------------------------------------

#[tokio::test]
async fn upgrade_answers_101_with_the_relay_key_then_greets_and_logs_in() {
    let relay = spawn_relay(Arc::new(AdmitAll)).await;
    let mut stream = TcpStream::connect(relay.addr).await.unwrap();
    let response = upgrade(&mut stream).await;
    assert_eq!(response.status, 101);
    assert!(
        response
            .header("upgrade")
            .unwrap()
            .eq_ignore_ascii_case("DERP")
    );
    assert!(
        response
            .header("connection")
            .unwrap()
            .eq_ignore_ascii_case("upgrade")
    );
    assert_eq!(response.header("derp-version"), Some("2"));
    assert_eq!(
        response.header("derp-public-key"),
        Some(relay.relay.public_key().untyped_hex().as_str())
    );
    drop(stream);

    let client = TestClient::connect(&relay).await;
    relay.wait_for_clients(1).await;
    drop(client);
    relay.wait_for_clients(0).await;

    // Any method that carries the upgrade is one, as Tailscale's derper takes it.
    let mut stream = TcpStream::connect(relay.addr).await.unwrap();
    assert_eq!(upgrade_with(&mut stream, "POST").await.status, 101);
}

#[tokio::test]
async fn a_refused_client_is_closed_after_its_client_info_without_server_info() {
    let refused = new_secret();
    let relay = spawn_relay(Arc::new(RefuseOne(node_key(&refused)))).await;
    let mut client = TestClient::greeted(&relay, refused).await;
    let payload = client.client_info_payload(br#"{"version":2}"#);
    client.send(CLIENT_INFO, &payload).await;
    assert_eq!(client.expect_closed().await, Vec::<u8>::new());
    assert_eq!(relay.relay.connected_clients(), 0);

    let _admitted = TestClient::connect(&relay).await;
    assert_eq!(relay.relay.connected_clients(), 1);
}

// ---------------------------------------------------------------------------
// Relaying.
// ---------------------------------------------------------------------------

#[tokio::test]
async fn a_packet_from_a_reaches_b_with_a_key() {
    let relay = spawn_relay(Arc::new(AdmitAll)).await;
    let mut a = TestClient::connect(&relay).await;
    let mut b = TestClient::connect(&relay).await;
    assert_eq!(relay.relay.connected_clients(), 2);

    a.send_packet(&b.key, b"hello b").await;
    assert_eq!(b.recv_packet().await, (a.key, b"hello b".to_vec()));

    let largest = vec![0xAB; MAX_PACKET];
    b.send_packet(&a.key, &largest).await;
    assert_eq!(a.recv_packet().await, (b.key, largest));
}

#[tokio::test]
async fn clients_and_forwarded_and_dropped_packets_are_counted() {
    let metrics = crate::metrics::Metrics::new();
    let relay = spawn_relay_with(Arc::new(AdmitAll), metrics.relay.clone()).await;
    let mut a = TestClient::connect(&relay).await;
    let mut b = TestClient::connect(&relay).await;
    relay.wait_for_clients(2).await;
    a.send_packet(&b.key, b"hello b").await;
    assert_eq!(b.recv_packet().await, (a.key, b"hello b".to_vec()));
    a.send_packet(&node_key(&new_secret()), b"wireguard bytes")
        .await;
    // Frames are read in order: once the pong is back, the relay has dealt
    // with the packet to nobody.
    a.ping_pong([3; 8]).await;

    let sample = |text: &str, series: &str| crate::metrics::tests::sample(text, series);
    let text = metrics.encode().unwrap();
    assert_eq!(sample(&text, "headway_relay_clients"), Some(2.0), "{text}");
    assert_eq!(
        sample(&text, "headway_relay_packets_forwarded_total"),
        Some(1.0)
    );
    assert_eq!(
        sample(&text, "headway_relay_bytes_forwarded_total"),
        Some(7.0)
    );
    assert_eq!(
        sample(
            &text,
            "headway_relay_packets_dropped_total{reason=\"unknown_dest\"}"
        ),
        Some(1.0)
    );
    assert_eq!(
        sample(
            &text,
            "headway_relay_packets_dropped_total{reason=\"queue_full\"}"
        ),
        Some(0.0)
    );

    drop(b);
    relay.wait_for_clients(1).await;
    let text = metrics.encode().unwrap();
    assert_eq!(sample(&text, "headway_relay_clients"), Some(1.0), "{text}");
}

#[tokio::test]
async fn a_websocket_client_and_an_upgrade_client_exchange_packets() {
    let relay = spawn_relay(Arc::new(AdmitAll)).await;
    let mut browser = TestClient::connect_websocket(&relay).await;
    let mut native = TestClient::connect(&relay).await;
    relay.wait_for_clients(2).await;

    browser.send_packet(&native.key, b"from the browser").await;
    assert_eq!(
        native.recv_packet().await,
        (browser.key, b"from the browser".to_vec())
    );
    // The largest packet arrives whole, though it crosses several messages.
    let largest = vec![0xCD; MAX_PACKET];
    native.send_packet(&browser.key, &largest).await;
    assert_eq!(browser.recv_packet().await, (native.key, largest));
    browser.ping_pong([5; 8]).await;

    drop(browser);
    relay.wait_for_clients(1).await;
    let (kind, _) = native.recv_skipping_keep_alives().await;
    assert_eq!(kind, PEER_GONE, "the browser's peer learns it left");
}

#[tokio::test]
async fn a_disco_packet_for_an_unknown_key_is_answered_with_peer_gone_not_here() {
    let relay = spawn_relay(Arc::new(AdmitAll)).await;
    let mut a = TestClient::connect(&relay).await;
    let nobody = node_key(&new_secret());

    // A WireGuard packet to nobody is dropped silently, as Go does.
    a.send_packet(&nobody, b"wireguard bytes").await;
    a.ping_pong([1; 8]).await;

    a.send_packet(&nobody, &disco_packet()).await;
    let (kind, payload) = a.recv_skipping_keep_alives().await;
    assert_eq!(kind, PEER_GONE);
    assert_eq!(payload[..32], nobody.as_bytes()[..]);
    assert_eq!(payload[32..], [0x01]);

    // The answers are rate-limited per sender.
    for _ in 0..20 {
        a.send_packet(&nobody, &disco_packet()).await;
    }
    a.send(PING, &[2; 8]).await;
    let mut answers = 0;
    loop {
        match a.recv_skipping_keep_alives().await {
            (PEER_GONE, _) => answers += 1,
            (PONG, _) => break,
            (kind, _) => panic!("unexpected frame {kind:#04x}"),
        }
    }
    assert!(
        (1..=4).contains(&answers),
        "{answers} answers to 20 packets"
    );
}

#[tokio::test]
async fn a_leaving_client_is_announced_to_those_it_sent_to() {
    let relay = spawn_relay(Arc::new(AdmitAll)).await;
    let mut a = TestClient::connect(&relay).await;
    let mut b = TestClient::connect(&relay).await;
    let mut c = TestClient::connect(&relay).await;

    a.send_packet(&b.key, b"a to b").await;
    assert_eq!(b.recv_packet().await.1, b"a to b");
    b.send_packet(&a.key, b"b to a").await;
    assert_eq!(a.recv_packet().await.1, b"b to a");
    // C only sent to B and never heard from it.
    c.send_packet(&b.key, b"c to b").await;
    assert_eq!(b.recv_packet().await.1, b"c to b");

    let b_key = b.key;
    drop(b);
    let (kind, payload) = a.recv_skipping_keep_alives().await;
    assert_eq!(kind, PEER_GONE);
    assert_eq!(payload[..32], b_key.as_bytes()[..]);
    assert_eq!(payload[32..], [0x00]);
    // Go tells only the receivers of the leaver (its `sentTo` direction).
    c.ping_pong([3; 8]).await;
    relay.wait_for_clients(2).await;
}

#[tokio::test]
async fn ping_gets_pong_and_unknown_frames_are_skipped() {
    let relay = spawn_relay(Arc::new(AdmitAll)).await;
    let mut a = TestClient::connect(&relay).await;
    let mut b = TestClient::connect(&relay).await;

    a.ping_pong([1, 2, 3, 4, 5, 6, 7, 8]).await;
    a.send(0x7f, &[9u8; 1000]).await;
    a.send(KEEP_ALIVE, &[]).await;
    a.send(PONG, &[0; 8]).await;
    a.send(NOTE_PREFERRED, &[1]).await;
    a.ping_pong([8, 7, 6, 5, 4, 3, 2, 1]).await;
    a.send_packet(&b.key, b"after the noise").await;
    assert_eq!(b.recv_packet().await, (a.key, b"after the noise".to_vec()));
}

#[tokio::test]
async fn a_duplicate_key_the_newest_receives_and_the_older_is_told() {
    let relay = spawn_relay(Arc::new(AdmitAll)).await;
    let secret = new_secret();
    let mut first = TestClient::connect_as(&relay, secret.clone()).await;
    let mut second = TestClient::connect_as(&relay, secret).await;
    let mut sender = TestClient::connect(&relay).await;
    assert_eq!(relay.relay.connected_clients(), 3);

    let (kind, problem) = first.recv_skipping_keep_alives().await;
    assert_eq!(kind, HEALTH);
    assert!(String::from_utf8(problem).unwrap().contains("duplicate"));

    sender.send_packet(&first.key, b"to the newest").await;
    assert_eq!(second.recv_packet().await.1, b"to the newest");

    // Whichever connection speaks last receives (Go's "last writer is active").
    first.ping_pong([1; 8]).await;
    sender.send_packet(&first.key, b"to the last writer").await;
    assert_eq!(first.recv_packet().await.1, b"to the last writer");

    drop(second);
    relay.wait_for_clients(2).await;
    let (kind, problem) = first.recv_skipping_keep_alives().await;
    assert_eq!((kind, problem), (HEALTH, Vec::new()));
    sender.send_packet(&first.key, b"to the survivor").await;
    assert_eq!(first.recv_packet().await.1, b"to the survivor");
}

#[tokio::test]
async fn a_client_that_never_reads_does_not_hold_up_others_and_is_closed() {
    let relay = spawn_relay(Arc::new(AdmitAll)).await;
    let mut a = TestClient::connect(&relay).await;
    let mut b = TestClient::connect(&relay).await;
    // A small receive buffer, so the relay's writes to it back up quickly.
    let socket = TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let stream = socket.connect(relay.addr).await.unwrap();
    let stuck_secret = new_secret();
    let mut stuck = TestClient::greeted_on(stream, &relay, stuck_secret).await;
    let payload = stuck.client_info_payload(br#"{"version":2}"#);
    stuck.send(CLIENT_INFO, &payload).await;
    relay.wait_for_clients(3).await;

    let big = vec![0x5A; MAX_PACKET];
    for round in 0u32..8 {
        for _ in 0..50 {
            a.send_packet(&stuck.key, &big).await;
        }
        let note = round.to_be_bytes();
        a.send_packet(&b.key, &note).await;
        let (src, packet) = b.recv_packet().await;
        assert_eq!((src, packet), (a.key, note.to_vec()));
    }
    // The relay's writer to the stuck client times out and closes it.
    relay.wait_for_clients(2).await;
    a.ping_pong([4; 8]).await;
    drop(stuck);
}

// ---------------------------------------------------------------------------
// Bad input ends one connection, never the relay.
// ---------------------------------------------------------------------------

#[tokio::test]
async fn a_truncated_frame_closes_only_that_connection() {
    let relay = spawn_relay(Arc::new(AdmitAll)).await;

    // During the login: half a ClientInfo, then the client stops writing.
    let mut client = TestClient::greeted(&relay, new_secret()).await;
    let payload = client.client_info_payload(br#"{"version":2}"#);
    let mut frame = vec![CLIENT_INFO];
    frame.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    frame.extend_from_slice(&payload[..20]);
    client.send_raw(&frame).await;
    client.stream.shutdown().await.unwrap();
    assert_eq!(client.expect_closed().await, Vec::<u8>::new());

    // After the login: a SendPacket header promising more than comes.
    let mut client = TestClient::connect(&relay).await;
    client
        .send_raw(&[SEND_PACKET, 0, 0, 0, 100, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10])
        .await;
    client.stream.shutdown().await.unwrap();
    client.expect_closed().await;

    relay.wait_for_clients(0).await;
    assert_still_relays(&relay).await;
}

#[tokio::test]
async fn a_length_over_the_maximum_closes_only_that_connection() {
    let relay = spawn_relay(Arc::new(AdmitAll)).await;

    // Any frame type, even one that would be skipped.
    let mut client = TestClient::connect(&relay).await;
    client.send_raw(&[0x7f, 0xff, 0xff, 0xff, 0xff]).await;
    client.expect_closed().await;

    // A packet one byte over 64 KiB: refused at its header, so only the
    // header and the destination are sent (the rest could meet a reset).
    let mut client = TestClient::connect(&relay).await;
    let len = (32 + MAX_PACKET + 1) as u32;
    let mut frame = vec![SEND_PACKET];
    frame.extend_from_slice(&len.to_be_bytes());
    frame.extend_from_slice(node_key(&new_secret()).as_bytes());
    client.send_raw(&frame).await;
    client.expect_closed().await;

    // A ClientInfo over 256 KiB.
    let mut client = TestClient::greeted(&relay, new_secret()).await;
    let len = 256 * 1024 + 1;
    let mut frame = vec![CLIENT_INFO];
    frame.extend_from_slice(&(len as u32).to_be_bytes());
    client.send_raw(&frame).await;
    assert_eq!(client.expect_closed().await, Vec::<u8>::new());

    relay.wait_for_clients(0).await;
    assert_still_relays(&relay).await;
}

#[tokio::test]
async fn garbage_instead_of_client_info_closes_the_connection() {
    let relay = spawn_relay(Arc::new(AdmitAll)).await;
    let mut client = TestClient::greeted(&relay, new_secret()).await;
    client
        .send_raw(b"GET /derp HTTP/1.1\r\nHost: confused\r\n\r\n")
        .await;
    assert_eq!(client.expect_closed().await, Vec::<u8>::new());

    // A well-formed frame of the wrong type is refused as well.
    let mut client = TestClient::greeted(&relay, new_secret()).await;
    client.send(PING, &[0; 8]).await;
    assert_eq!(client.expect_closed().await, Vec::<u8>::new());

    assert_eq!(relay.relay.connected_clients(), 0);
    assert_still_relays(&relay).await;
}

#[tokio::test]
async fn a_client_info_that_does_not_open_closes_the_connection() {
    let relay = spawn_relay(Arc::new(AdmitAll)).await;

    // Random bytes where the box should be.
    let mut client = TestClient::greeted(&relay, new_secret()).await;
    let mut payload = client.key.as_bytes().to_vec();
    payload.extend_from_slice(&[3u8; 24 + 64]);
    client.send(CLIENT_INFO, &payload).await;
    assert_eq!(client.expect_closed().await, Vec::<u8>::new());

    // A box sealed by a key other than the one claimed.
    let mut client = TestClient::greeted(&relay, new_secret()).await;
    let mut payload = client.client_info_payload(br#"{"version":2}"#);
    payload[..32].copy_from_slice(node_key(&new_secret()).as_bytes());
    client.send(CLIENT_INFO, &payload).await;
    assert_eq!(client.expect_closed().await, Vec::<u8>::new());

    // A box that opens to something other than JSON.
    let mut client = TestClient::greeted(&relay, new_secret()).await;
    let payload = client.client_info_payload(b"not json");
    client.send(CLIENT_INFO, &payload).await;
    assert_eq!(client.expect_closed().await, Vec::<u8>::new());

    // Too short to hold a key and a nonce.
    let mut client = TestClient::greeted(&relay, new_secret()).await;
    client.send(CLIENT_INFO, &[0; 40]).await;
    assert_eq!(client.expect_closed().await, Vec::<u8>::new());

    assert_eq!(relay.relay.connected_clients(), 0);
    assert_still_relays(&relay).await;
}

#[tokio::test]
async fn malformed_frames_after_the_login_close_the_connection() {
    let relay = spawn_relay(Arc::new(AdmitAll)).await;
    let cases: [(u8, &[u8]); 5] = [
        (SEND_PACKET, &[0; 31]),
        (PING, &[0; 7]),
        (PING, &[0; 1001]),
        (NOTE_PREFERRED, &[1, 1]),
        // A mesh frame from a client without the mesh key.
        (WATCH_CONNS, &[]),
    ];
    for (kind, payload) in cases {
        let mut client = TestClient::connect(&relay).await;
        client.send(kind, payload).await;
        client.expect_closed().await;
    }
    relay.wait_for_clients(0).await;
    assert_still_relays(&relay).await;
}

// ---------------------------------------------------------------------------
// HTTP routes.
// ---------------------------------------------------------------------------

async fn request(relay: &Arc<Relay>, request: Request<Body>) -> axum::response::Response {
    routes(Arc::clone(relay), crate::tasks::Tasks::new())
        .oneshot(request)
        .await
        .unwrap()
}

async fn body_text(response: axum::response::Response) -> String {
    let bytes = axum::body::to_bytes(response.into_body(), 1 << 16)
        .await
        .unwrap();
    String::from_utf8(bytes.to_vec()).unwrap()
}

#[tokio::test]
async fn derp_without_upgrade_or_websocket_subprotocol_is_426() {
    let relay = Relay::new(PrivateKey::generate(), Arc::new(AdmitAll));
    let response = request(&relay, Request::get("/derp").body(Body::empty()).unwrap()).await;
    assert_eq!(response.status(), StatusCode::UPGRADE_REQUIRED);
    assert_eq!(
        body_text(response).await,
        "DERP requires connection upgrade\n"
    );

    for protocol in [None, Some("chat"), Some("derpx")] {
        let mut builder = Request::get("/derp")
            .header("upgrade", "websocket")
            .header("connection", "upgrade")
            .header("sec-websocket-version", "13")
            .header("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==");
        if let Some(protocol) = protocol {
            builder = builder.header("sec-websocket-protocol", protocol);
        }
        let response = request(&relay, builder.body(Body::empty()).unwrap()).await;
        assert_eq!(
            response.status(),
            StatusCode::UPGRADE_REQUIRED,
            "{protocol:?}"
        );
        assert!(
            body_text(response)
                .await
                .contains("requires the WebSocket subprotocol \"derp\""),
            "{protocol:?}"
        );
    }
}

#[tokio::test]
async fn a_websocket_without_the_derp_subprotocol_is_refused_over_the_wire() {
    let relay = spawn_relay(Arc::new(AdmitAll)).await;
    let err = test_client::connect(relay.addr, "/derp", None)
        .await
        .expect_err("refused");
    match err {
        tokio_tungstenite::tungstenite::Error::Http(response) => {
            assert_eq!(response.status(), StatusCode::UPGRADE_REQUIRED);
        }
        other => panic!("expected an HTTP refusal, got {other}"),
    }
    assert_still_relays(&relay).await;
}

#[tokio::test]
async fn probes_answer_200_with_cors() {
    let relay = Relay::new(PrivateKey::generate(), Arc::new(AdmitAll));
    for path in ["/derp/probe", "/derp/latency-check"] {
        for method in [Method::GET, Method::HEAD] {
            let response = request(
                &relay,
                Request::builder()
                    .method(method.clone())
                    .uri(path)
                    .body(Body::empty())
                    .unwrap(),
            )
            .await;
            assert_eq!(response.status(), StatusCode::OK, "{method} {path}");
            assert_eq!(
                response.headers()["access-control-allow-origin"],
                "*",
                "{method} {path}"
            );
            assert_eq!(body_text(response).await, "");
        }
    }
}

#[tokio::test]
async fn generate_204_echoes_a_well_formed_challenge_only() {
    let relay = Relay::new(PrivateKey::generate(), Arc::new(AdmitAll));
    let with_challenge = |challenge: &str| {
        Request::get("/generate_204")
            .header("x-tailscale-challenge", challenge)
            .body(Body::empty())
            .unwrap()
    };

    let response = request(&relay, with_challenge("ts_derp1.example-2")).await;
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    assert_eq!(
        response.headers()["x-tailscale-response"],
        "response ts_derp1.example-2"
    );

    for bad in ["two words", "semi;colon", &"a".repeat(65)] {
        let response = request(&relay, with_challenge(bad)).await;
        assert_eq!(response.status(), StatusCode::NO_CONTENT);
        assert!(
            response.headers().get("x-tailscale-response").is_none(),
            "{bad:?}"
        );
    }

    let response = request(
        &relay,
        Request::get("/generate_204").body(Body::empty()).unwrap(),
    )
    .await;
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    assert!(response.headers().get("x-tailscale-response").is_none());
}

// ---------------------------------------------------------------------------
// The codec on its own.
// ---------------------------------------------------------------------------

#[tokio::test]
async fn frame_writer_and_reader_agree_with_the_wire_format() {
    let src = NodeKey::from_bytes([9; 32]);
    let mut written = Vec::new();
    let mut writer = FrameWriter::new(&mut written);
    writer.write_recv_packet(&src, b"abc").await.unwrap();
    writer
        .write_peer_gone(&src, PeerGoneReason::NotHere)
        .await
        .unwrap();
    writer.write_keep_alive().await.unwrap();
    writer.flush().await.unwrap();
    drop(writer);

    let mut expected = vec![RECV_PACKET, 0, 0, 0, 35];
    expected.extend_from_slice(&[9; 32]);
    expected.extend_from_slice(b"abc");
    expected.extend_from_slice(&[PEER_GONE, 0, 0, 0, 33]);
    expected.extend_from_slice(&[9; 32]);
    expected.push(0x01);
    expected.extend_from_slice(&[KEEP_ALIVE, 0, 0, 0, 0]);
    assert_eq!(written, expected);

    let mut reader = FrameReader::new(expected.as_slice());
    let (kind, payload) = reader.read_frame().await.unwrap().unwrap();
    assert_eq!(kind, FrameType::RECV_PACKET);
    assert_eq!(payload, [[9; 32].as_slice(), b"abc"].concat());
    let (kind, payload) = reader.read_frame().await.unwrap().unwrap();
    assert_eq!(kind, FrameType::PEER_GONE);
    assert_eq!(payload, [[9; 32].as_slice(), &[1]].concat());
    let (kind, payload) = reader.read_frame().await.unwrap().unwrap();
    assert_eq!((kind, payload.len()), (FrameType::KEEP_ALIVE, 0));
    assert!(reader.read_frame().await.unwrap().is_none());
}

#[tokio::test]
async fn frame_reader_refuses_oversized_and_truncated_frames() {
    let too_long = (MAX_FRAME_LEN as u32 + 1).to_be_bytes();
    let bytes = [&[0x7f], too_long.as_slice()].concat();
    let mut reader = FrameReader::new(bytes.as_slice());
    assert!(matches!(
        reader.read_header().await,
        Err(FrameError::TooLong { .. })
    ));

    let mut reader = FrameReader::new([SEND_PACKET, 0, 0].as_slice());
    assert!(matches!(
        reader.read_header().await,
        Err(FrameError::Truncated)
    ));

    let mut reader = FrameReader::new([SEND_PACKET, 0, 0, 0, 9, 1, 2].as_slice());
    assert!(matches!(
        reader.read_frame().await,
        Err(FrameError::Truncated)
    ));

    let mut reader = FrameReader::new([0x7f, 0, 0, 0, 9, 1, 2].as_slice());
    let header = reader.read_header().await.unwrap().unwrap();
    assert!(matches!(
        reader.skip_payload(header).await,
        Err(FrameError::Truncated)
    ));
}

#[test]
fn client_info_json_uses_go_field_names() {
    let info: ClientInfo = serde_json::from_str(
        r#"{"version":2,"meshKey":"abc","CanAckPings":true,"IsProber":true,"AppName":"x","Future":1}"#,
    )
    .unwrap();
    assert_eq!(info.version, Some(2));
    assert_eq!(info.mesh_key.as_deref(), Some("abc"));
    assert_eq!(info.can_ack_pings, Some(true));
    assert_eq!(info.is_prober, Some(true));
    assert_eq!(
        serde_json::from_str::<ClientInfo>("{}").unwrap(),
        ClientInfo::default()
    );

    let sealed = frame::seal_server_info(
        &PrivateKey::generate(),
        &NodeKey::from_bytes([1; 32]),
        &frame::ServerInfo {
            version: Some(2),
            ..Default::default()
        },
    )
    .unwrap();
    assert_eq!(sealed.len(), 24 + 16 + r#"{"version":2}"#.len());
}

//! Entry points for the fuzz targets in fuzz/: thin public wrappers over the parsers outside bytes reach.
//!
//! Each `pub fn` takes the fuzzer's bytes, feeds them to the real parsing code the
//! way a connection or a file would, and panics only when a property the code
//! promises does not hold (a round trip that changes a value, a limit exceeded).
//! A panic anywhere inside is a finding: the parsers must refuse, never crash.
//! The seed corpus in `fuzz/seeds/<target>/` runs through these functions in the
//! unit tests below, so every seed is also a regression test; [`seeds`] makes the
//! seed files from headway's own encoders (`docs/fuzzing.md`).
//!
//! Not part of the server: nothing in the crate calls this module.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};

/// The targets, one binary each in `fuzz/fuzz_targets/`.
pub const TARGETS: &[&str] = &[
    "noise",
    "control_requests",
    "websocket",
    "derp",
    "stun",
    "dns",
    "config",
    "policy",
    "grpc",
    "cli_argv",
];

/// Runs `data` through the target called `name`; `false` for an unknown name.
pub fn run(name: &str, data: &[u8]) -> bool {
    match name {
        "noise" => noise(data),
        "control_requests" => control_requests(data),
        "websocket" => websocket(data),
        "derp" => derp(data),
        "stun" => stun(data),
        "dns" => dns(data),
        "config" => config(data),
        "policy" => policy(data),
        "grpc" => grpc(data),
        "cli_argv" => cli_argv(data),
        _ => return false,
    }
    true
}

/// One runtime per fuzzing thread: building one per input would cost more than
/// most inputs.
fn block_on<F: std::future::Future>(future: F) -> F::Output {
    thread_local! {
        static RUNTIME: tokio::runtime::Runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .expect("a current-thread runtime builds");
    }
    RUNTIME.with(|runtime| runtime.block_on(future))
}

/// Takes bytes off the front of the fuzzer's input.
struct Input<'a>(&'a [u8]);

impl<'a> Input<'a> {
    fn byte(&mut self) -> Option<u8> {
        let (&first, rest) = self.0.split_first()?;
        self.0 = rest;
        Some(first)
    }

    fn u16(&mut self) -> Option<u16> {
        Some(u16::from_be_bytes([self.byte()?, self.byte()?]))
    }

    /// Up to `n` bytes (fewer when the input runs out).
    fn bytes(&mut self, n: usize) -> &'a [u8] {
        let (taken, rest) = self.0.split_at(n.min(self.0.len()));
        self.0 = rest;
        taken
    }

    fn rest(&mut self) -> &'a [u8] {
        self.bytes(self.0.len())
    }
}

/// A connection whose peer sends `input`: reads return it in pieces of at most
/// `pacing & 0x7f` bytes (0: as much as fits), and with `pacing & 0x80` every other
/// read first answers "not yet" (waking itself), as a socket does, so readers
/// resume mid-frame. Every write is kept in `written`.
struct ScriptedIo {
    input: Vec<u8>,
    pos: usize,
    pacing: u8,
    reads: usize,
    written: Arc<Mutex<Vec<u8>>>,
}

impl ScriptedIo {
    fn new(input: Vec<u8>, pacing: u8) -> ScriptedIo {
        ScriptedIo {
            input,
            pos: 0,
            pacing,
            reads: 0,
            written: Arc::default(),
        }
    }
}

impl AsyncRead for ScriptedIo {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        this.reads += 1;
        if this.pacing & 0x80 != 0 && this.reads % 2 == 1 {
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        let limit = match this.pacing & 0x7f {
            0 => usize::MAX,
            n => usize::from(n),
        };
        let n = (this.input.len() - this.pos)
            .min(buf.remaining())
            .min(limit);
        buf.put_slice(&this.input[this.pos..this.pos + n]);
        this.pos += n;
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for ScriptedIo {
    fn poll_write(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.written
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend_from_slice(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

/// Reads `reader` to its end or its first error; the bytes read either way.
async fn read_all<R: AsyncRead + Unpin>(reader: &mut R) -> (Vec<u8>, io::Result<()>) {
    let mut out = Vec::new();
    let mut buf = [0u8; 1500];
    loop {
        match reader.read(&mut buf).await {
            Ok(0) => return (out, Ok(())),
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(err) => return (out, Err(err)),
        }
    }
}

// ---------------------------------------------------------------------------
// Noise (TS2021): handshake initiation, records, early payload.

fn server_key() -> &'static crate::control::ServerKey {
    static KEY: OnceLock<crate::control::ServerKey> = OnceLock::new();
    KEY.get_or_init(|| {
        let private: crate::types::PrivateKey = format!("privkey:{}", "58".repeat(32))
            .parse()
            .expect("a fixed private key");
        crate::control::ServerKey::from_private(&private)
    })
}

/// TS2021's Noise layer. The first byte picks what the rest is:
/// - 0, 1: records for a server (0) or client (1) stream, as a list of operations
///   (sealed plaintext, raw bytes, a sealed record with one byte flipped, an early
///   payload); what the stream reads must be exactly the sealed plaintext, up to
///   the first bad record, after which it must fail;
/// - 2: a handshake initiation as the `X-Tailscale-Handshake` header carries it;
/// - 3: the same read from a raw stream (`read_initiation`);
/// - 4: a genuine initiation (client key and version from the input) with bytes
///   flipped: accepted exactly when nothing was flipped;
/// - 5: a server's handshake response, read by the client side.
pub fn noise(data: &[u8]) {
    use crate::control::noise;
    let mut input = Input(data);
    let Some(mode) = input.byte() else { return };
    match mode % 6 {
        0 | 1 => noise_records(mode % 6 == 1, &mut input),
        2 => {
            let _ = noise::accept(server_key(), input.rest());
        }
        3 => {
            let pacing = input.byte().unwrap_or(0);
            let mut io = ScriptedIo::new(input.rest().to_vec(), pacing);
            block_on(async {
                if let Ok(init) = noise::read_initiation(&mut io).await {
                    let _ = noise::accept(server_key(), &init);
                }
            });
        }
        4 => {
            let mut seed = [0u8; 32];
            let given = input.bytes(32);
            seed[..given.len()].copy_from_slice(given);
            let client: crate::types::PrivateKey = format!("privkey:{}", hex::encode(seed))
                .parse()
                .expect("any 32 bytes are a private key");
            let version = input.u16().unwrap_or(130);
            let server_public = server_key().public();
            let (_, mut init) = noise::Initiator::new(&server_public, &client, version)
                .expect("an initiation towards a valid key always builds");
            let original = init;
            while let (Some(at), Some(mask)) = (input.byte(), input.byte()) {
                let at = usize::from(at) % init.len();
                init[at] ^= mask;
            }
            // Two flips may cancel out: compare with the original bytes.
            let accepted = noise::accept(server_key(), &init);
            if init != original {
                assert!(accepted.is_err(), "a changed initiation was accepted");
            } else {
                let accepted = accepted.expect("a genuine initiation is accepted");
                let public = x25519_dalek::PublicKey::from(&x25519_dalek::StaticSecret::from(seed));
                assert_eq!(accepted.peer().as_bytes(), public.as_bytes());
                assert_eq!(accepted.protocol_version(), version);
            }
        }
        _ => {
            let client: crate::types::PrivateKey = format!("privkey:{}", "21".repeat(32))
                .parse()
                .expect("a fixed private key");
            let (initiator, _) = noise::Initiator::new(&server_key().public(), &client, 130)
                .expect("an initiation towards a valid key always builds");
            let pacing = input.byte().unwrap_or(0);
            let io = ScriptedIo::new(input.rest().to_vec(), pacing);
            block_on(async {
                if let Ok(mut stream) = initiator.finish(io).await {
                    let _ = read_all(&mut stream).await;
                }
            });
        }
    }
}

/// See [`noise`], modes 0 and 1.
fn noise_records(client_reads: bool, input: &mut Input<'_>) {
    use crate::control::noise::{self, NoiseStream};
    const K1: [u8; 32] = [0x11; 32];
    const K2: [u8; 32] = [0x22; 32];
    let pacing = input.byte().unwrap_or(0);
    // The sealing side writes into a Vec; its records go on the wire as the ops say.
    let mut sealer = NoiseStream::new(Vec::new(), K2, K1);
    let mut wire = Vec::new();
    let mut sent = Vec::new();
    let mut broken = false;
    let seal = |sealer: &mut NoiseStream<Vec<u8>>, plaintext: &[u8]| -> Vec<u8> {
        let before = sealer.get_ref().len();
        block_on(async {
            sealer
                .write_all(plaintext)
                .await
                .expect("sealing into memory");
            sealer.flush().await.expect("sealing into memory");
        });
        sealer.get_ref()[before..].to_vec()
    };
    while let Some(op) = input.byte() {
        let len = usize::from(input.u16().unwrap_or(0)) % (noise::MAX_PLAINTEXT_LEN + 64);
        let plaintext = input.bytes(len);
        match op % 4 {
            0 => {
                wire.extend(seal(&mut sealer, plaintext));
                if !broken {
                    sent.extend_from_slice(plaintext);
                }
            }
            1 => {
                wire.extend_from_slice(plaintext);
                broken |= !plaintext.is_empty();
            }
            2 => {
                let mut record = seal(&mut sealer, plaintext);
                if !record.is_empty() {
                    let at = usize::from(op >> 2) % record.len();
                    record[at] ^= 0x80;
                    broken = true;
                }
                wire.extend(record);
            }
            _ => {
                let payload = noise::early_payload(plaintext);
                wire.extend(seal(&mut sealer, &payload));
                if !broken {
                    sent.extend_from_slice(&payload);
                }
            }
        }
    }
    let io = ScriptedIo::new(wire, pacing);
    let mut reader = NoiseStream::new(io, K1, K2);
    let (read, result) = block_on(async {
        let mut read = Vec::new();
        if client_reads {
            match reader.read_early_payload().await {
                Ok(Some(json)) => {
                    read.extend(noise::early_payload(&json));
                }
                Ok(None) => {}
                Err(err) => return (read, Err(io::Error::from(err))),
            }
        }
        let (rest, result) = read_all(&mut reader).await;
        read.extend(rest);
        (read, result)
    });
    assert!(
        sent.starts_with(&read),
        "a Noise stream returned bytes that were never sealed"
    );
    if !broken && result.is_ok() {
        assert_eq!(read, sent, "a Noise stream lost sealed bytes");
    }
    if !broken && !client_reads {
        assert!(
            result.is_ok(),
            "a Noise stream refused good records: {result:?}"
        );
    }
}

// ---------------------------------------------------------------------------
// HTTP/2-in-Noise bodies: `/machine/register` and `/machine/map`.

/// `POST /machine/register` (first byte even) or `POST /machine/map` (odd) bodies,
/// parsed as the handlers parse them, then what the handlers do with them that
/// needs no database: Hostinfo's echo, the node name, the auth key, endpoints.
pub fn control_requests(data: &[u8]) {
    use crate::tailcfg::{Hostinfo, MapRequest, RegisterRequest};
    use axum::response::IntoResponse;
    let Some((&which, body)) = data.split_first() else {
        return;
    };
    let check_hostinfo = |hostinfo: &Hostinfo| {
        let again = Hostinfo::from_json(hostinfo.as_json()).expect("echoed Hostinfo parses");
        assert_eq!(&again, hostinfo);
        assert_eq!(again.hostname(), hostinfo.hostname());
        assert_eq!(again.routable_ips(), hostinfo.routable_ips());
        let name = crate::types::GivenName::sanitize(hostinfo.hostname());
        assert!(
            crate::types::GivenName::parse(name.as_str()).is_ok(),
            "hostname {:?} sanitised to an invalid label {name:?}",
            hostinfo.hostname()
        );
    };
    if which % 2 == 0 {
        let req: RegisterRequest = match crate::control::parse_request(body, "register") {
            Ok(req) => req,
            Err(refusal) => {
                let response = refusal.into_response();
                assert_eq!(response.status(), axum::http::StatusCode::BAD_REQUEST);
                return;
            }
        };
        if let Some(key) = req.auth_key() {
            use crate::types::secret::PrefixedSecret;
            if let Some(secret) = PrefixedSecret::parse(PrefixedSecret::AUTH, key) {
                let again = PrefixedSecret::parse(PrefixedSecret::AUTH, &secret.reveal());
                assert_eq!(again.map(|s| s.reveal()), Some(secret.reveal()));
            }
        }
        let _ = (req.followup(), req.is_logout(chrono::Utc::now()));
        if let Some(hostinfo) = &req.hostinfo {
            check_hostinfo(hostinfo);
        }
    } else {
        let req: MapRequest = match crate::control::parse_request(body, "map") {
            Ok(req) => req,
            Err(refusal) => {
                let response = refusal.into_response();
                assert_eq!(response.status(), axum::http::StatusCode::BAD_REQUEST);
                return;
            }
        };
        let _ = (req.kind(), req.wants_zstd());
        for endpoint in &req.endpoints {
            let again: SocketAddr = endpoint.to_string().parse().expect("endpoints print");
            assert_eq!(&again, endpoint);
        }
        if let Some(hostinfo) = &req.hostinfo {
            check_hostinfo(hostinfo);
            let previous =
                Hostinfo::from_json(r#"{"Hostname":"old","NetInfo":{"PreferredDERP":900}}"#)
                    .expect("a fixed Hostinfo");
            let merged = hostinfo.clone().with_previous_net_info(&previous);
            check_hostinfo(&merged);
            if hostinfo.net_info().is_some() {
                assert_eq!(merged.net_info(), hostinfo.net_info());
            }
            assert_eq!(merged.hostname(), hostinfo.hostname());
        }
    }
}

// ---------------------------------------------------------------------------
// WebSocket (the browser forms of /ts2021 and /derp).

/// The upgrade request the WebSocket target's bytes follow.
const WEBSOCKET_REQUEST: &[u8] =
    b"GET /ws HTTP/1.1\r\nHost: headway.test\r\nConnection: Upgrade\r\n\
Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: aGVhZHdheSBmdXp6IGtleQ==\r\n\
Sec-WebSocket-Protocol: derp\r\n\r\n";

/// A client's WebSocket frames (after a fixed upgrade request; first byte: read
/// pacing) into a [`crate::websocket::ByteStream`] with the crate's limits, served
/// by hyper and axum as `/derp` and `/ts2021` are. Whatever the stream reads is
/// echoed back; the server's frames must be binary messages of at most 32 KiB
/// whose bytes are exactly what was echoed.
pub fn websocket(data: &[u8]) {
    use crate::websocket::{self, ByteStream, MAX_SEND_LEN};
    use axum::extract::ws::WebSocketUpgrade;
    let mut input = Input(data);
    let pacing = input.byte().unwrap_or(0);
    let mut wire = WEBSOCKET_REQUEST.to_vec();
    wire.extend_from_slice(input.rest());
    let frames_len = wire.len() - WEBSOCKET_REQUEST.len();
    let io = ScriptedIo::new(wire, pacing);
    let written = io.written.clone();
    let echoed: Arc<Mutex<Option<Vec<u8>>>> = Arc::default();
    let echoed_in_task = echoed.clone();
    let (done_tx, done_rx) = tokio::sync::oneshot::channel::<()>();
    let done_tx = Arc::new(Mutex::new(Some(done_tx)));
    let app = axum::Router::new().route(
        "/ws",
        axum::routing::get(
            move |headers: axum::http::HeaderMap, upgrade: WebSocketUpgrade| async move {
                assert!(websocket::offers_protocol(&headers, "derp"));
                websocket::with_limits(upgrade)
                    .protocols(["derp"])
                    .on_upgrade(move |socket| async move {
                        let mut stream = ByteStream::new(socket);
                        let mut echoed = Vec::new();
                        let mut buf = vec![0u8; 40 * 1024];
                        loop {
                            match stream.read(&mut buf).await {
                                Ok(0) | Err(_) => break,
                                Ok(n) => {
                                    let sent = async {
                                        stream.write_all(&buf[..n]).await?;
                                        stream.flush().await
                                    };
                                    if sent.await.is_err() {
                                        break;
                                    }
                                    echoed.extend_from_slice(&buf[..n]);
                                }
                            }
                        }
                        let _ = stream.shutdown().await;
                        *echoed_in_task.lock().unwrap_or_else(|e| e.into_inner()) = Some(echoed);
                        let sender = done_tx.lock().unwrap_or_else(|e| e.into_inner()).take();
                        if let Some(sender) = sender {
                            let _ = sender.send(());
                        }
                    })
            },
        ),
    );
    block_on(async move {
        use tower::ServiceExt;
        let service =
            hyper::service::service_fn(move |request: hyper::Request<hyper::body::Incoming>| {
                app.clone().oneshot(request.map(axum::body::Body::new))
            });
        let connection = hyper::server::conn::http1::Builder::new()
            .serve_connection(hyper_util::rt::TokioIo::new(io), service)
            .with_upgrades();
        let _ = connection.await;
        let _ = done_rx.await;
    });
    let Some(echoed) = echoed.lock().unwrap_or_else(|e| e.into_inner()).take() else {
        return;
    };
    assert!(echoed.len() <= frames_len, "read more bytes than were sent");
    let written = written.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let Some(head_end) = written.windows(4).position(|w| w == b"\r\n\r\n") else {
        panic!("an upgraded WebSocket without a response head");
    };
    let mut frames = &written[head_end + 4..];
    let mut binary = Vec::new();
    while let Some((opcode, payload, rest)) = server_frame(frames) {
        if opcode == 0x2 {
            assert!(
                payload.len() <= MAX_SEND_LEN,
                "a {}-byte message, over Tailscale clients' limit",
                payload.len()
            );
            binary.extend_from_slice(payload);
        }
        frames = rest;
    }
    assert!(frames.is_empty(), "the server wrote a malformed frame");
    assert!(
        binary.starts_with(&echoed),
        "the bytes sent are not the bytes written"
    );
}

/// One unmasked server frame: opcode, payload and what follows it.
fn server_frame(bytes: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&b0, rest) = bytes.split_first()?;
    let (&b1, mut rest) = rest.split_first()?;
    assert_eq!(b1 & 0x80, 0, "a server frame is never masked");
    let len = match b1 & 0x7f {
        126 => {
            let (len, tail) = rest.split_first_chunk::<2>()?;
            rest = tail;
            usize::from(u16::from_be_bytes(*len))
        }
        127 => {
            let (len, tail) = rest.split_first_chunk::<8>()?;
            rest = tail;
            usize::try_from(u64::from_be_bytes(*len)).ok()?
        }
        n => usize::from(n),
    };
    let (payload, rest) = rest.split_at_checked(len)?;
    Some((b0 & 0x0f, payload, rest))
}

// ---------------------------------------------------------------------------
// DERP: frames, the ClientInfo box, the relay's connection loop.

fn relay_key() -> &'static crate::types::PrivateKey {
    static KEY: OnceLock<crate::types::PrivateKey> = OnceLock::new();
    KEY.get_or_init(|| {
        format!("privkey:{}", "60".repeat(32))
            .parse()
            .expect("a fixed private key")
    })
}

fn derp_client_key() -> &'static crate::types::PrivateKey {
    static KEY: OnceLock<crate::types::PrivateKey> = OnceLock::new();
    KEY.get_or_init(|| {
        format!("privkey:{}", "70".repeat(32))
            .parse()
            .expect("a fixed private key")
    })
}

/// DERP. The first byte picks:
/// - 0: a byte stream read as frames (`FrameReader`), reading or skipping each
///   payload as the second byte's bits say; every frame read must fit in the input;
/// - 1: a ClientInfo payload (key ‖ nonce ‖ box) opened with the relay's key;
/// - 2: a ClientInfo whose JSON is the input, boxed correctly, opened by the relay;
/// - 3: a whole relay connection: a correctly boxed ClientInfo (JSON length-prefixed
///   in the input) then the rest of the input as the client's frames.
pub fn derp(data: &[u8]) {
    use crate::relay::frame::{self, FrameReader, FrameType};
    let mut input = Input(data);
    let Some(mode) = input.byte() else { return };
    match mode % 4 {
        0 => {
            let skips = input.byte().unwrap_or(0);
            let pacing = input.byte().unwrap_or(0);
            let total = input.0.len();
            let mut reader = FrameReader::new(ScriptedIo::new(input.rest().to_vec(), pacing));
            block_on(async {
                let mut consumed = 0;
                let mut n = 0u32;
                while let Ok(Some(header)) = reader.read_header().await {
                    if skips.rotate_left(n) & 1 == 0 {
                        match reader.read_payload(header).await {
                            Ok(payload) => assert_eq!(payload.len(), header.len as usize),
                            Err(_) => break,
                        }
                    } else if reader.skip_payload(header).await.is_err() {
                        break;
                    }
                    consumed += frame::FRAME_HEADER_LEN + header.len as usize;
                    assert!(consumed <= total, "a frame longer than its bytes was read");
                    let _ = format!("{:?}", header.frame_type);
                    n += 1;
                }
            });
        }
        1 => {
            let _ = frame::open_client_info(relay_key(), input.rest());
        }
        2 => {
            let payload = box_client_info(input.rest());
            match frame::open_client_info(relay_key(), &payload) {
                Ok((key, _)) => assert_eq!(key, frame::public_key(derp_client_key())),
                Err(frame::InfoError::Json { .. }) => {}
                Err(err) => panic!("a correctly boxed ClientInfo was refused: {err}"),
            }
        }
        _ => {
            let json_len = usize::from(input.u16().unwrap_or(0));
            let json = input.bytes(json_len);
            let pacing = input.byte().unwrap_or(0);
            let payload = box_client_info(json);
            let mut wire = vec![FrameType::CLIENT_INFO.0];
            wire.extend_from_slice(&(payload.len() as u32).to_be_bytes());
            wire.extend_from_slice(&payload);
            wire.extend_from_slice(input.rest());
            static RELAY: OnceLock<Arc<crate::relay::Relay>> = OnceLock::new();
            let relay = RELAY
                .get_or_init(|| {
                    crate::relay::Relay::new(relay_key().clone(), Arc::new(crate::relay::AdmitAll))
                })
                .clone();
            let remote: SocketAddr = "192.0.2.7:41641".parse().expect("a fixed address");
            block_on(relay.clone().accept(ScriptedIo::new(wire, pacing), remote));
            assert_eq!(
                relay.connected_clients(),
                0,
                "a finished connection stayed registered"
            );
        }
    }
}

/// key ‖ nonce ‖ box(`json`) from the fixed client to the fixed relay.
fn box_client_info(json: &[u8]) -> Vec<u8> {
    use crypto_box::aead::Aead;
    let relay_public = crypto_box::SecretKey::from_bytes(*relay_key().as_bytes()).public_key();
    let client_secret = crypto_box::SecretKey::from_bytes(*derp_client_key().as_bytes());
    let client_public = client_secret.public_key();
    let nonce = [7u8; 24];
    let sealed = crypto_box::SalsaBox::new(&relay_public, &client_secret)
        .encrypt(&nonce.into(), json)
        .expect("boxing in memory");
    let mut payload = client_public.as_bytes().to_vec();
    payload.extend_from_slice(&nonce);
    payload.extend_from_slice(&sealed);
    payload
}

// ---------------------------------------------------------------------------
// STUN.

/// One UDP datagram to the STUN port (first byte: answer an IPv4 or IPv6 sender).
/// An answer must echo the transaction id and carry the sender's address.
pub fn stun(data: &[u8]) {
    let Some((&family, datagram)) = data.split_first() else {
        return;
    };
    let from: SocketAddr = if family % 2 == 0 {
        "198.51.100.9:3478".parse().expect("a fixed address")
    } else {
        "[2001:db8::17]:41641".parse().expect("a fixed address")
    };
    let Ok(response) = crate::relay::stun::respond(datagram, from) else {
        return;
    };
    assert_eq!(&response[..2], &[0x01, 0x01], "not a binding success");
    assert_eq!(&response[8..20], &datagram[8..20], "transaction id changed");
    let declared = usize::from(u16::from_be_bytes([response[2], response[3]]));
    assert_eq!(declared, response.len() - 20);
    // XOR-MAPPED-ADDRESS: type, length, 0, family, port ^ cookie, address ^ cookie ‖ txid.
    let port = u16::from_be_bytes([response[26], response[27]]) ^ 0x2112;
    assert_eq!(port, from.port());
    let key: Vec<u8> = response[4..20].to_vec();
    let address: Vec<u8> = response[28..].iter().zip(key).map(|(a, k)| a ^ k).collect();
    let expected = match from.ip() {
        std::net::IpAddr::V4(ip) => ip.octets().to_vec(),
        std::net::IpAddr::V6(ip) => ip.octets().to_vec(),
    };
    assert_eq!(address, expected, "the mapped address is not the sender's");
}

// ---------------------------------------------------------------------------
// DNS (the authoritative zone for ACME challenges).

/// One DNS query (first byte: over UDP or TCP) to the zone `ts.example.com` with a
/// published challenge. An answer must parse, carry the query's id and fit the
/// transport's size.
pub fn dns(data: &[u8]) {
    use crate::dns::{Challenges, Transport, Zone};
    let Some((&how, query)) = data.split_first() else {
        return;
    };
    let now = std::time::Instant::now();
    static ZONE: OnceLock<Zone> = OnceLock::new();
    let zone = ZONE.get_or_init(|| {
        let challenges = Arc::new(Challenges::new());
        challenges
            .publish(
                "_acme-challenge.laptop.ts.example.com",
                "zKq3hFbXbYvUGJjZ6fDjmK1yqWfLBzVYkZkQ1dXb4uM",
                std::time::Instant::now(),
            )
            .expect("a valid challenge");
        Zone {
            apex: "ts.example.com".into(),
            nameserver: "headway.example.com".into(),
            challenges,
        }
    });
    let transport = if how % 2 == 0 {
        Transport::Udp
    } else {
        Transport::Tcp
    };
    let Some(response) = crate::dns::answer(zone, query, transport, now) else {
        return;
    };
    let limit = match transport {
        Transport::Udp => 1232,
        Transport::Tcp => 16 * 1024,
    };
    assert!(
        response.len() <= limit,
        "a {}-byte response",
        response.len()
    );
    assert_eq!(&response[..2], &query[..2], "the response has another id");
    assert!(
        response[2] & 0x80 != 0,
        "the response is not marked a response"
    );
    hickory_proto::op::Message::from_vec(&response).expect("the response parses");
}

// ---------------------------------------------------------------------------
// Files: the YAML config, the extra records file, DERP maps.

/// Text an admin or a `derp.urls` server provides (first byte picks):
/// 0 the YAML config (`load_from_str`, no environment), 1 the extra DNS records
/// file, 2 a `derp.paths` YAML file, 3 a `derp.urls` JSON body; maps that parse
/// are merged as the server merges them.
pub fn config(data: &[u8]) {
    let Some((&which, body)) = data.split_first() else {
        return;
    };
    let Ok(text) = std::str::from_utf8(body) else {
        if which % 4 == 3 {
            let _ = crate::derp::map::parse_json("https://derp.example/map.json", body);
        }
        return;
    };
    match which % 4 {
        0 => {
            if let Ok(loaded) = crate::config::load_from_str(text, "fuzz.yaml", &|_| None) {
                let _ = format!("{:?}", loaded.config);
            }
        }
        1 => {
            let _ = crate::config::parse_extra_records(text);
        }
        _ => {
            let (source, parsed) = if which % 4 == 2 {
                let path = std::path::PathBuf::from("/etc/headway/derp.yaml");
                (
                    crate::derp::Source::Path(path.clone()),
                    crate::derp::map::parse_yaml(&path, text),
                )
            } else {
                let url = "https://derp.example/map.json";
                (
                    crate::derp::Source::Url(url.into()),
                    crate::derp::map::parse_json(url, body),
                )
            };
            if let Ok(map) = parsed {
                let (merged, _notes) = crate::derp::map::merge([(&source, &map)]);
                let _ = serde_json::to_string(&merged).expect("a DERP map serialises");
            }
        }
    }
}

// ---------------------------------------------------------------------------
// The policy (HuJSON).

/// A policy file: HuJSON standardised (same length, same lines), parsed, then
/// compiled for a small tailnet (two users, their nodes, a tagged server, a
/// subnet router) with its own `tests` run, as `policy set` and a reload do.
pub fn policy(data: &[u8]) {
    use crate::policy::{Compiled, Options, Policy, Tailnet};
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(standard) = crate::policy::hujson::standardize(text) {
        assert_eq!(
            standard.len(),
            text.len(),
            "standardising changed the length"
        );
        let lines = |s: &str| -> Vec<usize> {
            s.bytes()
                .enumerate()
                .filter(|(_, b)| *b == b'\n')
                .map(|(i, _)| i)
                .collect()
        };
        assert_eq!(lines(&standard), lines(text), "standardising moved lines");
    }
    let Ok(parsed) = Policy::parse(text) else {
        return;
    };
    let (users, devices) = policy_tailnet();
    let tailnet = Tailnet {
        users: &users,
        devices: &devices,
    };
    let parsed = Arc::new(parsed);
    let options = Options {
        server_url: "https://headway.example.com".into(),
    };
    let compiled = Compiled::new(parsed.clone(), tailnet, &options);
    for device in &devices {
        let _ = compiled.filter(device.id);
        let _ = compiled.ssh_policy(device.id);
        let _ = compiled.node_attrs(device.id);
        let _ = compiled.peers_of(device.id);
    }
    let _ = crate::policy::run_tests(&parsed, tailnet, &compiled);
    let _ = crate::policy::Approvals::new(&parsed, tailnet);
}

fn policy_tailnet() -> (Vec<crate::types::User>, Vec<crate::policy::Device>) {
    use crate::policy::testing::{device, user};
    let mut router = device(4, None, &["tag:router"]);
    router.subnet_routes = vec!["192.168.1.0/24".parse().expect("a fixed route")];
    router.exit_node = true;
    (
        vec![
            user(1, "alice", "alice@example.com"),
            user(2, "bob", "bob@example.com"),
        ],
        vec![
            device(1, Some(1), &[]),
            device(2, Some(2), &[]),
            device(3, None, &["tag:server"]),
            router,
        ],
    )
}

// ---------------------------------------------------------------------------
// gRPC (`headscale.v1`) and the admin socket's HTTP/2 relay.

/// gRPC. First byte: 0–33 one of the `headscale.v1` request messages, decoded as
/// tonic decodes it (re-encoding must decode to the same message), then the checks
/// the handlers make without the database; 34 an `authorization` header value
/// (the TCP listener's Bearer API key); 35 a client's bytes on the admin Unix
/// socket through the `:authority`-fixing relay, whose output must be HTTP/2
/// frames with header blocks any fresh HPACK decoder reads.
pub fn grpc(data: &[u8]) {
    use crate::grpc::pb;
    let Some((&which, body)) = data.split_first() else {
        return;
    };
    macro_rules! decode {
        ($body:expr, $($n:literal => $ty:ident),* $(,)?) => {
            match which % 36 {
                $($n => {
                    if let Ok(message) = <pb::$ty as prost::Message>::decode($body) {
                        let again = <pb::$ty as prost::Message>::decode(
                            prost::Message::encode_to_vec(&message).as_slice(),
                        )
                        .expect("a re-encoded message decodes");
                        assert_eq!(again, message);
                        grpc_checks(&message as &dyn std::any::Any);
                    }
                })*
                34 => grpc_bearer($body),
                _ => grpc_admin_socket($body),
            }
        };
    }
    decode!(body,
        0 => CreateApiKeyRequest, 1 => ExpireApiKeyRequest, 2 => ListApiKeysRequest,
        3 => DeleteApiKeyRequest, 4 => AuthRegisterRequest, 5 => AuthApproveRequest,
        6 => AuthRejectRequest, 7 => HealthRequest, 8 => RegisterNodeRequest,
        9 => GetNodeRequest, 10 => SetTagsRequest, 11 => SetApprovedRoutesRequest,
        12 => DeleteNodeRequest, 13 => ExpireNodeRequest, 14 => RenameNodeRequest,
        15 => ListNodesRequest, 16 => DebugCreateNodeRequest, 17 => BackfillNodeIPsRequest,
        18 => SetPolicyRequest, 19 => GetPolicyRequest, 20 => CheckPolicyRequest,
        21 => CreatePreAuthKeyRequest, 22 => ExpirePreAuthKeyRequest,
        23 => DeletePreAuthKeyRequest, 24 => ListPreAuthKeysRequest, 25 => GetRoutesRequest,
        26 => EnableRouteRequest, 27 => DisableRouteRequest, 28 => GetNodeRoutesRequest,
        29 => DeleteRouteRequest, 30 => CreateUserRequest, 31 => RenameUserRequest,
        32 => DeleteUserRequest, 33 => ListUsersRequest,
    );
}

/// The pure checks the handlers and `State` make on request fields.
fn grpc_checks(message: &dyn std::any::Any) {
    use crate::grpc::{convert, pb};
    use crate::types::secret::PrefixedSecret;
    use crate::types::{GivenName, UserName};
    let timestamp = |ts: &Option<prost_types::Timestamp>| {
        if let Some(ts) = ts
            && let Ok(time) = convert::from_timestamp("expiration", ts)
        {
            assert_eq!(
                &convert::timestamp(time),
                ts,
                "a timestamp changed on its way in"
            );
        }
    };
    let user_name = |name: &str| {
        if let Ok(parsed) = UserName::parse(name) {
            assert_eq!(UserName::parse(parsed.as_str()).ok(), Some(parsed));
        }
    };
    let secret = |kind: &'static str, text: &str| {
        if let Some(parsed) = PrefixedSecret::parse(kind, text) {
            let again = PrefixedSecret::parse(kind, &parsed.reveal()).map(|s| s.reveal());
            assert_eq!(again, Some(parsed.reveal()));
        }
    };
    if let Some(m) = message.downcast_ref::<pb::CreateApiKeyRequest>() {
        timestamp(&m.expiration);
    } else if let Some(m) = message.downcast_ref::<pb::CreatePreAuthKeyRequest>() {
        timestamp(&m.expiration);
        for tag in &m.acl_tags {
            let _ = GivenName::sanitize(tag);
        }
    } else if let Some(m) = message.downcast_ref::<pb::ExpireNodeRequest>() {
        timestamp(&m.expiry);
    } else if let Some(m) = message.downcast_ref::<pb::CreateUserRequest>() {
        user_name(&m.name);
    } else if let Some(m) = message.downcast_ref::<pb::RenameUserRequest>() {
        user_name(&m.new_name);
    } else if let Some(m) = message.downcast_ref::<pb::RenameNodeRequest>() {
        if let Ok(name) = GivenName::parse(&m.new_name) {
            let sanitized = GivenName::sanitize(name.as_str());
            assert!(GivenName::parse(sanitized.as_str()).is_ok());
        }
    } else if let Some(m) = message.downcast_ref::<pb::DebugCreateNodeRequest>() {
        for route in &m.routes {
            if let Ok(net) = route.trim().parse::<ipnet::IpNet>() {
                assert_eq!(net.to_string().parse::<ipnet::IpNet>().ok(), Some(net));
            }
        }
        user_name(&m.user);
    } else if let Some(m) = message.downcast_ref::<pb::RegisterNodeRequest>() {
        user_name(&m.user);
        let _ = m.key.parse::<crate::types::MachineKey>();
    } else if let Some(m) = message.downcast_ref::<pb::ExpireApiKeyRequest>() {
        secret(PrefixedSecret::API, &m.prefix);
    } else if let Some(m) = message.downcast_ref::<pb::SetApprovedRoutesRequest>() {
        for route in &m.routes {
            let _ = route.parse::<ipnet::IpNet>();
        }
    }
}

/// See [`grpc`], 34.
fn grpc_bearer(value: &[u8]) {
    use crate::types::secret::PrefixedSecret;
    let Ok(header) = axum::http::HeaderValue::from_bytes(value) else {
        return;
    };
    if let Ok(token) = crate::grpc::auth::bearer(Some(&header)) {
        assert!(!token.is_empty());
        assert_eq!(token, token.trim());
        if let Some(parsed) = PrefixedSecret::parse(PrefixedSecret::API, token) {
            assert!(PrefixedSecret::parse(PrefixedSecret::API, &parsed.reveal()).is_some());
        }
    }
}

/// See [`grpc`], 35.
fn grpc_admin_socket(body: &[u8]) {
    let mut input = Input(body);
    let pacing = input.byte().unwrap_or(0);
    let client = ScriptedIo::new(input.rest().to_vec(), pacing);
    let output = block_on(async {
        let mut server_end = crate::grpc::authority::relay(client, &crate::tasks::Tasks::new());
        let (output, _) = read_all(&mut server_end).await;
        output
    });
    const PREFACE_LEN: usize = 24;
    let Some(mut frames) = output.get(PREFACE_LEN..) else {
        return;
    };
    let mut block: Option<Vec<u8>> = None;
    while let Some((head, rest)) = frames.split_first_chunk::<9>() {
        let len = usize::from(head[0]) << 16 | usize::from(head[1]) << 8 | usize::from(head[2]);
        assert!(len <= 16_384, "a {len}-byte frame reached the server");
        let Some((payload, rest)) = rest.split_at_checked(len) else {
            panic!("the relay wrote a truncated frame");
        };
        let (kind, flags) = (head[3], head[4]);
        match kind {
            0x1 => {
                assert!(block.is_none(), "a header block interleaved");
                assert_eq!(flags & 0x8, 0, "a rewritten header block kept its padding");
                let skip = if flags & 0x20 != 0 { 5 } else { 0 };
                block = Some(payload.get(skip..).expect("priority fits").to_vec());
            }
            // A CONTINUATION outside a header block passes through untouched; the
            // server refuses it as a protocol error.
            0x9 if block.is_none() => {
                frames = rest;
                continue;
            }
            0x9 => block
                .as_mut()
                .expect("a continuation follows headers")
                .extend_from_slice(payload),
            _ => {}
        }
        if matches!(kind, 0x1 | 0x9) && flags & 0x4 != 0 {
            let block = block.take().expect("a block ends after it starts");
            let headers = loona_hpack::Decoder::new()
                .decode(&block)
                .expect("a rewritten header block needs no HPACK table");
            for (name, value) in headers {
                if name == b":authority" {
                    assert!(
                        axum::http::uri::Authority::try_from(value.as_slice()).is_ok(),
                        "an invalid :authority reached the server"
                    );
                }
            }
        }
        frames = rest;
    }
}

// ---------------------------------------------------------------------------
// The command line.

/// argv (NUL-separated words after the program name): Headscale's historical
/// spellings rewritten, then parsed by clap, and `routes` values classified.
/// (Rewriting is not idempotent on odd argv such as `-i=-i=6` or `-i 6 ctl …`,
/// which no guide spells, so that is not checked.)
pub fn cli_argv(data: &[u8]) {
    use clap::Parser;
    let mut argv = vec!["headway".to_owned()];
    if !data.is_empty() {
        argv.extend(
            data.split(|b| *b == 0)
                .map(|word| String::from_utf8_lossy(word).into_owned()),
        );
    }
    let rewritten = crate::cli::compat::rewrite(&argv);
    assert_eq!(
        rewritten.argv.first(),
        argv.first(),
        "the program name changed"
    );
    let _ = crate::cli::Cli::try_parse_from(&rewritten.argv);
    let _ = crate::cli::compat::classify_routes(&argv[1..]);
}

// ---------------------------------------------------------------------------
// Seeds.

/// The seed corpus: (target, file name, bytes), made with headway's own encoders
/// and written to `fuzz/seeds/` by the ignored test `write_seed_corpus`. One seed is
/// kept by hand instead: `config/config-example`, a snapshot of
/// `config-example.yaml` behind the selector byte 0 (it changes with the config).
pub fn seeds() -> Vec<(&'static str, &'static str, Vec<u8>)> {
    let mut out: Vec<(&'static str, &'static str, Vec<u8>)> = Vec::new();
    let cat = |parts: &[&[u8]]| parts.concat();

    // noise: records (op 0 = seal, 3 = early payload) and a genuine initiation.
    let op = |kind: u8, bytes: &[u8]| cat(&[&[kind], &(bytes.len() as u16).to_be_bytes(), bytes]);
    let h2_preface = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00";
    out.push((
        "noise",
        "server-records",
        cat(&[&[0, 0], &op(0, h2_preface), &op(0, b"more")]),
    ));
    out.push((
        "noise",
        "client-early-payload",
        cat(&[
            &[1, 0x83],
            &op(3, br#"{"nodeKeyChallenge":"chalpub:00"}"#),
            &op(0, h2_preface),
        ]),
    ));
    out.push((
        "noise",
        "flipped-record",
        cat(&[&[0, 5], &op(0, b"ok"), &op(2, b"bad")]),
    ));
    out.push((
        "noise",
        "initiation-genuine",
        cat(&[&[4], &[0x42; 32], &130u16.to_be_bytes()]),
    ));
    out.push((
        "noise",
        "initiation-flipped",
        cat(&[&[4], &[0x42; 32], &130u16.to_be_bytes(), &[50, 1]]),
    ));
    let mut init = vec![0u8; 101];
    init[..2].copy_from_slice(&130u16.to_be_bytes());
    init[2] = 1;
    init[3..5].copy_from_slice(&96u16.to_be_bytes());
    out.push(("noise", "initiation-header", cat(&[&[2], &init])));
    out.push(("noise", "initiation-stream", cat(&[&[3, 7], &init])));
    out.push((
        "noise",
        "response-error",
        cat(&[&[5, 0], &[3, 0, 5], b"nope!"]),
    ));

    // control_requests.
    out.push((
        "control_requests",
        "register-authkey",
        cat(&[&[0], br#"{"Version":142,"NodeKey":"nodekey:0000000000000000000000000000000000000000000000000000000000000001","OldNodeKey":"nodekey:0000000000000000000000000000000000000000000000000000000000000000","Auth":{"AuthKey":"hskey-auth-abcdefABCDEF-0123456789"},"Expiry":"0001-01-01T00:00:00Z","Followup":"","Hostinfo":{"Hostname":"My Laptop!","OS":"linux","RoutableIPs":["10.0.0.0/24","::/0"],"RequestTags":["tag:web"]},"Ephemeral":false,"NLKey":null}"#]),
    ));
    out.push((
        "control_requests",
        "register-logout",
        cat(&[&[0], br#"{"Version":113,"NodeKey":"nodekey:0000000000000000000000000000000000000000000000000000000000000002","Expiry":"2001-02-03T04:05:06Z","Followup":"https://headway.example.com/register/abc"}"#]),
    ));
    out.push((
        "control_requests",
        "map-stream",
        cat(&[&[1], br#"{"Version":142,"Compress":"zstd","KeepAlive":true,"NodeKey":"nodekey:0000000000000000000000000000000000000000000000000000000000000003","DiscoKey":"discokey:0000000000000000000000000000000000000000000000000000000000000004","Stream":true,"Hostinfo":{"Hostname":"srv","NetInfo":{"PreferredDERP":999}},"Endpoints":["192.0.2.1:41641","[2001:db8::1]:41641"],"EndpointTypes":[1,2]}"#]),
    ));
    out.push((
        "control_requests",
        "map-lite",
        cat(&[&[1], br#"{"Version":113,"OmitPeers":true,"Stream":false,"Hostinfo":{"Hostname":"x"},"Endpoints":null,"DebugFlags":null}"#]),
    ));

    // websocket: masked client frames (binary, ping, text, close).
    let frame = |opcode: u8, fin: bool, payload: &[u8]| {
        let mask = [0x37, 0xfa, 0x21, 0x3d];
        let mut f = vec![(if fin { 0x80 } else { 0 }) | opcode];
        match payload.len() {
            n if n < 126 => f.push(0x80 | n as u8),
            n => {
                f.push(0x80 | 126);
                f.extend_from_slice(&(n as u16).to_be_bytes());
            }
        }
        f.extend_from_slice(&mask);
        f.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        f
    };
    out.push((
        "websocket",
        "binary-then-close",
        cat(&[
            &[0],
            &frame(2, true, b"\x02\x00\x00\x00\x04derp"),
            &frame(8, true, &[0x03, 0xe8]),
        ]),
    ));
    out.push((
        "websocket",
        "fragmented-and-ping",
        cat(&[
            &[0x85],
            &frame(2, false, b"half"),
            &frame(9, true, b"ping"),
            &frame(0, true, b"rest"),
            &frame(2, true, &[0x5a; 300]),
        ]),
    ));
    out.push(("websocket", "text", cat(&[&[3], &frame(1, true, b"hello")])));

    // derp.
    let derp_frame =
        |kind: u8, payload: &[u8]| cat(&[&[kind], &(payload.len() as u32).to_be_bytes(), payload]);
    let client_public = crate::relay::frame::public_key(derp_client_key());
    let info = br#"{"version":2,"CanAckPings":true,"IsProber":false}"#;
    let frames = cat(&[
        &derp_frame(0x04, &cat(&[client_public.as_bytes(), b"\x00\x00hello"])),
        &derp_frame(
            0x04,
            &cat(&[
                &[9u8; 32],
                b"TS\xf0\x9f\x92\xacdisco-packet-with-enough-bytes-in-it-here",
            ]),
        ),
        &derp_frame(0x12, b"pingpong"),
        &derp_frame(0x07, &[1]),
        &derp_frame(0x06, &[]),
        &derp_frame(0x30, b"future frame"),
    ]);
    out.push(("derp", "frames", cat(&[&[0, 0x55, 3], &frames])));
    out.push(("derp", "client-info-json", cat(&[&[2], info])));
    out.push((
        "derp",
        "client-info-raw",
        cat(&[&[1], &box_client_info(info)]),
    ));
    out.push((
        "derp",
        "relay-session",
        cat(&[
            &[3],
            &(info.len() as u16).to_be_bytes(),
            info,
            &[0],
            &frames,
        ]),
    ));

    // stun: a binding request without and with FINGERPRINT.
    let mut request = vec![0x00, 0x01, 0x00, 0x00, 0x21, 0x12, 0xa4, 0x42];
    request.extend_from_slice(b"headway-txid");
    out.push(("stun", "binding-v4", cat(&[&[0], &request])));
    let mut with_fp = request.clone();
    with_fp[3] = 8;
    let crc = crc32fast::hash(&with_fp) ^ 0x5354_554e;
    with_fp.extend_from_slice(&[0x80, 0x28, 0x00, 0x04]);
    with_fp.extend_from_slice(&crc.to_be_bytes());
    out.push(("stun", "binding-fingerprint-v6", cat(&[&[1], &with_fp])));

    // dns: queries made with the library the listener parses them with.
    {
        use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query};
        use hickory_proto::rr::{Name, RecordType};
        let query = |name: &str, kind: RecordType, edns: bool| {
            let mut m = Message::new(0x1234, MessageType::Query, OpCode::Query);
            m.add_query(Query::query(
                Name::from_ascii(name).expect("a fixed name"),
                kind,
            ));
            if edns {
                let mut e = Edns::new();
                e.set_max_payload(1232);
                m.set_edns(e);
            }
            m.to_vec().expect("a query encodes")
        };
        out.push((
            "dns",
            "txt-challenge",
            cat(&[
                &[0],
                &query(
                    "_acme-challenge.laptop.ts.example.com.",
                    RecordType::TXT,
                    true,
                ),
            ]),
        ));
        out.push((
            "dns",
            "soa-apex-tcp",
            cat(&[&[1], &query("ts.example.com.", RecordType::SOA, false)]),
        ));
        out.push((
            "dns",
            "outside-zone",
            cat(&[&[0], &query("example.org.", RecordType::A, false)]),
        ));
    }

    // config, records, DERP maps.
    out.push((
        "config",
        "legacy-keys",
        cat(&[&[0], b"server_url: http://127.0.0.1:8080\nip_prefixes:\n  - 100.64.0.0/10\ndns_config:\n  magic_dns: true\n  base_domain: ts.example.com\n<<: {log_level: debug}\n"]),
    ));
    out.push((
        "config",
        "extra-records",
        cat(&[&[1], br#"[{"name":"grafana.ts.example.com","type":"A","value":"100.64.0.3"},{"name":"x.ts.example.com","type":"AAAA","value":"fd7a:115c:a1e0::3"}]"#]),
    ));
    out.push((
        "config",
        "derp-paths",
        cat(&[&[2], b"regions:\n  900:\n    regionid: 900\n    regioncode: hw\n    regionname: headway\n    nodes:\n      - name: 900a\n        regionid: 900\n        hostname: derp.example.com\n        stunport: 3478\n        derpport: 443\n"]),
    ));
    out.push((
        "config",
        "derp-urls",
        cat(&[&[3], br#"{"Regions":{"1":{"RegionID":1,"RegionCode":"r1","RegionName":"One","Nodes":[{"Name":"1a","RegionID":1,"HostName":"derp1.example.com","IPv4":"192.0.2.10","STUNPort":3478}]},"2":null},"HomeParams":{"RegionScore":{"1":0.9}}}"#]),
    ));

    // policy: HuJSON with comments and trailing commas.
    out.push((
        "policy",
        "acls-and-ssh",
        br#"{
  // who may reach what
  "groups": {"group:admins": ["alice@example.com",],},
  "tagOwners": {"tag:server": ["group:admins"], "tag:router": ["alice@"]},
  "hosts": {"db": "100.64.0.3/32"},
  "acls": [
    {"action": "accept", "src": ["group:admins"], "dst": ["*:*"]},
    {"action": "accept", "src": ["bob@example.com"], "dst": ["tag:server:22,80-90", "db:5432", "192.168.1.0/24:*"]},
    /* exit traffic */ {"action": "accept", "src": ["autogroup:member"], "dst": ["autogroup:internet:*"]},
  ],
  "ssh": [{"action": "check", "src": ["autogroup:member"], "dst": ["autogroup:self"], "users": ["autogroup:nonroot", "root"], "checkPeriod": "12h"}],
  "nodeAttrs": [{"target": ["*"], "attr": ["funnel"]}],
  "autoApprovers": {"routes": {"192.168.0.0/16": ["tag:router"]}, "exitNode": ["tag:router"]},
  "tests": [{"src": "alice@example.com", "accept": ["100.64.0.3:22"]}],
}"#
        .to_vec(),
    ));
    out.push((
        "policy",
        "grants",
        br#"{"grants": [{"src": ["autogroup:member"], "dst": ["autogroup:self"], "ip": ["*"]}, {"src": ["tag:server"], "dst": ["192.168.1.0/24"], "ip": ["tcp:443", "icmp:*"], "via": ["tag:router"]}]}"#.to_vec(),
    ));

    // grpc: requests encoded by prost, a Bearer header, an admin-socket stream.
    {
        use crate::grpc::pb;
        use prost::Message;
        let timestamp = Some(prost_types::Timestamp {
            seconds: 1_900_000_000,
            nanos: 5,
        });
        out.push((
            "grpc",
            "create-user",
            cat(&[
                &[30],
                &pb::CreateUserRequest {
                    name: "alice".into(),
                    display_name: "Alice".into(),
                    email: "alice@example.com".into(),
                    picture_url: String::new(),
                }
                .encode_to_vec(),
            ]),
        ));
        out.push((
            "grpc",
            "create-preauth-key",
            cat(&[
                &[21],
                &pb::CreatePreAuthKeyRequest {
                    user: 1,
                    reusable: true,
                    ephemeral: false,
                    expiration: timestamp,
                    acl_tags: vec!["tag:server".into()],
                }
                .encode_to_vec(),
            ]),
        ));
        out.push((
            "grpc",
            "rename-node",
            cat(&[
                &[14],
                &pb::RenameNodeRequest {
                    node_id: 3,
                    new_name: "db-1".into(),
                }
                .encode_to_vec(),
            ]),
        ));
        out.push((
            "grpc",
            "debug-create-node",
            cat(&[
                &[16],
                &pb::DebugCreateNodeRequest {
                    user: "alice".into(),
                    key: "mkey:00".into(),
                    name: "n".into(),
                    routes: vec!["10.0.0.0/8".into()],
                }
                .encode_to_vec(),
            ]),
        ));
        out.push((
            "grpc",
            "bearer",
            cat(&[&[34], b"Bearer hskey-api-abcdefABCDEF-0123456789xyz"]),
        ));
        let block = {
            let mut encoder = loona_hpack::Encoder::new();
            encoder.encode(vec![
                (&b":method"[..], &b"POST"[..]),
                (b":scheme", b"http"),
                (b":path", b"/headscale.v1.HeadscaleService/ListUsers"),
                (b":authority", b"var%2Frun%2Fheadscale.sock"),
                (b"content-type", b"application/grpc"),
            ])
        };
        let mut stream = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
        stream.extend_from_slice(&[0, 0, 0, 4, 0, 0, 0, 0, 0]);
        let len = block.len();
        stream.extend_from_slice(&[
            (len >> 16) as u8,
            (len >> 8) as u8,
            len as u8,
            1,
            4,
            0,
            0,
            0,
            1,
        ]);
        stream.extend_from_slice(&block);
        stream.extend_from_slice(&[0, 0, 5, 0, 1, 0, 0, 0, 1, 0, 0, 0, 0, 0]);
        out.push(("grpc", "admin-socket", cat(&[&[35, 0], &stream])));
    }

    // cli_argv: old and new spellings, NUL-separated.
    for (name, line) in [
        ("namespaces-create", "namespaces create default"),
        (
            "nodes-register-n",
            "-n default nodes register --key mkey:00",
        ),
        ("routes-enable", "routes enable -i=6 -r 10.0.0.0/24"),
        (
            "ctl-preauthkeys",
            "ctl preauthkeys create --user 1 --reusable --expiration 90d",
        ),
        (
            "policy-check",
            "policy check --file /etc/headway/policy.hujson",
        ),
    ] {
        out.push(("cli_argv", name, line.replace(' ', "\0").into_bytes()));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn seeds_dir() -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fuzz/seeds")
    }

    /// Every seed (and every regression input kept beside them) runs through its
    /// target without a panic: the fuzz targets' checks run in every `cargo test`.
    #[test]
    fn every_seed_runs_through_its_target() {
        let mut ran = 0;
        for target in TARGETS {
            let dir = seeds_dir().join(target);
            let entries = std::fs::read_dir(&dir)
                .unwrap_or_else(|err| panic!("{} is missing: {err}", dir.display()));
            for entry in entries {
                let path = entry.unwrap().path();
                let data = std::fs::read(&path).unwrap();
                assert!(run(target, &data), "unknown target {target}");
                ran += 1;
            }
        }
        assert!(ran >= TARGETS.len(), "only {ran} seeds ran");
    }

    /// A target added to `fuzz/` without an entry here would run without seeds and
    /// outside `every_seed_runs_through_its_target`.
    #[test]
    fn every_fuzz_target_has_an_entry_point() {
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fuzz/fuzz_targets");
        let mut files: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| {
                e.unwrap()
                    .path()
                    .file_stem()
                    .unwrap()
                    .to_string_lossy()
                    .into_owned()
            })
            .collect();
        files.sort();
        let mut names: Vec<String> = TARGETS.iter().map(|t| (*t).to_owned()).collect();
        names.sort();
        assert_eq!(files, names);
    }

    /// The committed seeds are the ones [`seeds`] makes (seeds with random
    /// parts excepted): rerun with `--ignored` to rewrite them after a change.
    #[test]
    fn seed_files_match_their_generator() {
        for (target, name, data) in seeds() {
            let path = seeds_dir().join(target).join(name);
            let on_disk = std::fs::read(&path)
                .unwrap_or_else(|err| panic!("{} is missing: {err}", path.display()));
            assert_eq!(on_disk, data, "{} is stale", path.display());
        }
    }

    #[test]
    #[ignore = "writes fuzz/seeds/; run by hand after changing seeds()"]
    fn write_seed_corpus() {
        for (target, name, data) in seeds() {
            let dir = seeds_dir().join(target);
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(dir.join(name), data).unwrap();
        }
    }
}

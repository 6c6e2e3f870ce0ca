//! The Noise transport in memory: handshake, records and their failure modes,
//! over `tokio::io::duplex` with our own initiator as the client.

use super::*;
use std::sync::{Arc, Mutex};
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream, duplex};

const VERSION: u16 = 142;

fn server_key() -> ServerKey {
    ServerKey::from_private(&PrivateKey::generate())
}

/// Records every byte read through it, to inspect the wire.
struct Tap<IO> {
    io: IO,
    seen: Arc<Mutex<Vec<u8>>>,
}

impl<IO: AsyncRead + Unpin> AsyncRead for Tap<IO> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        ready!(Pin::new(&mut self.io).poll_read(cx, buf))?;
        let new = buf.filled()[before..].to_vec();
        self.seen.lock().unwrap().extend_from_slice(&new);
        Poll::Ready(Ok(()))
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for Tap<IO> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

/// A connected pair over an in-memory pipe: (server, client, client's machine key).
async fn connect<IO: AsyncRead + AsyncWrite + Unpin>(
    server_io: DuplexStream,
    client_io: IO,
) -> (NoiseStream<DuplexStream>, NoiseStream<IO>, MachineKey) {
    let key = server_key();
    let machine = PrivateKey::generate();
    let (initiator, init) = Initiator::new(&key.public(), &machine, VERSION).unwrap();
    let accepted = accept(&key, &init).unwrap();
    assert_eq!(accepted.protocol_version(), VERSION);
    let peer = accepted.peer();
    assert_eq!(peer, MachineKey::from_bytes(public_of(machine.as_bytes())));
    let mut server = accepted.into_stream(server_io);
    let (flushed, client) = tokio::join!(server.flush(), initiator.finish(client_io));
    flushed.unwrap();
    (server, client.unwrap(), peer)
}

async fn pair() -> (
    NoiseStream<DuplexStream>,
    NoiseStream<DuplexStream>,
    MachineKey,
) {
    let (server_io, client_io) = duplex(1 << 20);
    connect(server_io, client_io).await
}

fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 7 + i / 251) as u8).collect()
}

/// A record sealed by hand with the given 12-byte nonce.
fn raw_record(aead: &ChaCha20Poly1305, nonce: [u8; 12], plaintext: &[u8]) -> Vec<u8> {
    let mut body = plaintext.to_vec();
    let tag = aead
        .encrypt_in_place_detached(&nonce.into(), &[], &mut body)
        .unwrap();
    body.extend_from_slice(&tag);
    let mut record = vec![MSG_RECORD];
    record.extend_from_slice(&(body.len() as u16).to_be_bytes());
    record.extend_from_slice(&body);
    record
}

fn be_nonce(counter: u64) -> [u8; 12] {
    let mut nonce = [0u8; 12];
    nonce[4..].copy_from_slice(&counter.to_be_bytes());
    nonce
}

/// Reads until the stream fails; returns the error (panics on a clean EOF).
async fn read_error<IO: AsyncRead + Unpin>(stream: &mut NoiseStream<IO>) -> io::Error {
    let mut buf = [0u8; 8192];
    loop {
        match stream.read(&mut buf).await {
            Ok(0) => panic!("stream ended cleanly instead of failing"),
            Ok(_) => continue,
            Err(err) => return err,
        }
    }
}

fn noise_error(err: &io::Error) -> &Error {
    err.get_ref()
        .and_then(|inner| inner.downcast_ref::<Error>())
        .unwrap_or_else(|| panic!("not a noise error: {err:?}"))
}

#[tokio::test]
async fn small_and_large_writes_round_trip_in_both_directions() {
    let (mut server, mut client, _) = pair().await;
    let large = pattern(3 * MAX_PLAINTEXT_LEN + 1234);
    for payload in [b"hello".to_vec(), large.clone()] {
        client.write_all(&payload).await.unwrap();
        client.flush().await.unwrap();
        let mut got = vec![0u8; payload.len()];
        server.read_exact(&mut got).await.unwrap();
        assert_eq!(got, payload);

        server.write_all(&payload).await.unwrap();
        server.flush().await.unwrap();
        let mut got = vec![0u8; payload.len()];
        client.read_exact(&mut got).await.unwrap();
        assert_eq!(got, payload);
    }
}

#[tokio::test]
async fn writes_larger_than_the_pipe_buffer_complete() {
    // A 16 KiB pipe forces `poll_write` to wait for the reader more than once.
    let (server_io, client_io) = duplex(16 * 1024);
    let (mut server, mut client, _) = connect(server_io, client_io).await;
    let payload = pattern(300 * 1024);
    let expected = payload.clone();
    let writer = tokio::spawn(async move {
        server.write_all(&payload).await.unwrap();
        server.flush().await.unwrap();
        server
    });
    let mut got = vec![0u8; expected.len()];
    client.read_exact(&mut got).await.unwrap();
    assert_eq!(got, expected);
    writer.await.unwrap();
}

#[tokio::test]
async fn every_record_on_the_wire_is_at_most_4096_bytes() {
    let (server_io, client_io) = duplex(1 << 20);
    let seen = Arc::new(Mutex::new(Vec::new()));
    let tap = Tap {
        io: client_io,
        seen: seen.clone(),
    };
    let (mut server, mut client, _) = connect(server_io, tap).await;
    let payload = pattern(5 * MAX_PLAINTEXT_LEN + 17);
    // One big write and many odd-sized ones.
    server.write_all(&payload).await.unwrap();
    for chunk in payload.chunks(5000) {
        server.write_all(chunk).await.unwrap();
    }
    server.flush().await.unwrap();
    let mut got = vec![0u8; 2 * payload.len()];
    client.read_exact(&mut got).await.unwrap();
    assert_eq!(&got[..payload.len()], &payload[..]);
    assert_eq!(&got[payload.len()..], &payload[..]);

    let wire = seen.lock().unwrap().clone();
    assert_eq!(&wire[..3], &[MSG_RESPONSE, 0, 48]);
    let mut rest = &wire[RESPONSE_LEN..];
    let mut records = 0;
    let mut full = 0;
    while !rest.is_empty() {
        assert_eq!(rest[0], MSG_RECORD);
        let len = usize::from(u16::from_be_bytes([rest[1], rest[2]]));
        assert!(HEADER_LEN + len <= MAX_RECORD_LEN, "record of {len} bytes");
        if HEADER_LEN + len == MAX_RECORD_LEN {
            full += 1;
        }
        records += 1;
        rest = &rest[HEADER_LEN + len..];
    }
    assert!(records >= 6 && full >= 5, "{records} records, {full} full");
}

#[tokio::test]
async fn a_record_with_a_little_endian_nonce_is_refused_after_the_first() {
    let (mut server, mut client, _) = pair().await;
    let aead = client.tx.aead.clone();
    // At counter 0 both byte orders agree; at 1 Go's big-endian order differs.
    let mut le_nonce = [0u8; 12];
    le_nonce[4..].copy_from_slice(&1u64.to_le_bytes());
    let mut wire = raw_record(&aead, be_nonce(0), b"first");
    wire.extend(raw_record(&aead, le_nonce, b"second"));
    client.io.write_all(&wire).await.unwrap();

    let mut got = [0u8; 5];
    server.read_exact(&mut got).await.unwrap();
    assert_eq!(&got, b"first");
    let err = read_error(&mut server).await;
    assert!(matches!(noise_error(&err), Error::Decrypt), "{err}");
    // The stream stays failed rather than resynchronising.
    let err = read_error(&mut server).await;
    assert!(matches!(noise_error(&err), Error::Broken), "{err}");
}

#[tokio::test]
async fn big_endian_nonces_at_higher_counters_are_accepted() {
    let (mut server, mut client, _) = pair().await;
    let aead = client.tx.aead.clone();
    let mut wire = Vec::new();
    for counter in 0..3 {
        wire.extend(raw_record(
            &aead,
            be_nonce(counter),
            &[b'a' + counter as u8],
        ));
    }
    client.io.write_all(&wire).await.unwrap();
    let mut got = [0u8; 3];
    server.read_exact(&mut got).await.unwrap();
    assert_eq!(&got, b"abc");
}

#[tokio::test]
async fn zero_length_records_are_skipped() {
    let (mut server, mut client, _) = pair().await;
    client.seal(&[]).unwrap();
    client.seal(&[]).unwrap();
    client.seal(b"data").unwrap();
    let wire = std::mem::take(&mut client.out);
    client.io.write_all(&wire).await.unwrap();
    let mut got = [0u8; 4];
    server.read_exact(&mut got).await.unwrap();
    assert_eq!(&got, b"data");
}

#[tokio::test]
async fn a_tampered_ciphertext_ends_the_connection() {
    let (mut server, mut client, _) = pair().await;
    client.seal(b"hello, control").unwrap();
    let mut wire = std::mem::take(&mut client.out);
    wire[HEADER_LEN + 2] ^= 0x01;
    client.io.write_all(&wire).await.unwrap();
    let err = read_error(&mut server).await;
    assert!(matches!(noise_error(&err), Error::Decrypt), "{err}");
}

#[tokio::test]
async fn an_oversized_record_length_ends_the_connection() {
    let (mut server, mut client, _) = pair().await;
    // 3 + 4094 = 4097 bytes: one more than Go's maxMessageSize.
    client
        .io
        .write_all(&[MSG_RECORD, 0x0f, 0xfe])
        .await
        .unwrap();
    let err = read_error(&mut server).await;
    assert!(
        matches!(noise_error(&err), Error::RecordTooBig(4097)),
        "{err}"
    );
}

#[tokio::test]
async fn a_wrong_record_type_ends_the_connection() {
    let (mut server, mut client, _) = pair().await;
    client
        .io
        .write_all(&[MSG_ERROR, 0, 4, 1, 2, 3, 4])
        .await
        .unwrap();
    let err = read_error(&mut server).await;
    assert!(
        matches!(noise_error(&err), Error::UnexpectedType { got: 3, want: 4 }),
        "{err}"
    );
}

#[tokio::test]
async fn garbage_bytes_end_the_connection() {
    let (mut server, mut client, _) = pair().await;
    client
        .io
        .write_all(b"GET / HTTP/1.1\r\n\r\n")
        .await
        .unwrap();
    let err = read_error(&mut server).await;
    assert!(
        matches!(noise_error(&err), Error::UnexpectedType { .. }),
        "{err}"
    );

    // A plausible header followed by random ciphertext fails to decrypt.
    let (mut server, mut client, _) = pair().await;
    let mut wire = vec![MSG_RECORD, 0, 40];
    wire.extend(pattern(40));
    client.io.write_all(&wire).await.unwrap();
    let err = read_error(&mut server).await;
    assert!(matches!(noise_error(&err), Error::Decrypt), "{err}");

    // Too short to even hold a tag.
    let (mut server, mut client, _) = pair().await;
    client
        .io
        .write_all(&[MSG_RECORD, 0, 3, 1, 2, 3])
        .await
        .unwrap();
    let err = read_error(&mut server).await;
    assert!(matches!(noise_error(&err), Error::Decrypt), "{err}");
}

#[tokio::test]
async fn a_record_cut_short_is_an_unexpected_eof_and_a_clean_close_is_not() {
    let (mut server, client, _) = pair().await;
    let mut client_io = client.io;
    client_io
        .write_all(&[MSG_RECORD, 0, 100, 1, 2])
        .await
        .unwrap();
    drop(client_io);
    let err = read_error(&mut server).await;
    assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);

    let (mut server, client, _) = pair().await;
    drop(client);
    let mut buf = [0u8; 16];
    assert_eq!(server.read(&mut buf).await.unwrap(), 0);
}

#[tokio::test]
async fn the_nonce_counter_stops_before_two_to_the_64_minus_one() {
    let (mut server, mut client, _) = pair().await;
    client.set_counters(0, u64::MAX - 1);
    server.set_counters(u64::MAX - 1, 0);
    client.write_all(b"last").await.unwrap();
    client.flush().await.unwrap();
    let mut got = [0u8; 4];
    server.read_exact(&mut got).await.unwrap();
    assert_eq!(&got, b"last");
    let err = client.write_all(b"one too many").await.unwrap_err();
    assert!(matches!(noise_error(&err), Error::NonceExhausted), "{err}");
}

fn initiation(key: &ServerKey, version: u16) -> [u8; INITIATION_LEN] {
    Initiator::new(&key.public(), &PrivateKey::generate(), version)
        .unwrap()
        .1
}

#[test]
fn malformed_initiations_are_refused() {
    let key = server_key();
    let init = initiation(&key, VERSION);
    assert!(matches!(
        accept(&key, &init[..100]),
        Err(Error::InitiationSize(100))
    ));
    assert!(matches!(
        accept(&key, &[init.as_slice(), &[0]].concat()),
        Err(Error::InitiationSize(102))
    ));

    let mut wrong_type = init;
    wrong_type[2] = MSG_RECORD;
    assert!(matches!(
        accept(&key, &wrong_type),
        Err(Error::UnexpectedType { got: 4, want: 1 })
    ));

    let mut wrong_length = init;
    wrong_length[4] = 95;
    assert!(matches!(
        accept(&key, &wrong_length),
        Err(Error::WrongLength { got: 95, want: 96 })
    ));

    let mut tampered = init;
    tampered[60] ^= 0x80;
    assert!(matches!(accept(&key, &tampered), Err(Error::Handshake(_))));

    assert!(matches!(
        accept(&key, &[0u8; INITIATION_LEN]),
        Err(Error::UnexpectedType { got: 0, .. })
    ));
}

#[test]
fn the_version_is_bound_into_the_handshake_by_the_prologue() {
    let key = server_key();
    let mut init = initiation(&key, 142);
    init[..2].copy_from_slice(&113u16.to_be_bytes());
    assert!(matches!(accept(&key, &init), Err(Error::Handshake(_))));
}

#[test]
fn an_initiation_for_another_server_key_is_refused() {
    let stale = server_key();
    let current = server_key();
    let init = initiation(&stale, VERSION);
    assert!(matches!(accept(&current, &init), Err(Error::Handshake(_))));
}

#[test]
fn any_version_is_accepted_at_this_layer() {
    // Refusing old clients is the HTTP layer's policy; the transport just reports.
    let key = server_key();
    for version in [1, 112, 113, 142, u16::MAX] {
        let accepted = accept(&key, &initiation(&key, version)).unwrap();
        assert_eq!(accepted.protocol_version(), version);
    }
}

#[tokio::test]
async fn initiations_are_read_from_a_raw_stream_header_first() {
    let key = server_key();
    let init = initiation(&key, VERSION);

    let mut whole = &init[..];
    let read = read_initiation(&mut whole).await.unwrap();
    assert_eq!(read, init);

    let mut truncated = &init[..60];
    let err = read_initiation(&mut truncated).await.unwrap_err();
    assert!(
        matches!(&err, Error::Io(e) if e.kind() == io::ErrorKind::UnexpectedEof),
        "{err}"
    );

    // A wrong header is refused before the payload is awaited.
    let mut wrong_type = &[0, 142, 2, 0, 96][..];
    assert!(matches!(
        read_initiation(&mut wrong_type).await,
        Err(Error::UnexpectedType { got: 2, want: 1 })
    ));
    let mut wrong_length = &[0, 142, 1, 0x10, 0][..];
    assert!(matches!(
        read_initiation(&mut wrong_length).await,
        Err(Error::WrongLength {
            got: 4096,
            want: 96
        })
    ));
}

#[tokio::test]
async fn initiate_and_accept_over_one_raw_stream() {
    let key = server_key();
    let machine = PrivateKey::generate();
    let (mut server_io, client_io) = duplex(4096);
    let server_key = key.clone();
    let server = tokio::spawn(async move {
        let init = read_initiation(&mut server_io).await.unwrap();
        let accepted = accept(&server_key, &init).unwrap();
        let peer = accepted.peer();
        let mut stream = accepted.into_stream(server_io);
        stream.write_all(b"welcome").await.unwrap();
        stream.flush().await.unwrap();
        let mut got = [0u8; 5];
        stream.read_exact(&mut got).await.unwrap();
        (peer, got)
    });
    let mut client = initiate(client_io, &key.public(), &machine, VERSION)
        .await
        .unwrap();
    let mut got = [0u8; 7];
    client.read_exact(&mut got).await.unwrap();
    assert_eq!(&got, b"welcome");
    client.write_all(b"hello").await.unwrap();
    client.flush().await.unwrap();
    let (peer, got) = server.await.unwrap();
    assert_eq!(&got, b"hello");
    assert_eq!(peer, MachineKey::from_bytes(public_of(machine.as_bytes())));
}

#[tokio::test]
async fn a_server_error_frame_reaches_the_initiator() {
    let key = server_key();
    let (initiator, _) = Initiator::new(&key.public(), &PrivateKey::generate(), VERSION).unwrap();
    let frame = [&[MSG_ERROR, 0, 4][..], b"nope"].concat();
    let err = initiator.finish(&frame[..]).await.err().unwrap();
    assert!(matches!(&err, Error::Refused(m) if m == "nope"), "{err}");

    let (initiator, _) = Initiator::new(&key.public(), &PrivateKey::generate(), VERSION).unwrap();
    let err = initiator.finish(&b""[..]).await.err().unwrap();
    assert!(matches!(err, Error::Io(_)), "{err}");
}

#[tokio::test]
async fn the_early_payload_is_the_first_plaintext_and_parses() {
    let (mut server, mut client, _) = pair().await;
    server
        .write_all(&node_key_challenge_payload())
        .await
        .unwrap();
    server.write_all(b"after").await.unwrap();
    server.flush().await.unwrap();

    let json = client.read_early_payload().await.unwrap().unwrap();
    let value: serde_json::Value = serde_json::from_slice(&json).unwrap();
    let object = value.as_object().unwrap();
    assert_eq!(object.len(), 1);
    let challenge = object["nodeKeyChallenge"].as_str().unwrap();
    let hex_part = challenge.strip_prefix("chalpub:").unwrap();
    assert_eq!(hex_part.len(), 64);
    assert!(
        hex_part
            .bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
    );
    assert_ne!(hex_part, "0".repeat(64));
    let mut rest = [0u8; 5];
    client.read_exact(&mut rest).await.unwrap();
    assert_eq!(&rest, b"after");

    // A fresh challenge per connection.
    assert_ne!(node_key_challenge_payload(), node_key_challenge_payload());
}

#[tokio::test]
async fn without_an_early_payload_the_sniffed_bytes_are_kept() {
    let (mut server, mut client, _) = pair().await;
    server.write_all(b"0123456789abc").await.unwrap();
    server.flush().await.unwrap();
    assert_eq!(client.read_early_payload().await.unwrap(), None);
    let mut got = [0u8; 13];
    client.read_exact(&mut got).await.unwrap();
    assert_eq!(&got, b"0123456789abc");
}

#[test]
fn early_payload_framing() {
    let payload = early_payload(b"{}");
    assert_eq!(payload, b"\xff\xff\xffTS\x00\x00\x00\x02{}");
}

#[tokio::test]
async fn the_handshake_response_and_early_payload_leave_in_one_write() {
    // Go's server corks both into one TCP write; a tap on the server's writes shows ours does too.
    struct CountWrites {
        writes: Arc<Mutex<Vec<usize>>>,
    }
    impl AsyncWrite for CountWrites {
        fn poll_write(
            self: Pin<&mut Self>,
            _: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<io::Result<usize>> {
            self.writes.lock().unwrap().push(buf.len());
            Poll::Ready(Ok(buf.len()))
        }
        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
        fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }
    let key = server_key();
    let accepted = accept(&key, &initiation(&key, VERSION)).unwrap();
    let writes = Arc::new(Mutex::new(Vec::new()));
    let mut stream = accepted.into_stream(CountWrites {
        writes: writes.clone(),
    });
    let payload = node_key_challenge_payload();
    stream.write_all(&payload).await.unwrap();
    stream.flush().await.unwrap();
    assert_eq!(
        *writes.lock().unwrap(),
        vec![RESPONSE_LEN + HEADER_LEN + payload.len() + TAG_LEN]
    );
}

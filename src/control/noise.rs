//! TS2021's base transport over any `AsyncRead + AsyncWrite`: the Noise IK
//! handshake (`Noise_IK_25519_ChaChaPoly_BLAKE2s`), the record layer and the
//! early payload. Both sides: the server's [`accept`] and the client's [`initiate`]
//! (tests and the load generator).
//!
//! Knows bytes and keys, not HTTP, nodes or the database. Mirrors Tailscale's
//! `control/controlbase`: the handshake is standard Noise (done by snow), but records
//! put the nonce counter **big-endian** into the nonce, unlike the Noise spec and
//! snow's `TransportState`, so records are sealed here with the raw split keys.
//!
//! Wire forms (docs: protocol.md §2.4–2.6):
//! - initiation, client → server, 101 bytes: BE u16 version, `01`, BE u16 `96`, payload;
//! - response, server → client, 51 bytes: `02`, BE u16 `48`, payload;
//! - record: `04`, BE u16 ciphertext length, ciphertext; at most 4096 bytes in all.

use super::key::{ServerKey, public_of};
use crate::types::{MachineKey, PrivateKey};
use chacha20poly1305::aead::{AeadInPlace, KeyInit};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce, Tag};
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};

/// The Noise protocol name, fixed by Tailscale.
pub const PROTOCOL_NAME: &str = "Noise_IK_25519_ChaChaPoly_BLAKE2s";
/// Size of the client's handshake initiation, header included.
pub const INITIATION_LEN: usize = 101;
/// Size of the server's handshake response, header included.
pub const RESPONSE_LEN: usize = 51;
/// The largest record on the wire, header included (Go's `maxMessageSize`).
pub const MAX_RECORD_LEN: usize = 4096;
/// The most plaintext one record carries: 4096 − 3 header − 16 tag.
pub const MAX_PLAINTEXT_LEN: usize = MAX_RECORD_LEN - HEADER_LEN - TAG_LEN;
/// The first five plaintext bytes of an early payload; no HTTP/2 frame starts so.
pub const EARLY_PAYLOAD_MAGIC: [u8; 5] = *b"\xff\xff\xffTS";
/// Clients refuse early payloads larger than this.
pub const MAX_EARLY_PAYLOAD_LEN: usize = 10 << 20;

const MSG_INITIATION: u8 = 1;
const MSG_RESPONSE: u8 = 2;
const MSG_ERROR: u8 = 3;
const MSG_RECORD: u8 = 4;
const INITIATION_HEADER_LEN: usize = 5;
const HEADER_LEN: usize = 3;
const TAG_LEN: usize = 16;
/// How much plaintext one `poll_write` seals at most (16 full records).
const MAX_WRITE_BATCH: usize = 16 * MAX_PLAINTEXT_LEN;
/// Sealed bytes a writer may queue before `poll_write` waits for the socket.
const WRITE_HIGH_WATER: usize = 64 * 1024;

/// Why a handshake or a record was refused. Every error is fatal for its connection.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("handshake initiation is {0} bytes, want 101")]
    InitiationSize(usize),
    #[error("message has type {got}, want {want}")]
    UnexpectedType { got: u8, want: u8 },
    #[error("message declares {got} payload bytes, want {want}")]
    WrongLength { got: usize, want: usize },
    #[error("noise handshake failed: {0}")]
    Handshake(#[from] snow::Error),
    /// The server's unauthenticated error frame (handshake phase only); a hint.
    #[error("server refused the handshake: {0:?}")]
    Refused(String),
    #[error("record of {0} bytes exceeds the 4096-byte limit")]
    RecordTooBig(usize),
    #[error("record failed to decrypt")]
    Decrypt,
    #[error("record failed to encrypt")]
    Encrypt,
    #[error("nonce counter exhausted; the connection is unusable")]
    NonceExhausted,
    #[error("early payload of {0} bytes is too large")]
    EarlyPayloadTooBig(usize),
    #[error("noise stream is unusable after an earlier error")]
    Broken,
    #[error(transparent)]
    Io(#[from] io::Error),
}

impl From<Error> for io::Error {
    fn from(err: Error) -> io::Error {
        match err {
            Error::Io(err) => err,
            other => io::Error::new(io::ErrorKind::InvalidData, other),
        }
    }
}

fn noise_params() -> snow::params::NoiseParams {
    PROTOCOL_NAME
        .parse()
        .expect("the Noise protocol name is a constant snow understands")
}

/// The Noise prologue binds the cleartext version into the handshake hash.
fn prologue(version: u16) -> Vec<u8> {
    format!("Tailscale Control Protocol v{version}").into_bytes()
}

/// Checks a handshake header's type and length fields (bytes after the version).
fn check_header(got_type: u8, got_len: u16, want_type: u8, want_len: usize) -> Result<(), Error> {
    if got_type != want_type {
        return Err(Error::UnexpectedType {
            got: got_type,
            want: want_type,
        });
    }
    if usize::from(got_len) != want_len {
        return Err(Error::WrongLength {
            got: got_len.into(),
            want: want_len,
        });
    }
    Ok(())
}

/// Checks the 5-byte header an initiation starts with: version (2), type (1),
/// payload length (2). Only the header bytes of `init` are read.
fn check_initiation_header(init: &[u8]) -> Result<(), Error> {
    check_header(
        init[2],
        u16::from_be_bytes([init[3], init[4]]),
        MSG_INITIATION,
        INITIATION_LEN - INITIATION_HEADER_LEN,
    )
}

/// A server-side handshake, computed but not yet answered: the caller learns who
/// the client is and which protocol version it speaks before anything is sent.
pub struct Accepted {
    peer: MachineKey,
    version: u16,
    handshake_hash: [u8; 32],
    response: [u8; RESPONSE_LEN],
    rx: [u8; 32],
    tx: [u8; 32],
}

/// Runs the responder side of the handshake on a client's 101-byte initiation
/// (from the `X-Tailscale-Handshake` header or [`read_initiation`]). Pure
/// computation: nothing is sent until [`Accepted::into_stream`] is flushed.
pub fn accept(key: &ServerKey, init: &[u8]) -> Result<Accepted, Error> {
    if init.len() != INITIATION_LEN {
        return Err(Error::InitiationSize(init.len()));
    }
    let version = u16::from_be_bytes([init[0], init[1]]);
    check_initiation_header(init)?;
    let prologue = prologue(version);
    let mut handshake = snow::Builder::new(noise_params())
        .local_private_key(key.private_bytes())?
        .prologue(&prologue)?
        .build_responder()?;
    // The initiation carries no payload; the scratch buffer only satisfies the API.
    let mut payload = [0u8; INITIATION_LEN];
    handshake.read_message(&init[INITIATION_HEADER_LEN..], &mut payload)?;
    let peer: [u8; 32] = handshake
        .get_remote_static()
        .and_then(|key| key.try_into().ok())
        .ok_or(snow::Error::Input)?;

    let mut response = [0u8; RESPONSE_LEN];
    response[0] = MSG_RESPONSE;
    response[1..HEADER_LEN].copy_from_slice(&((RESPONSE_LEN - HEADER_LEN) as u16).to_be_bytes());
    let written = handshake.write_message(&[], &mut response[HEADER_LEN..])?;
    if written != RESPONSE_LEN - HEADER_LEN {
        return Err(Error::WrongLength {
            got: written,
            want: RESPONSE_LEN - HEADER_LEN,
        });
    }
    let handshake_hash = handshake
        .get_handshake_hash()
        .try_into()
        .map_err(|_| snow::Error::Input)?;
    // k1 encrypts client → server, k2 server → client.
    let (rx, tx) = handshake.dangerously_get_raw_split();
    Ok(Accepted {
        peer: MachineKey::from_bytes(peer),
        version,
        handshake_hash,
        response,
        rx,
        tx,
    })
}

impl Accepted {
    /// The client's machine key (its Noise static key), the identity above Noise.
    pub fn peer(&self) -> MachineKey {
        self.peer
    }

    /// The client's capability version, from the cleartext initiation header.
    pub fn protocol_version(&self) -> u16 {
        self.version
    }

    /// The Noise handshake hash, unique to this connection.
    pub fn handshake_hash(&self) -> [u8; 32] {
        self.handshake_hash
    }

    /// The record stream over `io`. The 51-byte response is queued as its first
    /// bytes and leaves with the first flush, together with anything written before
    /// (the early payload), in one socket write as Go's server corks them.
    pub fn into_stream<IO>(self, io: IO) -> NoiseStream<IO> {
        let mut stream = NoiseStream::new(io, self.rx, self.tx);
        stream.out.extend_from_slice(&self.response);
        stream
    }
}

/// Reads a handshake initiation from a raw stream (the form used when it does not
/// arrive in an HTTP header): the 5-byte header is checked before the payload is read.
pub async fn read_initiation<IO: AsyncRead + Unpin>(
    io: &mut IO,
) -> Result<[u8; INITIATION_LEN], Error> {
    let mut init = [0u8; INITIATION_LEN];
    io.read_exact(&mut init[..INITIATION_HEADER_LEN]).await?;
    check_initiation_header(&init)?;
    io.read_exact(&mut init[INITIATION_HEADER_LEN..]).await?;
    Ok(init)
}

/// The early payload plaintext: magic, BE u32 length, then `json`.
pub fn early_payload(json: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(EARLY_PAYLOAD_MAGIC.len() + 4 + json.len());
    out.extend_from_slice(&EARLY_PAYLOAD_MAGIC);
    out.extend_from_slice(&(json.len() as u32).to_be_bytes());
    out.extend_from_slice(json);
    out
}

/// An early payload carrying `tailcfg.EarlyNoise` with a fresh per-connection
/// node-key challenge (`{"nodeKeyChallenge":"chalpub:…"}`). The private half is
/// dropped: headway does not serve API calls over Noise, the challenge's only use.
pub fn node_key_challenge_payload() -> Vec<u8> {
    let challenge = public_of(PrivateKey::generate().as_bytes());
    let json = serde_json::json!({
        "nodeKeyChallenge": format!("chalpub:{}", hex::encode(challenge)),
    });
    early_payload(json.to_string().as_bytes())
}

/// The client side of a handshake: the initiation is built first (it may travel
/// in an HTTP header), the response is read from the stream afterwards.
pub struct Initiator {
    handshake: snow::HandshakeState,
}

impl Initiator {
    /// Starts a handshake as `machine_private` towards the server key from `/key`;
    /// returns the 101-byte initiation to send.
    pub fn new(
        server_public: &MachineKey,
        machine_private: &PrivateKey,
        version: u16,
    ) -> Result<(Initiator, [u8; INITIATION_LEN]), Error> {
        let prologue = prologue(version);
        let mut handshake = snow::Builder::new(noise_params())
            .local_private_key(machine_private.as_bytes())?
            .remote_public_key(server_public.as_bytes())?
            .prologue(&prologue)?
            .build_initiator()?;
        let mut init = [0u8; INITIATION_LEN];
        init[..2].copy_from_slice(&version.to_be_bytes());
        init[2] = MSG_INITIATION;
        init[3..INITIATION_HEADER_LEN]
            .copy_from_slice(&((INITIATION_LEN - INITIATION_HEADER_LEN) as u16).to_be_bytes());
        let written = handshake.write_message(&[], &mut init[INITIATION_HEADER_LEN..])?;
        if written != INITIATION_LEN - INITIATION_HEADER_LEN {
            return Err(Error::WrongLength {
                got: written,
                want: INITIATION_LEN - INITIATION_HEADER_LEN,
            });
        }
        Ok((Initiator { handshake }, init))
    }

    /// Reads the server's response (or its error frame) and returns the record stream.
    pub async fn finish<IO: AsyncRead + Unpin>(
        mut self,
        mut io: IO,
    ) -> Result<NoiseStream<IO>, Error> {
        let mut header = [0u8; HEADER_LEN];
        io.read_exact(&mut header).await?;
        let len = u16::from_be_bytes([header[1], header[2]]);
        if header[0] == MSG_ERROR {
            let mut message = vec![0u8; len.into()];
            io.read_exact(&mut message).await?;
            return Err(Error::Refused(
                String::from_utf8_lossy(&message).into_owned(),
            ));
        }
        check_header(header[0], len, MSG_RESPONSE, RESPONSE_LEN - HEADER_LEN)?;
        let mut response = [0u8; RESPONSE_LEN - HEADER_LEN];
        io.read_exact(&mut response).await?;
        let mut payload = [0u8; RESPONSE_LEN];
        self.handshake.read_message(&response, &mut payload)?;
        let (tx, rx) = self.handshake.dangerously_get_raw_split();
        Ok(NoiseStream::new(io, rx, tx))
    }
}

/// Runs a client handshake over a raw stream: sends the initiation, reads the response.
pub async fn initiate<IO: AsyncRead + AsyncWrite + Unpin>(
    mut io: IO,
    server_public: &MachineKey,
    machine_private: &PrivateKey,
    version: u16,
) -> Result<NoiseStream<IO>, Error> {
    let (initiator, init) = Initiator::new(server_public, machine_private, version)?;
    io.write_all(&init).await?;
    io.flush().await?;
    initiator.finish(io).await
}

/// One direction's cipher: ChaCha20-Poly1305 with nonce = 4 zero bytes ‖ BE u64 counter.
struct CipherState {
    aead: ChaCha20Poly1305,
    counter: u64,
}

impl CipherState {
    fn new(key: [u8; 32]) -> CipherState {
        CipherState {
            aead: ChaCha20Poly1305::new(Key::from_slice(&key)),
            counter: 0,
        }
    }

    /// The next nonce; counter 2^64−1 is never used, as in Go's `nonce.Valid`.
    fn next_nonce(&mut self) -> Result<Nonce, Error> {
        if self.counter == u64::MAX {
            return Err(Error::NonceExhausted);
        }
        let mut nonce = [0u8; 12];
        nonce[4..].copy_from_slice(&self.counter.to_be_bytes());
        self.counter += 1;
        Ok(nonce.into())
    }
}

/// An established Noise connection: a plaintext byte stream carried in records.
///
/// Idle, it holds no buffers: a reader waits on the 3-byte record header and
/// allocates a record's buffer only once its length is known; sealed output is
/// freed as soon as the socket took it. Writers must flush (HTTP/2 does) so the
/// last sealed bytes reach the socket; `poll_write` also writes eagerly.
pub struct NoiseStream<IO> {
    io: IO,
    rx: CipherState,
    tx: CipherState,
    /// The record header being read; `header_len` bytes of it are filled.
    header: [u8; HEADER_LEN],
    header_len: usize,
    /// The ciphertext of the record being read once its header is complete.
    record: Vec<u8>,
    record_len: usize,
    reading_record: bool,
    /// Decrypted bytes not yet handed to the reader.
    plaintext: Vec<u8>,
    plaintext_pos: usize,
    read_broken: bool,
    /// Sealed records (and, on the server, the handshake response) not yet written.
    out: Vec<u8>,
    out_pos: usize,
    write_broken: bool,
}

impl<IO> NoiseStream<IO> {
    pub(crate) fn new(io: IO, rx: [u8; 32], tx: [u8; 32]) -> NoiseStream<IO> {
        NoiseStream {
            io,
            rx: CipherState::new(rx),
            tx: CipherState::new(tx),
            header: [0; HEADER_LEN],
            header_len: 0,
            record: Vec::new(),
            record_len: 0,
            reading_record: false,
            plaintext: Vec::new(),
            plaintext_pos: 0,
            read_broken: false,
            out: Vec::new(),
            out_pos: 0,
            write_broken: false,
        }
    }

    /// The underlying transport.
    pub fn get_ref(&self) -> &IO {
        &self.io
    }

    /// Puts plaintext back in front of what the next read returns.
    fn unread(&mut self, bytes: &[u8]) {
        let mut plaintext = bytes.to_vec();
        plaintext.extend_from_slice(&self.plaintext[self.plaintext_pos..]);
        self.plaintext = plaintext;
        self.plaintext_pos = 0;
    }

    /// Seals one record of at most [`MAX_PLAINTEXT_LEN`] bytes onto `out`.
    fn seal(&mut self, chunk: &[u8]) -> Result<(), Error> {
        debug_assert!(chunk.len() <= MAX_PLAINTEXT_LEN);
        let nonce = self.tx.next_nonce()?;
        let start = self.out.len();
        self.out.push(MSG_RECORD);
        self.out
            .extend_from_slice(&((chunk.len() + TAG_LEN) as u16).to_be_bytes());
        self.out.extend_from_slice(chunk);
        let tag = self
            .tx
            .aead
            .encrypt_in_place_detached(&nonce, &[], &mut self.out[start + HEADER_LEN..])
            .map_err(|_| Error::Encrypt)?;
        self.out.extend_from_slice(&tag);
        Ok(())
    }

    #[cfg(test)]
    pub(super) fn set_counters(&mut self, rx: u64, tx: u64) {
        self.rx.counter = rx;
        self.tx.counter = tx;
    }
}

impl<IO: AsyncRead + Unpin> NoiseStream<IO> {
    /// Client side: reads the server's optional early payload (§2.6) and returns
    /// its JSON. If the server sent none, the bytes read are kept for the next read
    /// (they are the start of the server's HTTP/2 SETTINGS frame).
    pub async fn read_early_payload(&mut self) -> Result<Option<Vec<u8>>, Error> {
        let mut head = [0u8; 9];
        self.read_exact(&mut head).await?;
        if head[..5] != EARLY_PAYLOAD_MAGIC {
            self.unread(&head);
            return Ok(None);
        }
        let len = u32::from_be_bytes([head[5], head[6], head[7], head[8]]) as usize;
        if len > MAX_EARLY_PAYLOAD_LEN {
            return Err(Error::EarlyPayloadTooBig(len));
        }
        let mut json = vec![0u8; len];
        self.read_exact(&mut json).await?;
        Ok(Some(json))
    }

    /// Reads and decrypts the next record into `plaintext`. `Ok(false)` is a clean
    /// end of stream at a record boundary.
    fn poll_record(&mut self, cx: &mut Context<'_>) -> Poll<Result<bool, Error>> {
        while !self.reading_record {
            let mut buf = ReadBuf::new(&mut self.header[self.header_len..]);
            ready!(Pin::new(&mut self.io).poll_read(cx, &mut buf))?;
            let n = buf.filled().len();
            if n == 0 {
                if self.header_len == 0 {
                    return Poll::Ready(Ok(false));
                }
                return Poll::Ready(Err(io::Error::from(io::ErrorKind::UnexpectedEof).into()));
            }
            self.header_len += n;
            if self.header_len == HEADER_LEN {
                if self.header[0] != MSG_RECORD {
                    return Poll::Ready(Err(Error::UnexpectedType {
                        got: self.header[0],
                        want: MSG_RECORD,
                    }));
                }
                let len = usize::from(u16::from_be_bytes([self.header[1], self.header[2]]));
                if HEADER_LEN + len > MAX_RECORD_LEN {
                    return Poll::Ready(Err(Error::RecordTooBig(HEADER_LEN + len)));
                }
                if len < TAG_LEN {
                    return Poll::Ready(Err(Error::Decrypt));
                }
                self.record = vec![0u8; len];
                self.record_len = 0;
                self.reading_record = true;
            }
        }
        while self.record_len < self.record.len() {
            let mut buf = ReadBuf::new(&mut self.record[self.record_len..]);
            ready!(Pin::new(&mut self.io).poll_read(cx, &mut buf))?;
            let n = buf.filled().len();
            if n == 0 {
                return Poll::Ready(Err(io::Error::from(io::ErrorKind::UnexpectedEof).into()));
            }
            self.record_len += n;
        }
        self.reading_record = false;
        self.header_len = 0;
        let nonce = self.rx.next_nonce()?;
        let mut record = std::mem::take(&mut self.record);
        let body_len = record.len() - TAG_LEN;
        let (body, tag) = record.split_at_mut(body_len);
        self.rx
            .aead
            .decrypt_in_place_detached(&nonce, &[], body, Tag::from_slice(tag))
            .map_err(|_| Error::Decrypt)?;
        record.truncate(body_len);
        self.plaintext = record;
        self.plaintext_pos = 0;
        Poll::Ready(Ok(true))
    }
}

impl<IO: AsyncWrite + Unpin> NoiseStream<IO> {
    /// Writes queued sealed bytes to the socket, then frees the queue.
    fn poll_drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.out_pos < self.out.len() {
            let n = ready!(Pin::new(&mut self.io).poll_write(cx, &self.out[self.out_pos..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.out_pos += n;
        }
        self.out = Vec::new();
        self.out_pos = 0;
        Poll::Ready(Ok(()))
    }

    fn poll_drain_or_break(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let result = ready!(self.poll_drain(cx));
        if result.is_err() {
            self.write_broken = true;
        }
        Poll::Ready(result)
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for NoiseStream<IO> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if buf.remaining() == 0 {
            return Poll::Ready(Ok(()));
        }
        loop {
            let available = this.plaintext.len() - this.plaintext_pos;
            if available > 0 {
                let n = available.min(buf.remaining());
                buf.put_slice(&this.plaintext[this.plaintext_pos..this.plaintext_pos + n]);
                this.plaintext_pos += n;
                if this.plaintext_pos == this.plaintext.len() {
                    this.plaintext = Vec::new();
                    this.plaintext_pos = 0;
                }
                return Poll::Ready(Ok(()));
            }
            if this.read_broken {
                return Poll::Ready(Err(Error::Broken.into()));
            }
            match ready!(this.poll_record(cx)) {
                // Zero-length records are legal; keep reading.
                Ok(true) => continue,
                Ok(false) => return Poll::Ready(Ok(())),
                Err(err) => {
                    this.read_broken = true;
                    this.record = Vec::new();
                    return Poll::Ready(Err(err.into()));
                }
            }
        }
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for NoiseStream<IO> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.write_broken {
            return Poll::Ready(Err(Error::Broken.into()));
        }
        if buf.is_empty() {
            return Poll::Ready(Ok(0));
        }
        if this.out.len() - this.out_pos >= WRITE_HIGH_WATER {
            ready!(this.poll_drain_or_break(cx))?;
        }
        let n = buf.len().min(MAX_WRITE_BATCH);
        let records = n.div_ceil(MAX_PLAINTEXT_LEN);
        this.out.reserve(n + records * (HEADER_LEN + TAG_LEN));
        for chunk in buf[..n].chunks(MAX_PLAINTEXT_LEN) {
            if let Err(err) = this.seal(chunk) {
                this.write_broken = true;
                return Poll::Ready(Err(err.into()));
            }
        }
        // Write eagerly; whatever the socket does not take now leaves on flush.
        if let Poll::Ready(Err(err)) = this.poll_drain_or_break(cx) {
            return Poll::Ready(Err(err));
        }
        Poll::Ready(Ok(n))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_drain_or_break(cx))?;
        Pin::new(&mut this.io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_drain_or_break(cx))?;
        Pin::new(&mut this.io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests;

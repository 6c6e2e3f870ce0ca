//! The DERP v2 wire format: frames (1-byte type ‖ big-endian u32 length ‖
//! payload), the frame types, the `DERP🔑` greeting, and the NaCl-boxed
//! ClientInfo and ServerInfo of the login.
//!
//! Knows bytes and keys, not connections or clients. Mirrors Tailscale's
//! `derp/derp.go` and the login half of `derp/derpserver/derpserver.go`.

use crate::types::{NodeKey, PrivateKey};
use crypto_box::aead::Aead;
use crypto_box::{Nonce, PublicKey, SalsaBox, SecretKey};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::io;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader, BufWriter};

/// The 8 bytes that open the server's greeting: `"DERP🔑"`.
pub const MAGIC: [u8; 8] = *b"DERP\xF0\x9F\x94\x91";
/// The DERP protocol version this relay speaks: `RecvPacket` carries the source key.
pub const PROTOCOL_VERSION: u32 = 2;
/// A Curve25519 key on the wire.
pub const KEY_LEN: usize = 32;
/// A NaCl box nonce.
pub const NONCE_LEN: usize = 24;
/// Frame type (1) and length (4).
pub const FRAME_HEADER_LEN: usize = 5;
/// The largest data packet a client may send or receive (Go's `MaxPacketSize`).
pub const MAX_PACKET_SIZE: usize = 64 << 10;
/// The largest ClientInfo frame accepted from a client that has not logged in yet.
pub const MAX_CLIENT_INFO_LEN: usize = 256 << 10;
/// The largest frame the reader accepts at all; a longer length closes the
/// connection. Go's client refuses frames over 1 MiB, and no frame a client
/// sends legitimately comes close.
pub const MAX_FRAME_LEN: usize = 1 << 20;
/// The prefix of a disco (NAT traversal) message inside a packet: `"TS💬"`.
pub const DISCO_MAGIC: [u8; 6] = *b"TS\xF0\x9F\x92\xAC";
/// A disco message is its magic, the sender's disco key and a box nonce at least.
const DISCO_MIN_LEN: usize = DISCO_MAGIC.len() + KEY_LEN + NONCE_LEN;

/// The one-byte type that opens every frame (Go's `FrameType`).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct FrameType(pub u8);

impl FrameType {
    /// S→C: [`MAGIC`] ‖ server public key (more bytes allowed later).
    pub const SERVER_KEY: Self = Self(0x01);
    /// C→S: client public key ‖ nonce ‖ box(JSON [`ClientInfo`]).
    pub const CLIENT_INFO: Self = Self(0x02);
    /// S→C: nonce ‖ box(JSON [`ServerInfo`]).
    pub const SERVER_INFO: Self = Self(0x03);
    /// C→S: destination key ‖ packet.
    pub const SEND_PACKET: Self = Self(0x04);
    /// S→C: source key ‖ packet.
    pub const RECV_PACKET: Self = Self(0x05);
    /// S→C: no payload; keeps idle connections open.
    pub const KEEP_ALIVE: Self = Self(0x06);
    /// C→S: one byte, 1 when this relay is the client's home.
    pub const NOTE_PREFERRED: Self = Self(0x07);
    /// S→C: key ‖ [`PeerGoneReason`].
    pub const PEER_GONE: Self = Self(0x08);
    /// S→C, mesh watchers only: key ‖ IP ‖ port ‖ flags.
    pub const PEER_PRESENT: Self = Self(0x09);
    /// Mesh: source key ‖ destination key ‖ packet.
    pub const FORWARD_PACKET: Self = Self(0x0a);
    /// Mesh: subscribe to connects and disconnects.
    pub const WATCH_CONNS: Self = Self(0x10);
    /// Mesh: close the connection of the given key.
    pub const CLOSE_PEER: Self = Self(0x11);
    /// Both ways: 8 bytes the other side echoes in a [`Self::PONG`].
    pub const PING: Self = Self(0x12);
    /// Both ways: the 8 bytes of the ping being answered.
    pub const PONG: Self = Self(0x13);
    /// S→C: UTF-8 text of a connection problem; empty means healthy again.
    pub const HEALTH: Self = Self(0x14);
    /// S→C: reconnect-in ms ‖ try-for ms, both big-endian u32.
    pub const RESTARTING: Self = Self(0x15);

    /// The protocol's name for a known frame type.
    pub fn name(self) -> Option<&'static str> {
        Some(match self {
            Self::SERVER_KEY => "ServerKey",
            Self::CLIENT_INFO => "ClientInfo",
            Self::SERVER_INFO => "ServerInfo",
            Self::SEND_PACKET => "SendPacket",
            Self::RECV_PACKET => "RecvPacket",
            Self::KEEP_ALIVE => "KeepAlive",
            Self::NOTE_PREFERRED => "NotePreferred",
            Self::PEER_GONE => "PeerGone",
            Self::PEER_PRESENT => "PeerPresent",
            Self::FORWARD_PACKET => "ForwardPacket",
            Self::WATCH_CONNS => "WatchConns",
            Self::CLOSE_PEER => "ClosePeer",
            Self::PING => "Ping",
            Self::PONG => "Pong",
            Self::HEALTH => "Health",
            Self::RESTARTING => "Restarting",
            _ => return None,
        })
    }
}

impl fmt::Debug for FrameType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(name) => write!(f, "{name}"),
            None => write!(f, "FrameType({:#04x})", self.0),
        }
    }
}

/// Why a `PeerGone` frame says a peer is not reachable here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum PeerGoneReason {
    /// The peer was connected and has left; sent to those that had received from it.
    Disconnected = 0x00,
    /// The relay has no client with that key; sent to a sender of a disco packet.
    NotHere = 0x01,
}

/// Why the byte stream could not be read as frames.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("a {frame_type:?} frame of {len} bytes is over the {max}-byte limit")]
    TooLong {
        frame_type: FrameType,
        len: u32,
        max: usize,
    },
    #[error("the connection ended in the middle of a frame")]
    Truncated,
    #[error(transparent)]
    Io(io::Error),
}

impl From<io::Error> for FrameError {
    fn from(err: io::Error) -> Self {
        if err.kind() == io::ErrorKind::UnexpectedEof {
            FrameError::Truncated
        } else {
            FrameError::Io(err)
        }
    }
}

/// A frame's type and payload length, read before its payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHeader {
    pub frame_type: FrameType,
    /// The payload length, at most [`MAX_FRAME_LEN`].
    pub len: u32,
}

/// Reads frames from a byte stream, reusing one payload buffer.
///
/// Read a header with [`FrameReader::read_header`], then exactly one of
/// [`FrameReader::read_payload`] or [`FrameReader::skip_payload`] for it;
/// [`FrameReader::read_frame`] does both.
pub struct FrameReader<R> {
    inner: BufReader<R>,
    buf: Vec<u8>,
}

/// A payload buffer grown past this (by a rare large frame) is released, so an
/// idle connection keeps at most one packet's worth of memory.
const RETAINED_BUFFER: usize = 2 * (KEY_LEN + MAX_PACKET_SIZE);

impl<R: AsyncRead + Unpin> FrameReader<R> {
    pub fn new(inner: R) -> Self {
        FrameReader {
            inner: BufReader::new(inner),
            buf: Vec::new(),
        }
    }

    /// The next frame's header, or `None` when the stream ended cleanly between
    /// frames. A length over [`MAX_FRAME_LEN`] is an error.
    pub async fn read_header(&mut self) -> Result<Option<FrameHeader>, FrameError> {
        let mut header = [0u8; FRAME_HEADER_LEN];
        if self.inner.read(&mut header[..1]).await? == 0 {
            return Ok(None);
        }
        self.inner.read_exact(&mut header[1..]).await?;
        let frame_type = FrameType(header[0]);
        let len = u32::from_be_bytes([header[1], header[2], header[3], header[4]]);
        if len as usize > MAX_FRAME_LEN {
            return Err(FrameError::TooLong {
                frame_type,
                len,
                max: MAX_FRAME_LEN,
            });
        }
        Ok(Some(FrameHeader { frame_type, len }))
    }

    /// Reads exactly the payload of `header`; valid until the next read.
    pub async fn read_payload(&mut self, header: FrameHeader) -> Result<&[u8], FrameError> {
        let len = header.len as usize;
        if self.buf.capacity() > RETAINED_BUFFER && len <= RETAINED_BUFFER {
            self.buf = Vec::new();
        }
        self.buf.resize(len, 0);
        self.inner.read_exact(&mut self.buf).await?;
        Ok(&self.buf)
    }

    /// Reads and discards the payload of `header`.
    pub async fn skip_payload(&mut self, header: FrameHeader) -> Result<(), FrameError> {
        let want = u64::from(header.len);
        let skipped = tokio::io::copy(&mut (&mut self.inner).take(want), &mut tokio::io::sink())
            .await
            .map_err(FrameError::Io)?;
        if skipped < want {
            return Err(FrameError::Truncated);
        }
        Ok(())
    }

    /// The next whole frame, or `None` at a clean end of stream.
    pub async fn read_frame(&mut self) -> Result<Option<(FrameType, &[u8])>, FrameError> {
        let Some(header) = self.read_header().await? else {
            return Ok(None);
        };
        let payload = self.read_payload(header).await?;
        Ok(Some((header.frame_type, payload)))
    }
}

/// Writes frames to a byte stream through a buffer; nothing reaches the stream
/// before [`FrameWriter::flush`] unless the buffer fills.
pub struct FrameWriter<W> {
    inner: BufWriter<W>,
}

impl<W: AsyncWrite + Unpin> FrameWriter<W> {
    pub fn new(inner: W) -> Self {
        FrameWriter {
            inner: BufWriter::new(inner),
        }
    }

    /// One frame whose payload is the concatenation of `parts`.
    pub async fn write_frame(&mut self, frame_type: FrameType, parts: &[&[u8]]) -> io::Result<()> {
        let len: usize = parts.iter().map(|part| part.len()).sum();
        let len = u32::try_from(len)
            .ok()
            .filter(|&len| len as usize <= MAX_FRAME_LEN)
            .ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "DERP frame over the size limit",
                )
            })?;
        let mut header = [0u8; FRAME_HEADER_LEN];
        header[0] = frame_type.0;
        header[1..].copy_from_slice(&len.to_be_bytes());
        self.inner.write_all(&header).await?;
        for part in parts {
            self.inner.write_all(part).await?;
        }
        Ok(())
    }

    /// `ServerKey`: the greeting, [`MAGIC`] ‖ the relay's public key.
    pub async fn write_server_key(&mut self, server: &NodeKey) -> io::Result<()> {
        self.write_frame(FrameType::SERVER_KEY, &[&MAGIC, server.as_bytes()])
            .await
    }

    /// `ServerInfo`: a payload made by [`seal_server_info`].
    pub async fn write_server_info(&mut self, sealed: &[u8]) -> io::Result<()> {
        self.write_frame(FrameType::SERVER_INFO, &[sealed]).await
    }

    /// `SendPacket` (client side): the destination's key ‖ the packet.
    pub async fn write_send_packet(&mut self, dst: &NodeKey, packet: &[u8]) -> io::Result<()> {
        self.write_frame(FrameType::SEND_PACKET, &[dst.as_bytes(), packet])
            .await
    }

    /// `RecvPacket`: the sender's key ‖ the packet.
    pub async fn write_recv_packet(&mut self, src: &NodeKey, packet: &[u8]) -> io::Result<()> {
        self.write_frame(FrameType::RECV_PACKET, &[src.as_bytes(), packet])
            .await
    }

    /// `PeerGone`: the key ‖ the reason byte.
    pub async fn write_peer_gone(
        &mut self,
        peer: &NodeKey,
        reason: PeerGoneReason,
    ) -> io::Result<()> {
        self.write_frame(FrameType::PEER_GONE, &[peer.as_bytes(), &[reason as u8]])
            .await
    }

    /// `Pong`: the 8 bytes of the ping it answers.
    pub async fn write_pong(&mut self, data: &[u8; 8]) -> io::Result<()> {
        self.write_frame(FrameType::PONG, &[data]).await
    }

    /// `KeepAlive`: no payload.
    pub async fn write_keep_alive(&mut self) -> io::Result<()> {
        self.write_frame(FrameType::KEEP_ALIVE, &[]).await
    }

    /// `Health`: a problem's text, or empty for "healthy again".
    pub async fn write_health(&mut self, problem: &str) -> io::Result<()> {
        self.write_frame(FrameType::HEALTH, &[problem.as_bytes()])
            .await
    }

    /// Sends everything buffered.
    pub async fn flush(&mut self) -> io::Result<()> {
        self.inner.flush().await
    }
}

/// What a client says about itself when it logs in (Go's `derp.ClientInfo`).
/// Every field is optional; unknown fields are ignored.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientInfo {
    /// The DERP protocol version the client was built with (2).
    #[serde(rename = "version", default, skip_serializing_if = "Option::is_none")]
    pub version: Option<i64>,
    /// A pre-shared key of trusted mesh peers; this relay has no mesh.
    #[serde(rename = "meshKey", default, skip_serializing_if = "Option::is_none")]
    pub mesh_key: Option<String>,
    /// Whether the client answers server pings.
    #[serde(
        rename = "CanAckPings",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub can_ack_pings: Option<bool>,
    /// Whether the client is a prober rather than a node.
    #[serde(rename = "IsProber", default, skip_serializing_if = "Option::is_none")]
    pub is_prober: Option<bool>,
    /// An opaque application name, for statistics.
    #[serde(rename = "AppName", default, skip_serializing_if = "Option::is_none")]
    pub app_name: Option<String>,
}

/// What the relay tells a client after its login (Go's `derp.ServerInfo`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServerInfo {
    /// The relay's protocol version, [`PROTOCOL_VERSION`].
    #[serde(rename = "version", default, skip_serializing_if = "Option::is_none")]
    pub version: Option<u32>,
    /// A send rate the client should keep to; unset means no limit.
    #[serde(
        rename = "TokenBucketBytesPerSecond",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub token_bucket_bytes_per_second: Option<u64>,
    /// The burst allowed above that rate.
    #[serde(
        rename = "TokenBucketBytesBurst",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub token_bucket_bytes_burst: Option<u64>,
}

/// Why a ClientInfo could not be accepted, or a ServerInfo not sealed.
#[derive(Debug, thiserror::Error)]
pub enum InfoError {
    #[error("ClientInfo of {0} bytes is shorter than a key and a nonce")]
    Short(usize),
    #[error("ClientInfo of {0} bytes is over the {max}-byte limit", max = MAX_CLIENT_INFO_LEN)]
    Long(usize),
    #[error("the ClientInfo box does not open with key {0:?}")]
    BoxDoesNotOpen(NodeKey),
    #[error("the ClientInfo of {key:?} is not valid JSON: {source}")]
    Json {
        key: NodeKey,
        source: serde_json::Error,
    },
    #[error("could not seal the {0}")]
    Seal(&'static str),
    #[error("the ServerInfo box does not open, or is not JSON")]
    ServerInfo,
}

/// The NaCl box between a private key and a peer's public key.
fn nacl_box(private: &PrivateKey, peer: &NodeKey) -> SalsaBox {
    SalsaBox::new(
        &PublicKey::from_bytes(*peer.as_bytes()),
        &SecretKey::from_bytes(*private.as_bytes()),
    )
}

/// The public key of a private key.
pub fn public_key(private: &PrivateKey) -> NodeKey {
    NodeKey::from_bytes(
        SecretKey::from_bytes(*private.as_bytes())
            .public_key()
            .to_bytes(),
    )
}

/// Opens a ClientInfo payload (client key ‖ nonce ‖ box) with the relay's
/// private key: the client's key, proven by the box opening, and what it says.
pub fn open_client_info(
    server: &PrivateKey,
    payload: &[u8],
) -> Result<(NodeKey, ClientInfo), InfoError> {
    if payload.len() > MAX_CLIENT_INFO_LEN {
        return Err(InfoError::Long(payload.len()));
    }
    let Some((key, boxed)) = payload
        .split_first_chunk::<KEY_LEN>()
        .filter(|(_, boxed)| boxed.len() >= NONCE_LEN)
    else {
        return Err(InfoError::Short(payload.len()));
    };
    let client = NodeKey::from_bytes(*key);
    let json = open(server, &client, boxed).ok_or(InfoError::BoxDoesNotOpen(client))?;
    let info = serde_json::from_slice(&json).map_err(|source| InfoError::Json {
        key: client,
        source,
    })?;
    Ok((client, info))
}

/// Seals `info` for `client`: a fresh nonce ‖ box(JSON), the ServerInfo payload.
pub fn seal_server_info(
    server: &PrivateKey,
    client: &NodeKey,
    info: &ServerInfo,
) -> Result<Vec<u8>, InfoError> {
    seal(server, client, info).ok_or(InfoError::Seal("ServerInfo"))
}

/// The client side of the login: our public key ‖ a fresh nonce ‖ box(JSON
/// `info`) for the relay whose greeting carried `server`.
pub fn seal_client_info(
    client: &PrivateKey,
    server: &NodeKey,
    info: &ClientInfo,
) -> Result<Vec<u8>, InfoError> {
    let sealed = seal(client, server, info).ok_or(InfoError::Seal("ClientInfo"))?;
    let mut payload = Vec::with_capacity(KEY_LEN + sealed.len());
    payload.extend_from_slice(public_key(client).as_bytes());
    payload.extend_from_slice(&sealed);
    Ok(payload)
}

/// The client side of the login: opens the relay's ServerInfo payload.
pub fn open_server_info(
    client: &PrivateKey,
    server: &NodeKey,
    payload: &[u8],
) -> Result<ServerInfo, InfoError> {
    let json = open(client, server, payload).ok_or(InfoError::ServerInfo)?;
    serde_json::from_slice(&json).map_err(|_| InfoError::ServerInfo)
}

/// nonce ‖ box(JSON `value`) from `private` to `peer`; `None` if it cannot be sealed.
fn seal(private: &PrivateKey, peer: &NodeKey, value: &impl Serialize) -> Option<Vec<u8>> {
    let json = serde_json::to_vec(value).ok()?;
    let nonce = crate::types::secret::random_bytes::<NONCE_LEN>();
    let sealed = nacl_box(private, peer)
        .encrypt(&Nonce::from(nonce), json.as_slice())
        .ok()?;
    let mut payload = Vec::with_capacity(NONCE_LEN + sealed.len());
    payload.extend_from_slice(&nonce);
    payload.extend_from_slice(&sealed);
    Some(payload)
}

/// The plain text of nonce ‖ box from `peer` to `private`; `None` if it does not open.
fn open(private: &PrivateKey, peer: &NodeKey, payload: &[u8]) -> Option<Vec<u8>> {
    let (nonce, sealed) = payload.split_first_chunk::<NONCE_LEN>()?;
    nacl_box(private, peer)
        .decrypt(&Nonce::from(*nonce), sealed)
        .ok()
}

/// Whether a packet looks like a disco message (Go's `disco.LooksLikeDiscoWrapper`).
pub fn looks_like_disco(packet: &[u8]) -> bool {
    packet.len() >= DISCO_MIN_LEN && packet.starts_with(&DISCO_MAGIC)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_halves_of_the_login_open_on_the_other_side_only() {
        let relay = PrivateKey::generate();
        let client = PrivateKey::generate();
        let info = ClientInfo {
            version: Some(2),
            ..ClientInfo::default()
        };
        let sealed = seal_client_info(&client, &public_key(&relay), &info).unwrap();
        let (key, opened) = open_client_info(&relay, &sealed).unwrap();
        assert_eq!((key, opened), (public_key(&client), info));

        let answer = ServerInfo {
            version: Some(PROTOCOL_VERSION),
            ..ServerInfo::default()
        };
        let sealed = seal_server_info(&relay, &public_key(&client), &answer).unwrap();
        assert_eq!(
            open_server_info(&client, &public_key(&relay), &sealed).unwrap(),
            answer
        );
        // Another client cannot read it, and neither can a truncated copy.
        let stranger = PrivateKey::generate();
        assert!(open_server_info(&stranger, &public_key(&relay), &sealed).is_err());
        assert!(open_server_info(&client, &public_key(&relay), &sealed[..NONCE_LEN - 1]).is_err());
    }
}

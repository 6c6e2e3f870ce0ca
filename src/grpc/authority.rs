//! Makes Go gRPC clients on the Unix socket acceptable to hyper's HTTP/2 server.
//!
//! grpc-go, dialling a socket by path (as Headscale's CLI does), sends the
//! percent-encoded path as `:authority` (`var%2Frun%2Fheadscale.sock`). The `http`
//! crate refuses `%` in a host, so h2 resets every such request with PROTOCOL_ERROR.
//! This relay sits between the socket and the server: it decodes each header block
//! the client sends, replaces an authority that does not parse with `localhost`,
//! and re-encodes the block with literals only, so the server's HPACK table never
//! depends on the client's. Every other frame, and the whole server-to-client
//! direction, passes through untouched. Knows HTTP/2 framing, nothing of gRPC.

use std::io;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, DuplexStream};

const PREFACE_LEN: usize = 24;
const FRAME_HEADERS: u8 = 0x1;
const FRAME_CONTINUATION: u8 = 0x9;
const FLAG_END_STREAM: u8 = 0x1;
const FLAG_END_HEADERS: u8 = 0x4;
const FLAG_PADDED: u8 = 0x8;
const FLAG_PRIORITY: u8 = 0x20;
/// The HTTP/2 default SETTINGS_MAX_FRAME_SIZE, which the server keeps.
const MAX_FRAME: usize = 16_384;
/// A header block larger than this is refused (admin requests are tiny).
const MAX_BLOCK: usize = 256 * 1024;
/// The HPACK table size the server advertises (HTTP/2's default).
const TABLE_SIZE: usize = 4096;

/// Starts relaying `client` (under `tasks`, so it ends when the server stops)
/// and returns the end the HTTP/2 server should serve.
pub fn relay<S>(client: S, tasks: &crate::tasks::Tasks) -> DuplexStream
where
    S: AsyncRead + AsyncWrite + Send + 'static,
{
    let (server_end, ours) = tokio::io::duplex(64 * 1024);
    tasks.spawn_finishing(async move {
        let (mut client_r, mut client_w) = tokio::io::split(client);
        let (mut ours_r, mut ours_w) = tokio::io::split(ours);
        let upstream = async {
            if let Err(err) = rewrite_headers(&mut client_r, &mut ours_w).await {
                tracing::debug!(%err, "admin socket: client stream ended");
            }
            let _ = ours_w.shutdown().await;
        };
        let downstream = async {
            let _ = tokio::io::copy(&mut ours_r, &mut client_w).await;
            let _ = client_w.shutdown().await;
        };
        tokio::join!(upstream, downstream);
    });
    server_end
}

fn protocol(msg: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg.to_owned())
}

/// Copies client frames to the server, rewriting header blocks on the way.
async fn rewrite_headers<R, W>(r: &mut R, w: &mut W) -> io::Result<()>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut preface = [0u8; PREFACE_LEN];
    r.read_exact(&mut preface).await?;
    w.write_all(&preface).await?;
    let mut decoder = loona_hpack::Decoder::new();
    decoder.set_max_allowed_table_size(TABLE_SIZE);
    // A header block split over CONTINUATION frames: (flags, stream, priority, block).
    let mut pending: Option<(u8, u32, Vec<u8>, Vec<u8>)> = None;
    loop {
        let mut head = [0u8; 9];
        match r.read_exact(&mut head).await {
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(()),
            Err(e) => return Err(e),
        }
        let len = usize::from(head[0]) << 16 | usize::from(head[1]) << 8 | usize::from(head[2]);
        let (kind, flags) = (head[3], head[4]);
        let stream = u32::from_be_bytes([head[5], head[6], head[7], head[8]]) & 0x7fff_ffff;
        if len > MAX_FRAME {
            return Err(protocol("frame larger than the server accepts"));
        }
        let mut payload = vec![0u8; len];
        r.read_exact(&mut payload).await?;

        match (kind, pending.as_mut()) {
            (FRAME_HEADERS, None) => {
                let mut body = payload.as_slice();
                if flags & FLAG_PADDED != 0 {
                    let (&pad, rest) = body
                        .split_first()
                        .ok_or_else(|| protocol("empty padded frame"))?;
                    let keep = rest.len().checked_sub(usize::from(pad));
                    body = &rest[..keep.ok_or_else(|| protocol("padding longer than frame"))?];
                }
                let priority = if flags & FLAG_PRIORITY != 0 {
                    let (p, rest) = body
                        .split_at_checked(5)
                        .ok_or_else(|| protocol("short priority field"))?;
                    body = rest;
                    p.to_vec()
                } else {
                    Vec::new()
                };
                pending = Some((flags, stream, priority, body.to_vec()));
            }
            (FRAME_CONTINUATION, Some((_, pending_stream, _, block)))
                if *pending_stream == stream =>
            {
                block.extend_from_slice(&payload);
                if block.len() > MAX_BLOCK {
                    return Err(protocol("header block too large"));
                }
            }
            (_, Some(_)) => return Err(protocol("frame interleaved in a header block")),
            (_, None) => {
                w.write_all(&head).await?;
                w.write_all(&payload).await?;
                continue;
            }
        }
        let done = flags & FLAG_END_HEADERS != 0;
        if done && let Some((first_flags, stream, priority, block)) = pending.take() {
            let headers = decoder
                .decode(&block)
                .map_err(|e| protocol(&format!("bad header block: {e:?}")))?;
            let mut out = priority;
            for (name, value) in &headers {
                let value: &[u8] = if name.as_slice() == b":authority" && !valid_authority(value) {
                    b"localhost"
                } else {
                    value
                };
                encode_literal(&mut out, name, value);
            }
            write_header_frames(w, first_flags, stream, &out).await?;
        }
    }
}

fn valid_authority(value: &[u8]) -> bool {
    tonic::codegen::http::uri::Authority::try_from(value).is_ok()
}

/// HPACK "literal header field without indexing, new name", raw (not Huffman) strings.
fn encode_literal(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.push(0x00);
    encode_string(out, name);
    encode_string(out, value);
}

fn encode_string(out: &mut Vec<u8>, s: &[u8]) {
    encode_int(out, s.len(), 7, 0x00);
    out.extend_from_slice(s);
}

/// HPACK integer with an `prefix_bits`-bit prefix (RFC 7541 §5.1).
fn encode_int(out: &mut Vec<u8>, mut value: usize, prefix_bits: u8, first_byte_flags: u8) {
    let max = (1usize << prefix_bits) - 1;
    if value < max {
        out.push(first_byte_flags | value as u8);
        return;
    }
    out.push(first_byte_flags | max as u8);
    value -= max;
    while value >= 128 {
        out.push((value % 128) as u8 | 0x80);
        value /= 128;
    }
    out.push(value as u8);
}

/// Writes a HEADERS frame (plus CONTINUATION frames when the block is large),
/// keeping END_STREAM and PRIORITY from the original, without padding.
async fn write_header_frames<W: AsyncWrite + Unpin>(
    w: &mut W,
    flags: u8,
    stream: u32,
    block: &[u8],
) -> io::Result<()> {
    let keep = flags & (FLAG_END_STREAM | FLAG_PRIORITY);
    let mut chunks = block.chunks(MAX_FRAME).peekable();
    let mut first = true;
    if block.is_empty() {
        return write_frame(w, FRAME_HEADERS, keep | FLAG_END_HEADERS, stream, &[]).await;
    }
    while let Some(chunk) = chunks.next() {
        let last = chunks.peek().is_none();
        let (kind, mut f) = if first {
            (FRAME_HEADERS, keep)
        } else {
            (FRAME_CONTINUATION, 0)
        };
        if last {
            f |= FLAG_END_HEADERS;
        }
        write_frame(w, kind, f, stream, chunk).await?;
        first = false;
    }
    Ok(())
}

async fn write_frame<W: AsyncWrite + Unpin>(
    w: &mut W,
    kind: u8,
    flags: u8,
    stream: u32,
    payload: &[u8],
) -> io::Result<()> {
    let len = payload.len();
    let mut head = [0u8; 9];
    head[0] = (len >> 16) as u8;
    head[1] = (len >> 8) as u8;
    head[2] = len as u8;
    head[3] = kind;
    head[4] = flags;
    head[5..9].copy_from_slice(&stream.to_be_bytes());
    w.write_all(&head).await?;
    w.write_all(payload).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_go_socket_authorities_are_not_valid_http_authorities() {
        assert!(!valid_authority(b"tmp%2Fhw%2Fheadway.sock"));
        assert!(valid_authority(b"localhost"));
        assert!(valid_authority(b"127.0.0.1:50443"));
    }

    #[test]
    fn hpack_integers_follow_rfc_7541_examples() {
        let mut out = Vec::new();
        encode_int(&mut out, 10, 5, 0);
        assert_eq!(out, [10]);
        out.clear();
        encode_int(&mut out, 1337, 5, 0);
        assert_eq!(out, [31, 154, 10]);
    }

    #[tokio::test]
    async fn a_bad_authority_is_replaced_and_other_frames_pass() {
        // A client connection: preface, SETTINGS, then HEADERS with a literal
        // `:authority` (static name index 1, incremental indexing), then the same
        // header again by its dynamic-table index, in a second HEADERS frame.
        let mut enc = loona_hpack::Encoder::new();
        let first = enc.encode([
            (&b":authority"[..], &b"tmp%2Fx%2Fheadway.sock"[..]),
            (b":path", b"/a"),
        ]);
        let second = enc.encode([
            (&b":authority"[..], &b"tmp%2Fx%2Fheadway.sock"[..]),
            (b":path", b"/b"),
        ]);
        let mut input = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
        for (kind, flags, stream, payload) in [
            (4u8, 0u8, 0u32, vec![]),
            (1, FLAG_END_HEADERS, 1, first),
            (1, FLAG_END_HEADERS | FLAG_END_STREAM, 3, second),
        ] {
            let len = payload.len();
            input.extend_from_slice(&[(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags]);
            input.extend_from_slice(&stream.to_be_bytes());
            input.extend_from_slice(&payload);
        }
        let mut output = Vec::new();
        rewrite_headers(&mut input.as_slice(), &mut output)
            .await
            .unwrap();

        assert_eq!(&output[..PREFACE_LEN], &input[..PREFACE_LEN]);
        let mut rest = &output[PREFACE_LEN..];
        let mut decoder = loona_hpack::Decoder::new();
        let mut seen = Vec::new();
        while rest.len() >= 9 {
            let len = usize::from(rest[0]) << 16 | usize::from(rest[1]) << 8 | usize::from(rest[2]);
            let (kind, flags) = (rest[3], rest[4]);
            let payload = &rest[9..9 + len];
            if kind == FRAME_HEADERS {
                assert!(flags & FLAG_END_HEADERS != 0);
                seen.push((
                    decoder.decode(payload).unwrap(),
                    flags & FLAG_END_STREAM != 0,
                ));
            } else {
                assert_eq!(kind, 4, "SETTINGS passes through");
            }
            rest = &rest[9 + len..];
        }
        assert_eq!(seen.len(), 2);
        for (headers, _) in &seen {
            assert_eq!(headers[0], (b":authority".to_vec(), b"localhost".to_vec()));
        }
        assert_eq!(seen[1].0[1], (b":path".to_vec(), b"/b".to_vec()));
        assert!(seen[1].1, "END_STREAM is kept");
    }
}

//! Map-response framing: a 4-byte little-endian length, then one zstd frame of
//! JSON. Every Go client asks for zstd and decodes every message with it,
//! keep-alives included; a client that does not ask (Tailscale's Rust client)
//! gets the same frames as plain JSON.

use bytes::Bytes;
use std::cell::RefCell;
use std::sync::OnceLock;

/// zstd level for map responses: cheap to produce, and Tailscale's own server
/// uses its fastest setting too.
const LEVEL: i32 = 1;

thread_local! {
    // A zstd context is large: one per worker thread, never one per connection.
    static COMPRESSOR: RefCell<Option<zstd::bulk::Compressor<'static>>> = const { RefCell::new(None) };
}

/// Frames one JSON message for the wire.
pub fn encode(json: &[u8]) -> Bytes {
    let compressed = COMPRESSOR.with(|cell| {
        let mut slot = cell.borrow_mut();
        let compressor = match slot.as_mut() {
            Some(c) => c,
            None => slot.insert(zstd::bulk::Compressor::new(LEVEL).expect("zstd level 1 is valid")),
        };
        compressor
            .compress(json)
            .expect("compressing into a growable buffer cannot fail")
    });
    let mut out = Vec::with_capacity(4 + compressed.len());
    out.extend_from_slice(&(compressed.len() as u32).to_le_bytes());
    out.extend_from_slice(&compressed);
    Bytes::from(out)
}

/// Frames one JSON message without compression, for a client whose map request
/// did not ask for zstd (`MapRequest.Compress` empty).
pub fn encode_plain(json: &[u8]) -> Bytes {
    let mut out = Vec::with_capacity(4 + json.len());
    out.extend_from_slice(&(json.len() as u32).to_le_bytes());
    out.extend_from_slice(json);
    Bytes::from(out)
}

/// A frame made by [`encode`], framed again without compression; `None` if it
/// is not one.
pub fn to_plain(frame: &[u8]) -> Option<Bytes> {
    let (json, _) = decode(frame).ok()??;
    Some(encode_plain(&json))
}

/// `{"KeepAlive":true}`, framed once and shared by every session.
pub fn keep_alive() -> Bytes {
    static FRAME: OnceLock<Bytes> = OnceLock::new();
    FRAME
        .get_or_init(|| encode(br#"{"KeepAlive":true}"#))
        .clone()
}

/// A decoded message larger than this is refused.
pub const MAX_MESSAGE: usize = 64 << 20;

/// Why a frame could not be decoded.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("a map frame of {0} bytes is over the limit")]
    TooLong(usize),
    #[error("a map frame that is not zstd: {0}")]
    NotZstd(std::io::Error),
}

/// Decodes the first framed message of `pending` (the client side: the load
/// generator and tests). `Ok(None)` while the frame is incomplete; otherwise the
/// JSON and how many bytes of `pending` it used.
pub fn decode(pending: &[u8]) -> Result<Option<(Vec<u8>, usize)>, DecodeError> {
    let Some(len) = pending.get(..4) else {
        return Ok(None);
    };
    let len = u32::from_le_bytes(len.try_into().expect("four bytes")) as usize;
    if len > MAX_MESSAGE {
        return Err(DecodeError::TooLong(len));
    }
    let Some(body) = pending.get(4..4 + len) else {
        return Ok(None);
    };
    let json = decompress(body)?;
    if json.len() > MAX_MESSAGE {
        return Err(DecodeError::TooLong(json.len()));
    }
    Ok(Some((json, 4 + len)))
}

thread_local! {
    // One decompression context per thread, reused for every message (a load
    // generator decodes millions).
    static DECOMPRESSOR: RefCell<Option<zstd::bulk::Decompressor<'static>>> = const { RefCell::new(None) };
}

/// The JSON of one zstd frame: decompressed in one call into a buffer of the
/// size the frame header declares, or streamed when it declares none.
fn decompress(body: &[u8]) -> Result<Vec<u8>, DecodeError> {
    let declared = zstd::zstd_safe::get_frame_content_size(body)
        .ok()
        .flatten()
        .and_then(|n| usize::try_from(n).ok());
    if let Some(size) = declared {
        if size > MAX_MESSAGE {
            return Err(DecodeError::TooLong(size));
        }
        return DECOMPRESSOR.with(|cell| {
            let mut slot = cell.borrow_mut();
            let decompressor = match slot.as_mut() {
                Some(d) => d,
                None => slot.insert(zstd::bulk::Decompressor::new().map_err(DecodeError::NotZstd)?),
            };
            decompressor
                .decompress(body, size)
                .map_err(DecodeError::NotZstd)
        });
    }
    // A streaming decoder grows its output as needed; `bulk::decompress` would
    // reserve the whole cap for every message.
    let mut json = Vec::new();
    let decoder = zstd::stream::read::Decoder::new(body).map_err(DecodeError::NotZstd)?;
    std::io::Read::read_to_end(
        &mut std::io::Read::take(decoder, MAX_MESSAGE as u64 + 1),
        &mut json,
    )
    .map_err(DecodeError::NotZstd)?;
    Ok(json)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_with_a_little_endian_length() {
        let json = br#"{"Node":{"ID":1}}"#;
        let frame = encode(json);
        let len = u32::from_le_bytes(frame[..4].try_into().unwrap()) as usize;
        assert_eq!(len, frame.len() - 4);
        assert_eq!(
            &frame[4..8],
            &[0x28, 0xb5, 0x2f, 0xfd],
            "a standard zstd frame"
        );
        assert_eq!(decode(&frame).unwrap(), Some((json.to_vec(), frame.len())));
        assert_eq!(decode(&frame[..frame.len() - 1]).unwrap(), None);
        assert_eq!(
            decode(&keep_alive()).unwrap().unwrap().0,
            br#"{"KeepAlive":true}"#
        );
    }

    #[test]
    fn a_client_without_zstd_gets_the_json_itself() {
        let json = br#"{"KeepAlive":true}"#;
        let plain = to_plain(&keep_alive()).unwrap();
        assert_eq!(&plain[..4], &(json.len() as u32).to_le_bytes());
        assert_eq!(&plain[4..], json);
        assert_eq!(to_plain(b"\x05\0\0\0hello"), None, "not a zstd frame");
    }
}

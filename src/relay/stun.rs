//! The STUN binding responder (RFC 5389, the subset Tailscale's netcheck speaks):
//! a binding request in, the sender's address as `XOR-MAPPED-ADDRESS` out.
//!
//! Anything else that arrives on the socket is ignored without a reply.

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use tokio::net::UdpSocket;

/// The fixed value every STUN message carries after its length.
const MAGIC_COOKIE: [u8; 4] = [0x21, 0x12, 0xA4, 0x42];
const HEADER_LEN: usize = 20;
const BINDING_REQUEST: u16 = 0x0001;
const BINDING_SUCCESS: u16 = 0x0101;
const XOR_MAPPED_ADDRESS: u16 = 0x0020;
const FINGERPRINT: u16 = 0x8028;
/// XORed into the CRC-32 of a message to make its FINGERPRINT attribute.
const FINGERPRINT_XOR: u32 = 0x5354_554E;
/// Larger datagrams are not binding requests; they are dropped unread.
const MAX_REQUEST: usize = 1024;

/// Why a datagram got no answer. Only logged at debug level: a STUN port sees noise.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Ignored {
    #[error("shorter than a STUN header ({0} bytes)")]
    Short(usize),
    #[error("not a STUN message (bad magic cookie or type bits)")]
    NotStun,
    #[error("STUN message type {0:#06x} is not a binding request")]
    NotBinding(u16),
    #[error("attribute length {declared} does not match the {actual} bytes received")]
    BadLength { declared: usize, actual: usize },
    #[error("malformed attribute list")]
    BadAttributes,
    #[error("FINGERPRINT does not match the message")]
    BadFingerprint,
}

/// The answer to one datagram from `from`: a binding response, or why there is none.
pub fn respond(request: &[u8], from: SocketAddr) -> Result<Vec<u8>, Ignored> {
    let txid = parse_binding_request(request)?;
    Ok(binding_response(&txid, from))
}

/// Checks a binding request and returns its 12-byte transaction id.
fn parse_binding_request(msg: &[u8]) -> Result<[u8; 12], Ignored> {
    if msg.len() < HEADER_LEN {
        return Err(Ignored::Short(msg.len()));
    }
    // The two top bits of every STUN message are zero; the cookie is fixed.
    if msg[0] & 0xC0 != 0 || msg[4..8] != MAGIC_COOKIE {
        return Err(Ignored::NotStun);
    }
    let kind = u16::from_be_bytes([msg[0], msg[1]]);
    if kind != BINDING_REQUEST {
        return Err(Ignored::NotBinding(kind));
    }
    let declared = usize::from(u16::from_be_bytes([msg[2], msg[3]]));
    let actual = msg.len() - HEADER_LEN;
    if declared != actual || declared % 4 != 0 {
        return Err(Ignored::BadLength { declared, actual });
    }
    check_attributes(msg)?;
    let mut txid = [0; 12];
    txid.copy_from_slice(&msg[8..20]);
    Ok(txid)
}

/// Walks the attributes; a FINGERPRINT, when present, must be last and correct.
fn check_attributes(msg: &[u8]) -> Result<(), Ignored> {
    let mut at = HEADER_LEN;
    while at < msg.len() {
        let header = msg.get(at..at + 4).ok_or(Ignored::BadAttributes)?;
        let kind = u16::from_be_bytes([header[0], header[1]]);
        let len = usize::from(u16::from_be_bytes([header[2], header[3]]));
        let value = msg
            .get(at + 4..at + 4 + len)
            .ok_or(Ignored::BadAttributes)?;
        let next = at + 4 + len.next_multiple_of(4);
        if kind == FINGERPRINT {
            if len != 4 || next != msg.len() {
                return Err(Ignored::BadAttributes);
            }
            let want = crc32fast::hash(&msg[..at]) ^ FINGERPRINT_XOR;
            if value != want.to_be_bytes() {
                return Err(Ignored::BadFingerprint);
            }
        }
        at = next;
    }
    if at != msg.len() {
        return Err(Ignored::BadAttributes);
    }
    Ok(())
}

/// A binding success response carrying `to` as `XOR-MAPPED-ADDRESS`.
fn binding_response(txid: &[u8; 12], to: SocketAddr) -> Vec<u8> {
    let port = to.port() ^ u16::from_be_bytes([MAGIC_COOKIE[0], MAGIC_COOKIE[1]]);
    let (family, address): (u8, Vec<u8>) = match to.ip().to_canonical() {
        IpAddr::V4(ip) => (
            0x01,
            ip.octets()
                .iter()
                .zip(MAGIC_COOKIE)
                .map(|(a, k)| a ^ k)
                .collect(),
        ),
        IpAddr::V6(ip) => {
            let key = MAGIC_COOKIE.iter().chain(txid.iter());
            (
                0x02,
                ip.octets().iter().zip(key).map(|(a, k)| a ^ k).collect(),
            )
        }
    };
    let value_len = 4 + address.len();
    let mut out = Vec::with_capacity(HEADER_LEN + 4 + value_len);
    out.extend_from_slice(&BINDING_SUCCESS.to_be_bytes());
    out.extend_from_slice(&(4 + value_len as u16).to_be_bytes());
    out.extend_from_slice(&MAGIC_COOKIE);
    out.extend_from_slice(txid);
    out.extend_from_slice(&XOR_MAPPED_ADDRESS.to_be_bytes());
    out.extend_from_slice(&(value_len as u16).to_be_bytes());
    out.extend_from_slice(&[0, family]);
    out.extend_from_slice(&port.to_be_bytes());
    out.extend_from_slice(&address);
    out
}

/// Answers binding requests on `socket` until `shutdown` completes. A failed send
/// (the sender vanished) is skipped; the socket keeps serving.
pub async fn serve(socket: UdpSocket, shutdown: impl Future<Output = ()>) {
    tokio::pin!(shutdown);
    let mut buf = vec![0u8; MAX_REQUEST];
    loop {
        let (len, from) = tokio::select! {
            () = &mut shutdown => return,
            received = socket.recv_from(&mut buf) => match received {
                Ok(got) => got,
                Err(err) => {
                    // ICMP errors from earlier sends surface here on Linux; keep going.
                    tracing::debug!(%err, "STUN receive failed");
                    continue;
                }
            },
        };
        match respond(&buf[..len], from) {
            Ok(reply) => {
                if let Err(err) = socket.send_to(&reply, from).await {
                    tracing::debug!(%from, %err, "STUN reply not sent");
                }
            }
            Err(why) => tracing::debug!(%from, %why, "STUN datagram ignored"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A binding request as Tailscale's netcheck sends it: SOFTWARE "tailnode"
    /// and a FINGERPRINT.
    fn tailscale_request(txid: [u8; 12]) -> Vec<u8> {
        let mut msg = Vec::new();
        msg.extend_from_slice(&BINDING_REQUEST.to_be_bytes());
        msg.extend_from_slice(&20u16.to_be_bytes());
        msg.extend_from_slice(&MAGIC_COOKIE);
        msg.extend_from_slice(&txid);
        msg.extend_from_slice(&0x8022u16.to_be_bytes());
        msg.extend_from_slice(&8u16.to_be_bytes());
        msg.extend_from_slice(b"tailnode");
        let crc = crc32fast::hash(&msg) ^ FINGERPRINT_XOR;
        msg.extend_from_slice(&FINGERPRINT.to_be_bytes());
        msg.extend_from_slice(&4u16.to_be_bytes());
        msg.extend_from_slice(&crc.to_be_bytes());
        msg
    }

    /// Decodes a response's XOR-MAPPED-ADDRESS the way a client does.
    fn mapped_address(response: &[u8], txid: &[u8; 12]) -> SocketAddr {
        assert_eq!(response[0..2], BINDING_SUCCESS.to_be_bytes());
        assert_eq!(response[4..8], MAGIC_COOKIE);
        assert_eq!(&response[8..20], txid);
        let declared = usize::from(u16::from_be_bytes([response[2], response[3]]));
        assert_eq!(declared, response.len() - HEADER_LEN);
        assert_eq!(response[20..22], XOR_MAPPED_ADDRESS.to_be_bytes());
        let value = &response[24..];
        let port = u16::from_be_bytes([value[2], value[3]]) ^ 0x2112;
        let key: Vec<u8> = MAGIC_COOKIE.iter().chain(txid.iter()).copied().collect();
        let raw: Vec<u8> = value[4..].iter().zip(&key).map(|(a, k)| a ^ k).collect();
        let ip = match value[1] {
            1 => IpAddr::from(<[u8; 4]>::try_from(raw.as_slice()).unwrap()),
            2 => IpAddr::from(<[u8; 16]>::try_from(raw.as_slice()).unwrap()),
            other => panic!("family {other}"),
        };
        SocketAddr::new(ip, port)
    }

    #[test]
    fn a_tailscale_binding_request_gets_the_senders_address_back() {
        let txid = *b"0123456789ab";
        for from in ["198.51.100.7:41641", "[2001:db8::5]:3478"] {
            let from: SocketAddr = from.parse().unwrap();
            let reply = respond(&tailscale_request(txid), from).unwrap();
            assert_eq!(mapped_address(&reply, &txid), from);
        }
    }

    #[test]
    fn a_request_without_attributes_is_answered() {
        let mut msg = tailscale_request([7; 12]);
        msg.truncate(HEADER_LEN);
        msg[2..4].copy_from_slice(&0u16.to_be_bytes());
        let from: SocketAddr = "127.0.0.1:5000".parse().unwrap();
        assert_eq!(
            mapped_address(&respond(&msg, from).unwrap(), &[7; 12]),
            from
        );
    }

    #[test]
    fn bad_datagrams_get_no_answer() {
        let from: SocketAddr = "127.0.0.1:5000".parse().unwrap();
        let good = tailscale_request([1; 12]);
        assert_eq!(respond(&good[..10], from), Err(Ignored::Short(10)));
        assert_eq!(
            respond(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", from),
            Err(Ignored::NotStun)
        );

        let mut response_type = good.clone();
        response_type[0..2].copy_from_slice(&BINDING_SUCCESS.to_be_bytes());
        assert_eq!(
            respond(&response_type, from),
            Err(Ignored::NotBinding(0x0101))
        );

        assert!(matches!(
            respond(&good[..good.len() - 4], from),
            Err(Ignored::BadLength { .. })
        ));

        let mut bad_crc = good.clone();
        let last = bad_crc.len() - 1;
        bad_crc[last] ^= 0xFF;
        assert_eq!(respond(&bad_crc, from), Err(Ignored::BadFingerprint));

        // An attribute claiming more bytes than the message holds.
        let mut overlong = good.clone();
        overlong[22..24].copy_from_slice(&200u16.to_be_bytes());
        assert_eq!(respond(&overlong, from), Err(Ignored::BadAttributes));
    }

    #[tokio::test]
    async fn the_responder_answers_over_udp_and_survives_garbage() {
        let server = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let addr = server.local_addr().unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(serve(server, async {
            let _ = stopped.await;
        }));
        let client = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        client.send_to(b"\x00garbage", addr).await.unwrap();
        let txid = *b"abcdefghijkl";
        client
            .send_to(&tailscale_request(txid), addr)
            .await
            .unwrap();
        let mut buf = [0u8; 128];
        let (len, _) = tokio::time::timeout(
            std::time::Duration::from_secs(5),
            client.recv_from(&mut buf),
        )
        .await
        .expect("a reply within the hang guard")
        .unwrap();
        assert_eq!(
            mapped_address(&buf[..len], &txid),
            client.local_addr().unwrap()
        );
        stop.send(()).unwrap();
        task.await.unwrap();
    }
}

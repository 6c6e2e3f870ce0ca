//! The DNS listeners: [`answer`] on a UDP socket and on TCP connections
//! (length-prefixed messages, RFC 7766), until shutdown.
//!
//! Errors are logged at debug level only: a DNS port sees floods and scans.

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::task::JoinSet;

use super::{Transport, Zone, answer};

/// Larger datagrams are not queries of ours; they are dropped unanswered.
const MAX_DATAGRAM: usize = 4096;
/// A TCP connection is closed when a message takes longer than this to arrive
/// or to be written, and when it is idle this long between messages.
const IDLE_TIMEOUT: Duration = Duration::from_secs(10);
/// Connections served at once; further ones are closed as they arrive.
const MAX_CONNECTIONS: usize = 64;
/// Connections one address may hold at once, so that one client cannot take
/// every place.
pub(super) const MAX_PER_SOURCE: usize = 8;
/// However busy, a connection is closed after this long (a client trickling
/// one query every few seconds would otherwise keep its place for ever).
const MAX_LIFETIME: Duration = Duration::from_secs(60);
/// A pause after an error that may repeat at once (out of file descriptors),
/// so that the loop does not spin.
const ERROR_PAUSE: Duration = Duration::from_millis(100);

/// Answers queries for `zone` on `udp` and `tcp` until `shutdown` completes; every
/// connection task is owned here and stops with it.
pub async fn serve(
    zone: Arc<Zone>,
    udp: UdpSocket,
    tcp: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) {
    tokio::select! {
        () = shutdown => {}
        () = serve_udp(&zone, udp) => {}
        () = serve_tcp(&zone, tcp) => {}
    }
}

async fn serve_udp(zone: &Zone, socket: UdpSocket) {
    // One byte more than the limit tells a datagram that fits from one cut short.
    let mut buf = vec![0u8; MAX_DATAGRAM + 1];
    loop {
        let (len, from) = match socket.recv_from(&mut buf).await {
            Ok(got) => got,
            Err(err) => {
                tracing::debug!(%err, "DNS receive failed");
                tokio::time::sleep(ERROR_PAUSE).await;
                continue;
            }
        };
        if len > MAX_DATAGRAM {
            tracing::debug!(%from, "DNS datagram too large, ignored");
            continue;
        }
        let Some(response) = answer(zone, &buf[..len], Transport::Udp, Instant::now()) else {
            continue;
        };
        if let Err(err) = socket.send_to(&response, from).await {
            tracing::debug!(%from, %err, "DNS response not sent");
        }
    }
}

async fn serve_tcp(zone: &Arc<Zone>, listener: TcpListener) {
    let mut connections = JoinSet::new();
    let mut per_source: HashMap<IpAddr, usize> = HashMap::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, from)) => {
                    let held = per_source.entry(from.ip()).or_default();
                    if connections.len() >= MAX_CONNECTIONS || *held >= MAX_PER_SOURCE {
                        tracing::debug!(%from, "DNS connection refused: too many open");
                        continue;
                    }
                    *held += 1;
                    let zone = zone.clone();
                    connections.spawn(async move {
                        match tokio::time::timeout(MAX_LIFETIME, serve_connection(&zone, stream)).await {
                            Ok(Err(err)) => tracing::debug!(%from, %err, "DNS connection ended"),
                            Err(_) => tracing::debug!(%from, "DNS connection closed after its lifetime"),
                            Ok(Ok(())) => {}
                        }
                        from.ip()
                    });
                }
                Err(err) => {
                    tracing::debug!(%err, "DNS accept failed");
                    tokio::time::sleep(ERROR_PAUSE).await;
                }
            },
            // Finished connections leave the set, freeing their places.
            Some(done) = connections.join_next(), if !connections.is_empty() => {
                if let Ok(ip) = done
                    && let Some(held) = per_source.get_mut(&ip)
                {
                    *held -= 1;
                    if *held == 0 {
                        per_source.remove(&ip);
                    }
                }
            }
        }
    }
}

/// Answers length-prefixed messages on one connection until the client closes
/// it, goes quiet, or sends a message too short to answer.
async fn serve_connection(zone: &Zone, mut stream: TcpStream) -> io::Result<()> {
    stream.set_nodelay(true)?;
    loop {
        let query = match tokio::time::timeout(IDLE_TIMEOUT, read_message(&mut stream)).await {
            Ok(Ok(Some(query))) => query,
            Ok(Ok(None)) | Err(_) => return Ok(()),
            Ok(Err(err)) => return Err(err),
        };
        let Some(response) = answer(zone, &query, Transport::Tcp, Instant::now()) else {
            return Ok(());
        };
        // `answer` keeps TCP responses to 16 KiB, well inside the prefix's range.
        let len = u16::try_from(response.len()).map_err(io::Error::other)?;
        let mut framed = Vec::with_capacity(2 + response.len());
        framed.extend_from_slice(&len.to_be_bytes());
        framed.extend_from_slice(&response);
        tokio::time::timeout(IDLE_TIMEOUT, stream.write_all(&framed))
            .await
            .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "response not read"))??;
    }
}

/// One message, or `None` when the client closed the connection between messages.
async fn read_message(stream: &mut TcpStream) -> io::Result<Option<Vec<u8>>> {
    let mut prefix = [0u8; 2];
    match stream.read_exact(&mut prefix).await {
        Ok(_) => {}
        Err(err) if err.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(err) => return Err(err),
    }
    let mut message = vec![0u8; usize::from(u16::from_be_bytes(prefix))];
    stream.read_exact(&mut message).await?;
    Ok(Some(message))
}

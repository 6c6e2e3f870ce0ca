//! The `listen_addr` accept loop: plain HTTP and, when headway has a certificate,
//! TLS on the same port (told apart by the first byte a client sends), each
//! connection served by the router with HTTP/1.1 upgrades and HTTP/2.

use axum::Router;
use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt;

/// The first byte of every TLS connection (a handshake record).
const TLS_HANDSHAKE: u8 = 0x16;
/// A client must send its first byte, and finish a TLS handshake, within this.
const FIRST_BYTES_TIMEOUT: Duration = Duration::from_secs(10);

/// Serves `router` on `listener` until `shutdown` completes; open connections are
/// then asked to finish (long polls end, upgraded streams are left to the caller's
/// grace period). `tls` enables TLS next to plain HTTP on the same port.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    tls: Option<Arc<rustls::ServerConfig>>,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let tls = tls.map(TlsAcceptor::from);
    let (stop_tx, stop_rx) = watch::channel(false);
    tokio::pin!(shutdown);
    loop {
        let (tcp, remote) = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(err) => {
                    // Out of file descriptors and the like: wait instead of spinning.
                    tracing::warn!(%err, "accepting an HTTP connection failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        // Small map updates must not wait for Nagle's algorithm.
        let _ = tcp.set_nodelay(true);
        tokio::spawn(connection(
            tcp,
            remote,
            router.clone(),
            tls.clone(),
            stop_rx.clone(),
        ));
    }
    let _ = stop_tx.send(true);
    Ok(())
}

/// One accepted connection: TLS or not, then HTTP until either side ends it.
async fn connection(
    tcp: TcpStream,
    remote: SocketAddr,
    router: Router,
    tls: Option<TlsAcceptor>,
    stop: watch::Receiver<bool>,
) {
    let is_tls = match &tls {
        None => false,
        Some(_) => {
            let mut first = [0u8; 1];
            match tokio::time::timeout(FIRST_BYTES_TIMEOUT, tcp.peek(&mut first)).await {
                Ok(Ok(1)) => first[0] == TLS_HANDSHAKE,
                // Closed, failed or silent before its first byte: nothing to serve.
                _ => return,
            }
        }
    };
    match tls.filter(|_| is_tls) {
        Some(acceptor) => {
            match tokio::time::timeout(FIRST_BYTES_TIMEOUT, acceptor.accept(tcp)).await {
                Ok(Ok(stream)) => http(TokioIo::new(stream), remote, router, stop).await,
                Ok(Err(err)) => tracing::debug!(%remote, %err, "TLS handshake failed"),
                Err(_) => tracing::debug!(%remote, "TLS handshake timed out"),
            }
        }
        None => http(TokioIo::new(tcp), remote, router, stop).await,
    }
}

async fn http<IO>(io: IO, remote: SocketAddr, router: Router, mut stop: watch::Receiver<bool>)
where
    IO: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let service = hyper::service::service_fn(move |mut request: hyper::Request<Incoming>| {
        // Handlers that need the peer address read it as `ConnectInfo`.
        request.extensions_mut().insert(ConnectInfo(remote));
        router.clone().oneshot(request)
    });
    let builder = auto::Builder::new(TokioExecutor::new());
    let connection = builder.serve_connection_with_upgrades(io, service);
    tokio::pin!(connection);
    let result = tokio::select! {
        result = connection.as_mut() => result,
        _ = async { drop(stop.wait_for(|stop| *stop).await) } => {
            connection.as_mut().graceful_shutdown();
            connection.as_mut().await
        }
    };
    if let Err(err) = result {
        tracing::debug!(%remote, %err, "HTTP connection ended with an error");
    }
}

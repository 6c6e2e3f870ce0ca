//! The `listen_addr` accept loop: plain HTTP and, when headway has a certificate,
//! TLS on the same port (told apart by the first byte a client sends), each
//! connection served by the router with HTTP/1.1 upgrades and HTTP/2, within
//! the connection limits (`crate::limits`).

use crate::limits::{Conn, Guarded, Limits, TimedBody, Tracked};
use crate::tasks::Tasks;
use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt;

/// The first byte of every TLS connection (a handshake record).
const TLS_HANDSHAKE: u8 = 0x16;

/// Serves `router` on `listener` until `shutdown` completes; open connections are
/// then asked to finish, within the grace period of `tasks`, which they run
/// under (upgraded streams are the upgrade's own tasks). `tls` enables TLS next
/// to plain HTTP on the same port. Every connection is admitted by `limits` and
/// held to its timeouts.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    tls: Option<Arc<rustls::ServerConfig>>,
    limits: Arc<Limits>,
    tasks: &Tasks,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let tls = tls.map(TlsAcceptor::from);
    let (stop_tx, stop_rx) = watch::channel(false);
    tokio::pin!(shutdown);
    loop {
        let (tcp, remote, conn) = tokio::select! {
            () = &mut shutdown => break,
            accepted = limits.accept(&listener, "HTTP") => accepted,
        };
        // Small map updates must not wait for Nagle's algorithm.
        let _ = tcp.set_nodelay(true);
        tasks.spawn_finishing(connection(
            Guarded::new(tcp, conn),
            remote,
            router.clone(),
            tls.clone(),
            stop_rx.clone(),
            tasks.clone(),
        ));
    }
    let _ = stop_tx.send(true);
    Ok(())
}

/// One accepted connection: TLS or not, then HTTP until either side ends it.
/// Until its first request it is in its handshake phase: a client that sends
/// nothing, or stalls its TLS handshake, is dropped at `handshake_timeout`.
async fn connection(
    mut tcp: Guarded<TcpStream>,
    remote: SocketAddr,
    router: Router,
    tls: Option<TlsAcceptor>,
    stop: watch::Receiver<bool>,
    tasks: Tasks,
) {
    let conn = tcp.conn().clone();
    let handshake_timeout = conn.settings().handshake_timeout;
    let is_tls = match &tls {
        None => false,
        Some(_) => {
            let mut first = [0u8; 1];
            match tcp.peek(&mut first).await {
                Ok(1) => first[0] == TLS_HANDSHAKE,
                // Closed, failed, silent until the handshake timeout, or closed to
                // make room: nothing to serve.
                _ => return,
            }
        }
    };
    match tls.filter(|_| is_tls) {
        Some(acceptor) => {
            match tokio::time::timeout(handshake_timeout, acceptor.accept(tcp)).await {
                Ok(Ok(stream)) => {
                    http(TokioIo::new(stream), remote, conn, router, stop, &tasks).await;
                }
                Ok(Err(err)) => tracing::debug!(%remote, %err, "TLS handshake failed"),
                Err(_) => tracing::debug!(%remote, "TLS handshake timed out"),
            }
        }
        None => http(TokioIo::new(tcp), remote, conn, router, stop, &tasks).await,
    }
}

async fn http<IO>(
    io: IO,
    remote: SocketAddr,
    conn: Conn,
    router: Router,
    mut stop: watch::Receiver<bool>,
    tasks: &Tasks,
) where
    IO: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let request_timeout = conn.settings().request_timeout;
    let service = hyper::service::service_fn(move |mut request: hyper::Request<Incoming>| {
        // Counted until its response body has been sent: the connection is not idle.
        let in_flight = conn.request();
        // Handlers that need the peer address read it as `ConnectInfo`; upgrades
        // move the connection to their next phase through its `Conn`.
        request.extensions_mut().insert(ConnectInfo(remote));
        request.extensions_mut().insert(conn.clone());
        let request = request.map(|body| Body::new(TimedBody::new(body, request_timeout)));
        let call = router.clone().oneshot(request);
        async move {
            let response = call.await?;
            Ok::<_, std::convert::Infallible>(
                response.map(|body| Body::new(Tracked::new(body, Some(in_flight)))),
            )
        }
    });
    let mut builder = auto::Builder::new(tasks.executor(true));
    // The next request's headers are due within `request_timeout` of the last
    // response, which also closes idle HTTP/1 keep-alive connections.
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(request_timeout);
    builder.http2().timer(TokioTimer::new());
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

//! The remote gRPC listener's connections, and their TLS, done here rather than by tonic so that the
//! certificate can be ACME's (renewed in place through its resolver) as well as
//! the files', and so that every call still carries its connection's
//! `limits::Conn` (counted as in progress; refused keys logged with their
//! source). Handshakes run side by side, each due within the connection's
//! handshake timeout, so a stalled one never holds up the next.

use crate::limits::{Conn, Guarded};
use crate::tasks::Tasks;
use futures_util::{Stream, StreamExt};
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tokio_util::either::Either;

/// Connections whose handshake is done, waiting for the gRPC server to take them.
const READY: usize = 64;

/// An admitted connection, after its TLS handshake when the listener has a
/// certificate.
#[derive(Debug)]
pub struct RemoteConn(Either<Guarded<TcpStream>, TlsStream<Guarded<TcpStream>>>);

/// `config` as gRPC needs it: HTTP/2 is the only protocol offered.
pub fn for_grpc(config: &rustls::ServerConfig) -> Arc<rustls::ServerConfig> {
    let mut config = config.clone();
    config.alpn_protocols = vec![b"h2".to_vec()];
    Arc::new(config)
}

/// The connections of `plain`, each after a TLS handshake with `config` when
/// there is one; those that fail or time out are dropped with a debug line.
/// The handshakes run under `tasks`.
pub fn incoming(
    plain: impl Stream<Item = io::Result<Guarded<TcpStream>>> + Send + 'static,
    config: Option<Arc<rustls::ServerConfig>>,
    tasks: &Tasks,
) -> impl Stream<Item = io::Result<RemoteConn>> + Send + 'static {
    let Some(config) = config else {
        return plain
            .map(|tcp| tcp.map(|tcp| RemoteConn(Either::Left(tcp))))
            .left_stream();
    };
    let (ready, mut waiting) = tokio::sync::mpsc::channel(READY);
    let acceptor = TlsAcceptor::from(config);
    let handshakes = tasks.clone();
    tasks.spawn(async move {
        let mut plain = std::pin::pin!(plain);
        while let Some(tcp) = plain.next().await {
            let Ok(tcp) = tcp else { continue };
            let (acceptor, ready) = (acceptor.clone(), ready.clone());
            handshakes.spawn(async move {
                let timeout = tcp.conn().settings().handshake_timeout;
                let source = tcp.conn().source();
                match tokio::time::timeout(timeout, acceptor.accept(tcp)).await {
                    Ok(Ok(tls)) => drop(ready.send(RemoteConn(Either::Right(tls))).await),
                    Ok(Err(err)) => {
                        tracing::debug!(%source, %err, "gRPC TLS handshake failed");
                    }
                    Err(_) => tracing::debug!(%source, "gRPC TLS handshake timed out"),
                }
            });
        }
    });
    futures_util::stream::poll_fn(move |cx| waiting.poll_recv(cx).map(|tls| tls.map(Ok)))
        .right_stream()
}

/// tonic puts the [`Conn`] on every request, as for plain connections.
impl tonic::transport::server::Connected for RemoteConn {
    type ConnectInfo = Conn;

    fn connect_info(&self) -> Conn {
        match &self.0 {
            Either::Left(tcp) => tcp.conn().clone(),
            Either::Right(tls) => tls.get_ref().0.conn().clone(),
        }
    }
}

impl AsyncRead for RemoteConn {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl AsyncWrite for RemoteConn {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.0.is_write_vectored()
    }
}

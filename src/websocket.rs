//! WebSocket connections as byte streams: [`ByteStream`] carries a protocol's
//! bytes in binary messages, so the browser forms of `/ts2021` and `/derp` run
//! the same Noise and DERP code as their `Upgrade:` forms.
//!
//! Knows WebSocket messages, not what the bytes inside mean; imports nothing else
//! from the crate. Mirrors Tailscale's `net/wsconn` (a `net.Conn` over binary
//! messages), with the limits its clients expect.

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket, WebSocketUpgrade, close_code};
use axum::http::{HeaderMap, header};
use bytes::Bytes;
use futures_util::{Sink, Stream};
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// The largest message a client may send; a larger one closes the connection.
/// Far above what either protocol needs (a Noise record is at most 4 KiB, a DERP
/// frame 64 KiB, and clients send one message per write).
pub const MAX_RECEIVE_LEN: usize = 1 << 20;
/// The largest message sent. Tailscale's WebSocket clients (Go's
/// `coder/websocket`, in the browser too) refuse a message over 32 KiB and close
/// the connection, so longer writes are split.
pub const MAX_SEND_LEN: usize = 32 * 1024;
/// The library's read buffer, allocated for the connection's lifetime (its default
/// is 128 KiB; these connections are many and carry little).
const READ_BUFFER_LEN: usize = 8 * 1024;
/// How long a refused client has to answer our close frame before the socket is dropped.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);

/// Applies the limits every WebSocket of the crate shares: messages and frames of
/// at most [`MAX_RECEIVE_LEN`], a small read buffer, and each sent message handed
/// to the socket at once ([`ByteStream`] already gathers small writes).
/// No compression is ever negotiated: the library implements none, and Noise
/// records and WireGuard packets would not compress anyway.
pub fn with_limits(upgrade: WebSocketUpgrade) -> WebSocketUpgrade {
    upgrade
        .max_message_size(MAX_RECEIVE_LEN)
        .max_frame_size(MAX_RECEIVE_LEN)
        .read_buffer_size(READ_BUFFER_LEN)
        .write_buffer_size(0)
}

/// Whether the request's `Sec-WebSocket-Protocol` list names `protocol`.
pub fn offers_protocol(headers: &HeaderMap, protocol: &str) -> bool {
    headers
        .get_all(header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|list| list.split(','))
        .any(|offered| offered.trim() == protocol)
}

/// Ends a connection that will not be served: sends a close frame with `code`
/// and `reason` (which a browser shows its page), then waits a moment for the
/// client's answer, so the frame is not lost to a reset.
pub async fn close(mut socket: WebSocket, code: u16, reason: &'static str) {
    let frame = CloseFrame {
        code,
        reason: Utf8Bytes::from_static(reason),
    };
    if socket.send(Message::Close(Some(frame))).await.is_err() {
        return;
    }
    let drained = async { while let Some(Ok(_)) = socket.recv().await {} };
    let _ = tokio::time::timeout(CLOSE_TIMEOUT, drained).await;
}

/// A WebSocket as a byte stream. Reads return the bytes of binary messages in
/// order, message boundaries ignored; a text message is refused (close code
/// 1003, as Go's `wsconn`) and a close from the client is end of stream.
/// Writes are gathered into binary messages of at most [`MAX_SEND_LEN`] bytes,
/// sent when full or on flush. Pings are answered by the library.
///
/// Idle, it holds no buffers of its own.
pub struct ByteStream {
    socket: WebSocket,
    /// The part of the last binary message not read yet.
    incoming: Bytes,
    /// The client closed, or broke the stream: reads return end of stream.
    read_done: bool,
    /// Written bytes not sent yet: the next message.
    outgoing: Vec<u8>,
    /// Our close frame is queued; nothing more may be sent.
    closing: bool,
}

impl ByteStream {
    pub fn new(socket: WebSocket) -> ByteStream {
        ByteStream {
            socket,
            incoming: Bytes::new(),
            read_done: false,
            outgoing: Vec::new(),
            closing: false,
        }
    }

    /// Hands the gathered bytes to the socket as one binary message.
    fn poll_send_outgoing(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.outgoing.is_empty() {
            return Poll::Ready(Ok(()));
        }
        ready!(Pin::new(&mut self.socket).poll_ready(cx)).map_err(io_error)?;
        let message = Message::Binary(Bytes::from(std::mem::take(&mut self.outgoing)));
        Pin::new(&mut self.socket)
            .start_send(message)
            .map_err(io_error)?;
        Poll::Ready(Ok(()))
    }

    /// Queues a close frame if the socket takes it now, and pushes it out; best
    /// effort, for a stream that is about to fail.
    fn try_close(&mut self, cx: &mut Context<'_>, code: u16, reason: &'static str) {
        if self.closing {
            return;
        }
        self.closing = true;
        let mut socket = Pin::new(&mut self.socket);
        if let Poll::Ready(Ok(())) = socket.as_mut().poll_ready(cx) {
            let frame = CloseFrame {
                code,
                reason: Utf8Bytes::from_static(reason),
            };
            if socket
                .as_mut()
                .start_send(Message::Close(Some(frame)))
                .is_ok()
            {
                let _ = socket.poll_flush(cx);
            }
        }
    }
}

impl std::fmt::Debug for ByteStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ByteStream")
            .field("incoming", &self.incoming.len())
            .field("outgoing", &self.outgoing.len())
            .field("read_done", &self.read_done)
            .field("closing", &self.closing)
            .finish()
    }
}

fn io_error(err: axum::Error) -> io::Error {
    io::Error::new(io::ErrorKind::ConnectionAborted, err)
}

impl AsyncRead for ByteStream {
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
            if !this.incoming.is_empty() {
                let n = this.incoming.len().min(buf.remaining());
                buf.put_slice(&this.incoming.split_to(n));
                return Poll::Ready(Ok(()));
            }
            if this.read_done {
                return Poll::Ready(Ok(()));
            }
            match ready!(Pin::new(&mut this.socket).poll_next(cx)) {
                Some(Ok(Message::Binary(data))) => this.incoming = data,
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
                Some(Ok(Message::Close(_))) | None => this.read_done = true,
                Some(Ok(Message::Text(_))) => {
                    this.read_done = true;
                    this.try_close(cx, close_code::UNSUPPORTED, "binary messages only");
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "a text message on a binary WebSocket stream",
                    )));
                }
                Some(Err(err)) => {
                    this.read_done = true;
                    return Poll::Ready(Err(io_error(err)));
                }
            }
        }
    }
}

impl AsyncWrite for ByteStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.closing {
            return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into()));
        }
        if buf.is_empty() {
            return Poll::Ready(Ok(0));
        }
        if this.outgoing.len() >= MAX_SEND_LEN {
            ready!(this.poll_send_outgoing(cx))?;
        }
        let n = buf.len().min(MAX_SEND_LEN - this.outgoing.len());
        this.outgoing.extend_from_slice(&buf[..n]);
        Poll::Ready(Ok(n))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_send_outgoing(cx))?;
        Pin::new(&mut this.socket).poll_flush(cx).map_err(io_error)
    }

    /// Sends what is left, then a normal close (1000), which Go's clients read as
    /// end of stream.
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if !this.closing {
            ready!(this.poll_send_outgoing(cx))?;
            ready!(Pin::new(&mut this.socket).poll_ready(cx)).map_err(io_error)?;
            let frame = CloseFrame {
                code: close_code::NORMAL,
                reason: Utf8Bytes::default(),
            };
            Pin::new(&mut this.socket)
                .start_send(Message::Close(Some(frame)))
                .map_err(io_error)?;
            this.closing = true;
        }
        Pin::new(&mut this.socket).poll_close(cx).map_err(io_error)
    }
}

/// A WebSocket client for tests, and a bridge from its messages to a byte stream
/// written independently of [`ByteStream`], so each side checks the other.
#[cfg(test)]
pub mod test_client {
    use futures_util::{SinkExt, StreamExt};
    use std::net::SocketAddr;
    use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};
    use tokio::net::TcpStream;
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    use tokio_tungstenite::tungstenite::http::HeaderValue;
    use tokio_tungstenite::tungstenite::protocol::CloseFrame;
    use tokio_tungstenite::tungstenite::{self, Message};

    pub type Client = tokio_tungstenite::WebSocketStream<TcpStream>;

    /// Opens `ws://addr{path_and_query}`, offering `protocol` if given.
    pub async fn connect(
        addr: SocketAddr,
        path_and_query: &str,
        protocol: Option<&str>,
    ) -> Result<(Client, tungstenite::handshake::client::Response), tungstenite::Error> {
        let mut request = format!("ws://{addr}{path_and_query}")
            .into_client_request()
            .unwrap();
        if let Some(protocol) = protocol {
            request.headers_mut().insert(
                "sec-websocket-protocol",
                HeaderValue::from_str(protocol).unwrap(),
            );
        }
        let tcp = TcpStream::connect(addr).await.unwrap();
        tcp.set_nodelay(true).unwrap();
        tokio_tungstenite::client_async(request, tcp).await
    }

    /// The close frame the server sends next, skipping other messages; `None`
    /// when the connection ends without one.
    pub async fn next_close(client: &mut Client) -> Option<CloseFrame> {
        while let Some(message) = client.next().await {
            match message {
                Ok(Message::Close(frame)) => return frame,
                Ok(_) => {}
                Err(_) => return None,
            }
        }
        None
    }

    /// Runs `client` as a byte stream: what is written to the returned end goes
    /// out as one binary message per write (as Go's `wsconn` does), binary
    /// messages that arrive are written to it, each checked against
    /// [`super::MAX_SEND_LEN`]. A close or a broken connection ends the stream.
    pub fn bridge(client: Client) -> DuplexStream {
        let (ours, theirs) = tokio::io::duplex(256 * 1024);
        tokio::spawn(async move {
            let (mut sink, mut stream) = client.split();
            let (mut reader, mut writer) = tokio::io::split(theirs);
            let outbound = async {
                let mut buf = vec![0u8; 16 * 1024];
                loop {
                    match reader.read(&mut buf).await {
                        Ok(0) | Err(_) => {
                            let _ = sink.close().await;
                            return;
                        }
                        Ok(n) => {
                            let message = Message::Binary(buf[..n].to_vec().into());
                            if sink.send(message).await.is_err() {
                                return;
                            }
                        }
                    }
                }
            };
            let inbound = async {
                while let Some(Ok(message)) = stream.next().await {
                    match message {
                        Message::Binary(data) => {
                            assert!(
                                data.len() <= super::MAX_SEND_LEN,
                                "a {}-byte message",
                                data.len()
                            );
                            if writer.write_all(&data).await.is_err() {
                                return;
                            }
                        }
                        Message::Close(_) => break,
                        _ => {}
                    }
                }
                let _ = writer.shutdown().await;
            };
            tokio::select! {
                () = outbound => {}
                () = inbound => {}
            }
        });
        ours
    }
}

#[cfg(test)]
mod tests {
    use super::test_client::{self, next_close};
    use super::*;
    use axum::Router;
    use axum::extract::State;
    use axum::routing::get;
    use futures_util::{SinkExt, StreamExt};
    use std::net::SocketAddr;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::sync::mpsc;
    use tokio_tungstenite::tungstenite::Message as ClientMessage;
    use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

    const WAIT: Duration = Duration::from_secs(10);

    /// A server whose `/echo` copies every byte back through a [`ByteStream`],
    /// whose `/hello` writes a greeting in small pieces and shuts down, and whose
    /// `/collect` reads to the end and reports what it read on the channel.
    async fn spawn_server() -> (SocketAddr, mpsc::Receiver<io::Result<Vec<u8>>>) {
        let (collected, receiver) = mpsc::channel(1);
        let app = Router::new()
            .route(
                "/echo",
                get(|upgrade: WebSocketUpgrade| async {
                    with_limits(upgrade).on_upgrade(|socket| async {
                        let (mut reader, mut writer) = tokio::io::split(ByteStream::new(socket));
                        let _ = tokio::io::copy(&mut reader, &mut writer).await;
                    })
                }),
            )
            .route(
                "/hello",
                get(|upgrade: WebSocketUpgrade| async {
                    with_limits(upgrade).on_upgrade(|socket| async {
                        let mut stream = ByteStream::new(socket);
                        for word in ["he", "llo", " ", "world"] {
                            stream.write_all(word.as_bytes()).await.unwrap();
                        }
                        stream.flush().await.unwrap();
                        stream.shutdown().await.unwrap();
                    })
                }),
            )
            .route(
                "/collect",
                get(
                    |State(collected): State<mpsc::Sender<io::Result<Vec<u8>>>>,
                     upgrade: WebSocketUpgrade| async move {
                        with_limits(upgrade).on_upgrade(|socket| async move {
                            let mut stream = ByteStream::new(socket);
                            let mut all = Vec::new();
                            let read = stream.read_to_end(&mut all).await.map(|_| all);
                            collected.send(read).await.unwrap();
                        })
                    },
                ),
            )
            .with_state(collected);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        (addr, receiver)
    }

    async fn next_message(client: &mut test_client::Client) -> ClientMessage {
        tokio::time::timeout(WAIT, client.next())
            .await
            .expect("a message in time")
            .expect("an open connection")
            .expect("a valid message")
    }

    #[tokio::test]
    async fn small_writes_leave_as_one_message_on_flush_and_shutdown_closes_normally() {
        let (addr, _) = spawn_server().await;
        let (mut client, _) = test_client::connect(addr, "/hello", None).await.unwrap();
        assert_eq!(
            next_message(&mut client).await,
            ClientMessage::Binary(Bytes::from_static(b"hello world"))
        );
        let close = next_close(&mut client).await.expect("a close frame");
        assert_eq!(close.code, CloseCode::Normal);
    }

    #[tokio::test]
    async fn messages_read_as_one_stream_and_long_writes_are_split() {
        let (addr, _) = spawn_server().await;
        let (mut client, _) = test_client::connect(addr, "/echo", None).await.unwrap();
        // Message boundaries are not preserved: three messages, one byte stream.
        for part in [b"ab".as_slice(), b"", b"cd"] {
            client
                .send(ClientMessage::Binary(Bytes::copy_from_slice(part)))
                .await
                .unwrap();
        }
        client
            .send(ClientMessage::Ping(Bytes::new()))
            .await
            .unwrap();
        let mut echoed = Vec::new();
        while echoed.len() < 4 {
            match next_message(&mut client).await {
                ClientMessage::Binary(data) => echoed.extend_from_slice(&data),
                ClientMessage::Pong(_) => {}
                other => panic!("unexpected {other:?}"),
            }
        }
        assert_eq!(echoed, b"abcd");

        // The largest message a client may send comes back in messages the
        // browser client accepts.
        let big: Vec<u8> = (0..MAX_RECEIVE_LEN).map(|i| (i % 251) as u8).collect();
        client
            .send(ClientMessage::Binary(big.clone().into()))
            .await
            .unwrap();
        let mut echoed = Vec::new();
        while echoed.len() < big.len() {
            match next_message(&mut client).await {
                ClientMessage::Binary(data) => {
                    assert!(data.len() <= MAX_SEND_LEN, "{} bytes", data.len());
                    echoed.extend_from_slice(&data);
                }
                other => panic!("unexpected {other:?}"),
            }
        }
        assert!(echoed == big, "the echo differs");
    }

    #[tokio::test]
    async fn a_text_message_closes_with_unsupported_data() {
        let (addr, _) = spawn_server().await;
        let (mut client, _) = test_client::connect(addr, "/echo", None).await.unwrap();
        client.send(ClientMessage::text("hello")).await.unwrap();
        let close = tokio::time::timeout(WAIT, next_close(&mut client))
            .await
            .unwrap()
            .expect("a close frame");
        assert_eq!(close.code, CloseCode::Unsupported);
    }

    #[tokio::test]
    async fn a_message_over_the_limit_ends_the_connection() {
        let (addr, _) = spawn_server().await;
        let (mut client, _) = test_client::connect(addr, "/echo", None).await.unwrap();
        let _ = client
            .send(ClientMessage::Binary(vec![0u8; MAX_RECEIVE_LEN + 1].into()))
            .await;
        let ended = tokio::time::timeout(WAIT, async {
            loop {
                match client.next().await {
                    None | Some(Err(_)) | Some(Ok(ClientMessage::Close(_))) => return,
                    Some(Ok(ClientMessage::Binary(data))) => panic!("echoed {}", data.len()),
                    Some(Ok(_)) => {}
                }
            }
        })
        .await;
        assert!(ended.is_ok(), "the connection stayed open");
    }

    #[tokio::test]
    async fn a_client_close_is_end_of_stream() {
        let (addr, mut collected) = spawn_server().await;
        let (mut client, _) = test_client::connect(addr, "/collect", None).await.unwrap();
        for part in [b"one ".as_slice(), b"two"] {
            client
                .send(ClientMessage::Binary(Bytes::copy_from_slice(part)))
                .await
                .unwrap();
        }
        client.close(None).await.unwrap();
        let read = tokio::time::timeout(WAIT, collected.recv())
            .await
            .expect("the server's read ended")
            .unwrap();
        assert_eq!(read.unwrap(), b"one two");
    }

    #[tokio::test]
    async fn a_text_message_fails_the_read() {
        let (addr, mut collected) = spawn_server().await;
        let (mut client, _) = test_client::connect(addr, "/collect", None).await.unwrap();
        client
            .send(ClientMessage::Binary(Bytes::from_static(b"fine")))
            .await
            .unwrap();
        client.send(ClientMessage::text("not fine")).await.unwrap();
        let read = tokio::time::timeout(WAIT, collected.recv())
            .await
            .expect("the server's read ended")
            .unwrap();
        assert_eq!(read.unwrap_err().kind(), io::ErrorKind::InvalidData);
    }

    #[test]
    fn protocols_are_matched_as_list_items() {
        let mut headers = HeaderMap::new();
        headers.append(
            header::SEC_WEBSOCKET_PROTOCOL,
            "chat, derp".parse().unwrap(),
        );
        assert!(offers_protocol(&headers, "derp"));
        assert!(!offers_protocol(&headers, "der"));
        headers.clear();
        headers.append(header::SEC_WEBSOCKET_PROTOCOL, "derpx".parse().unwrap());
        assert!(!offers_protocol(&headers, "derp"));
        assert!(!offers_protocol(&HeaderMap::new(), "derp"));
    }
}

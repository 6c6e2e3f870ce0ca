//! Abuse limits on connections: how many TCP connections headway holds at once,
//! how many of them may still be unproven per source address, how long each
//! phase of a connection may last, and a token bucket per source address for
//! registration attempts.
//!
//! Knows sockets, addresses and clocks; nothing of routes, Noise or nodes. The
//! listeners admit every accepted socket through [`Limits::accept`] and wrap it
//! in a [`Guarded`], which fails the socket's reads once the deadline of the
//! connection's current phase has passed; the protocol code above moves a
//! connection from phase to phase through its [`Conn`] handle.

use futures_util::task::AtomicWaker;
use hyper::body::{Body, Frame, SizeHint};
use ipnet::IpNet;
use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::io;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::{Instant, Sleep};

/// The limits in force (`limits.*` and `trusted_proxies` in the config).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Settings {
    /// From accepting a connection to its first request (first byte, TLS
    /// handshake, HTTP/2 preface, the request's headers); from a `/ts2021` upgrade
    /// to the first request inside Noise; from a `/derp` upgrade to the ClientInfo.
    pub handshake_timeout: Duration,
    /// Each later request's headers (counted from the end of the previous
    /// response) and every request body.
    pub request_timeout: Duration,
    /// How long a connection may stay open with no request in progress.
    pub idle_timeout: Duration,
    /// Accepted TCP connections held at once, over every listener that admits
    /// through these limits.
    pub max_connections: usize,
    /// Connections from one source address (an IPv4 address or an IPv6 /64) not
    /// yet proven to be a node's: connections in a handshake, plain HTTP, and
    /// Noise connections before their first map. Proxies in `trusted_proxies`
    /// are exempt.
    pub max_pending_per_source: usize,
    /// Reverse proxies whose forwarding headers name the real client.
    pub trusted_proxies: Vec<IpNet>,
}

impl Default for Settings {
    fn default() -> Settings {
        Settings {
            handshake_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(120),
            max_connections: 4096,
            max_pending_per_source: 64,
            trusted_proxies: Vec::new(),
        }
    }
}

/// Raises the soft open-file limit to the hard one (as Go programs, Headscale
/// among them, do at start-up) and returns the soft limit in force, or `None`
/// when it is unlimited or cannot be read.
pub fn raise_open_file_limit() -> Option<u64> {
    use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
    let limit = getrlimit(Resource::Nofile);
    let below_hard = match (limit.current, limit.maximum) {
        (Some(soft), Some(hard)) => soft < hard,
        (Some(_), None) => true,
        (None, _) => false,
    };
    if below_hard {
        let raised = Rlimit {
            current: limit.maximum,
            maximum: limit.maximum,
        };
        if setrlimit(Resource::Nofile, raised).is_ok() {
            return raised.current;
        }
    }
    limit.current
}

/// How many connections fit under an open-file limit of `soft`: what is left
/// after a reserve for the database, the admin socket, the DNS listener, log
/// files and outgoing requests (a quarter of the limit, from 64 to 1024
/// descriptors).
pub fn connections_within(soft: u64) -> usize {
    let reserve = (soft / 4).clamp(64, 1024).min(soft / 2);
    usize::try_from(soft - reserve).unwrap_or(usize::MAX)
}

/// Where connections come from, for counting: an IPv4 address, or the /64 of
/// an IPv6 address (one subscriber's network hands out many addresses).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Source(IpAddr);

impl Source {
    pub fn of(ip: IpAddr) -> Source {
        match ip {
            IpAddr::V4(_) => Source(ip),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => Source(IpAddr::V4(v4)),
                None => {
                    let prefix = u128::from(v6) & !((1u128 << 64) - 1);
                    Source(IpAddr::V6(Ipv6Addr::from(prefix)))
                }
            },
        }
    }
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            IpAddr::V4(ip) => write!(f, "{ip}"),
            IpAddr::V6(ip) => write!(f, "{ip}/64"),
        }
    }
}

/// Why a connection was closed as soon as it was accepted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refused {
    /// Its source already holds `max_pending_per_source` unproven connections.
    Source,
    /// `max_connections` are open and none of them may be closed for it.
    Full,
}

/// The connection table of one server, shared by its listeners.
#[derive(Debug)]
pub struct Limits {
    settings: Settings,
    table: Mutex<Table>,
    next_id: AtomicU64,
    refused_source: Throttle,
    refused_full: Throttle,
    evicted: Throttle,
    accept_failed: Throttle,
}

#[derive(Debug, Default)]
struct Table {
    /// Connections admitted and not yet released.
    open: usize,
    /// Unproven connections by source, oldest first (trusted proxies' are not
    /// listed: they are neither capped nor closed to make room).
    pending: HashMap<Source, VecDeque<Arc<Slot>>>,
}

/// One admitted connection's share of the table and its clock.
#[derive(Debug)]
struct Slot {
    id: u64,
    source: Source,
    /// Listed under its source while pending (not a trusted proxy).
    listed: bool,
    /// These three change only under the table's lock.
    pending: AtomicBool,
    released: AtomicBool,
    evicted: AtomicBool,
    clock: Mutex<Clock>,
    /// The task reading the connection, woken when its deadline changes.
    reader: AtomicWaker,
}

#[derive(Debug)]
struct Clock {
    phase: Phase,
    /// Requests in progress in the current phase.
    in_flight: usize,
    /// Bumped when a new phase starts, so that requests of the previous phase
    /// (the `/ts2021` upgrade request itself) no longer count.
    epoch: u64,
}

#[derive(Clone, Copy, Debug)]
enum Phase {
    /// Until the first request: a fixed deadline.
    Setup(Instant),
    /// Serving requests: closed after `idle` with none in progress.
    Serving { idle: Duration, since: Instant },
    /// Handed to a protocol with timeouts of its own (a logged-in DERP client).
    Free,
}

impl Limits {
    pub fn new(settings: Settings) -> Arc<Limits> {
        Arc::new(Limits {
            settings,
            table: Mutex::default(),
            next_id: AtomicU64::new(1),
            refused_source: Throttle::default(),
            refused_full: Throttle::default(),
            evicted: Throttle::default(),
            accept_failed: Throttle::default(),
        })
    }

    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// Connections open now, and how many of them are unproven.
    pub fn counts(&self) -> (usize, usize) {
        let table = self.table();
        let pending = table.pending.values().map(VecDeque::len).sum();
        (table.open, pending)
    }

    fn table(&self) -> MutexGuard<'_, Table> {
        // Counters only: a panic elsewhere cannot leave them worse than off by one.
        self.table.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Whether `ip` is one of `trusted_proxies`.
    pub fn is_trusted_proxy(&self, ip: IpAddr) -> bool {
        is_trusted(&self.settings.trusted_proxies, ip)
    }

    /// Admits a connection from `remote`, or says why not. At `max_connections`
    /// the oldest unproven connection of the source holding the most of them
    /// is closed to make room, so a flood from some sources cannot lock out the
    /// others; connections of proven nodes are never closed for a newcomer.
    pub fn admit(self: &Arc<Self>, remote: SocketAddr) -> Result<Conn, Refused> {
        let source = Source::of(remote.ip());
        let listed = !self.is_trusted_proxy(remote.ip());
        let mut table = self.table();
        if listed
            && table.pending.get(&source).map_or(0, VecDeque::len)
                >= self.settings.max_pending_per_source
        {
            return Err(Refused::Source);
        }
        let mut evicted = None;
        if table.open >= self.settings.max_connections {
            evicted = Some(table.evict_one().ok_or(Refused::Full)?);
        }
        table.open += 1;
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let slot = Arc::new(Slot {
            id,
            source,
            listed,
            pending: AtomicBool::new(true),
            released: AtomicBool::new(false),
            evicted: AtomicBool::new(false),
            clock: Mutex::new(Clock {
                phase: Phase::Setup(Instant::now() + self.settings.handshake_timeout),
                in_flight: 0,
                epoch: 0,
            }),
            reader: AtomicWaker::new(),
        });
        if listed {
            table
                .pending
                .entry(source)
                .or_default()
                .push_back(slot.clone());
        }
        drop(table);
        if let Some(evicted) = evicted
            && let Some(suppressed) = self.evicted.ready()
        {
            tracing::warn!(
                source = %evicted,
                suppressed,
                limit = self.settings.max_connections,
                "limits.max_connections are open: closed the oldest unproven connection of the source holding the most"
            );
        }
        Ok(Conn {
            limits: self.clone(),
            slot,
        })
    }

    /// Accepts the next connection on `listener` that these limits admit;
    /// refused ones are closed at once. `what` names the listener in logs.
    /// Cancel-safe.
    pub async fn accept(
        self: &Arc<Self>,
        listener: &TcpListener,
        what: &str,
    ) -> (TcpStream, SocketAddr, Conn) {
        loop {
            let (tcp, remote) = match listener.accept().await {
                Ok(pair) => pair,
                Err(err) => {
                    if let Some(suppressed) = self.accept_failed.ready() {
                        tracing::warn!(%err, suppressed, "accepting a {what} connection failed");
                    }
                    // Out of file descriptors and the like: wait instead of spinning.
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            match self.admit(remote) {
                Ok(conn) => return (tcp, remote, conn),
                Err(refused) => {
                    drop(tcp);
                    self.log_refusal(refused, remote, what);
                }
            }
        }
    }

    fn log_refusal(&self, refused: Refused, remote: SocketAddr, what: &str) {
        match refused {
            Refused::Source => {
                if let Some(suppressed) = self.refused_source.ready() {
                    tracing::warn!(
                        source = %Source::of(remote.ip()),
                        suppressed,
                        limit = self.settings.max_pending_per_source,
                        "refused a {what} connection: its source holds limits.max_pending_per_source unproven connections"
                    );
                }
            }
            Refused::Full => {
                if let Some(suppressed) = self.refused_full.ready() {
                    tracing::warn!(
                        %remote,
                        suppressed,
                        limit = self.settings.max_connections,
                        "refused a {what} connection: limits.max_connections are open"
                    );
                }
            }
        }
    }

    /// Accepted connections of `listener` that these limits admit, for tonic.
    pub fn incoming(
        self: Arc<Self>,
        listener: TcpListener,
        what: &'static str,
    ) -> impl futures_util::Stream<Item = io::Result<Guarded<TcpStream>>> + Send + 'static {
        futures_util::stream::unfold((self, listener), move |(limits, listener)| async move {
            let (tcp, _, conn) = limits.accept(&listener, what).await;
            let _ = tcp.set_nodelay(true);
            Some((Ok(Guarded::new(tcp, conn)), (limits, listener)))
        })
    }
}

impl Table {
    /// Closes the oldest unproven connection of the source with the most of
    /// them (ties: the oldest connection); returns its source.
    fn evict_one(&mut self) -> Option<Source> {
        let source = *self
            .pending
            .iter()
            .filter_map(|(source, queue)| Some((source, queue.len(), queue.front()?.id)))
            .max_by(|a, b| a.1.cmp(&b.1).then(b.2.cmp(&a.2)))?
            .0;
        let queue = self.pending.get_mut(&source)?;
        let slot = queue.pop_front()?;
        if queue.is_empty() {
            self.pending.remove(&source);
        }
        slot.pending.store(false, Ordering::Release);
        slot.released.store(true, Ordering::Release);
        slot.evicted.store(true, Ordering::Release);
        self.open -= 1;
        slot.reader.wake();
        Some(source)
    }

    fn unlist(&mut self, slot: &Slot) {
        if !slot.listed {
            return;
        }
        if let Some(queue) = self.pending.get_mut(&slot.source) {
            queue.retain(|other| other.id != slot.id);
            if queue.is_empty() {
                self.pending.remove(&slot.source);
            }
        }
    }
}

/// One admitted connection, as the protocol code sees it: it moves the
/// connection between phases and proves it. Clones share the connection; the
/// slot is given back when its [`Guarded`] socket is dropped.
#[derive(Clone, Debug)]
pub struct Conn {
    limits: Arc<Limits>,
    slot: Arc<Slot>,
}

impl Conn {
    pub fn settings(&self) -> &Settings {
        &self.limits.settings
    }

    /// The address (an IPv6 /64 for IPv6) this connection counts against.
    pub fn source(&self) -> IpAddr {
        self.slot.source.0
    }

    /// The client's address: `peer`, or for a trusted proxy the address its
    /// forwarding headers name.
    pub fn client_addr(&self, peer: SocketAddr, headers: &axum::http::HeaderMap) -> SocketAddr {
        client_addr(&self.limits.settings.trusted_proxies, peer, headers)
    }

    /// The connection belongs to a node (it was served a map, or a DERP client
    /// logged in): it no longer counts against its source, and is never closed
    /// to make room.
    pub fn promote(&self) {
        let mut table = self.limits.table();
        if self.slot.pending.swap(false, Ordering::AcqRel)
            && !self.slot.released.load(Ordering::Acquire)
        {
            table.unlist(&self.slot);
        }
    }

    /// Whether the connection still counts as unproven.
    pub fn is_pending(&self) -> bool {
        self.slot.pending.load(Ordering::Acquire)
    }

    fn clock(&self) -> MutexGuard<'_, Clock> {
        self.slot
            .clock
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Starts a new handshake phase (after an upgrade): the first request of
    /// the new protocol is due within `handshake_timeout`.
    pub fn begin_handshake(&self) {
        let mut clock = self.clock();
        clock.phase = Phase::Setup(Instant::now() + self.limits.settings.handshake_timeout);
        clock.in_flight = 0;
        clock.epoch += 1;
        drop(clock);
        self.slot.reader.wake();
    }

    /// Hands the connection to a protocol with timeouts of its own.
    pub fn free(&self) {
        self.clock().phase = Phase::Free;
        self.slot.reader.wake();
    }

    /// A request started; it counts as in progress until the guard is dropped
    /// (with its response body).
    pub fn request(&self) -> InFlight {
        let mut clock = self.clock();
        if let Phase::Setup(_) = clock.phase {
            clock.phase = Phase::Serving {
                idle: self.limits.settings.idle_timeout,
                since: Instant::now(),
            };
        }
        clock.in_flight += 1;
        InFlight {
            slot: self.slot.clone(),
            epoch: clock.epoch,
        }
    }

    /// When the connection must end unless something changes; `None` = no limit now.
    fn deadline(&self) -> Option<Instant> {
        let clock = self.clock();
        match clock.phase {
            Phase::Setup(until) => Some(until),
            Phase::Serving { .. } if clock.in_flight > 0 => None,
            Phase::Serving { idle, since } => Some(since + idle),
            Phase::Free => None,
        }
    }

    fn release(&self) {
        let mut table = self.limits.table();
        if self.slot.released.swap(true, Ordering::AcqRel) {
            return;
        }
        table.open -= 1;
        if self.slot.pending.swap(false, Ordering::AcqRel) {
            table.unlist(&self.slot);
        }
    }
}

/// A request in progress on a connection (see [`Conn::request`]).
#[derive(Debug)]
pub struct InFlight {
    slot: Arc<Slot>,
    epoch: u64,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let mut clock = self
            .slot
            .clock
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if clock.epoch != self.epoch || clock.in_flight == 0 {
            return;
        }
        clock.in_flight -= 1;
        if clock.in_flight == 0
            && let Phase::Serving { since, .. } = &mut clock.phase
        {
            *since = Instant::now();
        }
        drop(clock);
        self.slot.reader.wake();
    }
}

/// An admitted socket. Its reads fail with `TimedOut` once the deadline of
/// the connection's phase has passed (so whatever serves it ends), or at once
/// when the connection was closed to make room; dropping it gives the slot back.
#[derive(Debug)]
pub struct Guarded<IO> {
    io: IO,
    conn: Conn,
    timer: Pin<Box<Sleep>>,
    armed: Option<Instant>,
}

impl<IO> Guarded<IO> {
    pub fn new(io: IO, conn: Conn) -> Guarded<IO> {
        Guarded {
            io,
            conn,
            timer: Box::pin(tokio::time::sleep_until(Instant::now())),
            armed: None,
        }
    }

    pub fn conn(&self) -> &Conn {
        &self.conn
    }

    /// Fails once the phase's deadline has passed; with `cx`, also arranges to
    /// be woken when it passes.
    fn check(&mut self, cx: Option<&mut Context<'_>>) -> io::Result<()> {
        if self.conn.slot.evicted.load(Ordering::Acquire) {
            return Err(io::Error::new(
                io::ErrorKind::ConnectionAborted,
                "closed to make room for other connections (limits.max_connections)",
            ));
        }
        let Some(deadline) = self.conn.deadline() else {
            self.armed = None;
            return Ok(());
        };
        let expired =
            || io::Error::new(io::ErrorKind::TimedOut, "the connection's phase timed out");
        if Instant::now() >= deadline {
            return Err(expired());
        }
        if let Some(cx) = cx {
            if self.armed != Some(deadline) {
                self.timer.as_mut().reset(deadline);
                self.armed = Some(deadline);
            }
            if self.timer.as_mut().poll(cx).is_ready() {
                return Err(expired());
            }
        }
        Ok(())
    }
}

impl Guarded<TcpStream> {
    /// Peeks at the first bytes without consuming them, under the same
    /// deadline and eviction as a read.
    pub async fn peek(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        std::future::poll_fn(|cx| {
            self.conn.slot.reader.register(cx.waker());
            self.check(Some(cx))?;
            let mut read = ReadBuf::new(buf);
            match self.io.poll_peek(cx, &mut read) {
                Poll::Ready(Ok(_)) => Poll::Ready(Ok(read.filled().len())),
                Poll::Ready(Err(err)) => Poll::Ready(Err(err)),
                Poll::Pending => Poll::Pending,
            }
        })
        .await
    }
}

impl<IO> Drop for Guarded<IO> {
    fn drop(&mut self) {
        self.conn.release();
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for Guarded<IO> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        // Registered before the state is read, so a change in between still wakes us.
        self.conn.slot.reader.register(cx.waker());
        self.check(Some(cx))?;
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for Guarded<IO> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.check(None)?;
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.check(None)?;
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

/// Counts each gRPC call as a request in progress on its connection, so that
/// a connection is closed only when idle.
#[derive(Clone, Copy, Debug, Default)]
pub struct TrackRequestsLayer;

impl<S> tower::Layer<S> for TrackRequestsLayer {
    type Service = TrackRequests<S>;

    fn layer(&self, inner: S) -> TrackRequests<S> {
        TrackRequests { inner }
    }
}

#[derive(Clone, Debug)]
pub struct TrackRequests<S> {
    inner: S,
}

impl<S, B> tower::Service<axum::http::Request<B>> for TrackRequests<S>
where
    S: tower::Service<axum::http::Request<B>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: axum::http::Request<B>) -> Self::Future {
        let in_flight = request.extensions().get::<Conn>().map(Conn::request);
        let call = self.inner.call(request);
        Box::pin(async move {
            let result = call.await;
            drop(in_flight);
            result
        })
    }
}

/// The error of a request body that did not arrive within `request_timeout`.
#[derive(Debug, thiserror::Error)]
#[error("the request body did not arrive within {0:?}")]
pub struct BodyTimeout(Duration);

/// A request body that fails unless it is complete within a time limit.
#[derive(Debug)]
pub struct TimedBody<B> {
    inner: B,
    limit: Duration,
    deadline: Pin<Box<Sleep>>,
}

impl<B> TimedBody<B> {
    pub fn new(inner: B, limit: Duration) -> TimedBody<B> {
        TimedBody {
            inner,
            limit,
            deadline: Box::pin(tokio::time::sleep(limit)),
        }
    }
}

impl<B> Body for TimedBody<B>
where
    B: Body + Unpin,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    type Data = B::Data;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<B::Data>, Self::Error>>> {
        if let Poll::Ready(frame) = Pin::new(&mut self.inner).poll_frame(cx) {
            return Poll::Ready(frame.map(|frame| frame.map_err(Into::into)));
        }
        match self.deadline.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Some(Err(BodyTimeout(self.limit).into()))),
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// A response body that keeps its request counted as in progress until it
/// has been sent (or dropped): a map long-poll is not idle.
#[derive(Debug)]
pub struct Tracked<B> {
    inner: B,
    _in_flight: Option<InFlight>,
}

impl<B> Tracked<B> {
    pub fn new(inner: B, in_flight: Option<InFlight>) -> Tracked<B> {
        Tracked {
            inner,
            _in_flight: in_flight,
        }
    }
}

impl<B: Body + Unpin> Body for Tracked<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<B::Data>, B::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

fn is_trusted(trusted: &[IpNet], ip: IpAddr) -> bool {
    let ip = match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    };
    trusted.iter().any(|net| net.contains(&ip))
}

/// The client of a request the listener served: its peer address, or behind one
/// of `trusted_proxies` the address the forwarding headers name; `None` when the
/// listener recorded no peer (in-process requests).
pub fn request_client<B>(request: &axum::http::Request<B>) -> Option<SocketAddr> {
    let peer = request
        .extensions()
        .get::<axum::extract::ConnectInfo<SocketAddr>>()?
        .0;
    Some(match request.extensions().get::<Conn>() {
        Some(conn) => conn.client_addr(peer, request.headers()),
        None => peer,
    })
}

/// The client's address: `peer`, or, when `peer` is one of `trusted`, the
/// nearest address in `X-Forwarded-For` that is not a trusted proxy itself
/// (then `X-Real-IP`, `True-Client-IP`), with `peer`'s port.
pub fn client_addr(
    trusted: &[IpNet],
    peer: SocketAddr,
    headers: &axum::http::HeaderMap,
) -> SocketAddr {
    if !is_trusted(trusted, peer.ip()) {
        return peer;
    }
    let text = |name: &str| {
        headers
            .get_all(name)
            .iter()
            .filter_map(|value| value.to_str().ok())
            .collect::<Vec<_>>()
            .join(",")
    };
    let forwarded = text("x-forwarded-for");
    let from_chain = forwarded
        .rsplit(',')
        .filter_map(|hop| hop.trim().parse::<IpAddr>().ok())
        .find(|ip| !is_trusted(trusted, *ip));
    let single = || {
        ["x-real-ip", "true-client-ip"]
            .into_iter()
            .find_map(|name| text(name).trim().parse::<IpAddr>().ok())
    };
    match from_chain.or_else(single) {
        Some(ip) => SocketAddr::new(ip, peer.port()),
        None => peer,
    }
}

/// A token bucket per source address: `burst` attempts at once, then one more
/// each `interval`.
#[derive(Debug)]
pub struct RateLimit {
    burst: u32,
    interval: Duration,
    buckets: Mutex<HashMap<Source, Bucket>>,
    refused: Throttle,
}

#[derive(Clone, Copy, Debug)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

/// Sources tracked at once; beyond this, full buckets are forgotten, and if
/// that is not enough, new sources share one bucket.
const MAX_BUCKETS: usize = 65_536;

impl RateLimit {
    /// `burst` 0 turns the limit off.
    pub fn new(burst: u32, interval: Duration) -> RateLimit {
        RateLimit {
            burst,
            interval,
            buckets: Mutex::default(),
            refused: Throttle::default(),
        }
    }

    /// Takes one attempt from `ip`'s bucket, or says how long until the next
    /// one is allowed.
    pub fn take(&self, ip: IpAddr) -> Result<(), Duration> {
        if self.burst == 0 || self.interval.is_zero() {
            return Ok(());
        }
        let now = Instant::now();
        let burst = f64::from(self.burst);
        let per_token = self.interval.as_secs_f64();
        let refill = |bucket: &Bucket| {
            let earned = now.saturating_duration_since(bucket.at).as_secs_f64() / per_token;
            (bucket.tokens + earned).min(burst)
        };
        let mut buckets = self.buckets.lock().unwrap_or_else(PoisonError::into_inner);
        let mut source = Source::of(ip);
        if !buckets.contains_key(&source) && buckets.len() >= MAX_BUCKETS {
            buckets.retain(|_, bucket| refill(bucket) < burst);
            if buckets.len() >= MAX_BUCKETS {
                source = Source(IpAddr::V6(Ipv6Addr::UNSPECIFIED));
            }
        }
        let bucket = buckets.entry(source).or_insert(Bucket {
            tokens: burst,
            at: now,
        });
        let tokens = refill(bucket);
        if tokens >= 1.0 {
            *bucket = Bucket {
                tokens: tokens - 1.0,
                at: now,
            };
            Ok(())
        } else {
            *bucket = Bucket { tokens, at: now };
            Err(Duration::from_secs_f64((1.0 - tokens) * per_token))
        }
    }

    /// Whether to log a refusal now, and how many went unlogged before it.
    pub fn log_refusal(&self) -> Option<u64> {
        self.refused.ready()
    }
}

/// Lets a repeated log line through at most once per interval, counting the
/// ones it held back.
#[derive(Debug, Default)]
pub struct Throttle {
    state: Mutex<(Option<Instant>, u64)>,
}

/// One line per this, per kind of event.
const LOG_INTERVAL: Duration = Duration::from_secs(10);

impl Throttle {
    pub const fn new() -> Throttle {
        Throttle {
            state: Mutex::new((None, 0)),
        }
    }

    /// `Some(suppressed)` when a line may be logged now (and the count held
    /// back since the last one), else `None` (counted).
    pub fn ready(&self) -> Option<u64> {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let now = Instant::now();
        match state.0 {
            Some(last) if now.saturating_duration_since(last) < LOG_INTERVAL => {
                state.1 += 1;
                None
            }
            _ => {
                let suppressed = state.1;
                *state = (Some(now), 0);
                Some(suppressed)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(max_connections: usize, per_source: usize) -> Settings {
        Settings {
            max_connections,
            max_pending_per_source: per_source,
            trusted_proxies: vec!["10.0.0.1/32".parse().unwrap()],
            ..Settings::default()
        }
    }

    fn addr(text: &str) -> SocketAddr {
        format!("{text}:1000").parse().unwrap()
    }

    #[test]
    fn sources_are_v4_addresses_and_v6_networks() {
        let a = Source::of("2001:db8::1".parse().unwrap());
        let b = Source::of("2001:db8::ffff:2".parse().unwrap());
        let c = Source::of("2001:db8:0:1::1".parse().unwrap());
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert_eq!(a.to_string(), "2001:db8::/64");
        let mapped = Source::of("::ffff:192.0.2.1".parse().unwrap());
        assert_eq!(mapped, Source::of("192.0.2.1".parse().unwrap()));
    }

    #[tokio::test]
    async fn each_source_may_hold_only_so_many_unproven_connections() {
        let limits = Limits::new(settings(100, 2));
        let first = limits.admit(addr("192.0.2.1")).unwrap();
        let _second = limits.admit(addr("192.0.2.1")).unwrap();
        assert_eq!(
            limits.admit(addr("192.0.2.1")).unwrap_err(),
            Refused::Source
        );
        // Others are not affected, and a trusted proxy is never capped.
        let _other = limits.admit(addr("192.0.2.2")).unwrap();
        let proxied: Vec<_> = (0..5)
            .map(|_| limits.admit(addr("10.0.0.1")).unwrap())
            .collect();
        // A proven connection no longer counts against its source.
        first.promote();
        assert!(!first.is_pending());
        let _third = limits.admit(addr("192.0.2.1")).unwrap();
        assert_eq!(limits.counts(), (9, 3));
        drop(proxied);
    }

    #[tokio::test]
    async fn at_the_cap_the_biggest_sources_oldest_unproven_connection_makes_room() {
        let limits = Limits::new(settings(4, 10));
        let node = limits.admit(addr("192.0.2.9")).unwrap();
        node.promote();
        let flood_old = Guarded::new((), limits.admit(addr("192.0.2.1")).unwrap());
        let flood_new = Guarded::new((), limits.admit(addr("192.0.2.1")).unwrap());
        let single = Guarded::new((), limits.admit(addr("192.0.2.2")).unwrap());
        // Full: the newcomer takes the oldest slot of the biggest source.
        let newcomer = Guarded::new((), limits.admit(addr("192.0.2.3")).unwrap());
        assert!(flood_old.conn().slot.evicted.load(Ordering::Acquire));
        for kept in [&flood_new, &single, &newcomer] {
            assert!(!kept.conn().slot.evicted.load(Ordering::Acquire));
        }
        assert_eq!(limits.counts(), (4, 3));
        // Dropping the evicted socket later does not give its slot back twice.
        drop(flood_old);
        assert_eq!(limits.counts(), (4, 3));
        drop((flood_new, single, newcomer));
        assert_eq!(limits.counts(), (1, 0));
        // Only proven connections left: nothing may be closed for a newcomer.
        let limits = Limits::new(settings(1, 10));
        let node = limits.admit(addr("192.0.2.9")).unwrap();
        node.promote();
        assert_eq!(limits.admit(addr("192.0.2.1")).unwrap_err(), Refused::Full);
    }

    #[tokio::test]
    async fn a_connection_closed_to_make_room_stops_waiting_at_once() {
        let limits = Limits::new(settings(1, 10));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let _client = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (tcp, remote) = listener.accept().await.unwrap();
        let mut silent = Guarded::new(tcp, limits.admit(remote).unwrap());
        let peek = tokio::spawn(async move {
            let mut first = [0u8; 1];
            silent.peek(&mut first).await.map_err(|e| e.kind())
        });
        tokio::task::yield_now().await;
        let _newcomer = limits.admit(addr("192.0.2.7")).unwrap();
        let woke = tokio::time::timeout(Duration::from_secs(2), peek)
            .await
            .expect("the evicted connection was woken")
            .unwrap();
        assert_eq!(woke, Err(io::ErrorKind::ConnectionAborted));
    }

    #[tokio::test]
    async fn a_silent_connection_fails_its_reads_at_the_phase_deadline() {
        use tokio::io::AsyncReadExt;
        let short = Duration::from_millis(200);
        let limits = Limits::new(Settings {
            handshake_timeout: short,
            idle_timeout: short,
            ..Settings::default()
        });
        let (_client, server) = tokio::io::duplex(64);
        let conn = limits.admit(addr("192.0.2.1")).unwrap();
        let mut guarded = Guarded::new(server, conn.clone());
        let started = Instant::now();
        let mut buf = [0u8; 8];
        let err = guarded.read(&mut buf).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        let took = started.elapsed();
        assert!(took >= short && took < short * 5, "{took:?}");

        // While a request is in progress there is no deadline; once it ends,
        // the idle clock runs.
        let (_client, server) = tokio::io::duplex(64);
        let conn = limits.admit(addr("192.0.2.1")).unwrap();
        let mut guarded = Guarded::new(server, conn.clone());
        let in_flight = conn.request();
        let read = tokio::spawn(async move {
            let mut buf = [0u8; 8];
            guarded.read(&mut buf).await.map_err(|e| e.kind())
        });
        tokio::time::sleep(short * 3).await;
        assert!(!read.is_finished(), "timed out with a request in progress");
        let released = Instant::now();
        drop(in_flight);
        assert_eq!(read.await.unwrap(), Err(io::ErrorKind::TimedOut));
        let took = released.elapsed();
        assert!(took >= short && took < short * 5, "{took:?}");
    }

    #[tokio::test]
    async fn registration_attempts_refill_one_per_interval() {
        let interval = Duration::from_millis(300);
        let limit = RateLimit::new(3, interval);
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        for _ in 0..3 {
            limit.take(ip).unwrap();
        }
        let wait = limit.take(ip).unwrap_err();
        assert!(wait <= interval && wait > interval / 2, "{wait:?}");
        // Another source has its own bucket.
        limit.take("192.0.2.2".parse().unwrap()).unwrap();
        tokio::time::sleep(wait).await;
        limit.take(ip).unwrap();
        assert!(limit.take(ip).is_err());
        assert!(RateLimit::new(0, interval).take(ip).is_ok());
    }

    #[test]
    fn a_trusted_proxy_names_the_client() {
        let trusted: Vec<IpNet> = vec!["10.0.0.0/8".parse().unwrap()];
        let mut headers = axum::http::HeaderMap::new();
        headers.insert(
            "x-forwarded-for",
            "198.51.100.7, 203.0.113.5, 10.0.0.2".parse().unwrap(),
        );
        let proxy = addr("10.0.0.1");
        assert_eq!(
            client_addr(&trusted, proxy, &headers).ip(),
            "203.0.113.5".parse::<IpAddr>().unwrap()
        );
        // Anyone else's headers are ignored.
        let direct = addr("192.0.2.1");
        assert_eq!(client_addr(&trusted, direct, &headers), direct);
        let mut headers = axum::http::HeaderMap::new();
        headers.insert("x-real-ip", "203.0.113.9".parse().unwrap());
        assert_eq!(
            client_addr(&trusted, proxy, &headers).ip(),
            "203.0.113.9".parse::<IpAddr>().unwrap()
        );
        assert_eq!(
            client_addr(&trusted, proxy, &axum::http::HeaderMap::new()),
            proxy
        );
    }

    #[test]
    fn repeated_lines_are_throttled_with_a_count() {
        let throttle = Throttle::default();
        assert_eq!(throttle.ready(), Some(0));
        assert_eq!(throttle.ready(), None);
        assert_eq!(throttle.ready(), None);
        // As if the interval had passed.
        throttle.state.lock().unwrap().0 = Some(Instant::now() - LOG_INTERVAL);
        assert_eq!(throttle.ready(), Some(2));
    }

    #[test]
    fn the_connection_cap_leaves_a_reserve_of_descriptors() {
        assert_eq!(connections_within(1024), 768);
        assert_eq!(connections_within(65_536), 64_512);
        assert_eq!(connections_within(256), 192);
        assert_eq!(connections_within(64), 32);
    }
}

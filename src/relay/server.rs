//! [`Relay`], the DERP server proper: the login of each connection, the registry
//! of connected clients by node key, and each connection's reader loop and
//! writer with its bounded outbox.
//!
//! Knows DERP frames and node keys, not HTTP (`routes.rs` hands it upgraded
//! connections) and not who a key belongs to (the [`Admission`] decides).
//! Mirrors Tailscale's `derp/derpserver/derpserver.go` for one relay without a
//! mesh.

use super::Admission;
use super::frame::{
    self, ClientInfo, FrameError, FrameReader, FrameType, FrameWriter, InfoError, KEY_LEN,
    MAX_CLIENT_INFO_LEN, MAX_PACKET_SIZE, PROTOCOL_VERSION, PeerGoneReason, ServerInfo,
};
use crate::metrics::{RelayDrop, RelayMetrics};
use crate::types::{NodeKey, PrivateKey};
use std::collections::{HashMap, HashSet, VecDeque};
use std::future::Future;
use std::io;
use std::mem;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::Notify;
use tokio::time::{Instant, MissedTickBehavior};

/// Packets queued for one client, per queue (Go's default depth). Disco packets
/// have a queue of their own, so a flood of data cannot crowd out path discovery.
pub const SEND_QUEUE_DEPTH: usize = 32;
/// Sending the greeting and receiving the ClientInfo must finish within this.
const LOGIN_TIMEOUT: Duration = Duration::from_secs(10);
/// A client that does not take a frame within this is stuck and is closed (Go's
/// `DefaultTCPWiteTimeout`).
const WRITE_TIMEOUT: Duration = Duration::from_secs(2);
/// The keep-alive period; each connection adds up to [`KEEP_ALIVE_JITTER_MS`]
/// so that keep-alives of clients that connected together do not go out in lockstep.
const KEEP_ALIVE: Duration = Duration::from_secs(60);
const KEEP_ALIVE_JITTER_MS: u64 = 5000;
/// `PeerGone` notices waiting for one client. They come from peers leaving and
/// from rate-limited "not here" answers, so this is only reached by a client
/// that stopped reading; further notices are dropped.
const PEER_GONE_QUEUE_DEPTH: usize = 1024;
/// Pongs waiting for one client; a client pinging faster than it reads loses
/// the extra pongs (Go keeps one).
const PONG_QUEUE_DEPTH: usize = 4;
/// A ping longer than this is not a ping (Go leaves room for extensions, not more).
const MAX_PING_LEN: u32 = 1000;
/// "Not here" answers to one sender: a burst of 3, then one a second, as Go.
const NOT_HERE_BURST: f64 = 3.0;
const NOT_HERE_PER_SECOND: f64 = 1.0;
/// The `Health` text for a connection whose key connected again elsewhere.
const DUPLICATE_PROBLEM: &str = "duplicate connection: this node key is connected to this DERP \
     server more than once; only the newest connection receives packets";

/// The embedded DERP relay. Cheap to share: [`Relay::new`] returns an `Arc`, and
/// each connection runs in [`Relay::accept`].
pub struct Relay {
    private: PrivateKey,
    public: NodeKey,
    admission: Arc<dyn Admission>,
    /// Held for lookups and inserts only, never across an `.await`, so a std
    /// mutex is both correct and the cheapest choice.
    registry: Mutex<Registry>,
    next_connection_id: AtomicU64,
    /// Clients, packets forwarded and dropped (atomics only).
    metrics: RelayMetrics,
}

/// The connected clients and who has heard from whom.
#[derive(Default)]
struct Registry {
    /// Connections by key, least recently active first; the last one receives.
    /// A key usually has one; a second appears while a client reconnects over
    /// a dead connection, or when a key was cloned.
    clients: HashMap<NodeKey, Vec<Arc<Client>>>,
    /// Every registered connection, duplicates included.
    connections: usize,
    /// For each key, the connections that have been sent packets from it: when
    /// its last connection leaves they get `PeerGone(key, Disconnected)` and
    /// forget their route to it (Go's `peerGoneWatchers`).
    receivers_of: HashMap<NodeKey, HashMap<u64, Arc<Client>>>,
}

/// One logged-in connection, shared by its reader, its writer, the registry
/// and the senders that found it there.
struct Client {
    /// Distinguishes connections of the same key.
    id: u64,
    key: NodeKey,
    remote: SocketAddr,
    /// More than one connection has this key, so whichever sends a frame
    /// becomes the one that receives (Go's "last writer is active").
    duplicate: AtomicBool,
    /// This connection was told it is a duplicate and must hear when it no longer is.
    warned_duplicate: AtomicBool,
    /// The client said this relay is its home (`NotePreferred`).
    preferred: AtomicBool,
    outbox: Outbox,
}

/// What waits to be written to one client. Enqueueing never waits: a full
/// queue drops, so a slow or dead client never holds up a sender.
struct Outbox {
    queues: Mutex<Queues>,
    /// Wakes the writer; a wake-up sent while it is busy is kept for later.
    ready: Notify,
}

#[derive(Default)]
struct Queues {
    /// The connection has ended; nothing more is queued.
    closed: bool,
    packets: VecDeque<Packet>,
    disco: VecDeque<Packet>,
    peer_gone: VecDeque<(NodeKey, PeerGoneReason)>,
    pongs: VecDeque<[u8; 8]>,
    /// The latest connection problem to report; `Some("")` clears it.
    health: Option<String>,
}

/// A packet on its way to a client, with the key it came from.
struct Packet {
    src: NodeKey,
    bytes: Box<[u8]>,
}

/// Why a connection ended other than by the client hanging up.
#[derive(Debug, thiserror::Error)]
enum ConnectionError {
    #[error(transparent)]
    Frame(#[from] FrameError),
    #[error("the client hung up before sending its ClientInfo")]
    NoClientInfo,
    #[error("the first frame was {0:?}, not ClientInfo")]
    NotClientInfo(FrameType),
    #[error(transparent)]
    ClientInfo(#[from] InfoError),
    #[error("no ClientInfo within {LOGIN_TIMEOUT:?}")]
    LoginTimeout,
    #[error("a {frame_type:?} frame of {len} bytes is malformed")]
    BadFrame { frame_type: FrameType, len: u32 },
    #[error("a {0:?} frame needs the mesh key, and this relay has no mesh")]
    MeshOnly(FrameType),
    #[error("the client did not take a frame within {0:?}")]
    WriteTimeout(Duration),
    #[error("writing to the client failed: {0}")]
    Write(io::Error),
}

impl ConnectionError {
    /// The client broke the protocol, as opposed to the network failing or the
    /// client going silent: worth an info line.
    fn is_bad_input(&self) -> bool {
        match self {
            ConnectionError::Frame(FrameError::TooLong { .. })
            | ConnectionError::NotClientInfo(_)
            | ConnectionError::ClientInfo(_)
            | ConnectionError::BadFrame { .. }
            | ConnectionError::MeshOnly(_) => true,
            ConnectionError::Frame(FrameError::Truncated | FrameError::Io(_))
            | ConnectionError::NoClientInfo
            | ConnectionError::LoginTimeout
            | ConnectionError::WriteTimeout(_)
            | ConnectionError::Write(_) => false,
        }
    }
}

impl Relay {
    /// A relay with the static key `private`, letting in the clients `admission` admits.
    pub fn new(private: PrivateKey, admission: Arc<dyn Admission>) -> Arc<Relay> {
        Self::with_metrics(private, admission, RelayMetrics::default())
    }

    /// [`Relay::new`], recording into the server's `metrics`.
    pub fn with_metrics(
        private: PrivateKey,
        admission: Arc<dyn Admission>,
        metrics: RelayMetrics,
    ) -> Arc<Relay> {
        Arc::new(Relay {
            public: frame::public_key(&private),
            private,
            admission,
            registry: Mutex::new(Registry::default()),
            next_connection_id: AtomicU64::new(1),
            metrics,
        })
    }

    /// The relay's public key, sent in the greeting and the `Derp-Public-Key` header.
    pub fn public_key(&self) -> NodeKey {
        self.public
    }

    /// Logged-in connections (a key connected twice counts twice).
    pub fn connected_clients(&self) -> usize {
        self.registry().connections
    }

    /// Runs one client connection to its end: the greeting, the login, then
    /// relaying until the client leaves, breaks the protocol or stops reading.
    /// Every failure ends this connection only, with one log line.
    pub async fn accept<IO>(self: Arc<Self>, io: IO, remote: SocketAddr)
    where
        IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        self.accept_then(io, remote, || {}).await;
    }

    /// [`Relay::accept`], calling `logged_in` once the client has logged in and
    /// been admitted (the listener then stops counting it as unproven).
    pub async fn accept_then<IO>(
        self: Arc<Self>,
        io: IO,
        remote: SocketAddr,
        logged_in: impl FnOnce() + Send,
    ) where
        IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let (read_half, write_half) = tokio::io::split(io);
        let mut reader = FrameReader::new(read_half);
        let mut writer = FrameWriter::new(write_half);

        let login = tokio::time::timeout(LOGIN_TIMEOUT, self.login(&mut reader, &mut writer));
        let (key, info) = match login.await.unwrap_or(Err(ConnectionError::LoginTimeout)) {
            Ok(login) => login,
            Err(err) if err.is_bad_input() => {
                tracing::info!(%remote, error = %err, "refused a DERP login");
                return;
            }
            Err(err) => {
                tracing::debug!(%remote, error = %err, "a DERP connection ended before its login");
                return;
            }
        };
        if !self.admission.admits(&key) {
            tracing::info!(
                client = %key.short(),
                %remote,
                "refused a DERP client that may not use this relay"
            );
            return;
        }
        let server_info = ServerInfo {
            version: Some(PROTOCOL_VERSION),
            ..ServerInfo::default()
        };
        let sealed = match frame::seal_server_info(&self.private, &key, &server_info) {
            Ok(sealed) => sealed,
            Err(err) => {
                tracing::warn!(client = %key.short(), %remote, error = %err, "DERP login failed");
                return;
            }
        };

        logged_in();
        // Registered before the ServerInfo goes out, as Go does: a client that
        // has its ServerInfo can be sent to at once.
        let client = self.register(key, remote);
        tracing::debug!(
            client = %key.short(),
            %remote,
            version = ?info.version,
            prober = info.is_prober.unwrap_or(false),
            "DERP client connected"
        );
        let mut sources_seen = HashSet::new();
        let result = self
            .serve(
                &client,
                &sealed,
                &mut reader,
                &mut writer,
                &mut sources_seen,
            )
            .await;
        self.unregister(&client, &sources_seen);
        match result {
            Ok(()) => tracing::debug!(client = %key.short(), %remote, "DERP client disconnected"),
            Err(err) if err.is_bad_input() => tracing::info!(
                client = %key.short(),
                %remote,
                error = %err,
                "closed a DERP connection that broke the protocol"
            ),
            Err(err) => tracing::debug!(
                client = %key.short(),
                %remote,
                error = %err,
                "DERP client disconnected"
            ),
        }
    }

    fn registry(&self) -> MutexGuard<'_, Registry> {
        // A panic while holding the lock cannot leave the maps half-edited in a
        // way that matters more than losing the relay, so keep serving.
        self.registry.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Sends the greeting and reads the ClientInfo: the client's key, proven by
    /// its box opening with the relay's key.
    async fn login<R, W>(
        &self,
        reader: &mut FrameReader<R>,
        writer: &mut FrameWriter<W>,
    ) -> Result<(NodeKey, ClientInfo), ConnectionError>
    where
        R: AsyncRead + Unpin,
        W: AsyncWrite + Unpin,
    {
        writer
            .write_server_key(&self.public)
            .await
            .map_err(ConnectionError::Write)?;
        writer.flush().await.map_err(ConnectionError::Write)?;
        let header = reader
            .read_header()
            .await?
            .ok_or(ConnectionError::NoClientInfo)?;
        if header.frame_type != FrameType::CLIENT_INFO {
            return Err(ConnectionError::NotClientInfo(header.frame_type));
        }
        if header.len as usize > MAX_CLIENT_INFO_LEN {
            return Err(InfoError::Long(header.len as usize).into());
        }
        let payload = reader.read_payload(header).await?;
        Ok(frame::open_client_info(&self.private, payload)?)
    }

    /// Sends the ServerInfo, then runs the reader and the writer until either ends.
    async fn serve<R, W>(
        &self,
        client: &Arc<Client>,
        sealed_server_info: &[u8],
        reader: &mut FrameReader<R>,
        writer: &mut FrameWriter<W>,
        sources_seen: &mut HashSet<NodeKey>,
    ) -> Result<(), ConnectionError>
    where
        R: AsyncRead + Unpin,
        W: AsyncWrite + Unpin,
    {
        within(LOGIN_TIMEOUT, writer.write_server_info(sealed_server_info)).await?;
        within(LOGIN_TIMEOUT, writer.flush()).await?;
        // Both halves run in this task; whichever ends first ends the other, and
        // dropping the halves closes the connection.
        tokio::select! {
            result = self.read_loop(client, reader) => result,
            result = self.write_loop(client, writer, sources_seen) => result,
        }
    }

    /// Reads the client's frames until it hangs up or breaks the protocol.
    async fn read_loop<R: AsyncRead + Unpin>(
        &self,
        client: &Arc<Client>,
        reader: &mut FrameReader<R>,
    ) -> Result<(), ConnectionError> {
        let mut not_here = NotHereLimiter::new();
        loop {
            let Some(header) = reader.read_header().await? else {
                return Ok(());
            };
            if client.duplicate.load(Ordering::Relaxed) {
                self.note_activity(client);
            }
            let bad_frame = ConnectionError::BadFrame {
                frame_type: header.frame_type,
                len: header.len,
            };
            match header.frame_type {
                FrameType::SEND_PACKET => {
                    let len = header.len as usize;
                    if !(KEY_LEN..=KEY_LEN + MAX_PACKET_SIZE).contains(&len) {
                        return Err(bad_frame);
                    }
                    let payload = reader.read_payload(header).await?;
                    let Some((dst, packet)) = payload.split_first_chunk::<KEY_LEN>() else {
                        return Err(bad_frame);
                    };
                    let dst = NodeKey::from_bytes(*dst);
                    if self.forward(client, dst, packet, &mut not_here) {
                        // The receiver is behind: give its writer the CPU instead
                        // of reading (and decrypting) more packets to drop.
                        tokio::task::yield_now().await;
                    }
                }
                FrameType::PING => {
                    if !(8..=MAX_PING_LEN).contains(&header.len) {
                        return Err(bad_frame);
                    }
                    let payload = reader.read_payload(header).await?;
                    let Some(data) = payload.first_chunk::<8>() else {
                        return Err(bad_frame);
                    };
                    client.outbox.push_pong(*data);
                }
                FrameType::NOTE_PREFERRED => {
                    if header.len != 1 {
                        return Err(bad_frame);
                    }
                    let payload = reader.read_payload(header).await?;
                    let preferred = payload.first().is_some_and(|&byte| byte != 0);
                    if client.preferred.swap(preferred, Ordering::Relaxed) != preferred {
                        tracing::debug!(
                            client = %client.key.short(),
                            preferred,
                            "DERP client changed its home relay"
                        );
                    }
                }
                FrameType::FORWARD_PACKET | FrameType::WATCH_CONNS | FrameType::CLOSE_PEER => {
                    return Err(ConnectionError::MeshOnly(header.frame_type));
                }
                // Pongs to pings we never send, keep-alives, and types from
                // newer clients: skipped, as the protocol requires.
                _ => reader.skip_payload(header).await?,
            }
        }
    }

    /// Queues a packet for the connection of `dst` that receives. Never waits.
    /// `true` when the destination's queue was full and dropped its oldest packet.
    fn forward(
        &self,
        from: &Client,
        dst: NodeKey,
        packet: &[u8],
        not_here: &mut NotHereLimiter,
    ) -> bool {
        let target = self
            .registry()
            .clients
            .get(&dst)
            .and_then(|connections| connections.last().cloned());
        let disco = frame::looks_like_disco(packet);
        match target {
            Some(target) => {
                self.metrics.forwarded.inc();
                self.metrics.forwarded_bytes.inc_by(packet.len() as u64);
                let dropped = target.outbox.push_packet(
                    Packet {
                        src: from.key,
                        bytes: packet.into(),
                    },
                    disco,
                );
                if dropped {
                    self.metrics.dropped(RelayDrop::QueueFull);
                }
                dropped
            }
            None => {
                self.metrics.dropped(RelayDrop::UnknownDestination);
                tracing::trace!(
                    client = %from.key.short(),
                    dst = %dst.short(),
                    "dropped a packet for a key that is not connected"
                );
                // Go answers only disco packets: they are what a peer sends to
                // find a path, and the answer makes it forget this route.
                if disco && not_here.allow() {
                    from.outbox.push_peer_gone(dst, PeerGoneReason::NotHere);
                }
                false
            }
        }
    }

    /// Adds a logged-in connection. Earlier connections of the same key stay
    /// open but stop receiving, and are told why.
    fn register(&self, key: NodeKey, remote: SocketAddr) -> Arc<Client> {
        let client = Arc::new(Client {
            id: self.next_connection_id.fetch_add(1, Ordering::Relaxed),
            key,
            remote,
            duplicate: AtomicBool::new(false),
            warned_duplicate: AtomicBool::new(false),
            preferred: AtomicBool::new(false),
            outbox: Outbox::new(),
        });
        let earlier = {
            let mut registry = self.registry();
            registry.connections += 1;
            self.metrics.clients.inc();
            let connections = registry.clients.entry(key).or_default();
            let earlier = connections.clone();
            connections.push(Arc::clone(&client));
            earlier
        };
        if !earlier.is_empty() {
            tracing::debug!(
                client = %key.short(),
                remote = %client.remote,
                connections = earlier.len() + 1,
                "DERP client connected again with the same key; the newest connection receives"
            );
            client.duplicate.store(true, Ordering::Relaxed);
            for old in &earlier {
                old.duplicate.store(true, Ordering::Relaxed);
                old.warned_duplicate.store(true, Ordering::Relaxed);
                old.outbox.set_health(DUPLICATE_PROBLEM);
            }
        }
        client
    }

    /// Removes a connection. When it was its key's last, the connections that
    /// had been sent packets from that key hear that it is gone.
    fn unregister(&self, client: &Arc<Client>, sources_seen: &HashSet<NodeKey>) {
        client.outbox.close();
        let mut gone_to = Vec::new();
        let mut sole_survivor = None;
        {
            let mut registry = self.registry();
            registry.connections = registry.connections.saturating_sub(1);
            self.metrics.clients.dec();
            for src in sources_seen {
                if let Some(receivers) = registry.receivers_of.get_mut(src) {
                    receivers.remove(&client.id);
                    if receivers.is_empty() {
                        registry.receivers_of.remove(src);
                    }
                }
            }
            if let Some(connections) = registry.clients.get_mut(&client.key) {
                connections.retain(|other| other.id != client.id);
                match connections.as_slice() {
                    [] => {
                        registry.clients.remove(&client.key);
                        if let Some(receivers) = registry.receivers_of.remove(&client.key) {
                            gone_to.extend(receivers.into_values());
                        }
                    }
                    [survivor] => sole_survivor = Some(Arc::clone(survivor)),
                    _ => {}
                }
            }
        }
        for receiver in gone_to {
            receiver
                .outbox
                .push_peer_gone(client.key, PeerGoneReason::Disconnected);
        }
        if let Some(survivor) = sole_survivor {
            survivor.duplicate.store(false, Ordering::Relaxed);
            if survivor.warned_duplicate.swap(false, Ordering::Relaxed) {
                survivor.outbox.set_health("");
            }
        }
    }

    /// A connection of a duplicated key sent a frame: it becomes the one that
    /// receives.
    fn note_activity(&self, client: &Arc<Client>) {
        let mut registry = self.registry();
        let Some(connections) = registry.clients.get_mut(&client.key) else {
            return;
        };
        if connections.last().is_some_and(|last| last.id == client.id) {
            return;
        }
        if let Some(at) = connections.iter().position(|other| other.id == client.id) {
            let active = connections.remove(at);
            connections.push(active);
        }
    }

    /// Notes that `receiver` is about to be sent packets from these sources, so
    /// it hears when they leave.
    fn note_sources(
        &self,
        receiver: &Arc<Client>,
        batch: &Queues,
        sources_seen: &mut HashSet<NodeKey>,
    ) {
        let new: Vec<NodeKey> = batch
            .disco
            .iter()
            .chain(&batch.packets)
            .map(|packet| packet.src)
            .filter(|src| !sources_seen.contains(src))
            .collect();
        if new.is_empty() {
            return;
        }
        let mut registry = self.registry();
        for src in new {
            if sources_seen.insert(src) {
                registry
                    .receivers_of
                    .entry(src)
                    .or_default()
                    .insert(receiver.id, Arc::clone(receiver));
            }
        }
    }

    /// Writes what is queued for the client, flushing when the queue runs dry,
    /// and a keep-alive when idle. Ends when a write takes too long.
    async fn write_loop<W: AsyncWrite + Unpin>(
        &self,
        client: &Arc<Client>,
        writer: &mut FrameWriter<W>,
        sources_seen: &mut HashSet<NodeKey>,
    ) -> Result<(), ConnectionError> {
        let jitter = u64::from(u16::from_le_bytes(crate::types::secret::random_bytes::<2>()))
            % KEEP_ALIVE_JITTER_MS;
        let period = KEEP_ALIVE + Duration::from_millis(jitter);
        let mut keep_alive = tokio::time::interval_at(Instant::now() + period, period);
        keep_alive.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut batch = Queues::default();
        let mut unflushed = false;
        loop {
            if client.outbox.take(&mut batch) {
                return Ok(());
            }
            if batch.is_empty() {
                if unflushed {
                    within(WRITE_TIMEOUT, writer.flush()).await?;
                    unflushed = false;
                }
                tokio::select! {
                    () = client.outbox.ready.notified() => {}
                    _ = keep_alive.tick() => {
                        within(WRITE_TIMEOUT, writer.write_keep_alive()).await?;
                        unflushed = true;
                    }
                }
                continue;
            }
            self.note_sources(client, &batch, sources_seen);
            for (peer, reason) in batch.peer_gone.drain(..) {
                within(WRITE_TIMEOUT, writer.write_peer_gone(&peer, reason)).await?;
            }
            for data in batch.pongs.drain(..) {
                within(WRITE_TIMEOUT, writer.write_pong(&data)).await?;
            }
            if let Some(problem) = batch.health.take() {
                within(WRITE_TIMEOUT, writer.write_health(&problem)).await?;
            }
            for packet in batch.disco.drain(..).chain(batch.packets.drain(..)) {
                within(
                    WRITE_TIMEOUT,
                    writer.write_recv_packet(&packet.src, &packet.bytes),
                )
                .await?;
            }
            unflushed = true;
        }
    }
}

/// Runs one write, closing the connection when it takes longer than `limit`.
async fn within(
    limit: Duration,
    write: impl Future<Output = io::Result<()>>,
) -> Result<(), ConnectionError> {
    match tokio::time::timeout(limit, write).await {
        Ok(result) => result.map_err(ConnectionError::Write),
        Err(_) => Err(ConnectionError::WriteTimeout(limit)),
    }
}

impl Outbox {
    fn new() -> Self {
        Outbox {
            queues: Mutex::new(Queues::default()),
            ready: Notify::new(),
        }
    }

    fn queues(&self) -> MutexGuard<'_, Queues> {
        self.queues.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Queues a packet, dropping the oldest queued one when full (as Go does:
    /// fresher packets matter more to the tunnel above).
    /// Queues a packet, dropping the oldest when the queue is full; `true` when
    /// one was dropped.
    fn push_packet(&self, packet: Packet, disco: bool) -> bool {
        let dropped = {
            let mut queues = self.queues();
            if queues.closed {
                return false;
            }
            let queue = if disco {
                &mut queues.disco
            } else {
                &mut queues.packets
            };
            let full = queue.len() >= SEND_QUEUE_DEPTH;
            if full {
                queue.pop_front();
            }
            queue.push_back(packet);
            full
        };
        self.ready.notify_one();
        dropped
    }

    fn push_peer_gone(&self, peer: NodeKey, reason: PeerGoneReason) {
        {
            let mut queues = self.queues();
            if queues.closed || queues.peer_gone.len() >= PEER_GONE_QUEUE_DEPTH {
                return;
            }
            queues.peer_gone.push_back((peer, reason));
        }
        self.ready.notify_one();
    }

    fn push_pong(&self, data: [u8; 8]) {
        {
            let mut queues = self.queues();
            if queues.closed || queues.pongs.len() >= PONG_QUEUE_DEPTH {
                return;
            }
            queues.pongs.push_back(data);
        }
        self.ready.notify_one();
    }

    /// Replaces any health report not yet written.
    fn set_health(&self, problem: &str) {
        {
            let mut queues = self.queues();
            if queues.closed {
                return;
            }
            queues.health = Some(problem.to_owned());
        }
        self.ready.notify_one();
    }

    /// Moves everything queued into `batch` (which must be empty), keeping
    /// both sides' allocations. `true` once the connection has ended.
    fn take(&self, batch: &mut Queues) -> bool {
        let mut queues = self.queues();
        if queues.closed {
            return true;
        }
        mem::swap(&mut queues.packets, &mut batch.packets);
        mem::swap(&mut queues.disco, &mut batch.disco);
        mem::swap(&mut queues.peer_gone, &mut batch.peer_gone);
        mem::swap(&mut queues.pongs, &mut batch.pongs);
        batch.health = queues.health.take();
        false
    }

    /// Ends queueing and frees what was queued.
    fn close(&self) {
        let mut queues = self.queues();
        *queues = Queues {
            closed: true,
            ..Queues::default()
        };
    }
}

impl Queues {
    fn is_empty(&self) -> bool {
        self.packets.is_empty()
            && self.disco.is_empty()
            && self.peer_gone.is_empty()
            && self.pongs.is_empty()
            && self.health.is_none()
    }
}

/// A token bucket for one sender's "not here" answers.
struct NotHereLimiter {
    tokens: f64,
    last: Instant,
}

impl NotHereLimiter {
    fn new() -> Self {
        NotHereLimiter {
            tokens: NOT_HERE_BURST,
            last: Instant::now(),
        }
    }

    fn allow(&mut self) -> bool {
        let now = Instant::now();
        let refill = now.duration_since(self.last).as_secs_f64() * NOT_HERE_PER_SECOND;
        self.tokens = (self.tokens + refill).min(NOT_HERE_BURST);
        self.last = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

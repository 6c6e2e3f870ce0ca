//! The relay benchmark (`headway bench-relay`): DERP clients against any DERP
//! server, measuring the packets and bytes per second it relays between pairs
//! of clients, and its resident memory per connected client, as JSON.
//!
//! Client side only, like the control-plane load generator: headway's embedded
//! relay and Tailscale's `derper` are measured by the same code.

use super::derp_client::{Client, Dialer, Reader, Writer};
use super::report::ServerSample;
use crate::relay::frame::{FrameType, KEY_LEN, MAX_PACKET_SIZE};
use crate::types::{NodeKey, PrivateKey};
use anyhow::{Context, Result, bail};
use serde::Serialize;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio::time::Instant;

/// What to run.
#[derive(Clone, Debug)]
pub struct RelayOptions {
    /// The relay (`https://127.0.0.1:3340`); the path is always `/derp`.
    pub url: String,
    /// The one certificate to trust over https (PEM).
    pub cert: Option<PathBuf>,
    /// Throughput runs, one per entry: this many sender → receiver pairs.
    pub pairs: Vec<usize>,
    /// Bytes per packet (a WireGuard packet of a 1280-byte MTU tunnel is 1312).
    pub packet_size: usize,
    /// Each throughput run sends for `warmup`, then measures for `window`.
    pub warmup: Duration,
    pub window: Duration,
    /// Idle clients connected for the memory measurement (0: none).
    pub idle_clients: usize,
    /// How many clients may be connecting at once.
    pub concurrency: usize,
    /// The relay's process id, for its CPU time and memory.
    pub server_pid: Option<u32>,
    /// The whole run ends after this, finished or not.
    pub deadline: Duration,
}

/// Everything one run measured.
#[derive(Debug, Default, Serialize)]
pub struct RelayReport {
    pub url: String,
    pub packet_size: usize,
    pub memory: Option<Memory>,
    pub throughput: Vec<Throughput>,
    pub notes: Vec<String>,
}

/// Resident memory with `clients` idle clients logged in.
#[derive(Debug, Default, Serialize)]
pub struct Memory {
    pub clients: usize,
    pub rss_before_kib: Option<u64>,
    pub rss_after_kib: Option<u64>,
    /// RSS growth divided by `clients`.
    pub rss_per_client_kib: Option<f64>,
    /// From the first connection until the last client had its ServerInfo.
    pub connect_secs: f64,
}

/// One throughput run: every sender floods its receiver through the relay.
#[derive(Debug, Default, Serialize)]
pub struct Throughput {
    pub pairs: usize,
    pub window_secs: f64,
    /// Packets the senders handed to their connections per second.
    pub sent_per_sec: f64,
    /// Packets the receivers got per second (the relay drops what it cannot
    /// deliver, as its queues are bounded).
    pub packets_per_sec: f64,
    /// Packet bytes (without DERP framing) received, in 10^6 bytes per second.
    pub mb_per_sec: f64,
    /// The slowest and fastest pair, in packets per second.
    pub slowest_pair_per_sec: f64,
    pub fastest_pair_per_sec: f64,
    /// Packets that arrived from a key other than the receiver's sender (must be 0).
    pub misdelivered: u64,
    /// Relay CPU seconds (user + system) during the window.
    pub server_cpu_secs: Option<f64>,
    /// Packets received per relay CPU second: the relay's efficiency, which the
    /// load generator sharing the machine does not change much.
    pub packets_per_cpu_sec: Option<f64>,
    pub server_rss_kib: Option<u64>,
}

/// Runs the memory measurement, then one throughput run per entry of `pairs`.
/// A relay that cannot be logged in to at all is an error; a run cut short by
/// the deadline is reported in the notes.
pub async fn run(opts: RelayOptions) -> Result<RelayReport> {
    if opts.packet_size == 0 || opts.packet_size > MAX_PACKET_SIZE {
        bail!("--packet-size must be 1 to {MAX_PACKET_SIZE} bytes");
    }
    if opts.pairs.contains(&0) {
        bail!("--pairs: every run needs at least one pair");
    }
    let dialer = Dialer::new(&opts.url, opts.cert.as_deref()).await?;
    let deadline = Instant::now() + opts.deadline;
    let mut report = RelayReport {
        url: opts.url.clone(),
        packet_size: opts.packet_size,
        ..RelayReport::default()
    };
    // Fail fast, with the reason, when the relay refuses us.
    drop(
        dialer
            .login(&PrivateKey::generate())
            .await
            .context("logging in to the relay")?,
    );

    if opts.idle_clients > 0 {
        match tokio::time::timeout_at(deadline, memory(&dialer, &opts)).await {
            Ok(result) => report.memory = Some(result?),
            Err(_) => {
                report
                    .notes
                    .push("the deadline passed during the memory measurement".into());
                return Ok(report);
            }
        }
    }
    for &pairs in &opts.pairs {
        match tokio::time::timeout_at(deadline, throughput(&dialer, &opts, pairs)).await {
            Ok(result) => report.throughput.push(result?),
            Err(_) => {
                report.notes.push(format!(
                    "the deadline passed during the {pairs}-pair throughput run"
                ));
                break;
            }
        }
    }
    Ok(report)
}

/// `n` logged-in clients, at most `concurrency` connecting at once.
async fn connect(dialer: &Dialer, n: usize, concurrency: usize) -> Result<Vec<Client>> {
    let limit = Arc::new(Semaphore::new(concurrency.max(1)));
    let mut tasks = JoinSet::new();
    for index in 0..n {
        let dialer = dialer.clone();
        let limit = Arc::clone(&limit);
        tasks.spawn(async move {
            let _permit = limit.acquire_owned().await;
            let client = dialer.login(&PrivateKey::generate()).await;
            (index, client)
        });
    }
    let mut clients: Vec<Option<Client>> = (0..n).map(|_| None).collect();
    while let Some(joined) = tasks.join_next().await {
        let (index, client) = joined.context("a connecting task panicked")?;
        clients[index] = Some(client.with_context(|| format!("client {index}"))?);
    }
    Ok(clients.into_iter().flatten().collect())
}

/// How long the relay gets to settle after the last login before its memory is read.
const SETTLE: Duration = Duration::from_secs(2);

async fn memory(dialer: &Dialer, opts: &RelayOptions) -> Result<Memory> {
    let sample = || opts.server_pid.and_then(ServerSample::take);
    let before = sample();
    let started = Instant::now();
    let clients = connect(dialer, opts.idle_clients, opts.concurrency).await?;
    let connect_secs = started.elapsed().as_secs_f64();
    tokio::time::sleep(SETTLE).await;
    let after = sample();
    drop(clients);
    let rss_per_client_kib = match (&before, &after) {
        (Some(before), Some(after)) => {
            Some((after.rss_kib as f64 - before.rss_kib as f64) / opts.idle_clients as f64)
        }
        _ => None,
    };
    // Let the relay notice the hang-ups before the next measurement.
    tokio::time::sleep(SETTLE).await;
    Ok(Memory {
        clients: opts.idle_clients,
        rss_before_kib: before.map(|s| s.rss_kib),
        rss_after_kib: after.map(|s| s.rss_kib),
        rss_per_client_kib,
        connect_secs,
    })
}

/// Counts of one pair's receiver.
#[derive(Default)]
struct Received {
    packets: AtomicU64,
    bytes: AtomicU64,
    misdelivered: AtomicU64,
}

/// Packets a sender writes between flushes.
const SEND_BATCH: u64 = 16;

async fn throughput(dialer: &Dialer, opts: &RelayOptions, pairs: usize) -> Result<Throughput> {
    let clients = connect(dialer, 2 * pairs, opts.concurrency).await?;
    let packet: Arc<[u8]> = vec![0x5a; opts.packet_size].into();
    let sent = Arc::new(AtomicU64::new(0));
    let received: Vec<Arc<Received>> = (0..pairs).map(|_| Arc::default()).collect();
    let mut tasks = JoinSet::new();
    let mut idle_writers = Vec::with_capacity(pairs);
    let mut clients = clients.into_iter();
    for counts in &received {
        let (Some(sender), Some(receiver)) = (clients.next(), clients.next()) else {
            bail!("fewer clients than pairs");
        };
        let (src, dst) = (sender.key, receiver.key);
        tasks.spawn(drain(sender.reader, None));
        tasks.spawn(drain(receiver.reader, Some((src, Arc::clone(counts)))));
        tasks.spawn(flood(
            sender.writer,
            dst,
            Arc::clone(&packet),
            Arc::clone(&sent),
        ));
        // Dropping a receiver's writer would close its connection's write side.
        idle_writers.push(receiver.writer);
    }
    tokio::time::sleep(opts.warmup).await;

    let take = || {
        let per_pair: Vec<u64> = received
            .iter()
            .map(|r| r.packets.load(Ordering::Relaxed))
            .collect();
        let bytes: u64 = received
            .iter()
            .map(|r| r.bytes.load(Ordering::Relaxed))
            .sum();
        (
            Instant::now(),
            per_pair,
            bytes,
            sent.load(Ordering::Relaxed),
            opts.server_pid.and_then(ServerSample::take),
        )
    };
    let (t0, pairs0, bytes0, sent0, server0) = take();
    tokio::time::sleep(opts.window).await;
    let (t1, pairs1, bytes1, sent1, server1) = take();
    tasks.abort_all();
    while tasks.join_next().await.is_some() {}
    drop(idle_writers);

    let secs = (t1 - t0).as_secs_f64();
    let per_pair: Vec<u64> = pairs1
        .iter()
        .zip(&pairs0)
        .map(|(after, before)| after - before)
        .collect();
    let total_packets = per_pair.iter().sum::<u64>() as f64;
    let rate = |packets: u64| packets as f64 / secs;
    let server_cpu_secs = match (&server0, &server1) {
        (Some(a), Some(b)) => Some(b.cpu_secs - a.cpu_secs),
        _ => None,
    };
    Ok(Throughput {
        pairs,
        window_secs: secs,
        sent_per_sec: rate(sent1 - sent0),
        packets_per_sec: total_packets / secs,
        mb_per_sec: (bytes1 - bytes0) as f64 / secs / 1e6,
        slowest_pair_per_sec: per_pair.iter().copied().min().map_or(0.0, rate),
        fastest_pair_per_sec: per_pair.iter().copied().max().map_or(0.0, rate),
        misdelivered: received
            .iter()
            .map(|r| r.misdelivered.load(Ordering::Relaxed))
            .sum(),
        server_cpu_secs,
        packets_per_cpu_sec: server_cpu_secs
            .filter(|&cpu| cpu > 0.0)
            .map(|cpu| total_packets / cpu),
        server_rss_kib: server1.map(|s| s.rss_kib),
    })
}

/// Writes `packet` to `dst` as fast as the connection takes it.
async fn flood(
    mut writer: Writer,
    dst: NodeKey,
    packet: Arc<[u8]>,
    sent: Arc<AtomicU64>,
) -> Result<()> {
    loop {
        for _ in 0..SEND_BATCH {
            writer.write_send_packet(&dst, &packet).await?;
        }
        writer.flush().await?;
        sent.fetch_add(SEND_BATCH, Ordering::Relaxed);
    }
}

/// Reads every frame; with `counts`, counts the packets from `expected`.
async fn drain(mut reader: Reader, counts: Option<(NodeKey, Arc<Received>)>) -> Result<()> {
    while let Some(header) = reader.read_header().await? {
        match &counts {
            Some((expected, counts)) if header.frame_type == FrameType::RECV_PACKET => {
                let payload = reader.read_payload(header).await?;
                let Some((src, packet)) = payload.split_first_chunk::<KEY_LEN>() else {
                    continue;
                };
                if src == expected.as_bytes() {
                    counts.packets.fetch_add(1, Ordering::Relaxed);
                    counts
                        .bytes
                        .fetch_add(packet.len() as u64, Ordering::Relaxed);
                } else {
                    counts.misdelivered.fetch_add(1, Ordering::Relaxed);
                }
            }
            _ => reader.skip_payload(header).await?,
        }
    }
    Ok(())
}

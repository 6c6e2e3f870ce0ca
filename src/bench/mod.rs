//! The load generator (`headway bench`): N simulated Tailscale nodes against any
//! control server URL (headway or Headscale), run through the join-storm, fan-out
//! and steady-state scenarios, with a JSON report of what each node saw and when.
//!
//! Client side only: it speaks the protocol like tailscaled and needs no special
//! case in the server.

pub mod node;
pub mod report;

use anyhow::{Context, Result, bail};
use node::{Node, Target, View};
use report::{Distribution, Report, ServerSample};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::{Semaphore, mpsc, watch};
use tokio::task::JoinSet;

/// What to run.
#[derive(Clone, Debug)]
pub struct Options {
    /// The control server URL (`http://127.0.0.1:8080`).
    pub server: String,
    /// A reusable pre-auth key of the server.
    pub auth_key: String,
    /// How many nodes to simulate.
    pub nodes: usize,
    /// How many nodes may be connecting and registering at once.
    pub concurrency: usize,
    /// Spread connections over this many source addresses 127.0.0.2, 127.0.0.3, …
    /// (loopback servers only; 0 = let the OS choose).
    pub sources: u8,
    /// Fan-out rounds: one node changes its endpoints, every peer must see it.
    pub fanout_rounds: usize,
    /// Steady-state window with every node connected and idle.
    pub steady: Duration,
    /// The server's process id, to sample its CPU time and memory.
    pub server_pid: Option<u32>,
    /// The whole run ends after this, finished or not.
    pub deadline: Duration,
}

/// What the per-node tasks tell the coordinator.
enum Event {
    Registered {
        latency: Duration,
    },
    Failed {
        index: usize,
        error: String,
    },
    SelfId {
        index: usize,
        id: u64,
    },
    Converged {
        at: Instant,
    },
    Saw {
        round: usize,
        at: Instant,
    },
    /// The server ended a node's map session; the node opened a new one.
    Reconnect {
        index: usize,
        reason: String,
    },
}

/// How long a node waits before opening a new map session.
const RECONNECT_DELAY: Duration = Duration::from_secs(1);

/// The change fan-out rounds wait for: this peer id with this endpoint.
#[derive(Clone, Debug, Default, PartialEq)]
struct Marker {
    round: usize,
    peer: u64,
    endpoint: String,
}

/// Runs every scenario once and returns the report.
pub async fn run(opts: Options) -> Result<Report> {
    if opts.nodes < 2 {
        bail!("--nodes must be at least 2 (a node needs a peer)");
    }
    let url = url::Url::parse(&opts.server).context("--server")?;
    let host = url.host_str().context("--server has no host")?.to_owned();
    let port = url
        .port_or_known_default()
        .context("--server has no port")?;
    if url.scheme() != "http" {
        bail!("--server must be an http:// URL (the load generator speaks plain HTTP)");
    }
    let addr = tokio::net::lookup_host((host.as_str(), port))
        .await?
        .next()
        .context("--server does not resolve")?;
    let authority = url[url::Position::BeforeHost..url::Position::AfterPort].to_owned();
    let server_key = node::fetch_server_key(addr, &authority).await?;
    let target = Arc::new(Target {
        addr,
        host: authority,
        server_key,
    });
    let mut report = Report::new(&opts);
    let started = Instant::now();
    let deadline = started + opts.deadline;
    let before = opts.server_pid.and_then(ServerSample::take);
    report.server_before = before.clone();

    // Join storm: every node connects, registers and streams.
    let (events_tx, mut events) = mpsc::unbounded_channel();
    let (marker_tx, marker_rx) = watch::channel(Marker::default());
    let (first_tx, mut first_rx) = mpsc::channel::<Node>(1);
    let bytes = Arc::new(AtomicU64::new(0));
    let gate = Arc::new(Semaphore::new(opts.concurrency.max(1)));
    let mut tasks = JoinSet::new();
    for index in 0..opts.nodes {
        let sim = Sim {
            index,
            expected_peers: opts.nodes - 1,
            target: target.clone(),
            source: source_address(&addr, opts.sources, index),
            auth_key: opts.auth_key.clone(),
            events: events_tx.clone(),
            marker: marker_rx.clone(),
            bytes: bytes.clone(),
            first: (index == 0).then(|| first_tx.clone()),
        };
        let gate = gate.clone();
        tasks.spawn(async move { sim.run(gate).await });
    }
    drop(events_tx);
    drop(first_tx);

    let mut registration = Vec::new();
    let mut converged = 0usize;
    let mut last_converged = None;
    let mut failures = Vec::new();
    let mut first_id = None;
    while converged + failures.len() < opts.nodes {
        let Some(event) = recv_until(&mut events, deadline).await else {
            break;
        };
        match event {
            Event::Registered { latency } => registration.push(latency),
            Event::Failed { index, error } => failures.push(format!("node {index}: {error}")),
            Event::SelfId { index: 0, id } => first_id = Some(id),
            Event::SelfId { .. } | Event::Saw { .. } => {}
            Event::Reconnect { index, reason } => report.reconnected(index, reason),
            Event::Converged { at } => {
                converged += 1;
                last_converged = Some(at);
            }
        }
    }
    report.join_storm.registered = registration.len();
    report.join_storm.converged = converged;
    report.join_storm.registration = Distribution::of(&mut registration);
    report.join_storm.convergence_secs = (converged == opts.nodes)
        .then(|| last_converged.map(|t| (t - started).as_secs_f64()))
        .flatten();
    report.failures = failures.iter().take(20).cloned().collect();
    report.failed = failures.len();
    if converged < opts.nodes {
        report.note(format!(
            "join storm incomplete: {converged} of {} nodes saw all their peers",
            opts.nodes
        ));
        report.server_after = opts.server_pid.and_then(ServerSample::take);
        tasks.abort_all();
        return Ok(report);
    }

    // Fan-out: node 0 announces a new endpoint; every peer must see it.
    let mut announcer = first_rx.recv().await.context("node 0 did not start")?;
    let first_id = first_id.context("node 0 never learned its id")?;
    for round in 1..=opts.fanout_rounds {
        let port = 20000 + u16::try_from(round % 40000).unwrap_or(0);
        let endpoint = SocketAddr::new(announcer.source, port).to_string();
        marker_tx.send_replace(Marker {
            round,
            peer: first_id,
            endpoint,
        });
        let sent = Instant::now();
        announcer.announce_endpoint(port).await?;
        let mut latencies = Vec::new();
        let round_deadline = (sent + Duration::from_secs(30)).min(deadline);
        while latencies.len() < opts.nodes - 1 {
            match recv_until(&mut events, round_deadline).await {
                Some(Event::Saw { round: r, at }) if r == round => {
                    latencies.push(at.saturating_duration_since(sent));
                }
                Some(Event::Failed { index, error }) => {
                    report.failed += 1;
                    report.note(format!("node {index} failed during fan-out: {error}"));
                }
                Some(Event::Reconnect { index, reason }) => report.reconnected(index, reason),
                Some(_) => {}
                None => break,
            }
        }
        report
            .fan_out
            .push(Distribution::of_round(&mut latencies, opts.nodes - 1));
    }

    // Steady state: everyone connected and idle.
    let idle_start = opts.server_pid.and_then(ServerSample::take);
    let bytes_start = bytes.load(Ordering::Relaxed);
    let window = opts
        .steady
        .min(deadline.saturating_duration_since(Instant::now()));
    tokio::time::sleep(window).await;
    let idle_end = opts.server_pid.and_then(ServerSample::take);
    report.steady.window_secs = window.as_secs_f64();
    report.steady.bytes_per_node =
        (bytes.load(Ordering::Relaxed) - bytes_start) as f64 / opts.nodes as f64;
    if let (Some(a), Some(b)) = (&idle_start, &idle_end) {
        report.steady.cpu_secs = Some(b.cpu_secs - a.cpu_secs);
        report.steady.rss_kib = Some(b.rss_kib);
    }
    if let (Some(before), Some(after)) = (&before, &idle_end) {
        report.steady.rss_per_node_kib =
            Some((after.rss_kib as f64 - before.rss_kib as f64) / opts.nodes as f64);
    }
    report.server_after = idle_end;
    report.total_secs = started.elapsed().as_secs_f64();
    tasks.abort_all();
    Ok(report)
}

/// The next event, or `None` when the channel closed or `deadline` passed.
async fn recv_until(
    events: &mut mpsc::UnboundedReceiver<Event>,
    deadline: Instant,
) -> Option<Event> {
    tokio::time::timeout_at(deadline.into(), events.recv())
        .await
        .ok()
        .flatten()
}

/// 127.0.0.2, 127.0.0.3, … for a loopback server, so that many connections do not
/// exhaust one source address's ports.
fn source_address(server: &SocketAddr, sources: u8, index: usize) -> Option<IpAddr> {
    if sources == 0 || !server.ip().is_loopback() || !server.is_ipv4() {
        return None;
    }
    let host = 2 + (index % usize::from(sources)) as u8;
    Some(IpAddr::V4(Ipv4Addr::new(127, 0, 0, host)))
}

/// One simulated node's task.
struct Sim {
    index: usize,
    expected_peers: usize,
    target: Arc<Target>,
    source: Option<IpAddr>,
    auth_key: String,
    events: mpsc::UnboundedSender<Event>,
    marker: watch::Receiver<Marker>,
    bytes: Arc<AtomicU64>,
    /// Node 0 hands a handle to the coordinator for the fan-out rounds.
    first: Option<mpsc::Sender<Node>>,
}

impl Sim {
    async fn run(self, gate: Arc<Semaphore>) {
        if let Err(error) = self.session(gate).await {
            let _ = self.events.send(Event::Failed {
                index: self.index,
                error: format!("{error:#}"),
            });
        }
    }

    async fn session(&self, gate: Arc<Semaphore>) -> Result<()> {
        let permit = gate.acquire_owned().await?;
        let began = Instant::now();
        let mut node = Node::connect(self.index, &self.target, self.source).await?;
        node.register(&self.auth_key).await?;
        let _ = self.events.send(Event::Registered {
            latency: began.elapsed(),
        });
        let mut body = node.stream(10000).await?;
        drop(permit);
        if let Some(first) = &self.first {
            let _ = first.send(node.clone()).await;
        }
        let mut view = View::default();
        let mut progress = Progress::default();
        loop {
            let ended = node::read_messages(&mut body, &mut view, |view| {
                self.observe(view, &mut progress);
                true
            })
            .await;
            // tailscaled opens a new session when the server ends one; so do we, on
            // the same connection if it still works, else on a new one.
            let reason = match ended {
                Ok(()) => "the server ended the map stream".to_owned(),
                Err(err) => format!("{err:#}"),
            };
            let _ = self.events.send(Event::Reconnect {
                index: self.index,
                reason,
            });
            tokio::time::sleep(RECONNECT_DELAY).await;
            body = match node.stream(10000).await {
                Ok(body) => body,
                Err(_) => {
                    node = node.reconnect(&self.target).await?;
                    node.stream(10000).await?
                }
            };
            view = View::default();
            progress.last_bytes = 0;
        }
    }

    /// Reports what a new map message changed: convergence, fan-out markers seen.
    fn observe(&self, view: &View, progress: &mut Progress) {
        let now = Instant::now();
        self.bytes
            .fetch_add(view.bytes - progress.last_bytes, Ordering::Relaxed);
        progress.last_bytes = view.bytes;
        if let (false, Some(id)) = (progress.announced_id, view.self_id) {
            progress.announced_id = true;
            let _ = self.events.send(Event::SelfId {
                index: self.index,
                id,
            });
        }
        if !progress.converged && view.peers.len() >= self.expected_peers {
            progress.converged = true;
            let _ = self.events.send(Event::Converged { at: now });
        }
        let marker = self.marker.borrow();
        if marker.round > progress.seen_round
            && view
                .peers
                .get(&marker.peer)
                .is_some_and(|e| e.contains(&marker.endpoint))
        {
            progress.seen_round = marker.round;
            let _ = self.events.send(Event::Saw {
                round: marker.round,
                at: now,
            });
        }
    }
}

/// What one node has reported so far.
#[derive(Default)]
struct Progress {
    announced_id: bool,
    converged: bool,
    seen_round: usize,
    last_bytes: u64,
}

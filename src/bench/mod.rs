//! The load generator (`headway bench`): N simulated Tailscale nodes against any
//! control server URL (headway or Headscale), run through the join-storm, fan-out,
//! steady-state and churn scenarios, with a JSON report of what each node saw and
//! when. Given several server URLs (replicas of one tailnet), node `i` registers
//! and holds its map session on server `i % servers`, and fan-out latencies are
//! also reported by whether the receiver is on the announcer's server or another.
//!
//! Client side only: it speaks the protocol like tailscaled and needs no special
//! case in the server.

pub mod compile;
pub mod derp_client;
pub mod node;
pub mod relay;
pub mod report;
pub mod worker;

use anyhow::{Context, Result, bail};
use node::{Node, Target, View};
use report::{CrossReplica, Distribution, Report, RoundSplit, ServerSample};
use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::{Semaphore, mpsc, watch};
use tokio::task::JoinSet;

/// What to run.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct Options {
    /// The control server URLs (`http://127.0.0.1:8080`): one server, or several
    /// replicas serving one tailnet. Node `i` uses server `i % servers.len()`.
    pub servers: Vec<String>,
    /// Reusable pre-auth keys of the server: node `i` registers with key
    /// `i % keys.len()` (several users and tagged keys, for a policy).
    pub auth_keys: Vec<String>,
    /// Nodes registered with different keys do not see each other (a policy that
    /// partitions the tailnet by user): convergence and fan-out expect only the
    /// nodes of the same key.
    pub cohorts: bool,
    /// A shell command run after the steady window that changes the server's
    /// policy (every node's packet filter must change): the report says how long
    /// until every node had a new filter.
    pub policy_change: Option<String>,
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
    /// Churn window after the steady state (zero: no churn): nodes drop their
    /// connection and come back, one every `1 / churn_rate` seconds.
    pub churn: Duration,
    /// Nodes leaving and rejoining per second during the churn window.
    pub churn_rate: f64,
    /// The server processes' ids, to sample their CPU time and memory (summed
    /// over all of them; empty: not sampled).
    pub server_pids: Vec<u32>,
    /// The whole run ends after this, finished or not.
    pub deadline: Duration,
    /// Load-generator processes sharing the nodes (this one and `processes − 1`
    /// workers): node `i` runs in process `i % processes`.
    pub processes: usize,
}

/// What the per-node tasks tell the coordinator (across processes, too).
#[derive(serde::Serialize, serde::Deserialize)]
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
        #[serde(with = "worker::stamp")]
        at: Instant,
    },
    Saw {
        index: usize,
        round: usize,
        #[serde(with = "worker::stamp")]
        at: Instant,
    },
    /// A node's registration failed; it tries again a second later.
    RegisterRetry {
        index: usize,
        error: String,
    },
    /// The server ended a node's map session; the node opened a new one.
    Reconnect {
        index: usize,
        reason: String,
    },
    /// A churned node is back, registered, and asks for its map stream announcing
    /// endpoint `port`.
    Rejoining {
        index: usize,
        port: u16,
        #[serde(with = "worker::stamp")]
        at: Instant,
    },
    /// A churned node's new map lists all its peers again.
    Rejoined {
        index: usize,
        latency: Duration,
    },
    /// Node `observer` saw peer `peer` with a churn endpoint `port`.
    SawRejoin {
        observer: usize,
        peer: u64,
        port: u16,
        #[serde(with = "worker::stamp")]
        at: Instant,
    },
    /// A node got a packet filter after the policy change began.
    NewFilter {
        #[serde(with = "worker::stamp")]
        at: Instant,
    },
}

impl Options {
    /// How many peers node `index` may see.
    fn expected_peers(&self, index: usize) -> usize {
        (0..self.nodes).filter(|&j| self.sees(index, j)).count()
    }

    /// Whether nodes `a` and `b` see each other.
    fn sees(&self, a: usize, b: usize) -> bool {
        let k = self.auth_keys.len();
        a != b && (!self.cohorts || k <= 1 || a % k == b % k)
    }

    /// Which of the servers node `index` registers and streams on.
    fn server_of(&self, index: usize) -> usize {
        index % self.servers.len().max(1)
    }

    /// The peers of node `index` whose map session is on its server, and those
    /// on another server: what a change of `index` reaches directly, and what
    /// reaches them only through another replica.
    fn receivers(&self, index: usize) -> (usize, usize) {
        let home = self.server_of(index);
        (0..self.nodes)
            .filter(|&j| self.sees(index, j))
            .fold((0, 0), |(same, other), j| {
                if self.server_of(j) == home {
                    (same + 1, other)
                } else {
                    (same, other + 1)
                }
            })
    }

    /// A sample of every server process (summed), if any is given and all run.
    fn sample(&self) -> Option<ServerSample> {
        ServerSample::take_all(&self.server_pids)
    }
}

/// The pause before each fan-out round.
const FANOUT_GAP: Duration = Duration::from_secs(1);
/// How long a node waits before opening a new map session.
const RECONNECT_DELAY: Duration = Duration::from_secs(1);
/// How many times a node tries to register before it counts as failed.
const REGISTER_TRIES: usize = 5;
/// How long a churned node stays away before it reconnects.
const CHURN_OFFLINE: Duration = Duration::from_secs(1);
/// Churned nodes announce endpoint ports from here up, one per churn cycle.
const CHURN_PORTS: u16 = 30000;
/// After the churn window, cycles still in flight get this long to finish.
const CHURN_GRACE: Duration = Duration::from_secs(30);

/// The change fan-out rounds wait for: this peer id with this endpoint.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
struct Marker {
    round: usize,
    peer: u64,
    /// The announcer's new endpoint list, as the nodes remember endpoints.
    endpoints: node::Endpoints,
}

/// Runs every scenario once and returns the report.
pub async fn run(opts: Options) -> Result<Report> {
    if opts.nodes < 2 {
        bail!("--nodes must be at least 2 (a node needs a peer)");
    }
    if opts.auth_keys.is_empty() {
        bail!("--authkey is required");
    }
    if opts.cohorts && !opts.churn.is_zero() {
        bail!("--cohorts runs without churn (--churn 0s)");
    }
    let rate_ok = (f64::MIN_POSITIVE..=10_000.0).contains(&opts.churn_rate);
    if !opts.churn.is_zero() && !rate_ok {
        bail!("--churn-rate must be more than 0 and at most 10000 nodes per second");
    }
    if opts.servers.is_empty() {
        bail!("--server is required");
    }
    if opts.processes == 0 || opts.processes > opts.nodes {
        bail!("--processes must be at least 1 and at most --nodes");
    }
    let targets = targets(&opts).await?;
    let mut report = Report::new(&opts);
    let started = Instant::now();
    let deadline = started + opts.deadline;
    let before = opts.sample();
    report.server_before = before.clone();

    // Join storm: every node connects, registers and streams, in this process
    // and in the workers.
    let (events_tx, mut events) = mpsc::unbounded_channel();
    let (marker_tx, marker_rx) = watch::channel(Marker::default());
    let (policy_tx, policy_rx) = watch::channel(None::<Instant>);
    let (first_tx, mut first_rx) = mpsc::channel::<Node>(1);
    let bytes = Arc::new(AtomicU64::new(0));
    let mut workers = Vec::new();
    for shard in 1..opts.processes {
        workers.push(worker::Worker::start(
            &opts,
            shard,
            opts.processes,
            events_tx.clone(),
            bytes.clone(),
        )?);
    }
    let generator = Generator::new(&workers);
    let generator_start = generator.sample();
    let (mut tasks, local) = Nodes {
        options: &opts,
        targets: &targets,
        shard: 0,
        processes: opts.processes,
        links: Links {
            events: events_tx,
            marker: marker_rx,
            policy_change: policy_rx,
            bytes: bytes.clone(),
        },
        first: Some(first_tx),
    }
    .spawn();
    let schedule = Schedule {
        marker: marker_tx,
        policy: policy_tx,
        local: local.into_iter().collect(),
        workers: workers.iter().map(|w| w.orders.clone()).collect(),
        processes: opts.processes,
    };

    let mut registration = Vec::new();
    let mut converged = 0usize;
    let mut last_converged = None;
    let mut failures = Vec::new();
    let mut ids = vec![None; opts.nodes];
    while converged + failures.len() < opts.nodes {
        let Some(event) = recv_until(&mut events, deadline).await else {
            break;
        };
        match event {
            Event::Registered { latency } => registration.push(latency),
            Event::Failed { index, error } => failures.push(format!("node {index}: {error}")),
            Event::RegisterRetry { index, error } => {
                report.join_storm.retried += 1;
                if report.join_storm.retried <= 5 {
                    report.note(format!("node {index} registers again: {error}"));
                }
            }
            Event::SelfId { index, id } => ids[index] = Some(id),
            Event::Reconnect { index, reason } => report.reconnected(index, reason),
            Event::Converged { at } => {
                converged += 1;
                last_converged = Some(at);
            }
            _ => {}
        }
    }
    report.load_generator.join_cpu_secs = generator.since(generator_start.as_ref()).0;
    report.join_storm.registered = registration.len();
    report.join_storm.bytes_per_node = bytes.load(Ordering::Relaxed) as f64 / opts.nodes as f64;
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
        report.server_after = opts.sample();
        (
            report.load_generator.cpu_secs,
            report.load_generator.rss_kib,
        ) = generator.since(generator_start.as_ref());
        tasks.abort_all();
        return Ok(report);
    }

    // Fan-out: node 0 announces a new endpoint; every peer must see it. With
    // several servers, receivers are also grouped by whether they share node 0's.
    let (same_expected, other_expected) = opts.receivers(0);
    let mut splits = Vec::with_capacity(opts.fanout_rounds);
    let mut announcer = first_rx.recv().await.context("node 0 did not start")?;
    let first_id = ids[0].context("node 0 never learned its id")?;
    for round in 1..=opts.fanout_rounds {
        // Each round measures one change on its own: a server may merge changes
        // that come close together (headway paces batches under load), which a
        // back-to-back round would measure instead.
        tokio::time::sleep(FANOUT_GAP).await;
        let port = 20000 + u16::try_from(round % 40000).unwrap_or(0);
        let endpoint = SocketAddr::new(announcer.source, port).to_string();
        schedule.set_marker(Marker {
            round,
            peer: first_id,
            endpoints: node::Endpoints::of(&[endpoint]),
        });
        let sent = Instant::now();
        announcer.announce_endpoint(port).await?;
        let mut latencies = Vec::new();
        let mut split = RoundSplit {
            same_expected,
            other_expected,
            ..RoundSplit::default()
        };
        let round_deadline = (sent + Duration::from_secs(30)).min(deadline);
        let observers = opts.expected_peers(0);
        while latencies.len() < observers {
            match recv_until(&mut events, round_deadline).await {
                Some(Event::Saw {
                    index,
                    round: r,
                    at,
                }) if r == round => {
                    let latency = at.saturating_duration_since(sent);
                    latencies.push(latency);
                    if opts.server_of(index) == opts.server_of(0) {
                        split.same.push(latency);
                    } else {
                        split.other.push(latency);
                    }
                }
                Some(Event::Failed { index, error }) => {
                    report.failed += 1;
                    report.note(format!("node {index} failed during fan-out: {error}"));
                }
                Some(Event::Reconnect { index, reason }) => report.reconnected(index, reason),
                Some(Event::SelfId { index, id }) => ids[index] = Some(id),
                Some(_) => {}
                None => break,
            }
        }
        report
            .fan_out
            .push(Distribution::of_round(&mut latencies, observers));
        splits.push(split);
    }
    if opts.servers.len() > 1 {
        report.cross_replica = Some(CrossReplica::of_rounds(opts.servers.len(), splits));
    }

    // Steady state: everyone connected and idle. Workers report their byte
    // counts periodically: let the last round's bytes arrive first.
    if opts.processes > 1 {
        tokio::time::sleep(worker::BYTES_EVERY * 2).await;
    }
    let idle_start = opts.sample();
    let bytes_start = bytes.load(Ordering::Relaxed);
    let window = opts
        .steady
        .min(deadline.saturating_duration_since(Instant::now()));
    tokio::time::sleep(window).await;
    let idle_end = opts.sample();
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

    if let Some(command) = &opts.policy_change {
        policy_change(
            &opts,
            command,
            &schedule,
            &mut events,
            &mut report,
            deadline,
        )
        .await;
    }

    if !opts.churn.is_zero() {
        let mut churn = Churn {
            opts: &opts,
            events: &mut events,
            schedule: &schedule,
            ids: &mut ids,
            report: &mut report,
            deadline,
        };
        churn.run().await;
        report.server_after = opts.sample();
    }
    report.total_secs = started.elapsed().as_secs_f64();
    (
        report.load_generator.cpu_secs,
        report.load_generator.rss_kib,
    ) = generator.since(generator_start.as_ref());
    tasks.abort_all();
    Ok(report)
}

/// The churn scenario's coordinator: tells one node after another to drop its
/// connection and come back with a new endpoint, and times how long the node takes
/// to get its full peer list again and how long its peers take to see it back.
struct Churn<'a> {
    opts: &'a Options,
    events: &'a mut mpsc::UnboundedReceiver<Event>,
    schedule: &'a Schedule,
    ids: &'a mut [Option<u64>],
    report: &'a mut Report,
    deadline: Instant,
}

/// One node's leave-and-rejoin: when it asked for its new stream, which peers
/// are excused (away themselves then, or told to leave before they saw it: they
/// learn it from their own new map, later), and which of the others have seen its
/// new endpoint.
struct Cycle {
    since: Instant,
    away: HashSet<usize>,
    seen: HashSet<usize>,
    last_seen: Option<Instant>,
    done: Option<Duration>,
}

impl Cycle {
    /// Marks the cycle done once every peer saw it or is excused; true when this
    /// call did.
    fn settle(&mut self, peers: usize) -> bool {
        if self.done.is_none() && self.seen.len() + self.away.len() >= peers {
            let last = self.last_seen.unwrap_or(self.since);
            self.done = Some(last.saturating_duration_since(self.since));
            return true;
        }
        false
    }
}

impl Churn<'_> {
    async fn run(&mut self) {
        let opts = self.opts;
        let before = opts.sample();
        let began = Instant::now();
        let window_end = (began + opts.churn).min(self.deadline);
        let grace_end = (window_end + CHURN_GRACE).min(self.deadline);
        let mut ticker = tokio::time::interval(Duration::from_secs_f64(1.0 / opts.churn_rate));
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // Node 0 is the coordinator's announcer and stays; the others take turns.
        let mut next = 1;
        let mut ordered = 0usize;
        let mut cycles: HashMap<(u64, u16), Cycle> = HashMap::new();
        // Cycles done, counted as they finish: checked on every event.
        let mut settled = 0usize;
        // Nodes told to leave that have not got their whole map back yet.
        let mut away = HashSet::new();
        let mut rejoins = Vec::new();
        let mut window_sample = None;
        loop {
            let now = Instant::now();
            if now >= window_end && window_sample.is_none() {
                window_sample = opts.sample();
            }
            let finished = settled == cycles.len() && rejoins.len() + self.report.failed >= ordered;
            if now >= grace_end || (now >= window_end && finished) {
                break;
            }
            let event = tokio::select! {
                _ = ticker.tick(), if now < window_end => {
                    let port = CHURN_PORTS.saturating_add(u16::try_from(ordered).unwrap_or(u16::MAX));
                    if self.schedule.rejoin(next, port) {
                        ordered += 1;
                        away.insert(next);
                        // Cycles it has not seen yet reach it through its own new
                        // map, a second later: excuse it from those.
                        for cycle in cycles.values_mut().filter(|c| c.done.is_none()) {
                            if !cycle.seen.contains(&next) {
                                cycle.away.insert(next);
                                settled += usize::from(cycle.settle(opts.nodes - 1));
                            }
                        }
                    }
                    next = next % (opts.nodes - 1) + 1;
                    continue;
                }
                event = recv_until(self.events, if now < window_end { window_end } else { grace_end }) => event,
            };
            match event {
                Some(Event::Rejoining { index, port, at }) => {
                    if let Some(id) = self.ids[index] {
                        let mut away = away.clone();
                        away.remove(&index);
                        cycles.insert(
                            (id, port),
                            Cycle {
                                since: at,
                                away,
                                seen: HashSet::new(),
                                last_seen: None,
                                done: None,
                            },
                        );
                    }
                }
                Some(Event::SawRejoin {
                    observer,
                    peer,
                    port,
                    at,
                }) => {
                    if let Some(cycle) = cycles.get_mut(&(peer, port))
                        && cycle.done.is_none()
                        && !cycle.away.contains(&observer)
                        && cycle.seen.insert(observer)
                    {
                        cycle.last_seen = Some(at);
                        settled += usize::from(cycle.settle(opts.nodes - 1));
                    }
                }
                Some(Event::Rejoined { index, latency }) => {
                    away.remove(&index);
                    rejoins.push(latency);
                }
                Some(Event::SelfId { index, id }) => self.ids[index] = Some(id),
                Some(Event::Reconnect { index, reason }) => self.report.reconnected(index, reason),
                Some(Event::Failed { index, error }) => {
                    self.report.failed += 1;
                    self.report
                        .note(format!("node {index} failed during churn: {error}"));
                }
                Some(_) | None => {}
            }
        }
        let after = window_sample.or_else(|| opts.sample());
        let churn = &mut self.report.churn;
        churn.window_secs = window_end.saturating_duration_since(began).as_secs_f64();
        churn.rate_per_sec = opts.churn_rate;
        churn.cycles = ordered;
        churn.rejoin = Distribution::of_round(&mut rejoins, ordered);
        let mut propagation: Vec<Duration> = cycles.values().filter_map(|c| c.done).collect();
        churn.propagation = Distribution::of_round(&mut propagation, ordered);
        if let (Some(a), Some(b)) = (&before, &after) {
            churn.cpu_secs = Some(b.cpu_secs - a.cpu_secs);
            churn.rss_kib = Some(b.rss_kib);
        }
    }
}

/// Changes the server's policy with `command` and waits until every node got a
/// new packet filter.
async fn policy_change(
    opts: &Options,
    command: &str,
    schedule: &Schedule,
    events: &mut mpsc::UnboundedReceiver<Event>,
    report: &mut Report,
    deadline: Instant,
) {
    let before = opts.sample();
    let t0 = Instant::now();
    schedule.policy_began(t0);
    let command_line = command.to_owned();
    let run = tokio::task::spawn_blocking(move || {
        std::process::Command::new("sh")
            .args(["-c", &command_line])
            .output()
    })
    .await
    .unwrap_or_else(|e| Err(std::io::Error::other(e)));
    let command_secs = t0.elapsed().as_secs_f64();
    match run {
        Ok(out) if out.status.success() => {}
        Ok(out) => report.note(format!(
            "the policy change command failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )),
        Err(e) => report.note(format!("the policy change command did not run: {e}")),
    }
    let mut latencies = Vec::new();
    let wait_end = (Instant::now() + Duration::from_secs(120)).min(deadline);
    while latencies.len() < opts.nodes {
        match recv_until(events, wait_end).await {
            Some(Event::NewFilter { at }) => latencies.push(at.saturating_duration_since(t0)),
            Some(Event::Failed { index, error }) => {
                report.failed += 1;
                report.note(format!(
                    "node {index} failed during the policy change: {error}"
                ));
            }
            Some(Event::Reconnect { index, reason }) => report.reconnected(index, reason),
            Some(_) => {}
            None => break,
        }
    }
    let after = opts.sample();
    let p = &mut report.policy_change;
    p.command_secs = Some(command_secs);
    p.all_secs = (latencies.len() == opts.nodes)
        .then(|| latencies.iter().max().map(Duration::as_secs_f64))
        .flatten();
    p.latency = Distribution::of_round(&mut latencies, opts.nodes);
    if let (Some(a), Some(b)) = (&before, &after) {
        p.cpu_secs = Some(b.cpu_secs - a.cpu_secs);
    }
}

/// Where `server` (an `http://` URL) is, and its Noise key from `GET /key`.
/// Every server of the run, with its Noise key.
async fn targets(opts: &Options) -> Result<Vec<Arc<Target>>> {
    let mut targets = Vec::with_capacity(opts.servers.len());
    for server in &opts.servers {
        targets.push(Arc::new(target(server).await?));
    }
    Ok(targets)
}

/// The nodes one process runs: `i % processes == shard`.
struct Nodes<'a> {
    options: &'a Options,
    targets: &'a [Arc<Target>],
    shard: usize,
    processes: usize,
    links: Links,
    /// Where node 0 hands its handle (the coordinator's fan-out announcer).
    first: Option<mpsc::Sender<Node>>,
}

/// What every node of a process shares with whoever runs the schedule there.
#[derive(Clone)]
struct Links {
    events: mpsc::UnboundedSender<Event>,
    marker: watch::Receiver<Marker>,
    /// When the policy change began (`None`: not yet).
    policy_change: watch::Receiver<Option<Instant>>,
    bytes: Arc<AtomicU64>,
}

impl Nodes<'_> {
    /// Starts every node of this share, at most `concurrency / processes`
    /// connecting at once; returns their tasks and, per node, where to order it
    /// to leave and rejoin.
    fn spawn(self) -> (JoinSet<()>, Vec<(usize, mpsc::UnboundedSender<u16>)>) {
        let opts = self.options;
        let gate = Arc::new(Semaphore::new(
            (opts.concurrency / self.processes.max(1)).max(1),
        ));
        let mut tasks = JoinSet::new();
        let mut rejoin = Vec::new();
        for index in (self.shard..opts.nodes).step_by(self.processes.max(1)) {
            let (command, commands) = mpsc::unbounded_channel();
            rejoin.push((index, command));
            let target = &self.targets[opts.server_of(index)];
            let sim = Sim {
                index,
                expected_peers: opts.expected_peers(index),
                target: target.clone(),
                source: source_address(&target.addr, opts.sources, index),
                auth_key: opts.auth_keys[index % opts.auth_keys.len()].clone(),
                links: self.links.clone(),
                first: if index == 0 { self.first.clone() } else { None },
            };
            let gate = gate.clone();
            tasks.spawn(async move { sim.run(gate, commands).await });
        }
        (tasks, rejoin)
    }
}

/// The run's schedule as the coordinator sends it: to this process's nodes
/// through channels, to the workers' as orders.
struct Schedule {
    marker: watch::Sender<Marker>,
    policy: watch::Sender<Option<Instant>>,
    local: HashMap<usize, mpsc::UnboundedSender<u16>>,
    workers: Vec<mpsc::UnboundedSender<worker::ToWorker>>,
    processes: usize,
}

impl Schedule {
    fn set_marker(&self, marker: Marker) {
        for orders in &self.workers {
            let _ = orders.send(worker::ToWorker::Marker(marker.clone()));
        }
        self.marker.send_replace(marker);
    }

    fn policy_began(&self, at: Instant) {
        for orders in &self.workers {
            let _ = orders.send(worker::ToWorker::PolicyBegan(at));
        }
        self.policy.send_replace(Some(at));
    }

    /// Orders node `index` to leave and rejoin announcing `port`; false if it
    /// cannot take orders any more.
    fn rejoin(&self, index: usize, port: u16) -> bool {
        match self.local.get(&index) {
            Some(node) => node.send(port).is_ok(),
            None => self
                .workers
                .get((index % self.processes).wrapping_sub(1))
                .is_some_and(|orders| {
                    orders
                        .send(worker::ToWorker::Rejoin { index, port })
                        .is_ok()
                }),
        }
    }
}

/// The load generator's processes, for their CPU time and memory.
struct Generator {
    pids: Vec<u32>,
}

impl Generator {
    fn new(workers: &[worker::Worker]) -> Generator {
        let mut pids = vec![std::process::id()];
        pids.extend(workers.iter().filter_map(|w| w.child.id()));
        Generator { pids }
    }

    fn sample(&self) -> Option<ServerSample> {
        ServerSample::take_all(&self.pids)
    }

    /// CPU seconds since `start` and resident memory now, summed over the processes.
    fn since(&self, start: Option<&ServerSample>) -> (Option<f64>, Option<u64>) {
        match (start, self.sample()) {
            (Some(a), Some(b)) => (Some(b.cpu_secs - a.cpu_secs), Some(b.rss_kib)),
            _ => (None, None),
        }
    }
}

async fn target(server: &str) -> Result<Target> {
    let url = url::Url::parse(server).with_context(|| format!("--server {server}"))?;
    let host = url
        .host_str()
        .with_context(|| format!("--server {server} has no host"))?
        .to_owned();
    let port = url
        .port_or_known_default()
        .with_context(|| format!("--server {server} has no port"))?;
    if url.scheme() != "http" {
        bail!("--server {server}: not an http:// URL (the load generator speaks plain HTTP)");
    }
    let addr = tokio::net::lookup_host((host.as_str(), port))
        .await?
        .next()
        .with_context(|| format!("--server {server} does not resolve"))?;
    let authority = url[url::Position::BeforeHost..url::Position::AfterPort].to_owned();
    let server_key = node::fetch_server_key(addr, &authority).await?;
    Ok(Target {
        addr,
        host: authority,
        server_key,
    })
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
    links: Links,
    /// Node 0 hands a handle to the coordinator for the fan-out rounds.
    first: Option<mpsc::Sender<Node>>,
}

/// What ended a wait on a map stream.
enum Next {
    /// The stream ended (the server closed it, or it broke).
    Ended(Result<()>),
    /// The churn coordinator asks the node to leave and come back announcing this port.
    Rejoin(u16),
}

impl Sim {
    async fn run(self, gate: Arc<Semaphore>, churn: mpsc::UnboundedReceiver<u16>) {
        if let Err(error) = self.session(gate, churn).await {
            let _ = self.links.events.send(Event::Failed {
                index: self.index,
                error: format!("{error:#}"),
            });
        }
    }

    async fn session(
        &self,
        gate: Arc<Semaphore>,
        mut churn: mpsc::UnboundedReceiver<u16>,
    ) -> Result<()> {
        let permit = gate.acquire_owned().await?;
        let began = Instant::now();
        let mut tries = 0;
        let (mut node, mut body, registered) = loop {
            tries += 1;
            match self.join().await {
                Ok(joined) => break joined,
                // As tailscaled: a broken login is tried again a second later.
                Err(error) if tries < REGISTER_TRIES => {
                    let _ = self.links.events.send(Event::RegisterRetry {
                        index: self.index,
                        error: format!("{error:#}"),
                    });
                    tokio::time::sleep(RECONNECT_DELAY).await;
                }
                Err(error) => return Err(error),
            }
        };
        let _ = self.links.events.send(Event::Registered {
            latency: registered - began,
        });
        drop(permit);
        if let Some(first) = &self.first {
            let _ = first.send(node.clone()).await;
        }
        let mut view = View::default();
        let mut progress = Progress::default();
        loop {
            let next = tokio::select! {
                ended = node::read_messages(&mut body, &mut view, |view| {
                    self.observe(view, &mut progress);
                    true
                }) => Next::Ended(ended),
                Some(port) = churn.recv() => Next::Rejoin(port),
            };
            drop(body);
            body = match next {
                Next::Rejoin(port) => {
                    // As a restarted tailscaled: a new connection, register again
                    // with the same keys, then a new map stream.
                    node = node.reconnect(&self.target, CHURN_OFFLINE).await?;
                    progress.rejoining = Some(Instant::now());
                    node.register(&self.auth_key).await?;
                    let _ = self.links.events.send(Event::Rejoining {
                        index: self.index,
                        port,
                        at: Instant::now(),
                    });
                    node.stream(port).await?
                }
                Next::Ended(ended) => {
                    // tailscaled opens a new session when the server ends one; so do
                    // we, on the same connection if it still works, else on a new one.
                    let reason = match ended {
                        Ok(()) => "the server ended the map stream".to_owned(),
                        Err(err) => format!("{err:#}"),
                    };
                    let _ = self.links.events.send(Event::Reconnect {
                        index: self.index,
                        reason,
                    });
                    tokio::time::sleep(RECONNECT_DELAY).await;
                    match node.stream(10000).await {
                        Ok(body) => body,
                        Err(_) => {
                            node = node.reconnect(&self.target, Duration::ZERO).await?;
                            node.stream(10000).await?
                        }
                    }
                }
            };
            view = View::default();
            progress.last_bytes = 0;
        }
    }

    /// Connects, registers and opens the map stream, once.
    /// Returns when the registration was answered, too.
    async fn join(&self) -> Result<(Node, hyper::body::Incoming, Instant)> {
        let mut node = Node::connect(self.index, &self.target, self.source).await?;
        node.register(&self.auth_key).await?;
        let registered = Instant::now();
        let body = node.stream(10000).await?;
        Ok((node, body, registered))
    }

    /// Reports what a new map message changed: convergence, fan-out markers seen.
    fn observe(&self, view: &View, progress: &mut Progress) {
        let now = Instant::now();
        self.links
            .bytes
            .fetch_add(view.bytes - progress.last_bytes, Ordering::Relaxed);
        progress.last_bytes = view.bytes;
        if let (false, Some(id)) = (progress.announced_id, view.self_id) {
            progress.announced_id = true;
            let _ = self.links.events.send(Event::SelfId {
                index: self.index,
                id,
            });
        }
        if view.peers.len() >= self.expected_peers {
            if !progress.converged {
                progress.converged = true;
                let _ = self.links.events.send(Event::Converged { at: now });
            }
            if let Some(since) = progress.rejoining.take() {
                let _ = self.links.events.send(Event::Rejoined {
                    index: self.index,
                    latency: now - since,
                });
            }
        }
        for peer in &view.changed {
            let port = view
                .peers
                .get(peer)
                .and_then(|endpoints| endpoints.highest_port)
                .filter(|port| *port >= CHURN_PORTS);
            if let Some(port) = port {
                let _ = self.links.events.send(Event::SawRejoin {
                    observer: self.index,
                    peer: *peer,
                    port,
                    at: now,
                });
            }
        }
        if !progress.new_filter
            && let (Some(t0), Some(at)) = (*self.links.policy_change.borrow(), view.last_filter)
            && at > t0
        {
            progress.new_filter = true;
            let _ = self.links.events.send(Event::NewFilter { at });
        }
        let marker = self.links.marker.borrow();
        if marker.round > progress.seen_round
            && view
                .peers
                .get(&marker.peer)
                .is_some_and(|e| *e == marker.endpoints)
        {
            progress.seen_round = marker.round;
            let _ = self.links.events.send(Event::Saw {
                index: self.index,
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
    /// Since when a churned node has been rejoining (until its map is whole again).
    rejoining: Option<Instant>,
    seen_round: usize,
    last_bytes: u64,
    /// Reported a packet filter newer than the policy change.
    new_filter: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options(nodes: usize, servers: usize, keys: usize, cohorts: bool) -> Options {
        Options {
            servers: (0..servers).map(|i| format!("http://s{i}")).collect(),
            auth_keys: (0..keys).map(|i| format!("key{i}")).collect(),
            cohorts,
            policy_change: None,
            nodes,
            concurrency: 1,
            sources: 0,
            fanout_rounds: 1,
            steady: Duration::ZERO,
            churn: Duration::ZERO,
            churn_rate: 1.0,
            server_pids: Vec::new(),
            deadline: Duration::ZERO,
            processes: 1,
        }
    }

    #[test]
    fn receivers_split_by_the_server_they_stream_on() {
        // One server: every peer is on the announcer's.
        assert_eq!(options(10, 1, 1, false).receivers(0), (9, 0));
        // Two: nodes 2, 4, 6, 8 share node 0's server; 1, 3, 5, 7, 9 do not.
        let two = options(10, 2, 1, false);
        assert_eq!(two.receivers(0), (4, 5));
        assert_eq!(two.receivers(1), (4, 5));
        assert_eq!((two.server_of(0), two.server_of(3)), (0, 1));
        // Three servers, two cohorts: node 0 sees 2, 4, 6, 8, 10; 6 shares its server.
        let cohorts = options(11, 3, 2, true);
        assert_eq!(cohorts.receivers(0), (1, 4));
        assert_eq!(
            cohorts.receivers(0).0 + cohorts.receivers(0).1,
            cohorts.expected_peers(0)
        );
    }
}

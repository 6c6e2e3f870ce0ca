//! `headway bench` and `headway bench-relay`: run the control-plane load
//! generator against a server URL (or several replicas' URLs), or the relay
//! benchmark against a DERP server, and write the JSON report.

use crate::bench::relay::{self, RelayOptions};
use crate::bench::{self, Options};
use crate::types::duration;
use clap::Args;
use std::path::PathBuf;
use std::time::Duration;

/// Simulate Tailscale nodes against a control server (headway or Headscale) and
/// report join-storm convergence, fan-out latency and steady-state cost.
#[derive(Args, Debug)]
pub struct BenchArgs {
    /// The server's URL, as clients use it (http:// only). Repeat (or separate
    /// with commas) for several replicas of one tailnet: node i uses server
    /// i % servers, and the report splits fan-out latency by whether the
    /// receiver shares the changed node's server.
    #[arg(long, required = true, value_delimiter = ',')]
    pub server: Vec<String>,
    /// A reusable pre-auth key of that server; repeat (or separate with commas)
    /// for several, which nodes take in turn.
    #[arg(
        long = "authkey",
        visible_alias = "auth-key",
        required = true,
        value_delimiter = ','
    )]
    pub auth_key: Vec<String>,
    /// Nodes of different keys do not see each other (the server's policy
    /// partitions the tailnet by key): expect peers of the same key only.
    #[arg(long)]
    pub cohorts: bool,
    /// After the steady window, run this shell command to change the server's
    /// policy, and time until every node has a new packet filter.
    #[arg(long)]
    pub policy_change: Option<String>,
    /// How many nodes to simulate.
    #[arg(long, default_value_t = 100)]
    pub nodes: usize,
    /// How many nodes may connect and register at once.
    #[arg(long, default_value_t = 64)]
    pub concurrency: usize,
    /// Source addresses 127.0.0.2… to spread connections over (loopback servers; 0 = any).
    #[arg(long, default_value_t = 16)]
    pub sources: u8,
    /// Fan-out rounds (a second apart).
    #[arg(long, default_value_t = 5)]
    pub fanout_rounds: usize,
    /// Steady-state window (Go or Prometheus duration, e.g. 30s).
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    pub steady: Duration,
    /// Churn window after the steady state (0s: none): nodes drop their connection
    /// and come back with a new endpoint, `--churn-rate` per second.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    pub churn: Duration,
    /// Nodes leaving and rejoining per second during the churn window.
    #[arg(long, default_value_t = 10.0)]
    pub churn_rate: f64,
    /// The server's process id, for its CPU time and memory; repeat (or separate
    /// with commas) for several replicas, whose CPU time and memory add up.
    #[arg(long, value_delimiter = ',')]
    pub server_pid: Vec<u32>,
    /// Give up after this long, finished or not.
    #[arg(long, default_value = "10m", value_parser = parse_duration)]
    pub deadline: Duration,
    /// Load-generator processes sharing the nodes (this one and workers it
    /// starts): for many thousands of nodes, beyond one process's open files.
    #[arg(long, default_value_t = 1)]
    pub processes: usize,
    /// Write the JSON report here (default: standard output).
    #[arg(long)]
    pub out: Option<PathBuf>,
}

/// Time applying a policy to a synthetic tailnet of N nodes, in process.
#[derive(Args, Debug)]
pub struct BenchCompileArgs {
    /// The policy file (HuJSON).
    #[arg(long = "policy", short = 'f')]
    pub policy: std::path::PathBuf,
    /// How many nodes.
    #[arg(long, default_value_t = 1000)]
    pub nodes: usize,
    /// Users `u0`, `u1`, …: node i belongs to user i % (users + tags) when
    /// that is below `users`…
    #[arg(long, default_value_t = 50)]
    pub users: usize,
    /// …else it carries tag `tag:t<k - users>`.
    #[arg(long, default_value_t = 0)]
    pub tags: usize,
    /// How many times to compile (the median is reported).
    #[arg(long, default_value_t = 5)]
    pub runs: usize,
    /// Write the JSON report here as well as to standard output.
    #[arg(long)]
    pub out: Option<std::path::PathBuf>,
}

/// Runs `bench-compile`: prints (and writes) a JSON report.
pub fn run_compile(args: BenchCompileArgs) -> anyhow::Result<()> {
    let report =
        crate::bench::compile::measure(&args.policy, args.nodes, args.users, args.tags, args.runs)?;
    let json = serde_json::to_string_pretty(&report)?;
    if let Some(out) = &args.out {
        std::fs::write(out, &json)
            .map_err(|e| anyhow::anyhow!("writing {}: {e}", out.display()))?;
    }
    println!("{json}");
    Ok(())
}

/// Measure a DERP relay (headway's embedded one or Tailscale's derper): packets
/// and bytes per second between client pairs, and memory per connected client.
#[derive(Args, Debug)]
pub struct BenchRelayArgs {
    /// The relay, `https://host:port` or `http://host:port` (the path is /derp).
    #[arg(long)]
    pub url: String,
    /// With https: the relay's certificate (PEM), the only one trusted.
    #[arg(long)]
    pub cert: Option<PathBuf>,
    /// Sender → receiver pairs, one throughput run per number.
    #[arg(long, value_delimiter = ',', default_value = "1,100")]
    pub pairs: Vec<usize>,
    /// Bytes per packet (1312: a WireGuard packet of a 1280-byte tunnel MTU).
    #[arg(long, default_value_t = 1312)]
    pub packet_size: usize,
    /// Sending before each measurement window.
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    pub warmup: Duration,
    /// The measurement window of each throughput run.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub window: Duration,
    /// Idle clients connected to measure memory per client (0: skip).
    #[arg(long, default_value_t = 1000)]
    pub idle_clients: usize,
    /// How many clients may connect at once.
    #[arg(long, default_value_t = 64)]
    pub concurrency: usize,
    /// The relay's process id, for its CPU time and memory.
    #[arg(long)]
    pub server_pid: Option<u32>,
    /// Give up after this long, finished or not.
    #[arg(long, default_value = "5m", value_parser = parse_duration)]
    pub deadline: Duration,
    /// Write the JSON report here (default: standard output).
    #[arg(long)]
    pub out: Option<PathBuf>,
}

fn parse_duration(text: &str) -> Result<Duration, String> {
    duration::parse(text).map_err(|e| e.to_string())
}

/// Runs one worker process of a multi-process `bench` (started by it, never by hand).
pub fn run_worker() -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let outcome = runtime.block_on(bench::worker::serve());
    runtime.shutdown_background();
    outcome
}

/// Runs the scenarios; the report says how far a server got, so an incomplete run
/// is not an error. Failing to reach the server at all is.
pub fn run(args: BenchArgs) -> anyhow::Result<()> {
    let options = Options {
        servers: args.server,
        auth_keys: args.auth_key,
        cohorts: args.cohorts,
        policy_change: args.policy_change,
        nodes: args.nodes,
        concurrency: args.concurrency,
        sources: args.sources,
        fanout_rounds: args.fanout_rounds,
        steady: args.steady,
        churn: args.churn,
        churn_rate: args.churn_rate,
        server_pids: args.server_pid,
        deadline: args.deadline,
        processes: args.processes,
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let report = runtime.block_on(bench::run(options))?;
    write_report(&report, args.out.as_deref())?;
    if let Some(split) = &report.cross_replica {
        let ms = |v: Option<f64>| v.map_or("-".to_owned(), |v| format!("{v:.1} ms"));
        eprintln!(
            "fan-out over {} servers: same server p50 {}, p99 {}; other server p50 {}, p99 {}",
            split.servers,
            ms(split.same_server.median_ms),
            ms(split.same_server.p99_ms),
            ms(split.other_server.median_ms),
            ms(split.other_server.p99_ms)
        );
    }
    eprintln!(
        "{} nodes: {}",
        report.nodes,
        if report.complete() {
            "every node converged and saw every change"
        } else {
            "incomplete (see failures and notes in the report)"
        }
    );
    if let Some(cpu) = report.load_generator.cpu_secs {
        eprintln!("the load generator used {cpu:.1} CPU seconds");
    }
    // The runtime's tasks are aborted; do not wait for sockets to drain.
    runtime.shutdown_background();
    Ok(())
}

/// Runs the relay benchmark; like `run`, a run the deadline cut short is reported,
/// not an error, and a relay that refuses every login is.
pub fn run_relay(args: BenchRelayArgs) -> anyhow::Result<()> {
    let options = RelayOptions {
        url: args.url,
        cert: args.cert,
        pairs: args.pairs,
        packet_size: args.packet_size,
        warmup: args.warmup,
        window: args.window,
        idle_clients: args.idle_clients,
        concurrency: args.concurrency,
        server_pid: args.server_pid,
        deadline: args.deadline,
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let report = runtime.block_on(relay::run(options))?;
    write_report(&report, args.out.as_deref())?;
    for run in &report.throughput {
        eprintln!(
            "{} pairs: {:.0} packets/s, {:.1} MB/s",
            run.pairs, run.packets_per_sec, run.mb_per_sec
        );
    }
    for note in &report.notes {
        eprintln!("note: {note}");
    }
    runtime.shutdown_background();
    Ok(())
}

/// Writes a JSON report to `out`, or to standard output.
fn write_report(
    report: &impl serde::Serialize,
    out: Option<&std::path::Path>,
) -> anyhow::Result<()> {
    let json = serde_json::to_string_pretty(report)?;
    match out {
        Some(path) => std::fs::write(path, json + "\n")
            .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?,
        None => println!("{json}"),
    }
    Ok(())
}

//! `headway bench`: runs the load generator against a control server URL and
//! writes its JSON report.

use crate::bench::{self, Options};
use crate::types::duration;
use clap::Args;
use std::path::PathBuf;
use std::time::Duration;

/// Simulate Tailscale nodes against a control server (headway or Headscale) and
/// report join-storm convergence, fan-out latency and steady-state cost.
#[derive(Args, Debug)]
pub struct BenchArgs {
    /// The server's URL, as clients use it (http:// only).
    #[arg(long)]
    pub server: String,
    /// A reusable pre-auth key of that server.
    #[arg(long = "authkey", visible_alias = "auth-key")]
    pub auth_key: String,
    /// How many nodes to simulate.
    #[arg(long, default_value_t = 100)]
    pub nodes: usize,
    /// How many nodes may connect and register at once.
    #[arg(long, default_value_t = 64)]
    pub concurrency: usize,
    /// Source addresses 127.0.0.2… to spread connections over (loopback servers; 0 = any).
    #[arg(long, default_value_t = 16)]
    pub sources: u8,
    /// Fan-out rounds.
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
    /// The server's process id, for its CPU time and memory.
    #[arg(long)]
    pub server_pid: Option<u32>,
    /// Give up after this long, finished or not.
    #[arg(long, default_value = "10m", value_parser = parse_duration)]
    pub deadline: Duration,
    /// Write the JSON report here (default: standard output).
    #[arg(long)]
    pub out: Option<PathBuf>,
}

fn parse_duration(text: &str) -> Result<Duration, String> {
    duration::parse(text).map_err(|e| e.to_string())
}

/// Runs the scenarios; the report says how far a server got, so an incomplete run
/// is not an error. Failing to reach the server at all is.
pub fn run(args: BenchArgs) -> anyhow::Result<()> {
    let options = Options {
        server: args.server,
        auth_key: args.auth_key,
        nodes: args.nodes,
        concurrency: args.concurrency,
        sources: args.sources,
        fanout_rounds: args.fanout_rounds,
        steady: args.steady,
        churn: args.churn,
        churn_rate: args.churn_rate,
        server_pid: args.server_pid,
        deadline: args.deadline,
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let report = runtime.block_on(bench::run(options))?;
    let json = serde_json::to_string_pretty(&report)?;
    match args.out {
        Some(path) => std::fs::write(&path, json + "\n")
            .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?,
        None => println!("{json}"),
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
    // The runtime's tasks are aborted; do not wait for sockets to drain.
    runtime.shutdown_background();
    Ok(())
}

//! The load generator's report: latency distributions (median, p99, max), the
//! server's CPU time and memory from `/proc`, written as JSON.

use super::Options;
use serde::Serialize;
use std::time::Duration;

/// Everything one run measured.
#[derive(Debug, Default, Serialize)]
pub struct Report {
    pub server: String,
    pub nodes: usize,
    pub concurrency: usize,
    pub join_storm: JoinStorm,
    /// One entry per fan-out round.
    pub fan_out: Vec<Distribution>,
    pub steady: Steady,
    /// How a policy change reached the nodes (`--policy-change`).
    pub policy_change: PolicyChange,
    pub churn: Churn,
    pub server_before: Option<ServerSample>,
    pub server_after: Option<ServerSample>,
    /// Nodes that failed (connect, register, or a new session after one ended).
    pub failed: usize,
    /// Map sessions the server ended, each followed by a new one (as tailscaled does).
    pub reconnects: usize,
    /// The first few failures, verbatim.
    pub failures: Vec<String>,
    pub notes: Vec<String>,
    pub total_secs: f64,
}

#[derive(Debug, Default, Serialize)]
pub struct JoinStorm {
    pub registered: usize,
    /// Nodes whose map listed all their peers.
    pub converged: usize,
    /// From the first connection until the last node saw all its peers; `None` when
    /// not every node got there.
    pub convergence_secs: Option<f64>,
    /// Connect + handshake + register, per node.
    pub registration: Distribution,
    /// Map bytes (framed, compressed) each node received by the end of the storm,
    /// on average: what its first maps and the join deltas cost it.
    pub bytes_per_node: f64,
}

#[derive(Debug, Default, Serialize)]
pub struct PolicyChange {
    /// How long the command that changed the policy took (a CLI round trip:
    /// parse, compile, check, store).
    pub command_secs: Option<f64>,
    /// From the start of the command until every node had a new packet filter;
    /// `None` when not every node got one (or no change was asked for).
    pub all_secs: Option<f64>,
    /// Per node: from the start of the command until its new packet filter.
    pub latency: Distribution,
    /// Server CPU seconds spent on the change.
    pub cpu_secs: Option<f64>,
}

#[derive(Debug, Default, Serialize)]
pub struct Steady {
    pub window_secs: f64,
    /// Server CPU seconds (user + system) spent during the window.
    pub cpu_secs: Option<f64>,
    pub rss_kib: Option<u64>,
    /// Server RSS growth from before the run to the end of the window, per node.
    pub rss_per_node_kib: Option<f64>,
    /// Map-stream bytes each node received during the window (keep-alives).
    pub bytes_per_node: f64,
}

/// Nodes leaving and coming back at a fixed rate (a restarted tailscaled: new
/// connection, register, map stream with a new endpoint).
#[derive(Debug, Default, Serialize)]
pub struct Churn {
    pub window_secs: f64,
    pub rate_per_sec: f64,
    /// Nodes told to leave and come back.
    pub cycles: usize,
    /// Per cycle: from reconnecting until the node's new map lists all its peers.
    pub rejoin: Distribution,
    /// Per cycle: from the node's map request until every peer saw its new endpoint
    /// (peers that were away themselves, or left before it reached them, are not
    /// waited for: their own new map brings it).
    pub propagation: Distribution,
    /// Server CPU seconds during the window.
    pub cpu_secs: Option<f64>,
    pub rss_kib: Option<u64>,
}

/// Latencies in milliseconds.
#[derive(Debug, Default, Serialize, PartialEq)]
pub struct Distribution {
    pub count: usize,
    pub median_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    pub max_ms: Option<f64>,
    /// Expected samples that never arrived.
    pub missing: usize,
}

/// The server process's CPU time and resident memory at one moment.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ServerSample {
    pub cpu_secs: f64,
    pub rss_kib: u64,
}

/// Linux reports process CPU time in these ticks per second (`USER_HZ`).
const TICKS_PER_SECOND: f64 = 100.0;

impl ServerSample {
    /// Reads `/proc/<pid>/stat` and `/proc/<pid>/status`; `None` if the process is gone.
    pub fn take(pid: u32) -> Option<ServerSample> {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        // Fields after the parenthesised command name; utime and stime are 14 and 15.
        let after_name = &stat[stat.rfind(')')? + 2..];
        let fields: Vec<&str> = after_name.split_whitespace().collect();
        let utime: f64 = fields.get(11)?.parse().ok()?;
        let stime: f64 = fields.get(12)?.parse().ok()?;
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        let rss_kib = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))?
            .split_whitespace()
            .next()?
            .parse()
            .ok()?;
        Some(ServerSample {
            cpu_secs: (utime + stime) / TICKS_PER_SECOND,
            rss_kib,
        })
    }
}

impl Distribution {
    /// The distribution of `samples` (sorted in place).
    pub fn of(samples: &mut [Duration]) -> Distribution {
        samples.sort_unstable();
        let ms = |d: &Duration| d.as_secs_f64() * 1000.0;
        let at = |q: f64| {
            let rank = ((samples.len() as f64) * q).ceil() as usize;
            samples.get(rank.saturating_sub(1)).map(ms)
        };
        Distribution {
            count: samples.len(),
            median_ms: at(0.5),
            p99_ms: at(0.99),
            max_ms: samples.last().map(ms),
            missing: 0,
        }
    }

    /// One fan-out round: `samples` of `expected`.
    pub fn of_round(samples: &mut [Duration], expected: usize) -> Distribution {
        Distribution {
            missing: expected.saturating_sub(samples.len()),
            ..Distribution::of(samples)
        }
    }
}

impl Report {
    pub fn new(opts: &Options) -> Report {
        Report {
            server: opts.server.clone(),
            nodes: opts.nodes,
            concurrency: opts.concurrency,
            ..Report::default()
        }
    }

    pub fn note(&mut self, note: String) {
        self.notes.push(note);
    }

    /// Counts a node's new session; the first few reasons go into the notes.
    pub fn reconnected(&mut self, index: usize, reason: String) {
        self.reconnects += 1;
        if self.reconnects <= 5 {
            self.note(format!("node {index} opened a new map session: {reason}"));
        }
    }

    /// Whether every node converged and every fan-out round reached every peer.
    pub fn complete(&self) -> bool {
        self.join_storm.convergence_secs.is_some()
            && self.failed == 0
            && self.fan_out.iter().all(|round| round.missing == 0)
            && self.churn.rejoin.missing == 0
            && self.churn.propagation.missing == 0
            && self.policy_change.latency.missing == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_use_the_nearest_rank() {
        let mut samples: Vec<Duration> = (1..=100).rev().map(Duration::from_millis).collect();
        let d = Distribution::of(&mut samples);
        assert_eq!(d.count, 100);
        assert_eq!(d.median_ms, Some(50.0));
        assert_eq!(d.p99_ms, Some(99.0));
        assert_eq!(d.max_ms, Some(100.0));
        assert_eq!(Distribution::of(&mut []).median_ms, None);
        let round = Distribution::of_round(&mut [Duration::from_millis(3)], 4);
        assert_eq!((round.count, round.missing), (1, 3));
    }

    #[test]
    fn this_process_can_be_sampled() {
        let sample = ServerSample::take(std::process::id()).expect("our own /proc entry");
        assert!(sample.rss_kib > 0);
        assert!(sample.cpu_secs >= 0.0);
        assert!(ServerSample::take(u32::MAX).is_none());
    }
}

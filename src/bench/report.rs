//! The load generator's report: latency distributions (median, p99, max), the
//! servers' CPU time and memory from `/proc`, written as JSON.

use super::Options;
use serde::Serialize;
use std::time::Duration;

/// Everything one run measured.
#[derive(Debug, Default, Serialize)]
pub struct Report {
    /// The server URL, or the URLs of several replicas separated by commas (as
    /// `--server` takes them).
    pub server: String,
    pub nodes: usize,
    pub concurrency: usize,
    pub join_storm: JoinStorm,
    /// One entry per fan-out round.
    pub fan_out: Vec<Distribution>,
    /// With several servers: the fan-out rounds' latencies split by where the
    /// receiver holds its map session (`None` with one server).
    pub cross_replica: Option<CrossReplica>,
    pub steady: Steady,
    /// How a policy change reached the nodes (`--policy-change`).
    pub policy_change: PolicyChange,
    pub churn: Churn,
    pub server_before: Option<ServerSample>,
    pub server_after: Option<ServerSample>,
    /// What the load generator itself spent: it shares the machine with the
    /// server, so a run whose generator needs more CPU than the server says as
    /// much about the generator as about the server.
    pub load_generator: LoadGenerator,
    /// Nodes that failed (connect, register, or a new session after one ended).
    pub failed: usize,
    /// Map sessions the server ended, each followed by a new one (as tailscaled does).
    pub reconnects: usize,
    /// The first few failures, verbatim.
    pub failures: Vec<String>,
    pub notes: Vec<String>,
    pub total_secs: f64,
}

/// The load generator's own CPU seconds (user + system) and memory, summed over
/// its processes.
#[derive(Debug, Default, Serialize)]
pub struct LoadGenerator {
    /// During the join storm (from the first connection until every node
    /// converged or the run gave up).
    pub join_cpu_secs: Option<f64>,
    /// During the whole run.
    pub cpu_secs: Option<f64>,
    /// Resident memory at the end of the run.
    pub rss_kib: Option<u64>,
}

#[derive(Debug, Default, Serialize)]
pub struct JoinStorm {
    pub registered: usize,
    /// Nodes whose map listed all their peers.
    pub converged: usize,
    /// From the first connection until the last node saw all its peers; `None` when
    /// not every node got there.
    pub convergence_secs: Option<f64>,
    /// Connect + handshake + register, per node (from its first try, when it
    /// needed more than one).
    pub registration: Distribution,
    /// Tries that failed (the connection broke, or the server answered an error)
    /// and were made again a second later, as tailscaled does.
    pub retried: usize,
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

/// Fan-out across replicas. Node `i` holds its map session on server
/// `i % servers`; the announcer (node 0) sends its new endpoint to server 0. A
/// receiver on server 0 learns it from the server that took the change; one on
/// another server only once that server has read the change from the shared
/// database (headway's change feed). Every latency is from the announcement
/// until the receiver's decoded map shows the new endpoint, as in `fan_out`.
#[derive(Debug, Default, Serialize, PartialEq)]
pub struct CrossReplica {
    /// How many servers the nodes were spread over.
    pub servers: usize,
    /// Receivers on the announcer's server, all rounds pooled.
    pub same_server: Distribution,
    /// Receivers on another server, all rounds pooled: the cross-replica
    /// propagation of a change.
    pub other_server: Distribution,
    /// The same split for each round, in the order of `fan_out`.
    pub rounds: Vec<SplitDistribution>,
}

/// One fan-out round's latencies, split by the receiver's server.
#[derive(Debug, Default, Serialize, PartialEq)]
pub struct SplitDistribution {
    pub same_server: Distribution,
    pub other_server: Distribution,
}

/// What one fan-out round measured, split by the receiver's server: latencies,
/// and how many receivers each group has.
#[derive(Debug, Default)]
pub struct RoundSplit {
    pub same: Vec<Duration>,
    pub same_expected: usize,
    pub other: Vec<Duration>,
    pub other_expected: usize,
}

impl CrossReplica {
    /// Each round's split, and all rounds pooled (missing samples add up).
    pub fn of_rounds(servers: usize, rounds: Vec<RoundSplit>) -> CrossReplica {
        let mut split = Vec::with_capacity(rounds.len());
        let (mut same, mut same_expected) = (Vec::new(), 0);
        let (mut other, mut other_expected) = (Vec::new(), 0);
        for mut round in rounds {
            split.push(SplitDistribution {
                same_server: Distribution::of_round(&mut round.same, round.same_expected),
                other_server: Distribution::of_round(&mut round.other, round.other_expected),
            });
            same.append(&mut round.same);
            same_expected += round.same_expected;
            other.append(&mut round.other);
            other_expected += round.other_expected;
        }
        CrossReplica {
            servers,
            same_server: Distribution::of_round(&mut same, same_expected),
            other_server: Distribution::of_round(&mut other, other_expected),
            rounds: split,
        }
    }
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

/// The server process's CPU time and resident memory at one moment (or the sum
/// over several processes).
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

    /// The sum over `pids` (the replicas of one tailnet); `None` if there are
    /// none, or one is gone: a partial sum would read as a saving.
    pub fn take_all(pids: &[u32]) -> Option<ServerSample> {
        let mut total = ServerSample {
            cpu_secs: 0.0,
            rss_kib: 0,
        };
        for &pid in pids {
            let one = ServerSample::take(pid)?;
            total.cpu_secs += one.cpu_secs;
            total.rss_kib += one.rss_kib;
        }
        (!pids.is_empty()).then_some(total)
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
            server: opts.servers.join(","),
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
        let me = std::process::id();
        let twice = ServerSample::take_all(&[me, me]).expect("our own /proc entry");
        assert!(twice.rss_kib >= sample.rss_kib * 2 - 1024);
        assert!(ServerSample::take_all(&[me, u32::MAX]).is_none());
        assert!(ServerSample::take_all(&[]).is_none());
    }

    #[test]
    fn cross_replica_rounds_are_kept_and_pooled() {
        let ms = |v: &[u64]| v.iter().copied().map(Duration::from_millis).collect();
        let rounds = vec![
            RoundSplit {
                same: ms(&[1, 2]),
                same_expected: 2,
                other: ms(&[10]),
                other_expected: 3,
            },
            RoundSplit {
                same: ms(&[3, 4]),
                same_expected: 2,
                other: ms(&[30, 20, 40]),
                other_expected: 3,
            },
        ];
        let split = CrossReplica::of_rounds(2, rounds);
        assert_eq!(split.servers, 2);
        assert_eq!(split.rounds.len(), 2);
        assert_eq!(
            (
                split.rounds[0].other_server.count,
                split.rounds[0].other_server.missing
            ),
            (1, 2)
        );
        assert_eq!(split.rounds[1].other_server.max_ms, Some(40.0));
        assert_eq!((split.same_server.count, split.same_server.missing), (4, 0));
        assert_eq!(split.same_server.median_ms, Some(2.0));
        assert_eq!(
            (split.other_server.count, split.other_server.missing),
            (4, 2)
        );
        assert_eq!(split.other_server.median_ms, Some(20.0));
        assert_eq!(split.other_server.p99_ms, Some(40.0));
    }
}

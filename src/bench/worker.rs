//! Several load-generator processes for one run (`headway bench --processes P`):
//! the coordinator runs the nodes `i % P == 0` and the schedule, and starts P − 1
//! workers (`headway bench-worker`, hidden), each running its share of the nodes.
//! They talk in JSON lines over the worker's standard input and output: the setup
//! and the schedule's steps go in (fan-out markers, the policy change, churn
//! orders), the nodes' events and byte counts come out. Times cross as
//! nanoseconds of the machine's monotonic clock, which every process shares.

use super::{Event, Marker, Options};
use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::sync::{mpsc, watch};

/// The first line a worker reads.
#[derive(Serialize, Deserialize)]
pub(super) struct Setup {
    pub options: Options,
    /// This worker's share: nodes `i` with `i % processes == shard`.
    pub shard: usize,
    pub processes: usize,
}

/// A step of the schedule, coordinator → worker.
#[derive(Serialize, Deserialize)]
pub(super) enum ToWorker {
    Marker(Marker),
    PolicyBegan(#[serde(with = "stamp")] Instant),
    Rejoin { index: usize, port: u16 },
}

/// Worker → coordinator.
#[derive(Serialize, Deserialize)]
pub(super) enum FromWorker {
    Event(Event),
    /// Map bytes this worker's nodes received so far.
    Bytes(u64),
}

/// How often a worker reports its byte count.
pub(super) const BYTES_EVERY: Duration = Duration::from_millis(200);

/// `Instant`s as nanoseconds of `CLOCK_MONOTONIC`, the clock every process on
/// the machine reads alike.
pub(super) mod stamp {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};
    use std::sync::OnceLock;
    use std::time::{Duration, Instant};

    /// This process's `Instant` and monotonic nanoseconds at one moment.
    fn base() -> (Instant, u64) {
        static BASE: OnceLock<(Instant, u64)> = OnceLock::new();
        *BASE.get_or_init(|| {
            let now = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
            let ns = u64::try_from(now.tv_sec).unwrap_or(0) * 1_000_000_000
                + u64::try_from(now.tv_nsec).unwrap_or(0);
            (Instant::now(), ns)
        })
    }

    pub fn to_ns(at: Instant) -> u64 {
        let (instant, ns) = base();
        if at >= instant {
            ns.saturating_add(u64::try_from((at - instant).as_nanos()).unwrap_or(u64::MAX))
        } else {
            ns.saturating_sub(u64::try_from((instant - at).as_nanos()).unwrap_or(u64::MAX))
        }
    }

    pub fn from_ns(at: u64) -> Instant {
        let (instant, ns) = base();
        if at >= ns {
            instant + Duration::from_nanos(at - ns)
        } else {
            instant
                .checked_sub(Duration::from_nanos(ns - at))
                .unwrap_or(instant)
        }
    }

    pub fn serialize<S: Serializer>(at: &Instant, s: S) -> Result<S::Ok, S::Error> {
        to_ns(*at).serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Instant, D::Error> {
        u64::deserialize(d).map(from_ns)
    }
}

/// A running worker, seen from the coordinator.
pub(super) struct Worker {
    pub child: tokio::process::Child,
    pub orders: mpsc::UnboundedSender<ToWorker>,
}

impl Worker {
    /// Starts worker `shard` of `processes` on `options`: its events go to
    /// `events`, its byte counts are added to `bytes`.
    pub fn start(
        options: &Options,
        shard: usize,
        processes: usize,
        events: mpsc::UnboundedSender<Event>,
        bytes: Arc<AtomicU64>,
    ) -> Result<Worker> {
        let exe = std::env::current_exe().context("the load generator's own executable")?;
        let mut child = tokio::process::Command::new(exe)
            .arg("bench-worker")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .context("starting a load-generator worker")?;
        let mut stdin = child.stdin.take().context("the worker's standard input")?;
        let stdout = child
            .stdout
            .take()
            .context("the worker's standard output")?;
        let setup = serde_json::to_string(&Setup {
            options: options.clone(),
            shard,
            processes,
        })?;
        let (orders, mut pending) = mpsc::unbounded_channel::<ToWorker>();
        tokio::spawn(async move {
            let mut line = setup;
            loop {
                line.push('\n');
                if stdin.write_all(line.as_bytes()).await.is_err() {
                    return;
                }
                let Some(order) = pending.recv().await else {
                    return;
                };
                line = serde_json::to_string(&order).expect("orders serialise");
            }
        });
        tokio::spawn(async move {
            let mut lines = BufReader::new(stdout).lines();
            let mut counted = 0;
            while let Ok(Some(line)) = lines.next_line().await {
                match serde_json::from_str::<FromWorker>(&line) {
                    Ok(FromWorker::Event(event)) => {
                        let _ = events.send(event);
                    }
                    Ok(FromWorker::Bytes(total)) => {
                        bytes.fetch_add(total.saturating_sub(counted), Ordering::Relaxed);
                        counted = counted.max(total);
                    }
                    Err(err) => {
                        tracing::warn!(shard, %err, "a load-generator worker wrote a line that is not an event");
                    }
                }
            }
        });
        Ok(Worker { child, orders })
    }
}

/// `headway bench-worker`: reads its setup from standard input, runs its share of
/// the nodes, and follows the coordinator's orders until its input ends.
pub async fn serve() -> Result<()> {
    let mut input = BufReader::new(tokio::io::stdin()).lines();
    let setup: Setup = match input.next_line().await? {
        Some(line) => serde_json::from_str(&line).context("the worker's setup line")?,
        None => bail!("bench-worker: no setup on standard input (the coordinator starts it)"),
    };
    let options = Arc::new(setup.options);
    let targets = super::targets(&options).await?;
    let (events_tx, mut events) = mpsc::unbounded_channel();
    let (marker_tx, marker_rx) = watch::channel(Marker::default());
    let (policy_tx, policy_rx) = watch::channel(None::<Instant>);
    let bytes = Arc::new(AtomicU64::new(0));
    let nodes = super::Nodes {
        options: &options,
        targets: &targets,
        shard: setup.shard,
        processes: setup.processes,
        links: super::Links {
            events: events_tx,
            marker: marker_rx,
            policy_change: policy_rx,
            bytes: bytes.clone(),
        },
        first: None,
    };
    let (tasks, rejoin) = nodes.spawn();
    let rejoin: HashMap<usize, mpsc::UnboundedSender<u16>> = rejoin.into_iter().collect();

    // Events and byte counts out, one line each.
    let writer = tokio::spawn(async move {
        let mut out = tokio::io::BufWriter::new(tokio::io::stdout());
        let mut ticker = tokio::time::interval(BYTES_EVERY);
        let mut reported = 0;
        loop {
            let message = tokio::select! {
                event = events.recv() => match event {
                    Some(event) => FromWorker::Event(event),
                    None => break,
                },
                _ = ticker.tick() => {
                    let total = bytes.load(Ordering::Relaxed);
                    if total == reported {
                        let _ = out.flush().await;
                        continue;
                    }
                    reported = total;
                    FromWorker::Bytes(total)
                }
            };
            let mut line = serde_json::to_vec(&message).expect("events serialise");
            line.push(b'\n');
            if out.write_all(&line).await.is_err() {
                break;
            }
            if events.is_empty() && out.flush().await.is_err() {
                break;
            }
        }
    });

    // Orders in, until the coordinator closes the pipe (the run is over).
    while let Some(line) = input.next_line().await? {
        match serde_json::from_str::<ToWorker>(&line).context("an order from the coordinator")? {
            ToWorker::Marker(marker) => {
                marker_tx.send_replace(marker);
            }
            ToWorker::PolicyBegan(at) => {
                policy_tx.send_replace(Some(at));
            }
            ToWorker::Rejoin { index, port } => {
                if let Some(node) = rejoin.get(&index) {
                    let _ = node.send(port);
                }
            }
        }
    }
    drop(tasks);
    writer.abort();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instants_cross_processes_as_monotonic_nanoseconds() {
        let now = Instant::now();
        let later = now + Duration::from_millis(1500);
        let back = stamp::from_ns(stamp::to_ns(later));
        let error = if back > later {
            back - later
        } else {
            later - back
        };
        assert!(error < Duration::from_micros(1), "{error:?}");
        assert_eq!(stamp::to_ns(later) - stamp::to_ns(now), 1_500_000_000);
    }

    #[test]
    fn events_and_orders_survive_a_line_of_json() {
        let at = Instant::now();
        let line = serde_json::to_string(&FromWorker::Event(Event::Saw {
            index: 7,
            round: 2,
            at,
        }))
        .unwrap();
        assert!(!line.contains('\n'));
        match serde_json::from_str::<FromWorker>(&line).unwrap() {
            FromWorker::Event(Event::Saw {
                index,
                round,
                at: back,
            }) => {
                assert_eq!((index, round), (7, 2));
                assert!(back.max(at) - back.min(at) < Duration::from_micros(1));
            }
            _ => panic!("not the event sent: {line}"),
        }
        let order = serde_json::to_string(&ToWorker::Rejoin {
            index: 3,
            port: 30001,
        })
        .unwrap();
        assert!(matches!(
            serde_json::from_str::<ToWorker>(&order).unwrap(),
            ToWorker::Rejoin {
                index: 3,
                port: 30001
            }
        ));
    }
}

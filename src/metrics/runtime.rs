//! The tokio runtime's stable figures (workers, live tasks, the global queue,
//! the workers' busy time), read at each scrape and for `GET /debug/runtime`.
//! Knows the runtime the caller runs on; nothing of the server's tasks.

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;

/// What the runtime says about itself now.
#[derive(Clone, Debug, serde::Serialize)]
pub struct RuntimeFigures {
    /// Worker threads.
    pub workers: usize,
    /// Tasks spawned and not yet finished (map sessions, connections, timers…).
    pub alive_tasks: usize,
    /// Tasks waiting in the shared queue for a free worker: above zero for
    /// long, the workers cannot keep up.
    pub global_queue_depth: usize,
    /// Each worker's total time spent running tasks, in seconds.
    pub worker_busy_seconds: Vec<f64>,
    /// Each worker's count of times it went idle.
    pub worker_park_count: Vec<u64>,
}

impl RuntimeFigures {
    /// The figures of the runtime the caller runs on; `None` outside one.
    pub fn current() -> Option<RuntimeFigures> {
        let handle = tokio::runtime::Handle::try_current().ok()?;
        let metrics = handle.metrics();
        let workers = metrics.num_workers();
        Some(RuntimeFigures {
            workers,
            alive_tasks: metrics.num_alive_tasks(),
            global_queue_depth: metrics.global_queue_depth(),
            worker_busy_seconds: (0..workers)
                .map(|w| metrics.worker_total_busy_duration(w).as_secs_f64())
                .collect(),
            worker_park_count: (0..workers).map(|w| metrics.worker_park_count(w)).collect(),
        })
    }
}

/// Puts the runtime's figures in each scrape, under `headway_tokio_*`.
#[derive(Debug)]
pub(super) struct RuntimeCollector;

impl Collector for RuntimeCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let Some(figures) = RuntimeFigures::current() else {
            return Ok(());
        };
        let gauges = [
            (
                "tokio_workers",
                "Worker threads of the tokio runtime",
                figures.workers,
            ),
            (
                "tokio_alive_tasks",
                "Tasks spawned on the tokio runtime and not yet finished",
                figures.alive_tasks,
            ),
            (
                "tokio_global_queue_depth",
                "Tasks waiting in the tokio runtime's shared queue",
                figures.global_queue_depth,
            ),
        ];
        for (name, help, value) in gauges {
            let gauge = ConstGauge::new(i64::try_from(value).unwrap_or(i64::MAX));
            gauge.encode(encoder.encode_descriptor(name, help, None, gauge.metric_type())?)?;
        }
        let busy = ConstCounter::new(figures.worker_busy_seconds.iter().sum::<f64>());
        busy.encode(encoder.encode_descriptor(
            "tokio_worker_busy_seconds",
            "Time the tokio runtime's workers spent running tasks, summed over workers",
            None,
            busy.metric_type(),
        )?)?;
        Ok(())
    }
}

//! Owned background work: every task the server starts after start-up (timers,
//! the dispatcher, probes, upgraded Noise and DERP connections, map-session
//! clean-ups, admin-socket relays) runs under one [`Tasks`], so stopping the
//! server stops them all and waits for them: nothing outlives it.

use std::future::Future;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// The server's tasks. Clones share them.
#[derive(Clone, Debug)]
pub struct Tasks {
    tracker: TaskTracker,
    /// Cancelled when the server begins to stop.
    stop: CancellationToken,
    /// Cancelled when the grace period after that is over (a parent of `stop`).
    force: CancellationToken,
}

impl Default for Tasks {
    fn default() -> Self {
        Self::new()
    }
}

impl Tasks {
    pub fn new() -> Tasks {
        let force = CancellationToken::new();
        Tasks {
            tracker: TaskTracker::new(),
            stop: force.child_token(),
            force,
        }
    }

    /// Runs `task` until it ends or the server begins to stop.
    pub fn spawn(&self, task: impl Future<Output = ()> + Send + 'static) {
        let stop = self.stop.clone();
        self.tracker.spawn(async move {
            stop.run_until_cancelled(task).await;
        });
    }

    /// Runs `task` until it ends, or until the grace period after the server
    /// began to stop is over: for work that should finish (an HTTP exchange, a
    /// session's last-seen record).
    pub fn spawn_finishing(&self, task: impl Future<Output = ()> + Send + 'static) {
        let force = self.force.clone();
        self.tracker.spawn(async move {
            force.run_until_cancelled(task).await;
        });
    }

    /// `task`, counted among the server's tasks and ended when the server
    /// begins to stop, for work a library runs on a task of its own.
    pub fn own<T, F: Future<Output = T>>(
        &self,
        task: F,
    ) -> impl Future<Output = Option<T>> + use<T, F> {
        self.tracker
            .track_future(self.stop.clone().run_until_cancelled_owned(task))
    }

    /// Completes when the server begins to stop.
    pub async fn stopping(&self) {
        self.stop.cancelled().await;
    }

    /// Whether the server has begun to stop.
    pub fn is_stopping(&self) -> bool {
        self.stop.is_cancelled()
    }

    /// Ends every task: those started with [`Tasks::spawn`] at once, the
    /// finishing ones after at most `grace`. Returns how many were still
    /// running when the grace period ran out.
    pub async fn stop(&self, grace: Duration) -> usize {
        self.stop.cancel();
        self.tracker.close();
        let mut left = 0;
        if tokio::time::timeout(grace, self.tracker.wait())
            .await
            .is_err()
        {
            left = self.tracker.len();
            self.force.cancel();
            self.tracker.wait().await;
        }
        left
    }

    /// An executor for hyper's per-stream tasks (HTTP/2), so that a stream
    /// outliving its connection is still one of the server's tasks. With
    /// `finishing`, streams get the grace period; otherwise they end at once.
    pub fn executor(&self, finishing: bool) -> Executor {
        Executor {
            tasks: self.clone(),
            finishing,
        }
    }

    /// Tasks still running.
    pub fn len(&self) -> usize {
        self.tracker.len()
    }

    pub fn is_empty(&self) -> bool {
        self.tracker.is_empty()
    }
}

/// See [`Tasks::executor`].
#[derive(Clone, Debug)]
pub struct Executor {
    tasks: Tasks,
    finishing: bool,
}

impl<F> hyper::rt::Executor<F> for Executor
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    fn execute(&self, task: F) {
        let task = async move {
            task.await;
        };
        if self.finishing {
            self.tasks.spawn_finishing(task);
        } else {
            self.tasks.spawn(task);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    #[tokio::test]
    async fn stopping_ends_endless_tasks_at_once_and_lets_finishing_ones_finish() {
        let tasks = Tasks::new();
        let held = Arc::new(());
        let endless = held.clone();
        tasks.spawn(async move {
            let _held = endless;
            std::future::pending::<()>().await;
        });
        let finished = Arc::new(AtomicBool::new(false));
        let flag = finished.clone();
        tasks.spawn_finishing(async move {
            tokio::time::sleep(Duration::from_millis(50)).await;
            flag.store(true, Ordering::SeqCst);
        });
        let owned = tasks.own(std::future::pending::<()>());
        let owned = tokio::spawn(owned);
        assert_eq!(tasks.len(), 3);

        assert_eq!(tasks.stop(Duration::from_secs(5)).await, 0);
        assert!(
            finished.load(Ordering::SeqCst),
            "the finishing task ran to its end"
        );
        assert_eq!(Arc::strong_count(&held), 1, "the endless task was dropped");
        assert_eq!(owned.await.unwrap(), None);
        assert!(tasks.is_empty() && tasks.is_stopping());
    }

    #[tokio::test]
    async fn a_finishing_task_that_overruns_the_grace_is_ended() {
        let tasks = Tasks::new();
        tasks.spawn_finishing(std::future::pending());
        assert_eq!(tasks.stop(Duration::from_millis(20)).await, 1);
        assert!(tasks.is_empty());
    }
}

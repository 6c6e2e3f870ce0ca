//! Turns published `Change`s into map frames for the open sessions: asks
//! `plan.rs` what each session must learn, then encodes each planned message
//! once and queues the same bytes for its whole audience.

use super::Control;
use super::frame;
use super::map::to_json;
use super::plan::{self, Audience};
use crate::state::Change;
use crate::types::NodeId;
use std::collections::BTreeSet;
use std::time::{Duration, Instant};

/// While changes keep coming, batches start at least [`batch_interval`] apart:
/// whatever arrives meanwhile is merged into one batch, so a session gets one
/// delta per interval instead of one per change. A change after a quiet spell
/// is delivered at once.
pub async fn run(ctl: Control) {
    let mut last: Option<Instant> = None;
    loop {
        let mut change = ctl.state.notifier().next().await;
        let interval = batch_interval(ctl.hub.session_count());
        if let Some(due) = last.map(|at| at + interval)
            && due > Instant::now()
        {
            tokio::time::sleep_until(due.into()).await;
            if let Some(more) = ctl.state.notifier().try_take() {
                change.merge(more);
            }
        }
        last = Some(Instant::now());
        ctl.deliver(change).await;
    }
}

/// How far apart batches start under a stream of changes, given how many map
/// sessions each batch reaches: writing a batch costs each session a wake-up, an
/// HTTP/2 frame, a Noise record and a syscall (tens of microseconds), so the pace
/// slows as the tailnet grows and fan-out stays a bounded share of the CPU (50 ms
/// up to 1,000 sessions, 500 ms at 5,000, 1 s from 10,000).
pub fn batch_interval(sessions: usize) -> Duration {
    const PER_SESSION: Duration = Duration::from_micros(100);
    const MIN: Duration = Duration::from_millis(50);
    const MAX: Duration = Duration::from_secs(1);
    PER_SESSION
        .saturating_mul(u32::try_from(sessions).unwrap_or(u32::MAX))
        .clamp(MIN, MAX)
}

impl Control {
    pub async fn deliver(&self, change: Change) {
        let start = std::time::Instant::now();
        self.deliver_planned(change);
        crate::metrics::observe_since(&self.state.metrics().map.dispatch_duration, start);
    }

    fn deliver_planned(&self, change: Change) {
        self.forget_peers(change.peers_removed.iter().copied());
        let connected: BTreeSet<NodeId> = self.hub.connected().into_iter().collect();
        // The view every session was last told about, and the one they move to.
        let after = self.state.policy_view();
        let before = {
            let mut last = self.last_view.lock().unwrap_or_else(|e| e.into_inner());
            std::mem::replace(&mut *last, after.clone())
        };
        let users = self.state.users();
        let snapshot = self.state.snapshot();
        if let Some(acme) = &self.acme
            && !(change.peers_removed.is_empty() && change.peers_changed.is_empty())
        {
            let base_domain = &self.settings.base_domain;
            acme.withdraw_stale(|id| {
                let node = snapshot.get(id)?;
                Some(super::acme::challenge_name(
                    node.given_name.as_str(),
                    base_domain,
                ))
            });
        }
        let online = |id| self.state.is_online(id);
        let mut inputs = self.inputs(&snapshot, &users, &online);
        inputs.policy = after.as_deref();
        let views = self
            .session_views
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let has_view = |node: NodeId, generation: u64| views.get(&node) == Some(&generation);
        let plan = plan::plan(&inputs, before.as_deref(), &change, &connected, &has_view);

        for node in &plan.disconnect {
            self.hub.disconnect(*node);
        }
        for node in &plan.resync {
            self.hub.resync(*node);
        }
        for (message, audience) in &plan.messages {
            let bytes = frame::encode(&to_json(message));
            match audience {
                Audience::Everyone => self.hub.send_where(&bytes, |_| true),
                Audience::Except(skip) => self.hub.send_where(&bytes, |n| !skip.contains(&n)),
                Audience::Only(nodes) => {
                    for node in nodes {
                        self.hub.send(*node, &bytes);
                    }
                }
            }
        }
    }
}

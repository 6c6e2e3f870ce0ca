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

/// Runs until the server stops (a task of `state.tasks()`): waits for changes (coalesced while a
/// batch is being delivered) and delivers them.
pub async fn run(ctl: Control) {
    loop {
        let change = ctl.state.notifier().next().await;
        ctl.deliver(change).await;
    }
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

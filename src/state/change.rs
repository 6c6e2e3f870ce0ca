//! `Change`: what connected clients must learn after a mutation, and the
//! `Notifier` that coalesces published changes for the map sessions.
//!
//! Knows node and user ids only; building map responses from a change is the
//! control plane's job.

use crate::types::{NodeId, UserId};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;
use tokio::sync::Notify;

/// A description of what changed, precise enough that the sender of map
/// updates never has to guess. Merging two changes gives the union.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Change {
    /// Nodes whose own map must be re-sent (their self node changed).
    pub self_changed: BTreeSet<NodeId>,
    /// Nodes that peers must (re)learn: new or changed.
    pub peers_changed: BTreeSet<NodeId>,
    /// Nodes that peers must forget.
    pub peers_removed: BTreeSet<NodeId>,
    /// Nodes whose endpoints, home DERP or disco key changed: peers get a light
    /// patch instead of the whole node.
    pub patched: BTreeSet<NodeId>,
    /// Nodes whose online state flipped, with the new state.
    pub online: BTreeMap<NodeId, bool>,
    /// Nodes that must be told they are logged out (deleted or expired).
    pub logged_out: BTreeSet<NodeId>,
    /// Users whose profile (name, display name) changed.
    pub users_changed: BTreeSet<UserId>,
    /// Every node needs a full map (the DERP map changed).
    pub full: bool,
    /// Every node's DNS configuration changed (the extra records file).
    pub dns: bool,
    /// The access policy changed: every node's view (peers, packet filter,
    /// SSH policy, attributes) must be recomputed and the differences sent.
    pub policy: bool,
}

impl Change {
    /// Nothing for clients to learn.
    pub fn none() -> Self {
        Self::default()
    }

    /// A node joined: peers learn it, and it gets its own first map on connect.
    pub fn node_added(id: NodeId) -> Self {
        Self {
            peers_changed: [id].into(),
            self_changed: [id].into(),
            ..Self::default()
        }
    }

    /// A node's data changed: it and its peers must learn the new version.
    pub fn node_changed(id: NodeId) -> Self {
        Self::node_added(id)
    }

    /// A node was removed: peers forget it and the node itself is logged out.
    pub fn node_removed(id: NodeId) -> Self {
        Self {
            peers_removed: [id].into(),
            logged_out: [id].into(),
            ..Self::default()
        }
    }

    /// A node's key expired: it is logged out, peers learn the new expiry.
    pub fn node_expired(id: NodeId) -> Self {
        Self {
            peers_changed: [id].into(),
            self_changed: [id].into(),
            logged_out: [id].into(),
            ..Self::default()
        }
    }

    /// A new access policy is in force.
    pub fn policy() -> Self {
        Self {
            policy: true,
            ..Self::default()
        }
    }

    /// The DNS configuration every node gets changed.
    pub fn dns() -> Self {
        Self {
            dns: true,
            ..Self::default()
        }
    }

    /// A node's endpoints, home DERP or disco key changed.
    pub fn node_patched(id: NodeId) -> Self {
        Self {
            patched: [id].into(),
            ..Self::default()
        }
    }

    /// A node came online or went offline.
    pub fn node_online(id: NodeId, online: bool) -> Self {
        Self {
            online: [(id, online)].into(),
            ..Self::default()
        }
    }

    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }

    /// Folds `other` into `self`. A node both changed and removed ends up removed.
    pub fn merge(&mut self, other: Change) {
        self.self_changed.extend(other.self_changed);
        self.peers_changed.extend(other.peers_changed);
        self.peers_removed.extend(other.peers_removed);
        self.patched.extend(other.patched);
        self.online.extend(other.online);
        self.logged_out.extend(other.logged_out);
        self.users_changed.extend(other.users_changed);
        self.full |= other.full;
        self.dns |= other.dns;
        self.policy |= other.policy;
        for removed in &self.peers_removed {
            self.peers_changed.remove(removed);
            self.self_changed.remove(removed);
            self.patched.remove(removed);
            self.online.remove(removed);
        }
        // A whole node supersedes a patch of it.
        for changed in &self.peers_changed {
            self.patched.remove(changed);
        }
    }
}

/// Coalesces published changes until a consumer takes them.
///
/// Publishing never blocks and never grows without bound: pending changes merge
/// into one `Change` whose size is bounded by the number of nodes.
#[derive(Debug, Default)]
pub struct Notifier {
    // std Mutex: held only to merge or swap a value, never across an await.
    pending: Mutex<Change>,
    wake: Notify,
}

impl Notifier {
    pub fn new() -> Self {
        Self::default()
    }

    /// Queues `change` for the consumer; empty changes are dropped.
    pub fn publish(&self, change: Change) {
        if change.is_empty() {
            return;
        }
        self.pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .merge(change);
        self.wake.notify_one();
    }

    /// Takes everything published so far, or `None` when nothing is pending.
    pub fn try_take(&self) -> Option<Change> {
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        (!pending.is_empty()).then(|| std::mem::take(&mut *pending))
    }

    /// Waits until something is published, then takes all of it.
    pub async fn next(&self) -> Change {
        loop {
            if let Some(change) = self.try_take() {
                return change;
            }
            self.wake.notified().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merge_prefers_removal() {
        let mut c = Change::node_changed(NodeId(1));
        c.merge(Change::node_removed(NodeId(1)));
        assert!(c.peers_changed.is_empty());
        assert!(c.peers_removed.contains(&NodeId(1)));
    }

    #[tokio::test]
    async fn notifier_coalesces() {
        let n = Notifier::new();
        n.publish(Change::node_added(NodeId(1)));
        n.publish(Change::node_added(NodeId(2)));
        n.publish(Change::none());
        let got = n.next().await;
        assert_eq!(got.peers_changed.len(), 2);
        assert!(n.try_take().is_none());
    }
}

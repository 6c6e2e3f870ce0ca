//! Turns published `Change`s into map frames for the open sessions.
//!
//! A change to one node costs one small delta per peer, never a full map: the
//! delta is serialised and compressed once and the same bytes go to every
//! session that needs them.

use super::Control;
use super::frame;
use super::map::to_json;
use crate::state::Change;
use crate::tailcfg::MapResponse;
use crate::types::NodeId;
use std::collections::BTreeSet;

/// Runs until the notifier is dropped: waits for changes (coalesced while a
/// batch is being delivered) and delivers them.
pub async fn run(ctl: Control) {
    loop {
        let change = ctl.state.notifier().next().await;
        ctl.deliver(change).await;
    }
}

impl Control {
    pub async fn deliver(&self, change: Change) {
        self.forget_peers(change.peers_removed.iter().copied());
        let connected: BTreeSet<NodeId> = self.hub.connected().into_iter().collect();
        if connected.is_empty() {
            return;
        }
        if change.full {
            for node in connected {
                self.hub.resync(node);
            }
            return;
        }
        for removed in &change.peers_removed {
            self.hub.disconnect(*removed);
        }
        let users = self.state.users();
        let snapshot = self.state.snapshot();
        let online = |id| self.state.is_online(id);
        let inputs = self.inputs(&snapshot, &users, &online);

        if !change.peers_removed.is_empty() {
            let message = MapResponse {
                peers_removed: change.peers_removed.iter().map(|id| id.0).collect(),
                ..MapResponse::default()
            };
            self.hub
                .send_where(&frame::encode(&to_json(&message)), |_| true);
        }

        let changed: Vec<_> = change
            .peers_changed
            .iter()
            .filter_map(|id| snapshot.get(*id))
            .collect();
        if !changed.is_empty() {
            let peers: Vec<_> = changed.iter().map(|n| inputs.peer(n)).collect();
            let profiles = inputs.user_profiles(changed.iter().map(|n| &***n));
            let message = MapResponse {
                peers_changed: peers.clone(),
                user_profiles: profiles.clone(),
                ..MapResponse::default()
            };
            let shared = frame::encode(&to_json(&message));
            let changed_ids: BTreeSet<NodeId> = changed.iter().map(|n| n.id).collect();
            self.hub.send_where(&shared, |n| !changed_ids.contains(&n));
            // A changed node learns the other changed nodes, never itself as a peer.
            for node in changed_ids.iter().filter(|id| connected.contains(id)) {
                let others: Vec<_> = peers.iter().filter(|p| p.id != node.0).cloned().collect();
                if !others.is_empty() {
                    let message = MapResponse {
                        peers_changed: others,
                        user_profiles: profiles.clone(),
                        ..MapResponse::default()
                    };
                    self.hub.send(*node, &frame::encode(&to_json(&message)));
                }
            }
        }

        for id in change
            .self_changed
            .iter()
            .chain(&change.logged_out)
            .filter(|id| connected.contains(id))
        {
            if let Some(node) = snapshot.get(*id) {
                let message = MapResponse {
                    node: Some(inputs.self_node(node)),
                    user_profiles: inputs.user_profiles(std::iter::once(&**node)),
                    control_time: Some(inputs.now),
                    ..MapResponse::default()
                };
                self.hub.send(*id, &frame::encode(&to_json(&message)));
            }
        }

        let mut patches = Vec::new();
        let patched: BTreeSet<NodeId> = change
            .patched
            .iter()
            .chain(change.online.keys())
            .copied()
            .collect();
        for id in patched
            .iter()
            .filter(|id| !change.peers_changed.contains(id))
        {
            let Some(node) = snapshot.get(*id) else {
                continue;
            };
            let mut patch = inputs.patch(node);
            if !change.patched.contains(id) {
                patch = crate::tailcfg::PeerChange {
                    node_id: id.0,
                    ..Default::default()
                };
            }
            if let Some(online) = change.online.get(id) {
                let presence = inputs.presence(node, *online);
                patch.online = presence.online;
                patch.last_seen = presence.last_seen;
            }
            patches.push(patch);
        }
        if !patches.is_empty() {
            let message = MapResponse {
                peers_changed_patch: patches,
                ..MapResponse::default()
            };
            // A patch about a session's own node is an unknown peer to it, which clients ignore.
            self.hub
                .send_where(&frame::encode(&to_json(&message)), |_| true);
        }

        if !change.users_changed.is_empty() {
            let profiles: Vec<_> = change
                .users_changed
                .iter()
                .filter_map(|id| users.get(id))
                .map(super::map::profile)
                .collect();
            if !profiles.is_empty() {
                let message = MapResponse {
                    user_profiles: profiles,
                    ..MapResponse::default()
                };
                self.hub
                    .send_where(&frame::encode(&to_json(&message)), |_| true);
            }
        }
    }
}

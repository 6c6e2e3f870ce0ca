//! Presence: which nodes have open map sessions, what clients report about
//! themselves (endpoints, disco key, Hostinfo, advertised routes), logout, and
//! the timers that announce expired keys and remove departed ephemeral nodes.

use super::{Change, Error, Result, State};
use crate::types::{DiscoKey, GivenName, MachineKey, Node, NodeId, NodeKey, Timestamp};
use ipnet::IpNet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

/// What a client told us about itself in a map request; `None` = not reported.
#[derive(Clone, Debug, Default)]
pub struct Presence {
    pub endpoints: Option<Vec<SocketAddr>>,
    pub disco_key: Option<DiscoKey>,
    /// Hostinfo JSON, already merged with the previous NetInfo by the caller.
    pub hostinfo: Option<String>,
    /// `Hostinfo.Hostname` (`tailscale set --hostname`).
    pub hostname: Option<String>,
    pub advertised_routes: Option<Vec<IpNet>>,
}

/// Open sessions of one node, a generation that a reconnect bumps so that a
/// pending ephemeral removal knows it was overtaken, and whether its last health
/// probe went unanswered (cleared when it goes offline).
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct Sessions {
    pub open: u32,
    pub generation: u64,
    pub unhealthy: bool,
}

/// How often key expiries are checked.
const EXPIRY_CHECK: Duration = Duration::from_secs(5);

impl State {
    /// The node that `node_key` names, provided it belongs to `machine_key`: any
    /// machine can open a Noise session, so the key alone proves nothing.
    pub fn node_for(&self, node_key: &NodeKey, machine_key: &MachineKey) -> Result<Arc<Node>> {
        let node = self
            .snapshot()
            .by_node_key(node_key)
            .cloned()
            .ok_or_else(|| Error::NotFound("node not found".into()))?;
        if node.machine_key != *machine_key {
            return Err(Error::Unauthenticated(
                "node key in request does not match the one associated with this machine key"
                    .into(),
            ));
        }
        Ok(node)
    }

    /// A map session of `id` opened; the first one brings the node online (and a
    /// router may become primary for a prefix nobody served).
    pub fn session_opened(&self, id: NodeId) -> Change {
        let first = {
            let mut sessions = self.sessions.lock().unwrap_or_else(|e| e.into_inner());
            let entry = sessions.entry(id).or_default();
            entry.open += 1;
            entry.generation += 1;
            entry.open == 1
        };
        if !first {
            return Change::none();
        }
        self.metrics().map.connected_nodes.inc();
        self.record_session(id, true);
        self.online_flipped(id, true)
    }

    /// Node `id` came online or went offline for everyone: peers learn it, and
    /// the prefixes of a router may move.
    pub(super) fn online_flipped(&self, id: NodeId, online: bool) -> Change {
        let mut change = Change::node_online(id, online);
        change.merge(self.reelect(id));
        change
    }

    /// Hands the opening or closing of this replica's last session of `id` to
    /// the task that writes the `sessions` table (PostgreSQL), in order.
    fn record_session(&self, id: NodeId, open: bool) {
        if let Some(rows) = &self.session_rows {
            let _ = rows.send((id, open));
        }
    }

    /// A map session of `id` ended; the last one takes the node offline (another
    /// router takes over its prefixes at once), records when it was last seen, and
    /// starts the ephemeral countdown.
    pub async fn session_closed(self: &Arc<Self>, id: NodeId) -> Change {
        let generation = {
            let mut sessions = self.sessions.lock().unwrap_or_else(|e| e.into_inner());
            let Some(entry) = sessions.get_mut(&id) else {
                return Change::none();
            };
            let was_open = entry.open > 0;
            entry.open = entry.open.saturating_sub(1);
            if entry.open > 0 {
                return Change::none();
            }
            if was_open {
                self.metrics().map.connected_nodes.dec();
            }
            entry.unhealthy = false;
            entry.generation
        };
        self.record_session(id, false);
        // Still connected through another replica (it moved there): still online.
        if self.is_online_elsewhere(id) {
            return Change::none();
        }
        let mut change = self.online_flipped(id, false);
        let now = Self::now();
        match self
            .edit_presence(id, |node| node.last_seen = Some(now))
            .await
        {
            Ok((node, moved)) => {
                change.merge(moved);
                if node.is_some_and(|n| n.ephemeral) {
                    self.remove_when_still_gone(id, generation);
                }
            }
            Err(err) => tracing::warn!(node = %id, %err, "could not record last seen"),
        }
        change
    }

    /// Stores what a client reported. Empty endpoints and a zero disco key never
    /// replace known ones (a stream's copy may be stale).
    pub async fn report_presence(&self, id: NodeId, report: Presence) -> Result<Change> {
        let before = self
            .snapshot()
            .get(id)
            .cloned()
            .ok_or_else(|| Error::NotFound("node not found".into()))?;
        let mut change = Change::none();
        let endpoints = report
            .endpoints
            .filter(|e| !e.is_empty() && *e != before.endpoints);
        let disco = report
            .disco_key
            .filter(|d| !d.is_zero() && *d != before.disco_key);
        let hostinfo = report
            .hostinfo
            .filter(|h| Some(h) != before.hostinfo.as_ref());
        if endpoints.is_some() || disco.is_some() {
            change.merge(Change::node_patched(id));
        }
        let renamed = report
            .hostname
            .map(|h| h.trim().to_owned())
            .filter(|h| !h.is_empty() && h.len() <= 255 && *h != before.hostname);
        if hostinfo.is_some() || renamed.is_some() {
            change.merge(Change::node_changed(id));
        }
        if endpoints.is_some() || disco.is_some() || hostinfo.is_some() || renamed.is_some() {
            let (_, moved) = self
                .edit_presence(id, |node| {
                    // Chosen under the write lock, so a name another node took
                    // meanwhile is never picked (which would refuse the whole report).
                    if let Some(hostname) = renamed {
                        node.given_name = self.given_name_after_rename(node, &hostname);
                        node.hostname = hostname;
                    }
                    if let Some(e) = endpoints {
                        node.endpoints = e;
                    }
                    if let Some(d) = disco {
                        node.disco_key = d;
                    }
                    if let Some(h) = hostinfo {
                        node.hostinfo = Some(h);
                    }
                })
                .await?;
            change.merge(moved);
        }
        if let Some(routes) = report.advertised_routes {
            let current: std::collections::BTreeSet<IpNet> = self
                .snapshot()
                .routes(id)
                .iter()
                .filter(|r| r.advertised)
                .map(|r| r.prefix)
                .collect();
            let wanted: std::collections::BTreeSet<IpNet> =
                routes.iter().map(IpNet::trunc).collect();
            if current != wanted {
                change.merge(self.set_advertised_routes(id, &routes).await?);
            }
        }
        Ok(change)
    }

    /// The MagicDNS name of `node` once its hostname is `hostname`: a name
    /// that came from the old hostname follows the new one (as unique as at
    /// registration); a name an admin chose stays.
    fn given_name_after_rename(&self, node: &Node, hostname: &str) -> GivenName {
        let old = GivenName::sanitize(&node.hostname);
        let current = node.given_name.as_str();
        let derived = current == old.as_str()
            || current
                .strip_prefix(old.as_str())
                .and_then(|rest| rest.strip_prefix('-'))
                .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()));
        if !derived {
            return node.given_name.clone();
        }
        let snap = self.snapshot();
        GivenName::unique(&GivenName::sanitize(hostname), |n| {
            snap.given_name_taken(n, Some(node.id))
        })
    }

    /// `tailscale logout`: an ephemeral node is removed, any other node's key expires now.
    pub async fn logout(&self, id: NodeId) -> Result<Change> {
        let node = self
            .snapshot()
            .get(id)
            .cloned()
            .ok_or_else(|| Error::NotFound("node not found".into()))?;
        if node.ephemeral {
            return self.delete_node(id).await;
        }
        Ok(self.expire_node(id, None, false).await?.1)
    }

    /// Applies `edit` to node `id` as `store_node` does; `None` when the node is
    /// gone. The change names routers whose primary status moved meanwhile.
    async fn edit_presence(
        &self,
        id: NodeId,
        edit: impl FnOnce(&mut Node),
    ) -> Result<(Option<Arc<Node>>, Change)> {
        match self.store_node(id, edit).await {
            Ok((node, moved)) => Ok((Some(node), moved)),
            Err(Error::NotFound(_)) => Ok((None, Change::none())),
            Err(err) => Err(err),
        }
    }

    /// The generation of node `id`'s sessions while it is online: it changes
    /// whenever the node opens a new session.
    pub fn session_epoch(&self, id: NodeId) -> Option<u64> {
        self.sessions_generation(id)
            .filter(|s| s.open > 0)
            .map(|s| s.generation)
    }

    /// Whether router `id` answered its last health probe (or has not been
    /// probed since it came online).
    pub fn is_healthy(&self, id: NodeId) -> bool {
        self.sessions_generation(id).is_none_or(|s| !s.unhealthy)
    }

    /// Records the outcome of a round of health probes (node → answered) and
    /// re-elects primaries once for the whole round, so a failover sees every
    /// result together. Nodes that went offline meanwhile are left alone.
    pub fn set_router_health(&self, results: &[(NodeId, bool)]) -> Change {
        let mut moved = false;
        {
            let mut sessions = self.sessions.lock().unwrap_or_else(|e| e.into_inner());
            for (id, healthy) in results {
                if let Some(entry) = sessions.get_mut(id).filter(|s| s.open > 0)
                    && entry.unhealthy == *healthy
                {
                    entry.unhealthy = !healthy;
                    moved = true;
                }
            }
        }
        if !moved {
            return Change::none();
        }
        self.elect_into(|_| None).1
    }

    pub(super) fn sessions_generation(&self, id: NodeId) -> Option<Sessions> {
        self.sessions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&id)
            .copied()
    }

    /// Removes ephemeral node `id` after the inactivity timeout unless it reconnected.
    pub(super) fn remove_when_still_gone(self: &Arc<Self>, id: NodeId, generation: u64) {
        let state = Arc::clone(self);
        let timeout = self.settings.ephemeral_inactivity_timeout;
        self.tasks.spawn(async move {
            tokio::time::sleep(timeout).await;
            let current = state.sessions_generation(id).unwrap_or_default();
            if current.open > 0 || current.generation != generation || state.is_online_elsewhere(id)
            {
                return;
            }
            if state.snapshot().get(id).is_none_or(|n| !n.ephemeral) {
                return;
            }
            match state.delete_node(id).await {
                Ok(change) => {
                    tracing::info!(node = %id, "removed ephemeral node after inactivity");
                    state.notifier().publish(change);
                }
                Err(err) => tracing::warn!(node = %id, %err, "could not remove ephemeral node"),
            }
        });
    }

    /// Starts the background rules: every ephemeral node that is offline now (after a
    /// restart, all of them) gets its countdown, and key expiries are announced as
    /// they pass. Runs until the server stops.
    pub fn spawn_lifecycle(self: &Arc<Self>) {
        let offline_ephemeral: Vec<NodeId> = self
            .snapshot()
            .nodes()
            .filter(|n| n.ephemeral && !self.is_online(n.id))
            .map(|n| n.id)
            .collect();
        for id in offline_ephemeral {
            let generation = self.sessions_generation(id).unwrap_or_default().generation;
            self.remove_when_still_gone(id, generation);
        }
        let weak = Arc::downgrade(self);
        self.tasks.spawn(async move {
            let mut last: Timestamp = Self::now();
            let mut tick = tokio::time::interval(EXPIRY_CHECK);
            loop {
                tick.tick().await;
                let Some(state) = weak.upgrade() else { return };
                let now = Self::now();
                let mut change = Change::none();
                for node in state.snapshot().nodes() {
                    if node.expiry.is_some_and(|e| e > last && e <= now) {
                        change.merge(Change::node_expired(node.id));
                    }
                }
                state.notifier().publish(change);
                last = now;
            }
        });
    }
}

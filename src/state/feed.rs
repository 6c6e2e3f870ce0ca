//! Following the database's change feed (PostgreSQL shared by several replicas):
//! what another replica wrote reaches this process's memory, and through the
//! `Change` it yields, this process's clients, as a local mutation would.
//!
//! Applying a recorded write means "make memory equal the row as stored now",
//! which is idempotent and order-free: a write seen twice, or after a later one,
//! changes nothing more.

use super::ip_alloc::IpAllocator;
use super::{Change, Result, State};
use crate::config::PolicyMode;
use crate::db::{Fed, FeedEntry};
use crate::types::{Node, NodeId, Route, User, UserId};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How often the feed is read when no notification came (a lost one, or a
/// listener reconnecting).
const POLL: Duration = Duration::from_secs(1);

/// How long a missing sequence number may stay missing before the watermark
/// passes it: an identity value taken by a transaction that rolled back never
/// appears, one of a transaction still committing appears within this.
const GAP_PATIENCE: Duration = Duration::from_secs(10);

/// How often a replica refreshes its row in `replicas`.
pub const HEARTBEAT: Duration = Duration::from_secs(2);

/// How long a replica may stay silent before the others take it for dead and
/// its nodes offline.
pub const REPLICA_SILENCE: Duration = Duration::from_secs(10);

/// How often old feed entries are deleted.
const PRUNE_EVERY: Duration = Duration::from_secs(60);

/// Writes read per round.
const BATCH: u64 = 2000;

/// How long writes stay recorded (the job that prunes the feed keeps this much);
/// a replica that fell further behind reloads everything.
pub const FEED_RETENTION: Duration = Duration::from_secs(15 * 60);

/// How far the feed has been applied, and the sequence numbers skipped so far.
#[derive(Debug)]
pub struct Watermark {
    /// Every write up to this one has been applied (or given up on).
    applied: u64,
    /// Missing numbers above `applied`, with when they were first missed.
    gaps: BTreeMap<u64, Instant>,
}

impl Watermark {
    pub fn new(applied: u64) -> Self {
        Watermark {
            applied,
            gaps: BTreeMap::new(),
        }
    }

    /// Where the next read starts (after this).
    pub fn next_after(&self) -> u64 {
        self.applied
    }

    /// Moves past the entries just applied (read after `next_after`, in order):
    /// up to the first number still missing unless it has been missing longer
    /// than `GAP_PATIENCE`.
    pub fn advance(&mut self, entries: &[FeedEntry], now: Instant) {
        let Some(last) = entries.last().map(|e| e.seq) else {
            return;
        };
        let present: BTreeSet<u64> = entries.iter().map(|e| e.seq).collect();
        for missing in (self.applied + 1..last).filter(|n| !present.contains(n)) {
            self.gaps.entry(missing).or_insert(now);
        }
        self.gaps.retain(|n, _| !present.contains(n));
        self.gaps
            .retain(|_, since| now.duration_since(*since) < GAP_PATIENCE);
        self.applied = match self.gaps.keys().next() {
            Some(first_gap) => first_gap - 1,
            None => last,
        };
    }
}

impl State {
    /// Applies writes other replicas recorded (this process's own are already in
    /// memory); the change clients must learn.
    pub async fn apply_feed(&self, entries: &[FeedEntry]) -> Result<Change> {
        let mut change = Change::none();
        let mut done = BTreeSet::new();
        // Own session rows are applied too: the replica that deletes a dead one's
        // sessions learns which nodes went offline only from the feed.
        for entry in entries
            .iter()
            .filter(|e| !e.own || matches!(e.what, Fed::SessionsOf(_)))
        {
            if done.insert(entry.what) {
                change.merge(self.apply_fed(entry.what).await?);
            }
        }
        Ok(change)
    }

    async fn apply_fed(&self, what: Fed) -> Result<Change> {
        match what {
            Fed::Node(id) => self.apply_stored_node(id).await,
            Fed::RoutesOf(id) => self.apply_stored_routes(id).await,
            Fed::User(id) => self.apply_stored_user(id).await,
            Fed::Policy if self.settings.policy.mode == PolicyMode::Database => {
                Ok(self.reload_policy().await?.unwrap_or_default())
            }
            Fed::Policy => Ok(Change::none()),
            Fed::SessionsOf(id) => self.apply_stored_sessions(id).await,
        }
    }

    /// Which other replicas hold a map session of node `id` now: the node is
    /// online while any replica does.
    async fn apply_stored_sessions(&self, id: NodeId) -> Result<Change> {
        let elsewhere: BTreeSet<String> = self
            .db
            .sessions_elsewhere(Some(id))
            .await?
            .into_iter()
            .map(|(_, replica)| replica)
            .collect();
        let before = self.is_online(id);
        {
            let mut remote = self
                .remote_sessions
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            if elsewhere.is_empty() {
                remote.remove(&id);
            } else {
                remote.insert(id, elsewhere);
            }
        }
        let after = self.is_online(id);
        if before == after || self.snapshot().get(id).is_none() {
            return Ok(Change::none());
        }
        Ok(self.online_flipped(id, after))
    }

    /// Node `id` as stored now: added, replaced or removed in memory, read and
    /// installed under the same lock local node mutations take.
    pub(super) async fn apply_stored_node(&self, id: NodeId) -> Result<Change> {
        let mut alloc = self.writer.lock().await;
        let stored = self.db.get_node(id).await?;
        Ok(self.install_node(&mut alloc, id, stored))
    }

    /// Makes memory's node `id` equal `stored` (`None`: deleted). The caller holds
    /// the writer lock (`alloc`).
    fn install_node(&self, alloc: &mut IpAllocator, id: NodeId, stored: Option<Node>) -> Change {
        let current = self.snapshot().get(id).cloned();
        let mut change = match (&current, &stored) {
            (None, None) => return Change::none(),
            (Some(old), Some(new)) if **old == *new => return Change::none(),
            (Some(old), None) => {
                alloc.release(old.ipv4, old.ipv6);
                let (_, moved) = self.update_nodes(|snap| snap.without_node(id));
                self.end_sessions_of(id);
                let mut change = Change::node_removed(id);
                change.merge(moved);
                return change;
            }
            (None, Some(_)) => Change::node_added(id),
            (Some(old), Some(new)) => stored_node_change(old, new, Self::now()),
        };
        let node = stored.expect("handled above");
        if let Some(old) = &current {
            alloc.release(old.ipv4, old.ipv6);
        }
        alloc.reserve(node.ipv4, node.ipv6);
        let (_, moved) = self.update_nodes(|snap| snap.with_node(node.clone()));
        change.merge(moved);
        change
    }

    /// Node `id`'s route rows as stored now.
    async fn apply_stored_routes(&self, id: NodeId) -> Result<Change> {
        let _alloc = self.writer.lock().await;
        let routes = self.db.routes_of(id).await?;
        Ok(self.install_routes(id, routes))
    }

    /// Makes memory's routes of node `id` equal `routes`. The caller holds the
    /// writer lock.
    fn install_routes(&self, id: NodeId, routes: Vec<Route>) -> Change {
        let snap = self.snapshot();
        // Routes of a node not known yet arrive with the node's own entry, which
        // comes first; routes of a deleted node went with it.
        if snap.get(id).is_none() || snap.routes(id) == routes.as_slice() {
            return Change::none();
        }
        let (_, moved) = self.update_nodes(|snap| snap.with_routes(id, routes.clone()));
        let mut change = Change::node_changed(id);
        change.merge(moved);
        change
    }

    /// User `id` as stored now.
    async fn apply_stored_user(&self, id: UserId) -> Result<Change> {
        let changed = {
            let _users = self.users_writer.lock().await;
            let stored = self.db.get_user(id).await?;
            self.install_user(id, stored)
        };
        if !changed {
            return Ok(Change::none());
        }
        self.profile_changed(id).await
    }

    /// Makes memory's user `id` equal `stored` (`None`: deleted); whether a user
    /// that still exists changed (its profile must then reach clients). The caller
    /// holds `users_writer`.
    fn install_user(&self, id: UserId, stored: Option<User>) -> bool {
        if self.users().get(&id) == stored.as_ref() {
            return false;
        }
        let exists = stored.is_some();
        self.remember_user(id, stored);
        exists
    }

    /// Follows the feed until the server stops: wakes at every write another
    /// process records (or every second), applies the new entries and publishes
    /// what clients must learn. Does nothing on SQLite.
    pub fn spawn_feed(self: &Arc<Self>) {
        if !self.db.has_feed() {
            return;
        }
        let wake = Arc::new(tokio::sync::Notify::new());
        let weak = Arc::downgrade(self);
        let db = self.db.clone();
        let listener_wake = wake.clone();
        self.tasks.spawn(async move {
            loop {
                match db.feed_listener().await {
                    Ok(Some(mut listener)) => loop {
                        match listener.wait().await {
                            Ok(_) => listener_wake.notify_one(),
                            Err(err) => {
                                tracing::warn!(error = %err, "lost the change feed's listener; reading it every second meanwhile");
                                break;
                            }
                        }
                    },
                    Ok(None) => return,
                    Err(err) => {
                        tracing::warn!(error = %err, "cannot listen to the change feed; reading it every second meanwhile");
                    }
                }
                tokio::time::sleep(POLL).await;
            }
        });
        self.spawn_presence();
        self.spawn_verdicts();
        let start = self.feed_start;
        self.tasks.spawn(async move {
            let mut mark = Watermark::new(start);
            loop {
                let _ = tokio::time::timeout(POLL, wake.notified()).await;
                let Some(state) = weak.upgrade() else { return };
                if let Err(err) = state.follow_feed_once(&mut mark).await {
                    tracing::warn!(error = %err, "could not apply the change feed; trying again");
                }
            }
        });
    }

    /// Records local sessions in the `sessions` table, in the order they opened
    /// and closed; refreshes this replica's heartbeat and deletes replicas that
    /// stopped refreshing theirs (their nodes go offline everywhere).
    fn spawn_presence(self: &Arc<Self>) {
        let rx = self
            .session_rows_rx
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(mut rx) = rx {
            let db = self.db.clone();
            self.tasks.spawn(async move {
                while let Some((id, open)) = rx.recv().await {
                    if let Err(err) = db.set_session(id, open).await {
                        tracing::warn!(node = %id, open, error = %err, "could not record the session for other replicas");
                    }
                }
            });
        }
        let weak = Arc::downgrade(self);
        self.tasks.spawn(async move {
            let mut tick = tokio::time::interval(HEARTBEAT);
            let mut pruned: Option<Instant> = None;
            loop {
                tick.tick().await;
                let Some(state) = weak.upgrade() else { return };
                if let Err(err) = state.beat().await {
                    tracing::warn!(error = %err, "could not refresh this replica's heartbeat");
                }
                if state.is_leading().await && pruned.is_none_or(|p| p.elapsed() >= PRUNE_EVERY) {
                    pruned = Some(Instant::now());
                    if let Err(err) = state.db.prune_feed(FEED_RETENTION).await {
                        tracing::warn!(error = %err, "could not prune the change feed");
                    }
                    if let Err(err) = state.prune_waiting().await {
                        tracing::warn!(error = %err, "could not prune registrations nobody decided");
                    }
                }
            }
        });
    }

    /// One heartbeat: refresh this replica (registering again if it was reaped)
    /// and reap replicas that went silent.
    pub(super) async fn beat(&self) -> Result<()> {
        if !self
            .db
            .heartbeat(self.relay_region.get().map(String::as_str))
            .await?
        {
            // Taken for dead (a long pause): come back with every open session.
            tracing::warn!("other replicas took this one for dead; registering again");
            self.db.register_replica().await?;
            let open: Vec<NodeId> = self
                .sessions
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .iter()
                .filter(|(_, s)| s.open > 0)
                .map(|(id, _)| *id)
                .collect();
            for id in open {
                self.db.set_session(id, true).await?;
            }
        }
        if !self.lead().await? {
            return Ok(());
        }
        let reaped = self.db.reap_replicas(REPLICA_SILENCE).await?;
        if reaped > 0 {
            tracing::warn!(
                replicas = reaped,
                "replicas stopped answering; their nodes are offline now"
            );
        }
        Ok(())
    }

    /// Whether this replica runs the periodic jobs of all (reaping silent
    /// replicas, pruning the feed, removing ephemeral nodes whose replica died):
    /// keeps the lock while its connection answers, takes it when free.
    pub(super) async fn lead(&self) -> Result<bool> {
        let mut held = self.leadership.lock().await;
        if let Some(lock) = held.as_mut()
            && !lock.still_held().await
        {
            tracing::warn!("lost the periodic jobs' lock (its database connection failed)");
            *held = None;
        }
        if held.is_none()
            && let Some(lock) = self.db.try_lead().await?
        {
            tracing::info!(
                replica = self.db.replica(),
                "this replica runs the periodic jobs now (reaping silent replicas, pruning the change feed, removing ephemeral nodes whose replica died)"
            );
            *held = Some(lock);
        }
        Ok(held.is_some())
    }

    /// Whether other headway processes may share this database (PostgreSQL): the
    /// change feed and the replicas' presence run only then.
    pub fn is_replicated(&self) -> bool {
        self.db.has_feed()
    }

    /// Sets the relay region this replica announces to the others with each
    /// heartbeat (tailcfg's JSON form; the first call wins).
    pub fn announce_relay_region(&self, region: String) {
        let _ = self.relay_region.set(region);
    }

    /// The relay regions the other live replicas announced, by replica name.
    pub async fn relay_regions_elsewhere(&self) -> Result<Vec<(String, String)>> {
        let own = self.db.replica();
        Ok(self
            .db
            .relay_regions()
            .await?
            .into_iter()
            .filter(|(name, _)| name != own)
            .filter_map(|(name, region)| Some((name, region?)))
            .collect())
    }

    /// At a clean stop (PostgreSQL): this replica's sessions end for the others
    /// now, and the periodic jobs' lock is released for them.
    pub async fn leave(&self) {
        if !self.db.has_feed() {
            return;
        }
        drop(self.leadership.lock().await.take());
        if let Err(err) = self.db.leave().await {
            tracing::warn!(error = %err, "could not tell other replicas this one stopped; they will notice within 10 s");
        }
    }

    pub(super) async fn is_leading(&self) -> bool {
        self.leadership.lock().await.is_some()
    }

    /// Reads and applies what was recorded after `mark`, until nothing is left.
    async fn follow_feed_once(self: &Arc<Self>, mark: &mut Watermark) -> Result<()> {
        loop {
            let entries = self.db.feed_since(mark.next_after(), BATCH).await?;
            if let Some(first) = entries.first()
                && first.seq > mark.next_after() + 1
                && self
                    .db
                    .feed_tail()
                    .await?
                    .is_some_and(|tail| tail > mark.next_after() + 1)
            {
                // The entries this replica missed were pruned: read everything.
                tracing::warn!(
                    applied = mark.next_after(),
                    "this replica fell behind the change feed's retention; reloading every node and user"
                );
                let change = self.reload_all().await?;
                self.notifier.publish(change);
            }
            let change = self.apply_feed(&entries).await?;
            self.count_down_ephemeral_gone_elsewhere(&change).await;
            self.notifier.publish(change);
            let before = mark.next_after();
            mark.advance(&entries, Instant::now());
            // Stuck at a gap, the next read would bring the same entries again.
            if (entries.len() as u64) < BATCH || mark.next_after() == before {
                return Ok(());
            }
        }
    }

    /// Ephemeral nodes that went offline because their replica died get their
    /// countdown here, on the replica that runs the periodic jobs (the one they
    /// were on cannot).
    async fn count_down_ephemeral_gone_elsewhere(self: &Arc<Self>, change: &Change) {
        let gone: Vec<NodeId> = change
            .online
            .iter()
            .filter(|(id, online)| !**online && !self.is_online(**id))
            .filter(|(id, _)| self.snapshot().get(**id).is_some_and(|n| n.ephemeral))
            .map(|(id, _)| *id)
            .collect();
        if gone.is_empty() || !self.is_leading().await {
            return;
        }
        for id in gone {
            let generation = self.sessions_generation(id).unwrap_or_default().generation;
            self.remove_when_still_gone(id, generation);
        }
    }

    /// Every node, route and user as stored now (a replica that fell behind).
    async fn reload_all(&self) -> Result<Change> {
        let mut change = Change {
            full: true,
            ..Change::none()
        };
        {
            let mut alloc = self.writer.lock().await;
            let mut nodes: BTreeMap<NodeId, Node> = self
                .db
                .list_nodes()
                .await?
                .into_iter()
                .map(|n| (n.id, n))
                .collect();
            let mut routes: BTreeMap<NodeId, Vec<Route>> = BTreeMap::new();
            for route in self.db.list_routes().await? {
                routes.entry(route.node_id).or_default().push(route);
            }
            let known: BTreeSet<NodeId> = self.snapshot().nodes().map(|n| n.id).collect();
            let ids: BTreeSet<NodeId> = nodes.keys().copied().chain(known).collect();
            for id in ids {
                change.merge(self.install_node(&mut alloc, id, nodes.remove(&id)));
                change.merge(self.install_routes(id, routes.remove(&id).unwrap_or_default()));
            }
        }
        let changed: Vec<UserId> = {
            let _users = self.users_writer.lock().await;
            let mut users: BTreeMap<UserId, User> = self
                .db
                .list_users()
                .await?
                .into_iter()
                .map(|u| (u.id, u))
                .collect();
            let known: BTreeSet<UserId> = self.users().keys().copied().collect();
            let ids: BTreeSet<UserId> = users.keys().copied().chain(known).collect();
            ids.into_iter()
                .filter(|id| self.install_user(*id, users.remove(id)))
                .collect()
        };
        for id in changed {
            change.merge(self.profile_changed(id).await?);
        }
        change.merge(self.apply_fed(Fed::Policy).await?);
        Ok(change)
    }
}

/// What peers must learn when a node another replica wrote replaces `old`:
/// nothing for a new last-seen time, a patch for new endpoints or disco key, the
/// whole node (and a logout, if its key just expired) otherwise.
fn stored_node_change(old: &Node, new: &Node, now: crate::types::Timestamp) -> Change {
    let mut same_but_presence = old.clone();
    same_but_presence.endpoints = new.endpoints.clone();
    same_but_presence.disco_key = new.disco_key;
    same_but_presence.last_seen = new.last_seen;
    same_but_presence.updated_at = new.updated_at;
    if same_but_presence != *new {
        if new.is_expired(now) && !old.is_expired(now) {
            return Change::node_expired(new.id);
        }
        return Change::node_changed(new.id);
    }
    if old.endpoints != new.endpoints || old.disco_key != new.disco_key {
        Change::node_patched(new.id)
    } else {
        Change::none()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::db::Fed;

    fn entry(seq: u64) -> FeedEntry {
        FeedEntry {
            seq,
            own: false,
            what: Fed::Policy,
        }
    }

    #[test]
    fn the_watermark_waits_at_a_gap_and_passes_it_when_it_fills_or_grows_old() {
        let t0 = Instant::now();
        let mut mark = Watermark::new(10);
        mark.advance(&[entry(11), entry(12)], t0);
        assert_eq!(mark.next_after(), 12);
        // 14 arrives before 13 commits: stay at 12 and read 13.. again.
        mark.advance(&[entry(14), entry(15)], t0);
        assert_eq!(mark.next_after(), 12);
        mark.advance(
            &[entry(13), entry(14), entry(15)],
            t0 + Duration::from_secs(1),
        );
        assert_eq!(mark.next_after(), 15);
        // 16 never comes (a rolled-back write): passed once older than the patience.
        mark.advance(&[entry(17)], t0);
        assert_eq!(mark.next_after(), 15);
        mark.advance(&[entry(17)], t0 + GAP_PATIENCE + Duration::from_secs(1));
        assert_eq!(mark.next_after(), 17);
        // Nothing new: nothing moves.
        mark.advance(&[], t0);
        assert_eq!(mark.next_after(), 17);
    }
}

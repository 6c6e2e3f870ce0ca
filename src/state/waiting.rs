//! Interactive registrations shared by replicas (PostgreSQL): each waiting client
//! is also a row of `waiting_registrations`, so an admin on any replica can find,
//! register or reject it; the replica the client waits on reads the verdict and
//! answers it. Every function here does nothing on SQLite.

use super::register::{PendingRegistration, RegistrationId, RegistrationOutcome};
use super::{Result, State};
use crate::db::{Verdict, WaitingKey, WaitingRegistration};
use crate::types::Timestamp;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// How often a replica with clients waiting looks for verdicts made elsewhere.
pub const VERDICT_POLL: Duration = Duration::from_millis(500);

impl From<&PendingRegistration> for WaitingRegistration {
    fn from(reg: &PendingRegistration) -> Self {
        WaitingRegistration {
            id: reg.id.as_str().to_owned(),
            machine_key: reg.machine_key,
            node_key: reg.node_key,
            hostname: reg.hostname.clone(),
            hostinfo: reg.hostinfo.clone(),
            advertised_routes: reg.advertised_routes.clone(),
            requested_tags: reg.requested_tags.clone(),
            requested_expiry: reg.requested_expiry,
            created_at: reg.created_at,
        }
    }
}

/// A registration read from the database: its client waits on another replica.
fn from_shared(row: WaitingRegistration) -> Option<PendingRegistration> {
    let (tx, _) = watch::channel(None);
    Some(PendingRegistration {
        id: RegistrationId::parse(&row.id)?,
        machine_key: row.machine_key,
        node_key: row.node_key,
        hostname: row.hostname,
        hostinfo: row.hostinfo,
        advertised_routes: row.advertised_routes,
        requested_tags: row.requested_tags,
        requested_expiry: row.requested_expiry,
        created_at: row.created_at,
        local: false,
        outcome: Arc::new(tx),
    })
}

impl State {
    /// Registrations made before this are stale.
    fn waiting_since(&self) -> Timestamp {
        Self::now()
            - chrono::Duration::from_std(self.settings.registration_timeout)
                .unwrap_or(chrono::Duration::MAX)
    }

    /// Lets the other replicas see a client that waits here. A registration the
    /// database refuses is forgotten here too (its client is told the error and
    /// tries again).
    pub(super) async fn share_waiting(&self, reg: &PendingRegistration) -> Result<()> {
        if !self.db.has_feed() {
            return Ok(());
        }
        let shared = self.db.insert_waiting(&reg.into()).await;
        if shared.is_err() {
            self.pending
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&reg.id);
        }
        Ok(shared?)
    }

    /// A registration whose client waits on another replica, by id.
    pub(super) async fn find_shared(
        &self,
        id: &RegistrationId,
    ) -> Result<Option<PendingRegistration>> {
        if !self.db.has_feed() {
            return Ok(None);
        }
        let key = WaitingKey::Id(id.as_str().to_owned());
        let row = self.db.find_waiting(&key, self.waiting_since()).await?;
        Ok(row.and_then(from_shared))
    }

    /// Takes the registration `key` names away from every other admin.
    pub(super) async fn claim_shared(
        &self,
        key: &WaitingKey,
    ) -> Result<Option<PendingRegistration>> {
        let row = self.db.claim_waiting(key, self.waiting_since()).await?;
        Ok(row.and_then(from_shared))
    }

    /// A claimed registration waits again (its admission failed).
    pub(super) async fn release_shared(&self, id: &RegistrationId) {
        if self.db.has_feed()
            && let Err(err) = self.db.release_waiting(id.as_str()).await
        {
            tracing::warn!(%id, error = %err, "could not return a registration to the waiting ones");
        }
    }

    /// Records how a registration ended, for the replica its client waits on
    /// (which deletes the row once it answered; a client that waits here has
    /// heard already, and its row goes with the stale ones).
    pub(super) async fn decide_shared(&self, id: &RegistrationId, verdict: Verdict) {
        if self.db.has_feed()
            && let Err(err) = self.db.decide_waiting(id.as_str(), &verdict).await
        {
            tracing::warn!(%id, error = %err, "could not record a registration's outcome for other replicas");
        }
    }

    /// Answers the clients waiting here whose registrations an admin decided on
    /// another replica; a registered node is loaded first, so that its client's
    /// answer finds it.
    pub(super) async fn deliver_verdicts(&self) -> Result<()> {
        let ids: Vec<String> = self
            .pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            // A client still waiting here (one that moved to another replica
            // hears it there).
            .filter(|p| p.local && p.outcome.receiver_count() > 0)
            .map(|p| p.id.as_str().to_owned())
            .collect();
        for (id, verdict) in self.db.verdicts(&ids).await? {
            let outcome = match verdict {
                Verdict::Registered(node) => {
                    let change = self.apply_stored_node(node).await?;
                    self.notifier.publish(change);
                    RegistrationOutcome::Registered(node)
                }
                Verdict::Rejected(reason) => RegistrationOutcome::Rejected(reason),
            };
            let reg = RegistrationId::parse(&id).and_then(|id| {
                self.pending
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .remove(&id)
            });
            if let Some(reg) = reg {
                reg.outcome.send_replace(Some(outcome));
            }
            self.db.forget_waiting(Some(&id), Self::now()).await?;
        }
        Ok(())
    }

    /// Delivers verdicts made elsewhere while clients wait here, until the
    /// server stops (PostgreSQL only).
    pub(super) fn spawn_verdicts(self: &Arc<Self>) {
        let weak = Arc::downgrade(self);
        self.tasks.spawn(async move {
            let mut tick = tokio::time::interval(VERDICT_POLL);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let Some(state) = weak.upgrade() else { return };
                if let Err(err) = state.deliver_verdicts().await {
                    tracing::warn!(error = %err, "could not read registrations decided on other replicas");
                }
            }
        });
    }

    /// Deletes the shared registrations nobody decided in time (the periodic jobs'
    /// replica).
    pub(super) async fn prune_waiting(&self) -> Result<()> {
        self.db.forget_waiting(None, self.waiting_since()).await?;
        Ok(())
    }
}

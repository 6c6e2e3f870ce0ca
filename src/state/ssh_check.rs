//! Tailscale SSH `check` rules: the re-authentication a destination node asks
//! for before it lets a session in (a pending check an admin approves or
//! rejects, like a registration), and how long an approval lasts for a pair of
//! nodes (the rule's `checkPeriod`). Approvals live in memory and are forgotten
//! when the policy changes, as in Headscale.

use super::register::RegistrationId;
use super::{Error, Result, State};
use crate::types::{NodeId, Timestamp};
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;
use tokio::sync::watch;

/// The verdict on one check.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SshVerdict {
    Approved,
    Rejected,
}

struct PendingCheck {
    src: NodeId,
    dst: NodeId,
    created_at: Timestamp,
    outcome: watch::Sender<Option<SshVerdict>>,
}

/// Pending checks and remembered approvals.
#[derive(Default)]
pub(super) struct SshChecks {
    // std Mutexes: lookups and inserts only, never held across an await.
    pending: Mutex<HashMap<RegistrationId, PendingCheck>>,
    approved: Mutex<HashMap<(NodeId, NodeId), Timestamp>>,
}

impl State {
    /// How long an approval of a `check` rule from `src` to `dst` lasts, if a
    /// check rule covers the pair (zero: ask every time).
    pub fn ssh_check_period(&self, src: NodeId, dst: NodeId) -> Option<Duration> {
        let loaded = self.current_policy()?;
        let users: Vec<crate::types::User> = self.users().values().cloned().collect();
        let devices = super::policy::devices_of(&self.snapshot());
        crate::policy::check_period_for(
            &loaded.policy,
            crate::policy::Tailnet {
                users: &users,
                devices: &devices,
            },
            src,
            dst,
        )
    }

    /// Whether `src` → `dst` was approved within `period`.
    pub fn ssh_recently_approved(&self, src: NodeId, dst: NodeId, period: Duration) -> bool {
        if period.is_zero() {
            return false;
        }
        let approved = self.ssh.approved.lock().unwrap_or_else(|e| e.into_inner());
        approved.get(&(src, dst)).is_some_and(|at| {
            chrono::Duration::from_std(period).is_ok_and(|p| Self::now() - *at < p)
        })
    }

    /// Opens a check for `src` → `dst` that an admin approves with `auth approve`.
    pub fn begin_ssh_check(&self, src: NodeId, dst: NodeId) -> RegistrationId {
        let id = RegistrationId::generate();
        let now = Self::now();
        let (tx, _) = watch::channel(None);
        let mut pending = self.ssh.pending.lock().unwrap_or_else(|e| e.into_inner());
        let timeout = chrono::Duration::from_std(self.settings.registration_timeout)
            .unwrap_or(chrono::Duration::minutes(15));
        pending.retain(|_, c| {
            let fresh = now - c.created_at < timeout;
            if !fresh {
                c.outcome.send_replace(Some(SshVerdict::Rejected));
            }
            fresh
        });
        pending.insert(
            id.clone(),
            PendingCheck {
                src,
                dst,
                created_at: now,
                outcome: tx,
            },
        );
        id
    }

    /// Waits for the verdict on check `auth_id` (which must be for `src` → `dst`).
    /// `Ok(None)`: no such check (unknown, or expired).
    pub async fn wait_ssh_check(
        &self,
        auth_id: &str,
        src: NodeId,
        dst: NodeId,
    ) -> Result<Option<SshVerdict>> {
        let Some(id) = RegistrationId::parse(auth_id) else {
            return Err(Error::InvalidArgument("Invalid auth_id".into()));
        };
        let mut rx = {
            let pending = self.ssh.pending.lock().unwrap_or_else(|e| e.into_inner());
            let Some(check) = pending.get(&id) else {
                return Ok(None);
            };
            if (check.src, check.dst) != (src, dst) {
                return Err(Error::Unauthenticated(
                    "src/dst pair does not match auth session".into(),
                ));
            }
            check.outcome.subscribe()
        };
        let timeout = self.settings.registration_timeout;
        let verdict = tokio::time::timeout(timeout, rx.wait_for(Option::is_some)).await;
        let verdict = match verdict {
            Ok(Ok(v)) => v.unwrap_or(SshVerdict::Rejected),
            _ => SshVerdict::Rejected,
        };
        if verdict == SshVerdict::Approved {
            self.ssh
                .approved
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert((src, dst), Self::now());
        }
        Ok(Some(verdict))
    }

    /// The nodes of pending check `id`, if it is still waiting.
    pub fn pending_ssh_check(&self, id: &RegistrationId) -> Option<(NodeId, NodeId)> {
        let pending = self.ssh.pending.lock().unwrap_or_else(|e| e.into_inner());
        pending
            .get(id)
            .filter(|c| c.outcome.borrow().is_none())
            .map(|c| (c.src, c.dst))
    }

    /// Decides pending check `id`: `true` if there was one. The check stays
    /// until it expires, so a client asking again learns the same verdict.
    pub(super) fn decide_ssh_check(&self, id: &RegistrationId, verdict: SshVerdict) -> bool {
        let pending = self.ssh.pending.lock().unwrap_or_else(|e| e.into_inner());
        match pending.get(id) {
            Some(check) => {
                check.outcome.send_replace(Some(verdict));
                true
            }
            None => false,
        }
    }

    /// Forgets every remembered approval (the policy changed).
    pub(crate) fn clear_ssh_approvals(&self) {
        self.ssh
            .approved
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
    }
}

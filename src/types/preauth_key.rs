//! A pre-auth key: lets `tailscale up --authkey` join without an admin step.

use super::secret::PrefixedSecret;
use super::{PreAuthKeyId, Timestamp, UserId};

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PreAuthKey {
    pub id: PreAuthKeyId,
    /// `None` for a tagged key: its nodes belong to no user.
    pub user_id: Option<UserId>,
    /// Public part of `hskey-auth-<prefix>-<secret>`, stored in clear.
    pub prefix: String,
    /// SHA-256 of the secret part.
    pub hash: String,
    pub reusable: bool,
    pub ephemeral: bool,
    pub used: bool,
    pub tags: Vec<String>,
    pub expiration: Option<Timestamp>,
    pub created_at: Timestamp,
}

/// Why a pre-auth key cannot register a node; the text reaches the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PreAuthKeyRefusal {
    #[error("authkey expired")]
    Expired,
    #[error("authkey already used")]
    AlreadyUsed,
}

impl PreAuthKey {
    /// Whether this key may admit one more node at `now`.
    pub fn check_usable(&self, now: Timestamp) -> Result<(), PreAuthKeyRefusal> {
        if self.expiration.is_some_and(|e| e <= now) {
            return Err(PreAuthKeyRefusal::Expired);
        }
        if self.used && !self.reusable {
            return Err(PreAuthKeyRefusal::AlreadyUsed);
        }
        Ok(())
    }

    /// `hskey-auth-<prefix>-***`, the form listings show.
    pub fn masked(&self) -> String {
        PrefixedSecret::masked(PrefixedSecret::AUTH, &self.prefix)
    }
}

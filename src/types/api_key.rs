//! An admin API key: a Bearer credential for the remote gRPC listener.

use super::secret::PrefixedSecret;
use super::{ApiKeyId, Timestamp};

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApiKey {
    pub id: ApiKeyId,
    /// Public part of `hskey-api-<prefix>-<secret>`, stored in clear and unique.
    pub prefix: String,
    /// SHA-256 of the secret part.
    pub hash: String,
    pub expiration: Option<Timestamp>,
    pub created_at: Timestamp,
    pub last_seen: Option<Timestamp>,
}

impl ApiKey {
    pub fn is_expired(&self, now: Timestamp) -> bool {
        self.expiration.is_some_and(|e| e <= now)
    }

    /// `hskey-api-<prefix>-***`, the form listings show.
    pub fn masked(&self) -> String {
        PrefixedSecret::masked(PrefixedSecret::API, &self.prefix)
    }
}

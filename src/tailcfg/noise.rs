//! The two JSON bodies around the Noise transport: the `GET /key?v=N` response
//! (`OverTLSPublicKeyResponse`, protocol §1) and the early payload sent before HTTP/2
//! on `/ts2021` (`EarlyNoise`, protocol §2.6). Both use lower-case JSON tags.

use super::keys;
use crate::types::MachineKey;
use serde::{Serialize, Serializer};
use std::fmt;

/// `GET /key?v=N` response body: the server's Noise public key.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct OverTLSPublicKeyResponse {
    /// The pre-Noise key; headway has none and sends the zero key (`mkey:000…`), never `""`.
    #[serde(rename = "legacyPublicKey", with = "keys::machine")]
    pub legacy_public_key: MachineKey,
    /// The server's Noise static public key.
    #[serde(rename = "publicKey", with = "keys::machine")]
    pub public_key: MachineKey,
}

impl OverTLSPublicKeyResponse {
    /// The response for a server whose Noise public key is `public_key`.
    pub fn new(public_key: MachineKey) -> OverTLSPublicKeyResponse {
        OverTLSPublicKeyResponse {
            legacy_public_key: MachineKey::zero(),
            public_key,
        }
    }
}

/// The early payload written before HTTP/2 starts on a Noise connection.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct EarlyNoise {
    /// A fresh per-connection Curve25519 public key (`chalpub:…`).
    #[serde(rename = "nodeKeyChallenge")]
    pub node_key_challenge: ChallengeKey,
}

/// A challenge public key, written `chalpub:` + 64 hex digits. Exists only on the wire.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct ChallengeKey([u8; 32]);

impl ChallengeKey {
    pub const PREFIX: &'static str = "chalpub:";

    pub const fn from_bytes(bytes: [u8; 32]) -> ChallengeKey {
        ChallengeKey(bytes)
    }

    pub const fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl fmt::Display for ChallengeKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{}", Self::PREFIX, hex::encode(self.0))
    }
}

impl fmt::Debug for ChallengeKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl Serialize for ChallengeKey {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn key_response_sends_the_zero_legacy_key_in_full() {
        let resp = OverTLSPublicKeyResponse::new(MachineKey::from_bytes([0x11; 32]));
        assert_eq!(
            serde_json::to_value(&resp).unwrap(),
            json!({"legacyPublicKey": format!("mkey:{}", "0".repeat(64)),
                   "publicKey": format!("mkey:{}", "11".repeat(32))})
        );
    }

    #[test]
    fn early_noise_uses_the_lower_case_tag() {
        let early = EarlyNoise {
            node_key_challenge: ChallengeKey::from_bytes([0xcd; 32]),
        };
        assert_eq!(
            serde_json::to_string(&early).unwrap(),
            format!(r#"{{"nodeKeyChallenge":"chalpub:{}"}}"#, "cd".repeat(32))
        );
    }
}

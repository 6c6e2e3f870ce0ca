//! The server's Noise static key (`noise.private_key_path`): the private half for
//! the handshake and the public half clients fetch from `GET /key`.
//!
//! Knows Curve25519 arithmetic, not files: `server.rs` loads the key.

use crate::types::{MachineKey, PrivateKey};
use std::fmt;
use x25519_dalek::{PublicKey, StaticSecret};

/// The control server's long-term Noise key pair.
///
/// Debug output never shows the private half.
#[derive(Clone)]
pub struct ServerKey {
    private: [u8; 32],
    public: MachineKey,
}

impl ServerKey {
    pub fn from_private(private: &PrivateKey) -> ServerKey {
        ServerKey {
            private: *private.as_bytes(),
            public: MachineKey::from_bytes(public_of(private.as_bytes())),
        }
    }

    /// The public key clients pin from `/key` and use as the Noise `<- s`.
    pub fn public(&self) -> MachineKey {
        self.public
    }

    /// The raw private scalar, for the Noise responder.
    pub(super) fn private_bytes(&self) -> &[u8; 32] {
        &self.private
    }
}

impl fmt::Debug for ServerKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ServerKey({:?})", self.public)
    }
}

/// The X25519 public key of a private scalar (clamped as X25519 requires).
pub(super) fn public_of(private: &[u8; 32]) -> [u8; 32] {
    PublicKey::from(&StaticSecret::from(*private)).to_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn public_key_matches_the_rfc_7748_test_vector() {
        // RFC 7748 section 6.1, Alice's key pair.
        let private: PrivateKey =
            "privkey:77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a"
                .parse()
                .unwrap();
        let key = ServerKey::from_private(&private);
        assert_eq!(
            key.public().to_string(),
            "mkey:8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a"
        );
        assert!(!format!("{key:?}").contains("77076d0a"));
    }
}

//! Curve25519 key types in Tailscale's text form: a mandatory prefix
//! (`mkey:`, `nodekey:`, `discokey:`, `privkey:`) and 64 hex digits.
//!
//! Hex is written lowercase and read in either case; the all-zero key means "none".

use std::fmt;
use std::str::FromStr;

/// Why a key's text form was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyParseError {
    #[error("expected a key starting with {expected:?}, got {got:?}")]
    MissingPrefix { expected: &'static str, got: String },
    #[error("key {got:?} must have exactly 64 hex digits after {prefix:?}")]
    BadHex { prefix: &'static str, got: String },
}

macro_rules! key_type {
    ($(#[$doc:meta])* $name:ident, $prefix:literal) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name([u8; 32]);

        impl $name {
            /// The text prefix Tailscale uses for this kind of key.
            pub const PREFIX: &'static str = $prefix;

            pub const fn from_bytes(bytes: [u8; 32]) -> Self {
                Self(bytes)
            }

            pub const fn as_bytes(&self) -> &[u8; 32] {
                &self.0
            }

            /// The all-zero key, which Tailscale sends for "no key".
            pub const fn zero() -> Self {
                Self([0; 32])
            }

            pub fn is_zero(&self) -> bool {
                self.0 == [0; 32]
            }

            /// Parses 64 hex digits with no prefix (DERP headers use this form).
            pub fn from_untyped_hex(hex_digits: &str) -> Result<Self, KeyParseError> {
                let mut bytes = [0u8; 32];
                if hex_digits.len() != 64 || hex::decode_to_slice(hex_digits, &mut bytes).is_err() {
                    return Err(KeyParseError::BadHex { prefix: $prefix, got: hex_digits.to_owned() });
                }
                Ok(Self(bytes))
            }

            /// 64 lowercase hex digits with no prefix.
            pub fn untyped_hex(&self) -> String {
                hex::encode(self.0)
            }

            /// A short form for logs, as Tailscale prints it: `[abcde]`.
            pub fn short(&self) -> String {
                let hex = self.untyped_hex();
                format!("[{}]", &hex[..5])
            }
        }

        impl FromStr for $name {
            type Err = KeyParseError;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                let s = s.trim();
                let Some(rest) = s.strip_prefix($prefix) else {
                    return Err(KeyParseError::MissingPrefix { expected: $prefix, got: s.to_owned() });
                };
                Self::from_untyped_hex(rest).map_err(|_| KeyParseError::BadHex { prefix: $prefix, got: s.to_owned() })
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}{}", $prefix, hex::encode(self.0))
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}{}", $prefix, self.short())
            }
        }
    };
}

key_type!(
    /// A machine's Noise static public key (`mkey:`), also the server's control key.
    MachineKey, "mkey:"
);
key_type!(
    /// A node's WireGuard public key (`nodekey:`); rotates on re-login.
    NodeKey, "nodekey:"
);
key_type!(
    /// A node's disco public key (`discokey:`), used for NAT traversal pings.
    DiscoKey, "discokey:"
);

/// A Curve25519 private key as stored on disk (`privkey:` + 64 hex digits).
///
/// Debug output never shows the key material.
#[derive(Clone, PartialEq, Eq)]
pub struct PrivateKey([u8; 32]);

impl PrivateKey {
    pub const PREFIX: &'static str = "privkey:";

    /// A fresh key from the operating system's random source, clamped as X25519 expects.
    pub fn generate() -> Self {
        let mut bytes = crate::types::secret::random_bytes::<32>();
        bytes[0] &= 248;
        bytes[31] = (bytes[31] & 127) | 64;
        Self(bytes)
    }

    pub const fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// The on-disk text form, `privkey:<hex>`.
    pub fn to_text(&self) -> String {
        format!("{}{}", Self::PREFIX, hex::encode(self.0))
    }
}

impl FromStr for PrivateKey {
    type Err = KeyParseError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        let Some(rest) = s.strip_prefix(Self::PREFIX) else {
            return Err(KeyParseError::MissingPrefix {
                expected: Self::PREFIX,
                got: "<redacted>".into(),
            });
        };
        let mut bytes = [0u8; 32];
        if rest.len() != 64 || hex::decode_to_slice(rest, &mut bytes).is_err() {
            return Err(KeyParseError::BadHex {
                prefix: Self::PREFIX,
                got: "<redacted>".into(),
            });
        }
        Ok(Self(bytes))
    }
}

impl fmt::Debug for PrivateKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PrivateKey(<redacted>)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_key_round_trips_and_accepts_upper_case() {
        let text = format!("nodekey:{}", "AB".repeat(32));
        let key: NodeKey = text.parse().unwrap();
        assert_eq!(key.to_string(), format!("nodekey:{}", "ab".repeat(32)));
    }

    #[test]
    fn wrong_prefix_is_refused_with_the_expected_prefix() {
        let err = format!("mkey:{}", "00".repeat(32))
            .parse::<NodeKey>()
            .unwrap_err();
        assert!(err.to_string().contains("\"nodekey:\""), "{err}");
    }

    #[test]
    fn short_hex_is_refused() {
        assert!("discokey:abcd".parse::<DiscoKey>().is_err());
        assert!(
            format!("discokey:{}", "zz".repeat(32))
                .parse::<DiscoKey>()
                .is_err()
        );
    }

    #[test]
    fn private_key_debug_hides_material() {
        let key = PrivateKey::generate();
        assert!(!format!("{key:?}").contains(&hex::encode(key.as_bytes())));
        let back: PrivateKey = key.to_text().parse().unwrap();
        assert_eq!(back, key);
    }
}

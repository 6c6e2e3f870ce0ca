//! serde adapters for the domain key types (`crate::types` derives no serde), through
//! their text forms: `mkey:`/`nodekey:`/`discokey:` + 64 hex digits.
//!
//! Use as `#[serde(with = "keys::node")]` for a key that is always on the wire (a zero
//! key is written as the prefix and 64 zeros, never `""` or `null`, and `null` reads as
//! zero, as Go's decoder leaves it), or `keys::opt_node` for an `Option` where the zero
//! key and `null` both read as `None`.

use crate::types::{DiscoKey, KeyParseError, MachineKey, NodeKey};
use serde::{Deserialize, Deserializer, Serializer};
use std::fmt::Display;
use std::str::FromStr;

/// What the adapters need from a key type.
pub trait WireKey: Display + FromStr<Err = KeyParseError> + Copy {
    fn zero() -> Self;
    fn is_zero(&self) -> bool;
}

macro_rules! wire_key {
    ($ty:ty) => {
        impl WireKey for $ty {
            fn zero() -> Self {
                <$ty>::zero()
            }
            fn is_zero(&self) -> bool {
                <$ty>::is_zero(self)
            }
        }
    };
}
wire_key!(MachineKey);
wire_key!(NodeKey);
wire_key!(DiscoKey);

fn serialize_key<K: WireKey, S: Serializer>(key: &K, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(key)
}

fn deserialize_key<'de, K: WireKey, D: Deserializer<'de>>(d: D) -> Result<K, D::Error> {
    match Option::<String>::deserialize(d)? {
        None => Ok(K::zero()),
        Some(text) => text.parse().map_err(serde::de::Error::custom),
    }
}

fn serialize_opt_key<K: WireKey, S: Serializer>(key: &Option<K>, s: S) -> Result<S::Ok, S::Error> {
    match key {
        Some(key) => s.collect_str(key),
        None => s.serialize_none(),
    }
}

fn deserialize_opt_key<'de, K: WireKey, D: Deserializer<'de>>(d: D) -> Result<Option<K>, D::Error> {
    let key: K = deserialize_key(d)?;
    Ok((!key.is_zero()).then_some(key))
}

macro_rules! adapter {
    ($(#[$doc:meta])* $name:ident, $opt:ident, $ty:ty) => {
        $(#[$doc])*
        pub mod $name {
            use super::*;
            pub fn serialize<S: Serializer>(key: &$ty, s: S) -> Result<S::Ok, S::Error> {
                serialize_key(key, s)
            }
            pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<$ty, D::Error> {
                deserialize_key(d)
            }
        }

        $(#[$doc])*
        /// As an `Option`: `None` for `null`, absent (with `#[serde(default)]`) or the zero key.
        pub mod $opt {
            use super::*;
            pub fn serialize<S: Serializer>(key: &Option<$ty>, s: S) -> Result<S::Ok, S::Error> {
                serialize_opt_key(key, s)
            }
            pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<$ty>, D::Error> {
                deserialize_opt_key(d)
            }
        }
    };
}

adapter!(
    /// `mkey:` keys ([`MachineKey`]).
    machine, opt_machine, MachineKey
);
adapter!(
    /// `nodekey:` keys ([`NodeKey`]).
    node, opt_node, NodeKey
);
adapter!(
    /// `discokey:` keys ([`DiscoKey`]).
    disco, opt_disco, DiscoKey
);

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Serialize;

    #[derive(Serialize, Deserialize, Debug, PartialEq)]
    struct Keys {
        #[serde(with = "node")]
        node: NodeKey,
        #[serde(with = "machine")]
        machine: MachineKey,
        #[serde(default, with = "opt_disco", skip_serializing_if = "Option::is_none")]
        disco: Option<DiscoKey>,
    }

    #[test]
    fn keys_round_trip_through_their_text_forms() {
        let keys = Keys {
            node: NodeKey::from_bytes([0xab; 32]),
            machine: MachineKey::from_bytes([0x01; 32]),
            disco: Some(DiscoKey::from_bytes([0xfe; 32])),
        };
        let json = serde_json::to_value(&keys).unwrap();
        assert_eq!(json["node"], format!("nodekey:{}", "ab".repeat(32)));
        assert_eq!(json["machine"], format!("mkey:{}", "01".repeat(32)));
        assert_eq!(json["disco"], format!("discokey:{}", "fe".repeat(32)));
        let back: Keys = serde_json::from_value(json).unwrap();
        assert_eq!(back, keys);
    }

    #[test]
    fn zero_keys_are_written_in_full_and_read_as_none_when_optional() {
        let keys = Keys {
            node: NodeKey::zero(),
            machine: MachineKey::zero(),
            disco: None,
        };
        let json = serde_json::to_value(&keys).unwrap();
        assert_eq!(json["node"], format!("nodekey:{}", "0".repeat(64)));
        assert_eq!(json["machine"], format!("mkey:{}", "0".repeat(64)));
        assert!(json.get("disco").is_none());

        let zero_disco = format!(
            r#"{{"node":null,"machine":"mkey:{z}","disco":"discokey:{z}"}}"#,
            z = "0".repeat(64)
        );
        let back: Keys = serde_json::from_str(&zero_disco).unwrap();
        assert_eq!(back, keys);
    }

    #[test]
    fn wrong_prefix_or_empty_text_is_an_error() {
        let wrong = format!(r#"{{"node":"mkey:{}","machine":null}}"#, "0".repeat(64));
        let err = serde_json::from_str::<Keys>(&wrong).unwrap_err();
        assert!(err.to_string().contains("nodekey:"), "{err}");
        assert!(serde_json::from_str::<Keys>(r#"{"node":"","machine":null}"#).is_err());
    }
}

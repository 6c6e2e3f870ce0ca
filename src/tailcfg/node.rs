//! `tailcfg.Node`: the self node (`MapResponse.Node`) and every peer (`Peers`,
//! `PeersChanged`) in `POST /machine/map` responses (protocol §6).
//!
//! Written only. Omissions follow Go's tags, and where absent and empty differ on the
//! wire (`AllowedIPs`, `Online`, `KeyExpiry`) the field is an `Option`.

use super::hostinfo::Hostinfo;
use super::keys;
use super::wire::{self, is_zero};
use crate::types::{DiscoKey, MachineKey, NodeKey};
use chrono::{DateTime, Utc};
use ipnet::IpNet;
use serde::Serialize;
use serde_json::Value;
use std::collections::BTreeMap;
use std::net::SocketAddr;

/// Node attributes (`CapMap`): key presence is the capability; values are JSON arguments
/// (usually none, written as `[]`).
pub type CapMap = BTreeMap<String, Vec<Value>>;

/// One node as clients see it: the self node or a peer.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct Node {
    /// Positive, at most 2^53−1, never reused.
    #[serde(rename = "ID")]
    pub id: u64,
    /// A stable non-empty string; Headscale uses the decimal id.
    #[serde(rename = "StableID")]
    pub stable_id: String,
    /// The FQDN with a trailing dot (`laptop.tailnet.example.com.`). The self node's
    /// name after its first label is the client's MagicDNS suffix.
    pub name: String,
    /// The owning user's id (tagged nodes: Headscale's synthetic 2147455555).
    pub user: u64,
    #[serde(with = "keys::node")]
    pub key: NodeKey,
    /// `None` = never expires (omitted, as Go omits its zero time).
    #[serde(
        skip_serializing_if = "Option::is_none",
        serialize_with = "wire::opt_time::serialize"
    )]
    pub key_expiry: Option<DateTime<Utc>>,
    /// Omitted when zero.
    #[serde(with = "keys::machine", skip_serializing_if = "MachineKey::is_zero")]
    pub machine: MachineKey,
    /// Omitted when zero; peers with a zero disco key are unreachable (protocol §6).
    #[serde(with = "keys::disco", skip_serializing_if = "DiscoKey::is_zero")]
    pub disco_key: DiscoKey,
    /// The node's own addresses (`/32`, `/128`); always written.
    pub addresses: Vec<IpNet>,
    /// `None` = same as `addresses`; `Some(vec![])` = nothing routes to this node.
    /// Written sorted in Go's prefix order.
    #[serde(
        rename = "AllowedIPs",
        skip_serializing_if = "Option::is_none",
        serialize_with = "wire::opt_sorted_prefixes::serialize"
    )]
    pub allowed_ips: Option<Vec<IpNet>>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub endpoints: Vec<SocketAddr>,
    /// `HomeDERP`: the node's home DERP region; 0 (omitted) = none.
    #[serde(rename = "HomeDERP", skip_serializing_if = "is_zero")]
    pub home_derp: u32,
    /// The node's last Hostinfo, echoed verbatim.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hostinfo: Option<Hostinfo>,
    #[serde(
        skip_serializing_if = "Option::is_none",
        serialize_with = "wire::opt_time::serialize"
    )]
    pub created: Option<DateTime<Utc>>,
    /// A capability version; 0 (omitted) = unknown.
    #[serde(skip_serializing_if = "is_zero")]
    pub cap: u32,
    /// `tag:…` tags.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
    /// The non-exit subnet routes this node is currently primary for.
    #[serde(
        skip_serializing_if = "Vec::is_empty",
        serialize_with = "wire::sorted_prefixes::serialize"
    )]
    pub primary_routes: Vec<IpNet>,
    /// RFC 3339, or omitted (never online, or the receiver may not know).
    #[serde(
        skip_serializing_if = "Option::is_none",
        serialize_with = "wire::opt_time::serialize"
    )]
    pub last_seen: Option<DateTime<Utc>>,
    /// `true`/`false`; omitted = unknown. Send it for every peer.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub online: Option<bool>,
    /// Must be true on the self node, or the client waits for machine approval.
    #[serde(skip_serializing_if = "is_zero")]
    pub machine_authorized: bool,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub cap_map: CapMap,
    /// The key has expired (clients also derive this from `KeyExpiry`).
    #[serde(skip_serializing_if = "is_zero")]
    pub expired: bool,
}

impl Default for Node {
    fn default() -> Self {
        Node {
            id: 0,
            stable_id: String::new(),
            name: String::new(),
            user: 0,
            key: NodeKey::zero(),
            key_expiry: None,
            machine: MachineKey::zero(),
            disco_key: DiscoKey::zero(),
            addresses: Vec::new(),
            allowed_ips: None,
            endpoints: Vec::new(),
            home_derp: 0,
            hostinfo: None,
            created: None,
            cap: 0,
            tags: Vec::new(),
            primary_routes: Vec::new(),
            last_seen: None,
            online: None,
            machine_authorized: false,
            cap_map: CapMap::new(),
            expired: false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_bare_node_writes_only_the_always_present_fields() {
        let node = Node {
            id: 3,
            stable_id: "3".into(),
            name: "c.tailnet.example.com.".into(),
            user: 1,
            ..Node::default()
        };
        assert_eq!(
            serde_json::to_value(&node).unwrap(),
            json!({"ID": 3, "StableID": "3", "Name": "c.tailnet.example.com.", "User": 1,
                   "Key": format!("nodekey:{}", "0".repeat(64)), "Addresses": []})
        );
    }

    #[test]
    fn allowed_ips_absent_and_empty_differ() {
        let mut node = Node::default();
        assert!(
            serde_json::to_value(&node)
                .unwrap()
                .get("AllowedIPs")
                .is_none()
        );
        node.allowed_ips = Some(vec![]);
        assert_eq!(
            serde_json::to_value(&node).unwrap()["AllowedIPs"],
            json!([])
        );
    }

    #[test]
    fn online_false_is_written() {
        let node = Node {
            online: Some(false),
            ..Node::default()
        };
        assert_eq!(serde_json::to_value(&node).unwrap()["Online"], json!(false));
    }
}

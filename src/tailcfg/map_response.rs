//! `POST /machine/map` response messages: `MapResponse`, `PeerChange`, `UserProfile`,
//! `Debug` (protocol §5.3).
//!
//! An absent field means "unchanged" to the client, so everything is omitted unless
//! set. Where that is not enough the type says so: an empty `Peers` is never written
//! (the client would read it as "no change", not "no peers"; send `PeersRemoved`), and
//! the packet filter goes in `PacketFilters`, where `{"base": []}` can say "deny all".

use super::derp_map::DERPMap;
use super::dns::DNSConfig;
use super::filter::{FilterRule, SSHPolicy};
use super::keys;
use super::node::{CapMap, Node};
use super::wire::{self, is_zero};
use crate::types::{DiscoKey, NodeKey};
use chrono::{DateTime, Utc};
use serde::Serialize;
use std::collections::BTreeMap;
use std::net::SocketAddr;

/// The `PacketFilters` key headway (like Headscale) puts its whole filter under.
pub const BASE_FILTER: &str = "base";

/// One message of the map stream (a full map, a delta, or a keep-alive).
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct MapResponse {
    /// `{"KeepAlive":true}` alone is the keep-alive message.
    #[serde(skip_serializing_if = "is_zero")]
    pub keep_alive: bool,
    /// A URL the client opens once in a browser.
    #[serde(rename = "PopBrowserURL", skip_serializing_if = "String::is_empty")]
    pub pop_browser_url: String,
    /// The self node; required in the first message of a stream.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node: Option<Node>,
    #[serde(rename = "DERPMap", skip_serializing_if = "Option::is_none")]
    pub derp_map: Option<DERPMap>,
    /// Every peer, sorted by id: replaces the client's peer set. Never written empty
    /// (the client ignores an empty list); and when non-empty the client ignores every
    /// other peer field of the same message.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub peers: Vec<Node>,
    /// Whole peers added or replaced, sorted by id.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub peers_changed: Vec<Node>,
    /// Ids of peers to drop; unknown ids are ignored.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub peers_removed: Vec<u64>,
    /// Small changes to known peers.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub peers_changed_patch: Vec<PeerChange>,
    /// Peer id → true (`LastSeen` = client's now) or false (`LastSeen` cleared).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub peer_seen_change: BTreeMap<u64, bool>,
    /// Peer id → `Online`.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub online_change: BTreeMap<u64, bool>,
    #[serde(rename = "DNSConfig", skip_serializing_if = "Option::is_none")]
    pub dns_config: Option<DNSConfig>,
    /// The tailnet's display name ("" = unchanged).
    #[serde(skip_serializing_if = "String::is_empty")]
    pub domain: String,
    /// Named filter chunks, concatenated in key order; a `None` chunk deletes that key.
    /// See [`MapResponse::base_filter`].
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub packet_filters: BTreeMap<String, Option<Vec<FilterRule>>>,
    /// New or changed profiles of every user the self node and its peers reference.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub user_profiles: Vec<UserProfile>,
    /// Control-side health warnings shown by the client.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub health: Vec<String>,
    #[serde(rename = "SSHPolicy", skip_serializing_if = "Option::is_none")]
    pub ssh_policy: Option<SSHPolicy>,
    /// The server's clock, so clients can judge peers' `KeyExpiry` despite skew.
    #[serde(
        skip_serializing_if = "Option::is_none",
        serialize_with = "wire::opt_time::serialize"
    )]
    pub control_time: Option<DateTime<Utc>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub debug: Option<Debug>,
    /// Asks the client to prove its session is alive by requesting a URL.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ping_request: Option<PingRequest>,
}

/// `MapResponse.PingRequest` with no `Types`: the client sends `HEAD` to `URL`
/// (over its Noise connection when `URLIsNoise`), once per distinct URL. Answered
/// at `/machine/ping-response`.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct PingRequest {
    #[serde(rename = "URL")]
    pub url: String,
    #[serde(rename = "URLIsNoise", skip_serializing_if = "is_zero")]
    pub url_is_noise: bool,
}

impl MapResponse {
    /// The keep-alive message, `{"KeepAlive":true}` (v1.102 caches its exact bytes).
    pub fn keep_alive() -> MapResponse {
        MapResponse {
            keep_alive: true,
            ..MapResponse::default()
        }
    }

    /// A keep-alive that carries `ping`: the client answers it without
    /// rebuilding its network map.
    pub fn ping(ping: PingRequest) -> MapResponse {
        MapResponse {
            ping_request: Some(ping),
            ..MapResponse::keep_alive()
        }
    }

    /// `PacketFilters` holding the whole filter under `"base"`. An empty `rules`
    /// writes `{"base":[]}`: deny all inbound.
    pub fn base_filter(rules: Vec<FilterRule>) -> BTreeMap<String, Option<Vec<FilterRule>>> {
        BTreeMap::from([(BASE_FILTER.to_owned(), Some(rules))])
    }
}

/// `MapResponse.Debug`.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct Debug {
    /// Stops the client shipping logs to Tailscale Inc. (`logtail.enabled: false`).
    #[serde(skip_serializing_if = "is_zero")]
    pub disable_log_tail: bool,
}

/// A user as clients display it (`tailscale status`, WhoIs).
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct UserProfile {
    #[serde(rename = "ID")]
    pub id: u64,
    pub login_name: String,
    pub display_name: String,
    #[serde(rename = "ProfilePicURL", skip_serializing_if = "String::is_empty")]
    pub profile_pic_url: String,
}

/// A light patch of one known peer (`PeersChangedPatch`); `None` fields are unchanged.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct PeerChange {
    #[serde(rename = "NodeID")]
    pub node_id: u64,
    /// Sets the peer's `HomeDERP`; 0 (omitted) = unchanged.
    #[serde(rename = "DERPRegion", skip_serializing_if = "is_zero")]
    pub derp_region: u32,
    #[serde(skip_serializing_if = "is_zero")]
    pub cap: u32,
    /// Replaces the whole `CapMap`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cap_map: Option<CapMap>,
    /// Replaces the endpoint list; `Some(vec![])` clears it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub endpoints: Option<Vec<SocketAddr>>,
    #[serde(with = "keys::opt_node", skip_serializing_if = "Option::is_none")]
    pub key: Option<NodeKey>,
    #[serde(with = "keys::opt_disco", skip_serializing_if = "Option::is_none")]
    pub disco_key: Option<DiscoKey>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub online: Option<bool>,
    #[serde(
        skip_serializing_if = "Option::is_none",
        serialize_with = "wire::opt_time::serialize"
    )]
    pub last_seen: Option<DateTime<Utc>>,
    #[serde(
        skip_serializing_if = "Option::is_none",
        serialize_with = "wire::opt_time::serialize"
    )]
    pub key_expiry: Option<DateTime<Utc>>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tailcfg::tests::fixture;
    use crate::tailcfg::{DERPNode, DERPRegion, Hostinfo, NetPortRange, PortRange, Resolver};
    use crate::types::MachineKey;
    use chrono::TimeZone;
    use serde_json::{Value, json};

    fn time(secs: i64) -> DateTime<Utc> {
        Utc.timestamp_opt(secs, 0).unwrap()
    }

    fn node(id: u64, key_byte: u8) -> Node {
        Node {
            id,
            stable_id: id.to_string(),
            name: format!("node-{id}.tailnet.example.com."),
            user: 1,
            key: NodeKey::from_bytes([key_byte; 32]),
            machine: MachineKey::from_bytes([key_byte + 1; 32]),
            disco_key: DiscoKey::from_bytes([key_byte + 2; 32]),
            addresses: vec![
                format!("100.64.0.{id}/32").parse().unwrap(),
                format!("fd7a:115c:a1e0::{id}/128").parse().unwrap(),
            ],
            created: Some(time(1_780_000_000)),
            machine_authorized: true,
            ..Node::default()
        }
    }

    fn full_map() -> MapResponse {
        let mut self_node = node(1, 0x10);
        self_node.allowed_ips = Some(vec![
            "fd7a:115c:a1e0::1/128".parse().unwrap(),
            "100.64.0.1/32".parse().unwrap(),
        ]);
        self_node.endpoints = vec!["192.0.2.10:41641".parse().unwrap()];
        self_node.home_derp = 900;
        self_node.hostinfo = Some(
            Hostinfo::from_json(r#"{"Hostname":"laptop","OS":"linux","NewField":1}"#).unwrap(),
        );
        self_node.cap = 142;
        self_node.online = Some(true);
        self_node.cap_map = CapMap::from([
            ("https://tailscale.com/cap/is-admin".to_owned(), vec![]),
            ("default-auto-update".to_owned(), vec![json!(false)]),
        ]);

        let mut online_peer = node(2, 0x20);
        online_peer.online = Some(true);
        online_peer.key_expiry = Some(time(1_900_000_000));
        online_peer.primary_routes = vec!["192.168.100.0/24".parse().unwrap()];
        online_peer.allowed_ips = Some(vec![
            "192.168.100.0/24".parse().unwrap(),
            "100.64.0.2/32".parse().unwrap(),
            "fd7a:115c:a1e0::2/128".parse().unwrap(),
        ]);
        let mut offline_peer = node(3, 0x30);
        offline_peer.online = Some(false);
        offline_peer.last_seen = Some(time(1_790_000_000));
        offline_peer.tags = vec!["tag:server".into()];

        let mut derp = DERPMap::default();
        derp.regions.insert(
            900,
            DERPRegion {
                region_id: 900,
                region_code: "hw".into(),
                region_name: "headway".into(),
                nodes: vec![DERPNode {
                    name: "900a".into(),
                    region_id: 900,
                    host_name: "derp.example.com".into(),
                    ..DERPNode::default()
                }],
                ..DERPRegion::default()
            },
        );

        MapResponse {
            node: Some(self_node),
            derp_map: Some(derp),
            peers: vec![online_peer, offline_peer],
            dns_config: Some(DNSConfig {
                resolvers: vec![Resolver::new("1.1.1.1")],
                routes: BTreeMap::from([("tailnet.example.com".to_owned(), vec![])]),
                domains: vec!["tailnet.example.com".into()],
                proxied: true,
                ..DNSConfig::default()
            }),
            domain: "hs.example.com".into(),
            packet_filters: MapResponse::base_filter(vec![FilterRule {
                src_ips: ["100.64.0.0/10".to_owned(), "fd7a:115c:a1e0::/48".to_owned()].into(),
                dst_ports: vec![NetPortRange {
                    ip: "*".into(),
                    ports: PortRange::single(22),
                }],
                ..FilterRule::default()
            }]),
            user_profiles: vec![UserProfile {
                id: 1,
                login_name: "alice".into(),
                display_name: "alice".into(),
                ..UserProfile::default()
            }],
            ssh_policy: Some(SSHPolicy::default()),
            control_time: Some(time(1_800_000_000)),
            debug: Some(Debug {
                disable_log_tail: true,
            }),
            ..MapResponse::default()
        }
    }

    #[test]
    fn full_map_matches_the_expected_json() {
        let actual = serde_json::to_value(full_map()).unwrap();
        let expected: Value = serde_json::from_str(&fixture("map_response_full.json")).unwrap();
        assert_eq!(actual, expected);
    }

    #[test]
    fn full_map_field_names_and_omissions() {
        let v = serde_json::to_value(full_map()).unwrap();
        let top: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
        assert_eq!(
            top,
            [
                "ControlTime",
                "DERPMap",
                "DNSConfig",
                "Debug",
                "Domain",
                "Node",
                "PacketFilters",
                "Peers",
                "SSHPolicy",
                "UserProfiles"
            ]
        );
        let self_node = &v["Node"];
        assert!(self_node.get("KeyExpiry").is_none(), "never expires");
        assert!(self_node.get("LastSeen").is_none());
        assert_eq!(
            self_node["AllowedIPs"],
            json!(["100.64.0.1/32", "fd7a:115c:a1e0::1/128"])
        );
        assert_eq!(
            self_node["Hostinfo"]["NewField"], 1,
            "Hostinfo echoed verbatim"
        );
        let peers = v["Peers"].as_array().unwrap();
        assert_eq!(peers[0]["Online"], true);
        assert!(peers[0].get("LastSeen").is_none());
        assert_eq!(peers[0]["KeyExpiry"], "2030-03-17T17:46:40Z");
        assert_eq!(
            peers[0]["AllowedIPs"],
            json!(["100.64.0.2/32", "192.168.100.0/24", "fd7a:115c:a1e0::2/128"])
        );
        assert_eq!(peers[1]["Online"], false);
        assert_eq!(peers[1]["LastSeen"], "2026-09-21T14:13:20Z");
        assert!(
            peers[1].get("AllowedIPs").is_none(),
            "absent = same as Addresses"
        );
        for forbidden in ["SrcBits", "Bits", "PacketFilter", "DERP"] {
            assert!(
                !v.to_string().contains(&format!("\"{forbidden}\"")),
                "{forbidden}"
            );
        }
    }

    #[test]
    fn empty_peers_is_never_written() {
        let delta = MapResponse {
            peers_removed: vec![2, 3],
            ..MapResponse::default()
        };
        assert_eq!(
            serde_json::to_value(&delta).unwrap(),
            json!({"PeersRemoved": [2, 3]})
        );
        let mut full = full_map();
        full.peers.clear();
        assert!(serde_json::to_value(&full).unwrap().get("Peers").is_none());
    }

    #[test]
    fn deny_all_filter_is_an_empty_base_list() {
        let resp = MapResponse {
            packet_filters: MapResponse::base_filter(vec![]),
            ..MapResponse::default()
        };
        assert_eq!(
            serde_json::to_value(&resp).unwrap(),
            json!({"PacketFilters": {"base": []}})
        );
    }

    #[test]
    fn keep_alive_is_exactly_the_bytes_clients_cache() {
        assert_eq!(
            serde_json::to_string(&MapResponse::keep_alive()).unwrap(),
            r#"{"KeepAlive":true}"#
        );
    }

    #[test]
    fn online_and_seen_changes_use_decimal_string_keys() {
        let resp = MapResponse {
            online_change: BTreeMap::from([(5, true), (12, false)]),
            peer_seen_change: BTreeMap::from([(7, true)]),
            ..MapResponse::default()
        };
        assert_eq!(
            serde_json::to_value(&resp).unwrap(),
            json!({"PeerSeenChange": {"7": true}, "OnlineChange": {"5": true, "12": false}})
        );
    }

    #[test]
    fn peer_change_writes_only_what_changed() {
        let patch = PeerChange {
            node_id: 5,
            derp_region: 900,
            endpoints: Some(vec![]),
            disco_key: Some(DiscoKey::from_bytes([0xaa; 32])),
            online: Some(false),
            last_seen: Some(time(1_800_000_000)),
            ..PeerChange::default()
        };
        assert_eq!(
            serde_json::to_value(&patch).unwrap(),
            json!({"NodeID": 5, "DERPRegion": 900, "Endpoints": [],
                   "DiscoKey": format!("discokey:{}", "aa".repeat(32)),
                   "Online": false, "LastSeen": "2027-01-15T08:00:00Z"})
        );
    }
}

//! `DERPMap`: the relay regions sent in `MapResponse.DERPMap` of `POST /machine/map`
//! (protocol §8), and read from `derp.urls` (Tailscale's JSON) and `derp.paths`.
//!
//! Read and written. Every field also accepts the all-lower-case name, because
//! Headscale's YAML files spell Go's field names that way (`regionid`, `hostname`),
//! and Go's own JSON decoder ignores case.

use super::wire::{is_zero, null_as_default};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The relay map: every region a client may use, by region id.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct DERPMap {
    /// Optional scoring hints; omitted when `None`.
    #[serde(default, alias = "homeparams", skip_serializing_if = "Option::is_none")]
    pub home_params: Option<DERPHomeParams>,
    /// Always written (`{}` when empty: an absent `Regions` would mean "unchanged").
    #[serde(default, alias = "regions", deserialize_with = "null_as_default")]
    pub regions: BTreeMap<u32, DERPRegion>,
    /// A server-side merge hint; clients do not act on it.
    #[serde(
        rename = "omitDefaultRegions",
        alias = "omitdefaultregions",
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "is_zero"
    )]
    pub omit_default_regions: bool,
}

/// `DERPMap.HomeParams`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct DERPHomeParams {
    /// Multipliers on measured latency per region id (below 1 prefers a region).
    #[serde(
        default,
        alias = "regionscore",
        deserialize_with = "null_as_default",
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    pub region_score: BTreeMap<u32, f64>,
}

/// One relay region: a set of equivalent relay nodes, in priority order.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct DERPRegion {
    /// 900–999 are reserved for self-hosted relays.
    #[serde(
        rename = "RegionID",
        alias = "regionid",
        default,
        deserialize_with = "null_as_default"
    )]
    pub region_id: u32,
    /// Short code shown by `tailscale status` (`relay "thk"`).
    #[serde(alias = "regioncode", default, deserialize_with = "null_as_default")]
    pub region_code: String,
    /// Display name.
    #[serde(alias = "regionname", default, deserialize_with = "null_as_default")]
    pub region_name: String,
    #[serde(
        alias = "latitude",
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "is_zero"
    )]
    pub latitude: f64,
    #[serde(
        alias = "longitude",
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "is_zero"
    )]
    pub longitude: f64,
    /// Deprecated: clients should not pick this region as home.
    #[serde(
        alias = "avoid",
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "is_zero"
    )]
    pub avoid: bool,
    /// Neither measured nor chosen as home (capability version 115).
    #[serde(
        alias = "nomeasurenohome",
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "is_zero"
    )]
    pub no_measure_no_home: bool,
    /// TLS goes to the first node that answers; STUN to the first one or two.
    #[serde(alias = "nodes", default, deserialize_with = "null_as_default")]
    pub nodes: Vec<DERPNode>,
}

/// One relay server (or STUN-only server) of a region.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct DERPNode {
    /// Unique within the map, e.g. `900a`.
    #[serde(alias = "name", default, deserialize_with = "null_as_default")]
    pub name: String,
    #[serde(
        rename = "RegionID",
        alias = "regionid",
        default,
        deserialize_with = "null_as_default"
    )]
    pub region_id: u32,
    /// DNS name (or IP) for TLS; also the certificate name unless `cert_name` is set.
    #[serde(alias = "hostname", default, deserialize_with = "null_as_default")]
    pub host_name: String,
    /// Certificate name to expect, or `sha256-raw:<hex>` to pin a self-signed certificate.
    #[serde(
        alias = "certname",
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "String::is_empty"
    )]
    pub cert_name: String,
    /// IPv4 literal to dial instead of resolving `host_name`; `none` disables IPv4.
    #[serde(
        rename = "IPv4",
        alias = "ipv4",
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "String::is_empty"
    )]
    pub ipv4: String,
    /// IPv6 literal, or `none`.
    #[serde(
        rename = "IPv6",
        alias = "ipv6",
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "String::is_empty"
    )]
    pub ipv6: String,
    /// 0 = 3478; -1 = no STUN.
    #[serde(
        rename = "STUNPort",
        alias = "stunport",
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "is_zero"
    )]
    pub stun_port: i32,
    #[serde(
        rename = "STUNOnly",
        alias = "stunonly",
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "is_zero"
    )]
    pub stun_only: bool,
    /// 0 = 443.
    #[serde(
        rename = "DERPPort",
        alias = "derpport",
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "is_zero"
    )]
    pub derp_port: u16,
    /// Skip TLS verification (IP-only relays without a certificate).
    #[serde(
        alias = "insecurefortests",
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "is_zero"
    )]
    pub insecure_for_tests: bool,
    #[serde(
        rename = "STUNTestIP",
        alias = "stuntestip",
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "String::is_empty"
    )]
    pub stun_test_ip: String,
    /// The node answers plain HTTP on port 80 for captive-portal checks.
    #[serde(
        rename = "CanPort80",
        alias = "canport80",
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "is_zero"
    )]
    pub can_port_80: bool,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn writes_tailscale_field_names_and_omissions() {
        let mut map = DERPMap::default();
        map.regions.insert(
            900,
            DERPRegion {
                region_id: 900,
                region_code: "hs".into(),
                region_name: "Headway".into(),
                nodes: vec![DERPNode {
                    name: "900a".into(),
                    region_id: 900,
                    host_name: "derp.example.com".into(),
                    ipv4: "198.51.100.1".into(),
                    stun_port: -1,
                    derp_port: 8443,
                    insecure_for_tests: true,
                    ..DERPNode::default()
                }],
                ..DERPRegion::default()
            },
        );
        assert_eq!(
            serde_json::to_value(&map).unwrap(),
            json!({"Regions": {"900": {"RegionID": 900, "RegionCode": "hs", "RegionName": "Headway",
                "Nodes": [{"Name": "900a", "RegionID": 900, "HostName": "derp.example.com",
                           "IPv4": "198.51.100.1", "STUNPort": -1, "DERPPort": 8443,
                           "InsecureForTests": true}]}}})
        );
        let back: DERPMap = serde_json::from_value(serde_json::to_value(&map).unwrap()).unwrap();
        assert_eq!(back, map);
    }

    #[test]
    fn an_empty_map_still_has_regions() {
        assert_eq!(
            serde_json::to_value(DERPMap::default()).unwrap(),
            json!({"Regions": {}})
        );
    }

    #[test]
    fn reads_tailscale_json_with_home_params() {
        let map: DERPMap = serde_json::from_str(
            r#"{"HomeParams":{"RegionScore":{"1":0.5}},"Regions":{"1":{"RegionID":1,"RegionCode":"nyc",
                "RegionName":"New York City","Latitude":40.7,"Nodes":[{"Name":"1f","RegionID":1,
                "HostName":"derp1f.example.net","IPv4":"192.0.2.1","IPv6":"2001:db8::1","CanPort80":true}]}},
                "omitDefaultRegions":true}"#,
        )
        .unwrap();
        assert_eq!(map.home_params.unwrap().region_score[&1], 0.5);
        assert!(map.omit_default_regions);
        let node = &map.regions[&1].nodes[0];
        assert_eq!(node.ipv6, "2001:db8::1");
        assert!(node.can_port_80);
    }
}

/// `POST /verify` body: a `derper --verify-client-url` asks whether a client may
/// use its relay (protocol §9.2).
#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct DERPAdmitClientRequest {
    #[serde(with = "super::keys::node")]
    pub node_public: crate::types::NodeKey,
    /// The client's IP address as the relay saw it.
    #[serde(default, deserialize_with = "null_as_default")]
    pub source: String,
}

/// The answer to a [`DERPAdmitClientRequest`].
#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct DERPAdmitClientResponse {
    pub allow: bool,
}

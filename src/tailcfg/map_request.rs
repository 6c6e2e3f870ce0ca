//! `POST /machine/map` request body: `MapRequest` (protocol §5.1).
//!
//! v1.102 omits false booleans (`Stream`, `OmitPeers`, …) and v1.80 sends them, so
//! every field defaults; unknown fields (hardware attestation, debug knobs) are ignored.

use super::hostinfo::Hostinfo;
use super::keys;
use super::wire::{addr_ports, null_as_default};
use crate::types::{DiscoKey, NodeKey};
use serde::Deserialize;
use std::net::SocketAddr;

/// `POST /machine/map` request body.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct MapRequest {
    /// The client's capability version.
    #[serde(default, deserialize_with = "null_as_default")]
    pub version: u32,
    /// `"zstd"` from every current client: every response message must be zstd-compressed.
    #[serde(default, deserialize_with = "null_as_default")]
    pub compress: String,
    /// Whether the client wants keep-alives (always true in practice).
    #[serde(default, deserialize_with = "null_as_default")]
    pub keep_alive: bool,
    #[serde(default = "NodeKey::zero", with = "keys::node")]
    pub node_key: NodeKey,
    /// `None` when absent or zero: never overwrite a known disco key with it (§11.7).
    #[serde(default, with = "keys::opt_disco")]
    pub disco_key: Option<DiscoKey>,
    /// A long poll: send the full map, then deltas and keep-alives until the client leaves.
    #[serde(default, deserialize_with = "null_as_default")]
    pub stream: bool,
    /// `None` when the client sent `null`.
    #[serde(default, alias = "HostInfo")]
    pub hostinfo: Option<Hostinfo>,
    #[serde(default, deserialize_with = "null_as_default")]
    pub map_session_handle: String,
    #[serde(default, deserialize_with = "null_as_default")]
    pub map_session_seq: i64,
    /// The client's candidate `IP:port`s for direct connections.
    #[serde(default, deserialize_with = "addr_ports")]
    pub endpoints: Vec<SocketAddr>,
    /// Parallel to `endpoints`: 0 unknown, 1 local, 2 STUN, 3 port-mapped, 4 STUN4LocalPort,
    /// 5 explicitly configured.
    #[serde(default, deserialize_with = "null_as_default")]
    pub endpoint_types: Vec<i32>,
    #[serde(
        rename = "TKAHead",
        alias = "TkaHead",
        default,
        deserialize_with = "null_as_default"
    )]
    pub tka_head: String,
    /// Deprecated since capability version 68; always false from supported clients.
    #[serde(default, deserialize_with = "null_as_default")]
    pub read_only: bool,
    /// With `stream: false`, a "lite" update of endpoints and Hostinfo.
    #[serde(default, deserialize_with = "null_as_default")]
    pub omit_peers: bool,
    #[serde(default, deserialize_with = "null_as_default")]
    pub debug_flags: Vec<String>,
}

/// The three kinds of map request a server must tell apart (protocol §5.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MapRequestKind {
    /// `Stream: true`: full map, then deltas and keep-alives.
    Stream,
    /// `Stream: false, OmitPeers: true`: store endpoints/Hostinfo, reply 200, end the response.
    LiteUpdate,
    /// `Stream: false, OmitPeers: false`: exactly one map, then end the response.
    OneShot,
}

impl MapRequest {
    pub fn kind(&self) -> MapRequestKind {
        match (self.stream, self.omit_peers) {
            (true, _) => MapRequestKind::Stream,
            (false, true) => MapRequestKind::LiteUpdate,
            (false, false) => MapRequestKind::OneShot,
        }
    }

    /// Whether response messages must be zstd-compressed.
    pub fn wants_zstd(&self) -> bool {
        self.compress == "zstd"
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tailcfg::tests::fixture;

    #[test]
    fn v1_102_stream_request_with_omitted_booleans_decodes() {
        let req: MapRequest = serde_json::from_str(&fixture("map_request_v1.102.json")).unwrap();
        assert_eq!(req.version, 142);
        assert!(req.wants_zstd());
        assert!(req.keep_alive);
        assert_eq!(req.kind(), MapRequestKind::Stream);
        assert!(
            !req.omit_peers && !req.read_only,
            "absent booleans are false"
        );
        assert!(req.disco_key.is_some());
        assert_eq!(req.endpoints.len(), 2);
        assert_eq!(req.endpoint_types, [1, 2]);
        assert_eq!(req.hostinfo.as_ref().unwrap().preferred_derp(), Some(900));
    }

    #[test]
    fn v1_80_stream_request_with_null_opt_bools_decodes() {
        let req: MapRequest = serde_json::from_str(&fixture("map_request_v1.80.json")).unwrap();
        assert_eq!(req.version, 113);
        assert_eq!(req.kind(), MapRequestKind::Stream);
        let hi = req.hostinfo.unwrap();
        assert_eq!(hi.hostname(), "node-b");
        assert_eq!(hi.preferred_derp(), Some(901));
        assert!(hi.routable_ips().is_empty());
    }

    /// Tailscale's Rust client spells acronyms as words, which Go's decoder accepts.
    #[test]
    fn the_rust_clients_spellings_decode() {
        let req: MapRequest = serde_json::from_str(
            r#"{"Version": 130, "Stream": false, "OmitPeers": true,
                "HostInfo": {"Hostname": "rusty", "Os": "linux", "RoutableIps": ["10.0.0.0/24"],
                             "NetInfo": {"PreferredDerp": 900, "DerpLatency": {"900-v4": 0.001}}}}"#,
        )
        .unwrap();
        let hi = req.hostinfo.unwrap();
        assert_eq!((hi.hostname(), hi.os()), ("rusty", "linux"));
        assert_eq!(hi.preferred_derp(), Some(900));
        assert_eq!(hi.routable_ips().len(), 1);
    }

    #[test]
    fn v1_80_lite_update_decodes() {
        let req: MapRequest =
            serde_json::from_str(&fixture("map_request_v1.80_lite.json")).unwrap();
        assert_eq!(req.kind(), MapRequestKind::LiteUpdate);
        assert!(req.endpoints.is_empty(), "null Endpoints");
        assert_eq!(req.hostinfo, None, "null Hostinfo");
        assert_eq!(req.disco_key, None, "zero disco key");
    }

    #[test]
    fn one_shot_kind() {
        let req: MapRequest =
            serde_json::from_str(r#"{"Stream":false,"OmitPeers":false}"#).unwrap();
        assert_eq!(req.kind(), MapRequestKind::OneShot);
    }
}

//! Tailscale's wire types (Go package `tailcfg`) as headway reads and writes them:
//! the JSON bodies of `/key`, `/machine/register` and `/machine/map`, and the DERP map.
//!
//! Knows JSON shapes and nothing else: no IO, no database, no policy. Domain types
//! from `crate::types` are converted to these once, by the control plane.
//!
//! Requests (client → server) derive only `Deserialize` and accept what both v1.80 and
//! v1.102 clients send: every field may be absent or `null`, unknown fields are
//! ignored, Go's zero time reads as `None`. Responses derive only `Serialize` and omit
//! what Go omits, except where the protocol gives absent and empty different meanings.
//! Type names are Go's (`MapResponse`, `DERPMap`); field names are Rust's, renamed on
//! the wire to Go's JSON names. Go's decoder also takes names that differ only in
//! letter case, and Tailscale's Rust client spells acronyms as words (`HostInfo`,
//! `Os`, `RoutableIps`, `PreferredDerp`): request fields whose Go name has an acronym
//! take that spelling too (`alias`).

mod derp_map;
mod dns;
mod filter;
mod hostinfo;
pub mod keys;
mod machine;
mod map_request;
mod map_response;
mod node;
mod noise;
mod register;
pub mod wire;

pub use derp_map::{
    DERPAdmitClientRequest, DERPAdmitClientResponse, DERPHomeParams, DERPMap, DERPNode, DERPRegion,
};
pub use dns::{DNSConfig, DNSRecord, Resolver};
pub use filter::{
    CapGrant, FilterRule, NetPortRange, PortRange, SSHAction, SSHPolicy, SSHPrincipal,
    SSHRecorderFailureAction, SSHRule,
};
pub use hostinfo::{Hostinfo, NetInfo};
pub use machine::{AuditLogRequest, SetDNSRequest, SetDNSResponse};
pub use map_request::{MapRequest, MapRequestKind};
pub use map_response::{BASE_FILTER, Debug, MapResponse, PeerChange, PingRequest, UserProfile};
pub use node::{CapMap, Node};
pub use noise::{ChallengeKey, EarlyNoise, OverTLSPublicKeyResponse};
pub use register::{Login, RegisterRequest, RegisterResponse, RegisterResponseAuth, User};

#[cfg(test)]
pub(crate) mod tests {
    /// A JSON fixture from `tests/fixtures/tailcfg/`.
    pub fn fixture(name: &str) -> String {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/tailcfg")
            .join(name);
        std::fs::read_to_string(&path).unwrap_or_else(|err| panic!("{}: {err}", path.display()))
    }
}

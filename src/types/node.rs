//! A node: one Tailscale device registered with this server.

use super::{DiscoKey, GivenName, MachineKey, NodeId, NodeKey, PreAuthKeyId, Timestamp, UserId};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// How a node was admitted; mirrors Headscale's `RegisterMethod`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RegisterMethod {
    Unspecified,
    AuthKey,
    Cli,
    Oidc,
}

impl RegisterMethod {
    /// The stored text form (Headscale's database spelling).
    pub fn as_str(self) -> &'static str {
        match self {
            RegisterMethod::Unspecified => "",
            RegisterMethod::AuthKey => "authkey",
            RegisterMethod::Cli => "cli",
            RegisterMethod::Oidc => "oidc",
        }
    }

    pub fn from_stored(text: &str) -> Self {
        match text {
            "authkey" => RegisterMethod::AuthKey,
            "cli" => RegisterMethod::Cli,
            "oidc" => RegisterMethod::Oidc,
            _ => RegisterMethod::Unspecified,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Node {
    pub id: NodeId,
    pub machine_key: MachineKey,
    pub node_key: NodeKey,
    /// Zero until the client's first map request reports it.
    pub disco_key: DiscoKey,
    /// The hostname the client reported.
    pub hostname: String,
    /// The unique MagicDNS label; defaults to the sanitised hostname.
    pub given_name: GivenName,
    /// `None` for tagged nodes, which belong to no user.
    pub user_id: Option<UserId>,
    pub ipv4: Option<Ipv4Addr>,
    pub ipv6: Option<Ipv6Addr>,
    pub endpoints: Vec<SocketAddr>,
    /// The client's last Hostinfo as JSON text; opaque to the domain layer.
    pub hostinfo: Option<String>,
    pub tags: Vec<String>,
    /// `None` means the node key never expires.
    pub expiry: Option<Timestamp>,
    pub last_seen: Option<Timestamp>,
    pub ephemeral: bool,
    pub register_method: RegisterMethod,
    pub auth_key_id: Option<PreAuthKeyId>,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

impl Node {
    pub fn is_expired(&self, now: Timestamp) -> bool {
        self.expiry.is_some_and(|e| e <= now)
    }

    pub fn is_tagged(&self) -> bool {
        !self.tags.is_empty()
    }

    /// IPv4 first, then IPv6, as Tailscale lists addresses.
    pub fn ip_addresses(&self) -> Vec<IpAddr> {
        self.ipv4
            .map(IpAddr::V4)
            .into_iter()
            .chain(self.ipv6.map(IpAddr::V6))
            .collect()
    }
}

//! The access-control policy: Tailscale's policy language (HuJSON `acls`,
//! `grants`, `ssh`, `nodeAttrs`, `autoApprovers`, `tests`), and what it means for
//! every node of a tailnet: its packet filter, the peers it may see, its SSH
//! policy and its node attributes.
//!
//! Pure: no IO, no clock, no locks. The caller (`state`) describes the tailnet as
//! [`Device`]s and users, and gets a [`Compiled`] view it can share.
//!
//! - `hujson.rs` comments and trailing commas; `parse.rs` the syntax tree and
//!   every check that needs no users or nodes;
//! - `ipset.rs` address sets; `resolve.rs` aliases → addresses for a tailnet;
//! - `compile.rs` grants → packet filters, reduced per node; `peers.rs` who sees
//!   whom; `ssh.rs` the SSH policy of a node; `attrs.rs` node attributes, tag
//!   ownership and auto-approval; `checks.rs` the policy's own `tests` and
//!   `sshTests`.

mod attrs;
mod checks;
mod compile;
pub mod hujson;
pub mod ipset;
mod parse;
mod peers;
mod resolve;
mod ssh;
// Also the policy fuzz target's tailnet.
pub(crate) mod testing;

pub use attrs::Approvals;
pub use checks::run_tests;
pub use compile::{Comparison, Compiled, FILTER_CHUNKS, FilterChunk, Options, Prints, ViewChange};
pub use ipset::IpSet;
pub use parse::{
    Acl, Alias, AliasPorts, AutoApprovers, AutoGroup, CheckPeriod, Error, Grant, NodeAttr, Owner,
    Policy, Ports, ProtoPorts, Protocol, SshAction, SshRule, SshUser, UserRef,
};
pub use ssh::check_period_for;

use crate::types::{NodeId, User, UserId};
use ipnet::IpNet;
use std::net::IpAddr;

/// One node as the policy sees it: who it belongs to and where it is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Device {
    pub id: NodeId,
    /// The owner of an untagged node; tagged nodes belong to their tags.
    pub user: Option<UserId>,
    pub tags: Vec<String>,
    /// The node's own addresses, IPv4 first.
    pub addrs: Vec<IpAddr>,
    /// Approved, advertised subnet routes (not exit routes).
    pub subnet_routes: Vec<IpNet>,
    /// Whether an exit route of the node is approved and advertised.
    pub exit_node: bool,
}

impl Device {
    pub fn is_tagged(&self) -> bool {
        !self.tags.is_empty()
    }

    pub fn has_tag(&self, tag: &str) -> bool {
        self.tags.iter().any(|t| t == tag)
    }
}

/// The tailnet a policy is applied to. `devices` may be in any order; node ids
/// are unique.
#[derive(Clone, Copy, Debug)]
pub struct Tailnet<'a> {
    pub users: &'a [User],
    pub devices: &'a [Device],
}

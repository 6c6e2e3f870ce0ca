//! A route: one IP prefix that a node advertises, and whether an admin approved it.

use super::{NodeId, RouteId, Timestamp};
use ipnet::IpNet;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Route {
    pub id: RouteId,
    pub node_id: NodeId,
    pub prefix: IpNet,
    /// The node currently announces this prefix (from its Hostinfo).
    pub advertised: bool,
    /// An admin (or an auto-approver) allowed peers to use it.
    pub approved: bool,
    /// The approval came from the policy's `autoApprovers`, not an admin: it
    /// goes when the policy stops approving the route.
    pub approved_by_policy: bool,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

impl Route {
    /// `0.0.0.0/0` or `::/0`: the node offers itself as an exit node.
    pub fn is_exit(&self) -> bool {
        is_exit_prefix(&self.prefix)
    }
}

/// Whether a prefix is one of the two exit routes.
pub fn is_exit_prefix(prefix: &IpNet) -> bool {
    prefix.prefix_len() == 0
}

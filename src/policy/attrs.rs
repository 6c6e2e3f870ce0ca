//! What the policy says about single nodes rather than traffic: node attributes
//! (`nodeAttrs`, `randomizeClientPort`), who may apply a tag (`tagOwners`), and
//! which advertised routes are approved without an admin (`autoApprovers`).

use super::parse::{Owner, Policy};
use super::resolve::Resolver;
use super::{Device, Tailnet};
use crate::tailcfg::CapMap;
use crate::types::{NodeId, User};
use ipnet::IpNet;
use std::sync::Arc;

/// The attribute `randomizeClientPort` stands for.
const RANDOMIZE_CLIENT_PORT: &str = "randomize-client-port";

/// The attributes of every device (by index): the union of every `nodeAttrs`
/// entry whose targets include one of its addresses. Devices with the same
/// attributes share one map.
pub(super) fn node_attrs(r: &Resolver<'_>) -> Vec<Arc<CapMap>> {
    let devices = r.devices();
    let mut maps: Vec<CapMap> = vec![CapMap::new(); devices.len()];
    if r.policy.randomize_client_port {
        for m in &mut maps {
            m.insert(RANDOMIZE_CLIENT_PORT.into(), Vec::new());
        }
    }
    for entry in &r.policy.node_attrs {
        if entry.attr.is_empty() {
            continue;
        }
        let targets = r.resolve_all(&entry.target);
        for i in r.devices_in(&targets) {
            for attr in &entry.attr {
                maps[i].entry(attr.clone()).or_default();
            }
        }
    }
    let empty = Arc::new(CapMap::new());
    let mut shared: Vec<Arc<CapMap>> = Vec::new();
    maps.into_iter()
        .map(|m| {
            if m.is_empty() {
                return empty.clone();
            }
            if let Some(same) = shared.iter().find(|s| ***s == m) {
                return same.clone();
            }
            let m = Arc::new(m);
            shared.push(m.clone());
            m
        })
        .collect()
}

/// Answers "may this node have that?" for tags and routes, against one policy
/// and one tailnet.
pub struct Approvals<'a> {
    r: Resolver<'a>,
}

impl<'a> Approvals<'a> {
    pub fn new(policy: &'a Policy, tailnet: Tailnet<'a>) -> Self {
        Approvals {
            r: Resolver::new(policy, tailnet),
        }
    }

    fn device(&self, id: NodeId) -> Option<&'a Device> {
        self.r.devices().iter().find(|d| d.id == id)
    }

    /// Whether an approver list names `device`: a user or group member owning
    /// it (untagged), or a tag it carries.
    fn names(&self, approvers: &[Owner], device: &Device) -> bool {
        approvers.iter().any(|a| match a {
            Owner::User(u) => {
                !device.is_tagged() && self.r.user(u).is_some_and(|u| Some(u.id) == device.user)
            }
            Owner::Group(g) => {
                !device.is_tagged()
                    && self
                        .r
                        .group_users(g)
                        .iter()
                        .any(|u| Some(u.id) == device.user)
            }
            Owner::Tag(t) => device.has_tag(t),
        })
    }

    /// Whether `node` may have `route` approved automatically: an exit route
    /// (`0.0.0.0/0`, `::/0`) when `exitNode` names the node; a subnet route when
    /// a `routes` prefix equal to or containing it names the node.
    pub fn auto_approves(&self, node: NodeId, route: &IpNet) -> bool {
        let Some(device) = self.device(node) else {
            return false;
        };
        let aa = &self.r.policy.auto_approvers;
        if route.prefix_len() == 0 {
            return self.names(&aa.exit_node, device);
        }
        aa.routes
            .iter()
            .any(|(prefix, approvers)| prefix.contains(route) && self.names(approvers, device))
    }

    /// Whether `tag` may be applied to a node registered by `user` (`None` for
    /// a tagged pre-auth key or an admin acting for nobody), given the tags the
    /// node (or key) already carries: the tag must exist, and its owners must
    /// name the user (directly or through a group) or one of those tags
    /// (directly or through tags owning tags).
    pub fn may_tag(&self, tag: &str, user: Option<&User>, tags: &[String]) -> bool {
        self.r.owns_tag(tag, user, tags)
    }

    /// Whether the policy defines `tag` at all.
    pub fn tag_exists(&self, tag: &str) -> bool {
        self.r.policy.tag_owners.contains_key(tag)
    }
}

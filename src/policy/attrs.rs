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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::testing::{device, user};

    const POLICY: &str = r#"{
        "groups": {"group:ops": ["alice@"]},
        "tagOwners": {"tag:router": ["group:ops"], "tag:web": ["tag:router"], "tag:db": []},
        "autoApprovers": {
            "routes": {"10.0.0.0/8": ["tag:router"], "192.168.1.0/24": ["bob@"]},
            "exitNode": ["group:ops"],
        },
        "nodeAttrs": [{"target": ["tag:router"], "attr": ["magicdns-aaaa"]}],
        "randomizeClientPort": true,
    }"#;

    #[test]
    fn routes_are_approved_by_containing_prefixes_and_exit_nodes_apart() {
        let policy = Policy::parse(POLICY).unwrap();
        let users = vec![user(1, "alice", ""), user(2, "bob", "")];
        let devices = vec![
            device(1, Some(1), &[]),
            device(2, Some(2), &[]),
            device(3, None, &["tag:router"]),
        ];
        let a = Approvals::new(
            &policy,
            Tailnet {
                users: &users,
                devices: &devices,
            },
        );
        let net = |s: &str| s.parse::<IpNet>().unwrap();
        assert!(a.auto_approves(NodeId(3), &net("10.33.0.0/16")));
        assert!(!a.auto_approves(NodeId(3), &net("11.0.0.0/8")));
        assert!(!a.auto_approves(NodeId(1), &net("10.33.0.0/16")));
        assert!(a.auto_approves(NodeId(2), &net("192.168.1.0/24")));
        // A /0 is an exit route: only exitNode approves it.
        assert!(a.auto_approves(NodeId(1), &net("0.0.0.0/0")));
        assert!(!a.auto_approves(NodeId(3), &net("::/0")));
    }

    #[test]
    fn tags_are_owned_through_groups_and_other_tags() {
        let policy = Policy::parse(POLICY).unwrap();
        let users = vec![user(1, "alice", ""), user(2, "bob", "")];
        let a = Approvals::new(
            &policy,
            Tailnet {
                users: &users,
                devices: &[],
            },
        );
        assert!(a.may_tag("tag:router", Some(&users[0]), &[]));
        assert!(!a.may_tag("tag:router", Some(&users[1]), &[]));
        // tag:web is owned by tag:router, which alice owns.
        assert!(a.may_tag("tag:web", Some(&users[0]), &[]));
        assert!(a.may_tag("tag:web", None, &["tag:router".into()]));
        assert!(!a.may_tag("tag:db", Some(&users[0]), &[]));
        assert!(!a.may_tag("tag:nope", Some(&users[0]), &[]));
    }

    #[test]
    fn node_attributes_follow_their_targets() {
        let policy = Policy::parse(POLICY).unwrap();
        let users = vec![user(1, "alice", "")];
        let devices = vec![device(1, Some(1), &[]), device(3, None, &["tag:router"])];
        let r = Resolver::new(
            &policy,
            Tailnet {
                users: &users,
                devices: &devices,
            },
        );
        let attrs = node_attrs(&r);
        assert_eq!(
            attrs[0].keys().collect::<Vec<_>>(),
            ["randomize-client-port"]
        );
        assert_eq!(
            attrs[1].keys().collect::<Vec<_>>(),
            ["magicdns-aaaa", "randomize-client-port"]
        );
    }
}

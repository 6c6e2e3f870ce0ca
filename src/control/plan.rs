//! Decides what every open session must receive for one batch of changes: a
//! pure function of the node snapshot, the policy views before and after, and
//! the `Change`. Sending (encoding, caching, queueing) is `dispatch.rs`'s job.
//!
//! Messages that many sessions receive are planned once, with their audience, so
//! the sender serialises and compresses each once: without a policy, a change to
//! one node is one delta for every peer; with one, viewers that would receive the
//! same delta are grouped.

use super::map::{MapInputs, profile};
use crate::policy::Compiled;
use crate::state::Change;
use crate::tailcfg::{self, MapResponse, PeerChange};
use crate::types::NodeId;
use ipnet::IpNet;
use std::collections::{BTreeMap, BTreeSet};

/// Who receives a message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Audience {
    /// Every open session.
    Everyone,
    /// Every open session but those of these nodes.
    Except(BTreeSet<NodeId>),
    /// The sessions of these nodes.
    Only(Vec<NodeId>),
}

/// What one batch of changes sends.
#[derive(Debug, Default)]
pub struct Plan {
    /// Nodes whose sessions end (removed or logged out for good).
    pub disconnect: Vec<NodeId>,
    /// Nodes whose sessions must get a whole new map.
    pub resync: Vec<NodeId>,
    /// Messages in the order they are queued, each with its audience.
    pub messages: Vec<(MapResponse, Audience)>,
}

/// Plans the delivery of `change` to the `connected` nodes. `before` is the
/// policy view the sessions were last told about (`None`: no policy), `inputs`
/// carries the view after it.
pub fn plan(
    inputs: &MapInputs<'_>,
    before: Option<&Compiled>,
    change: &Change,
    connected: &BTreeSet<NodeId>,
    has_view: &dyn Fn(NodeId, u64) -> bool,
) -> Plan {
    let mut plan = Plan::default();
    if connected.is_empty() {
        return plan;
    }
    if change.full {
        plan.resync = connected.iter().copied().collect();
        return plan;
    }
    plan.disconnect = change.peers_removed.iter().copied().collect();
    match (before, inputs.policy) {
        (None, None) => plan_open(inputs, change, connected, &mut plan),
        (before, _) => plan_by_view(inputs, before, change, connected, has_view, &mut plan),
    }
    let self_changed: BTreeSet<NodeId> = change
        .self_changed
        .iter()
        .chain(&change.logged_out)
        .copied()
        .filter(|id| connected.contains(id))
        .collect();
    for id in self_changed {
        if let Some(node) = inputs.snapshot.get(id) {
            plan.messages.push((
                MapResponse {
                    node: Some(inputs.self_node(node)),
                    user_profiles: inputs.user_profiles(std::iter::once(&**node)),
                    control_time: Some(inputs.now),
                    // Its certificate name follows its MagicDNS name.
                    dns_config: inputs
                        .settings
                        .cert_domains
                        .then(|| inputs.dns_config(node).unwrap_or_default()),
                    ..MapResponse::default()
                },
                Audience::Only(vec![id]),
            ));
        }
    }
    if change.dns {
        plan_dns(inputs, connected, &mut plan);
    }
    if !change.users_changed.is_empty() {
        let profiles: Vec<_> = change
            .users_changed
            .iter()
            .filter_map(|id| inputs.users.get(id))
            .map(profile)
            .collect();
        if !profiles.is_empty() {
            plan.messages.push((
                MapResponse {
                    user_profiles: profiles,
                    ..MapResponse::default()
                },
                Audience::Everyone,
            ));
        }
    }
    plan
}

/// The DNS configuration changed: one message for everyone, or one per node
/// when each node's names its own certificate domain.
fn plan_dns(inputs: &MapInputs<'_>, connected: &BTreeSet<NodeId>, plan: &mut Plan) {
    let message = |node| MapResponse {
        dns_config: Some(inputs.dns_config(node).unwrap_or_default()),
        ..MapResponse::default()
    };
    let mut nodes = connected.iter().filter_map(|id| inputs.snapshot.get(*id));
    if inputs.settings.cert_domains {
        for node in nodes {
            plan.messages
                .push((message(node), Audience::Only(vec![node.id])));
        }
    } else if let Some(node) = nodes.next() {
        plan.messages.push((message(node), Audience::Everyone));
    }
}

/// Without a policy every node sees every node: each delta is one message for
/// every session (a changed node learns the others, never itself).
fn plan_open(
    inputs: &MapInputs<'_>,
    change: &Change,
    connected: &BTreeSet<NodeId>,
    plan: &mut Plan,
) {
    if !change.peers_removed.is_empty() {
        plan.messages.push((
            MapResponse {
                peers_removed: change.peers_removed.iter().map(|id| id.0).collect(),
                ..MapResponse::default()
            },
            Audience::Everyone,
        ));
    }
    let changed: Vec<_> = change
        .peers_changed
        .iter()
        .filter_map(|id| inputs.snapshot.get(*id))
        .collect();
    if !changed.is_empty() {
        let peers: Vec<_> = changed.iter().map(|n| inputs.peer(n)).collect();
        let profiles = inputs.user_profiles(changed.iter().map(|n| &***n));
        let changed_ids: BTreeSet<NodeId> = changed.iter().map(|n| n.id).collect();
        plan.messages.push((
            MapResponse {
                peers_changed: peers.clone(),
                user_profiles: profiles.clone(),
                ..MapResponse::default()
            },
            Audience::Except(changed_ids.clone()),
        ));
        for node in changed_ids.iter().filter(|id| connected.contains(id)) {
            let others: Vec<_> = peers.iter().filter(|p| p.id != node.0).cloned().collect();
            if !others.is_empty() {
                plan.messages.push((
                    MapResponse {
                        peers_changed: others,
                        user_profiles: profiles.clone(),
                        ..MapResponse::default()
                    },
                    Audience::Only(vec![*node]),
                ));
            }
        }
    }
    let patches = patches(inputs, change, &|_| true);
    if patches.is_empty() {
        return;
    }
    // A node never hears about itself (newer clients warn about a patch of an
    // unknown peer): the patched nodes that are connected split in halves, and
    // each half learns the other's patches, so k such nodes cost k·log k
    // patches in 2k messages, not k² in k.
    let patched: BTreeSet<NodeId> = patches.iter().map(|p| NodeId(p.node_id)).collect();
    plan.messages.push((
        MapResponse {
            peers_changed_patch: patches.clone(),
            ..MapResponse::default()
        },
        Audience::Except(patched),
    ));
    let (listening, others): (Vec<&PeerChange>, Vec<&PeerChange>) = patches
        .iter()
        .partition(|p| connected.contains(&NodeId(p.node_id)));
    if !others.is_empty() && !listening.is_empty() {
        plan.messages.push((
            MapResponse {
                peers_changed_patch: others.into_iter().cloned().collect(),
                ..MapResponse::default()
            },
            Audience::Only(listening.iter().map(|p| NodeId(p.node_id)).collect()),
        ));
    }
    exchange_patches(&listening, plan);
}

/// Every node in `group` learns the patches of the others, never its own.
fn exchange_patches(group: &[&PeerChange], plan: &mut Plan) {
    if group.len() < 2 {
        return;
    }
    let (left, right) = group.split_at(group.len() / 2);
    for (to, about) in [(left, right), (right, left)] {
        plan.messages.push((
            MapResponse {
                peers_changed_patch: about.iter().map(|p| (*p).clone()).collect(),
                ..MapResponse::default()
            },
            Audience::Only(to.iter().map(|p| NodeId(p.node_id)).collect()),
        ));
    }
    exchange_patches(left, plan);
    exchange_patches(right, plan);
}

/// Light patches for nodes whose endpoints or online state changed (and that
/// are not sent whole anyway), for the nodes `include` accepts.
fn patches(
    inputs: &MapInputs<'_>,
    change: &Change,
    include: &dyn Fn(NodeId) -> bool,
) -> Vec<PeerChange> {
    let patched: BTreeSet<NodeId> = change
        .patched
        .iter()
        .chain(change.online.keys())
        .copied()
        .filter(|id| !change.peers_changed.contains(id) && include(*id))
        .collect();
    let mut out = Vec::new();
    for id in patched {
        let Some(node) = inputs.snapshot.get(id) else {
            continue;
        };
        let mut patch = if change.patched.contains(&id) {
            inputs.patch(node)
        } else {
            PeerChange {
                node_id: id.0,
                ..Default::default()
            }
        };
        if let Some(online) = change.online.get(&id) {
            let presence = inputs.presence(node, *online);
            patch.online = presence.online;
            patch.last_seen = presence.last_seen;
        }
        out.push(patch);
    }
    out
}

/// What one viewer must learn, as a key: viewers with equal keys share one
/// message.
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
struct Delta {
    removed: Vec<NodeId>,
    /// Peers to send whole, with the routes this viewer sees on each and
    /// whether it sees IPv4 addresses.
    changed: Vec<(NodeId, Vec<IpNet>)>,
    no_v4: bool,
    patched: Vec<NodeId>,
    /// The viewer's new packet filter chunks and SSH policy, by fingerprint
    /// (viewers with equal fingerprints have equal contents); `None`:
    /// unchanged. Most viewers share their `base` chunk, so a policy change
    /// is a few messages, not one per viewer.
    filter: [Option<u64>; 3],
    ssh: Option<u64>,
}

/// With a policy, every viewer gets the part of the change it may see, plus
/// whatever the new view changed for it (peers gained and lost, its packet
/// filter, its SSH policy, routes of its peers).
fn plan_by_view(
    inputs: &MapInputs<'_>,
    before: Option<&Compiled>,
    change: &Change,
    connected: &BTreeSet<NodeId>,
    has_view: &dyn Fn(NodeId, u64) -> bool,
    plan: &mut Plan,
) {
    let after = inputs.policy;
    let view_changed = match (before, after) {
        (Some(b), Some(a)) => !std::ptr::eq(b, a),
        _ => true,
    };
    // Routers may show different routes to a viewer when the view changes.
    let routers: BTreeSet<NodeId> = if view_changed {
        inputs
            .snapshot
            .nodes()
            .filter(|n| {
                inputs
                    .snapshot
                    .routes(n.id)
                    .iter()
                    .any(|r| r.approved && r.advertised)
            })
            .map(|n| n.id)
            .collect()
    } else {
        BTreeSet::new()
    };
    let comparison = match (before, after) {
        (Some(b), Some(a)) if view_changed => Some(a.compare(b)),
        _ => None,
    };
    let mut groups: BTreeMap<Delta, Vec<NodeId>> = BTreeMap::new();
    for &viewer in connected {
        if change.peers_removed.contains(&viewer) || inputs.snapshot.get(viewer).is_none() {
            continue;
        }
        let sees = |peer: NodeId| peer != viewer && after.is_none_or(|p| p.can_see(viewer, peer));
        let mut delta = Delta {
            no_v4: inputs.ipv4_disabled(viewer),
            ..Delta::default()
        };
        let mut removed: BTreeSet<NodeId> = change.peers_removed.iter().copied().collect();
        let mut changed: BTreeSet<NodeId> = change
            .peers_changed
            .iter()
            .copied()
            .filter(|p| sees(*p))
            .collect();
        // A session whose whole map was built from the new view already has it.
        let current = after.is_some_and(|a| has_view(viewer, a.generation()));
        if view_changed && !current {
            let vc = comparison.as_ref().and_then(|c| c.node(viewer));
            match vc {
                Some(vc) => {
                    if vc.attrs {
                        // Its own attributes (addresses it may use) changed: start over.
                        plan.resync.push(viewer);
                        continue;
                    }
                    removed.extend(vc.lost);
                    changed.extend(vc.gained);
                    let prints = after
                        .and_then(|a| a.fingerprints(viewer))
                        .unwrap_or_default();
                    for c in 0..3 {
                        if vc.filter[c] {
                            delta.filter[c] = Some(prints.filter[c]);
                        }
                    }
                    if vc.ssh {
                        delta.ssh = Some(prints.ssh);
                    }
                }
                // A policy appeared or went away, or the viewer is new to the view.
                None => {
                    plan.resync.push(viewer);
                    continue;
                }
            }
            changed.extend(routers.iter().copied().filter(|r| sees(*r)));
        }
        changed.retain(|p| !removed.contains(p));
        delta.removed = removed.into_iter().filter(|p| *p != viewer).collect();
        delta.changed = changed
            .iter()
            .filter_map(|p| inputs.snapshot.get(*p))
            .map(|n| (n.id, inputs.routes_for(viewer, n)))
            .collect();
        delta.patched = patches(inputs, change, &|id| {
            id != viewer && !changed.contains(&id) && sees(id)
        })
        .iter()
        .map(|p| NodeId(p.node_id))
        .collect();
        if delta.removed.is_empty()
            && delta.changed.is_empty()
            && delta.patched.is_empty()
            && delta.filter.iter().all(Option::is_none)
            && delta.ssh.is_none()
        {
            continue;
        }
        groups.entry(delta).or_default().push(viewer);
    }
    for (delta, viewers) in groups {
        let peers: Vec<tailcfg::Node> = delta
            .changed
            .iter()
            .filter_map(|(id, _)| inputs.snapshot.get(*id))
            .map(|n| inputs.peer_for(viewers[0], n))
            .collect();
        let profiles = if peers.is_empty() {
            Vec::new()
        } else {
            inputs.user_profiles(
                delta
                    .changed
                    .iter()
                    .filter_map(|(id, _)| inputs.snapshot.get(*id))
                    .map(|n| &**n),
            )
        };
        let patched_set: BTreeSet<NodeId> = delta.patched.iter().copied().collect();
        let mut message = MapResponse {
            peers_removed: delta.removed.iter().map(|id| id.0).collect(),
            peers_changed: peers,
            peers_changed_patch: patches(inputs, change, &|id| patched_set.contains(&id)),
            user_profiles: profiles,
            ..MapResponse::default()
        };
        // Group members share fingerprints, so the first one's content is everyone's.
        message.packet_filters =
            inputs.filter_chunks(viewers[0], delta.filter.map(|p| p.is_some()));
        if delta.ssh.is_some() {
            message.ssh_policy = Some(inputs.ssh_policy(viewers[0]).unwrap_or_default());
        }
        plan.messages.push((message, Audience::Only(viewers)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control::map::MapSettings;
    use crate::policy::testing::user;
    use crate::policy::{Device, Options, Policy, Tailnet};
    use crate::state::Snapshot;
    use crate::types::{
        DiscoKey, GivenName, MachineKey, Node, NodeKey, RegisterMethod, User, UserId,
    };
    use std::collections::HashMap;
    use std::sync::Arc;

    /// Node `n` of user `user` (or tagged), at 100.64.0.`n`.
    fn node(n: u8, user: Option<u64>, tags: &[&str]) -> Node {
        let now = chrono::Utc::now();
        Node {
            id: NodeId(u64::from(n)),
            machine_key: MachineKey::from_bytes([n; 32]),
            node_key: NodeKey::from_bytes([n + 100; 32]),
            disco_key: DiscoKey::from_bytes([n + 50; 32]),
            hostname: format!("n{n}"),
            given_name: GivenName::sanitize(&format!("n{n}")),
            user_id: user.map(UserId),
            ipv4: Some(format!("100.64.0.{n}").parse().unwrap()),
            ipv6: None,
            endpoints: Vec::new(),
            hostinfo: None,
            tags: tags.iter().map(|t| (*t).to_owned()).collect(),
            expiry: None,
            last_seen: None,
            ephemeral: false,
            register_method: RegisterMethod::AuthKey,
            auth_key_id: None,
            created_at: now,
            updated_at: now,
        }
    }

    /// Alice owns 1 and 2, bob owns 3, 4 is `tag:server`.
    struct World {
        snapshot: Snapshot,
        users: HashMap<UserId, User>,
        settings: MapSettings,
    }

    fn world() -> World {
        World {
            snapshot: Snapshot::from_rows(
                vec![
                    node(1, Some(1), &[]),
                    node(2, Some(1), &[]),
                    node(3, Some(2), &[]),
                    node(4, None, &["tag:server"]),
                ],
                Vec::new(),
            ),
            users: [
                (UserId(1), user(1, "alice", "")),
                (UserId(2), user(2, "bob", "")),
            ]
            .into(),
            settings: MapSettings {
                base_domain: "t.test".into(),
                domain: String::new(),
                dns: None,
                disable_log_tail: false,
                taildrop: true,
                auto_update: false,
                randomize_client_port: false,
                ..MapSettings::default()
            },
        }
    }

    impl World {
        fn compile(&self, policy: &str) -> Arc<Compiled> {
            let devices: Vec<Device> = self
                .snapshot
                .nodes()
                .map(|n| Device {
                    id: n.id,
                    user: if n.tags.is_empty() { n.user_id } else { None },
                    tags: n.tags.clone(),
                    addrs: n.ip_addresses(),
                    subnet_routes: Vec::new(),
                    exit_node: false,
                })
                .collect();
            let users: Vec<User> = self.users.values().cloned().collect();
            Arc::new(Compiled::new(
                Arc::new(Policy::parse(policy).unwrap()),
                Tailnet {
                    users: &users,
                    devices: &devices,
                },
                &Options::default(),
            ))
        }

        fn plan(
            &self,
            before: Option<&Compiled>,
            after: Option<&Compiled>,
            change: &Change,
        ) -> Plan {
            let online = |_| true;
            let inputs = MapInputs {
                snapshot: &self.snapshot,
                users: &self.users,
                online: &online,
                settings: &self.settings,
                now: chrono::Utc::now(),
                policy: after,
            };
            let connected: BTreeSet<NodeId> = (1..=4).map(NodeId).collect();
            plan(&inputs, before, change, &connected, &|_, _| false)
        }
    }

    fn ids(ns: &[u64]) -> Vec<NodeId> {
        ns.iter().copied().map(NodeId).collect()
    }

    /// One planned message: (audience, peers sent whole, peers removed, patched,
    /// whether it carries a packet filter).
    type Sent = (Audience, Vec<u64>, Vec<u64>, Vec<u64>, bool);

    fn summary(plan: &Plan) -> Vec<Sent> {
        plan.messages
            .iter()
            .filter(|(m, _)| m.node.is_none())
            .map(|(m, a)| {
                (
                    a.clone(),
                    m.peers_changed.iter().map(|p| p.id).collect(),
                    m.peers_removed.clone(),
                    m.peers_changed_patch.iter().map(|p| p.node_id).collect(),
                    !m.packet_filters.is_empty(),
                )
            })
            .collect()
    }

    const ALICE_TO_SERVER: &str = r#"{"tagOwners": {"tag:server": []}, "acls": [{"action": "accept", "src": ["alice@"], "dst": ["tag:server:22"]}]}"#;

    #[test]
    fn without_a_policy_a_change_is_one_message_for_everyone_else() {
        let w = world();
        let plan = w.plan(None, None, &Change::node_changed(NodeId(1)));
        assert_eq!(
            summary(&plan),
            [(
                Audience::Except([NodeId(1)].into()),
                vec![1],
                vec![],
                vec![],
                false
            )]
        );
        let plan = w.plan(None, None, &Change::node_patched(NodeId(3)));
        assert_eq!(
            summary(&plan),
            [(
                Audience::Except([NodeId(3)].into()),
                vec![],
                vec![],
                vec![3],
                false
            )]
        );
    }

    /// Every connected node hears every other patched node once, and never itself.
    #[test]
    fn without_a_policy_patched_nodes_learn_each_other_but_not_themselves() {
        let w = world();
        let mut change = Change::none();
        for id in [1, 2, 3, 4] {
            change.merge(Change::node_patched(NodeId(id)));
        }
        let plan = w.plan(None, None, &change);
        for viewer in 1..=4u64 {
            let mut heard: Vec<u64> = plan
                .messages
                .iter()
                .filter(|(_, audience)| match audience {
                    Audience::Everyone => true,
                    Audience::Except(not) => !not.contains(&NodeId(viewer)),
                    Audience::Only(to) => to.contains(&NodeId(viewer)),
                })
                .flat_map(|(m, _)| m.peers_changed_patch.iter().map(|p| p.node_id))
                .collect();
            heard.sort_unstable();
            let others: Vec<u64> = (1..=4).filter(|n| *n != viewer).collect();
            assert_eq!(heard, others, "node {viewer}");
        }
    }

    #[test]
    fn with_a_policy_only_the_viewers_that_may_see_a_node_learn_of_it() {
        let w = world();
        let view = w.compile(ALICE_TO_SERVER);
        let v = Some(&*view);
        // The server changed: alice's two nodes see it (one shared message); bob does not.
        let plan = w.plan(v, v, &Change::node_changed(NodeId(4)));
        assert_eq!(
            summary(&plan),
            [(Audience::Only(ids(&[1, 2])), vec![4], vec![], vec![], false)]
        );
        // Alice's laptop moved: only the server hears of it (alice's nodes do not
        // see each other under this policy), and bob hears nothing.
        let plan = w.plan(v, v, &Change::node_patched(NodeId(1)));
        assert_eq!(
            summary(&plan),
            [(Audience::Only(ids(&[4])), vec![], vec![], vec![1], false)]
        );
        let plan = w.plan(v, v, &Change::node_patched(NodeId(3)));
        assert!(summary(&plan).is_empty(), "{:?}", summary(&plan));
    }

    #[test]
    fn a_new_policy_sends_each_node_what_changed_for_it() {
        let w = world();
        let open = w.compile(r#"{"acls": [{"action": "accept", "src": ["*"], "dst": ["*:*"]}]}"#);
        let narrow = w.compile(ALICE_TO_SERVER);
        let plan = w.plan(Some(&open), Some(&narrow), &Change::policy());
        let mut got = summary(&plan);
        got.sort_by_key(|(a, ..)| format!("{a:?}"));
        assert_eq!(
            got,
            [
                // Alice's nodes lose each other and bob; their filter changes.
                (Audience::Only(ids(&[1])), vec![], vec![2, 3], vec![], true),
                (Audience::Only(ids(&[2])), vec![], vec![1, 3], vec![], true),
                // Bob loses everyone.
                (
                    Audience::Only(ids(&[3])),
                    vec![],
                    vec![1, 2, 4],
                    vec![],
                    true
                ),
                // The server keeps alice's nodes, loses bob, gets its port-22 filter.
                (Audience::Only(ids(&[4])), vec![], vec![3], vec![], true),
            ]
        );
        // And back: peers come back whole.
        let plan = w.plan(Some(&narrow), Some(&open), &Change::policy());
        let bob: Vec<_> = summary(&plan)
            .into_iter()
            .filter(|(a, ..)| *a == Audience::Only(ids(&[3])))
            .collect();
        assert_eq!(
            bob,
            [(
                Audience::Only(ids(&[3])),
                vec![1, 2, 4],
                vec![],
                vec![],
                true
            )]
        );
    }

    #[test]
    fn a_rule_every_node_shares_changes_in_one_message_and_self_rules_stay_put() {
        let w = world();
        let before = w.compile(
            r#"{"acls": [{"action": "accept", "src": ["autogroup:member"], "dst": ["autogroup:self:*"]},
                         {"action": "accept", "src": ["*"], "dst": ["*:9100"]}]}"#,
        );
        let after = w.compile(
            r#"{"acls": [{"action": "accept", "src": ["autogroup:member"], "dst": ["autogroup:self:*"]},
                         {"action": "accept", "src": ["*"], "dst": ["*:9100", "*:9200"]}]}"#,
        );
        // Every node's own `self` rules differ, yet the change is to the
        // `base` chunk they all share: one message.
        let plan = w.plan(Some(&before), Some(&after), &Change::policy());
        assert_eq!(plan.messages.len(), 1, "{:?}", summary(&plan));
        let (message, audience) = &plan.messages[0];
        assert_eq!(*audience, Audience::Only(ids(&[1, 2, 3, 4])));
        let chunks: Vec<&str> = message.packet_filters.keys().map(String::as_str).collect();
        assert_eq!(chunks, ["base"]);
        let ports: Vec<u16> = message.packet_filters["base"].as_ref().unwrap()[0]
            .dst_ports
            .iter()
            .map(|d| d.ports.first)
            .collect();
        assert_eq!(ports, [9100, 9200]);
        // Alice's two nodes keep distinct `self` chunks, which a full map sets
        // after clearing whatever the client held.
        let online = |_| true;
        let inputs = MapInputs {
            snapshot: &w.snapshot,
            users: &w.users,
            online: &online,
            settings: &w.settings,
            now: chrono::Utc::now(),
            policy: Some(&after),
        };
        let (one, two) = (
            inputs.packet_filters(NodeId(1)),
            inputs.packet_filters(NodeId(2)),
        );
        assert_eq!(one.keys().collect::<Vec<_>>(), ["*", "base", "self"]);
        assert_eq!(one["*"], None);
        assert_eq!(one["base"], two["base"]);
        assert_ne!(one["self"], two["self"]);
        // The tagged server has no `self` rules.
        assert!(!inputs.packet_filters(NodeId(4)).contains_key("self"));
    }

    #[test]
    fn a_removed_node_ends_its_sessions_and_everyone_forgets_it() {
        let w = world();
        let view = w.compile(ALICE_TO_SERVER);
        let plan = w.plan(Some(&view), Some(&view), &Change::node_removed(NodeId(2)));
        assert_eq!(plan.disconnect, ids(&[2]));
        for (_, _, removed, _, _) in summary(&plan) {
            assert_eq!(removed, vec![2]);
        }
    }
}

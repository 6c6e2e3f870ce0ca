//! Grants (and ACLs, as grants) → packet filters: each grant's sources and
//! destinations are resolved once for the whole tailnet, then every node gets
//! the rules whose destinations are its own addresses or the routes it serves
//! (Tailscale's "reduced" filter). [`Compiled`] holds the result for every node,
//! with the peers each node may see and its SSH policy and attributes.

use super::attrs;
use super::ipset::{IpSet, IpSetBuilder};
use super::parse::{Alias, AutoGroup, Grant, Policy, Ports, ProtoPorts};
use super::peers::{self, Matcher, Visibility};
use super::resolve::{Resolver, covers_internet, is_internet};
use super::{Device, Tailnet, ssh};
use crate::tailcfg::{CapGrant, CapMap, FilterRule, NetPortRange, PortRange, SSHPolicy};
use crate::types::{NodeId, UserId};
use serde_json::Value;
use std::collections::{BTreeMap, HashMap};
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::Arc;

/// Capabilities whose grant also gives the destination a capability towards
/// the source (Tailscale adds these "companion" rules itself).
const COMPANION_CAPS: &[(&str, &str)] = &[
    ("tailscale.com/cap/drive", "tailscale.com/cap/drive-sharer"),
    ("tailscale.com/cap/relay", "tailscale.com/cap/relay-target"),
];

/// The named parts of a node's packet filter, as `MapResponse.PacketFilters`
/// carries them (clients concatenate them in key order): the tailnet-wide rules
/// reduced to the node, its `autogroup:self` rules, and the rules of `via`
/// grants it routes for. Most nodes share their `base` part with many others,
/// so a change to it is one message for all of them.
pub const FILTER_CHUNKS: [&str; 3] = ["base", "self", "via"];

/// One named part of a node's packet filter. Nodes with equal parts share one.
#[derive(Debug, PartialEq)]
pub struct FilterChunk {
    rules: Vec<FilterRule>,
    print: u64,
}

impl FilterChunk {
    pub fn rules(&self) -> &[FilterRule] {
        &self.rules
    }

    /// Equal fingerprints, equal rules (across views too).
    pub fn fingerprint(&self) -> u64 {
        self.print
    }
}

/// Fingerprints of what a node receives: each filter chunk (in
/// [`FILTER_CHUNKS`] order), its SSH policy and its attributes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Prints {
    pub filter: [u64; 3],
    pub ssh: u64,
    pub attrs: u64,
}

/// How one node's view differs between two compiled views.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ViewChange {
    /// Which filter chunks changed, in [`FILTER_CHUNKS`] order.
    pub filter: [bool; 3],
    pub ssh: bool,
    pub attrs: bool,
    /// Peers it may see now and could not before.
    pub gained: Vec<NodeId>,
    /// Peers it could see before and may not now.
    pub lost: Vec<NodeId>,
}

fn fingerprint<T: Hash + ?Sized>(value: &T) -> u64 {
    let mut h = DefaultHasher::new();
    value.hash(&mut h);
    h.finish()
}

fn json_print<T: serde::Serialize + ?Sized>(value: &T) -> u64 {
    fingerprint(&serde_json::to_string(value).expect("policy output always serialises"))
}

/// The source lists of one build, each stored once: equal lists are one
/// `Arc`, so rules compare their sources by address and nodes share them.
#[derive(Default)]
struct SrcLists {
    lists: HashMap<Arc<[String]>, u64>,
    /// Content hashes by the address of the list.
    by_addr: HashMap<usize, u64>,
}

impl SrcLists {
    fn get(&mut self, list: Vec<String>) -> Arc<[String]> {
        if let Some((list, _)) = self.lists.get_key_value(list.as_slice()) {
            return list.clone();
        }
        let hash = fingerprint(&list);
        let list: Arc<[String]> = list.into();
        self.lists.insert(list.clone(), hash);
        self.by_addr.insert(addr_of(&list), hash);
        list
    }

    /// The content hash of a list this build made (hashed afresh otherwise).
    fn hash_of(&self, list: &Arc<[String]>) -> u64 {
        self.by_addr
            .get(&addr_of(list))
            .copied()
            .unwrap_or_else(|| fingerprint(&**list))
    }
}

fn addr_of(list: &Arc<[String]>) -> usize {
    Arc::as_ptr(list).cast::<String>() as usize
}

/// The fingerprint of filter rules whose sources `lists` made: sources count
/// by their content hash, so building it costs no more than the destinations.
fn chunk_print(rules: &[FilterRule], lists: &SrcLists) -> u64 {
    let mut h = DefaultHasher::new();
    for rule in rules {
        lists.hash_of(&rule.src_ips).hash(&mut h);
        rule.ip_proto.hash(&mut h);
        for d in &rule.dst_ports {
            (&d.ip, d.ports.first, d.ports.last).hash(&mut h);
        }
        if !rule.cap_grant.is_empty() {
            serde_json::to_string(&rule.cap_grant)
                .expect("capability grants always serialise")
                .hash(&mut h);
        }
    }
    h.finish()
}

/// Filter chunks of one build, equal ones stored once.
#[derive(Default)]
struct Chunks {
    by_print: HashMap<u64, Arc<FilterChunk>>,
}

impl Chunks {
    fn get(&mut self, rules: Vec<FilterRule>, lists: &SrcLists) -> Arc<FilterChunk> {
        let chunk = FilterChunk {
            print: chunk_print(&rules, lists),
            rules,
        };
        match self.by_print.get(&chunk.print) {
            Some(same) if **same == chunk => same.clone(),
            // A fingerprint collision stays unshared.
            Some(_) => Arc::new(chunk),
            None => {
                let chunk = Arc::new(chunk);
                self.by_print.insert(chunk.print, chunk.clone());
                chunk
            }
        }
    }
}

/// Settings the compiled view needs from outside the policy.
#[derive(Clone, Debug, Default)]
pub struct Options {
    /// `server_url` without a trailing slash: where `check` SSH rules send
    /// clients to re-authenticate.
    pub server_url: String,
}

/// A policy applied to one tailnet: what each node receives. Cheap to share;
/// rebuilt when the policy, the users or the nodes' identities change.
#[derive(Debug)]
pub struct Compiled {
    policy: Arc<Policy>,
    index: HashMap<NodeId, usize>,
    devices: Vec<Device>,
    /// Each device's packet filter, in [`FILTER_CHUNKS`].
    filters: Vec<[Arc<FilterChunk>; 3]>,
    /// Fingerprints of each device's filter, SSH policy and attributes, so
    /// that two views can be compared without comparing their contents.
    fingerprints: Vec<Prints>,
    visibility: Visibility,
    ssh: Vec<Option<Arc<SSHPolicy>>>,
    attrs: Vec<Arc<CapMap>>,
    /// Every route served in the tailnet, with the devices that may use it.
    route_viewers: HashMap<ipnet::IpNet, Vec<u64>>,
    /// Routes that `via` grants steer: (viewer index, route) → the routers the
    /// viewer's traffic to that route must go through.
    via_routers: HashMap<(usize, ipnet::IpNet), Vec<NodeId>>,
    /// Distinguishes views: every build gets the next number.
    generation: u64,
}

/// The generation of the next view built.
static GENERATIONS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

/// The source side of a compiled grant.
#[derive(Debug)]
struct Sources {
    /// What the rule matches (approved subnets included for `*`).
    set: IpSet,
    /// The wire `SrcIPs`.
    wire: Arc<[String]>,
}

/// One destination entry of a port rule: its wire text, its addresses and ports.
#[derive(Clone, Debug)]
struct Dst {
    text: String,
    set: IpSet,
    ports: PortRange,
}

/// A rule for the whole tailnet, before it is reduced per node.
#[derive(Debug)]
enum Body {
    Ports { proto: Vec<i32>, dsts: Vec<Dst> },
    Caps { grants: Vec<(IpSet, Arc<CapMap>)> },
}

#[derive(Debug)]
struct Rule {
    src: Arc<Sources>,
    body: Body,
}

impl Rule {
    /// Every address the rule lets traffic reach, for peer visibility.
    fn dst_set(&self) -> IpSet {
        let mut b = IpSetBuilder::default();
        match &self.body {
            Body::Ports { dsts, .. } => dsts.iter().for_each(|d| b.add_set(&d.set)),
            Body::Caps { grants } => grants.iter().for_each(|(s, _)| b.add_set(s)),
        }
        b.build()
    }
}

/// The parts of a grant that depend on the node looking at it.
#[derive(Debug)]
struct SelfPart {
    /// The grant's sources (addresses; only same-user devices count).
    src: IpSet,
    ip: Vec<ProtoPorts>,
    app: Arc<CapMap>,
}

#[derive(Debug)]
struct ViaPart {
    tags: Vec<String>,
    src: Arc<Sources>,
    /// Destination prefixes (as a set) and whether `autogroup:internet` is one.
    dst: IpSet,
    internet: bool,
    ip: Vec<ProtoPorts>,
}

impl Compiled {
    /// Applies `policy` to `tailnet`.
    pub fn new(policy: Arc<Policy>, tailnet: Tailnet<'_>, options: &Options) -> Compiled {
        let r = Resolver::new(&policy, tailnet);
        let devices = tailnet.devices;
        let n = devices.len();
        let approved_subnets = r.approved_subnets();

        let mut lists = SrcLists::default();
        let mut rules: Vec<Rule> = Vec::new();
        let mut selves: Vec<SelfPart> = Vec::new();
        let mut vias: Vec<ViaPart> = Vec::new();
        for grant in policy.all_grants() {
            compile_grant(
                &r,
                &grant,
                &approved_subnets,
                &mut lists,
                &mut Parts {
                    rules: &mut rules,
                    selves: &mut selves,
                    vias: &mut vias,
                },
            );
        }
        let rules = merge_rules(rules);

        // Which global rules (and which of their destinations) each device gets.
        let mut hits: Vec<Vec<(usize, usize)>> = vec![Vec::new(); n];
        let special: Vec<usize> = (0..n)
            .filter(|i| !devices[*i].subnet_routes.is_empty() || devices[*i].exit_node)
            .collect();
        for (ri, rule) in rules.iter().enumerate() {
            if let Body::Ports { dsts, .. } = &rule.body {
                for (di, dst) in dsts.iter().enumerate() {
                    let mut covered = r.devices_in(&dst.set);
                    for &i in &special {
                        if covered.binary_search(&i).is_err() && serves(&devices[i], &dst.set) {
                            covered.push(i);
                        }
                    }
                    for i in covered {
                        hits[i].push((ri, di));
                    }
                }
            }
        }

        let mut filters = Vec::with_capacity(n);
        let mut chunks = Chunks::default();
        let mut own_sources: HashMap<UserId, OwnSources> = HashMap::new();
        for (i, device) in devices.iter().enumerate() {
            let base = merge_wire(reduced_global(&rules, &mut hits[i], device));
            let own = merge_wire(self_rules(&r, &selves, i, &mut lists, &mut own_sources));
            let via = merge_wire(via_rules(&vias, device));
            filters.push([
                chunks.get(base, &lists),
                chunks.get(own, &lists),
                chunks.get(via, &lists),
            ]);
        }

        let matchers: Vec<Matcher> = rules
            .iter()
            .map(|rule| Matcher {
                src: rule.src.set.clone(),
                dst: rule.dst_set(),
            })
            .collect();
        // Companion capability rules run the other way, so they make peers too,
        // and are already in `rules`; self and via rules are per node.
        let mut pairs: Vec<(Vec<usize>, Vec<usize>)> = Vec::new();
        for part in &selves {
            for (_, members) in r.users_with_devices() {
                let srcs: Vec<usize> = members
                    .iter()
                    .copied()
                    .filter(|i| devices[*i].addrs.iter().any(|a| part.src.contains(*a)))
                    .collect();
                if !srcs.is_empty() {
                    pairs.push((srcs, members.to_vec()));
                }
            }
        }
        // A via grant makes its sources and the routers it names peers, and
        // shows the sources those routers' routes that lead to its destinations.
        let mut via_routers: HashMap<(usize, ipnet::IpNet), Vec<NodeId>> = HashMap::new();
        for via in &vias {
            let routers: Vec<usize> = (0..n)
                .filter(|i| via.routes_through(&devices[*i]))
                .collect();
            if routers.is_empty() {
                continue;
            }
            let srcs = peers::devices_matching(&r, &via.src.set);
            for &i in &routers {
                let mut steered: Vec<ipnet::IpNet> = devices[i]
                    .subnet_routes
                    .iter()
                    .filter(|route| via.dst.overlaps_prefix(route))
                    .copied()
                    .collect();
                if via.internet && devices[i].exit_node {
                    for exit in ["0.0.0.0/0", "::/0"] {
                        steered.push(exit.parse().expect("constant"));
                    }
                }
                for route in steered {
                    for &v in &srcs {
                        let list = via_routers.entry((v, route)).or_default();
                        if !list.contains(&devices[i].id) {
                            list.push(devices[i].id);
                        }
                    }
                }
            }
            pairs.push((srcs, routers));
        }
        let visibility = peers::visibility(&r, &matchers, &pairs);
        let mut routes: Vec<ipnet::IpNet> = devices
            .iter()
            .flat_map(|d| d.subnet_routes.iter().copied())
            .collect();
        if devices.iter().any(|d| d.exit_node) {
            routes.push("0.0.0.0/0".parse().expect("constant"));
            routes.push("::/0".parse().expect("constant"));
        }
        routes.sort_unstable();
        routes.dedup();
        let route_viewers = peers::route_viewers(&r, &matchers, &routes)
            .into_iter()
            .collect();

        let ssh = ssh::compile(&r, &options.server_url);
        let attrs = attrs::node_attrs(&r);
        // Nodes share SSH policies and attributes: each is hashed once.
        let mut ssh_prints: HashMap<usize, u64> = HashMap::new();
        let mut attr_prints: HashMap<usize, u64> = HashMap::new();
        let fingerprints = (0..n)
            .map(|i| Prints {
                filter: filters[i].each_ref().map(|c| c.print),
                ssh: ssh[i].as_ref().map_or(0, |s| {
                    *ssh_prints
                        .entry(Arc::as_ptr(s) as usize)
                        .or_insert_with(|| json_print(&**s))
                }),
                attrs: *attr_prints
                    .entry(Arc::as_ptr(&attrs[i]) as usize)
                    .or_insert_with(|| json_print(&*attrs[i])),
            })
            .collect();

        Compiled {
            index: devices.iter().enumerate().map(|(i, d)| (d.id, i)).collect(),
            devices: devices.to_vec(),
            filters,
            fingerprints,
            visibility,
            ssh,
            attrs,
            route_viewers,
            via_routers,
            generation: GENERATIONS.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
            policy,
        }
    }

    pub fn policy(&self) -> &Arc<Policy> {
        &self.policy
    }

    /// A number no other view shares.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// What differs for node `id` between `before` and this view: whether its
    /// packet filter, SSH policy or attributes changed, and which peers it
    /// gained and lost. `None` if `id` is in neither view.
    pub fn changes_for(&self, before: &Compiled, id: NodeId) -> Option<ViewChange> {
        self.compare(before).node(id)
    }

    /// This view against an older one, to ask about many nodes.
    pub fn compare<'a>(&'a self, before: &'a Compiled) -> Comparison<'a> {
        Comparison {
            same_prefix: self.same_prefix(before),
            after: self,
            before,
        }
    }

    /// Fingerprints of node `id`'s packet filter, SSH policy and attributes:
    /// equal fingerprints, equal contents.
    pub fn fingerprints(&self, id: NodeId) -> Option<Prints> {
        self.index.get(&id).map(|i| self.fingerprints[*i])
    }

    /// Whether `before`'s devices are, in order, the first devices of this view
    /// (nodes only joined since, with higher ids): then device indices agree.
    fn same_prefix(&self, before: &Compiled) -> bool {
        before.devices.len() <= self.devices.len()
            && before
                .devices
                .iter()
                .zip(&self.devices)
                .all(|(a, b)| a.id == b.id)
    }

    /// The packet filter of node `id` in parts, in [`FILTER_CHUNKS`] order
    /// (`None` for an unknown node).
    pub fn filter_chunks(&self, id: NodeId) -> Option<&[Arc<FilterChunk>; 3]> {
        self.index.get(&id).map(|i| &self.filters[*i])
    }

    /// The packet filter of node `id` as one list, rules with the same sources
    /// and protocols merged (`None` for an unknown node).
    pub fn filter(&self, id: NodeId) -> Option<Vec<FilterRule>> {
        let chunks = self.filter_chunks(id)?;
        Some(merge_wire(
            chunks
                .iter()
                .flat_map(|c| c.rules.iter().cloned())
                .collect(),
        ))
    }

    /// Whether `viewer` may see `peer` in its map (traffic is allowed in either
    /// direction, or the peer serves a route the viewer may use).
    pub fn can_see(&self, viewer: NodeId, peer: NodeId) -> bool {
        match (self.index.get(&viewer), self.index.get(&peer)) {
            (Some(a), Some(b)) => a != b && self.visibility.get(*a, *b),
            _ => false,
        }
    }

    /// The peers `viewer` may see.
    pub fn peers_of(&self, viewer: NodeId) -> Vec<NodeId> {
        let Some(a) = self.index.get(&viewer) else {
            return Vec::new();
        };
        self.visibility
            .row(*a)
            .map(|b| self.devices[b].id)
            .collect()
    }

    /// Whether `viewer` may use `route` (a subnet or exit route some peer serves):
    /// only then does the route appear in that peer's `AllowedIPs` in the viewer's
    /// map.
    pub fn route_visible(&self, viewer: NodeId, route: &ipnet::IpNet) -> bool {
        let (Some(i), Some(bits)) = (self.index.get(&viewer), self.route_viewers.get(route)) else {
            return false;
        };
        bits[i / 64] & (1 << (i % 64)) != 0
    }

    /// The routers a `via` grant sends `viewer`'s traffic for `route` through,
    /// if one does. Where no other rule gives the viewer the route, it sees it
    /// only on those routers, whichever router is primary for everyone else.
    pub fn via_routers(&self, viewer: NodeId, route: &ipnet::IpNet) -> Option<&[NodeId]> {
        let i = self.index.get(&viewer)?;
        self.via_routers.get(&(*i, *route)).map(Vec::as_slice)
    }

    /// The SSH policy of node `id`; `None` when the policy has no `ssh` section.
    pub fn ssh_policy(&self, id: NodeId) -> Option<&Arc<SSHPolicy>> {
        self.index.get(&id).and_then(|i| self.ssh[*i].as_ref())
    }

    /// The node attributes `nodeAttrs` (and `randomizeClientPort`) give node `id`.
    pub fn node_attrs(&self, id: NodeId) -> Option<&Arc<CapMap>> {
        self.index.get(&id).map(|i| &self.attrs[*i])
    }

    /// The devices the view was built from.
    pub fn devices(&self) -> &[Device] {
        &self.devices
    }
}

/// Two views of the same tailnet, compared node by node.
pub struct Comparison<'a> {
    after: &'a Compiled,
    before: &'a Compiled,
    /// Device indices agree between the two views.
    same_prefix: bool,
}

impl Comparison<'_> {
    /// What differs for node `id`; see [`Compiled::changes_for`].
    pub fn node(&self, id: NodeId) -> Option<ViewChange> {
        let (after, before) = (self.after, self.before);
        let (new_i, old_i) = (after.index.get(&id), before.index.get(&id));
        let new_i = *new_i?;
        let Some(&old_i) = old_i else {
            return Some(ViewChange {
                filter: [true; 3],
                ssh: true,
                attrs: true,
                gained: after.peers_of(id),
                lost: Vec::new(),
            });
        };
        let (now, was) = (after.fingerprints[new_i], before.fingerprints[old_i]);
        let (gained, lost) = if self.same_prefix {
            after.visibility.row_diff(new_i, &before.visibility, old_i)
        } else {
            let old: std::collections::HashSet<usize> = before.visibility.row(old_i).collect();
            let new: std::collections::HashSet<NodeId> = after
                .visibility
                .row(new_i)
                .map(|b| after.devices[b].id)
                .collect();
            let old_ids: std::collections::HashSet<NodeId> =
                old.iter().map(|b| before.devices[*b].id).collect();
            (
                new.difference(&old_ids).map(|id| after.index[id]).collect(),
                old_ids
                    .difference(&new)
                    .map(|id| before.index[id])
                    .collect(),
            )
        };
        Some(ViewChange {
            filter: [0, 1, 2].map(|c| now.filter[c] != was.filter[c]),
            ssh: now.ssh != was.ssh,
            attrs: now.attrs != was.attrs,
            gained: gained.into_iter().map(|b| after.devices[b].id).collect(),
            lost: lost.into_iter().map(|b| before.devices[b].id).collect(),
        })
    }
}

/// Whether a destination set reaches `device` through a route it serves: an
/// approved subnet route it overlaps, or the internet for an exit node.
fn serves(device: &Device, set: &IpSet) -> bool {
    device.subnet_routes.iter().any(|r| set.overlaps_prefix(r))
        || (device.exit_node && is_internet(set))
}

/// Where compiled grants go: tailnet-wide rules, `autogroup:self` parts and
/// `via` parts.
struct Parts<'a> {
    rules: &'a mut Vec<Rule>,
    selves: &'a mut Vec<SelfPart>,
    vias: &'a mut Vec<ViaPart>,
}

fn compile_grant(
    r: &Resolver<'_>,
    grant: &Grant,
    approved_subnets: &IpSet,
    lists: &mut SrcLists,
    parts: &mut Parts<'_>,
) {
    let Parts {
        rules,
        selves,
        vias,
    } = parts;
    if grant.src.is_empty() || grant.dst.is_empty() {
        return;
    }
    let src = sources(r, &grant.src, approved_subnets, lists);
    let app: Arc<CapMap> = Arc::new(grant.app.clone());
    if !grant.via.is_empty() {
        if src.set.is_empty() {
            return;
        }
        let internet = grant.dst.contains(&Alias::AutoGroup(AutoGroup::Internet));
        let dst = r.resolve_all(
            grant
                .dst
                .iter()
                .filter(|d| **d != Alias::AutoGroup(AutoGroup::Internet)),
        );
        vias.push(ViaPart {
            tags: grant.via.clone(),
            src: Arc::new(src),
            dst,
            internet,
            ip: grant.ip.clone(),
        });
        return;
    }
    let is_self = |d: &&Alias| **d == Alias::AutoGroup(AutoGroup::SelfDevices);
    if grant.dst.iter().any(|d| is_self(&d)) {
        selves.push(SelfPart {
            src: src.set.clone(),
            ip: grant.ip.clone(),
            app: app.clone(),
        });
    }
    let others: Vec<&Alias> = grant.dst.iter().filter(|d| !is_self(d)).collect();
    if others.is_empty() {
        return;
    }
    let src = Arc::new(src);
    if !src.set.is_empty() {
        for pp in &grant.ip {
            let mut dsts = Vec::new();
            for alias in &others {
                if **alias == Alias::Wildcard {
                    for p in &pp.ports {
                        dsts.push(Dst {
                            text: "*".into(),
                            set: IpSet::all(),
                            ports: wire_ports(*p),
                        });
                    }
                    continue;
                }
                let set = r.resolve(alias);
                for prefix in set.prefixes() {
                    let text = if prefix.prefix_len() == prefix.max_prefix_len() {
                        prefix.addr().to_string()
                    } else {
                        prefix.to_string()
                    };
                    let one = IpSet::from_prefix(prefix);
                    for p in &pp.ports {
                        dsts.push(Dst {
                            text: text.clone(),
                            set: one.clone(),
                            ports: wire_ports(*p),
                        });
                    }
                }
            }
            if !dsts.is_empty() {
                rules.push(Rule {
                    src: src.clone(),
                    body: Body::Ports {
                        proto: pp.protocol.numbers(),
                        dsts,
                    },
                });
            }
        }
    }
    if !grant.app.is_empty() {
        let mut grants = Vec::new();
        let mut dst_all = IpSetBuilder::default();
        for alias in &others {
            let set = r.resolve(alias);
            if set.is_empty() {
                continue;
            }
            dst_all.add_set(&set);
            grants.push((set, app.clone()));
        }
        if grants.is_empty() {
            return;
        }
        rules.push(Rule {
            src: src.clone(),
            body: Body::Caps { grants },
        });
        let mut dst_all = dst_all.build();
        if others.contains(&&Alias::Wildcard) {
            dst_all = dst_all.union(approved_subnets);
        }
        for (cap, companion) in COMPANION_CAPS {
            if grant.app.contains_key(*cap) {
                let reversed = Arc::new(Sources {
                    wire: lists.get(dst_all.strings()),
                    set: dst_all.clone(),
                });
                rules.push(Rule {
                    src: reversed,
                    body: Body::Caps {
                        grants: vec![(
                            src_without_routes(&src.set, approved_subnets, &grant.src),
                            Arc::new(BTreeMap::from([(
                                (*companion).to_owned(),
                                Vec::<Value>::new(),
                            )])),
                        )],
                    },
                });
            }
        }
    }
}

/// A companion rule grants back to the grant's sources as resolved (for `*`,
/// the Tailscale ranges without the approved subnets added for matching).
fn src_without_routes(set: &IpSet, approved_subnets: &IpSet, src: &[Alias]) -> IpSet {
    if src.contains(&Alias::Wildcard) {
        set.difference(approved_subnets)
            .union(&set.intersection(&super::resolve::WILDCARD))
    } else {
        set.clone()
    }
}

/// Resolves a grant's sources: the union of its aliases, plus every approved
/// subnet when `*` is one of them; `autogroup:danger-all` is written `*`.
fn sources(
    r: &Resolver<'_>,
    src: &[Alias],
    approved_subnets: &IpSet,
    lists: &mut SrcLists,
) -> Sources {
    let danger = src.contains(&Alias::AutoGroup(AutoGroup::DangerAll));
    let mut set = r.resolve_all(src);
    if src.contains(&Alias::Wildcard) {
        set = set.union(approved_subnets);
    }
    let wire = lists.get(if danger {
        vec!["*".to_owned()]
    } else {
        set.strings()
    });
    Sources { set, wire }
}

fn wire_ports(p: Ports) -> PortRange {
    PortRange {
        first: p.first,
        last: p.last,
    }
}

/// Merges port rules with the same sources and protocols (keeping the first's
/// place), as Tailscale sends them.
fn merge_rules(rules: Vec<Rule>) -> Vec<Rule> {
    let mut out: Vec<Rule> = Vec::with_capacity(rules.len());
    let mut seen: HashMap<(usize, Vec<i32>), usize> = HashMap::new();
    for rule in rules {
        let Body::Ports { proto, dsts } = rule.body else {
            out.push(rule);
            continue;
        };
        let key = (addr_of(&rule.src.wire), proto.clone());
        if let Some(&at) = seen.get(&key)
            && let Body::Ports { dsts: existing, .. } = &mut out[at].body
        {
            existing.extend(dsts);
            continue;
        }
        seen.insert(key, out.len());
        out.push(Rule {
            src: rule.src,
            body: Body::Ports { proto, dsts },
        });
    }
    out
}

/// The global rules as `device` receives them: port rules keep only the
/// destinations that reach it (found in `hits`); capability rules keep the
/// grants that name its addresses (narrowed to them) or routes it serves.
fn reduced_global(rules: &[Rule], hits: &mut [(usize, usize)], device: &Device) -> Vec<FilterRule> {
    hits.sort_unstable();
    let mut out = Vec::new();
    let mut h = 0;
    for (ri, rule) in rules.iter().enumerate() {
        match &rule.body {
            Body::Ports { proto, dsts } => {
                let mut kept = Vec::new();
                while h < hits.len() && hits[h].0 == ri {
                    let d = &dsts[hits[h].1];
                    kept.push(NetPortRange {
                        ip: d.text.clone(),
                        ports: d.ports,
                    });
                    h += 1;
                }
                if !kept.is_empty() {
                    out.push(FilterRule {
                        src_ips: rule.src.wire.clone(),
                        dst_ports: kept,
                        ip_proto: proto.clone(),
                        cap_grant: Vec::new(),
                    });
                }
            }
            Body::Caps { grants } => {
                let mut cap_grant = Vec::new();
                for (set, caps) in grants {
                    let mut dsts: Vec<ipnet::IpNet> = device
                        .addrs
                        .iter()
                        .filter(|a| set.contains(**a))
                        .map(|a| ipnet::IpNet::from(*a))
                        .collect();
                    for route in &device.subnet_routes {
                        for p in set.prefixes() {
                            if p.contains(&route.network()) || route.contains(&p.network()) {
                                dsts.push(p);
                            }
                        }
                    }
                    dsts.sort_unstable();
                    dsts.dedup();
                    if !dsts.is_empty() {
                        cap_grant.push(CapGrant {
                            dsts,
                            cap_map: (**caps).clone(),
                        });
                    }
                }
                if !cap_grant.is_empty() {
                    out.push(FilterRule {
                        src_ips: rule.src.wire.clone(),
                        dst_ports: Vec::new(),
                        ip_proto: Vec::new(),
                        cap_grant,
                    });
                }
            }
        }
    }
    out
}

/// The sources of one user's `autogroup:self` rules, the same for each of the
/// user's devices: per self part, the user's devices among its sources (as
/// wire list and addresses); and all of the user's devices, for companion
/// capabilities.
struct OwnSources {
    parts: Vec<Option<(Arc<[String]>, IpSet)>>,
    everyone: Arc<[String]>,
}

impl OwnSources {
    fn new(r: &Resolver<'_>, selves: &[SelfPart], user: UserId, lists: &mut SrcLists) -> Self {
        let devices = r.devices();
        let same_user = r.devices_of(user);
        let parts = selves
            .iter()
            .map(|part| {
                let srcs: Vec<usize> = same_user
                    .iter()
                    .copied()
                    .filter(|j| devices[*j].addrs.iter().any(|a| part.src.contains(*a)))
                    .collect();
                if srcs.is_empty() {
                    return None;
                }
                let set = r.addrs_of(&srcs);
                Some((lists.get(set.strings()), set))
            })
            .collect();
        OwnSources {
            parts,
            everyone: lists.get(r.addrs_of(same_user).strings()),
        }
    }
}

/// `autogroup:self` rules for device `i`: sources are the same user's devices
/// among the grant's sources, destinations the device's own addresses.
fn self_rules(
    r: &Resolver<'_>,
    selves: &[SelfPart],
    i: usize,
    lists: &mut SrcLists,
    memo: &mut HashMap<UserId, OwnSources>,
) -> Vec<FilterRule> {
    let device = &r.devices()[i];
    let mut out = Vec::new();
    let Some(user) = device.user.filter(|_| !device.is_tagged()) else {
        return out;
    };
    if selves.is_empty() {
        return out;
    }
    let own_sources = memo
        .entry(user)
        .or_insert_with(|| OwnSources::new(r, selves, user, lists));
    let own_prefixes: Vec<ipnet::IpNet> = device
        .addrs
        .iter()
        .map(|a| ipnet::IpNet::from(*a))
        .collect();
    for (part, sources) in selves.iter().zip(&own_sources.parts) {
        let Some((src, src_set)) = sources else {
            continue;
        };
        for pp in &part.ip {
            let dst_ports: Vec<NetPortRange> = device
                .addrs
                .iter()
                .flat_map(|a| {
                    pp.ports.iter().map(move |p| NetPortRange {
                        ip: a.to_string(),
                        ports: wire_ports(*p),
                    })
                })
                .collect();
            if !dst_ports.is_empty() {
                out.push(FilterRule {
                    src_ips: src.clone(),
                    dst_ports,
                    ip_proto: pp.protocol.numbers(),
                    cap_grant: Vec::new(),
                });
            }
        }
        if !part.app.is_empty() {
            out.push(FilterRule {
                src_ips: src.clone(),
                dst_ports: Vec::new(),
                ip_proto: Vec::new(),
                cap_grant: vec![CapGrant {
                    dsts: own_prefixes.clone(),
                    cap_map: (*part.app).clone(),
                }],
            });
            // Companion capabilities go back to every same-user source.
            let own = IpSet::from_addrs(device.addrs.iter().copied());
            for (cap, companion) in COMPANION_CAPS {
                if part.app.contains_key(*cap) && src_set.overlaps(&own) {
                    out.push(FilterRule {
                        src_ips: own_sources.everyone.clone(),
                        dst_ports: Vec::new(),
                        ip_proto: Vec::new(),
                        cap_grant: vec![CapGrant {
                            dsts: own_prefixes.clone(),
                            cap_map: BTreeMap::from([((*companion).to_owned(), Vec::new())]),
                        }],
                    });
                }
            }
        }
    }
    out
}

impl ViaPart {
    /// Whether traffic of this grant goes through `device`: it carries one of
    /// the via tags and serves a route to the destinations.
    fn routes_through(&self, device: &Device) -> bool {
        self.tags.iter().any(|t| device.has_tag(t))
            && (device
                .subnet_routes
                .iter()
                .any(|r| self.dst.overlaps_prefix(r))
                || (self.internet && device.exit_node))
    }
}

/// Rules of `via` grants for a router carrying one of the via tags: the
/// destinations its approved routes serve (and the internet, for an exit node).
fn via_rules(vias: &[ViaPart], device: &Device) -> Vec<FilterRule> {
    let mut out = Vec::new();
    for via in vias {
        if !via.tags.iter().any(|t| device.has_tag(t)) {
            continue;
        }
        let mut prefixes: Vec<ipnet::IpNet> = via
            .dst
            .prefixes()
            .into_iter()
            .filter(|p| {
                device
                    .subnet_routes
                    .iter()
                    .any(|r| r.contains(&p.network()) || p.contains(&r.network()))
            })
            .collect();
        if via.internet && device.exit_node {
            prefixes.extend(super::resolve::INTERNET.prefixes());
        }
        if prefixes.is_empty() {
            continue;
        }
        for pp in &via.ip {
            let dst_ports: Vec<NetPortRange> = prefixes
                .iter()
                .flat_map(|p| {
                    pp.ports.iter().map(move |ports| NetPortRange {
                        ip: p.to_string(),
                        ports: wire_ports(*ports),
                    })
                })
                .collect();
            out.push(FilterRule {
                src_ips: via.src.wire.clone(),
                dst_ports,
                ip_proto: pp.protocol.numbers(),
                cap_grant: Vec::new(),
            });
        }
    }
    out
}

/// Merges wire rules with the same sources and protocols. Sources compare by
/// address: one build stores each list once.
fn merge_wire(rules: Vec<FilterRule>) -> Vec<FilterRule> {
    let mut out: Vec<FilterRule> = Vec::with_capacity(rules.len());
    let mut seen: HashMap<(usize, Vec<i32>), usize> = HashMap::new();
    for rule in rules {
        if !rule.cap_grant.is_empty() {
            out.push(rule);
            continue;
        }
        let key = (addr_of(&rule.src_ips), rule.ip_proto.clone());
        if let Some(&at) = seen.get(&key) {
            out[at].dst_ports.extend(rule.dst_ports);
            continue;
        }
        seen.insert(key, out.len());
        out.push(rule);
    }
    out
}

#[allow(dead_code)]
fn _uses(_: fn(&IpSet) -> bool) {}
const _: fn(&IpSet) -> bool = covers_internet;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::testing::{device, user};
    use crate::types::User;

    /// alice (1) owns 1 and 2, bob (2) owns 3, 4 is tag:server, 5 a router of
    /// 10.1.0.0/16.
    fn compile(policy: &str) -> Compiled {
        let users: Vec<User> = vec![user(1, "alice", "alice@example.com"), user(2, "bob", "")];
        let mut devices = vec![
            device(1, Some(1), &[]),
            device(2, Some(1), &[]),
            device(3, Some(2), &[]),
            device(4, None, &["tag:server"]),
            device(5, None, &["tag:router"]),
        ];
        devices[4].subnet_routes = vec!["10.1.0.0/16".parse().unwrap()];
        Compiled::new(
            Arc::new(Policy::parse(policy).unwrap()),
            Tailnet {
                users: &users,
                devices: &devices,
            },
            &Options::default(),
        )
    }

    fn dsts(c: &Compiled, id: u64) -> Vec<String> {
        c.filter(NodeId(id))
            .unwrap()
            .iter()
            .flat_map(|r| {
                r.dst_ports
                    .iter()
                    .map(|d| format!("{}:{}", d.ip, d.ports.first))
            })
            .collect()
    }

    fn peers(c: &Compiled, id: u64) -> Vec<u64> {
        c.peers_of(NodeId(id)).into_iter().map(|n| n.0).collect()
    }

    const POLICY: &str = r#"{
        "tagOwners": {"tag:server": [], "tag:router": []},
        "acls": [
            {"action": "accept", "src": ["alice@example.com"], "dst": ["tag:server:22"]},
            {"action": "accept", "src": ["autogroup:member"], "dst": ["autogroup:self:*"]},
            {"action": "accept", "src": ["bob@"], "dst": ["10.1.2.0/24:443"]},
        ],
    }"#;

    #[test]
    fn each_node_gets_only_the_rules_that_reach_it() {
        let c = compile(POLICY);
        assert_eq!(dsts(&c, 4), ["100.64.0.4:22", "fd7a:115c:a1e0::4:22"]);
        // Alice's devices reach each other (autogroup:self), each only itself as dst.
        assert_eq!(dsts(&c, 1), ["100.64.0.1:0", "fd7a:115c:a1e0::1:0"]);
        // The router gets the rule for the subnet behind it.
        assert_eq!(dsts(&c, 5), ["10.1.2.0/24:443"]);
        // Bob's device is nobody's destination but its own (self).
        assert_eq!(dsts(&c, 3), ["100.64.0.3:0", "fd7a:115c:a1e0::3:0"]);
    }

    #[test]
    fn visibility_is_mutual_and_counts_routes() {
        let c = compile(POLICY);
        assert_eq!(peers(&c, 1), [2, 4]);
        assert_eq!(peers(&c, 4), [1, 2]);
        // Bob may use a subnet behind the router: they see each other.
        assert_eq!(peers(&c, 3), [5]);
        assert_eq!(peers(&c, 5), [3]);
        assert!(c.route_visible(NodeId(3), &"10.1.0.0/16".parse().unwrap()));
        assert!(!c.route_visible(NodeId(1), &"10.1.0.0/16".parse().unwrap()));
    }

    #[test]
    fn a_policy_without_rules_allows_all_and_empty_rules_allow_none() {
        let open = compile(r#"{"tagOwners": {"tag:server": [], "tag:router": []}}"#);
        assert_eq!(peers(&open, 1), [2, 3, 4, 5]);
        let closed = compile(r#"{"acls": []}"#);
        assert!(peers(&closed, 1).is_empty());
        assert!(closed.filter(NodeId(1)).unwrap().is_empty());
    }

    #[test]
    fn identity_provider_groups_fill_policy_groups_of_the_same_name() {
        let policy = r#"{
            "groups": {"group:engineering": [], "group:ops": ["bob@"]},
            "tagOwners": {"tag:server": []},
            "acls": [
                {"action": "accept", "src": ["group:engineering"], "dst": ["tag:server:22"]},
                {"action": "accept", "src": ["group:ops"], "dst": ["tag:server:80"]},
            ],
        }"#;
        let mut alice = user(1, "alice", "alice@example.com");
        let mut bob = user(2, "bob", "");
        let devices = vec![
            device(1, Some(1), &[]),
            device(3, Some(2), &[]),
            device(4, None, &["tag:server"]),
        ];
        let build = |users: &[User]| {
            Compiled::new(
                Arc::new(Policy::parse(policy).unwrap()),
                Tailnet {
                    users,
                    devices: &devices,
                },
                &Options::default(),
            )
        };
        let sources = |c: &Compiled, port: u16| -> Vec<String> {
            let mut srcs: Vec<String> = c
                .filter(NodeId(4))
                .unwrap()
                .iter()
                .filter(|r| r.dst_ports.iter().any(|d| d.ports.first == port))
                .flat_map(|r| r.src_ips.iter().map(|s| s.to_string()))
                .collect();
            srcs.sort();
            srcs
        };
        // Nobody is in engineering yet: its rule reaches no one.
        let c = build(&[alice.clone(), bob.clone()]);
        assert!(sources(&c, 22).is_empty());
        assert!(!c.peers_of(NodeId(1)).contains(&NodeId(4)));
        // The provider puts alice in engineering (Keycloak spells it with a slash)
        // and bob, already listed in ops, in ops too: he is counted once.
        alice.groups = vec!["/engineering".into()];
        bob.groups = vec!["ops".into(), "engineering-lead".into()];
        let c = build(&[alice.clone(), bob.clone()]);
        assert_eq!(sources(&c, 22), ["100.64.0.1", "fd7a:115c:a1e0::1"]);
        assert_eq!(sources(&c, 80), ["100.64.0.3", "fd7a:115c:a1e0::3"]);
        assert!(c.peers_of(NodeId(1)).contains(&NodeId(4)));
        // A group the policy does not define gives nothing, whatever the provider says.
        alice.groups = vec!["admins".into()];
        let c = build(&[alice, bob]);
        assert!(sources(&c, 22).is_empty());
    }

    #[test]
    fn views_compare_by_fingerprint() {
        let a = compile(POLICY);
        let b = compile(&POLICY.replace("tag:server:22", "tag:server:2222"));
        let server = b.changes_for(&a, NodeId(4)).unwrap();
        assert_eq!(
            server.filter,
            [true, false, false],
            "only its base chunk changed"
        );
        assert!(server.gained.is_empty() && server.lost.is_empty());
        let laptop = b.changes_for(&a, NodeId(1)).unwrap();
        assert_eq!(laptop.filter, [false; 3], "node 1's filter did not change");
        let same = a.changes_for(&a, NodeId(3)).unwrap();
        assert_eq!(same, ViewChange::default());
        assert_ne!(a.generation(), b.generation());
    }
}

//! Builds `MapResponse`s: pure functions of a node snapshot, the users, who is
//! online, the DERP map and the map settings. No IO, no locks held.

use crate::config::{Config, ExtraRecord};
use crate::policy::{Compiled, FILTER_CHUNKS};
use crate::state::Snapshot;
use crate::tailcfg::{
    self, DERPMap, DNSConfig, DNSRecord, FilterRule, MapResponse, PeerChange, Resolver, UserProfile,
};
use crate::types::{Node, NodeId, Timestamp, User, UserId};
use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

/// The user id clients see for nodes owned by no user (tagged nodes), as Headscale uses.
pub const TAGGED_USER_ID: u64 = 2_147_455_555;
const TAGGED_USER_NAME: &str = "tagged-devices";

/// The `PacketFilters` key that, set to `null`, clears every chunk first.
const CLEAR_FILTERS: &str = "*";

/// `MapResponse.PacketFilters`: filter chunks by name, `None` to delete one.
pub type PacketFilters = std::collections::BTreeMap<String, Option<Vec<FilterRule>>>;

/// `DNSConfig.ExtraRecords`: from `dns.extra_records`, or the file
/// `dns.extra_records_path` (replaced when it changes).
pub type ExtraRecords = Arc<arc_swap::ArcSwap<Vec<DNSRecord>>>;

/// Everything about maps that comes from the configuration, computed once.
#[derive(Clone, Debug, Default)]
pub struct MapSettings {
    /// The MagicDNS suffix; node names are `<given name>.<base_domain>.`.
    pub base_domain: String,
    /// `Domain`: the tailnet's display name (the server URL's host, as Headscale sends).
    pub domain: String,
    /// The DNS configuration every node shares, without the extra records.
    pub dns: Option<DNSConfig>,
    pub extra_records: ExtraRecords,
    /// Each node's `CertDomains` names it (`dns.authoritative` is on, so
    /// `tailscale cert` can publish its challenges).
    pub cert_domains: bool,
    pub disable_log_tail: bool,
    pub taildrop: bool,
    /// `auto_update.enabled`, sent as `default-auto-update`.
    pub auto_update: bool,
    /// `randomize_client_port` as a node attribute.
    pub randomize_client_port: bool,
}

impl MapSettings {
    pub fn from_config(config: &Config) -> MapSettings {
        let domain = config.server_url.host().to_owned();
        MapSettings {
            base_domain: config.dns.base_domain.trim_matches('.').to_owned(),
            domain,
            dns: dns_config(config),
            extra_records: Arc::new(arc_swap::ArcSwap::from_pointee(extra_records(
                &config.dns.extra_records,
            ))),
            cert_domains: config.dns.authoritative.is_some(),
            disable_log_tail: !config.logtail_enabled,
            taildrop: config.taildrop_enabled,
            auto_update: config.auto_update_enabled,
            randomize_client_port: config.randomize_client_port,
        }
    }
}

/// The client DNS configuration from `dns.*`, or `None` when there is nothing to say.
fn dns_config(config: &Config) -> Option<DNSConfig> {
    let dns = &config.dns;
    let resolvers: Vec<Resolver> = dns.nameservers_global.iter().map(Resolver::new).collect();
    let mut out = DNSConfig::default();
    if dns.override_local_dns {
        out.resolvers = resolvers;
    } else {
        out.fallback_resolvers = resolvers;
    }
    for (domain, servers) in &dns.nameservers_split {
        out.routes
            .insert(domain.clone(), servers.iter().map(Resolver::new).collect());
    }
    let base = dns.base_domain.trim_matches('.');
    if dns.magic_dns && !base.is_empty() {
        out.proxied = true;
        out.domains.push(base.to_owned());
        // The MagicDNS zone is answered by 100.100.100.100 only.
        out.routes.entry(base.to_owned()).or_default();
    }
    out.domains.extend(
        dns.search_domains
            .iter()
            .filter(|d| d.as_str() != base)
            .cloned(),
    );
    (out != DNSConfig::default()).then_some(out)
}

/// `dns.extra_records` (or the records file's contents) as clients get them.
pub fn extra_records(records: &[ExtraRecord]) -> Vec<DNSRecord> {
    records
        .iter()
        .map(|r| DNSRecord {
            name: r.name.clone(),
            r#type: r.record_type.clone(),
            value: r.value.clone(),
        })
        .collect()
}

/// Inputs shared by every message built in one go.
pub struct MapInputs<'a> {
    pub snapshot: &'a Snapshot,
    pub users: &'a HashMap<UserId, User>,
    pub online: &'a dyn Fn(NodeId) -> bool,
    pub settings: &'a MapSettings,
    pub now: Timestamp,
    /// The access policy in force; `None`: every node sees every node and all
    /// traffic is allowed.
    pub policy: Option<&'a Compiled>,
}

/// The node attribute that takes a node's IPv4 address away.
const DISABLE_IPV4: &str = "disable-ipv4";

impl MapInputs<'_> {
    /// A node as every peer sees it when the policy hides none of its routes.
    pub fn peer(&self, node: &Node) -> tailcfg::Node {
        let routes = self.served_routes(node);
        self.peer_with_routes(node, routes, false)
    }

    /// A node as `viewer` sees it: its routes only where the policy lets the
    /// viewer use them.
    pub fn peer_for(&self, viewer: NodeId, node: &Node) -> tailcfg::Node {
        let routes = self.routes_for(viewer, node);
        self.peer_with_routes(node, routes, self.ipv4_disabled(viewer))
    }

    /// Whether `node` has the `disable-ipv4` attribute: it has no IPv4 address,
    /// and (as a viewer) sees no peer's.
    pub fn ipv4_disabled(&self, node: NodeId) -> bool {
        self.attrs(node)
            .is_some_and(|a| a.contains_key(DISABLE_IPV4))
    }

    /// The routes of `node` that `viewer` may use: the subnets it is primary
    /// for and its exit routes, filtered by the policy.
    pub fn routes_for(&self, viewer: NodeId, node: &Node) -> Vec<IpNet> {
        let Some(policy) = self.policy else {
            return self.served_routes(node);
        };
        let primary = self.snapshot.primary_routes(node.id);
        self.snapshot
            .routes(node.id)
            .iter()
            .filter(|r| r.advertised && r.approved)
            .map(|r| r.prefix)
            .filter(|r| {
                if policy.route_visible(viewer, r) {
                    return r.prefix_len() == 0 || primary.contains(r);
                }
                // Only a via grant gives the viewer this route: it picks the
                // router, the primary if it is one of the grant's, else the
                // first of them.
                policy.via_routers(viewer, r).is_some_and(|routers| {
                    let chosen = self
                        .snapshot
                        .primary_for(r)
                        .filter(|p| routers.contains(p))
                        .or_else(|| routers.iter().min().copied());
                    chosen == Some(node.id)
                })
            })
            .collect()
    }

    /// What `node` serves to peers: the subnets it is primary for, then its
    /// approved exit routes.
    fn served_routes(&self, node: &Node) -> Vec<IpNet> {
        let mut routes = self.snapshot.primary_routes(node.id);
        routes.extend(
            self.snapshot
                .routes(node.id)
                .iter()
                .filter(|r| r.is_exit() && r.advertised && r.approved)
                .map(|r| r.prefix),
        );
        routes
    }

    fn peer_with_routes(&self, node: &Node, routes: Vec<IpNet>, no_v4: bool) -> tailcfg::Node {
        let online = (self.online)(node.id);
        let mut out = self.base_node(node);
        if no_v4 {
            out.addresses.retain(|a| !a.addr().is_ipv4());
        }
        let mut allowed = out.addresses.clone();
        allowed.extend(routes.iter().copied());
        out.primary_routes = routes
            .iter()
            .filter(|r| r.prefix_len() != 0)
            .copied()
            .collect();
        // Clients offer a peer as a suggested exit node when it says so.
        if routes.iter().any(|r| r.prefix_len() == 0) {
            out.cap_map.insert("suggest-exit-node".into(), Vec::new());
        }
        out.allowed_ips = Some(allowed);
        out.online = Some(online);
        if !online {
            out.last_seen = node.last_seen;
        }
        out
    }

    /// The policy's node attributes for `id` (none without a policy).
    fn attrs(&self, id: NodeId) -> Option<&tailcfg::CapMap> {
        self.policy.and_then(|p| p.node_attrs(id)).map(|a| &**a)
    }

    /// A node as it sees itself.
    pub fn self_node(&self, node: &Node) -> tailcfg::Node {
        let mut out = self.base_node(node);
        out.online = Some(true);
        // Its own view lists every route it serves, primary or not.
        let mut allowed = out.addresses.clone();
        allowed.extend(
            self.snapshot
                .routes(node.id)
                .iter()
                .filter(|r| r.advertised && r.approved)
                .map(|r| r.prefix),
        );
        out.allowed_ips = Some(allowed);
        out.primary_routes = self.snapshot.primary_routes(node.id);
        let mut caps = tailcfg::CapMap::new();
        caps.insert("https://tailscale.com/cap/is-admin".into(), vec![]);
        caps.insert("https://tailscale.com/cap/ssh".into(), vec![]);
        if self.settings.taildrop {
            caps.insert("https://tailscale.com/cap/file-sharing".into(), vec![]);
        }
        if self.settings.randomize_client_port {
            caps.insert("randomize-client-port".into(), vec![]);
        }
        // MagicDNS answers AAAA queries for peers too.
        caps.insert("magicdns-aaaa".into(), vec![]);
        // The macOS and iOS exit-node menus show the suggested exit node only with this.
        caps.insert("suggest-exit-node-ui".into(), vec![]);
        caps.insert(
            "default-auto-update".into(),
            vec![serde_json::Value::Bool(self.settings.auto_update)],
        );
        if let Some(attrs) = self.attrs(node.id) {
            for (k, v) in attrs {
                caps.insert(k.clone(), v.clone());
            }
        }
        out.cap_map = caps;
        out
    }

    fn base_node(&self, node: &Node) -> tailcfg::Node {
        let expired = node.is_expired(self.now);
        let no_v4 = self.ipv4_disabled(node.id);
        let addresses: Vec<IpNet> = node
            .ipv4
            .filter(|_| !no_v4)
            .map(|ip| IpNet::V4(Ipv4Net::from(ip)))
            .into_iter()
            .chain(node.ipv6.map(|ip| IpNet::V6(Ipv6Net::from(ip))))
            .collect();
        let hostinfo = node
            .hostinfo
            .as_deref()
            .and_then(|h| tailcfg::Hostinfo::from_json(h).ok());
        let home_derp = hostinfo
            .as_ref()
            .and_then(tailcfg::Hostinfo::preferred_derp)
            .unwrap_or(0);
        tailcfg::Node {
            id: node.id.0,
            stable_id: node.id.to_string(),
            name: self.fqdn(node),
            user: node.user_id.map_or(TAGGED_USER_ID, |u| u.0),
            key: node.node_key,
            key_expiry: node.expiry,
            machine: node.machine_key,
            disco_key: node.disco_key,
            addresses,
            endpoints: node.endpoints.clone(),
            home_derp,
            hostinfo,
            created: Some(node.created_at),
            tags: node.tags.clone(),
            machine_authorized: !expired,
            expired,
            ..tailcfg::Node::default()
        }
    }

    fn fqdn(&self, node: &Node) -> String {
        if self.settings.base_domain.is_empty() {
            format!("{}.", node.given_name)
        } else {
            format!("{}.{}.", node.given_name, self.settings.base_domain)
        }
    }

    /// Profiles of the users behind `nodes`.
    pub fn user_profiles<'n>(&self, nodes: impl Iterator<Item = &'n Node>) -> Vec<UserProfile> {
        let ids: BTreeSet<Option<UserId>> = nodes.map(|n| n.user_id).collect();
        ids.into_iter()
            .filter_map(|id| match id {
                None => Some(UserProfile {
                    id: TAGGED_USER_ID,
                    login_name: TAGGED_USER_NAME.into(),
                    display_name: TAGGED_USER_NAME.into(),
                    ..UserProfile::default()
                }),
                Some(id) => self.users.get(&id).map(profile),
            })
            .collect()
    }

    /// The first message of a stream, or the answer to a one-shot request.
    pub fn full(&self, self_id: NodeId, derp: &DERPMap) -> Option<MapResponse> {
        let mut message = self.full_without_peers(self_id, derp)?;
        message.peers = self
            .visible_peers(self_id)
            .map(|n| self.peer_for(self_id, n))
            .collect();
        Some(message)
    }

    /// The peers `viewer` may see, ordered by id.
    pub fn visible_peers(&self, viewer: NodeId) -> impl Iterator<Item = &Arc<Node>> + '_ {
        self.snapshot
            .nodes()
            .filter(move |n| n.id != viewer && self.policy.is_none_or(|p| p.can_see(viewer, n.id)))
    }

    /// The packet filter of `node` as one list: the policy's, or allow-all
    /// without one.
    pub fn packet_filter(&self, node: NodeId) -> Vec<FilterRule> {
        match self.policy {
            None => vec![FilterRule::allow_all()],
            Some(p) => p.filter(node).unwrap_or_default(),
        }
    }

    /// `PacketFilters` of a full map: every chunk the client held is cleared,
    /// then `base` (allow-all without a policy) and the node's other non-empty
    /// chunks are set.
    pub fn packet_filters(&self, node: NodeId) -> PacketFilters {
        let mut out = match self.policy {
            None => MapResponse::base_filter(vec![FilterRule::allow_all()]),
            Some(_) => self.filter_chunks(node, [true; 3]),
        };
        // After the clear, an empty chunk is simply left out.
        out.retain(|_, rules| rules.is_some());
        out.entry(FILTER_CHUNKS[0].to_owned())
            .or_insert_with(|| Some(Vec::new()));
        out.insert(CLEAR_FILTERS.to_owned(), None);
        out
    }

    /// The chunks of `node`'s filter that `which` names (in [`FILTER_CHUNKS`]
    /// order), for a delta: an empty chunk is deleted (`null`).
    pub fn filter_chunks(&self, node: NodeId, which: [bool; 3]) -> PacketFilters {
        let Some(chunks) = self.policy.and_then(|p| p.filter_chunks(node)) else {
            return PacketFilters::new();
        };
        FILTER_CHUNKS
            .iter()
            .zip(chunks)
            .zip(which)
            .filter(|(_, send)| *send)
            .map(|((name, chunk), _)| {
                let rules = chunk.rules();
                (
                    (*name).to_owned(),
                    (!rules.is_empty()).then(|| rules.to_vec()),
                )
            })
            .collect()
    }

    /// The SSH policy of `node`, if the policy has an `ssh` section.
    pub fn ssh_policy(&self, node: NodeId) -> Option<tailcfg::SSHPolicy> {
        self.policy
            .and_then(|p| p.ssh_policy(node))
            .map(|s| (**s).clone())
    }

    /// [`MapInputs::full`] with `Peers` left out, for callers that splice in peers
    /// serialised earlier (see [`splice_peers`]).
    pub fn full_without_peers(&self, self_id: NodeId, derp: &DERPMap) -> Option<MapResponse> {
        let me = self.snapshot.get(self_id)?;
        let peers: Vec<&Node> = self.visible_peers(self_id).map(|n| &**n).collect();
        Some(MapResponse {
            node: Some(self.self_node(me)),
            derp_map: Some(derp.clone()),
            dns_config: self.dns_config(me),
            domain: self.settings.domain.clone(),
            packet_filters: self.packet_filters(self_id),
            ssh_policy: self.ssh_policy(self_id),
            user_profiles: self.user_profiles(std::iter::once(&**me).chain(peers.iter().copied())),
            control_time: Some(self.now),
            debug: self.settings.disable_log_tail.then_some(tailcfg::Debug {
                disable_log_tail: true,
            }),
            ..MapResponse::default()
        })
    }

    /// `node`'s DNS configuration: what every node shares, the extra records,
    /// and the name it may get a certificate for.
    pub fn dns_config(&self, node: &Node) -> Option<DNSConfig> {
        let mut out = self.settings.dns.clone().unwrap_or_default();
        out.extra_records = self.settings.extra_records.load().to_vec();
        if self.settings.cert_domains {
            out.cert_domains = vec![format!(
                "{}.{}",
                node.given_name.as_str(),
                self.settings.base_domain
            )];
        }
        (out != DNSConfig::default()).then_some(out)
    }

    /// What a peer's JSON depends on, to know when a cached copy is still right.
    pub fn peer_version(&self, node: &std::sync::Arc<Node>) -> PeerVersion {
        PeerVersion {
            node: node.clone(),
            routes: self.snapshot.routes(node.id).to_vec(),
            primary: self.snapshot.primary_routes(node.id),
            online: (self.online)(node.id),
            expired: node.is_expired(self.now),
            no_v4: self.ipv4_disabled(node.id),
        }
    }

    /// A light patch for a node whose endpoints, home DERP or disco key changed.
    pub fn patch(&self, node: &Node) -> PeerChange {
        let home_derp = node
            .hostinfo
            .as_deref()
            .and_then(|h| tailcfg::Hostinfo::from_json(h).ok())
            .and_then(|h| h.preferred_derp())
            .unwrap_or(0);
        PeerChange {
            node_id: node.id.0,
            derp_region: home_derp,
            endpoints: Some(node.endpoints.clone()),
            disco_key: (!node.disco_key.is_zero()).then_some(node.disco_key),
            ..PeerChange::default()
        }
    }

    /// A patch for a node that came online or went offline.
    pub fn presence(&self, node: &Node, online: bool) -> PeerChange {
        PeerChange {
            node_id: node.id.0,
            online: Some(online),
            last_seen: if online {
                None
            } else {
                node.last_seen.or(Some(self.now))
            },
            ..PeerChange::default()
        }
    }
}

/// The inputs of one peer's JSON. Holding the node's `Arc` keeps its address from
/// being reused, so pointer equality means "the same version of the node".
#[derive(Clone, Debug)]
pub struct PeerVersion {
    node: std::sync::Arc<Node>,
    routes: Vec<crate::types::Route>,
    primary: Vec<IpNet>,
    online: bool,
    expired: bool,
    /// The policy takes its IPv4 address away.
    no_v4: bool,
}

impl PartialEq for PeerVersion {
    fn eq(&self, other: &Self) -> bool {
        std::sync::Arc::ptr_eq(&self.node, &other.node)
            && self.routes == other.routes
            && self.primary == other.primary
            && self.online == other.online
            && self.expired == other.expired
            && self.no_v4 == other.no_v4
    }
}

/// Appends `"Peers":[…]` made of already serialised peers to a serialised message.
pub fn splice_peers(mut json: Vec<u8>, peers: &[std::sync::Arc<str>]) -> Vec<u8> {
    if peers.is_empty() || json.last() != Some(&b'}') {
        return json;
    }
    json.pop();
    if json.len() > 1 {
        json.push(b',');
    }
    json.extend_from_slice(br#""Peers":["#);
    for (i, peer) in peers.iter().enumerate() {
        if i > 0 {
            json.push(b',');
        }
        json.extend_from_slice(peer.as_bytes());
    }
    json.extend_from_slice(b"]}");
    json
}

pub fn profile(user: &User) -> UserProfile {
    UserProfile {
        id: user.id.0,
        login_name: user.login_name(),
        display_name: user.display(),
        profile_pic_url: user.profile_pic_url.clone(),
    }
}

/// Serialises a message; our types cannot fail to serialise.
pub fn to_json(message: &MapResponse) -> Vec<u8> {
    serde_json::to_vec(message).expect("map responses always serialise")
}

/// The first capability version (v1.82) that verifies a relay certificate by its
/// `sha256-raw:` pin.
pub const PINNED_CERT_CAPVER: u32 = 115;

/// `derp` as a client of `capver` must see it. Older clients read a `sha256-raw:`
/// `CertName` as a host name and would refuse the relay, so their copy drops the pin
/// and skips certificate checks instead (`InsecureForTests`). Relay traffic stays
/// end-to-end encrypted by WireGuard either way; the pin only stops a relay
/// impersonator from seeing who talks to whom.
pub fn derp_map_for(derp: &Arc<DERPMap>, capver: u32) -> Arc<DERPMap> {
    let pinned = |n: &tailcfg::DERPNode| n.cert_name.starts_with("sha256-raw:");
    if capver >= PINNED_CERT_CAPVER || !derp.regions.values().flat_map(|r| &r.nodes).any(pinned) {
        return derp.clone();
    }
    let mut old = DERPMap::clone(derp);
    for node in old.regions.values_mut().flat_map(|r| r.nodes.iter_mut()) {
        if pinned(node) {
            node.cert_name.clear();
            node.insecure_for_tests = true;
        }
    }
    Arc::new(old)
}

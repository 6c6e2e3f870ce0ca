//! `NodeStore`: the in-memory, copy-on-write set of nodes and their routes.
//!
//! Readers take a snapshot without locking (`ArcSwap`); an update builds a new
//! snapshot from the current one and swaps it in with compare-and-swap, so updates
//! that race (a node mutation and a router going offline) never lose each other.
//! Nodes are `Arc`-shared, so a new snapshot copies pointers, not nodes. The
//! snapshot also holds the elected primary router of each subnet prefix.

use crate::types::{MachineKey, Node, NodeId, NodeKey, Route};
use arc_swap::ArcSwap;
use ipnet::IpNet;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

/// One consistent view of every node.
#[derive(Clone, Debug, Default)]
pub struct Snapshot {
    nodes: BTreeMap<NodeId, Arc<Node>>,
    by_node_key: HashMap<NodeKey, NodeId>,
    routes: BTreeMap<NodeId, Arc<[Route]>>,
    /// The router serving each approved subnet prefix (see [`Snapshot::elect`]).
    primaries: BTreeMap<IpNet, NodeId>,
}

impl Snapshot {
    pub fn get(&self, id: NodeId) -> Option<&Arc<Node>> {
        self.nodes.get(&id)
    }

    pub fn by_node_key(&self, key: &NodeKey) -> Option<&Arc<Node>> {
        self.by_node_key.get(key).and_then(|id| self.nodes.get(id))
    }

    /// Nodes of one machine (several when it registered to several users).
    pub fn by_machine_key<'a>(
        &'a self,
        key: &'a MachineKey,
    ) -> impl Iterator<Item = &'a Arc<Node>> + 'a {
        self.nodes.values().filter(move |n| n.machine_key == *key)
    }

    /// All nodes ordered by id.
    pub fn nodes(&self) -> impl Iterator<Item = &Arc<Node>> {
        self.nodes.values()
    }

    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// Whether another node than `except` already holds `given_name`.
    pub fn given_name_taken(&self, given_name: &str, except: Option<NodeId>) -> bool {
        self.nodes
            .values()
            .any(|n| Some(n.id) != except && n.given_name.as_str() == given_name)
    }

    /// The node's route rows (advertised or approved), ordered by id.
    pub fn routes(&self, id: NodeId) -> &[Route] {
        self.routes.get(&id).map_or(&[], |r| r)
    }

    /// Every route row of every node.
    pub fn all_routes(&self) -> impl Iterator<Item = &Route> {
        self.routes.values().flat_map(|r| r.iter())
    }

    /// Prefixes `id` serves as primary router. Exit routes are never "primary"
    /// (every exit node serves its own).
    pub fn primary_routes(&self, id: NodeId) -> Vec<IpNet> {
        self.primaries
            .iter()
            .filter(|(_, router)| **router == id)
            .map(|(prefix, _)| *prefix)
            .collect()
    }

    /// Every prefix with its primary router.
    pub fn primaries(&self) -> &BTreeMap<IpNet, NodeId> {
        &self.primaries
    }

    /// Whether `id` advertises an approved subnet route, so that its going online
    /// or offline may move a primary.
    pub fn is_router(&self, id: NodeId) -> bool {
        self.routes(id)
            .iter()
            .any(|r| r.advertised && r.approved && !r.is_exit())
    }

    /// Elects the primary router of every approved subnet prefix among the online
    /// nodes that advertise it and have it approved. The current primary keeps the
    /// prefix while it stays online and healthy (answers its health probes), so a
    /// router coming back does not take it back (no flapping); otherwise the
    /// healthy router with the lowest node id wins. When none is healthy the
    /// current primary keeps the prefix if still online: moving it to a router
    /// known not to answer would help nobody. A prefix none of whose routers is
    /// online has no primary.
    pub fn elect(
        &self,
        online: &dyn Fn(NodeId) -> bool,
        healthy: &dyn Fn(NodeId) -> bool,
    ) -> BTreeMap<IpNet, NodeId> {
        self.candidates(online)
            .into_iter()
            .filter_map(|(prefix, routers)| {
                let current = self
                    .primaries
                    .get(&prefix)
                    .copied()
                    .filter(|current| routers.contains(current));
                let chosen = current
                    .filter(|c| healthy(*c))
                    .or_else(|| routers.iter().copied().find(|r| healthy(*r)))
                    .or(current)?;
                Some((prefix, chosen))
            })
            .collect()
    }

    /// The routers an election chooses from, by subnet prefix (ordered by node
    /// id): nodes that `online` accepts, advertising the prefix with it approved.
    pub fn candidates(&self, online: &dyn Fn(NodeId) -> bool) -> BTreeMap<IpNet, Vec<NodeId>> {
        let mut candidates: BTreeMap<IpNet, Vec<NodeId>> = BTreeMap::new();
        // `routes` is ordered by node id, so each list is too.
        for route in self.all_routes() {
            if route.advertised
                && route.approved
                && !route.is_exit()
                && self.nodes.contains_key(&route.node_id)
                && online(route.node_id)
            {
                candidates
                    .entry(route.prefix)
                    .or_default()
                    .push(route.node_id);
            }
        }
        candidates
    }

    pub fn set_primaries(&mut self, primaries: BTreeMap<IpNet, NodeId>) {
        self.primaries = primaries;
    }

    /// The node serving `prefix` as primary, if any.
    pub fn primary_for(&self, prefix: &IpNet) -> Option<NodeId> {
        self.primaries.get(prefix).copied()
    }

    /// A copy with `node` inserted or replaced.
    pub fn with_node(&self, node: Node) -> Snapshot {
        let mut next = self.clone();
        if let Some(old) = next.nodes.get(&node.id) {
            next.by_node_key.remove(&old.node_key);
        }
        next.by_node_key.insert(node.node_key, node.id);
        next.nodes.insert(node.id, Arc::new(node));
        next
    }

    /// A copy without node `id` and its routes.
    pub fn without_node(&self, id: NodeId) -> Snapshot {
        let mut next = self.clone();
        if let Some(old) = next.nodes.remove(&id) {
            next.by_node_key.remove(&old.node_key);
        }
        next.routes.remove(&id);
        next
    }

    /// A copy with the node's routes replaced.
    pub fn with_routes(&self, id: NodeId, routes: Vec<Route>) -> Snapshot {
        let mut next = self.clone();
        if routes.is_empty() {
            next.routes.remove(&id);
        } else {
            next.routes.insert(id, routes.into());
        }
        next
    }

    /// Builds a snapshot from stored rows (at start-up).
    pub fn from_rows(nodes: Vec<Node>, routes: Vec<Route>) -> Snapshot {
        let mut snap = Snapshot::default();
        for node in nodes {
            snap.by_node_key.insert(node.node_key, node.id);
            snap.nodes.insert(node.id, Arc::new(node));
        }
        let mut grouped: BTreeMap<NodeId, Vec<Route>> = BTreeMap::new();
        for route in routes {
            grouped.entry(route.node_id).or_default().push(route);
        }
        snap.routes = grouped.into_iter().map(|(id, r)| (id, r.into())).collect();
        snap
    }
}

/// The current snapshot, swappable without blocking readers.
#[derive(Debug)]
pub struct NodeStore {
    current: ArcSwap<Snapshot>,
}

impl NodeStore {
    pub fn new(snapshot: Snapshot) -> Self {
        Self {
            current: ArcSwap::from_pointee(snapshot),
        }
    }

    /// The current snapshot; cheap, lock-free.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.current.load_full()
    }

    /// Installs `edit` of the current snapshot (`None`: nothing to change). If
    /// another update got in first, `edit` runs again on its result. Returns the
    /// snapshots before and after.
    pub fn update(
        &self,
        edit: impl Fn(&Snapshot) -> Option<Snapshot>,
    ) -> (Arc<Snapshot>, Arc<Snapshot>) {
        let mut current = self.current.load_full();
        loop {
            let Some(next) = edit(&current) else {
                return (current.clone(), current);
            };
            let next = Arc::new(next);
            let previous = self.current.compare_and_swap(&current, Arc::clone(&next));
            if Arc::ptr_eq(&previous, &current) {
                return (current, next);
            }
            current = arc_swap::Guard::into_inner(previous);
        }
    }
}

//! `NodeStore`: the in-memory, copy-on-write set of nodes and their routes.
//!
//! Readers take a snapshot without locking (`ArcSwap`); the single writer (the
//! state's write lock holder) builds a new snapshot and swaps it in. Nodes are
//! `Arc`-shared, so a new snapshot copies pointers, not nodes.

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

    /// Prefixes `id` serves as primary router. A prefix that several nodes
    /// advertise and have approved is served by the lowest node id, so the choice is
    /// stable; exit routes are never "primary" (every exit node serves its own).
    pub fn primary_routes(&self, id: NodeId) -> Vec<IpNet> {
        self.routes(id)
            .iter()
            .filter(|r| r.advertised && r.approved && !r.is_exit())
            .filter(|r| self.primary_for(&r.prefix) == Some(id))
            .map(|r| r.prefix)
            .collect()
    }

    /// The node serving `prefix` as primary, if any.
    pub fn primary_for(&self, prefix: &IpNet) -> Option<NodeId> {
        self.all_routes()
            .filter(|r| r.prefix == *prefix && r.advertised && r.approved)
            .map(|r| r.node_id)
            .min()
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

    /// Installs a new snapshot. Only the write-lock holder calls this.
    pub fn replace(&self, next: Snapshot) {
        self.current.store(Arc::new(next));
    }
}

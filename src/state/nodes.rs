//! Node administration: listing with joins, delete, expire, rename, tags and
//! address backfill.

use super::{Change, Error, NodeView, Result, State, storage};
use crate::types::{GivenName, Node, NodeId, PreAuthKey, Timestamp};
use std::collections::HashMap;
use std::sync::Arc;

impl State {
    /// Joins nodes with their users, keys, routes and online state.
    fn views(&self, nodes: Vec<Arc<Node>>, keys: &[PreAuthKey]) -> Vec<NodeView> {
        let snap = self.snapshot();
        let users = self.users();
        let keys: HashMap<_, _> = keys.iter().map(|k| (k.id, k)).collect();
        nodes
            .into_iter()
            .map(|node| NodeView {
                user: node.user_id.and_then(|id| users.get(&id).cloned()),
                auth_key_user: node
                    .auth_key_id
                    .and_then(|id| keys.get(&id)?.user_id)
                    .and_then(|id| users.get(&id).cloned()),
                auth_key: node
                    .auth_key_id
                    .and_then(|id| keys.get(&id).map(|k| (*k).clone())),
                online: self.is_online(node.id),
                routes: snap.routes(node.id).to_vec(),
                primary_routes: snap.primary_routes(node.id),
                node,
            })
            .collect()
    }

    /// One node with everything admin views show.
    pub async fn node_view(&self, id: NodeId) -> Result<NodeView> {
        let node = self
            .snapshot()
            .get(id)
            .cloned()
            .ok_or_else(|| not_found(id))?;
        let keys = self.db.list_preauth_keys().await?;
        Ok(self.views(vec![node], &keys).remove(0))
    }

    /// Every node, or those of the user named `user` (a name or an id), ordered by id.
    pub async fn list_nodes(&self, user: Option<&str>) -> Result<Vec<NodeView>> {
        let owner = match user.map(str::trim).filter(|u| !u.is_empty()) {
            Some(reference) => Some(self.find_user(reference).await?.id),
            None => None,
        };
        let nodes: Vec<_> = self
            .snapshot()
            .nodes()
            .filter(|n| owner.is_none() || n.user_id == owner)
            .cloned()
            .collect();
        let keys = self.db.list_preauth_keys().await?;
        Ok(self.views(nodes, &keys))
    }

    /// Deletes a node: peers forget it, the node is logged out, its addresses return to the pool.
    pub async fn delete_node(&self, id: NodeId) -> Result<Change> {
        let mut alloc = self.writer.lock().await;
        let snap = self.snapshot();
        let node = snap.get(id).cloned().ok_or_else(|| not_found(id))?;
        self.db
            .delete_node(id)
            .await
            .map_err(|e| storage(e, || not_found(id).to_string(), |c| c.to_owned()))?;
        alloc.release(node.ipv4, node.ipv6);
        let mut change = Change::node_removed(id);
        // Routers that take over a prefix this node served are announced.
        let (_, moved) = self.update_nodes(|snap| snap.without_node(id));
        change.merge(moved);
        self.end_sessions_of(id);
        Ok(change)
    }

    /// Sets a node's key expiry: `disable` for never, else `expiry` (default: now).
    /// An expiry in the past logs the node out.
    pub async fn expire_node(
        &self,
        id: NodeId,
        expiry: Option<Timestamp>,
        disable: bool,
    ) -> Result<(NodeView, Change)> {
        let now = Self::now();
        let expiry = if disable {
            None
        } else {
            Some(expiry.unwrap_or(now))
        };
        let (_, change) = self
            .update_node(id, |node| {
                node.expiry = expiry;
            })
            .await?;
        let change = if expiry.is_some_and(|e| e <= now) {
            let mut expired = Change::node_expired(id);
            expired.merge(change);
            expired
        } else {
            change
        };
        Ok((self.node_view(id).await?, change))
    }

    /// Renames a node's MagicDNS label; it must be a valid DNS label no other node uses.
    pub async fn rename_node(&self, id: NodeId, new_name: &str) -> Result<(NodeView, Change)> {
        let label = GivenName::parse(&new_name.trim().to_ascii_lowercase())
            .map_err(|e| Error::InvalidArgument(e.to_string()))?;
        let (_, change) = self
            .update_node(id, |node| {
                node.given_name = label;
            })
            .await?;
        Ok((self.node_view(id).await?, change))
    }

    /// Replaces a node's tags (`tag:name` each): the node then belongs to its
    /// tags, not to a user. With a policy, as in Headscale, every tag must be
    /// defined in its `tagOwners` (an admin need not own it); without one, any
    /// tag goes (the guides tag nodes before writing a policy). The list may not
    /// be empty: a tagged node goes back to a user by logging in again.
    pub async fn set_tags(&self, id: NodeId, tags: &[String]) -> Result<(NodeView, Change)> {
        let tags = super::keys::validate_tags(tags)?;
        if tags.is_empty() {
            return Err(Error::InvalidArgument(
                "cannot remove all tags from a node - tagged nodes must have at least one tag \
                 (to give a node back to a user, log it in again: tailscale up --advertise-tags= --force-reauth)"
                    .into(),
            ));
        }
        let undefined: Vec<String> = match self.current_policy() {
            None => Vec::new(),
            Some(p) => tags
                .iter()
                .filter(|t| !p.policy.tag_owners.contains_key(*t))
                .cloned()
                .collect(),
        };
        if !undefined.is_empty() {
            return Err(Error::InvalidArgument(format!(
                "{} (tags must be defined in the policy's tagOwners)",
                super::register::tags_refused(&undefined)
            )));
        }
        let (_, change) = self
            .update_node(id, |node| {
                node.tags = tags.clone();
                node.user_id = None;
                // Tagged nodes never expire, as in Tailscale.
                node.expiry = None;
            })
            .await?;
        // Who owns a node decides which routes the policy approves for it.
        let mut change = change;
        if let Ok(c) = self.reapprove_all().await {
            change.merge(c);
        }
        Ok((self.node_view(id).await?, change))
    }

    /// Gives every node an address of each configured family and removes addresses
    /// of families no longer configured. Returns one line per change.
    pub async fn backfill_node_ips(&self, confirmed: bool) -> Result<(Vec<String>, Change)> {
        if !confirmed {
            return Err(Error::FailedPrecondition(
                "backfilling addresses changes node IPs; confirm it (headway nodes backfillips --force)".into(),
            ));
        }
        let mut alloc = self.writer.lock().await;
        let mut lines = Vec::new();
        let mut change = Change::none();
        for node in self.snapshot().nodes().cloned().collect::<Vec<_>>() {
            let mut updated = (*node).clone();
            match updated.ipv4 {
                Some(ip) if !alloc.has_v4() => {
                    lines.push(format!("node {}: removed IPv4 {ip}", node.id));
                    alloc.release(Some(ip), None);
                    updated.ipv4 = None;
                }
                Some(ip) if !alloc.in_v4_prefix(ip) => {
                    let new = alloc
                        .allocate_v4()
                        .map_err(|e| Error::ResourceExhausted(e.to_string()))?;
                    alloc.release(Some(ip), None);
                    lines.push(format!("node {}: IPv4 {ip} -> {new}", node.id));
                    updated.ipv4 = Some(new);
                }
                None if alloc.has_v4() => {
                    let new = alloc
                        .allocate_v4()
                        .map_err(|e| Error::ResourceExhausted(e.to_string()))?;
                    lines.push(format!("node {}: added IPv4 {new}", node.id));
                    updated.ipv4 = Some(new);
                }
                _ => {}
            }
            match updated.ipv6 {
                Some(ip) if !alloc.has_v6() => {
                    lines.push(format!("node {}: removed IPv6 {ip}", node.id));
                    alloc.release(None, Some(ip));
                    updated.ipv6 = None;
                }
                Some(ip) if !alloc.in_v6_prefix(ip) => {
                    let new = alloc
                        .allocate_v6()
                        .map_err(|e| Error::ResourceExhausted(e.to_string()))?;
                    alloc.release(None, Some(ip));
                    lines.push(format!("node {}: IPv6 {ip} -> {new}", node.id));
                    updated.ipv6 = Some(new);
                }
                None if alloc.has_v6() => {
                    let new = alloc
                        .allocate_v6()
                        .map_err(|e| Error::ResourceExhausted(e.to_string()))?;
                    lines.push(format!("node {}: added IPv6 {new}", node.id));
                    updated.ipv6 = Some(new);
                }
                _ => {}
            }
            if updated != *node {
                updated.updated_at = Self::now();
                self.db.save_node(&updated, None).await?;
                let (_, moved) = self.update_nodes(|snap| snap.with_node(updated.clone()));
                change.merge(moved);
                change.merge(Change::node_changed(node.id));
            }
        }
        Ok((lines, change))
    }

    /// Applies `edit` to a copy of node `id`, stores it and swaps it in; the change
    /// names the node (and any router whose primary status moved meanwhile).
    pub(super) async fn update_node(
        &self,
        id: NodeId,
        edit: impl FnOnce(&mut Node),
    ) -> Result<(Arc<Node>, Change)> {
        let (node, mut change) = self.store_node(id, edit).await?;
        change.merge(Change::node_changed(id));
        Ok((node, change))
    }

    /// `update_node` for edits peers need not learn as a whole node (presence):
    /// the change names only routers whose primary status moved meanwhile.
    /// Runs under the write lock so concurrent edits never lose each other.
    pub(super) async fn store_node(
        &self,
        id: NodeId,
        edit: impl FnOnce(&mut Node),
    ) -> Result<(Arc<Node>, Change)> {
        let _writer = self.writer.lock().await;
        let snap = self.snapshot();
        let mut node = (**snap.get(id).ok_or_else(|| not_found(id))?).clone();
        edit(&mut node);
        if snap.given_name_taken(node.given_name.as_str(), Some(id)) {
            return Err(Error::AlreadyExists(format!(
                "the name {:?} is already used by another node",
                node.given_name.as_str()
            )));
        }
        node.updated_at = Self::now();
        self.db.save_node(&node, None).await.map_err(|e| {
            storage(
                e,
                || not_found(id).to_string(),
                |c| format!("{c} is already used by another node"),
            )
        })?;
        let (next, moved) = self.update_nodes(|snap| snap.with_node(node.clone()));
        let stored = next.get(id).cloned().ok_or_else(|| not_found(id))?;
        Ok((stored, moved))
    }

    /// Forgets the open sessions of a node that no longer exists.
    pub(super) fn end_sessions_of(&self, id: NodeId) {
        let ended = self
            .sessions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&id);
        if ended.is_some_and(|s| s.open > 0) {
            self.metrics().map.connected_nodes.dec();
        }
    }
}

fn not_found(id: NodeId) -> Error {
    Error::NotFound(format!("node with id {id} not found"))
}

//! Routes: what nodes advertise, what admins approve, and which router is
//! primary for a prefix. Approving either exit route approves both. Every node
//! snapshot update re-elects primaries, and so does a router going online or
//! offline; the routers whose primary status moved are announced to their peers.

use super::node_store::Snapshot;
use super::{Change, Error, NodeView, Result, State};
use crate::types::route::is_exit_prefix;
use crate::types::{NodeId, Route, RouteId};
use ipnet::IpNet;
use std::collections::BTreeSet;
use std::sync::Arc;

/// A route with its node, for the 0.18–0.25 route API.
#[derive(Clone, Debug)]
pub struct RouteView {
    pub route: Route,
    pub node: NodeView,
    pub is_primary: bool,
}

const EXIT_V4: &str = "0.0.0.0/0";
const EXIT_V6: &str = "::/0";

/// Parses route text strictly: host bits set is an error that names the network.
pub(crate) fn parse_prefix(text: &str) -> Result<IpNet> {
    let text = text.trim();
    let net: IpNet = text.parse().map_err(|_| {
        Error::InvalidArgument(format!(
            "{text:?} is not an IP prefix (expected e.g. 192.168.100.0/24)"
        ))
    })?;
    if net.trunc() != net {
        return Err(Error::InvalidArgument(format!(
            "{text} has host bits set; did you mean {}?",
            net.trunc()
        )));
    }
    Ok(net)
}

fn exit_pair() -> [IpNet; 2] {
    [
        EXIT_V4.parse().expect("valid"),
        EXIT_V6.parse().expect("valid"),
    ]
}

/// The routers whose primary status differs between two snapshots.
fn primaries_moved(before: &Snapshot, after: &Snapshot) -> Change {
    let mut change = Change::none();
    let prefixes: BTreeSet<&IpNet> = before
        .primaries()
        .keys()
        .chain(after.primaries().keys())
        .collect();
    for prefix in prefixes {
        let (was, now) = (before.primary_for(prefix), after.primary_for(prefix));
        if was != now {
            for router in [was, now].into_iter().flatten() {
                if after.get(router).is_some() {
                    change.merge(Change::node_changed(router));
                }
            }
        }
    }
    change
}

impl State {
    /// Swaps in `edit` of the current node snapshot, with primaries re-elected.
    /// Returns the new snapshot and the routers whose primary status moved.
    pub(super) fn update_nodes(
        &self,
        edit: impl Fn(&Snapshot) -> Snapshot,
    ) -> (Arc<Snapshot>, Change) {
        self.elect_into(|snap| Some(edit(snap)))
    }

    /// Re-elects primaries after router `id` came online or went offline.
    pub(super) fn reelect(&self, id: NodeId) -> Change {
        if !self.snapshot().is_router(id) {
            return Change::none();
        }
        self.elect_into(|_| None).1
    }

    /// The one path that installs snapshots: `edit` of the current one (`None`:
    /// the current one as it is) with primaries elected from who is online now. An
    /// unedited snapshot whose primaries stay is not swapped (nor copied).
    pub(super) fn elect_into(
        &self,
        edit: impl Fn(&Snapshot) -> Option<Snapshot>,
    ) -> (Arc<Snapshot>, Change) {
        let online = |id| self.is_online(id);
        let healthy = |id| self.is_healthy(id);
        let (before, after) = self.nodes.update(|snap| {
            let edited = edit(snap);
            let primaries = edited.as_ref().unwrap_or(snap).elect(&online, &healthy);
            if edited.is_none() && primaries == *snap.primaries() {
                return None;
            }
            let mut next = edited.unwrap_or_else(|| snap.clone());
            next.set_primaries(primaries);
            Some(next)
        });
        let moved = primaries_moved(&before, &after);
        self.metrics()
            .map
            .nodes
            .set(i64::try_from(after.len()).unwrap_or(i64::MAX));
        (after, moved)
    }

    /// Replaces a node's advertised and/or approved prefixes (`None` keeps them).
    /// The caller holds the write lock. The change names the node and every router
    /// whose primary status moved.
    pub(super) async fn store_routes(
        &self,
        id: NodeId,
        advertised: Option<&[IpNet]>,
        approved: Option<&[IpNet]>,
    ) -> Result<(Vec<Route>, Change)> {
        let snap = self.snapshot();
        let current = snap.routes(id);
        let pick = |given: Option<&[IpNet]>, flag: fn(&Route) -> bool| -> Vec<IpNet> {
            let set: BTreeSet<IpNet> = match given {
                Some(list) => list.iter().map(IpNet::trunc).collect(),
                None => current
                    .iter()
                    .filter(|r| flag(r))
                    .map(|r| r.prefix)
                    .collect(),
            };
            set.into_iter().collect()
        };
        let advertised = pick(advertised, |r| r.advertised);
        // What an admin approved, and on top what the policy approves now.
        let mut approved = pick(approved, |r| r.approved && !r.approved_by_policy);
        let by_policy: Vec<IpNet> = self
            .policy_approvals(id, &advertised)
            .into_iter()
            .filter(|p| !approved.contains(p))
            .collect();
        approved.extend(by_policy.iter().copied());
        approved.sort();
        let rows = self
            .db
            .set_node_routes(id, &advertised, &approved, &by_policy, Self::now())
            .await?;
        let (_, moved) = self.update_nodes(|snap| snap.with_routes(id, rows.clone()));
        let mut change = Change::node_changed(id);
        change.merge(moved);
        Ok((rows, change))
    }

    /// The advertised routes of node `id` the policy approves by itself
    /// (`autoApprovers`); none without a policy.
    fn policy_approvals(&self, id: NodeId, advertised: &[IpNet]) -> Vec<IpNet> {
        if advertised.is_empty() {
            return Vec::new();
        }
        self.with_approvals(|approvals| {
            advertised
                .iter()
                .filter(|p| approvals.auto_approves(id, p))
                .copied()
                .collect()
        })
        .unwrap_or_default()
    }

    /// Re-applies the policy's route approvals to every node (after a new policy,
    /// or a change of who owns what): newly approvable routes are approved, and
    /// routes the policy approved but no longer does lose their approval.
    pub(super) async fn reapprove_all(&self) -> Result<Change> {
        let _writer = self.writer.lock().await;
        let mut change = Change::none();
        let snap = self.snapshot();
        let ids: Vec<NodeId> = snap
            .nodes()
            .map(|n| n.id)
            .filter(|id| !snap.routes(*id).is_empty())
            .collect();
        for id in ids {
            let current = self.snapshot();
            let routes = current.routes(id);
            let advertised: Vec<IpNet> = routes
                .iter()
                .filter(|r| r.advertised)
                .map(|r| r.prefix)
                .collect();
            let wanted: BTreeSet<IpNet> =
                self.policy_approvals(id, &advertised).into_iter().collect();
            let had: BTreeSet<IpNet> = routes
                .iter()
                .filter(|r| r.approved_by_policy)
                .map(|r| r.prefix)
                .collect();
            let admin: BTreeSet<IpNet> = routes
                .iter()
                .filter(|r| r.approved && !r.approved_by_policy)
                .map(|r| r.prefix)
                .collect();
            let wanted: BTreeSet<IpNet> = wanted.difference(&admin).copied().collect();
            if wanted != had {
                change.merge(self.store_routes(id, None, None).await?.1);
            }
        }
        Ok(change)
    }

    /// Records the prefixes a node announces (from its Hostinfo); approvals stay.
    pub async fn set_advertised_routes(&self, id: NodeId, routes: &[IpNet]) -> Result<Change> {
        let _writer = self.writer.lock().await;
        if self.snapshot().get(id).is_none() {
            return Err(Error::NotFound(format!("node with id {id} not found")));
        }
        Ok(self.store_routes(id, Some(routes), None).await?.1)
    }

    /// Sets the approved routes of a node. Every route must be one the node
    /// advertises; an exit route brings its partner; an empty list clears.
    pub async fn set_approved_routes(
        &self,
        id: NodeId,
        routes: &[String],
    ) -> Result<(NodeView, Change)> {
        let mut wanted: BTreeSet<IpNet> = BTreeSet::new();
        for text in routes
            .iter()
            .flat_map(|r| r.split(','))
            .map(str::trim)
            .filter(|t| !t.is_empty())
        {
            wanted.insert(parse_prefix(text)?);
        }
        let _writer = self.writer.lock().await;
        let snap = self.snapshot();
        if snap.get(id).is_none() {
            return Err(Error::NotFound(format!("node with id {id} not found")));
        }
        let advertised: BTreeSet<IpNet> = snap
            .routes(id)
            .iter()
            .filter(|r| r.advertised)
            .map(|r| r.prefix)
            .collect();
        for prefix in &wanted {
            if !advertised.contains(prefix) {
                let offer = if advertised.is_empty() {
                    "it advertises no routes".to_owned()
                } else {
                    format!(
                        "it advertises {}",
                        advertised
                            .iter()
                            .map(ToString::to_string)
                            .collect::<Vec<_>>()
                            .join(", ")
                    )
                };
                return Err(Error::InvalidArgument(format!(
                    "node {id} does not advertise {prefix}, so it cannot be approved ({offer})"
                )));
            }
        }
        if wanted.iter().any(is_exit_prefix) {
            wanted.extend(exit_pair().into_iter().filter(|p| advertised.contains(p)));
        }
        let approved: Vec<IpNet> = wanted.into_iter().collect();
        let (_, change) = self.store_routes(id, None, Some(&approved)).await?;
        drop(_writer);
        Ok((self.node_view(id).await?, change))
    }

    /// Every route of every node with its node, for the legacy route API.
    pub async fn list_routes(&self, node: Option<NodeId>) -> Result<Vec<RouteView>> {
        if let Some(id) = node
            && self.snapshot().get(id).is_none()
        {
            return Err(Error::NotFound(format!("node with id {id} not found")));
        }
        let views = self.list_nodes(None).await?;
        let snap = self.snapshot();
        let mut out = Vec::new();
        for view in views
            .into_iter()
            .filter(|v| node.is_none_or(|id| v.node.id == id))
        {
            for route in &view.routes {
                out.push(RouteView {
                    route: route.clone(),
                    is_primary: !route.is_exit()
                        && snap.primary_for(&route.prefix) == Some(route.node_id),
                    node: view.clone(),
                });
            }
        }
        out.sort_by_key(|r| r.route.id);
        Ok(out)
    }

    fn find_route(&self, id: RouteId) -> Result<Route> {
        self.snapshot()
            .all_routes()
            .find(|r| r.id == id)
            .cloned()
            .ok_or_else(|| Error::NotFound(format!("route with id {id} not found")))
    }

    /// Approves one route by id (the 0.18–0.25 `routes enable -r <id>`).
    pub async fn enable_route(&self, id: RouteId) -> Result<Change> {
        let route = self.find_route(id)?;
        let mut approved: Vec<String> = self
            .snapshot()
            .routes(route.node_id)
            .iter()
            .filter(|r| r.approved)
            .map(|r| r.prefix.to_string())
            .collect();
        approved.push(route.prefix.to_string());
        Ok(self.set_approved_routes(route.node_id, &approved).await?.1)
    }

    /// Withdraws approval of one route by id; for an exit route, of both.
    pub async fn disable_route(&self, id: RouteId) -> Result<Change> {
        let route = self.find_route(id)?;
        let approved: Vec<String> = self
            .snapshot()
            .routes(route.node_id)
            .iter()
            .filter(|r| r.approved && r.prefix != route.prefix && !(route.is_exit() && r.is_exit()))
            .map(|r| r.prefix.to_string())
            .collect();
        Ok(self.set_approved_routes(route.node_id, &approved).await?.1)
    }

    /// Forgets one route row; a node that still advertises it reports it again.
    pub async fn delete_route(&self, id: RouteId) -> Result<Change> {
        let route = self.find_route(id)?;
        let _writer = self.writer.lock().await;
        let keep = |r: &&Route| r.id != id;
        let snap = self.snapshot();
        let advertised: Vec<IpNet> = snap
            .routes(route.node_id)
            .iter()
            .filter(keep)
            .filter(|r| r.advertised)
            .map(|r| r.prefix)
            .collect();
        let approved: Vec<IpNet> = snap
            .routes(route.node_id)
            .iter()
            .filter(keep)
            .filter(|r| r.approved)
            .map(|r| r.prefix)
            .collect();
        let (_, change) = self
            .store_routes(route.node_id, Some(&advertised), Some(&approved))
            .await?;
        Ok(change)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_must_be_networks() {
        assert!(parse_prefix("192.168.100.0/24").is_ok());
        let err = parse_prefix("192.168.100.1/24").unwrap_err().to_string();
        assert!(err.contains("192.168.100.0/24"), "{err}");
        assert!(parse_prefix("banana").is_err());
    }
}

//! `headway import headscale`, the decisions: Headscale's rows (as `db::headscale`
//! reads them) turned into the [`Dump`] headway writes, with a [`Report`] of what
//! was carried over as is, what had to change, and what could not come.
//!
//! Pure: no IO. Ids are kept, so clients, scripts and `nodes list` see the same
//! numbers; keys keep their hashes, so every credential Headscale handed out works.

use crate::db::Dump;
use crate::db::headscale::{HeadscaleRows, HsNode, HsPreAuthKey};
use crate::policy::{Approvals, Policy, Tailnet};
use crate::tailcfg::Hostinfo;
use crate::types::secret::Presented;
use crate::types::{
    ApiKey, ApiKeyId, DiscoKey, GivenName, MachineKey, Node, NodeId, NodeKey, PreAuthKey,
    PreAuthKeyId, RegisterMethod, Route, RouteId, Timestamp, User, UserId, UserName,
};
use ipnet::IpNet;
use std::collections::{BTreeMap, HashMap, HashSet};

/// What an import carries over, and what it had to change or leave behind.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Report {
    /// Changes made so the rows fit headway's rules (a renamed duplicate, …).
    pub changed: Vec<String>,
    /// Rows, or parts of them, that cannot come (with why).
    pub left_behind: Vec<String>,
    /// Rows Headscale had already deleted (soft deletes), not imported.
    pub deleted_skipped: usize,
    /// The policy saved in the database does not parse in headway.
    pub policy_error: Option<String>,
}

/// The rows to write and what was decided on the way.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Plan {
    pub dump: Dump,
    pub report: Report,
}

/// Where Headscale's policy in force was (`policy.mode`).
#[derive(Clone, Copy, Debug)]
pub enum PolicySource<'a> {
    /// Its database's newest saved policy, which the import carries over.
    Database,
    /// A file both servers read (its text, when there is one); nothing to carry.
    File(Option<&'a str>),
}

/// Turns Headscale's rows into headway's.
pub fn plan(rows: &HeadscaleRows, policy: PolicySource) -> Plan {
    let mut report = Report::default();
    let users = users(rows, &mut report);
    let user_ids: HashSet<u64> = users.iter().map(|u| u.id.0).collect();
    let pre_auth_keys = pre_auth_keys(rows, &user_ids, &mut report);
    let api_keys = api_keys(rows, &mut report);
    let keys_by_id: HashMap<u64, &PreAuthKey> = pre_auth_keys.iter().map(|k| (k.id.0, k)).collect();
    let (policies, in_force) = match policy {
        PolicySource::Database => {
            let saved = policies(rows, &mut report);
            let text = saved.last().map(|p| p.1.clone());
            (saved, text)
        }
        PolicySource::File(text) => (Vec::new(), text.map(str::to_owned)),
    };
    let parsed = match in_force.as_deref().map(Policy::parse) {
        Some(Ok(parsed)) => Some(parsed),
        Some(Err(e)) => {
            if matches!(policy, PolicySource::File(_)) {
                report.left_behind.push(format!(
                    "Headscale's policy file does not work in headway ({e}): headway will not \
                     start with it until it is fixed"
                ));
            }
            None
        }
        None => None,
    };
    let nodes = nodes(rows, &users, &keys_by_id, parsed.as_ref(), &mut report);
    let routes = routes(rows, &nodes, &mut report);
    Plan {
        dump: Dump {
            users,
            pre_auth_keys,
            api_keys,
            oauth_clients: Vec::new(),
            nodes,
            routes,
            policies,
        },
        report,
    }
}

fn users(rows: &HeadscaleRows, report: &mut Report) -> Vec<User> {
    let mut taken: HashSet<String> = HashSet::new();
    let mut out = Vec::new();
    for u in &rows.users {
        if u.deleted {
            report.deleted_skipped += 1;
            continue;
        }
        let wanted = if u.name.trim().is_empty() {
            format!("user-{}", u.id)
        } else {
            u.name.trim().to_owned()
        };
        // Headscale lets an OIDC user share a local user's name; headway's names
        // are unique, so the later one gets a suffix (its identity is unchanged).
        let mut name = wanted.clone();
        let mut n = 2;
        while taken.contains(&name) {
            name = format!("{wanted}-{n}");
            n += 1;
        }
        if name != wanted {
            report.changed.push(format!(
                "user {} ({}) is named {name}: {wanted} is another user's name in headway",
                u.id,
                if u.email.is_empty() {
                    "no email"
                } else {
                    &u.email
                }
            ));
        }
        taken.insert(name.clone());
        out.push(User {
            id: UserId(u.id),
            // Headscale checked the names it stored; OIDC names may not follow
            // headway's rules for names typed by an admin, and stay as they are.
            name: UserName::from_trusted(name),
            display_name: u.display_name.clone(),
            email: u.email.clone(),
            provider: u.provider.clone(),
            provider_id: u.provider_identifier.clone(),
            profile_pic_url: u.profile_pic_url.clone(),
            groups: Vec::new(),
            created_at: u.created_at,
            updated_at: u.updated_at,
        });
    }
    out
}

/// `tag:` names only (Headscale checked their spelling), sorted, without repeats.
fn clean_tags(tags: &[String]) -> Vec<String> {
    let mut kept: Vec<String> = tags
        .iter()
        .map(|t| t.trim())
        .filter(|t| t.len() > "tag:".len() && t.starts_with("tag:"))
        .map(str::to_owned)
        .collect();
    kept.sort();
    kept.dedup();
    kept
}

fn pre_auth_keys(
    rows: &HeadscaleRows,
    users: &HashSet<u64>,
    report: &mut Report,
) -> Vec<PreAuthKey> {
    let mut prefixes: HashSet<String> = HashSet::new();
    let mut out = Vec::new();
    for k in &rows.pre_auth_keys {
        let Some((prefix, hash)) = stored_secret(k) else {
            report.left_behind.push(format!(
                "pre-auth key {}: neither a key nor a prefix and hash is stored",
                k.id
            ));
            continue;
        };
        let tags = clean_tags(&k.tags);
        // A tagged key's nodes belong to no user (Headscale 0.28 and later, and headway).
        let user_id = match k.user_id {
            _ if !tags.is_empty() => None,
            Some(id) if users.contains(&id) => Some(UserId(id)),
            _ => {
                report.left_behind.push(format!(
                    "pre-auth key {}: it has no tags and its user is gone",
                    k.id
                ));
                continue;
            }
        };
        if !prefixes.insert(prefix.clone()) {
            report.left_behind.push(format!(
                "pre-auth key {}: another key begins with the same characters",
                k.id
            ));
            continue;
        }
        out.push(PreAuthKey {
            id: PreAuthKeyId(k.id),
            user_id,
            prefix,
            hash,
            reusable: k.reusable,
            ephemeral: k.ephemeral,
            used: k.used,
            tags,
            expiration: k.expiration,
            created_at: k.created_at,
        });
    }
    out
}

/// The prefix and hash headway stores for a Headscale key: its own prefix and
/// bcrypt hash (v0.28 and later), or for a key kept in clear the split headway
/// makes when that key is presented.
fn stored_secret(k: &HsPreAuthKey) -> Option<(String, String)> {
    match (&k.prefix, &k.hash, &k.plain) {
        (Some(prefix), Some(hash), _) => Some((prefix.clone(), hash.clone())),
        (_, _, Some(plain)) => Presented::auth_key(plain).map(|p| (p.prefix.clone(), p.digest())),
        _ => None,
    }
}

fn api_keys(rows: &HeadscaleRows, report: &mut Report) -> Vec<ApiKey> {
    let mut out = Vec::new();
    for k in &rows.api_keys {
        if k.prefix.is_empty() || k.hash.is_empty() {
            report
                .left_behind
                .push(format!("API key {}: no prefix or hash is stored", k.id));
            continue;
        }
        out.push(ApiKey {
            id: ApiKeyId(k.id),
            prefix: k.prefix.clone(),
            hash: k.hash.clone(),
            expiration: k.expiration,
            created_at: k.created_at,
            last_seen: k.last_seen,
        });
    }
    out
}

fn nodes(
    rows: &HeadscaleRows,
    users: &[User],
    keys: &HashMap<u64, &PreAuthKey>,
    policy: Option<&Policy>,
    report: &mut Report,
) -> Vec<Node> {
    let user_ids: HashSet<u64> = users.iter().map(|u| u.id.0).collect();
    let approvals = policy.filter(|_| rows.tags_requested_by_clients).map(|p| {
        Approvals::new(
            p,
            Tailnet {
                users,
                devices: &[],
            },
        )
    });
    let mut names: HashSet<String> = HashSet::new();
    let mut node_keys: HashSet<String> = HashSet::new();
    let mut addresses: HashSet<String> = HashSet::new();
    let mut ownerless_tagged = 0;
    let mut out = Vec::new();
    for n in &rows.nodes {
        if n.deleted {
            report.deleted_skipped += 1;
            continue;
        }
        let label = format!("node {} ({})", n.id, n.given_name);
        let (machine_key, node_key) = match (
            n.machine_key.parse::<MachineKey>(),
            n.node_key.parse::<NodeKey>(),
        ) {
            (Ok(m), Ok(k)) => (m, k),
            _ => {
                report
                    .left_behind
                    .push(format!("{label}: its machine or node key does not parse"));
                continue;
            }
        };
        if !node_keys.insert(n.node_key.clone()) {
            report
                .left_behind
                .push(format!("{label}: another node has the same node key"));
            continue;
        }
        let mut tags = clean_tags(&n.tags);
        if let Some(approvals) = &approvals {
            granted_tags(n, users, approvals, &mut tags, report);
        }
        let user_id = match n.user_id {
            _ if !tags.is_empty() => {
                if n.user_id.is_some() {
                    ownerless_tagged += 1;
                }
                None
            }
            Some(id) if user_ids.contains(&id) => Some(UserId(id)),
            _ => {
                report
                    .left_behind
                    .push(format!("{label}: it has no tags and its user is gone"));
                continue;
            }
        };
        let mut address = |text: &Option<String>| -> Option<String> {
            let text = text.as_deref()?.trim();
            if addresses.insert(text.to_owned()) {
                Some(text.to_owned())
            } else {
                report.changed.push(format!(
                    "{label}: address {text} is another node's, left out"
                ));
                None
            }
        };
        let ipv4 = address(&n.ipv4).and_then(|a| a.parse().ok());
        let ipv6 = address(&n.ipv6).and_then(|a| a.parse().ok());
        let given_name = given_name(n, &names, report);
        names.insert(given_name.as_str().to_owned());
        let key = n.auth_key_id.and_then(|id| keys.get(&id));
        out.push(Node {
            id: NodeId(n.id),
            machine_key,
            node_key,
            disco_key: n
                .disco_key
                .parse::<DiscoKey>()
                .unwrap_or_else(|_| DiscoKey::zero()),
            hostname: n.hostname.clone(),
            given_name,
            user_id,
            ipv4,
            ipv6,
            endpoints: n.endpoints.iter().filter_map(|e| e.parse().ok()).collect(),
            hostinfo: n.hostinfo.clone(),
            tags,
            expiry: n.expiry,
            last_seen: n.last_seen,
            ephemeral: key.is_some_and(|k| k.ephemeral),
            register_method: RegisterMethod::from_stored(&n.register_method),
            auth_key_id: key.map(|k| k.id),
            created_at: n.created_at,
            updated_at: n.updated_at,
        });
    }
    if ownerless_tagged > 0 {
        report.changed.push(format!(
            "{ownerless_tagged} tagged node(s) had a user too: tags are their identity now \
             and they belong to no user, as in Headscale 0.28 and later"
        ));
    }
    out
}

/// Adds the tags a node asked for (`--advertise-tags`) that the policy's
/// `tagOwners` grant its user, as Headscale before 0.28 granted them at each
/// connection (and 0.28 stored them when it upgraded a database).
fn granted_tags(
    n: &HsNode,
    users: &[User],
    approvals: &Approvals,
    tags: &mut Vec<String>,
    report: &mut Report,
) {
    let Some(hostinfo) = n
        .hostinfo
        .as_deref()
        .and_then(|h| Hostinfo::from_json(h).ok())
    else {
        return;
    };
    let owner = users.iter().find(|u| Some(u.id.0) == n.user_id);
    let forced = tags.clone();
    let (mut granted, mut refused) = (Vec::new(), Vec::new());
    for tag in hostinfo.request_tags() {
        if tags.contains(tag) || granted.contains(tag) {
            continue;
        }
        if owner.is_some() && approvals.may_tag(tag, owner, &forced) {
            granted.push(tag.clone());
        } else {
            refused.push(tag.clone());
        }
    }
    if !granted.is_empty() {
        report.changed.push(format!(
            "node {} ({}) is tagged {}: it asked for it and tagOwners grants it",
            n.id,
            n.given_name,
            granted.join(", ")
        ));
        tags.extend(granted);
        *tags = clean_tags(tags);
    }
    if !refused.is_empty() {
        report.changed.push(format!(
            "node {} ({}) asked for {}, which tagOwners does not grant: left out",
            n.id,
            n.given_name,
            refused.join(", ")
        ));
    }
}

/// The node's MagicDNS name: Headscale's, or its hostname made a DNS label, with a
/// suffix if another node already has it.
fn given_name(n: &HsNode, taken: &HashSet<String>, report: &mut Report) -> GivenName {
    let base = GivenName::parse(&n.given_name).unwrap_or_else(|_| GivenName::sanitize(&n.hostname));
    let name = GivenName::unique(&base, |candidate| taken.contains(candidate));
    if name.as_str() != n.given_name {
        report.changed.push(format!(
            "node {} is named {name} (it was {:?} in Headscale)",
            n.id, n.given_name
        ));
    }
    name
}

fn routes(rows: &HeadscaleRows, nodes: &[Node], report: &mut Report) -> Vec<Route> {
    // (node, prefix) → (advertised, approved), in a stable order.
    let mut wanted: BTreeMap<(u64, String), (IpNet, bool, bool)> = BTreeMap::new();
    let mut add = |node: u64, text: &str, advertised: bool, approved: bool| match text
        .trim()
        .parse::<IpNet>()
    {
        Ok(prefix) => {
            let prefix = prefix.trunc();
            let entry = wanted
                .entry((node, prefix.to_string()))
                .or_insert((prefix, false, false));
            entry.1 |= advertised;
            entry.2 |= approved;
        }
        Err(_) => report
            .left_behind
            .push(format!("node {node}: route {text:?} does not parse")),
    };
    let times: HashMap<u64, (Timestamp, Timestamp)> = nodes
        .iter()
        .map(|n| (n.id.0, (n.created_at, n.updated_at)))
        .collect();
    // v0.23 to v0.25: the `routes` table.
    for r in rows.routes.iter().filter(|r| !r.deleted) {
        if times.contains_key(&r.node_id) {
            add(r.node_id, &r.prefix, r.advertised, r.enabled);
        }
    }
    // v0.26 and later: approvals on the node, advertisements in its Hostinfo.
    for n in &rows.nodes {
        if !times.contains_key(&n.id) {
            continue;
        }
        for prefix in &n.approved_routes {
            add(n.id, prefix, false, true);
        }
        if rows.routes.is_empty()
            && let Some(hostinfo) = n
                .hostinfo
                .as_deref()
                .and_then(|h| Hostinfo::from_json(h).ok())
        {
            for prefix in hostinfo.routable_ips() {
                add(n.id, &prefix.to_string(), true, false);
            }
        }
    }
    wanted
        .into_iter()
        .enumerate()
        .map(|(i, ((node, _), (prefix, advertised, approved)))| {
            let (created_at, updated_at) = times[&node];
            Route {
                id: RouteId(i as u64 + 1),
                node_id: NodeId(node),
                prefix,
                advertised,
                approved,
                approved_by_policy: false,
                created_at,
                updated_at,
            }
        })
        .collect()
}

/// The newest saved policy (the one in force in `policy.mode: database`), checked
/// against headway's parser.
fn policies(rows: &HeadscaleRows, report: &mut Report) -> Vec<crate::db::SavedPolicy> {
    let Some(newest) = rows
        .policies
        .iter()
        .filter(|p| !p.deleted)
        .max_by_key(|p| p.id)
    else {
        return Vec::new();
    };
    if let Err(e) = Policy::parse(&newest.data) {
        report.policy_error = Some(e.to_string());
    }
    vec![(
        newest.id,
        newest.data.clone(),
        newest.created_at,
        newest.updated_at,
    )]
}

#[cfg(test)]
mod tests;

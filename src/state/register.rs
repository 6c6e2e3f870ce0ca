//! Registration: interactive registrations waiting for an admin, and `admit`,
//! the one path that creates a node or logs a known machine back in.

use super::{Change, Error, NodeView, Result, State, storage};
use crate::db::NewNode;
use crate::types::secret::random_alphanumeric;
use crate::types::{
    DiscoKey, GivenName, MachineKey, Node, NodeId, NodeKey, PreAuthKey, RegisterMethod, Timestamp,
    UserId,
};
use ipnet::IpNet;
use std::fmt;
use std::sync::Arc;
use tokio::sync::watch;

/// Interactive registrations waiting for an admin at once, in all: anyone who can
/// reach the server can start one, so their number is bounded.
pub const MAX_PENDING_REGISTRATIONS: usize = 1024;
/// The Hostinfo a waiting registration keeps, at most (real clients send a few
/// KiB); a larger one is dropped, and the node reports it again on its first map
/// request once registered.
pub const MAX_PENDING_HOSTINFO: usize = 16 * 1024;

/// The id of a pending interactive registration, `hskey-authreq-<24 chars>`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct RegistrationId(String);

impl RegistrationId {
    pub const PREFIX: &'static str = "hskey-authreq-";
    const RANDOM_LEN: usize = 24;

    pub fn generate() -> Self {
        Self(format!(
            "{}{}",
            Self::PREFIX,
            random_alphanumeric(Self::RANDOM_LEN)
        ))
    }

    /// Accepts the full id, or its 24 random characters as pre-0.29 guides show them.
    pub fn parse(text: &str) -> Option<Self> {
        let text = text.trim();
        let random = text.strip_prefix(Self::PREFIX).unwrap_or(text);
        (random.len() == Self::RANDOM_LEN && random.bytes().all(|b| b.is_ascii_alphanumeric()))
            .then(|| Self(format!("{}{random}", Self::PREFIX)))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for RegistrationId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// How a waiting registration ended, as its client learns it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RegistrationOutcome {
    Registered(NodeId),
    Rejected(String),
}

/// A client that asked to join interactively and waits for `nodes register`.
#[derive(Clone, Debug)]
pub struct PendingRegistration {
    pub id: RegistrationId,
    pub machine_key: MachineKey,
    pub node_key: NodeKey,
    pub hostname: String,
    pub hostinfo: Option<String>,
    pub advertised_routes: Vec<IpNet>,
    /// Tags the client asks for (`--advertise-tags`), checked when an admin
    /// registers it to a user.
    pub requested_tags: Vec<String>,
    pub requested_expiry: Option<Timestamp>,
    pub created_at: Timestamp,
    /// Whether its client waits on this replica (else an admin here took it from
    /// the database, and its outcome reaches the client through there).
    pub(super) local: bool,
    pub(super) outcome: Arc<watch::Sender<Option<RegistrationOutcome>>>,
}

/// What a client asking to be registered interactively sent.
#[derive(Clone, Debug)]
pub struct RegistrationRequest {
    pub machine_key: MachineKey,
    pub node_key: NodeKey,
    pub hostname: String,
    pub hostinfo: Option<String>,
    pub advertised_routes: Vec<IpNet>,
    pub requested_tags: Vec<String>,
    pub requested_expiry: Option<Timestamp>,
}

/// Everything needed to admit a node, whichever way it authenticated.
#[derive(Clone, Debug)]
pub struct Admission {
    pub machine_key: MachineKey,
    pub node_key: NodeKey,
    pub hostname: String,
    pub hostinfo: Option<String>,
    pub advertised_routes: Vec<IpNet>,
    /// Who authenticated the node: the registering user, or the pre-auth
    /// key's user (`None` for a tagged key made for nobody).
    pub user_id: Option<UserId>,
    /// Tags of the pre-auth key: the node gets them unconditionally.
    pub tags: Vec<String>,
    /// Tags the client asks for (`--advertise-tags`): granted only where the
    /// policy's `tagOwners` let the user (or the key's tags) apply them.
    pub requested_tags: Vec<String>,
    pub ephemeral: bool,
    pub register_method: RegisterMethod,
    /// The pre-auth key used; a single-use key is consumed atomically with the node write.
    pub auth_key: Option<PreAuthKey>,
    /// Expiry the client asked for; `None` applies `node.expiry`.
    pub requested_expiry: Option<Timestamp>,
}

impl State {
    /// Records a client waiting for an admin and returns its id and a receiver
    /// that yields the outcome. A client retrying with the same node key gets its
    /// existing entry back. Refused while [`MAX_PENDING_REGISTRATIONS`] wait.
    /// With several replicas, the others can see and decide it too.
    pub async fn begin_registration(
        &self,
        req: RegistrationRequest,
    ) -> Result<(RegistrationId, watch::Receiver<Option<RegistrationOutcome>>)> {
        let RegistrationRequest {
            machine_key,
            node_key,
            hostname,
            hostinfo,
            advertised_routes,
            requested_tags,
            requested_expiry,
        } = req;
        let now = Self::now();
        let (tx, rx) = watch::channel(None);
        let reg = PendingRegistration {
            id: RegistrationId::generate(),
            machine_key,
            node_key,
            hostname,
            hostinfo: hostinfo.filter(|h| h.len() <= MAX_PENDING_HOSTINFO),
            advertised_routes,
            requested_tags,
            requested_expiry,
            created_at: now,
            local: true,
            outcome: Arc::new(tx),
        };
        {
            let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
            self.drop_stale(&mut pending, now);
            if let Some(existing) = pending
                .values()
                .find(|p| p.local && p.node_key == node_key && p.machine_key == machine_key)
            {
                return Ok((existing.id.clone(), existing.outcome.subscribe()));
            }
            if pending.len() >= MAX_PENDING_REGISTRATIONS {
                tracing::warn!(
                    waiting = pending.len(),
                    "refused an interactive registration: too many are waiting for an admin"
                );
                return Err(Error::ResourceExhausted(format!(
                    "{MAX_PENDING_REGISTRATIONS} registrations are already waiting for an admin; try again later"
                )));
            }
            pending.insert(reg.id.clone(), reg.clone());
        }
        self.share_waiting(&reg).await?;
        Ok((reg.id, rx))
    }

    /// Queues a made-up registration under a chosen id (`DebugCreateNode`), so the
    /// interactive flow can be exercised without a client. Fresh random keys.
    pub async fn begin_debug_registration(
        &self,
        id: &str,
        user: &str,
        hostname: &str,
        advertised_routes: Vec<IpNet>,
    ) -> Result<PendingRegistration> {
        self.find_user(user).await?;
        let id = RegistrationId::parse(id).ok_or_else(|| {
            Error::InvalidArgument(format!(
                "{id:?} is not a registration id (hskey-authreq- and 24 letters or digits)"
            ))
        })?;
        let now = Self::now();
        let (tx, _rx) = watch::channel(None);
        let reg = PendingRegistration {
            id: id.clone(),
            machine_key: MachineKey::from_bytes(crate::types::secret::random_bytes()),
            node_key: NodeKey::from_bytes(crate::types::secret::random_bytes()),
            hostname: hostname.to_owned(),
            hostinfo: None,
            advertised_routes,
            requested_tags: Vec::new(),
            requested_expiry: None,
            created_at: now,
            local: true,
            outcome: Arc::new(tx),
        };
        {
            let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
            if pending.contains_key(&id) {
                return Err(Error::AlreadyExists(format!(
                    "registration {id} is already pending"
                )));
            }
            pending.insert(id.clone(), reg.clone());
        }
        self.share_waiting(&reg).await?;
        Ok(reg)
    }

    /// A receiver for the outcome of pending registration `id`, if it is still waiting
    /// (a client's follow-up request waits on it). A client whose registration
    /// began on another replica waits here from now on.
    pub async fn watch_registration(
        &self,
        id: &RegistrationId,
    ) -> Result<Option<watch::Receiver<Option<RegistrationOutcome>>>> {
        if let Some(reg) = self.local_pending(id) {
            return Ok(Some(reg.outcome.subscribe()));
        }
        let Some(mut reg) = self.find_shared(id).await? else {
            return Ok(None);
        };
        reg.local = true;
        let rx = reg.outcome.subscribe();
        self.pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(reg.id.clone(), reg);
        Ok(Some(rx))
    }

    /// The pending registration with this id, if it is still waiting (here, or,
    /// with several replicas, on another).
    pub async fn pending_registration(
        &self,
        id: &RegistrationId,
    ) -> Result<Option<PendingRegistration>> {
        match self.local_pending(id) {
            Some(reg) => Ok(Some(reg)),
            None => self.find_shared(id).await,
        }
    }

    fn local_pending(&self, id: &RegistrationId) -> Option<PendingRegistration> {
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        self.drop_stale(&mut pending, Self::now());
        pending.get(id).cloned()
    }

    fn drop_stale(
        &self,
        pending: &mut std::collections::HashMap<RegistrationId, PendingRegistration>,
        now: Timestamp,
    ) {
        let timeout = chrono::Duration::from_std(self.settings.registration_timeout)
            .unwrap_or(chrono::Duration::MAX);
        pending.retain(|_, p| p.created_at + timeout > now);
    }

    /// Finds and removes the pending registration that `key` names: a registration
    /// id (with or without `hskey-authreq-`), a `nodekey:` or an `mkey:`. With
    /// several replicas it is claimed in the database, so that no other admin
    /// decides it at the same time, wherever its client waits.
    pub(super) async fn take_pending(&self, key: &str) -> Result<PendingRegistration> {
        let key = key.trim();
        let wanted = if let Some(id) = RegistrationId::parse(key) {
            crate::db::WaitingKey::Id(id.as_str().to_owned())
        } else if let Ok(node_key) = key.parse::<NodeKey>() {
            crate::db::WaitingKey::NodeKey(node_key)
        } else if let Ok(machine_key) = key.parse::<MachineKey>() {
            crate::db::WaitingKey::MachineKey(machine_key)
        } else {
            return Err(Error::InvalidArgument(format!(
                "{key:?} is not a registration id (hskey-authreq-…), a nodekey:… or an mkey:… key"
            )));
        };
        let not_found = || {
            Error::NotFound(format!(
                "no pending registration matches {key:?}: it may have expired; run `tailscale up` again and use the key from the URL it prints"
            ))
        };
        let claimed = if self.db.has_feed() {
            Some(self.claim_shared(&wanted).await?.ok_or_else(not_found)?)
        } else {
            None
        };
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        self.drop_stale(&mut pending, Self::now());
        let found = match &claimed {
            Some(claimed) => Some(claimed.id.clone()),
            None => pending
                .values()
                .find(|p| match &wanted {
                    crate::db::WaitingKey::Id(id) => p.id.as_str() == id,
                    crate::db::WaitingKey::NodeKey(k) => p.node_key == *k,
                    crate::db::WaitingKey::MachineKey(k) => p.machine_key == *k,
                })
                .map(|p| p.id.clone()),
        };
        found
            .and_then(|id| pending.remove(&id))
            .or(claimed)
            .ok_or_else(not_found)
    }

    /// Puts a registration taken with `take_pending` back, so that it can be
    /// completed again after a failure.
    pub(super) async fn put_back(&self, reg: PendingRegistration) {
        self.release_shared(&reg.id).await;
        if reg.local {
            self.pending
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(reg.id.clone(), reg);
        }
    }

    /// Registers a waiting client to `user` (a name or an id): `nodes register` / `auth register`.
    pub async fn complete_registration(&self, key: &str, user: &str) -> Result<(NodeView, Change)> {
        let user = self.find_user(user).await?;
        let reg = self.take_pending(key).await?;
        let (node, change) = self
            .register_pending(reg, user.id, RegisterMethod::Cli, None)
            .await?;
        Ok((self.node_view(node.id).await?, change))
    }

    /// Admits a waiting client (taken with `take_pending`) as `user`'s and tells it
    /// so; on failure it keeps waiting, so that the admin (or the person) can try
    /// again. `expiry` overrides what the client asked for.
    pub(super) async fn register_pending(
        &self,
        reg: PendingRegistration,
        user: UserId,
        method: RegisterMethod,
        expiry: Option<Timestamp>,
    ) -> Result<(Arc<Node>, Change)> {
        let admission = Admission {
            machine_key: reg.machine_key,
            node_key: reg.node_key,
            hostname: reg.hostname.clone(),
            hostinfo: reg.hostinfo.clone(),
            advertised_routes: reg.advertised_routes.clone(),
            user_id: Some(user),
            tags: Vec::new(),
            requested_tags: reg.requested_tags.clone(),
            ephemeral: false,
            register_method: method,
            auth_key: None,
            requested_expiry: expiry.or(reg.requested_expiry),
        };
        match self.admit(admission).await {
            Ok((node, change)) => {
                self.decide_shared(&reg.id, crate::db::Verdict::Registered(node.id))
                    .await;
                reg.outcome
                    .send_replace(Some(RegistrationOutcome::Registered(node.id)));
                Ok((node, change))
            }
            Err(err) => {
                self.put_back(reg).await;
                Err(err)
            }
        }
    }

    /// Approves a waiting re-login of a machine that already has a node, keeping its owner.
    /// Also approves a pending SSH `check` with that id (then no node is returned).
    pub async fn approve_registration(&self, auth_id: &str) -> Result<(Option<NodeView>, Change)> {
        let id = RegistrationId::parse(auth_id).ok_or_else(|| {
            Error::InvalidArgument(format!("{auth_id:?} is not an auth id (hskey-authreq-…)"))
        })?;
        if self.decide_ssh_check(&id, super::SshVerdict::Approved) {
            return Ok((None, Change::none()));
        }
        let reg = self
            .pending_registration(&id)
            .await?
            .ok_or_else(|| Error::NotFound(format!("no pending auth request {id}")))?;
        let owner = self
            .snapshot()
            .by_machine_key(&reg.machine_key)
            .next()
            .map(|n| n.user_id);
        match owner {
            Some(Some(user)) => self
                .complete_registration(id.as_str(), &user.to_string())
                .await
                .map(|(view, change)| (Some(view), change)),
            _ => Err(Error::FailedPrecondition(format!(
                "{id} is a new machine: choose its user with `headway auth register --auth-id {id} --user <name>`"
            ))),
        }
    }

    /// Refuses a waiting registration; its client is told so.
    pub async fn reject_registration(&self, auth_id: &str) -> Result<()> {
        if let Some(id) = RegistrationId::parse(auth_id)
            && self.decide_ssh_check(&id, super::SshVerdict::Rejected)
        {
            return Ok(());
        }
        let reg = self.take_pending(auth_id).await?;
        let reason = "registration rejected by an administrator";
        self.decide_shared(&reg.id, crate::db::Verdict::Rejected(reason.into()))
            .await;
        reg.outcome
            .send_replace(Some(RegistrationOutcome::Rejected(reason.into())));
        Ok(())
    }

    /// Creates a node, or logs a known machine back in (same machine key and owner,
    /// or the same node key): addresses and MagicDNS name stay.
    pub async fn admit(&self, adm: Admission) -> Result<(Arc<Node>, Change)> {
        let mut alloc = self.writer.lock().await;
        let snap = self.snapshot();
        let now = Self::now();
        let key_tags = super::keys::validate_tags(&adm.tags)?;
        let requested = super::keys::validate_tags(&adm.requested_tags)
            .map_err(|_| tags_refused(&adm.requested_tags))?;
        self.check_requested_tags(&requested, adm.user_id, &key_tags)?;
        let mut tags = key_tags;
        tags.extend(requested);
        tags.sort();
        tags.dedup();
        // A tagged node belongs to its tags, not to whoever registered it.
        let owner = if tags.is_empty() { adm.user_id } else { None };
        let expiry = if tags.is_empty() {
            adm.requested_expiry.filter(|e| *e > now).or_else(|| {
                self.settings
                    .node_expiry
                    .and_then(|d| chrono::Duration::from_std(d).ok())
                    .map(|d| now + d)
            })
        } else {
            None
        };
        let consume = adm.auth_key.as_ref().filter(|k| !k.reusable).map(|k| k.id);

        let by_node_key = snap.by_node_key(&adm.node_key).cloned();
        if let Some(other) = &by_node_key
            && other.machine_key != adm.machine_key
        {
            return Err(Error::AlreadyExists(
                "this node key is already registered by another machine".into(),
            ));
        }
        // The same machine logging in again as the same owner (a user, or tags).
        let existing = by_node_key.or_else(|| {
            snap.by_machine_key(&adm.machine_key)
                .find(|n| {
                    (n.is_tagged() && !tags.is_empty())
                        || (!n.is_tagged() && n.user_id == adm.user_id && tags.is_empty())
                })
                .cloned()
        });

        let (node, mut change) = if let Some(old) = existing {
            let mut node = (*old).clone();
            node.node_key = adm.node_key;
            node.hostname = adm.hostname.clone();
            if adm.hostinfo.is_some() {
                node.hostinfo = adm.hostinfo.clone();
            }
            if !tags.is_empty() {
                node.tags = tags;
                node.user_id = None;
            } else if node.is_tagged() && adm.auth_key.is_some() {
                // A pre-auth key without tags keeps the tags an admin gave the node.
            } else {
                // An interactive login without requested tags takes the node back
                // for the user (`tailscale up --advertise-tags= --force-reauth`).
                node.tags = Vec::new();
                node.user_id = owner;
            }
            node.expiry = if node.is_tagged() { None } else { expiry };
            node.register_method = adm.register_method;
            node.auth_key_id = adm.auth_key.as_ref().map(|k| k.id).or(node.auth_key_id);
            node.updated_at = now;
            self.db
                .save_node(&node, consume)
                .await
                .map_err(admission_error)?;
            let id = node.id;
            (node, Change::node_changed(id))
        } else {
            let base = GivenName::sanitize(&adm.hostname);
            // Another replica on the same database may take an address or a name
            // this one did not know was taken yet: the UNIQUE rules refuse the
            // insert, and the next try avoids everything stored by then.
            let mut names_taken_elsewhere: std::collections::HashSet<String> = Default::default();
            let mut tries = 0;
            let node = loop {
                tries += 1;
                let allocated = if tries == 1 {
                    alloc.allocate()
                } else {
                    alloc.allocate_scattered()
                };
                let (ipv4, ipv6) =
                    allocated.map_err(|e| Error::ResourceExhausted(e.to_string()))?;
                // A retry lost a name to another replica that wants the same
                // lowest free ones: skip a random few, more with every try.
                let skip = if tries == 1 {
                    0
                } else {
                    u64::from(u16::from_le_bytes(crate::types::secret::random_bytes()))
                        % (1u64 << (2 * tries))
                };
                let given_name = GivenName::unique_skipping(&base, skip, |n| {
                    snap.given_name_taken(n, None) || names_taken_elsewhere.contains(n)
                });
                let draft = Node {
                    id: NodeId(0),
                    machine_key: adm.machine_key,
                    node_key: adm.node_key,
                    disco_key: DiscoKey::zero(),
                    hostname: adm.hostname.clone(),
                    given_name: given_name.clone(),
                    user_id: owner,
                    ipv4,
                    ipv6,
                    endpoints: Vec::new(),
                    hostinfo: adm.hostinfo.clone(),
                    tags: tags.clone(),
                    expiry,
                    last_seen: None,
                    ephemeral: adm.ephemeral,
                    register_method: adm.register_method,
                    auth_key_id: adm.auth_key.as_ref().map(|k| k.id),
                    created_at: now,
                    updated_at: now,
                };
                match self.db.insert_node(&NewNode { node: draft }, consume).await {
                    Ok(node) => break node,
                    Err(crate::db::Error::Conflict(column))
                        if tries < TRIES_ON_CONFLICT
                            && ["nodes.ipv4", "nodes.ipv6", "nodes.given_name"]
                                .contains(&column.as_str()) =>
                    {
                        // Learn everything taken now, not just what the rule named:
                        // a burst through another replica took more than one.
                        alloc.release(ipv4, ipv6);
                        for taken in self.db.taken_by_nodes().await.map_err(admission_error)? {
                            alloc.reserve(taken.ipv4, taken.ipv6);
                            names_taken_elsewhere.insert(taken.given_name);
                        }
                    }
                    Err(e) => {
                        alloc.release(ipv4, ipv6);
                        return Err(admission_error(e));
                    }
                }
            };
            let id = node.id;
            (node, Change::node_added(id))
        };
        let id = node.id;
        let (_, moved) = self.update_nodes(|snap| snap.with_node(node.clone()));
        change.merge(moved);
        if !adm.advertised_routes.is_empty() || !self.snapshot().routes(id).is_empty() {
            let (_, routed) = self
                .store_routes(id, Some(&adm.advertised_routes), None)
                .await?;
            change.merge(routed);
        }
        drop(alloc);
        let node = self
            .snapshot()
            .get(id)
            .cloned()
            .ok_or_else(|| Error::NotFound(format!("node {id} vanished")))?;
        Ok((node, change))
    }
}

/// Headscale's refusal of tags a client may not have.
pub(super) fn tags_refused(tags: &[String]) -> Error {
    Error::InvalidArgument(format!(
        "requested tags [{}] are invalid or not permitted",
        tags.join(" ")
    ))
}

impl State {
    /// Checks tags a client asks for against the policy's `tagOwners`: each must
    /// be owned by the registering user (directly or through a group) or by one
    /// of the pre-auth key's tags. Without a policy no tag may be requested.
    fn check_requested_tags(
        &self,
        requested: &[String],
        user: Option<crate::types::UserId>,
        key_tags: &[String],
    ) -> Result<()> {
        if requested.is_empty() {
            return Ok(());
        }
        let users = self.users();
        let user = user.and_then(|id| users.get(&id));
        let refused: Vec<String> = self
            .with_approvals(|approvals| {
                requested
                    .iter()
                    .filter(|t| !key_tags.contains(t) && !approvals.may_tag(t, user, key_tags))
                    .cloned()
                    .collect()
            })
            .unwrap_or_else(|| requested.to_vec());
        if refused.is_empty() {
            Ok(())
        } else {
            Err(tags_refused(&refused))
        }
    }
}

/// How often a registration picks again when another replica took the address
/// or name it chose.
const TRIES_ON_CONFLICT: u32 = 8;

/// Storage refusals during admission, in words a client can act on.
fn admission_error(err: crate::db::Error) -> Error {
    match err {
        crate::db::Error::Conflict(c) if c == "pre_auth_keys.used" => {
            Error::Unauthenticated("pre-auth key refused: authkey already used".into())
        }
        crate::db::Error::NotFound(what) => {
            Error::NotFound(format!("cannot register: the {what} no longer exists"))
        }
        other => storage(other, String::new, |c| {
            format!("cannot register: {c} is already taken")
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registration_ids_accept_old_and_new_forms() {
        let id = RegistrationId::generate();
        assert!(id.as_str().starts_with("hskey-authreq-"));
        assert_eq!(RegistrationId::parse(id.as_str()), Some(id.clone()));
        let bare = &id.as_str()[RegistrationId::PREFIX.len()..];
        assert_eq!(RegistrationId::parse(bare), Some(id));
        assert_eq!(RegistrationId::parse("nodekey:abc"), None);
        assert_eq!(RegistrationId::parse("hskey-authreq-short"), None);
    }
}

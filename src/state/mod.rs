//! The single coordinator of users, nodes, keys and routes.
//!
//! Every mutation writes the database first, then the in-memory `NodeStore`,
//! and returns the `Change` that connected clients must learn; callers publish
//! it with `state.notifier().publish(change)`. Knows no wire format: the gRPC
//! and control layers convert at their edges.

pub mod admin;
pub mod change;
pub mod feed;
pub mod ip_alloc;
pub mod node_store;
pub mod policy;

mod keys;
mod login;
mod nodes;
pub mod oauth;
mod presence;
mod register;
mod routes;
mod ssh_check;
mod users;
mod waiting;

#[cfg(test)]
mod tests;

pub use change::{Change, Notifier};
pub use keys::NewCredential;
pub use login::OIDC_PROVIDER;
pub use node_store::{NodeStore, Snapshot};
pub use policy::{LoadedPolicy, PolicySource, PolicyStatus};
pub use presence::Presence;
pub use register::{
    Admission, PendingRegistration, RegistrationId, RegistrationOutcome, RegistrationRequest,
};
pub use routes::RouteView;
pub use ssh_check::SshVerdict;
pub use users::UserFilter;

use crate::config::Config;
use crate::db::{self, Db};
use crate::types::{Node, NodeId, PreAuthKey, Route, Timestamp, User, UserId};
use ip_alloc::IpAllocator;
use ipnet::IpNet;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Why a request was refused. The text is meant for the admin or client.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    AlreadyExists(String),
    #[error("{0}")]
    InvalidArgument(String),
    #[error("{0}")]
    FailedPrecondition(String),
    #[error("{0}")]
    ResourceExhausted(String),
    #[error("{0}")]
    Unauthenticated(String),
    #[error("{0}")]
    PermissionDenied(String),
    #[error("{0}")]
    Unimplemented(String),
    /// A storage failure; logged in full, reported vaguely.
    #[error("internal error: {0}")]
    Internal(#[from] db::Error),
}

pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    /// Why storage refused a write for a reason outside headway (another process
    /// holds the database, the disk is full, the file is read-only): words for
    /// the caller, unlike other internal errors.
    pub fn storage_unavailable(&self) -> Option<&str> {
        match self {
            Error::Internal(db::Error::Unavailable(why)) => Some(why),
            _ => None,
        }
    }
}

/// The part of the configuration the state rules depend on.
#[derive(Clone, Debug)]
pub struct Settings {
    pub prefix_v4: Option<ipnet::Ipv4Net>,
    pub prefix_v6: Option<ipnet::Ipv6Net>,
    pub allocation: crate::config::Allocation,
    /// Default key expiry for user-owned nodes; `None` = never.
    pub node_expiry: Option<Duration>,
    /// How long an interactive registration waits for an admin.
    pub registration_timeout: Duration,
    /// How long a disconnected ephemeral node lives on.
    pub ephemeral_inactivity_timeout: Duration,
    /// Where the access policy comes from.
    pub policy: PolicySource,
    /// `server_url` without a trailing slash (where SSH `check` rules send
    /// clients back to).
    pub server_url: String,
    /// Where the server's metrics are recorded; the database's statements too
    /// ([`State::load`] hands it its part).
    pub metrics: crate::metrics::Metrics,
}

impl Settings {
    /// What in-process tests run with: both prefixes, sequential addresses, no
    /// expiry, no policy file, a server URL nothing listens on.
    #[cfg(test)]
    pub fn for_test() -> Self {
        Settings {
            prefix_v4: Some("100.64.0.0/10".parse().expect("a prefix")),
            prefix_v6: Some("fd7a:115c:a1e0::/48".parse().expect("a prefix")),
            allocation: crate::config::Allocation::Sequential,
            node_expiry: None,
            registration_timeout: Duration::from_secs(60),
            ephemeral_inactivity_timeout: Duration::from_secs(120),
            policy: PolicySource {
                mode: crate::config::PolicyMode::File,
                path: None,
            },
            server_url: "http://127.0.0.1:1".into(),
            metrics: crate::metrics::Metrics::new(),
        }
    }

    pub fn from_config(config: &Config) -> Self {
        Settings {
            prefix_v4: config.prefixes.v4,
            prefix_v6: config.prefixes.v6,
            allocation: config.prefixes.allocation,
            node_expiry: config.node.expiry,
            registration_timeout: Duration::from_secs(15 * 60),
            ephemeral_inactivity_timeout: config.node.ephemeral_inactivity_timeout,
            policy: PolicySource {
                mode: config.policy.mode,
                path: config.policy.path.clone(),
            },
            server_url: config.server_url.as_str().to_owned(),
            metrics: crate::metrics::Metrics::new(),
        }
    }
}

/// A node joined with what admin views show about it.
#[derive(Clone, Debug)]
pub struct NodeView {
    pub node: Arc<Node>,
    pub user: Option<User>,
    pub auth_key: Option<PreAuthKey>,
    /// The user the pre-auth key belongs to (also after the node was tagged and
    /// left its user).
    pub auth_key_user: Option<User>,
    /// Whether at least one map session of the node is open.
    pub online: bool,
    /// Advertised and approved route rows, ordered by id.
    pub routes: Vec<Route>,
    /// Approved prefixes this node currently serves as primary.
    pub primary_routes: Vec<IpNet>,
}

impl NodeView {
    pub fn advertised_routes(&self) -> Vec<IpNet> {
        self.routes
            .iter()
            .filter(|r| r.advertised)
            .map(|r| r.prefix)
            .collect()
    }

    pub fn approved_routes(&self) -> Vec<IpNet> {
        self.routes
            .iter()
            .filter(|r| r.approved)
            .map(|r| r.prefix)
            .collect()
    }
}

/// The coordinator. Shared as `Arc<State>` by every front end.
pub struct State {
    db: Db,
    settings: Settings,
    nodes: NodeStore,
    /// Serialises node mutations and owns the address pool. A tokio mutex because
    /// the holder awaits the database; reads never take it.
    writer: tokio::sync::Mutex<IpAllocator>,
    /// Interactive registrations waiting for an admin. std Mutex: short, no await.
    pending: Mutex<HashMap<RegistrationId, PendingRegistration>>,
    /// Every user, kept beside the database for the map builders, which need them for
    /// each full map and each delta. Replaced only by user mutations, which hold
    /// `users_writer` so that two of them cannot lose each other's update.
    users: arc_swap::ArcSwap<HashMap<UserId, User>>,
    users_writer: tokio::sync::Mutex<()>,
    /// Open map sessions per node; a node is online while its count is above zero.
    sessions: Mutex<HashMap<NodeId, presence::Sessions>>,
    notifier: Notifier,
    /// The access policy and its compiled view.
    policy: policy::PolicyStore,
    /// Pending and approved SSH `check`s.
    ssh: ssh_check::SshChecks,
    /// Every background task of the server (timers here; connections and the
    /// dispatcher elsewhere), stopped with it.
    tasks: crate::tasks::Tasks,
    /// The change feed's newest entry when the rows were loaded (PostgreSQL):
    /// following it starts after this.
    feed_start: u64,
    /// Nodes with a map session on other replicas (PostgreSQL), by replica name.
    remote_sessions: Mutex<HashMap<NodeId, std::collections::BTreeSet<String>>>,
    /// Local sessions opening and closing, in order, for the `sessions` table
    /// (PostgreSQL); the receiver waits for `spawn_feed`.
    session_rows: Option<tokio::sync::mpsc::UnboundedSender<(NodeId, bool)>>,
    session_rows_rx: Mutex<Option<tokio::sync::mpsc::UnboundedReceiver<(NodeId, bool)>>>,
    /// The periodic jobs' lock while this replica holds it (PostgreSQL).
    leadership: tokio::sync::Mutex<Option<db::Leadership>>,
    /// This replica's relay region as the other replicas should serve it
    /// (PostgreSQL; tailcfg's JSON form, set once by the composition root).
    relay_region: std::sync::OnceLock<String>,
}

impl std::fmt::Debug for State {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("State")
            .field("nodes", &self.nodes.snapshot().len())
            .finish_non_exhaustive()
    }
}

impl State {
    /// Loads every node and route from the database and builds the address pool.
    pub async fn load(db: Db, settings: Settings) -> Result<State> {
        let db = db.with_metrics(settings.metrics.db.clone());
        let mut remote_sessions: HashMap<NodeId, std::collections::BTreeSet<String>> =
            HashMap::new();
        let (feed_start, session_rows, session_rows_rx) = if db.has_feed() {
            // Read before the rows: a write between the two is applied again
            // later, which changes nothing; none is missed.
            let feed_start = db.feed_head().await?;
            db.register_replica().await?;
            for (node, replica) in db.sessions_elsewhere(None).await? {
                remote_sessions.entry(node).or_default().insert(replica);
            }
            let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
            (feed_start, Some(tx), Some(rx))
        } else {
            (0, None, None)
        };
        let nodes = db.list_nodes().await?;
        let routes = db.list_routes().await?;
        let users: HashMap<UserId, User> = db
            .list_users()
            .await?
            .into_iter()
            .map(|u| (u.id, u))
            .collect();
        let mut alloc =
            IpAllocator::new(settings.prefix_v4, settings.prefix_v6, settings.allocation);
        for node in &nodes {
            alloc.reserve(node.ipv4, node.ipv6);
        }
        let policy = policy::PolicyStore::new(settings.policy.clone(), settings.server_url.clone());
        settings
            .metrics
            .map
            .nodes
            .set(i64::try_from(nodes.len()).unwrap_or(i64::MAX));
        Ok(State {
            db,
            policy,
            ssh: ssh_check::SshChecks::default(),
            settings,
            nodes: NodeStore::new(Snapshot::from_rows(nodes, routes)),
            writer: tokio::sync::Mutex::new(alloc),
            pending: Mutex::new(HashMap::new()),
            users: arc_swap::ArcSwap::from_pointee(users),
            users_writer: tokio::sync::Mutex::new(()),
            sessions: Mutex::new(HashMap::new()),
            notifier: Notifier::new(),
            tasks: crate::tasks::Tasks::new(),
            feed_start,
            remote_sessions: Mutex::new(remote_sessions),
            session_rows,
            session_rows_rx: Mutex::new(session_rows_rx),
            leadership: tokio::sync::Mutex::new(None),
            relay_region: std::sync::OnceLock::new(),
        })
    }

    /// Loads the configured access policy (call once, after [`State::load`]). A
    /// policy that does not parse is an error naming file, line and column.
    pub async fn start_policy(&self) -> Result<PolicyStatus> {
        self.load_policy().await
    }

    /// Where the server's metrics are recorded (map sessions, registrations,
    /// requests, statements, the relay, the policy).
    pub fn metrics(&self) -> &crate::metrics::Metrics {
        &self.settings.metrics
    }

    /// The server's background tasks, stopped when it stops.
    pub fn tasks(&self) -> &crate::tasks::Tasks {
        &self.tasks
    }

    /// Where mutations' changes are published for the map sessions.
    pub fn notifier(&self) -> &Notifier {
        &self.notifier
    }

    /// Every user by id, as of the last user mutation (lock-free).
    pub fn users(&self) -> Arc<HashMap<UserId, User>> {
        self.users.load_full()
    }

    /// The current node snapshot (lock-free).
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.nodes.snapshot()
    }

    /// Whether `key` is the node key of a current, unexpired node: who may use the
    /// relay when `derp.server.verify_clients` is on, and what `/verify` answers.
    pub fn is_current_node_key(&self, key: &crate::types::NodeKey) -> bool {
        let now = chrono::Utc::now();
        self.snapshot()
            .by_node_key(key)
            .is_some_and(|node| !node.is_expired(now))
    }

    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// Whether the database answers.
    pub async fn database_ok(&self) -> bool {
        self.db.ping().await
    }

    /// Whether node `id` has an open map session, here or on another replica.
    pub fn is_online(&self, id: NodeId) -> bool {
        self.sessions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&id)
            .is_some_and(|s| s.open > 0)
            || self.is_online_elsewhere(id)
    }

    /// Whether another replica holds a map session of node `id`.
    pub(super) fn is_online_elsewhere(&self, id: NodeId) -> bool {
        self.remote_sessions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains_key(&id)
    }

    fn now() -> Timestamp {
        chrono::Utc::now()
    }
}

/// Turns a storage error into a user-facing one with a readable sentence.
fn storage(
    err: db::Error,
    not_found: impl FnOnce() -> String,
    conflict: impl FnOnce(&str) -> String,
) -> Error {
    match err {
        db::Error::NotFound(_) => Error::NotFound(not_found()),
        db::Error::Conflict(column) => Error::AlreadyExists(conflict(&column)),
        other => Error::Internal(other),
    }
}

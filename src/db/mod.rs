//! Persistent storage: SQLite (the default) or PostgreSQL, reached through
//! sea-query statements, with each backend's embedded migrations applied at open.
//!
//! Knows rows and `types`; nothing about clients, gRPC or changes to publish.

use crate::config;
use crate::types::{
    AdminSession, AdminSessionKind, ApiKey, ApiKeyId, Node, NodeId, OAuthClient, OAuthClientId,
    OAuthToken, PreAuthKey, PreAuthKeyId, Route, RouteId, Timestamp, User, UserId, UserName,
};
use ipnet::IpNet;

mod admin_sessions;
mod api_keys;
mod copy;
mod exec;
mod feed;
pub mod headscale;
mod nodes;
mod oauth;
mod policy;
mod postgres;
mod preauth_keys;
mod presence;
mod routes;
mod rows;
mod sqlite;
#[cfg(any(test, feature = "full-suite"))]
pub mod testing;
mod users;
mod waiting;

#[cfg(test)]
mod tests;

pub use copy::{Copied, Dump, SavedPolicy};
pub use feed::{Fed, FeedEntry, FeedListener};
pub use presence::Leadership;
pub use waiting::{Verdict, WaitingKey, WaitingRegistration};

/// Storage failures. `NotFound` and `Conflict` are meant for users; the others are logged.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No row with that id (the text names the kind of row).
    #[error("{0} not found")]
    NotFound(&'static str),
    /// A uniqueness rule was broken; the text names the column, e.g. `users.name`.
    #[error("already exists: {0}")]
    Conflict(String),
    #[error("cannot open database {path}: {}", rows::storage_condition(source).unwrap_or_else(|| source.to_string()))]
    Open { path: String, source: sqlx::Error },
    /// The database cannot take writes for a reason outside headway (locked by
    /// another process, a full disk, a read-only file): said to the caller as is.
    #[error("{0}")]
    Unavailable(String),
    #[error("database migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("database error: {0}")]
    Sqlx(sqlx::Error),
    /// A stored value could not be read back (corrupt row).
    #[error("corrupt row in {table}: {detail}")]
    Corrupt { table: &'static str, detail: String },
    /// The configured database is Headscale's: headway keeps its own.
    #[error(
        "{0} is a Headscale database: headway keeps its own and never writes Headscale's. \
         Set database.* (database.sqlite.path) to a new location and import this one into it \
         with `headway import headscale` (README: Moving from Headscale)"
    )]
    HeadscaleDatabase(String),
    /// `db copy` was asked to write into a database that already holds rows.
    #[error(
        "the target database is not empty ({0} rows); copy into an empty database, or pass --replace to delete its rows first"
    )]
    NotEmpty(usize),
}

pub type Result<T> = std::result::Result<T, Error>;

/// A name for this process among replicas: random, new at every start.
fn new_replica_name() -> std::sync::Arc<str> {
    let bytes: [u8; 6] = crate::types::secret::random_bytes();
    bytes
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<String>()
        .into()
}

/// What `insert_user` needs.
#[derive(Clone, Debug)]
pub struct NewUser {
    pub name: UserName,
    pub display_name: String,
    pub email: String,
    pub provider: String,
    pub provider_id: String,
    pub profile_pic_url: String,
    /// Groups from the identity provider's `groups` claim.
    pub groups: Vec<String>,
    pub created_at: Timestamp,
}

/// What `insert_node` needs: a `Node` without an id.
#[derive(Clone, Debug)]
pub struct NewNode {
    pub node: Node,
}

/// What one stored node holds that no other node may: its addresses and name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Taken {
    pub ipv4: Option<std::net::Ipv4Addr>,
    pub ipv6: Option<std::net::Ipv6Addr>,
    pub given_name: String,
}

/// What `insert_preauth_key` needs.
#[derive(Clone, Debug)]
pub struct NewPreAuthKey {
    pub user_id: Option<UserId>,
    pub prefix: String,
    pub hash: String,
    pub reusable: bool,
    pub ephemeral: bool,
    pub tags: Vec<String>,
    pub expiration: Option<Timestamp>,
    pub created_at: Timestamp,
}

/// What `insert_api_key` needs.
#[derive(Clone, Debug)]
pub struct NewApiKey {
    pub prefix: String,
    pub hash: String,
    pub expiration: Option<Timestamp>,
    pub created_at: Timestamp,
}

/// A handle to the database; cheap to clone.
#[derive(Clone, Debug)]
pub struct Db {
    pools: exec::Pools,
    /// This process among the replicas sharing a PostgreSQL database: the origin
    /// its writes carry in the change feed.
    replica: std::sync::Arc<str>,
    /// Where statement times are recorded (`exec.rs`); detached until
    /// [`Db::with_metrics`].
    metrics: crate::metrics::DbMetrics,
}

impl Db {
    /// Opens (creating the file if missing, accepting an empty file) and migrates.
    pub async fn open(config: &config::Database) -> Result<Db> {
        match config {
            config::Database::Sqlite {
                path,
                write_ahead_log,
                wal_autocheckpoint,
            } => sqlite::open(path, *write_ahead_log, *wal_autocheckpoint).await,
            config::Database::Postgres(pg) => postgres::open(pg).await,
        }
    }

    /// This handle, recording how long each statement takes into `metrics`.
    pub fn with_metrics(self, metrics: crate::metrics::DbMetrics) -> Db {
        Db { metrics, ..self }
    }

    /// This process's name in the change feed.
    pub fn replica(&self) -> &str {
        &self.replica
    }

    /// Whether the database answers a trivial query.
    pub async fn ping(&self) -> bool {
        let stmt = sea_query::Query::select()
            .expr(sea_query::Expr::val(1))
            .to_owned();
        rows::fetch_one(self.read(), &stmt).await.is_ok()
    }

    // ---- users

    /// Conflict("users.name") when the name is taken.
    pub async fn insert_user(&self, new: &NewUser) -> Result<User> {
        users::insert(self, new).await
    }
    pub async fn list_users(&self) -> Result<Vec<User>> {
        users::list(self).await
    }
    /// NotFound("user"), Conflict("users.name").
    pub async fn rename_user(&self, id: UserId, name: &UserName, now: Timestamp) -> Result<User> {
        users::rename(self, id, name, now).await
    }
    /// A login's profile (name, display name, email, picture, groups); the provider
    /// and its identifier stay. NotFound("user"), Conflict("users.name").
    pub async fn update_user_profile(
        &self,
        id: UserId,
        profile: &NewUser,
        now: Timestamp,
    ) -> Result<User> {
        users::update_profile(self, id, profile, now).await
    }
    /// NotFound("user"). Deletes the user's pre-auth keys with it.
    pub async fn delete_user(&self, id: UserId) -> Result<()> {
        users::delete(self, id).await
    }

    // ---- nodes

    /// Inserts `new.node` (its `id` is ignored) and returns it with its id.
    /// When `consume_key` is given, marks that pre-auth key used in the same transaction.
    /// Conflict("nodes.node_key" | "nodes.given_name" | "nodes.ipv4" | "nodes.ipv6").
    /// Also Conflict("pre_auth_keys.used") when `consume_key` is single-use and already used
    /// (so two registrations racing with one key cannot both succeed), and
    /// NotFound("user" | "pre-auth key") when a referenced row is gone; nothing is written then.
    pub async fn insert_node(
        &self,
        new: &NewNode,
        consume_key: Option<PreAuthKeyId>,
    ) -> Result<Node> {
        nodes::insert(self, new, consume_key).await
    }
    /// Writes every column of an existing node. NotFound("node"), Conflict as above,
    /// NotFound("user" | "pre-auth key") when a referenced row is gone.
    /// When `consume_key` is given, marks that pre-auth key used in the same
    /// transaction (re-login with a single-use key), as `insert_node` does.
    pub async fn save_node(&self, node: &Node, consume_key: Option<PreAuthKeyId>) -> Result<()> {
        nodes::save(self, node, consume_key).await
    }
    pub async fn list_nodes(&self) -> Result<Vec<Node>> {
        nodes::list(self).await
    }
    /// Every stored node's addresses and name (what a registration must avoid,
    /// including nodes other replicas wrote a moment ago).
    pub async fn taken_by_nodes(&self) -> Result<Vec<Taken>> {
        nodes::taken(self).await
    }
    /// NotFound("node"). Deletes the node's routes with it.
    pub async fn delete_node(&self, id: NodeId) -> Result<()> {
        nodes::delete(self, id).await
    }

    // ---- pre-auth keys

    /// Conflict("pre_auth_keys.prefix"), NotFound("user") when `user_id` names no user.
    pub async fn insert_preauth_key(&self, new: &NewPreAuthKey) -> Result<PreAuthKey> {
        preauth_keys::insert(self, new).await
    }
    pub async fn list_preauth_keys(&self) -> Result<Vec<PreAuthKey>> {
        preauth_keys::list(self).await
    }
    pub async fn find_preauth_key_by_prefix(&self, prefix: &str) -> Result<Option<PreAuthKey>> {
        preauth_keys::find_by_prefix(self, prefix).await
    }
    /// Stores headway's digest in place of an imported bcrypt hash. NotFound("pre-auth key").
    pub async fn set_preauth_key_hash(&self, id: PreAuthKeyId, hash: &str) -> Result<()> {
        preauth_keys::set_hash(self, id, hash).await
    }
    /// Sets `expiration` to `now`. NotFound("pre-auth key").
    pub async fn expire_preauth_key(&self, id: PreAuthKeyId, now: Timestamp) -> Result<()> {
        preauth_keys::expire(self, id, now).await
    }
    /// NotFound("pre-auth key"). Nodes that used it keep existing (their `auth_key_id` becomes NULL).
    pub async fn delete_preauth_key(&self, id: PreAuthKeyId) -> Result<()> {
        preauth_keys::delete(self, id).await
    }

    // ---- API keys

    /// Conflict("api_keys.prefix").
    pub async fn insert_api_key(&self, new: &NewApiKey) -> Result<ApiKey> {
        api_keys::insert(self, new).await
    }
    pub async fn list_api_keys(&self) -> Result<Vec<ApiKey>> {
        api_keys::list(self).await
    }
    pub async fn find_api_key_by_prefix(&self, prefix: &str) -> Result<Option<ApiKey>> {
        api_keys::find_by_prefix(self, prefix).await
    }
    /// Sets `expiration` to `now`. NotFound("API key").
    pub async fn expire_api_key(&self, id: ApiKeyId, now: Timestamp) -> Result<()> {
        api_keys::expire(self, id, now).await
    }
    /// NotFound("API key").
    pub async fn delete_api_key(&self, id: ApiKeyId) -> Result<()> {
        api_keys::delete(self, id).await
    }
    /// Stores headway's digest in place of an imported bcrypt hash. NotFound("API key").
    pub async fn set_api_key_hash(&self, id: ApiKeyId, hash: &str) -> Result<()> {
        api_keys::set_hash(self, id, hash).await
    }
    /// Records a successful authentication (sets `last_seen`). NotFound("API key").
    pub async fn touch_api_key(&self, id: ApiKeyId, now: Timestamp) -> Result<()> {
        api_keys::touch(self, id, now).await
    }

    // ---- OAuth clients and their tokens (`/api/v2`)

    /// Stores a web UI sign-in link or session (expired ones are swept).
    pub async fn insert_admin_session(&self, session: &AdminSession, now: Timestamp) -> Result<()> {
        admin_sessions::insert(self, session, now).await
    }
    pub async fn find_admin_session(
        &self,
        kind: AdminSessionKind,
        prefix: &str,
    ) -> Result<Option<AdminSession>> {
        admin_sessions::find(self, kind, prefix).await
    }
    /// `NotFound` when it was already gone (a link redeemed twice).
    pub async fn delete_admin_session(&self, kind: AdminSessionKind, prefix: &str) -> Result<()> {
        admin_sessions::delete(self, kind, prefix).await
    }
    pub async fn touch_admin_session(&self, prefix: &str, now: Timestamp) -> Result<()> {
        admin_sessions::touch(self, prefix, now).await
    }

    /// Inserts a client (its `id` is ignored). Conflict("oauth_clients.prefix").
    pub async fn insert_oauth_client(&self, client: &OAuthClient) -> Result<OAuthClient> {
        oauth::insert_client(self, client).await
    }
    pub async fn list_oauth_clients(&self) -> Result<Vec<OAuthClient>> {
        oauth::list_clients(self).await
    }
    pub async fn find_oauth_client(&self, prefix: &str) -> Result<Option<OAuthClient>> {
        oauth::find_client(self, prefix).await
    }
    pub async fn get_oauth_client(&self, id: OAuthClientId) -> Result<Option<OAuthClient>> {
        oauth::get_client(self, id).await
    }
    /// Deletes a client and its tokens. NotFound("OAuth client").
    pub async fn delete_oauth_client(&self, id: OAuthClientId) -> Result<()> {
        oauth::delete_client(self, id).await
    }
    /// Stores a token; tokens that expired before `now` are dropped.
    pub async fn insert_oauth_token(&self, token: &OAuthToken, now: Timestamp) -> Result<()> {
        oauth::insert_token(self, token, now).await
    }
    pub async fn find_oauth_token(&self, prefix: &str) -> Result<Option<OAuthToken>> {
        oauth::find_token(self, prefix).await
    }

    // ---- routes

    /// Every route of every node, ordered by id.
    pub async fn list_routes(&self) -> Result<Vec<Route>> {
        routes::list(self).await
    }
    /// Replaces one node's routes in one transaction so that exactly the union of
    /// `advertised` and `approved` has rows, each flagged accordingly. Rows for
    /// prefixes that stay keep their id and `created_at`. Returns the node's rows.
    /// Prefixes are stored canonically (host bits cleared). NotFound("node").
    pub async fn set_node_routes(
        &self,
        node_id: NodeId,
        advertised: &[IpNet],
        approved: &[IpNet],
        by_policy: &[IpNet],
        now: Timestamp,
    ) -> Result<Vec<Route>> {
        routes::set_for_node(self, node_id, advertised, approved, by_policy, now).await
    }
    /// NotFound("route").
    pub async fn delete_route(&self, id: RouteId) -> Result<()> {
        routes::delete(self, id).await
    }

    // ---- policy (for `policy.mode: database`)

    pub async fn get_policy(&self) -> Result<Option<(String, Timestamp)>> {
        policy::get(self).await
    }
    pub async fn set_policy(&self, text: &str, now: Timestamp) -> Result<()> {
        policy::set(self, text, now).await
    }
}

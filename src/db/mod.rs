//! Persistent storage: a SQLite pool (PostgreSQL later) reached through
//! sea-query statements, with embedded migrations applied at open.
//!
//! Knows rows and `types`; nothing about clients, gRPC or changes to publish.
//! Every write goes through one writer connection, so concurrent registrations
//! queue instead of failing with "database is locked".

use crate::config;
use crate::types::{
    ApiKey, ApiKeyId, Node, NodeId, PreAuthKey, PreAuthKeyId, Route, RouteId, Timestamp, User,
    UserId, UserName,
};
use ipnet::IpNet;

/// Storage failures. `NotFound` and `Conflict` are meant for users; the others are logged.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No row with that id (the text names the kind of row).
    #[error("{0} not found")]
    NotFound(&'static str),
    /// A uniqueness rule was broken; the text names the column, e.g. `users.name`.
    #[error("already exists: {0}")]
    Conflict(String),
    #[error("cannot open database {path}: {source}")]
    Open { path: String, source: sqlx::Error },
    #[error("database migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("database error: {0}")]
    Sqlx(sqlx::Error),
    /// A stored value could not be read back (corrupt row).
    #[error("corrupt row in {table}: {detail}")]
    Corrupt { table: &'static str, detail: String },
}

pub type Result<T> = std::result::Result<T, Error>;

/// What `insert_user` needs.
#[derive(Clone, Debug)]
pub struct NewUser {
    pub name: UserName,
    pub display_name: String,
    pub email: String,
    pub provider: String,
    pub provider_id: String,
    pub profile_pic_url: String,
    pub created_at: Timestamp,
}

/// What `insert_node` needs: a `Node` without an id.
#[derive(Clone, Debug)]
pub struct NewNode {
    pub node: Node,
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
    // filled in by the implementation
}

impl Db {
    /// Opens (creating the file if missing, accepting an empty file) and migrates.
    pub async fn open(config: &config::Database) -> Result<Db> {
        let _ = config;
        todo!()
    }

    /// Whether the database answers a trivial query.
    pub async fn ping(&self) -> bool {
        todo!()
    }

    // ---- users

    /// Conflict("users.name") when the name is taken.
    pub async fn insert_user(&self, new: &NewUser) -> Result<User> {
        let _ = new;
        todo!()
    }
    pub async fn list_users(&self) -> Result<Vec<User>> {
        todo!()
    }
    /// NotFound("user"), Conflict("users.name").
    pub async fn rename_user(&self, id: UserId, name: &UserName, now: Timestamp) -> Result<User> {
        let _ = (id, name, now);
        todo!()
    }
    /// NotFound("user"). Deletes the user's pre-auth keys with it.
    pub async fn delete_user(&self, id: UserId) -> Result<()> {
        let _ = id;
        todo!()
    }

    // ---- nodes

    /// Inserts `new.node` (its `id` is ignored) and returns it with its id.
    /// When `consume_key` is given, marks that pre-auth key used in the same transaction.
    /// Conflict("nodes.node_key" | "nodes.given_name" | "nodes.ipv4" | "nodes.ipv6").
    pub async fn insert_node(
        &self,
        new: &NewNode,
        consume_key: Option<PreAuthKeyId>,
    ) -> Result<Node> {
        let _ = (new, consume_key);
        todo!()
    }
    /// Writes every column of an existing node. NotFound("node"), Conflict as above.
    pub async fn save_node(&self, node: &Node) -> Result<()> {
        let _ = node;
        todo!()
    }
    pub async fn list_nodes(&self) -> Result<Vec<Node>> {
        todo!()
    }
    /// NotFound("node"). Deletes the node's routes with it.
    pub async fn delete_node(&self, id: NodeId) -> Result<()> {
        let _ = id;
        todo!()
    }

    // ---- pre-auth keys

    /// Conflict("pre_auth_keys.prefix").
    pub async fn insert_preauth_key(&self, new: &NewPreAuthKey) -> Result<PreAuthKey> {
        let _ = new;
        todo!()
    }
    pub async fn list_preauth_keys(&self) -> Result<Vec<PreAuthKey>> {
        todo!()
    }
    pub async fn find_preauth_key_by_prefix(&self, prefix: &str) -> Result<Option<PreAuthKey>> {
        let _ = prefix;
        todo!()
    }
    /// Marks a single-use key as used (re-login with a key). NotFound("pre-auth key").
    pub async fn mark_preauth_key_used(&self, id: PreAuthKeyId) -> Result<()> {
        let _ = id;
        todo!()
    }
    /// Sets `expiration` to `now`. NotFound("pre-auth key").
    pub async fn expire_preauth_key(&self, id: PreAuthKeyId, now: Timestamp) -> Result<()> {
        let _ = (id, now);
        todo!()
    }
    /// NotFound("pre-auth key"). Nodes that used it keep existing (their `auth_key_id` becomes NULL).
    pub async fn delete_preauth_key(&self, id: PreAuthKeyId) -> Result<()> {
        let _ = id;
        todo!()
    }

    // ---- API keys

    /// Conflict("api_keys.prefix").
    pub async fn insert_api_key(&self, new: &NewApiKey) -> Result<ApiKey> {
        let _ = new;
        todo!()
    }
    pub async fn list_api_keys(&self) -> Result<Vec<ApiKey>> {
        todo!()
    }
    pub async fn find_api_key_by_prefix(&self, prefix: &str) -> Result<Option<ApiKey>> {
        let _ = prefix;
        todo!()
    }
    /// Sets `expiration` to `now`. NotFound("API key").
    pub async fn expire_api_key(&self, id: ApiKeyId, now: Timestamp) -> Result<()> {
        let _ = (id, now);
        todo!()
    }
    /// NotFound("API key").
    pub async fn delete_api_key(&self, id: ApiKeyId) -> Result<()> {
        let _ = id;
        todo!()
    }
    /// Records a successful authentication.
    pub async fn touch_api_key(&self, id: ApiKeyId, now: Timestamp) -> Result<()> {
        let _ = (id, now);
        todo!()
    }

    // ---- routes

    /// Every route of every node, ordered by id.
    pub async fn list_routes(&self) -> Result<Vec<Route>> {
        todo!()
    }
    /// Replaces one node's routes in one transaction so that exactly the union of
    /// `advertised` and `approved` has rows, each flagged accordingly. Rows for
    /// prefixes that stay keep their id and `created_at`. Returns the node's rows.
    pub async fn set_node_routes(
        &self,
        node_id: NodeId,
        advertised: &[IpNet],
        approved: &[IpNet],
        now: Timestamp,
    ) -> Result<Vec<Route>> {
        let _ = (node_id, advertised, approved, now);
        todo!()
    }
    /// NotFound("route").
    pub async fn delete_route(&self, id: RouteId) -> Result<()> {
        let _ = id;
        todo!()
    }

    // ---- policy (for `policy.mode: database`)

    pub async fn get_policy(&self) -> Result<Option<(String, Timestamp)>> {
        todo!()
    }
    pub async fn set_policy(&self, text: &str, now: Timestamp) -> Result<()> {
        let _ = (text, now);
        todo!()
    }
}

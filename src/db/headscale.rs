//! Headscale's database, read-only, for `headway import headscale`: which of its
//! schema layouts (v0.23 to v0.29) a database has, and its rows as
//! [`HeadscaleRows`], values parsed from the text each column holds.
//!
//! Columns are found by name, so every release in between reads the same way;
//! the source is opened read-only (SQLite `mode=ro`, PostgreSQL read-only
//! transactions) and never written.

use super::{Error, Result};
use crate::config;
use crate::types::Timestamp;
use sqlx::Row as _;
use sqlx::postgres::PgPool;
use sqlx::sqlite::{SqliteConnectOptions, SqlitePool, SqlitePoolOptions};
use std::collections::HashMap;

/// Headscale's migrations (gormigrate ids) and the release that added them; the
/// newest release whose ids are all present names a database's layout.
pub(crate) const RELEASES: [(&str, &[&str]); 6] = [
    (
        "v0.23",
        &[
            "202312101416",
            "202312101430",
            "202402151347",
            "2024041121742",
            "202406021630",
        ],
    ),
    (
        "v0.24",
        &[
            "202409271400",
            "202407191627",
            "202408181235",
            "202501221827",
            "202501311657",
            "202502070949",
        ],
    ),
    (
        "v0.26",
        &[
            "202502131714",
            "202502171819",
            "202505091439",
            "202505141324",
        ],
    ),
    (
        "v0.27",
        &["202507021200", "202510311551", "202511101554-drop-old-idx"],
    ),
    (
        "v0.28",
        &[
            "202511011637-preauthkey-bcrypt",
            "202511122344-remove-newline-index",
            "202511131445-node-forced-tags-to-tags",
            "202601121700-migrate-hostinfo-request-tags",
        ],
    ),
    (
        "v0.29",
        &[
            "202602201200-clear-tagged-node-user-id",
            "202605221435-clear-zero-time-node-expiry",
            "202606181200-recover-null-tags-node-user-id",
        ],
    ),
];

/// The newest Headscale release whose database headway reads.
pub const NEWEST_SUPPORTED: &str = "v0.29.2";

/// What a Headscale database says about itself.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Schema {
    /// The release whose layout it has (`v0.23` … `v0.29`).
    pub layout: &'static str,
    /// The version Headscale last started against it wrote (`database_versions`,
    /// since v0.29), when there is one.
    pub written_by: Option<String>,
    /// How many migrations it records.
    pub migrations: usize,
}

/// A Headscale database opened read-only.
pub struct HeadscaleDb {
    pool: Pool,
    /// Where it is, for messages.
    pub location: String,
}

enum Pool {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

impl HeadscaleDb {
    /// Opens the database a Headscale config names, read-only. A SQLite file that
    /// does not exist is an error (opening must not create it).
    pub async fn open(database: &config::Database) -> Result<HeadscaleDb> {
        let location = database.describe();
        let open_error = |source: sqlx::Error| Error::Open {
            path: location.clone(),
            source,
        };
        let pool = match database {
            config::Database::Sqlite { path, .. } => {
                if !path.is_file() {
                    return Err(Error::Unavailable(format!(
                        "Headscale's database {} does not exist",
                        path.display()
                    )));
                }
                let options = SqliteConnectOptions::new()
                    .filename(path)
                    .read_only(true)
                    .create_if_missing(false);
                Pool::Sqlite(
                    SqlitePoolOptions::new()
                        .max_connections(1)
                        .connect_with(options)
                        .await
                        .map_err(open_error)?,
                )
            }
            config::Database::Postgres(pg) => {
                let options = super::postgres::connect_options(pg)
                    .options([("default_transaction_read_only", "on")]);
                Pool::Postgres(
                    sqlx::postgres::PgPoolOptions::new()
                        .max_connections(1)
                        .connect_with(options)
                        .await
                        .map_err(open_error)?,
                )
            }
        };
        Ok(HeadscaleDb { pool, location })
    }

    /// The layout of the database, or why headway cannot read it: not Headscale's,
    /// older than v0.23, or with a migration (or a version) newer than v0.29.2.
    pub async fn schema(&self) -> Result<Schema> {
        let tables = self.tables().await?;
        if !tables.iter().any(|t| t == "migrations") {
            return Err(refused(format!(
                "{} is not a Headscale database (it has no `migrations` table)",
                self.location
            )));
        }
        let ids: Vec<String> = self
            .rows("migrations", &["id"])
            .await?
            .iter()
            .filter_map(|r| r.text("id").map(str::to_owned))
            .collect();
        let written_by = if tables.iter().any(|t| t == "database_versions") {
            self.rows("database_versions", &["version"])
                .await?
                .first()
                .and_then(|r| r.text("version").map(str::to_owned))
        } else {
            None
        };
        let schema = layout_of(&ids, written_by)?;
        Ok(schema)
    }

    /// Every row headway imports.
    pub async fn read(&self) -> Result<HeadscaleRows> {
        let tables = self.tables().await?;
        let has = |name: &str| tables.iter().any(|t| t == name);
        let users = self
            .rows(
                "users",
                &[
                    "id",
                    "name",
                    "display_name",
                    "email",
                    "provider_identifier",
                    "provider",
                    "profile_pic_url",
                    "created_at",
                    "updated_at",
                    "deleted_at",
                ],
            )
            .await?;
        let mut key_tags: HashMap<u64, Vec<String>> = HashMap::new();
        if has("pre_auth_key_acl_tags") {
            for row in self
                .rows("pre_auth_key_acl_tags", &["pre_auth_key_id", "tag"])
                .await?
            {
                if let (Some(id), Some(tag)) = (row.id("pre_auth_key_id")?, row.text("tag")) {
                    key_tags.entry(id).or_default().push(tag.to_owned());
                }
            }
        }
        let keys = self
            .rows(
                "pre_auth_keys",
                &[
                    "id",
                    "key",
                    "prefix",
                    "hash",
                    "user_id",
                    "reusable",
                    "ephemeral",
                    "used",
                    "tags",
                    "created_at",
                    "expiration",
                ],
            )
            .await?;
        let api_keys = self
            .rows(
                "api_keys",
                &[
                    "id",
                    "prefix",
                    "hash",
                    "created_at",
                    "expiration",
                    "last_seen",
                ],
            )
            .await?;
        let node_columns = self.columns("nodes").await?;
        let tags_requested_by_clients = node_columns.iter().any(|c| c == "forced_tags")
            && !node_columns.iter().any(|c| c == "tags");
        let nodes = self
            .rows(
                "nodes",
                &[
                    "id",
                    "machine_key",
                    "node_key",
                    "disco_key",
                    "endpoints",
                    "host_info",
                    "ipv4",
                    "ipv6",
                    "hostname",
                    "given_name",
                    "user_id",
                    "register_method",
                    "tags",
                    "forced_tags",
                    "auth_key_id",
                    "last_seen",
                    "expiry",
                    "approved_routes",
                    "created_at",
                    "updated_at",
                    "deleted_at",
                ],
            )
            .await?;
        let routes = if has("routes") {
            self.rows(
                "routes",
                &["node_id", "prefix", "advertised", "enabled", "deleted_at"],
            )
            .await?
        } else {
            Vec::new()
        };
        let policies = if has("policies") {
            self.rows(
                "policies",
                &["id", "data", "created_at", "updated_at", "deleted_at"],
            )
            .await?
        } else {
            Vec::new()
        };
        Ok(HeadscaleRows {
            tags_requested_by_clients,
            users: users.iter().map(HsUser::from_row).collect::<Result<_>>()?,
            pre_auth_keys: keys
                .iter()
                .map(|r| HsPreAuthKey::from_row(r, &key_tags))
                .collect::<Result<_>>()?,
            api_keys: api_keys
                .iter()
                .map(HsApiKey::from_row)
                .collect::<Result<_>>()?,
            nodes: nodes.iter().map(HsNode::from_row).collect::<Result<_>>()?,
            routes: routes
                .iter()
                .map(HsRoute::from_row)
                .collect::<Result<_>>()?,
            policies: policies
                .iter()
                .map(HsPolicy::from_row)
                .collect::<Result<_>>()?,
        })
    }

    async fn tables(&self) -> Result<Vec<String>> {
        let rows: Vec<(String,)> = match &self.pool {
            Pool::Sqlite(pool) => {
                sqlx::query_as("SELECT name FROM sqlite_master WHERE type = 'table'")
                    .fetch_all(pool)
                    .await
            }
            Pool::Postgres(pool) => {
                sqlx::query_as(
                    "SELECT table_name::text FROM information_schema.tables \
                     WHERE table_schema = current_schema()",
                )
                .fetch_all(pool)
                .await
            }
        }
        .map_err(Error::Sqlx)?;
        Ok(rows.into_iter().map(|(name,)| name).collect())
    }

    async fn columns(&self, table: &str) -> Result<Vec<String>> {
        let rows: Vec<(String,)> = match &self.pool {
            Pool::Sqlite(pool) => {
                sqlx::query_as("SELECT name FROM pragma_table_info(?)")
                    .bind(table)
                    .fetch_all(pool)
                    .await
            }
            Pool::Postgres(pool) => {
                sqlx::query_as(
                    "SELECT column_name::text FROM information_schema.columns \
                     WHERE table_schema = current_schema() AND table_name = $1",
                )
                .bind(table)
                .fetch_all(pool)
                .await
            }
        }
        .map_err(Error::Sqlx)?;
        Ok(rows.into_iter().map(|(name,)| name).collect())
    }

    /// Every row of `table`, each wanted column that exists read as text.
    async fn rows(&self, table: &'static str, wanted: &[&'static str]) -> Result<Vec<HsRow>> {
        let present = self.columns(table).await?;
        let columns: Vec<&'static str> = wanted
            .iter()
            .copied()
            .filter(|c| present.iter().any(|p| p == c))
            .collect();
        if columns.is_empty() {
            return Err(refused(format!(
                "Headscale's table {table} is missing from {}",
                self.location
            )));
        }
        let select = columns
            .iter()
            .map(|c| match &self.pool {
                Pool::Sqlite(_) => format!("CAST(\"{c}\" AS TEXT)"),
                Pool::Postgres(_) => format!("\"{c}\"::text"),
            })
            .collect::<Vec<_>>()
            .join(", ");
        // Table and column names come from the lists above, never from the database.
        let sql = format!("SELECT {select} FROM \"{table}\"");
        let read = |row: &dyn Fn(usize) -> std::result::Result<Option<String>, sqlx::Error>| {
            columns
                .iter()
                .enumerate()
                .map(|(i, c)| Ok((*c, row(i)?)))
                .collect::<std::result::Result<HashMap<_, _>, sqlx::Error>>()
        };
        let rows: Vec<HashMap<&'static str, Option<String>>> = match &self.pool {
            Pool::Sqlite(pool) => sqlx::query(sqlx::AssertSqlSafe(sql))
                .fetch_all(pool)
                .await
                .and_then(|rows| {
                    rows.iter()
                        .map(|r| read(&|i| r.try_get::<Option<String>, _>(i)))
                        .collect()
                }),
            Pool::Postgres(pool) => sqlx::query(sqlx::AssertSqlSafe(sql))
                .fetch_all(pool)
                .await
                .and_then(|rows| {
                    rows.iter()
                        .map(|r| read(&|i| r.try_get::<Option<String>, _>(i)))
                        .collect()
                }),
        }
        .map_err(Error::Sqlx)?;
        Ok(rows
            .into_iter()
            .map(|values| HsRow { table, values })
            .collect())
    }

    pub async fn close(self) {
        match self.pool {
            Pool::Sqlite(pool) => pool.close().await,
            Pool::Postgres(pool) => pool.close().await,
        }
    }
}

/// The layout that a list of applied migrations and the version row name.
fn layout_of(ids: &[String], written_by: Option<String>) -> Result<Schema> {
    let known =
        |id: &str| id == "SCHEMA_INIT" || RELEASES.iter().any(|(_, list)| list.contains(&id));
    if let Some(unknown) = ids.iter().find(|id| !known(id)) {
        return Err(refused(format!(
            "the Headscale database has migration {unknown}{}, which headway does not know: \
             it reads Headscale's databases from v0.23 to {NEWEST_SUPPORTED}",
            written_by
                .as_deref()
                .map(|v| format!(" (written by Headscale {v})"))
                .unwrap_or_default()
        )));
    }
    if let Some(version) = &written_by
        && newer_than_supported(version)
    {
        return Err(refused(format!(
            "the Headscale database was written by Headscale {version}; headway reads \
             Headscale's databases from v0.23 to {NEWEST_SUPPORTED}"
        )));
    }
    let has = |id: &str| ids.iter().any(|i| i == id);
    let layout = RELEASES
        .iter()
        .rev()
        .find(|(_, list)| list.iter().all(|id| has(id)))
        .map(|(release, _)| *release);
    let Some(layout) = layout else {
        return Err(refused(format!(
            "the Headscale database is older than v0.23 ({} migrations recorded): start \
             Headscale v0.23 or newer on it once, so it migrates, then import",
            ids.len()
        )));
    };
    Ok(Schema {
        layout,
        written_by,
        migrations: ids.len(),
    })
}

/// Whether a Headscale version string (`v0.30.0`, `0.29.3-beta.1`) is past what
/// headway reads: another minor or major than 0.23 … 0.29.
fn newer_than_supported(version: &str) -> bool {
    let numbers: Vec<u64> = version
        .trim_start_matches('v')
        .split(['-', '+'])
        .next()
        .unwrap_or_default()
        .split('.')
        .map(|n| n.parse().unwrap_or(0))
        .collect();
    matches!(numbers.as_slice(), [major, minor, ..] if *major > 0 || *minor > 29)
}

fn refused(message: String) -> Error {
    Error::Unavailable(message)
}

/// One row of a Headscale table: column → text (NULL is `None`).
struct HsRow {
    table: &'static str,
    values: HashMap<&'static str, Option<String>>,
}

impl HsRow {
    fn text(&self, column: &str) -> Option<&str> {
        self.values.get(column).and_then(|v| v.as_deref())
    }

    fn string(&self, column: &str) -> String {
        self.text(column).unwrap_or_default().to_owned()
    }

    fn corrupt(&self, column: &str, what: &str) -> Error {
        Error::Corrupt {
            table: self.table,
            detail: format!("{column} of row {}: {what}", self.text("id").unwrap_or("?")),
        }
    }

    fn id(&self, column: &str) -> Result<Option<u64>> {
        match self.text(column).map(str::trim) {
            None | Some("") => Ok(None),
            Some(text) => text
                .parse()
                .map(Some)
                .map_err(|_| self.corrupt(column, &format!("{text:?} is not an id"))),
        }
    }

    fn required_id(&self, column: &str) -> Result<u64> {
        self.id(column)?
            .ok_or_else(|| self.corrupt(column, "missing"))
    }

    /// SQLite's numeric 0/1, PostgreSQL's `true`/`false`; NULL is false.
    fn flag(&self, column: &str) -> bool {
        matches!(
            self.text(column).map(str::trim),
            Some("1" | "true" | "t" | "TRUE" | "True")
        )
    }

    /// A time as Go's SQLite driver (`2024-09-30 12:34:56.123456789+00:00`) or
    /// PostgreSQL (`2024-09-30 12:34:56.123456+00`) writes it; Go's zero time and
    /// NULL are `None`.
    fn time(&self, column: &str) -> Result<Option<Timestamp>> {
        let Some(text) = self.text(column).map(str::trim).filter(|t| !t.is_empty()) else {
            return Ok(None);
        };
        let parsed = parse_time(text)
            .ok_or_else(|| self.corrupt(column, &format!("{text:?} is not a time")))?;
        Ok((parsed.timestamp() > ZERO_YEAR_SECONDS).then_some(parsed))
    }

    fn required_time(&self, column: &str) -> Result<Timestamp> {
        Ok(self.time(column)?.unwrap_or_else(chrono::Utc::now))
    }

    /// A JSON list of strings (Headscale's `tags`, `forced_tags`, `endpoints`,
    /// `approved_routes`); NULL and empty text are an empty list.
    fn list(&self, column: &str) -> Result<Vec<String>> {
        match self.text(column).map(str::trim) {
            None | Some("" | "null") => Ok(Vec::new()),
            Some(text) => serde_json::from_str::<Option<Vec<String>>>(text)
                .map(Option::unwrap_or_default)
                .map_err(|e| self.corrupt(column, &format!("not a JSON list of strings: {e}"))),
        }
    }

    fn deleted(&self) -> Result<bool> {
        Ok(self.time("deleted_at")?.is_some())
    }
}

/// Year 1 (Go's zero time) and anything before 1971 are "no time".
const ZERO_YEAR_SECONDS: i64 = 365 * 24 * 3600;

fn parse_time(text: &str) -> Option<Timestamp> {
    // `YYYY-MM-DD HH:MM:SS[.frac](+HH:MM|+HH|Z)`, with ' ' or 'T'.
    let mut s = text.replacen(' ', "T", 1);
    // Go's time.String() form: `… +0000 UTC`, and a monotonic clock suffix.
    if let Some(i) = s.find(" m=") {
        s.truncate(i);
    }
    if let Some(rest) = s.strip_suffix(" UTC") {
        s = rest.to_owned();
    }
    let s = s.replace(' ', "");
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(&s) {
        return Some(t.with_timezone(&chrono::Utc));
    }
    // An offset of hours only (`+00`) or without a colon (`+0000`).
    let split = s.rfind(['+', '-']).filter(|&i| i > 10)?;
    let (head, offset) = s.split_at(split);
    let digits: String = offset[1..].chars().filter(char::is_ascii_digit).collect();
    let offset = match digits.len() {
        2 => format!("{}{digits}:00", &offset[..1]),
        4 => format!("{}{}:{}", &offset[..1], &digits[..2], &digits[2..]),
        _ => return None,
    };
    chrono::DateTime::parse_from_rfc3339(&format!("{head}{offset}"))
        .ok()
        .map(|t| t.with_timezone(&chrono::Utc))
}

/// Every row headway imports, as Headscale stored it.
#[derive(Debug, Default)]
pub struct HeadscaleRows {
    /// Before v0.28 a node's tags were its `forced_tags` plus those it asked for
    /// (`Hostinfo.RequestTags`, `--advertise-tags`) that the policy's `tagOwners`
    /// granted, decided anew at each connection; since, they are stored.
    pub tags_requested_by_clients: bool,
    pub users: Vec<HsUser>,
    pub pre_auth_keys: Vec<HsPreAuthKey>,
    pub api_keys: Vec<HsApiKey>,
    pub nodes: Vec<HsNode>,
    /// The `routes` table of v0.23 to v0.25 (later releases keep approvals on the node).
    pub routes: Vec<HsRoute>,
    pub policies: Vec<HsPolicy>,
}

#[derive(Debug, Clone)]
pub struct HsUser {
    pub id: u64,
    pub name: String,
    pub display_name: String,
    pub email: String,
    pub provider_identifier: String,
    pub provider: String,
    pub profile_pic_url: String,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
    pub deleted: bool,
}

impl HsUser {
    fn from_row(r: &HsRow) -> Result<Self> {
        Ok(Self {
            id: r.required_id("id")?,
            name: r.string("name"),
            display_name: r.string("display_name"),
            email: r.string("email"),
            provider_identifier: r.string("provider_identifier"),
            provider: r.string("provider"),
            profile_pic_url: r.string("profile_pic_url"),
            created_at: r.required_time("created_at")?,
            updated_at: r.required_time("updated_at")?,
            deleted: r.deleted()?,
        })
    }
}

#[derive(Debug, Clone)]
pub struct HsPreAuthKey {
    pub id: u64,
    /// The whole key, in clear (before v0.28, and keys made then).
    pub plain: Option<String>,
    /// `hskey-auth-<prefix>-…` and the bcrypt hash of the rest (v0.28 and later).
    pub prefix: Option<String>,
    pub hash: Option<String>,
    pub user_id: Option<u64>,
    pub reusable: bool,
    pub ephemeral: bool,
    pub used: bool,
    pub tags: Vec<String>,
    pub created_at: Timestamp,
    pub expiration: Option<Timestamp>,
}

impl HsPreAuthKey {
    fn from_row(r: &HsRow, key_tags: &HashMap<u64, Vec<String>>) -> Result<Self> {
        let id = r.required_id("id")?;
        let mut tags = r.list("tags")?;
        tags.extend(key_tags.get(&id).into_iter().flatten().cloned());
        let nonempty = |c: &str| r.text(c).filter(|t| !t.is_empty()).map(str::to_owned);
        Ok(Self {
            id,
            plain: nonempty("key"),
            prefix: nonempty("prefix"),
            hash: nonempty("hash").map(|h| bytes_as_text(&h)),
            user_id: r.id("user_id")?,
            reusable: r.flag("reusable"),
            ephemeral: r.flag("ephemeral"),
            used: r.flag("used"),
            tags,
            created_at: r.required_time("created_at")?,
            expiration: r.time("expiration")?,
        })
    }
}

/// A bcrypt hash from a blob column: PostgreSQL's text form of `bytea` is `\x…` hex.
fn bytes_as_text(value: &str) -> String {
    value
        .strip_prefix("\\x")
        .and_then(|h| hex::decode(h).ok())
        .and_then(|b| String::from_utf8(b).ok())
        .unwrap_or_else(|| value.to_owned())
}

#[derive(Debug, Clone)]
pub struct HsApiKey {
    pub id: u64,
    pub prefix: String,
    pub hash: String,
    pub created_at: Timestamp,
    pub expiration: Option<Timestamp>,
    pub last_seen: Option<Timestamp>,
}

impl HsApiKey {
    fn from_row(r: &HsRow) -> Result<Self> {
        Ok(Self {
            id: r.required_id("id")?,
            prefix: r.string("prefix"),
            hash: bytes_as_text(&r.string("hash")),
            created_at: r.required_time("created_at")?,
            expiration: r.time("expiration")?,
            last_seen: r.time("last_seen")?,
        })
    }
}

#[derive(Debug, Clone)]
pub struct HsNode {
    pub id: u64,
    pub machine_key: String,
    pub node_key: String,
    pub disco_key: String,
    pub endpoints: Vec<String>,
    pub hostinfo: Option<String>,
    pub ipv4: Option<String>,
    pub ipv6: Option<String>,
    pub hostname: String,
    pub given_name: String,
    pub user_id: Option<u64>,
    pub register_method: String,
    /// `tags` (v0.28 and later) or `forced_tags` (before).
    pub tags: Vec<String>,
    pub auth_key_id: Option<u64>,
    pub last_seen: Option<Timestamp>,
    pub expiry: Option<Timestamp>,
    /// `approved_routes` (v0.26 and later); before, the `routes` table.
    pub approved_routes: Vec<String>,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
    pub deleted: bool,
}

impl HsNode {
    fn from_row(r: &HsRow) -> Result<Self> {
        let mut tags = r.list("tags")?;
        for tag in r.list("forced_tags")? {
            if !tags.contains(&tag) {
                tags.push(tag);
            }
        }
        let nonempty = |c: &str| r.text(c).filter(|t| !t.is_empty()).map(str::to_owned);
        Ok(Self {
            id: r.required_id("id")?,
            machine_key: r.string("machine_key"),
            node_key: r.string("node_key"),
            disco_key: r.string("disco_key"),
            endpoints: r.list("endpoints")?,
            hostinfo: nonempty("host_info").filter(|h| h != "null"),
            ipv4: nonempty("ipv4"),
            ipv6: nonempty("ipv6"),
            hostname: r.string("hostname"),
            given_name: r.string("given_name"),
            user_id: r.id("user_id")?,
            register_method: r.string("register_method"),
            tags,
            auth_key_id: r.id("auth_key_id")?,
            last_seen: r.time("last_seen")?,
            expiry: r.time("expiry")?,
            approved_routes: r.list("approved_routes")?,
            created_at: r.required_time("created_at")?,
            updated_at: r.required_time("updated_at")?,
            deleted: r.deleted()?,
        })
    }
}

#[derive(Debug, Clone)]
pub struct HsRoute {
    pub node_id: u64,
    pub prefix: String,
    pub advertised: bool,
    pub enabled: bool,
    pub deleted: bool,
}

impl HsRoute {
    fn from_row(r: &HsRow) -> Result<Self> {
        Ok(Self {
            node_id: r.required_id("node_id")?,
            prefix: r.string("prefix"),
            advertised: r.flag("advertised"),
            enabled: r.flag("enabled"),
            deleted: r.deleted()?,
        })
    }
}

#[derive(Debug, Clone)]
pub struct HsPolicy {
    pub id: u64,
    pub data: String,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
    pub deleted: bool,
}

impl HsPolicy {
    fn from_row(r: &HsRow) -> Result<Self> {
        Ok(Self {
            id: r.required_id("id")?,
            data: r.string("data"),
            created_at: r.required_time("created_at")?,
            updated_at: r.required_time("updated_at")?,
            deleted: r.deleted()?,
        })
    }
}

/// Whether an open SQLite or PostgreSQL database is Headscale's (its `migrations`
/// table, and no headway schema): headway refuses to migrate it in place.
pub(super) async fn is_headscale_sqlite(pool: &SqlitePool) -> bool {
    let tables: Vec<(String,)> = sqlx::query_as(
        "SELECT name FROM sqlite_master WHERE type = 'table' \
         AND name IN ('migrations', '_sqlx_migrations')",
    )
    .fetch_all(pool)
    .await
    .unwrap_or_default();
    tables.len() == 1 && tables[0].0 == "migrations"
}

/// [`is_headscale_sqlite`] for PostgreSQL.
pub(super) async fn is_headscale_postgres(pool: &PgPool) -> bool {
    let tables: Vec<(String,)> = sqlx::query_as(
        "SELECT table_name::text FROM information_schema.tables \
         WHERE table_schema = current_schema() AND table_name IN ('migrations', '_sqlx_migrations')",
    )
    .fetch_all(pool)
    .await
    .unwrap_or_default();
    tables.len() == 1 && tables[0].0 == "migrations"
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(release_upto: &str) -> Vec<String> {
        let mut out = vec!["SCHEMA_INIT".to_owned()];
        for (release, list) in RELEASES {
            out.extend(list.iter().map(|s| (*s).to_owned()));
            if release == release_upto {
                break;
            }
        }
        out
    }

    #[test]
    fn layouts_are_named_by_their_newest_complete_release() {
        assert_eq!(layout_of(&ids("v0.23"), None).unwrap().layout, "v0.23");
        assert_eq!(layout_of(&ids("v0.26"), None).unwrap().layout, "v0.26");
        let newest = layout_of(&ids("v0.29"), Some("v0.29.2".into())).unwrap();
        assert_eq!(newest.layout, "v0.29");
        assert_eq!(newest.written_by.as_deref(), Some("v0.29.2"));

        let mut future = ids("v0.29");
        future.push("202701011200-something-new".into());
        let err = layout_of(&future, Some("v0.30.0".into()))
            .unwrap_err()
            .to_string();
        assert!(err.contains("202701011200-something-new"), "{err}");
        assert!(err.contains("v0.30.0"), "{err}");
        let err = layout_of(&ids("v0.29"), Some("v0.30.1".into()))
            .unwrap_err()
            .to_string();
        assert!(err.contains("written by Headscale v0.30.1"), "{err}");
        let err = layout_of(&["202312101416".into()], None)
            .unwrap_err()
            .to_string();
        assert!(err.contains("older than v0.23"), "{err}");
    }

    #[test]
    fn times_as_go_and_postgres_write_them() {
        let t = |s| parse_time(s).map(|t| t.to_rfc3339());
        assert_eq!(
            t("2026-12-07 12:14:49.90406174+00:00").as_deref(),
            Some("2026-12-07T12:14:49.904061740+00:00")
        );
        assert_eq!(
            t("2026-12-07 12:14:49.123456+00").as_deref(),
            Some("2026-12-07T12:14:49.123456+00:00")
        );
        assert_eq!(
            t("2026-12-07 13:14:49+0100").as_deref(),
            Some("2026-12-07T12:14:49+00:00")
        );
        assert_eq!(
            t("2026-12-07 12:14:49.5 +0000 UTC").as_deref(),
            Some("2026-12-07T12:14:49.500+00:00")
        );
        assert!(t("0001-01-01 00:00:00+00:00").is_some());
        assert!(t("yesterday").is_none());
    }
}

//! The import against Headscale databases of two layouts, built here row by row
//! (v0.23: a `routes` table, plain pre-auth keys, tags in their own table; v0.29:
//! bcrypt keys, `tags` and `approved_routes` on the node), read through
//! `db::headscale`, planned, written into headway's database and read back.

use super::{PolicySource, plan};
use crate::config::Database;
use crate::db::headscale::HeadscaleDb;
use crate::db::{Db, Error};
use crate::types::secret::{Match, Presented};
use crate::types::{NodeId, UserId};
use sqlx::sqlite::{SqliteConnectOptions, SqlitePoolOptions};
use std::path::Path;

fn sqlite(path: &Path) -> Database {
    Database::Sqlite {
        path: path.to_path_buf(),
        write_ahead_log: true,
        wal_autocheckpoint: 1000,
    }
}

/// A Headscale-shaped SQLite file at `path`, made by running `statements`.
async fn fixture(path: &Path, statements: &[&str]) {
    let options = SqliteConnectOptions::new()
        .filename(path)
        .create_if_missing(true);
    let pool = SqlitePoolOptions::new()
        .max_connections(1)
        .connect_with(options)
        .await
        .unwrap();
    for sql in statements {
        sqlx::query(sqlx::AssertSqlSafe(*sql))
            .execute(&pool)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
    }
    pool.close().await;
}

fn key(prefix: &str, byte: u8) -> String {
    format!("{prefix}:{}", hex::encode([byte; 32]))
}

/// Each route as (prefix, advertised, approved).
fn route_table(dump: &crate::db::Dump) -> Vec<(String, bool, bool)> {
    dump.routes
        .iter()
        .map(|r| (r.prefix.to_string(), r.advertised, r.approved))
        .collect()
}

const PLAIN_KEY: &str = "3b20f26d67cd7f1efdd91f3aed8a332b49e56bf396392245";
const T: &str = "2026-12-07 12:14:49.90406174+00:00";

fn v023_statements() -> Vec<String> {
    let mut s: Vec<String> = vec![
        "CREATE TABLE migrations (id text PRIMARY KEY)".into(),
        "CREATE TABLE users (id integer PRIMARY KEY AUTOINCREMENT, created_at datetime, \
         updated_at datetime, deleted_at datetime, name text)"
            .into(),
        "CREATE TABLE pre_auth_keys (id integer PRIMARY KEY AUTOINCREMENT, key text, user_id \
         integer, reusable numeric, ephemeral numeric, used numeric, created_at datetime, \
         expiration datetime)"
            .into(),
        "CREATE TABLE pre_auth_key_acl_tags (id integer PRIMARY KEY AUTOINCREMENT, \
         pre_auth_key_id integer, tag text)"
            .into(),
        "CREATE TABLE api_keys (id integer PRIMARY KEY AUTOINCREMENT, prefix text, hash blob, \
         created_at datetime, expiration datetime, last_seen datetime)"
            .into(),
        "CREATE TABLE nodes (id integer PRIMARY KEY AUTOINCREMENT, machine_key text, node_key \
         text, disco_key text, endpoints text, host_info text, ipv4 text, ipv6 text, hostname \
         text, given_name varchar(63), user_id integer, register_method text, forced_tags text, \
         auth_key_id integer, last_seen datetime, expiry datetime, created_at datetime, \
         updated_at datetime, deleted_at datetime)"
            .into(),
        "CREATE TABLE routes (id integer PRIMARY KEY AUTOINCREMENT, created_at datetime, \
         updated_at datetime, deleted_at datetime, node_id integer, prefix text, advertised \
         numeric, enabled numeric, is_primary numeric)"
            .into(),
        "CREATE TABLE policies (id integer PRIMARY KEY AUTOINCREMENT, created_at datetime, \
         updated_at datetime, deleted_at datetime, data text)"
            .into(),
    ];
    for id in [
        "202312101416",
        "202312101430",
        "202402151347",
        "2024041121742",
        "202406021630",
    ] {
        s.push(format!("INSERT INTO migrations VALUES ('{id}')"));
    }
    s.push(format!(
        "INSERT INTO users VALUES (1, '{T}', '{T}', NULL, 'alice'), (2, '{T}', '{T}', NULL, 'bob'), \
         (3, '{T}', '{T}', '{T}', 'carol')"
    ));
    s.push(format!(
        "INSERT INTO pre_auth_keys VALUES (1, '{PLAIN_KEY}', 1, 1, 0, 1, '{T}', '2030-01-01 00:00:00+00:00'), \
         (2, 'aaaabbbbccccddddeeeeffff0000111122223333', 2, 0, 1, 0, '{T}', NULL)"
    ));
    s.push("INSERT INTO pre_auth_key_acl_tags VALUES (1, 2, 'tag:server')".into());
    let hash = bcrypt::hash_with_salt("iEBaIkqmp_secret", 4, [1u8; 16])
        .unwrap()
        .to_string();
    s.push(format!(
        "INSERT INTO api_keys VALUES (1, '9QMviRMTZw', CAST('{hash}' AS BLOB), '{T}', '2030-01-01 00:00:00+00:00', NULL)"
    ));
    s.push(format!(
        "INSERT INTO nodes VALUES \
         (1, '{m1}', '{n1}', '{d1}', '[\"192.0.2.1:41641\"]', '{{\"Hostname\":\"router\"}}', '100.64.0.1', \
          'fd7a:115c:a1e0::1', 'router', 'router', 1, 'authkey', '[]', 1, '{T}', '0001-01-01 00:00:00+00:00', '{T}', '{T}', NULL), \
         (2, '{m2}', '{n2}', '', NULL, NULL, '100.64.0.2', NULL, 'My Laptop', 'My Laptop', 2, 'cli', \
          '[\"tag:server\"]', 2, NULL, '2030-01-01 00:00:00+00:00', '{T}', '{T}', NULL), \
         (3, '{m3}', '{n3}', '', NULL, NULL, '100.64.0.3', NULL, 'gone', 'gone', 1, 'cli', '[]', NULL, \
          NULL, NULL, '{T}', '{T}', '{T}'), \
         (4, '{m4}', '{n4}', '', NULL, '{{\"RequestTags\":[\"tag:web\",\"tag:db\"]}}', '100.64.0.4', \
          NULL, 'db', 'db', 1, 'cli', '[]', NULL, NULL, NULL, '{T}', '{T}', NULL)",
        m1 = key("mkey", 1),
        n1 = key("nodekey", 2),
        d1 = key("discokey", 3),
        m2 = key("mkey", 4),
        n2 = key("nodekey", 5),
        m3 = key("mkey", 6),
        n3 = key("nodekey", 7),
        m4 = key("mkey", 8),
        n4 = key("nodekey", 11),
    ));
    s.push(format!(
        "INSERT INTO routes VALUES (1, '{T}', '{T}', NULL, 1, '192.168.100.0/24', 1, 1, 1), \
         (2, '{T}', '{T}', NULL, 1, '0.0.0.0/0', 1, 0, 0), (3, '{T}', '{T}', NULL, 1, '::/0', 1, 0, 0), \
         (4, '{T}', '{T}', '{T}', 1, '10.9.0.0/16', 1, 1, 0)"
    ));
    s.push(format!(
        "INSERT INTO policies VALUES (1, '{T}', '{T}', NULL, '{{\"acls\": []}}'), \
         (2, '{T}', '{T}', NULL, '// newest\n{{\"tagOwners\": {{\"tag:web\": [\"bob@\"], \"tag:db\": [\"alice@\"]}}, \"acls\": [{{\"action\": \"accept\", \"src\": [\"*\"], \"dst\": [\"*:*\"]}}]}}')"
    ));
    s
}

#[tokio::test]
async fn a_v0_23_database_comes_over_with_its_routes_keys_and_policy() {
    let dir = tempfile::tempdir().unwrap();
    let source = dir.path().join("headscale.sqlite");
    let statements = v023_statements();
    fixture(
        &source,
        &statements.iter().map(String::as_str).collect::<Vec<_>>(),
    )
    .await;
    let before = std::fs::read(&source).unwrap();

    let hs = HeadscaleDb::open(&sqlite(&source)).await.unwrap();
    let schema = hs.schema().await.unwrap();
    assert_eq!(schema.layout, "v0.23");
    assert_eq!(schema.written_by, None);
    let rows = hs.read().await.unwrap();
    hs.close().await;
    let planned = plan(&rows, PolicySource::Database);
    let dump = &planned.dump;

    // carol and node 3 were deleted in Headscale.
    assert_eq!(planned.report.deleted_skipped, 2);
    let names: Vec<&str> = dump.users.iter().map(|u| u.name.as_str()).collect();
    assert_eq!(names, ["alice", "bob"]);

    let router = &dump.nodes[0];
    assert_eq!(router.id, NodeId(1));
    assert_eq!(router.user_id, Some(UserId(1)));
    assert_eq!(router.given_name.as_str(), "router");
    assert_eq!(router.ipv4.unwrap().to_string(), "100.64.0.1");
    assert_eq!(router.endpoints.len(), 1);
    assert_eq!(router.expiry, None, "Go's zero time is no expiry");
    assert!(!router.ephemeral);
    // A tagged node belongs to no user; an invalid given name becomes a label.
    let tagged = &dump.nodes[1];
    assert_eq!(tagged.tags, ["tag:server"]);
    assert_eq!(tagged.user_id, None);
    assert_eq!(tagged.given_name.as_str(), "my-laptop");
    assert!(tagged.ephemeral, "its key was ephemeral");
    assert!(
        planned
            .report
            .changed
            .iter()
            .any(|c| c.contains("my-laptop")),
        "{:?}",
        planned.report.changed
    );
    // Before v0.28, tags a node asked for were granted by tagOwners at each
    // connection: the granted one is kept (its owner now the tag), the other is not.
    let db = &dump.nodes[2];
    assert_eq!(db.tags, ["tag:db"]);
    assert_eq!(db.user_id, None);
    assert!(
        planned
            .report
            .changed
            .iter()
            .any(|c| c.contains("asked for tag:web")),
        "{:?}",
        planned.report.changed
    );

    // The routes table: approved subnet, advertised exit routes, a deleted row left out.
    assert_eq!(
        route_table(dump),
        [
            ("0.0.0.0/0".to_owned(), true, false),
            ("192.168.100.0/24".to_owned(), true, true),
            ("::/0".to_owned(), true, false),
        ]
    );

    // The plain key still works as typed; the tagged key keeps its tag and no user.
    let plain = &dump.pre_auth_keys[0];
    let presented = Presented::auth_key(PLAIN_KEY).unwrap();
    assert_eq!(presented.prefix, plain.prefix);
    assert_eq!(presented.check(&plain.hash), Match::Yes);
    assert!(plain.used && plain.reusable);
    assert_eq!(dump.pre_auth_keys[1].tags, ["tag:server"]);
    assert_eq!(dump.pre_auth_keys[1].user_id, None);
    // The API key keeps its bcrypt hash, checked on first use.
    let api = Presented::api_key("9QMviRMTZw.iEBaIkqmp_secret").unwrap();
    assert_eq!(api.check(&dump.api_keys[0].hash), Match::YesRehash);
    // The newest policy, comments and all.
    assert_eq!(dump.policies.len(), 1);
    assert!(dump.policies[0].1.starts_with("// newest"));
    assert_eq!(planned.report.policy_error, None);

    // Written into headway's database, it reads back as planned (so a second
    // import can tell it is already there), and the source is untouched.
    let target = Db::open(&sqlite(&dir.path().join("headway.sqlite")))
        .await
        .unwrap();
    let copied = target.restore(dump, false).await.unwrap();
    assert_eq!((copied.nodes, copied.routes), (3, 3));
    assert_eq!(&target.dump().await.unwrap(), dump);
    assert!(matches!(
        target.restore(dump, false).await,
        Err(Error::NotEmpty(_))
    ));
    assert_eq!(std::fs::read(&source).unwrap(), before);

    // headway refuses to run on Headscale's own file.
    let refused = Db::open(&sqlite(&source)).await.err().unwrap().to_string();
    assert!(refused.contains("is a Headscale database"), "{refused}");
    assert_eq!(std::fs::read(&source).unwrap(), before);
}

#[tokio::test]
async fn a_v0_29_database_keeps_bcrypt_keys_tags_and_approved_routes() {
    let dir = tempfile::tempdir().unwrap();
    let source = dir.path().join("headscale.sqlite");
    let hash = bcrypt::hash_with_salt("the-secret-part", 4, [2u8; 16])
        .unwrap()
        .to_string();
    let mut statements: Vec<String> = vec![
        "CREATE TABLE migrations (id text PRIMARY KEY)".into(),
        "CREATE TABLE database_versions (id integer PRIMARY KEY, version text NOT NULL, updated_at datetime)".into(),
        format!("INSERT INTO database_versions VALUES (1, 'v0.29.2', '{T}')"),
        "CREATE TABLE users (id integer PRIMARY KEY AUTOINCREMENT, name text, display_name text, \
         email text, provider_identifier text, provider text, profile_pic_url text, created_at \
         datetime, updated_at datetime, deleted_at datetime)"
            .into(),
        format!(
            "INSERT INTO users VALUES (1, 'alice', '', '', NULL, '', '', '{T}', '{T}', NULL), \
             (2, 'alice', 'Alice', 'alice@example.com', 'https://idp.example/abc', 'oidc', '', '{T}', '{T}', NULL)"
        ),
        "CREATE TABLE pre_auth_keys (id integer PRIMARY KEY AUTOINCREMENT, key text, prefix text, \
         hash blob, user_id integer, reusable numeric, ephemeral numeric, used numeric, tags \
         text, expiration datetime, created_at datetime)"
            .into(),
        format!(
            "INSERT INTO pre_auth_keys VALUES (1, '', 's3bAoEZps-A5', CAST('{hash}' AS BLOB), 1, 1, 0, 0, '[]', NULL, '{T}')"
        ),
        "CREATE TABLE api_keys (id integer PRIMARY KEY AUTOINCREMENT, prefix text, hash blob, \
         expiration datetime, last_seen datetime, created_at datetime)"
            .into(),
        "CREATE TABLE nodes (id integer PRIMARY KEY AUTOINCREMENT, machine_key text, node_key \
         text, disco_key text, endpoints text, host_info text, ipv4 text, ipv6 text, hostname \
         text, given_name varchar(63), user_id integer, register_method text, tags text, \
         auth_key_id integer, expiry datetime, last_seen datetime, approved_routes text, \
         created_at datetime, updated_at datetime, deleted_at datetime)"
            .into(),
        format!(
            "INSERT INTO nodes VALUES (7, '{m}', '{n}', '', '[]', \
             '{{\"RoutableIPs\":[\"192.168.100.0/24\",\"10.1.0.0/16\"]}}', '100.64.0.7', NULL, \
             'gw', 'gw', NULL, 'authkey', '[\"tag:router\"]', 1, NULL, NULL, '[\"192.168.100.0/24\"]', \
             '{T}', '{T}', NULL)",
            m = key("mkey", 9),
            n = key("nodekey", 10)
        ),
        "CREATE TABLE policies (id integer PRIMARY KEY AUTOINCREMENT, data text, created_at \
         datetime, updated_at datetime, deleted_at datetime)"
            .into(),
        format!("INSERT INTO policies VALUES (1, '{{\"acls\": [{{\"action\": \"nope\"}}]}}', '{T}', '{T}', NULL)"),
    ];
    for (_, ids) in crate::db::headscale::RELEASES {
        for id in ids {
            statements.push(format!("INSERT INTO migrations VALUES ('{id}')"));
        }
    }
    fixture(
        &source,
        &statements.iter().map(String::as_str).collect::<Vec<_>>(),
    )
    .await;
    let hs = HeadscaleDb::open(&sqlite(&source)).await.unwrap();
    let schema = hs.schema().await.unwrap();
    assert_eq!(
        (schema.layout, schema.written_by.as_deref()),
        ("v0.29", Some("v0.29.2"))
    );
    let planned = plan(&hs.read().await.unwrap(), PolicySource::Database);
    let dump = &planned.dump;

    // Two users named alice (a local one and an OIDC one): the second is suffixed.
    let names: Vec<&str> = dump.users.iter().map(|u| u.name.as_str()).collect();
    assert_eq!(names, ["alice", "alice-2"]);
    assert_eq!(dump.users[1].provider_id, "https://idp.example/abc");
    assert_eq!(dump.users[1].email, "alice@example.com");

    let key = &dump.pre_auth_keys[0];
    assert_eq!(key.prefix, "s3bAoEZps-A5");
    let presented = Presented::auth_key("hskey-auth-s3bAoEZps-A5-the-secret-part").unwrap();
    assert_eq!(presented.check(&key.hash), Match::YesRehash);

    // Advertised routes come from Hostinfo, approvals from the node.
    assert_eq!(
        route_table(dump),
        [
            ("10.1.0.0/16".to_owned(), true, false),
            ("192.168.100.0/24".to_owned(), true, true),
        ]
    );
    assert_eq!(dump.nodes[0].tags, ["tag:router"]);

    // A policy that headway cannot parse is reported, not silently dropped.
    assert!(planned.report.policy_error.is_some());
}

/// Headscale on PostgreSQL: `bytea` hashes, `boolean` flags and `timestamptz`
/// times read as text come back as SQLite's do.
#[cfg(feature = "full-suite")]
#[tokio::test]
async fn a_postgres_database_reads_like_a_sqlite_one() {
    let cluster = crate::db::testing::cluster();
    let name = cluster.create_database();
    let pg = crate::config::Postgres {
        host: "127.0.0.1".into(),
        port: cluster.port(),
        name: name.clone(),
        user: "postgres".into(),
        pass: String::new(),
        ssl: crate::config::PgSsl::Disable,
        max_open_conns: 2,
        max_idle_conns: 2,
        conn_max_idle_time_secs: 60,
    };
    let pool = sqlx::PgPool::connect(&cluster.url(&name)).await.unwrap();
    let hash = bcrypt::hash_with_salt("pg-secret", 4, [3u8; 16])
        .unwrap()
        .to_string();
    let mut statements: Vec<String> = vec![
        "CREATE TABLE migrations (id text PRIMARY KEY)".into(),
        "CREATE TABLE users (id bigserial PRIMARY KEY, name text, display_name text, email text, \
         provider_identifier text, provider text, profile_pic_url text, created_at timestamptz, \
         updated_at timestamptz, deleted_at timestamptz)"
            .into(),
        "INSERT INTO users VALUES (4, 'dora', '', '', NULL, '', '', now(), now(), NULL)".into(),
        "CREATE TABLE pre_auth_keys (id bigserial PRIMARY KEY, key text, prefix text, hash bytea, \
         user_id bigint, reusable boolean, ephemeral boolean, used boolean, tags text, \
         expiration timestamptz, created_at timestamptz)"
            .into(),
        format!(
            "INSERT INTO pre_auth_keys VALUES (9, '', 'abcdefghijkl', convert_to('{hash}', 'UTF8'), 4, \
             true, true, false, '[]', '2030-01-01 00:00:00+00', '2026-12-07 12:14:49.904061+00')"
        ),
        "CREATE TABLE api_keys (id bigserial PRIMARY KEY, prefix text, hash bytea, expiration \
         timestamptz, last_seen timestamptz, created_at timestamptz)"
            .into(),
        "CREATE TABLE nodes (id bigserial PRIMARY KEY, machine_key text, node_key text, disco_key \
         text, endpoints text, host_info text, ipv4 text, ipv6 text, hostname text, given_name \
         varchar(63), user_id bigint, register_method text, tags text, auth_key_id bigint, expiry \
         timestamptz, last_seen timestamptz, approved_routes text, created_at timestamptz, \
         updated_at timestamptz, deleted_at timestamptz)"
            .into(),
        "CREATE TABLE policies (id bigserial PRIMARY KEY, data text, created_at timestamptz, \
         updated_at timestamptz, deleted_at timestamptz)"
            .into(),
    ];
    for (_, ids) in crate::db::headscale::RELEASES {
        for id in ids {
            statements.push(format!("INSERT INTO migrations VALUES ('{id}')"));
        }
    }
    for sql in &statements {
        sqlx::query(sqlx::AssertSqlSafe(sql.clone()))
            .execute(&pool)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
    }
    pool.close().await;

    let database = Database::Postgres(pg);
    let hs = HeadscaleDb::open(&database).await.unwrap();
    assert_eq!(hs.schema().await.unwrap().layout, "v0.29");
    let planned = plan(&hs.read().await.unwrap(), PolicySource::Database);
    hs.close().await;
    let key = &planned.dump.pre_auth_keys[0];
    assert_eq!((key.reusable, key.ephemeral, key.used), (true, true, false));
    assert_eq!(key.user_id, Some(UserId(4)));
    assert_eq!(
        key.created_at.to_rfc3339(),
        "2026-12-07T12:14:49.904061+00:00"
    );
    let presented = Presented::auth_key("hskey-auth-abcdefghijkl-pg-secret").unwrap();
    assert_eq!(presented.check(&key.hash), Match::YesRehash);

    // headway will not run on it either.
    let refused = Db::open(&database).await.err().unwrap().to_string();
    assert!(refused.contains("is a Headscale database"), "{refused}");
    cluster.drop_database(&name);
}

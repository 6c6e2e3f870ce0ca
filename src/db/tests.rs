//! Storage tests: each opens a fresh database, a SQLite file in its own temporary
//! directory and (with `full-suite`) a new database on the test PostgreSQL server,
//! and most run on both (`on_both_backends!`).

use super::*;
use crate::types::{DiscoKey, GivenName, MachineKey, NodeKey, RegisterMethod};
use chrono::DateTime;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};
use tempfile::TempDir;

// ---- helpers

fn sqlite_config(path: PathBuf, write_ahead_log: bool) -> config::Database {
    config::Database::Sqlite {
        path,
        write_ahead_log,
        wal_autocheckpoint: 1000,
    }
}

async fn open_at(path: &Path) -> Db {
    Db::open(&sqlite_config(path.to_owned(), true))
        .await
        .expect("open")
}

async fn open_temp() -> (TempDir, Db) {
    let dir = TempDir::new().unwrap();
    let db = open_at(&dir.path().join("headway.sqlite")).await;
    (dir, db)
}

fn sqlite_pools(db: &Db) -> (&sqlx::SqlitePool, &sqlx::SqlitePool) {
    match &db.pools {
        exec::Pools::Sqlite { reader, writer } => (reader, writer),
        exec::Pools::Postgres(_) => panic!("a SQLite database was expected"),
    }
}

fn postgres_config(port: u16, name: &str) -> config::Postgres {
    config::Postgres {
        host: "127.0.0.1".into(),
        port,
        name: name.into(),
        user: "postgres".into(),
        pass: String::new(),
        ssl: config::PgSsl::Disable,
        max_open_conns: 10,
        max_idle_conns: 10,
        conn_max_idle_time_secs: 3600,
    }
}

/// The backends every storage test runs on.
#[derive(Clone, Copy, Debug)]
enum Backend {
    Sqlite,
    /// A fresh database on the test process's PostgreSQL server (`testing::cluster`).
    #[cfg_attr(not(feature = "full-suite"), allow(dead_code))]
    Postgres,
}

impl Backend {
    /// A new, empty database; the guard keeps SQLite's directory alive.
    async fn open(self) -> (Option<TempDir>, Db) {
        match self {
            Backend::Sqlite => {
                let (dir, db) = open_temp().await;
                (Some(dir), db)
            }
            Backend::Postgres => (None, open_postgres().await),
        }
    }
}

#[cfg(feature = "full-suite")]
async fn open_postgres() -> Db {
    let cluster = super::testing::cluster();
    let name = cluster.create_database();
    Db::open(&config::Database::Postgres(postgres_config(
        cluster.port(),
        &name,
    )))
    .await
    .expect("open a PostgreSQL test database")
}

#[cfg(not(feature = "full-suite"))]
async fn open_postgres() -> Db {
    unreachable!("PostgreSQL tests run only with the full-suite feature")
}

/// Runs each named test (an `async fn(Db)`, or `async fn(Backend)` in the second
/// list) on a fresh SQLite database, and with `full-suite` on a fresh PostgreSQL one.
macro_rules! on_both_backends {
    ($($name:ident),* $(,)?; $($multi:ident),* $(,)?) => {
        mod sqlite {
            $(#[tokio::test]
            async fn $name() {
                let (_guard, db) = super::Backend::Sqlite.open().await;
                super::$name(db).await;
            })*
            $(#[tokio::test]
            async fn $multi() {
                super::$multi(super::Backend::Sqlite).await;
            })*
        }
        #[cfg(feature = "full-suite")]
        mod postgres {
            $(#[tokio::test]
            async fn $name() {
                let (_guard, db) = super::Backend::Postgres.open().await;
                super::$name(db).await;
            })*
            $(#[tokio::test]
            async fn $multi() {
                super::$multi(super::Backend::Postgres).await;
            })*
        }
    };
}

on_both_backends!(
    users_round_trip_every_field,
    users_round_trip_with_empty_optionals,
    users_are_listed_by_id_and_ids_are_not_reused,
    duplicate_user_name_is_a_conflict,
    rename_user_changes_name_and_updated_at,
    delete_user_takes_its_preauth_keys_and_is_refused_while_it_owns_nodes,
    nodes_round_trip_every_field,
    nodes_round_trip_with_empty_optionals,
    save_node_writes_every_column,
    save_node_reports_conflicts,
    node_uniqueness_is_enforced_per_column,
    insert_node_for_a_missing_user_is_not_found,
    delete_node_takes_its_routes,
    preauth_keys_round_trip_every_field_and_empty_optionals,
    preauth_key_errors,
    expire_preauth_key_sets_expiration_to_now,
    deleting_a_preauth_key_keeps_its_nodes,
    insert_node_consumes_the_key_in_the_same_transaction,
    a_reusable_key_can_be_consumed_again,
    api_keys_round_trip_and_change,
    api_key_errors,
    set_node_routes_keeps_ids_and_drops_vanished_prefixes,
    set_node_routes_touches_only_that_node,
    delete_route_removes_one_row,
    the_latest_policy_wins,
    a_corrupt_node_key_is_reported_not_panicked_on;
    corrupt_addresses_timestamps_and_lists_are_reported,
    copy_keeps_every_row_and_id,
);

/// A timestamp with nanoseconds, to prove they survive storage.
fn at(secs: i64, nanos: u32) -> Timestamp {
    DateTime::from_timestamp(secs, nanos).unwrap()
}

fn new_user(name: &str) -> NewUser {
    NewUser {
        name: UserName::parse(name).unwrap(),
        display_name: format!("{name} Example"),
        email: format!("{name}@example.com"),
        provider: "oidc".into(),
        provider_id: format!("https://idp.example.com/{name}"),
        profile_pic_url: format!("https://example.com/{name}.png"),
        groups: Vec::new(),
        created_at: at(1_700_000_000, 123_456_789),
    }
}

fn key_bytes(kind: u8, i: u32) -> [u8; 32] {
    let mut bytes = [kind; 32];
    bytes[..4].copy_from_slice(&i.to_be_bytes());
    bytes
}

/// Node number `i` with every field set; keys, names and addresses differ per `i`.
fn full_node(i: u32, user_id: Option<UserId>, auth_key_id: Option<PreAuthKeyId>) -> NewNode {
    NewNode {
        node: Node {
            id: NodeId(0),
            machine_key: MachineKey::from_bytes(key_bytes(1, i)),
            node_key: NodeKey::from_bytes(key_bytes(2, i)),
            disco_key: DiscoKey::from_bytes(key_bytes(3, i)),
            hostname: format!("Laptop {i}.local"),
            given_name: GivenName::from_trusted(format!("laptop-{i}")),
            user_id,
            ipv4: Some(Ipv4Addr::new(100, 64, (i >> 8) as u8, i as u8)),
            ipv6: Some(Ipv6Addr::new(0xfd7a, 0x115c, 0xa1e0, 0, 0, 0, 0, i as u16)),
            endpoints: vec![
                "192.0.2.1:41641".parse().unwrap(),
                "[2001:db8::1]:41642".parse().unwrap(),
            ],
            hostinfo: Some(
                r#"{"OS":"linux","Hostname":"laptop","RoutableIPs":["10.0.0.0/24"]}"#.into(),
            ),
            tags: vec!["tag:server".into(), "tag:prod".into()],
            expiry: Some(at(1_900_000_000, 1)),
            last_seen: Some(at(1_800_000_000, 987_654_321)),
            ephemeral: true,
            register_method: RegisterMethod::AuthKey,
            auth_key_id,
            created_at: at(1_700_000_000, 111_111_111),
            updated_at: at(1_700_000_100, 222_222_222),
        },
    }
}

/// Node number `i` with every optional field empty.
fn bare_node(i: u32) -> NewNode {
    let mut new = full_node(i, None, None);
    let node = &mut new.node;
    node.disco_key = DiscoKey::zero();
    node.hostname = String::new();
    node.ipv4 = None;
    node.ipv6 = None;
    node.endpoints = Vec::new();
    node.hostinfo = None;
    node.tags = Vec::new();
    node.expiry = None;
    node.last_seen = None;
    node.ephemeral = false;
    node.register_method = RegisterMethod::Unspecified;
    new
}

fn new_preauth_key(prefix: &str, user_id: Option<UserId>, reusable: bool) -> NewPreAuthKey {
    NewPreAuthKey {
        user_id,
        prefix: prefix.into(),
        hash: format!("{prefix}-digest"),
        reusable,
        ephemeral: true,
        tags: vec!["tag:ci".into()],
        expiration: Some(at(1_750_000_000, 500_000_000)),
        created_at: at(1_700_000_000, 42),
    }
}

fn new_api_key(prefix: &str) -> NewApiKey {
    NewApiKey {
        prefix: prefix.into(),
        hash: format!("{prefix}-digest"),
        expiration: Some(at(1_760_000_000, 7)),
        created_at: at(1_700_000_000, 999_999_999),
    }
}

fn net(text: &str) -> IpNet {
    text.parse().unwrap()
}

#[track_caller]
fn assert_conflict<T: std::fmt::Debug>(result: Result<T>, column: &str) {
    match result {
        Err(Error::Conflict(got)) => assert_eq!(got, column),
        other => panic!("expected Conflict({column:?}), got {other:?}"),
    }
}

#[track_caller]
fn assert_not_found<T: std::fmt::Debug>(result: Result<T>, noun: &str) {
    match result {
        Err(Error::NotFound(got)) => assert_eq!(got, noun),
        other => panic!("expected NotFound({noun:?}), got {other:?}"),
    }
}

// ---- opening

#[tokio::test]
async fn opens_a_new_file_in_a_missing_directory() {
    let dir = TempDir::new().unwrap();
    let path = dir.path().join("lib/headway/db.sqlite");
    let db = open_at(&path).await;
    assert!(path.exists());
    assert!(db.ping().await);
    assert!(db.list_users().await.unwrap().is_empty());
}

#[tokio::test]
async fn an_empty_touched_file_is_a_new_database() {
    let dir = TempDir::new().unwrap();
    let path = dir.path().join("db.sqlite");
    std::fs::File::create(&path).unwrap();
    assert_eq!(std::fs::metadata(&path).unwrap().len(), 0);

    let db = open_at(&path).await;
    db.insert_user(&new_user("alice")).await.unwrap();
    assert_eq!(db.list_users().await.unwrap().len(), 1);
}

#[tokio::test]
async fn data_survives_a_restart() {
    let dir = TempDir::new().unwrap();
    let path = dir.path().join("db.sqlite");
    let db = open_at(&path).await;
    let user = db.insert_user(&new_user("alice")).await.unwrap();
    let node = db
        .insert_node(&full_node(1, Some(user.id), None), None)
        .await
        .unwrap();
    db.set_policy("{}", at(1_700_000_000, 5)).await.unwrap();
    let (reader, writer) = sqlite_pools(&db);
    writer.close().await;
    reader.close().await;

    // Opening again must not re-run the migrations or lose anything.
    let db = open_at(&path).await;
    assert_eq!(db.list_users().await.unwrap(), vec![user]);
    assert_eq!(db.list_nodes().await.unwrap(), vec![node]);
    assert_eq!(
        db.get_policy().await.unwrap(),
        Some(("{}".to_owned(), at(1_700_000_000, 5)))
    );
}

#[tokio::test]
async fn a_file_that_is_not_sqlite_is_an_open_error_naming_the_path() {
    let dir = TempDir::new().unwrap();
    let path = dir.path().join("notes.txt");
    std::fs::write(&path, "these are notes, not a database\n".repeat(100)).unwrap();
    match Db::open(&sqlite_config(path.clone(), true)).await {
        Err(Error::Open { path: got, .. }) => assert_eq!(got, path.display().to_string()),
        other => panic!("expected Error::Open, got {other:?}"),
    }
}

#[tokio::test]
async fn a_directory_that_cannot_be_created_is_an_open_error() {
    let dir = TempDir::new().unwrap();
    let file = dir.path().join("plain-file");
    std::fs::write(&file, "x").unwrap();
    let path = file.join("sub/db.sqlite");
    match Db::open(&sqlite_config(path.clone(), true)).await {
        Err(Error::Open { path: got, .. }) => assert_eq!(got, path.display().to_string()),
        other => panic!("expected Error::Open, got {other:?}"),
    }
}

#[tokio::test]
async fn an_unreachable_postgres_server_is_an_open_error_naming_it_without_the_password() {
    // Port 1 on loopback: nothing listens there, so the connection is refused at once.
    let config = config::Database::Postgres(postgres_config(1, "headscale"));
    let config::Database::Postgres(pg) = &config else {
        unreachable!()
    };
    let mut with_password = pg.clone();
    with_password.pass = "s3cret".into();
    match Db::open(&config::Database::Postgres(with_password)).await {
        Err(err @ Error::Open { .. }) => {
            let text = err.to_string();
            assert!(
                text.starts_with(
                    "cannot open database postgres://postgres@127.0.0.1:1/headscale: "
                ),
                "{text}"
            );
            assert!(!text.contains("s3cret"), "{text}");
        }
        other => panic!("expected Error::Open, got {other:?}"),
    }
}

#[tokio::test]
async fn connections_use_wal_foreign_keys_and_a_busy_timeout() {
    let (_dir, db) = open_temp().await;
    let (reader, writer) = sqlite_pools(&db);
    for pool in [writer, reader] {
        let mode: String = sqlx::query_scalar("PRAGMA journal_mode")
            .fetch_one(pool)
            .await
            .unwrap();
        assert_eq!(mode, "wal");
        let foreign_keys: i64 = sqlx::query_scalar("PRAGMA foreign_keys")
            .fetch_one(pool)
            .await
            .unwrap();
        assert_eq!(foreign_keys, 1);
        let busy_timeout: i64 = sqlx::query_scalar("PRAGMA busy_timeout")
            .fetch_one(pool)
            .await
            .unwrap();
        assert!(busy_timeout >= 5000, "{busy_timeout}");
        // 1 is NORMAL.
        let synchronous: i64 = sqlx::query_scalar("PRAGMA synchronous")
            .fetch_one(pool)
            .await
            .unwrap();
        assert_eq!(synchronous, 1);
    }
}

#[tokio::test]
async fn without_wal_the_database_uses_a_rollback_journal() {
    let dir = TempDir::new().unwrap();
    let db = Db::open(&sqlite_config(dir.path().join("db.sqlite"), false))
        .await
        .unwrap();
    let mode: String = sqlx::query_scalar("PRAGMA journal_mode")
        .fetch_one(sqlite_pools(&db).1)
        .await
        .unwrap();
    assert_eq!(mode, "delete");
    db.insert_user(&new_user("alice")).await.unwrap();
    assert_eq!(db.list_users().await.unwrap().len(), 1);
}

// ---- users

async fn users_round_trip_every_field(db: Db) {
    let new = new_user("alice");
    let user = db.insert_user(&new).await.unwrap();
    assert_eq!(
        user,
        User {
            id: user.id,
            name: new.name.clone(),
            display_name: "alice Example".into(),
            email: "alice@example.com".into(),
            provider: "oidc".into(),
            provider_id: "https://idp.example.com/alice".into(),
            profile_pic_url: "https://example.com/alice.png".into(),
            groups: Vec::new(),
            created_at: at(1_700_000_000, 123_456_789),
            updated_at: at(1_700_000_000, 123_456_789),
        }
    );
    assert_eq!(db.list_users().await.unwrap(), vec![user]);
}

async fn users_round_trip_with_empty_optionals(db: Db) {
    let new = NewUser {
        name: UserName::parse("bob").unwrap(),
        display_name: String::new(),
        email: String::new(),
        provider: String::new(),
        provider_id: String::new(),
        profile_pic_url: String::new(),
        groups: Vec::new(),
        created_at: at(0, 0),
    };
    let user = db.insert_user(&new).await.unwrap();
    assert_eq!(user.email, "");
    assert_eq!(user.created_at, at(0, 0));
    assert_eq!(db.list_users().await.unwrap(), vec![user]);
}

async fn users_are_listed_by_id_and_ids_are_not_reused(db: Db) {
    let zed = db.insert_user(&new_user("zed")).await.unwrap();
    let amy = db.insert_user(&new_user("amy")).await.unwrap();
    let names: Vec<_> = db
        .list_users()
        .await
        .unwrap()
        .into_iter()
        .map(|u| u.name.to_string())
        .collect();
    assert_eq!(names, ["zed", "amy"]);

    db.delete_user(amy.id).await.unwrap();
    let cat = db.insert_user(&new_user("cat")).await.unwrap();
    assert!(cat.id > amy.id && amy.id > zed.id);
}

async fn duplicate_user_name_is_a_conflict(db: Db) {
    db.insert_user(&new_user("alice")).await.unwrap();
    assert_conflict(db.insert_user(&new_user("alice")).await, "users.name");
    assert_eq!(db.list_users().await.unwrap().len(), 1);
}

async fn rename_user_changes_name_and_updated_at(db: Db) {
    let alice = db.insert_user(&new_user("alice")).await.unwrap();
    let bob = db.insert_user(&new_user("bob")).await.unwrap();
    let later = at(1_710_000_000, 1_000);

    let renamed = db
        .rename_user(alice.id, &UserName::parse("carol").unwrap(), later)
        .await
        .unwrap();
    assert_eq!(renamed.name.as_str(), "carol");
    assert_eq!(renamed.updated_at, later);
    assert_eq!(renamed.created_at, alice.created_at);
    assert_eq!(db.list_users().await.unwrap()[0], renamed);

    assert_conflict(
        db.rename_user(bob.id, &UserName::parse("carol").unwrap(), later)
            .await,
        "users.name",
    );
    assert_not_found(
        db.rename_user(UserId(999), &UserName::parse("dave").unwrap(), later)
            .await,
        "user",
    );
}

async fn delete_user_takes_its_preauth_keys_and_is_refused_while_it_owns_nodes(db: Db) {
    let alice = db.insert_user(&new_user("alice")).await.unwrap();
    let bob = db.insert_user(&new_user("bob")).await.unwrap();
    db.insert_preauth_key(&new_preauth_key("alicekey0001", Some(alice.id), false))
        .await
        .unwrap();
    let bobs_key = db
        .insert_preauth_key(&new_preauth_key("bobkey000001", Some(bob.id), false))
        .await
        .unwrap();
    let node = db
        .insert_node(&full_node(1, Some(alice.id), None), None)
        .await
        .unwrap();

    assert_conflict(db.delete_user(alice.id).await, "nodes.user_id");
    // Nothing went: not the user, not its keys.
    assert_eq!(db.list_users().await.unwrap().len(), 2);
    assert_eq!(db.list_preauth_keys().await.unwrap().len(), 2);

    db.delete_node(node.id).await.unwrap();
    db.delete_user(alice.id).await.unwrap();
    assert_eq!(db.list_users().await.unwrap(), vec![bob]);
    assert_eq!(db.list_preauth_keys().await.unwrap(), vec![bobs_key]);

    assert_not_found(db.delete_user(alice.id).await, "user");
}

// ---- nodes

async fn nodes_round_trip_every_field(db: Db) {
    let user = db.insert_user(&new_user("alice")).await.unwrap();
    let key = db
        .insert_preauth_key(&new_preauth_key("prefix000001", Some(user.id), true))
        .await
        .unwrap();
    let new = full_node(7, Some(user.id), Some(key.id));

    let node = db.insert_node(&new, None).await.unwrap();
    assert_ne!(node.id, NodeId(0));
    let expected = Node {
        id: node.id,
        ..new.node.clone()
    };
    assert_eq!(node, expected);
    assert_eq!(db.list_nodes().await.unwrap(), vec![expected]);
}

async fn nodes_round_trip_with_empty_optionals(db: Db) {
    let new = bare_node(3);
    let node = db.insert_node(&new, None).await.unwrap();
    let expected = Node {
        id: node.id,
        ..new.node.clone()
    };
    assert_eq!(node, expected);
    assert_eq!(db.list_nodes().await.unwrap(), vec![expected]);
}

async fn save_node_writes_every_column(db: Db) {
    let user = db.insert_user(&new_user("alice")).await.unwrap();
    let mut node = db.insert_node(&bare_node(1), None).await.unwrap();
    let other = db.insert_node(&bare_node(2), None).await.unwrap();

    let changed = full_node(9, Some(user.id), None).node;
    node = Node {
        id: node.id,
        ..changed
    };
    db.save_node(&node, None).await.unwrap();
    assert_eq!(db.list_nodes().await.unwrap(), vec![node.clone(), other]);

    // And back to empty optionals.
    let cleared = Node {
        id: node.id,
        ..bare_node(1).node
    };
    db.save_node(&cleared, None).await.unwrap();
    assert_eq!(db.list_nodes().await.unwrap()[0], cleared);

    let missing = Node {
        id: NodeId(999),
        ..bare_node(3).node
    };
    assert_not_found(db.save_node(&missing, None).await, "node");
}

async fn save_node_reports_conflicts(db: Db) {
    let first = db
        .insert_node(&full_node(1, None, None), None)
        .await
        .unwrap();
    let mut second = db
        .insert_node(&full_node(2, None, None), None)
        .await
        .unwrap();
    second.given_name = first.given_name.clone();
    assert_conflict(db.save_node(&second, None).await, "nodes.given_name");
}

async fn node_uniqueness_is_enforced_per_column(db: Db) {
    let original = full_node(1, None, None);
    db.insert_node(&original, None).await.unwrap();

    let mut same_node_key = full_node(2, None, None);
    same_node_key.node.node_key = original.node.node_key;
    assert_conflict(db.insert_node(&same_node_key, None).await, "nodes.node_key");

    let mut same_given_name = full_node(3, None, None);
    same_given_name.node.given_name = original.node.given_name.clone();
    assert_conflict(
        db.insert_node(&same_given_name, None).await,
        "nodes.given_name",
    );

    let mut same_ipv4 = full_node(4, None, None);
    same_ipv4.node.ipv4 = original.node.ipv4;
    assert_conflict(db.insert_node(&same_ipv4, None).await, "nodes.ipv4");

    let mut same_ipv6 = full_node(5, None, None);
    same_ipv6.node.ipv6 = original.node.ipv6;
    assert_conflict(db.insert_node(&same_ipv6, None).await, "nodes.ipv6");

    // Nodes without addresses do not clash with each other.
    db.insert_node(&bare_node(6), None).await.unwrap();
    db.insert_node(&bare_node(7), None).await.unwrap();
    assert_eq!(db.list_nodes().await.unwrap().len(), 3);
}

async fn insert_node_for_a_missing_user_is_not_found(db: Db) {
    assert_not_found(
        db.insert_node(&full_node(1, Some(UserId(42)), None), None)
            .await,
        "user",
    );
    assert_not_found(
        db.insert_node(&full_node(1, None, Some(PreAuthKeyId(42))), None)
            .await,
        "pre-auth key",
    );
    assert!(db.list_nodes().await.unwrap().is_empty());
}

async fn delete_node_takes_its_routes(db: Db) {
    let doomed = db
        .insert_node(&full_node(1, None, None), None)
        .await
        .unwrap();
    let kept = db
        .insert_node(&full_node(2, None, None), None)
        .await
        .unwrap();
    let now = at(1_700_000_000, 0);
    db.set_node_routes(doomed.id, &[net("10.0.0.0/8")], &[], &[], now)
        .await
        .unwrap();
    let kept_routes = db
        .set_node_routes(kept.id, &[net("192.168.0.0/16")], &[], &[], now)
        .await
        .unwrap();

    db.delete_node(doomed.id).await.unwrap();
    assert_eq!(db.list_nodes().await.unwrap(), vec![kept]);
    assert_eq!(db.list_routes().await.unwrap(), kept_routes);
    assert_not_found(db.delete_node(doomed.id).await, "node");
}

// ---- pre-auth keys

async fn preauth_keys_round_trip_every_field_and_empty_optionals(db: Db) {
    let user = db.insert_user(&new_user("alice")).await.unwrap();
    let full = db
        .insert_preauth_key(&new_preauth_key("fullkey00001", Some(user.id), true))
        .await
        .unwrap();
    assert_eq!(
        full,
        PreAuthKey {
            id: full.id,
            user_id: Some(user.id),
            prefix: "fullkey00001".into(),
            hash: "fullkey00001-digest".into(),
            reusable: true,
            ephemeral: true,
            used: false,
            tags: vec!["tag:ci".into()],
            expiration: Some(at(1_750_000_000, 500_000_000)),
            created_at: at(1_700_000_000, 42),
        }
    );

    let bare = NewPreAuthKey {
        user_id: None,
        prefix: "barekey00001".into(),
        hash: "h".into(),
        reusable: false,
        ephemeral: false,
        tags: Vec::new(),
        expiration: None,
        created_at: at(1_700_000_001, 0),
    };
    let bare = db.insert_preauth_key(&bare).await.unwrap();
    assert_eq!(bare.user_id, None);
    assert_eq!(bare.expiration, None);
    assert!(bare.tags.is_empty());

    assert_eq!(
        db.list_preauth_keys().await.unwrap(),
        vec![full.clone(), bare]
    );
    assert_eq!(
        db.find_preauth_key_by_prefix("fullkey00001").await.unwrap(),
        Some(full)
    );
    assert_eq!(
        db.find_preauth_key_by_prefix("nokey0000000").await.unwrap(),
        None
    );
}

async fn preauth_key_errors(db: Db) {
    db.insert_preauth_key(&new_preauth_key("samekey00001", None, false))
        .await
        .unwrap();
    assert_conflict(
        db.insert_preauth_key(&new_preauth_key("samekey00001", None, false))
            .await,
        "pre_auth_keys.prefix",
    );
    assert_not_found(
        db.insert_preauth_key(&new_preauth_key("otherkey0001", Some(UserId(5)), false))
            .await,
        "user",
    );
    let now = at(1_700_000_000, 0);
    assert_not_found(
        db.expire_preauth_key(PreAuthKeyId(77), now).await,
        "pre-auth key",
    );
    assert_not_found(
        db.delete_preauth_key(PreAuthKeyId(77)).await,
        "pre-auth key",
    );
}

async fn expire_preauth_key_sets_expiration_to_now(db: Db) {
    let mut key = new_preauth_key("expkey000001", None, false);
    key.expiration = None;
    let key = db.insert_preauth_key(&key).await.unwrap();
    let now = at(1_720_000_000, 314_159_265);
    db.expire_preauth_key(key.id, now).await.unwrap();
    let stored = db.list_preauth_keys().await.unwrap();
    assert_eq!(stored[0].expiration, Some(now));
    assert!(stored[0].check_usable(now).is_err());
}

async fn deleting_a_preauth_key_keeps_its_nodes(db: Db) {
    let key = db
        .insert_preauth_key(&new_preauth_key("delkey000001", None, true))
        .await
        .unwrap();
    let node = db
        .insert_node(&full_node(1, None, Some(key.id)), Some(key.id))
        .await
        .unwrap();
    assert_eq!(node.auth_key_id, Some(key.id));

    db.delete_preauth_key(key.id).await.unwrap();
    assert!(db.list_preauth_keys().await.unwrap().is_empty());
    let nodes = db.list_nodes().await.unwrap();
    assert_eq!(nodes.len(), 1);
    assert_eq!(nodes[0].auth_key_id, None);
}

async fn insert_node_consumes_the_key_in_the_same_transaction(db: Db) {
    let key = db
        .insert_preauth_key(&new_preauth_key("onceonly0001", None, false))
        .await
        .unwrap();
    assert!(!key.used);

    // A node insert that fails leaves the key unused.
    let first = db
        .insert_node(&full_node(1, None, None), None)
        .await
        .unwrap();
    let mut clash = full_node(5, None, Some(key.id));
    clash.node.node_key = first.node_key;
    assert_conflict(db.insert_node(&clash, Some(key.id)).await, "nodes.node_key");
    assert!(!db.list_preauth_keys().await.unwrap()[0].used);

    db.insert_node(&full_node(2, None, Some(key.id)), Some(key.id))
        .await
        .unwrap();
    assert!(db.list_preauth_keys().await.unwrap()[0].used);

    // A used single-use key admits nobody else, and nothing is written.
    assert_conflict(
        db.insert_node(&full_node(3, None, Some(key.id)), Some(key.id))
            .await,
        "pre_auth_keys.used",
    );
    assert_eq!(db.list_nodes().await.unwrap().len(), 2);

    assert_not_found(
        db.insert_node(&full_node(4, None, None), Some(PreAuthKeyId(99)))
            .await,
        "pre-auth key",
    );
    assert_eq!(db.list_nodes().await.unwrap().len(), 2);
}

async fn a_reusable_key_can_be_consumed_again(db: Db) {
    let key = db
        .insert_preauth_key(&new_preauth_key("reusable0001", None, true))
        .await
        .unwrap();
    for i in 0..3 {
        db.insert_node(&full_node(i, None, Some(key.id)), Some(key.id))
            .await
            .unwrap();
    }
    assert!(db.list_preauth_keys().await.unwrap()[0].used);
    assert_eq!(db.list_nodes().await.unwrap().len(), 3);
}

// ---- API keys

async fn api_keys_round_trip_and_change(db: Db) {
    let key = db
        .insert_api_key(&new_api_key("apikey000001"))
        .await
        .unwrap();
    assert_eq!(
        key,
        ApiKey {
            id: key.id,
            prefix: "apikey000001".into(),
            hash: "apikey000001-digest".into(),
            expiration: Some(at(1_760_000_000, 7)),
            created_at: at(1_700_000_000, 999_999_999),
            last_seen: None,
        }
    );
    let mut bare = new_api_key("apikey000002");
    bare.expiration = None;
    let bare = db.insert_api_key(&bare).await.unwrap();
    assert_eq!(bare.expiration, None);
    assert_eq!(
        db.list_api_keys().await.unwrap(),
        vec![key.clone(), bare.clone()]
    );

    let seen = at(1_700_000_500, 123);
    db.touch_api_key(key.id, seen).await.unwrap();
    let expired_at = at(1_700_000_600, 456);
    db.expire_api_key(key.id, expired_at).await.unwrap();
    let found = db
        .find_api_key_by_prefix("apikey000001")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(found.last_seen, Some(seen));
    assert_eq!(found.expiration, Some(expired_at));
    assert!(found.is_expired(expired_at));

    db.delete_api_key(key.id).await.unwrap();
    assert_eq!(db.list_api_keys().await.unwrap(), vec![bare]);
    assert_eq!(
        db.find_api_key_by_prefix("apikey000001").await.unwrap(),
        None
    );
}

async fn api_key_errors(db: Db) {
    db.insert_api_key(&new_api_key("apikey000001"))
        .await
        .unwrap();
    assert_conflict(
        db.insert_api_key(&new_api_key("apikey000001")).await,
        "api_keys.prefix",
    );
    let now = at(1_700_000_000, 0);
    assert_not_found(db.expire_api_key(ApiKeyId(9), now).await, "API key");
    assert_not_found(db.touch_api_key(ApiKeyId(9), now).await, "API key");
    assert_not_found(db.delete_api_key(ApiKeyId(9)).await, "API key");
}

// ---- routes

async fn set_node_routes_keeps_ids_and_drops_vanished_prefixes(db: Db) {
    let node = db
        .insert_node(&full_node(1, None, None), None)
        .await
        .unwrap();
    let t1 = at(1_700_000_000, 1);
    let t2 = at(1_700_000_100, 2);

    // Host bits are cleared, and a prefix in both lists gets one row.
    let first = db
        .set_node_routes(
            node.id,
            &[net("10.0.0.7/24"), net("192.168.1.0/24"), net("0.0.0.0/0")],
            &[net("10.0.0.0/24"), net("fd00::1/64")],
            &[],
            t1,
        )
        .await
        .unwrap();
    let summary: Vec<_> = first
        .iter()
        .map(|r| (r.prefix.to_string(), r.advertised, r.approved))
        .collect();
    assert_eq!(
        summary,
        [
            ("10.0.0.0/24".to_owned(), true, true),
            ("192.168.1.0/24".to_owned(), true, false),
            ("0.0.0.0/0".to_owned(), true, false),
            ("fd00::/64".to_owned(), false, true),
        ]
    );
    assert!(first.iter().all(|r| r.node_id == node.id));
    assert!(
        first
            .iter()
            .all(|r| r.created_at == t1 && r.updated_at == t1)
    );
    assert_eq!(db.list_routes().await.unwrap(), first);

    // 192.168.1.0/24 and fd00::/64 vanish, 10.0.0.0/24 loses its approval, the exit
    // route is unchanged, 172.16.0.0/12 is new.
    let second = db
        .set_node_routes(
            node.id,
            &[net("10.0.0.0/24"), net("0.0.0.0/0"), net("172.16.0.0/12")],
            &[],
            &[],
            t2,
        )
        .await
        .unwrap();
    assert_eq!(second.len(), 3);
    assert_eq!(second[0].id, first[0].id);
    assert_eq!(second[0].prefix, net("10.0.0.0/24"));
    assert!(second[0].advertised && !second[0].approved);
    assert_eq!(second[0].created_at, t1);
    assert_eq!(second[0].updated_at, t2);
    assert_eq!(second[1], first[2]);
    assert_eq!(second[2].prefix, net("172.16.0.0/12"));
    assert!(second[2].id > first[3].id);
    assert_eq!(db.list_routes().await.unwrap(), second);

    let cleared = db
        .set_node_routes(node.id, &[], &[], &[], t2)
        .await
        .unwrap();
    assert!(cleared.is_empty());
    assert!(db.list_routes().await.unwrap().is_empty());
}

async fn set_node_routes_touches_only_that_node(db: Db) {
    let a = db
        .insert_node(&full_node(1, None, None), None)
        .await
        .unwrap();
    let b = db
        .insert_node(&full_node(2, None, None), None)
        .await
        .unwrap();
    let now = at(1_700_000_000, 0);
    let a_routes = db
        .set_node_routes(a.id, &[net("10.0.0.0/8")], &[], &[], now)
        .await
        .unwrap();
    let b_routes = db
        .set_node_routes(b.id, &[net("10.0.0.0/8")], &[net("10.0.0.0/8")], &[], now)
        .await
        .unwrap();
    assert_eq!(b_routes.len(), 1);
    let mut all = a_routes;
    all.extend(b_routes);
    assert_eq!(db.list_routes().await.unwrap(), all);

    assert_not_found(
        db.set_node_routes(NodeId(99), &[net("10.0.0.0/8")], &[], &[], now)
            .await,
        "node",
    );
}

async fn delete_route_removes_one_row(db: Db) {
    let node = db
        .insert_node(&full_node(1, None, None), None)
        .await
        .unwrap();
    let routes = db
        .set_node_routes(
            node.id,
            &[net("10.0.0.0/8"), net("10.1.0.0/16")],
            &[],
            &[],
            at(1_700_000_000, 0),
        )
        .await
        .unwrap();
    db.delete_route(routes[0].id).await.unwrap();
    assert_eq!(db.list_routes().await.unwrap(), vec![routes[1].clone()]);
    assert_not_found(db.delete_route(routes[0].id).await, "route");
}

// ---- policy

async fn the_latest_policy_wins(db: Db) {
    assert_eq!(db.get_policy().await.unwrap(), None);
    let first = at(1_700_000_000, 10);
    let second = at(1_700_000_000, 20);
    db.set_policy(r#"{"acls":[]}"#, first).await.unwrap();
    assert_eq!(
        db.get_policy().await.unwrap(),
        Some((r#"{"acls":[]}"#.to_owned(), first))
    );
    db.set_policy(r#"{"groups":{}}"#, second).await.unwrap();
    assert_eq!(
        db.get_policy().await.unwrap(),
        Some((r#"{"groups":{}}"#.to_owned(), second))
    );
}

// ---- corrupt rows

async fn a_corrupt_node_key_is_reported_not_panicked_on(db: Db) {
    db.insert_node(&full_node(1, None, None), None)
        .await
        .unwrap();
    db.execute_raw("UPDATE nodes SET node_key = 'nodekey:not-hex'")
        .await
        .unwrap();
    match db.list_nodes().await {
        Err(Error::Corrupt { table, detail }) => {
            assert_eq!(table, "nodes");
            assert!(detail.contains("node_key"), "{detail}");
        }
        other => panic!("expected Corrupt, got {other:?}"),
    }
}

async fn corrupt_addresses_timestamps_and_lists_are_reported(backend: Backend) {
    let cases = [
        ("UPDATE nodes SET ipv4 = '100.64.0.300'", "nodes", "ipv4"),
        (
            "UPDATE nodes SET endpoints = '[\"nowhere\"]'",
            "nodes",
            "endpoints",
        ),
        ("UPDATE nodes SET tags = 'tag:a'", "nodes", "tags"),
        ("UPDATE nodes SET expiry = 'yesterday'", "nodes", "expiry"),
        (
            "UPDATE routes SET prefix = '10.0.0.0/99'",
            "routes",
            "prefix",
        ),
    ];
    for (sql, table, column) in cases {
        let (_guard, db) = backend.open().await;
        let node = db
            .insert_node(&full_node(1, None, None), None)
            .await
            .unwrap();
        db.set_node_routes(node.id, &[net("10.0.0.0/8")], &[], &[], at(0, 0))
            .await
            .unwrap();
        db.execute_raw(sql).await.unwrap();
        let result = if table == "routes" {
            db.list_routes().await.map(|_| ())
        } else {
            db.list_nodes().await.map(|_| ())
        };
        match result {
            Err(Error::Corrupt { table: got, detail }) => {
                assert_eq!(got, table, "{sql}");
                assert!(detail.contains(column), "{sql}: {detail}");
            }
            other => panic!("{sql}: expected Corrupt, got {other:?}"),
        }
    }
}

// ---- concurrency

/// 64 registrations at once, with user creation and node listings in between:
/// every one must succeed, none may see "database is locked".
async fn concurrent_writers_all_succeed(db: Db) {
    let owner = db.insert_user(&new_user("owner")).await.unwrap();

    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..64u32 {
        let handle = db.clone();
        tasks.spawn(async move {
            handle
                .insert_node(&full_node(i, Some(owner.id), None), None)
                .await
                .map(|_| ())
        });
        if i % 4 == 0 {
            let handle = db.clone();
            tasks.spawn(async move {
                handle
                    .insert_user(&new_user(&format!("user{i}")))
                    .await
                    .map(|_| ())
            });
            let handle = db.clone();
            tasks.spawn(async move { handle.list_nodes().await.map(|_| ()) });
        }
    }
    while let Some(joined) = tasks.join_next().await {
        if let Err(err) = joined.unwrap() {
            panic!("a concurrent call failed: {err}");
        }
    }
    assert_eq!(db.list_nodes().await.unwrap().len(), 64);
    assert_eq!(db.list_users().await.unwrap().len(), 17);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_writers_queue_in_wal_mode() {
    let (_dir, db) = open_temp().await;
    concurrent_writers_all_succeed(db).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_writers_queue_with_a_rollback_journal() {
    let dir = TempDir::new().unwrap();
    let db = Db::open(&sqlite_config(dir.path().join("db.sqlite"), false))
        .await
        .unwrap();
    concurrent_writers_all_succeed(db).await;
}

/// On PostgreSQL, writers run side by side; the same calls must all succeed.
#[cfg(feature = "full-suite")]
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_writers_all_succeed_on_postgres() {
    concurrent_writers_all_succeed(open_postgres().await).await;
}

#[tokio::test]
async fn the_database_and_its_directory_are_private_to_the_owner() {
    use std::os::unix::fs::PermissionsExt;
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    let dir = TempDir::new().unwrap();
    let path = dir.path().join("lib/headway/db.sqlite");
    let db = open_at(&path).await;
    db.insert_user(&new_user("alice")).await.unwrap();
    assert_eq!(mode(path.parent().unwrap()), 0o700);
    assert_eq!(mode(&path), 0o600);
    let wal = path.with_file_name("db.sqlite-wal");
    assert!(wal.exists(), "WAL mode writes a -wal file");
    assert_eq!(mode(&wal), 0o600);
    assert_eq!(mode(&path.with_file_name("db.sqlite-shm")), 0o600);
    drop(db);

    // A file an older run left readable by everyone is narrowed.
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    let _db = open_at(&path).await;
    assert_eq!(mode(&path), 0o600);
}

// ---- db copy

/// A SQLite database with a row in every table (and a gap in the node ids).
async fn filled_source() -> (TempDir, Db) {
    let (dir, db) = open_temp().await;
    let alice = db.insert_user(&new_user("alice")).await.unwrap();
    db.insert_user(&new_user("bob")).await.unwrap();
    let key = db
        .insert_preauth_key(&new_preauth_key("k1", Some(alice.id), false))
        .await
        .unwrap();
    db.insert_preauth_key(&new_preauth_key("k2", None, true))
        .await
        .unwrap();
    db.insert_api_key(&new_api_key("a1")).await.unwrap();
    db.touch_api_key(ApiKeyId(1), at(1_800_000_000, 3))
        .await
        .unwrap();
    let client = db.insert_oauth_client(&oauth_client("c1")).await.unwrap();
    // A live token is not copied; its client is.
    let token = crate::types::OAuthToken {
        prefix: "t1".into(),
        hash: "h".into(),
        client_id: client.id,
        scopes: client.scopes.clone(),
        expires_at: at(1_900_000_000, 0),
    };
    db.insert_oauth_token(&token, at(1_800_000_000, 0))
        .await
        .unwrap();
    let first = db
        .insert_node(&full_node(1, Some(alice.id), Some(key.id)), Some(key.id))
        .await
        .unwrap();
    let gone = db
        .insert_node(&full_node(2, None, None), None)
        .await
        .unwrap();
    let third = db.insert_node(&bare_node(3), None).await.unwrap();
    db.delete_node(gone.id).await.unwrap();
    db.set_node_routes(
        first.id,
        &[net("10.0.0.0/24"), net("0.0.0.0/0")],
        &[net("10.0.0.0/24")],
        &[net("10.0.0.0/24")],
        at(1_700_000_000, 9),
    )
    .await
    .unwrap();
    db.set_node_routes(
        third.id,
        &[net("192.168.0.0/16")],
        &[],
        &[],
        at(1_700_000_000, 10),
    )
    .await
    .unwrap();
    db.set_policy("{\"acls\":[]}", at(1_700_000_000, 1))
        .await
        .unwrap();
    db.set_policy("{}", at(1_700_000_000, 2)).await.unwrap();
    (dir, db)
}

async fn everything(
    db: &Db,
) -> (
    Vec<User>,
    Vec<PreAuthKey>,
    Vec<ApiKey>,
    Vec<crate::types::OAuthClient>,
    Vec<Node>,
    Vec<Route>,
) {
    (
        db.list_users().await.unwrap(),
        db.list_preauth_keys().await.unwrap(),
        db.list_api_keys().await.unwrap(),
        db.list_oauth_clients().await.unwrap(),
        db.list_nodes().await.unwrap(),
        db.list_routes().await.unwrap(),
    )
}

fn oauth_client(prefix: &str) -> crate::types::OAuthClient {
    crate::types::OAuthClient {
        id: crate::types::OAuthClientId(0),
        prefix: prefix.into(),
        hash: format!("hash-{prefix}"),
        scopes: crate::types::oauth::parse_scopes(["devices:core:read", "auth_keys"]).unwrap(),
        tags: vec!["tag:ci".into()],
        description: "ci".into(),
        created_at: at(1_800_000_000, 5),
    }
}

/// `db copy` into `target`: every row arrives with its id and every field; new rows
/// continue after the copied ids (never reusing a deleted node's); a target that
/// holds rows is refused unless replaced; and a copy back gives the same rows.
async fn copy_keeps_every_row_and_id(target: Backend) {
    let (_dir, source) = filled_source().await;
    let (_guard, copy) = target.open().await;
    let copied = source.copy_to(&copy, false).await.unwrap();
    assert_eq!(
        copied,
        Copied {
            users: 2,
            pre_auth_keys: 2,
            api_keys: 1,
            oauth_clients: 1,
            nodes: 2,
            routes: 3,
            policies: 2,
        }
    );
    assert_eq!(everything(&copy).await, everything(&source).await);
    assert_eq!(
        copy.get_policy().await.unwrap(),
        source.get_policy().await.unwrap()
    );

    // Ids continue after the highest copied one (node 3; the deleted node 2 is
    // not handed out again).
    let next = copy
        .insert_node(&full_node(4, None, None), None)
        .await
        .unwrap();
    assert_eq!(next.id, NodeId(4));
    let next_user = copy.insert_user(&new_user("carol")).await.unwrap();
    assert_eq!(next_user.id, UserId(3));

    match source.copy_to(&copy, false).await {
        Err(Error::NotEmpty(rows)) => assert_eq!(rows, copied.total() + 2),
        other => panic!("expected NotEmpty, got {other:?}"),
    }
    let again = source.copy_to(&copy, true).await.unwrap();
    assert_eq!(again, copied);
    assert_eq!(everything(&copy).await, everything(&source).await);

    // And back into an empty SQLite database.
    let (_back_dir, back) = open_temp().await;
    copy.copy_to(&back, false).await.unwrap();
    assert_eq!(everything(&back).await, everything(&source).await);
}

#[tokio::test]
async fn a_corrupt_source_row_stops_the_copy_before_anything_is_written() {
    let (_dir, source) = filled_source().await;
    source
        .execute_raw("UPDATE nodes SET ipv4 = 'not an address' WHERE id = 3")
        .await
        .unwrap();
    let (_target_dir, target) = open_temp().await;
    assert!(matches!(
        source.copy_to(&target, false).await,
        Err(Error::Corrupt { table: "nodes", .. })
    ));
    assert_eq!(target.count_rows().await.unwrap(), 0);
}

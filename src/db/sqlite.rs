//! Opening a SQLite database: the file, the pragmas, the two pools and the migrations.
//!
//! Reads share a small pool; every write goes through a pool of exactly one
//! connection, so writers wait their turn in the pool's queue instead of
//! racing for SQLite's lock and failing with "database is locked".

use super::exec::Pools;
use super::{Db, Error, Result};
use sqlx::migrate::Migrator;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use std::path::Path;
use std::time::Duration;

/// The SQLite schema, embedded at build time (see `migrations/README.md`).
static MIGRATOR: Migrator = sqlx::migrate!("./migrations/sqlite");

/// How long a connection waits for SQLite's lock (held by another process, or by a
/// reader while a rollback-journal commit needs the file to itself) before failing.
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a caller waits for the writer (or a reader) connection. Writes are short,
/// so a queue this long means something is stuck.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(60);

/// Readers run concurrently in WAL mode; a handful covers the admin API and map builds.
const READERS: u32 = 4;

pub(super) async fn open(
    path: &Path,
    write_ahead_log: bool,
    wal_autocheckpoint: u32,
) -> Result<Db> {
    let open_error = |source: sqlx::Error| Error::Open {
        path: path.display().to_string(),
        source,
    };

    refuse_headscale_database(path).await?;
    restrict_files(path).map_err(|e| open_error(sqlx::Error::Io(e)))?;

    // Per-connection settings; the journal mode is the database's and is set once, by the writer.
    let mut common = SqliteConnectOptions::new()
        .filename(path)
        .foreign_keys(true)
        .busy_timeout(BUSY_TIMEOUT);
    common = if write_ahead_log {
        // NORMAL is durable against application crashes in WAL mode; only a power
        // loss can undo the last commits, and never corrupts the file.
        common
            .synchronous(SqliteSynchronous::Normal)
            .pragma("wal_autocheckpoint", wal_autocheckpoint.to_string())
    } else {
        common.synchronous(SqliteSynchronous::Full)
    };

    let journal_mode = if write_ahead_log {
        SqliteJournalMode::Wal
    } else {
        SqliteJournalMode::Delete
    };
    // An empty file (e.g. made with `touch`) is a valid, empty SQLite database.
    let writer_options = common
        .clone()
        .create_if_missing(true)
        .journal_mode(journal_mode);
    let writer = SqlitePoolOptions::new()
        .max_connections(1)
        .min_connections(1)
        .idle_timeout(None)
        .max_lifetime(None)
        .acquire_timeout(ACQUIRE_TIMEOUT)
        .connect_with(writer_options)
        .await
        .map_err(open_error)?;

    // Reading the schema fails with "file is not a database" for anything that is not SQLite,
    // which is clearer under `Error::Open` than as a migration failure.
    sqlx::query("SELECT count(*) FROM sqlite_schema")
        .fetch_one(&writer)
        .await
        .map_err(open_error)?;

    MIGRATOR.run(&writer).await?;

    // `query_only` makes an accidental write through a reader fail loudly instead of
    // competing with the writer for the lock.
    let reader_options = common.pragma("query_only", "ON");
    let reader = SqlitePoolOptions::new()
        .max_connections(READERS)
        .acquire_timeout(ACQUIRE_TIMEOUT)
        .connect_with(reader_options)
        .await
        .map_err(open_error)?;

    // SQLite gives the -wal and -shm files the database's mode; files left by an
    // older run may still be wider.
    for suffix in ["-wal", "-shm"] {
        let mut side = path.as_os_str().to_owned();
        side.push(suffix);
        restrict_mode(Path::new(&side)).map_err(|e| open_error(sqlx::Error::Io(e)))?;
    }

    Ok(Db {
        pools: Pools::Sqlite { reader, writer },
        replica: super::new_replica_name(),
        metrics: crate::metrics::DbMetrics::default(),
    })
}

/// Refuses Headscale's own database (the path of a Headscale config read as is),
/// looked at read-only before anything could write to it.
async fn refuse_headscale_database(path: &Path) -> Result<()> {
    if !std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.len() > 0) {
        return Ok(());
    }
    let options = SqliteConnectOptions::new()
        .filename(path)
        .read_only(true)
        .busy_timeout(BUSY_TIMEOUT);
    let Ok(pool) = SqlitePoolOptions::new()
        .max_connections(1)
        .connect_with(options)
        .await
    else {
        // Not readable as SQLite: the writer's open says why.
        return Ok(());
    };
    let headscale = super::headscale::is_headscale_sqlite(&pool).await;
    pool.close().await;
    if headscale {
        return Err(Error::HeadscaleDatabase(path.display().to_string()));
    }
    Ok(())
}

/// The database holds node keys, endpoints and hashed secrets: a directory made
/// for it is 0700 and the file is 0600 (created so before SQLite opens it, and
/// narrowed if an older file is wider).
fn restrict_files(path: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(parent)?;
    }
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
    {
        Ok(_) => Ok(()),
        Err(err) if err.kind() == std::io::ErrorKind::AlreadyExists => restrict_mode(path),
        Err(err) => Err(err),
    }
}

/// Narrows an existing regular file to 0600 when group or others may read it.
fn restrict_mode(path: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let Ok(meta) = std::fs::metadata(path) else {
        return Ok(());
    };
    let mode = meta.permissions().mode() & 0o777;
    if meta.is_file() && mode & 0o077 != 0 {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
        tracing::info!(path = %path.display(), from = format!("{mode:o}"), "narrowed the database file's mode to 600");
    }
    Ok(())
}

//! Opening a PostgreSQL database: connection options from Headscale's
//! `database.postgres.*` keys, the pool, and the migrations.

use super::exec::Pools;
use super::{Db, Error, Result};
use crate::config;
use sqlx::migrate::Migrator;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions, PgSslMode};
use sqlx::{ConnectOptions, Connection};
use std::time::Duration;

/// The PostgreSQL schema, embedded at build time (see `migrations/README.md`).
static MIGRATOR: Migrator = sqlx::migrate!("./migrations/postgres");

/// How long a caller waits for a connection before the write is refused.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(30);

fn ssl_mode(ssl: config::PgSsl) -> PgSslMode {
    match ssl {
        config::PgSsl::Disable => PgSslMode::Disable,
        config::PgSsl::Allow => PgSslMode::Allow,
        config::PgSsl::Prefer => PgSslMode::Prefer,
        config::PgSsl::Require => PgSslMode::Require,
        config::PgSsl::VerifyCa => PgSslMode::VerifyCa,
        config::PgSsl::VerifyFull => PgSslMode::VerifyFull,
    }
}

pub(super) fn connect_options(pg: &config::Postgres) -> PgConnectOptions {
    // `new` starts from libpq's environment (PGSSLROOTCERT and the like); the
    // configuration's keys win.
    let mut options = PgConnectOptions::new()
        .port(pg.port)
        .database(&pg.name)
        .username(&pg.user)
        .application_name("headway")
        // Statements are logged by headway's own spans, not once more per statement.
        .disable_statement_logging();
    // A host that starts with `/` is a directory holding the server's Unix socket.
    options = if pg.host.starts_with('/') {
        options.socket(&pg.host)
    } else {
        options.host(&pg.host)
    };
    if !pg.pass.is_empty() {
        options = options.password(&pg.pass);
    }
    options.ssl_mode(ssl_mode(pg.ssl))
}

pub(super) async fn open(pg: &config::Postgres) -> Result<Db> {
    let open_error = |source: sqlx::Error| Error::Open {
        path: pg.address(),
        source,
    };
    let replica = super::new_replica_name();
    // Every write this process makes carries its name into the change feed.
    let options = connect_options(pg).options([("headway.replica", &*replica)]);
    // One connection first: a server that cannot be reached, or refuses the login,
    // is said at once (the pool would retry until its acquire timeout).
    let mut first = options.connect().await.map_err(open_error)?;
    // `max_open_conns: 0` is Go's "no limit of our own": the server's max_connections.
    let max = match pg.max_open_conns {
        0 => {
            let (limit,): (String,) = sqlx::query_as("SHOW max_connections")
                .fetch_one(&mut first)
                .await
                .map_err(open_error)?;
            limit.trim().parse().unwrap_or(100)
        }
        n => n,
    };
    first.close().await.map_err(open_error)?;
    let idle = match pg.conn_max_idle_time_secs {
        0 => None,
        secs => Some(Duration::from_secs(secs)),
    };
    let pool = PgPoolOptions::new()
        .max_connections(max)
        .min_connections(0)
        .idle_timeout(idle)
        .acquire_timeout(ACQUIRE_TIMEOUT)
        .connect_with(options)
        .await
        .map_err(open_error)?;
    if super::headscale::is_headscale_postgres(&pool).await {
        return Err(Error::HeadscaleDatabase(pg.address()));
    }
    // sqlx holds an advisory lock while it migrates, so replicas that start
    // together apply each migration once.
    MIGRATOR.run(&pool).await?;
    Ok(Db {
        pools: Pools::Postgres(pool),
        replica,
        metrics: crate::metrics::DbMetrics::default(),
    })
}

//! Where statements run: each backend's pools, a write transaction, a row, and
//! running a sea-query statement on any of them in its backend's dialect.
//!
//! Table modules build one statement and say where it runs (`db.read()`,
//! `db.write()`, `tx.on()`); only this file knows there are two backends. Each
//! statement's time, to its last row, is recorded by where it ran.

use super::rows::from_sqlx;
use super::{Db, Result};
use crate::metrics::{Histogram, observe_since};
use sea_query::{PostgresQueryBuilder, SqliteQueryBuilder};
use sea_query_sqlx::{SqlxBinder, SqlxValues};
use sqlx::postgres::{PgConnection, PgPool, PgRow};
use sqlx::sqlite::{SqliteConnection, SqlitePool, SqliteRow};
use sqlx::{AssertSqlSafe, Postgres, Sqlite};
use std::time::Instant;

/// The connections of one database.
#[derive(Clone, Debug)]
pub(super) enum Pools {
    /// Several read-only connections (in WAL mode they never wait for the writer)
    /// and exactly one writer, so every write queues here, never on SQLite's lock.
    Sqlite {
        reader: SqlitePool,
        writer: SqlitePool,
    },
    /// One pool; the server orders concurrent writes by row locks and constraints.
    Postgres(PgPool),
}

/// One result row, of either backend (read through `rows::RowReader`).
pub(super) enum Row {
    Sqlite(SqliteRow),
    Postgres(PgRow),
}

/// A write transaction; dropped without `commit`, it rolls back.
pub(super) struct Tx {
    conn: TxConn,
    /// Where its statements' times go (`headway_db_statement_duration_seconds{on="transaction"}`).
    timer: Histogram,
}

enum TxConn {
    Sqlite(sqlx::Transaction<'static, Sqlite>),
    Postgres(sqlx::Transaction<'static, Postgres>),
}

/// Where one statement runs.
pub(super) enum On<'a> {
    /// Any connection that may read (SQLite: a reader, which cannot write).
    Read(&'a Db),
    /// A connection that may write, outside any transaction of ours.
    Write(&'a Db),
    /// Inside a write transaction.
    Tx(&'a mut Tx),
}

impl Db {
    pub(super) fn read(&self) -> On<'_> {
        On::Read(self)
    }

    pub(super) fn write(&self) -> On<'_> {
        On::Write(self)
    }

    /// Starts a write transaction.
    ///
    /// On SQLite, `BEGIN IMMEDIATE` on the one writer takes the write lock up front,
    /// so a transaction that reads and then writes never has to upgrade its lock
    /// halfway (which SQLite may refuse at once if another process holds it). On
    /// PostgreSQL, a plain `BEGIN` (read committed): the statements that must not
    /// race (consuming a single-use key, claiming a name or an address) are single
    /// statements guarded by row locks and UNIQUE constraints.
    pub(super) async fn begin_write(&self) -> Result<Tx> {
        let start = Instant::now();
        let conn = match &self.pools {
            Pools::Sqlite { writer, .. } => writer
                .begin_with("BEGIN IMMEDIATE")
                .await
                .map(TxConn::Sqlite)
                .map_err(from_sqlx),
            Pools::Postgres(pool) => pool.begin().await.map(TxConn::Postgres).map_err(from_sqlx),
        }?;
        let timer = self.metrics.transaction.clone();
        // Waiting for SQLite's one writer shows here.
        observe_since(&timer, start);
        Ok(Tx { conn, timer })
    }

    /// Which backend this is, for messages: `sqlite` or `postgres`.
    pub fn backend(&self) -> &'static str {
        match self.pools {
            Pools::Sqlite { .. } => "sqlite",
            Pools::Postgres(_) => "postgres",
        }
    }
}

impl Tx {
    pub(super) fn on(&mut self) -> On<'_> {
        On::Tx(self)
    }

    pub(super) async fn commit(self) -> Result<()> {
        let start = Instant::now();
        let committed = match self.conn {
            TxConn::Sqlite(tx) => tx.commit().await,
            TxConn::Postgres(tx) => tx.commit().await,
        };
        observe_since(&self.timer, start);
        committed.map_err(from_sqlx)
    }
}

/// A connection to run on, resolved from `On`.
enum Target<'a> {
    SqlitePool(&'a SqlitePool),
    SqliteConn(&'a mut SqliteConnection),
    PgPool(&'a PgPool),
    PgConn(&'a mut PgConnection),
}

impl<'a> On<'a> {
    /// The connection, and the histogram its statement's time goes to.
    fn target(self) -> (Target<'a>, Histogram) {
        match self {
            On::Read(db) => (
                match &db.pools {
                    Pools::Sqlite { reader, .. } => Target::SqlitePool(reader),
                    Pools::Postgres(pool) => Target::PgPool(pool),
                },
                db.metrics.read.clone(),
            ),
            On::Write(db) => (
                match &db.pools {
                    Pools::Sqlite { writer, .. } => Target::SqlitePool(writer),
                    Pools::Postgres(pool) => Target::PgPool(pool),
                },
                db.metrics.write.clone(),
            ),
            On::Tx(tx) => (
                match &mut tx.conn {
                    TxConn::Sqlite(tx) => Target::SqliteConn(tx),
                    TxConn::Postgres(tx) => Target::PgConn(tx),
                },
                tx.timer.clone(),
            ),
        }
    }
}

fn sqlite(stmt: &impl SqlxBinder) -> sqlx::query::Query<'static, Sqlite, SqlxValues> {
    let (sql, values) = stmt.build_sqlx(SqliteQueryBuilder);
    sqlx::query_with(AssertSqlSafe(sql), values)
}

fn postgres(stmt: &impl SqlxBinder) -> sqlx::query::Query<'static, Postgres, SqlxValues> {
    let (sql, values) = stmt.build_sqlx(PostgresQueryBuilder);
    sqlx::query_with(AssertSqlSafe(sql), values)
}

fn wrap<R>(rows: Vec<R>, kind: fn(R) -> Row) -> Vec<Row> {
    rows.into_iter().map(kind).collect()
}

/// Every row of a statement. The statement runs to its end (see `rows::fetch_one`).
pub(super) async fn fetch_all(on: On<'_>, stmt: &impl SqlxBinder) -> Result<Vec<Row>> {
    let (target, timer) = on.target();
    let start = Instant::now();
    let rows = match target {
        Target::SqlitePool(e) => sqlite(stmt)
            .fetch_all(e)
            .await
            .map(|r| wrap(r, Row::Sqlite)),
        Target::SqliteConn(e) => sqlite(stmt)
            .fetch_all(e)
            .await
            .map(|r| wrap(r, Row::Sqlite)),
        Target::PgPool(e) => postgres(stmt)
            .fetch_all(e)
            .await
            .map(|r| wrap(r, Row::Postgres)),
        Target::PgConn(e) => postgres(stmt)
            .fetch_all(e)
            .await
            .map(|r| wrap(r, Row::Postgres)),
    };
    observe_since(&timer, start);
    rows.map_err(from_sqlx)
}

/// Runs a statement and returns how many rows it changed.
pub(super) async fn execute(on: On<'_>, stmt: &impl SqlxBinder) -> Result<u64> {
    let (target, timer) = on.target();
    let start = Instant::now();
    let changed = match target {
        Target::SqlitePool(e) => sqlite(stmt).execute(e).await.map(|d| d.rows_affected()),
        Target::SqliteConn(e) => sqlite(stmt).execute(e).await.map(|d| d.rows_affected()),
        Target::PgPool(e) => postgres(stmt).execute(e).await.map(|d| d.rows_affected()),
        Target::PgConn(e) => postgres(stmt).execute(e).await.map(|d| d.rows_affected()),
    };
    observe_since(&timer, start);
    changed.map_err(from_sqlx)
}

#[cfg(test)]
impl Db {
    /// Runs one SQL text as it is (tests that spoil stored rows).
    pub(super) async fn execute_raw(&self, sql: &'static str) -> Result<u64> {
        match &self.pools {
            Pools::Sqlite { writer, .. } => sqlx::raw_sql(sql)
                .execute(writer)
                .await
                .map(|d| d.rows_affected()),
            Pools::Postgres(pool) => sqlx::raw_sql(sql)
                .execute(pool)
                .await
                .map(|d| d.rows_affected()),
        }
        .map_err(from_sqlx)
    }
}

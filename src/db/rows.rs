//! The few things every table module shares: running a statement to its end,
//! turning SQLite and PostgreSQL errors into `Error`, and reading or writing
//! column values.
//!
//! This is the only file that knows how a timestamp, an id, a flag or a list
//! looks on disk (the same text on both backends, except flags: SQLite's
//! INTEGER 0/1, PostgreSQL's BOOLEAN). It knows nothing about any particular table.

use super::exec::{self, On, Row};
use super::{Error, Result};
use crate::types::Timestamp;
use chrono::{DateTime, SecondsFormat, Utc};
use sea_query::{Expr, Iden, Query};
use sea_query_sqlx::SqlxBinder;
use sqlx::error::ErrorKind;
use sqlx::{Postgres, Row as _, Sqlite};
use std::fmt::Display;
use std::str::FromStr;

pub(super) use exec::{execute, fetch_all};

/// At most one row. Like [`fetch_one`], runs the statement to its end.
pub(super) async fn fetch_optional(on: On<'_>, stmt: &impl SqlxBinder) -> Result<Option<Row>> {
    Ok(fetch_all(on, stmt).await?.into_iter().next())
}

/// Exactly one row. The statement runs to its end rather than stopping at the
/// first row: an `INSERT … RETURNING` outside a transaction commits only when
/// SQLite finishes it, and a commit that fails (a full disk) reports its error
/// there; stopping early would drop that error and report a write that never
/// happened.
pub(super) async fn fetch_one(on: On<'_>, stmt: &impl SqlxBinder) -> Result<Row> {
    fetch_optional(on, stmt)
        .await?
        .ok_or_else(|| from_sqlx(sqlx::Error::RowNotFound))
}

/// Every row of a statement, each read by `from_row` (a table's mapping).
pub(super) async fn read_all<T>(
    on: On<'_>,
    stmt: &impl SqlxBinder,
    from_row: fn(&Row) -> Result<T>,
) -> Result<Vec<T>> {
    fetch_all(on, stmt).await?.iter().map(from_row).collect()
}

/// At most one row of a statement, read by `from_row`.
pub(super) async fn read_optional<T>(
    on: On<'_>,
    stmt: &impl SqlxBinder,
    from_row: fn(&Row) -> Result<T>,
) -> Result<Option<T>> {
    fetch_optional(on, stmt)
        .await?
        .as_ref()
        .map(from_row)
        .transpose()
}

/// Runs a statement meant to change one row; changing none means there is no
/// such row: `NotFound(noun)`.
pub(super) async fn execute_on_one(
    on: On<'_>,
    stmt: &impl SqlxBinder,
    noun: &'static str,
) -> Result<()> {
    match execute(on, stmt).await? {
        0 => Err(Error::NotFound(noun)),
        _ => Ok(()),
    }
}

/// An `INSERT` of one row from `(column, value)` pairs, so columns and values
/// always line up.
pub(super) fn insert<C: Iden + 'static>(
    table: C,
    values: Vec<(C, Expr)>,
) -> sea_query::InsertStatement {
    let (columns, values): (Vec<C>, Vec<Expr>) = values.into_iter().unzip();
    Query::insert()
        .into_table(table)
        .columns(columns)
        // Columns and values come from the same list, so their counts match.
        .values_panic(values)
        .to_owned()
}

/// Turns a broken UNIQUE rule into `Conflict("<table>.<column>")`, and a refusal for a
/// reason outside headway into `Unavailable` with words for the admin; anything else
/// stays a database error.
///
/// SQLite words a UNIQUE failure as "UNIQUE constraint failed: users.name" (columns
/// joined by ", " when the rule spans several); PostgreSQL names the constraint, and
/// `migrations/postgres/` names each one in that same form.
pub(super) fn from_sqlx(err: sqlx::Error) -> Error {
    if let Some(condition) = storage_condition(&err).or_else(|| connection_condition(&err)) {
        tracing::error!(error = %err, "{condition}");
        return Error::Unavailable(condition);
    }
    if let sqlx::Error::Database(db_err) = &err
        && db_err.kind() == ErrorKind::UniqueViolation
    {
        let columns = match db_err.try_downcast_ref::<sqlx::postgres::PgDatabaseError>() {
            Some(pg) => pg.constraint(),
            None => db_err.message().strip_prefix("UNIQUE constraint failed: "),
        };
        if let Some(columns) = columns {
            return Error::Conflict(columns.to_owned());
        }
    }
    Error::Sqlx(err)
}

/// What an admin must know when the database refuses for a reason outside headway:
/// for SQLite the file locked by another process, a full disk, or a read-only file;
/// for PostgreSQL a full disk, a server that takes no writes, or one shutting down.
pub(super) fn storage_condition(err: &sqlx::Error) -> Option<String> {
    let sqlx::Error::Database(db_err) = err else {
        return None;
    };
    if let Some(pg) = db_err.try_downcast_ref::<sqlx::postgres::PgDatabaseError>() {
        return postgres_condition(pg.code()).map(str::to_owned);
    }
    // SQLite's primary result code (extended codes carry it in their low byte).
    let code = db_err.code()?.parse::<i32>().ok()? & 0xff;
    let said = match code {
        5 | 6 => {
            "the database is locked by another process (another headway on the same file, or a sqlite3 shell in a transaction?); nothing was changed"
        }
        13 => {
            "the disk holding the database is full; nothing was changed; free some space and try again"
        }
        8 => {
            "the database cannot be written (a read-only file or file system); nothing was changed"
        }
        10 => {
            "the database could not be written: the disk or file system reported an I/O error (failing, or turned read-only); nothing was changed"
        }
        _ => return None,
    };
    Some(said.to_owned())
}

/// PostgreSQL's SQLSTATE codes that are about the server, not the statement.
fn postgres_condition(code: &str) -> Option<&'static str> {
    Some(match code {
        "53100" => {
            "the PostgreSQL server's disk is full; nothing was changed; free some space and try again"
        }
        "25006" => {
            "the PostgreSQL server takes no writes (a read-only standby, or default_transaction_read_only); nothing was changed"
        }
        "53300" => {
            "the PostgreSQL server has no connection left for headway (max_connections); nothing was changed"
        }
        "57P01" | "57P02" | "57P03" => {
            "the PostgreSQL server is shutting down or starting up; nothing was changed; headway reconnects by itself"
        }
        c if c.starts_with("08") => {
            "the connection to the PostgreSQL server failed; nothing was changed; headway reconnects by itself"
        }
        _ => return None,
    })
}

/// A database that cannot be reached or did not answer in time, said while serving
/// (at open, `Error::Open` words these itself).
fn connection_condition(err: &sqlx::Error) -> Option<String> {
    match err {
        sqlx::Error::Io(_) | sqlx::Error::Tls(_) | sqlx::Error::Protocol(_) => Some(format!(
            "the database server cannot be reached ({err}); nothing was changed; headway reconnects by itself"
        )),
        sqlx::Error::PoolTimedOut => Some(
            "the database did not give headway a connection in time (overloaded, or unreachable); the change may not have been made"
                .to_owned(),
        ),
        _ => None,
    }
}

/// Whether a statement failed because a FOREIGN KEY rule refused it.
///
/// SQLite does not say which key, so callers only use this where one key is possible.
/// An `ON DELETE RESTRICT` refusal comes with the extended code SQLITE_CONSTRAINT_TRIGGER
/// rather than SQLITE_CONSTRAINT_FOREIGNKEY, hence the message check.
pub(super) fn is_foreign_key_violation(err: &Error) -> bool {
    matches!(err, Error::Sqlx(sqlx::Error::Database(db_err))
        if db_err.kind() == ErrorKind::ForeignKeyViolation
            || db_err.message() == "FOREIGN KEY constraint failed")
}

// ---- values written

/// Fixed-width RFC 3339 in UTC with nanoseconds, so text order is time order and a
/// timestamp reads back exactly as it was given.
pub(super) fn time_text(t: Timestamp) -> String {
    t.to_rfc3339_opts(SecondsFormat::Nanos, true)
}

pub(super) fn time(t: Timestamp) -> Expr {
    time_text(t).into()
}

/// `now() - age` by the database's clock, for the TIMESTAMPTZ columns of the
/// PostgreSQL-only tables (the change feed, presence). PostgreSQL's syntax.
pub(super) fn ago(age: std::time::Duration) -> Expr {
    Expr::cust(format!(
        "now() - interval '{} milliseconds'",
        age.as_millis()
    ))
}

pub(super) fn opt_time(t: Option<Timestamp>) -> Expr {
    t.map(time_text).into()
}

/// Ids are `u64` in `types` and INTEGER (`i64`) in SQLite. An id above `i64::MAX` was never
/// handed out, so it wraps to a negative number that matches no row.
pub(super) fn id_int(id: u64) -> i64 {
    id as i64
}

pub(super) fn id(id: u64) -> Expr {
    id_int(id).into()
}

pub(super) fn opt_id(id: Option<u64>) -> Expr {
    id.map(id_int).into()
}

/// A list of strings as a JSON text array.
pub(super) fn json_list<S: AsRef<str>>(items: &[S]) -> Expr {
    let items: Vec<&str> = items.iter().map(AsRef::as_ref).collect();
    serde_json::to_string(&items)
        .expect("a list of strings always serializes to JSON")
        .into()
}

// ---- values read

/// Reads one row of `table`; every failure names the table and column.
pub(super) struct RowReader<'r> {
    pub row: &'r Row,
    pub table: &'static str,
}

impl<'r> RowReader<'r> {
    pub fn new(row: &'r Row, table: &'static str) -> Self {
        Self { row, table }
    }

    pub fn corrupt(&self, column: impl Iden + Copy, detail: impl Display) -> Error {
        Error::Corrupt {
            table: self.table,
            detail: format!("column {}: {detail}", column.unquoted()),
        }
    }

    pub fn get<T>(&self, column: impl Iden + Copy) -> Result<T>
    where
        T: sqlx::Decode<'r, Sqlite>
            + sqlx::Type<Sqlite>
            + sqlx::Decode<'r, Postgres>
            + sqlx::Type<Postgres>,
    {
        match self.row {
            Row::Sqlite(row) => row.try_get::<T, _>(column.unquoted()),
            Row::Postgres(row) => row.try_get::<T, _>(column.unquoted()),
        }
        .map_err(|e| self.corrupt(column, e))
    }

    pub fn text(&self, column: impl Iden + Copy) -> Result<String> {
        self.get(column)
    }

    pub fn opt_text(&self, column: impl Iden + Copy) -> Result<Option<String>> {
        self.get(column)
    }

    pub fn flag(&self, column: impl Iden + Copy) -> Result<bool> {
        if let Row::Postgres(_) = self.row {
            return self.get::<bool>(column);
        }
        match self.get::<i64>(column)? {
            0 => Ok(false),
            1 => Ok(true),
            other => Err(self.corrupt(column, format!("expected 0 or 1, got {other}"))),
        }
    }

    pub fn id(&self, column: impl Iden + Copy) -> Result<u64> {
        let raw: i64 = self.get(column)?;
        u64::try_from(raw).map_err(|_| self.corrupt(column, format!("negative id {raw}")))
    }

    pub fn opt_id(&self, column: impl Iden + Copy) -> Result<Option<u64>> {
        let raw: Option<i64> = self.get(column)?;
        raw.map(|raw| {
            u64::try_from(raw).map_err(|_| self.corrupt(column, format!("negative id {raw}")))
        })
        .transpose()
    }

    /// A value kept in its `FromStr`/`Display` text form (keys, addresses, prefixes).
    pub fn parse<T>(&self, column: impl Iden + Copy) -> Result<T>
    where
        T: FromStr,
        T::Err: Display,
    {
        let text = self.text(column)?;
        self.parse_text(column, &text)
    }

    pub fn opt_parse<T>(&self, column: impl Iden + Copy) -> Result<Option<T>>
    where
        T: FromStr,
        T::Err: Display,
    {
        self.opt_text(column)?
            .map(|text| self.parse_text(column, &text))
            .transpose()
    }

    pub fn parse_text<T>(&self, column: impl Iden + Copy, text: &str) -> Result<T>
    where
        T: FromStr,
        T::Err: Display,
    {
        text.parse()
            .map_err(|e| self.corrupt(column, format!("{text:?}: {e}")))
    }

    pub fn time(&self, column: impl Iden + Copy) -> Result<Timestamp> {
        let text = self.text(column)?;
        self.time_from_text(column, &text)
    }

    pub fn opt_time(&self, column: impl Iden + Copy) -> Result<Option<Timestamp>> {
        self.opt_text(column)?
            .map(|text| self.time_from_text(column, &text))
            .transpose()
    }

    fn time_from_text(&self, column: impl Iden + Copy, text: &str) -> Result<Timestamp> {
        DateTime::parse_from_rfc3339(text)
            .map(|t| t.with_timezone(&Utc))
            .map_err(|e| self.corrupt(column, format!("{text:?}: {e}")))
    }

    /// A JSON text array of strings.
    pub fn json_list(&self, column: impl Iden + Copy) -> Result<Vec<String>> {
        let text = self.text(column)?;
        serde_json::from_str(&text).map_err(|e| self.corrupt(column, format!("{text:?}: {e}")))
    }

    /// A JSON text array of strings, each parsed with `FromStr`.
    pub fn json_parsed_list<T>(&self, column: impl Iden + Copy) -> Result<Vec<T>>
    where
        T: FromStr,
        T::Err: Display,
    {
        self.json_list(column)?
            .iter()
            .map(|item| self.parse_text(column, item))
            .collect()
    }
}

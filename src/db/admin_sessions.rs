//! The `admin_sessions` table: the web UI's sign-in links and browser sessions.

use super::exec::Row;
use super::rows::{self, RowReader};
use super::{Db, Error, Result};
use crate::types::{AdminSession, AdminSessionKind, Timestamp};
use sea_query::{Expr, ExprTrait, Iden, Query};

#[derive(Clone, Copy, Iden)]
enum AdminSessions {
    Table,
    Prefix,
    Kind,
    Hash,
    Csrf,
    Who,
    CreatedAt,
    LastUsedAt,
    ExpiresAt,
}

const COLUMNS: [AdminSessions; 8] = [
    AdminSessions::Prefix,
    AdminSessions::Kind,
    AdminSessions::Hash,
    AdminSessions::Csrf,
    AdminSessions::Who,
    AdminSessions::CreatedAt,
    AdminSessions::LastUsedAt,
    AdminSessions::ExpiresAt,
];

/// The one place an `admin_sessions` row becomes an `AdminSession`.
fn from_row(row: &Row) -> Result<AdminSession> {
    let r = RowReader::new(row, "admin_sessions");
    let kind = r.text(AdminSessions::Kind)?;
    Ok(AdminSession {
        prefix: r.text(AdminSessions::Prefix)?,
        kind: AdminSessionKind::parse(&kind)
            .ok_or_else(|| r.corrupt(AdminSessions::Kind, format!("unknown kind {kind:?}")))?,
        hash: r.text(AdminSessions::Hash)?,
        csrf: r.text(AdminSessions::Csrf)?,
        who: r.text(AdminSessions::Who)?,
        created_at: r.time(AdminSessions::CreatedAt)?,
        last_used_at: r.time(AdminSessions::LastUsedAt)?,
        expires_at: r.time(AdminSessions::ExpiresAt)?,
    })
}

/// Stores `session`, and sweeps the rows whose hard end has passed.
pub(super) async fn insert(db: &Db, session: &AdminSession, now: Timestamp) -> Result<()> {
    let sweep = Query::delete()
        .from_table(AdminSessions::Table)
        .and_where(Expr::col(AdminSessions::ExpiresAt).lt(rows::time(now)))
        .to_owned();
    rows::execute(db.write(), &sweep).await?;
    let stmt = rows::insert(
        AdminSessions::Table,
        vec![
            (AdminSessions::Prefix, session.prefix.as_str().into()),
            (AdminSessions::Kind, session.kind.as_str().into()),
            (AdminSessions::Hash, session.hash.as_str().into()),
            (AdminSessions::Csrf, session.csrf.as_str().into()),
            (AdminSessions::Who, session.who.as_str().into()),
            (AdminSessions::CreatedAt, rows::time(session.created_at)),
            (AdminSessions::LastUsedAt, rows::time(session.last_used_at)),
            (AdminSessions::ExpiresAt, rows::time(session.expires_at)),
        ],
    );
    rows::execute(db.write(), &stmt).await?;
    Ok(())
}

fn by_key(kind: AdminSessionKind, prefix: &str) -> Expr {
    Expr::col(AdminSessions::Prefix)
        .eq(prefix)
        .and(Expr::col(AdminSessions::Kind).eq(kind.as_str()))
}

pub(super) async fn find(
    db: &Db,
    kind: AdminSessionKind,
    prefix: &str,
) -> Result<Option<AdminSession>> {
    let stmt = Query::select()
        .columns(COLUMNS)
        .from(AdminSessions::Table)
        .and_where(by_key(kind, prefix))
        .to_owned();
    rows::read_optional(db.read(), &stmt, from_row).await
}

/// Deletes one link or session; `NotFound` when it was already gone, so of two
/// redemptions of one link exactly one succeeds.
pub(super) async fn delete(db: &Db, kind: AdminSessionKind, prefix: &str) -> Result<()> {
    let stmt = Query::delete()
        .from_table(AdminSessions::Table)
        .and_where(by_key(kind, prefix))
        .to_owned();
    rows::execute_on_one(db.write(), &stmt, "sign-in link or session").await
}

/// Records that a session was used at `now`.
pub(super) async fn touch(db: &Db, prefix: &str, now: Timestamp) -> Result<()> {
    let stmt = Query::update()
        .table(AdminSessions::Table)
        .value(AdminSessions::LastUsedAt, rows::time(now))
        .and_where(by_key(AdminSessionKind::Session, prefix))
        .to_owned();
    match rows::execute(db.write(), &stmt).await? {
        0 => Err(Error::NotFound("session")),
        _ => Ok(()),
    }
}

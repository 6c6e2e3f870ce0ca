//! The `policies` table: every saved policy is a new row, and the newest one is in force.

use super::rows::{self, RowReader};
use super::{Db, Result};
use crate::types::Timestamp;
use sea_query::{Iden, Order, Query};

#[derive(Clone, Copy, Iden)]
pub(super) enum Policies {
    Table,
    Id,
    Data,
    CreatedAt,
    UpdatedAt,
}

pub(super) async fn get(db: &Db) -> Result<Option<(String, Timestamp)>> {
    let stmt = Query::select()
        .columns([Policies::Data, Policies::UpdatedAt])
        .from(Policies::Table)
        .order_by(Policies::Id, Order::Desc)
        .limit(1)
        .to_owned();
    let Some(row) = rows::fetch_optional(db.read(), &stmt).await? else {
        return Ok(None);
    };
    let r = RowReader::new(&row, "policies");
    Ok(Some((
        r.text(Policies::Data)?,
        r.time(Policies::UpdatedAt)?,
    )))
}

pub(super) async fn set(db: &Db, text: &str, now: Timestamp) -> Result<()> {
    let (_, values) = to_values(&(0, text.to_owned(), now, now));
    let stmt = rows::insert(Policies::Table, values);
    rows::execute(db.write(), &stmt).await?;
    Ok(())
}

/// Every saved policy, oldest first, as `(id, columns)` for `db copy`.
pub(super) async fn list(db: &Db) -> Result<Vec<(u64, String, Timestamp, Timestamp)>> {
    let stmt = Query::select()
        .columns([
            Policies::Id,
            Policies::Data,
            Policies::CreatedAt,
            Policies::UpdatedAt,
        ])
        .from(Policies::Table)
        .order_by(Policies::Id, Order::Asc)
        .to_owned();
    rows::fetch_all(db.read(), &stmt)
        .await?
        .iter()
        .map(|row| {
            let r = RowReader::new(row, "policies");
            Ok((
                r.id(Policies::Id)?,
                r.text(Policies::Data)?,
                r.time(Policies::CreatedAt)?,
                r.time(Policies::UpdatedAt)?,
            ))
        })
        .collect()
}

/// A saved policy's columns but `id`, keyed by its id.
pub(super) fn to_values(
    (id, data, created, updated): &(u64, String, Timestamp, Timestamp),
) -> (u64, Vec<(Policies, sea_query::Expr)>) {
    (
        *id,
        vec![
            (Policies::Data, data.as_str().into()),
            (Policies::CreatedAt, rows::time(*created)),
            (Policies::UpdatedAt, rows::time(*updated)),
        ],
    )
}

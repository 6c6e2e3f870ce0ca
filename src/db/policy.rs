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
    let Some(row) = rows::fetch_optional(&db.reader, &stmt).await? else {
        return Ok(None);
    };
    let r = RowReader::new(&row, "policies");
    Ok(Some((
        r.text(Policies::Data)?,
        r.time(Policies::UpdatedAt)?,
    )))
}

pub(super) async fn set(db: &Db, text: &str, now: Timestamp) -> Result<()> {
    let stmt = Query::insert()
        .into_table(Policies::Table)
        .columns([Policies::Data, Policies::CreatedAt, Policies::UpdatedAt])
        .values_panic([text.into(), rows::time(now), rows::time(now)])
        .to_owned();
    rows::execute(&db.writer, &stmt).await?;
    Ok(())
}

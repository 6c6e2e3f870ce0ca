//! The `api_keys` table.

use super::exec::Row;
use super::rows::{self, RowReader};
use super::{Db, NewApiKey, Result};
use crate::types::{ApiKey, ApiKeyId, Timestamp};
use sea_query::{Expr, ExprTrait, Iden, Order, Query};

#[derive(Clone, Copy, Iden)]
pub(super) enum ApiKeys {
    Table,
    Id,
    Prefix,
    Hash,
    Expiration,
    LastSeen,
    CreatedAt,
}

const COLUMNS: [ApiKeys; 6] = [
    ApiKeys::Id,
    ApiKeys::Prefix,
    ApiKeys::Hash,
    ApiKeys::Expiration,
    ApiKeys::LastSeen,
    ApiKeys::CreatedAt,
];

/// The one place an `api_keys` row becomes an `ApiKey`.
pub(super) fn from_row(row: &Row) -> Result<ApiKey> {
    let r = RowReader::new(row, "api_keys");
    Ok(ApiKey {
        id: ApiKeyId(r.id(ApiKeys::Id)?),
        prefix: r.text(ApiKeys::Prefix)?,
        hash: r.text(ApiKeys::Hash)?,
        expiration: r.opt_time(ApiKeys::Expiration)?,
        created_at: r.time(ApiKeys::CreatedAt)?,
        last_seen: r.opt_time(ApiKeys::LastSeen)?,
    })
}

fn select() -> sea_query::SelectStatement {
    Query::select()
        .columns(COLUMNS)
        .from(ApiKeys::Table)
        .to_owned()
}

fn by_id(id: ApiKeyId) -> Expr {
    Expr::col(ApiKeys::Id).eq(rows::id(id.0))
}

/// The one place an `ApiKey` becomes column values: every column but `id`.
pub(super) fn to_values(k: &ApiKey) -> Vec<(ApiKeys, Expr)> {
    vec![
        (ApiKeys::Prefix, k.prefix.as_str().into()),
        (ApiKeys::Hash, k.hash.as_str().into()),
        (ApiKeys::Expiration, rows::opt_time(k.expiration)),
        (ApiKeys::LastSeen, rows::opt_time(k.last_seen)),
        (ApiKeys::CreatedAt, rows::time(k.created_at)),
    ]
}

pub(super) async fn insert(db: &Db, new: &NewApiKey) -> Result<ApiKey> {
    let key = ApiKey {
        id: ApiKeyId(0),
        prefix: new.prefix.clone(),
        hash: new.hash.clone(),
        expiration: new.expiration,
        created_at: new.created_at,
        last_seen: None,
    };
    let stmt = rows::insert(ApiKeys::Table, to_values(&key))
        .returning(Query::returning().columns(COLUMNS))
        .to_owned();
    from_row(&rows::fetch_one(db.write(), &stmt).await?)
}

pub(super) async fn list(db: &Db) -> Result<Vec<ApiKey>> {
    let stmt = select().order_by(ApiKeys::Id, Order::Asc).to_owned();
    rows::read_all(db.read(), &stmt, from_row).await
}

pub(super) async fn find_by_prefix(db: &Db, prefix: &str) -> Result<Option<ApiKey>> {
    let stmt = select()
        .and_where(Expr::col(ApiKeys::Prefix).eq(prefix))
        .to_owned();
    rows::read_optional(db.read(), &stmt, from_row).await
}

/// Sets one timestamp column of one key.
async fn set_time(db: &Db, id: ApiKeyId, column: ApiKeys, now: Timestamp) -> Result<()> {
    let stmt = Query::update()
        .table(ApiKeys::Table)
        .value(column, rows::time(now))
        .and_where(by_id(id))
        .to_owned();
    rows::execute_on_one(db.write(), &stmt, "API key").await
}

pub(super) async fn expire(db: &Db, id: ApiKeyId, now: Timestamp) -> Result<()> {
    set_time(db, id, ApiKeys::Expiration, now).await
}

pub(super) async fn touch(db: &Db, id: ApiKeyId, now: Timestamp) -> Result<()> {
    set_time(db, id, ApiKeys::LastSeen, now).await
}

/// Replaces the stored hash (an imported bcrypt hash, once its key was checked).
pub(super) async fn set_hash(db: &Db, id: ApiKeyId, hash: &str) -> Result<()> {
    let stmt = Query::update()
        .table(ApiKeys::Table)
        .value(ApiKeys::Hash, hash)
        .and_where(by_id(id))
        .to_owned();
    rows::execute_on_one(db.write(), &stmt, "API key").await
}

pub(super) async fn delete(db: &Db, id: ApiKeyId) -> Result<()> {
    let stmt = Query::delete()
        .from_table(ApiKeys::Table)
        .and_where(by_id(id))
        .to_owned();
    rows::execute_on_one(db.write(), &stmt, "API key").await
}

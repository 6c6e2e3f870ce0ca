//! The `pre_auth_keys` table.

use super::exec::{Row, Tx};
use super::rows::{self, RowReader};
use super::{Db, Error, NewPreAuthKey, Result};
use crate::types::{PreAuthKey, PreAuthKeyId, Timestamp, UserId};
use sea_query::{Expr, ExprTrait, Iden, Order, Query};

#[derive(Clone, Copy, Iden)]
pub(super) enum PreAuthKeys {
    Table,
    Id,
    Prefix,
    Hash,
    UserId,
    Reusable,
    Ephemeral,
    Used,
    Tags,
    Expiration,
    CreatedAt,
}

const COLUMNS: [PreAuthKeys; 10] = [
    PreAuthKeys::Id,
    PreAuthKeys::Prefix,
    PreAuthKeys::Hash,
    PreAuthKeys::UserId,
    PreAuthKeys::Reusable,
    PreAuthKeys::Ephemeral,
    PreAuthKeys::Used,
    PreAuthKeys::Tags,
    PreAuthKeys::Expiration,
    PreAuthKeys::CreatedAt,
];

/// The one place a `pre_auth_keys` row becomes a `PreAuthKey`.
pub(super) fn from_row(row: &Row) -> Result<PreAuthKey> {
    let r = RowReader::new(row, "pre_auth_keys");
    Ok(PreAuthKey {
        id: PreAuthKeyId(r.id(PreAuthKeys::Id)?),
        user_id: r.opt_id(PreAuthKeys::UserId)?.map(UserId),
        prefix: r.text(PreAuthKeys::Prefix)?,
        hash: r.text(PreAuthKeys::Hash)?,
        reusable: r.flag(PreAuthKeys::Reusable)?,
        ephemeral: r.flag(PreAuthKeys::Ephemeral)?,
        used: r.flag(PreAuthKeys::Used)?,
        tags: r.json_list(PreAuthKeys::Tags)?,
        expiration: r.opt_time(PreAuthKeys::Expiration)?,
        created_at: r.time(PreAuthKeys::CreatedAt)?,
    })
}

fn select() -> sea_query::SelectStatement {
    Query::select()
        .columns(COLUMNS)
        .from(PreAuthKeys::Table)
        .to_owned()
}

fn by_id(id: PreAuthKeyId) -> Expr {
    Expr::col(PreAuthKeys::Id).eq(rows::id(id.0))
}

/// The one place a `PreAuthKey` becomes column values: every column but `id`.
pub(super) fn to_values(k: &PreAuthKey) -> Vec<(PreAuthKeys, Expr)> {
    vec![
        (PreAuthKeys::Prefix, k.prefix.as_str().into()),
        (PreAuthKeys::Hash, k.hash.as_str().into()),
        (PreAuthKeys::UserId, rows::opt_id(k.user_id.map(|u| u.0))),
        (PreAuthKeys::Reusable, k.reusable.into()),
        (PreAuthKeys::Ephemeral, k.ephemeral.into()),
        (PreAuthKeys::Used, k.used.into()),
        (PreAuthKeys::Tags, rows::json_list(&k.tags)),
        (PreAuthKeys::Expiration, rows::opt_time(k.expiration)),
        (PreAuthKeys::CreatedAt, rows::time(k.created_at)),
    ]
}

pub(super) async fn insert(db: &Db, new: &NewPreAuthKey) -> Result<PreAuthKey> {
    let key = PreAuthKey {
        id: PreAuthKeyId(0),
        user_id: new.user_id,
        prefix: new.prefix.clone(),
        hash: new.hash.clone(),
        reusable: new.reusable,
        ephemeral: new.ephemeral,
        used: false,
        tags: new.tags.clone(),
        expiration: new.expiration,
        created_at: new.created_at,
    };
    let stmt = rows::insert(PreAuthKeys::Table, to_values(&key))
        .returning(Query::returning().columns(COLUMNS))
        .to_owned();
    match rows::fetch_one(db.write(), &stmt).await {
        Ok(row) => from_row(&row),
        // `user_id` is the only foreign key of this table.
        Err(err) if rows::is_foreign_key_violation(&err) => Err(Error::NotFound("user")),
        Err(err) => Err(err),
    }
}

pub(super) async fn list(db: &Db) -> Result<Vec<PreAuthKey>> {
    let stmt = select().order_by(PreAuthKeys::Id, Order::Asc).to_owned();
    rows::read_all(db.read(), &stmt, from_row).await
}

pub(super) async fn find_by_prefix(db: &Db, prefix: &str) -> Result<Option<PreAuthKey>> {
    let stmt = select()
        .and_where(Expr::col(PreAuthKeys::Prefix).eq(prefix))
        .to_owned();
    rows::read_optional(db.read(), &stmt, from_row).await
}

pub(super) async fn expire(db: &Db, id: PreAuthKeyId, now: Timestamp) -> Result<()> {
    let stmt = Query::update()
        .table(PreAuthKeys::Table)
        .value(PreAuthKeys::Expiration, rows::time(now))
        .and_where(by_id(id))
        .to_owned();
    rows::execute_on_one(db.write(), &stmt, "pre-auth key").await
}

/// Replaces the stored hash (an imported bcrypt hash, once its key was checked).
pub(super) async fn set_hash(db: &Db, id: PreAuthKeyId, hash: &str) -> Result<()> {
    let stmt = Query::update()
        .table(PreAuthKeys::Table)
        .value(PreAuthKeys::Hash, hash)
        .and_where(by_id(id))
        .to_owned();
    rows::execute_on_one(db.write(), &stmt, "pre-auth key").await
}

pub(super) async fn delete(db: &Db, id: PreAuthKeyId) -> Result<()> {
    // Nodes admitted with this key stay; their `auth_key_id` becomes NULL (ON DELETE SET NULL).
    let stmt = Query::delete()
        .from_table(PreAuthKeys::Table)
        .and_where(by_id(id))
        .to_owned();
    rows::execute_on_one(db.write(), &stmt, "pre-auth key").await
}

/// Marks a key used inside the caller's write transaction.
///
/// A single-use key that is already used is refused with `Conflict("pre_auth_keys.used")`,
/// so two registrations racing with the same key cannot both succeed.
pub(super) async fn consume(tx: &mut Tx, id: PreAuthKeyId) -> Result<()> {
    let stmt = Query::update()
        .table(PreAuthKeys::Table)
        .value(PreAuthKeys::Used, true)
        .and_where(by_id(id))
        .and_where(
            Expr::col(PreAuthKeys::Reusable)
                .eq(true)
                .or(Expr::col(PreAuthKeys::Used).eq(false)),
        )
        .to_owned();
    if rows::execute(tx.on(), &stmt).await? > 0 {
        return Ok(());
    }
    if exists(tx, id).await? {
        Err(Error::Conflict("pre_auth_keys.used".to_owned()))
    } else {
        Err(Error::NotFound("pre-auth key"))
    }
}

/// Whether a key with this id exists, seen from inside a write transaction.
pub(super) async fn exists(tx: &mut Tx, id: PreAuthKeyId) -> Result<bool> {
    let stmt = Query::select()
        .column(PreAuthKeys::Id)
        .from(PreAuthKeys::Table)
        .and_where(by_id(id))
        .to_owned();
    Ok(rows::fetch_optional(tx.on(), &stmt).await?.is_some())
}

//! The `users` table.

use super::exec::{Row, Tx};
use super::rows::{self, RowReader};
use super::{Db, Error, NewUser, Result};
use crate::types::{Timestamp, User, UserId, UserName};
use sea_query::{Expr, ExprTrait, Iden, Order, Query};

#[derive(Clone, Copy, Iden)]
pub(super) enum Users {
    Table,
    Id,
    Name,
    DisplayName,
    Email,
    Provider,
    ProviderIdentifier,
    ProfilePicUrl,
    Groups,
    CreatedAt,
    UpdatedAt,
}

const COLUMNS: [Users; 10] = [
    Users::Id,
    Users::Name,
    Users::DisplayName,
    Users::Email,
    Users::Provider,
    Users::ProviderIdentifier,
    Users::ProfilePicUrl,
    Users::Groups,
    Users::CreatedAt,
    Users::UpdatedAt,
];

/// The one place a `users` row becomes a `User`.
pub(super) fn from_row(row: &Row) -> Result<User> {
    let r = RowReader::new(row, "users");
    Ok(User {
        id: UserId(r.id(Users::Id)?),
        // Names were validated on the way in.
        name: UserName::from_trusted(r.text(Users::Name)?),
        display_name: r.text(Users::DisplayName)?,
        email: r.text(Users::Email)?,
        provider: r.text(Users::Provider)?,
        provider_id: r.text(Users::ProviderIdentifier)?,
        profile_pic_url: r.text(Users::ProfilePicUrl)?,
        groups: r.json_list(Users::Groups)?,
        created_at: r.time(Users::CreatedAt)?,
        updated_at: r.time(Users::UpdatedAt)?,
    })
}

/// The one place a `User` becomes column values: every column but `id`.
pub(super) fn to_values(u: &User) -> Vec<(Users, Expr)> {
    vec![
        (Users::Name, u.name.as_str().into()),
        (Users::DisplayName, u.display_name.as_str().into()),
        (Users::Email, u.email.as_str().into()),
        (Users::Provider, u.provider.as_str().into()),
        (Users::ProviderIdentifier, u.provider_id.as_str().into()),
        (Users::ProfilePicUrl, u.profile_pic_url.as_str().into()),
        (Users::Groups, rows::json_list(&u.groups)),
        (Users::CreatedAt, rows::time(u.created_at)),
        (Users::UpdatedAt, rows::time(u.updated_at)),
    ]
}

pub(super) async fn insert(db: &Db, new: &NewUser) -> Result<User> {
    let user = User {
        id: UserId(0),
        name: new.name.clone(),
        display_name: new.display_name.clone(),
        email: new.email.clone(),
        provider: new.provider.clone(),
        provider_id: new.provider_id.clone(),
        profile_pic_url: new.profile_pic_url.clone(),
        groups: new.groups.clone(),
        created_at: new.created_at,
        updated_at: new.created_at,
    };
    let stmt = rows::insert(Users::Table, to_values(&user))
        .returning(Query::returning().columns(COLUMNS))
        .to_owned();
    from_row(&rows::fetch_one(db.write(), &stmt).await?)
}

pub(super) async fn list(db: &Db) -> Result<Vec<User>> {
    let stmt = Query::select()
        .columns(COLUMNS)
        .from(Users::Table)
        .order_by(Users::Id, Order::Asc)
        .to_owned();
    rows::read_all(db.read(), &stmt, from_row).await
}

pub(super) async fn get(db: &Db, id: UserId) -> Result<Option<User>> {
    let stmt = Query::select()
        .columns(COLUMNS)
        .from(Users::Table)
        .and_where(Expr::col(Users::Id).eq(rows::id(id.0)))
        .to_owned();
    rows::read_optional(db.read(), &stmt, from_row).await
}

pub(super) async fn rename(db: &Db, id: UserId, name: &UserName, now: Timestamp) -> Result<User> {
    let stmt = Query::update()
        .table(Users::Table)
        .value(Users::Name, name.as_str())
        .value(Users::UpdatedAt, rows::time(now))
        .and_where(Expr::col(Users::Id).eq(rows::id(id.0)))
        .returning(Query::returning().columns(COLUMNS))
        .to_owned();
    updated(db, &stmt).await
}

/// Stores what an identity provider says about a user at a login: name, profile
/// and groups (the provider identity itself never changes).
pub(super) async fn update_profile(
    db: &Db,
    id: UserId,
    p: &NewUser,
    now: Timestamp,
) -> Result<User> {
    let stmt = Query::update()
        .table(Users::Table)
        .value(Users::Name, p.name.as_str())
        .value(Users::DisplayName, p.display_name.as_str())
        .value(Users::Email, p.email.as_str())
        .value(Users::ProfilePicUrl, p.profile_pic_url.as_str())
        .value(Users::Groups, rows::json_list(&p.groups))
        .value(Users::UpdatedAt, rows::time(now))
        .and_where(Expr::col(Users::Id).eq(rows::id(id.0)))
        .returning(Query::returning().columns(COLUMNS))
        .to_owned();
    updated(db, &stmt).await
}

/// Runs an `UPDATE … RETURNING` of one user; NotFound when no row matched.
async fn updated(db: &Db, stmt: &sea_query::UpdateStatement) -> Result<User> {
    match rows::fetch_optional(db.write(), stmt).await? {
        Some(row) => from_row(&row),
        None => Err(Error::NotFound("user")),
    }
}

pub(super) async fn delete(db: &Db, id: UserId) -> Result<()> {
    // One statement: SQLite deletes the user's pre-auth keys (ON DELETE CASCADE) and
    // refuses the whole delete while a node still belongs to the user (ON DELETE RESTRICT).
    let stmt = Query::delete()
        .from_table(Users::Table)
        .and_where(Expr::col(Users::Id).eq(rows::id(id.0)))
        .to_owned();
    match rows::execute(db.write(), &stmt).await {
        Ok(0) => Err(Error::NotFound("user")),
        Ok(_) => Ok(()),
        // `nodes.user_id` is the only RESTRICT rule pointing at users.
        Err(err) if rows::is_foreign_key_violation(&err) => {
            Err(Error::Conflict("nodes.user_id".to_owned()))
        }
        Err(err) => Err(err),
    }
}

/// Whether a user with this id exists, seen from inside a write transaction.
pub(super) async fn exists(tx: &mut Tx, id: UserId) -> Result<bool> {
    let stmt = Query::select()
        .column(Users::Id)
        .from(Users::Table)
        .and_where(Expr::col(Users::Id).eq(rows::id(id.0)))
        .to_owned();
    Ok(rows::fetch_optional(tx.on(), &stmt).await?.is_some())
}

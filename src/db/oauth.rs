//! The `oauth_clients` and `oauth_tokens` tables.

use super::exec::Row;
use super::rows::{self, RowReader};
use super::{Db, Result};
use crate::types::oauth::{OAuthClient, OAuthToken};
use crate::types::{OAuthClientId, Timestamp};
use sea_query::{Expr, ExprTrait, Iden, Order, Query};

#[derive(Clone, Copy, Iden)]
pub(super) enum OauthClients {
    Table,
    Id,
    Prefix,
    Hash,
    Scopes,
    Tags,
    Description,
    CreatedAt,
}

const CLIENT_COLUMNS: [OauthClients; 7] = [
    OauthClients::Id,
    OauthClients::Prefix,
    OauthClients::Hash,
    OauthClients::Scopes,
    OauthClients::Tags,
    OauthClients::Description,
    OauthClients::CreatedAt,
];

#[derive(Clone, Copy, Iden)]
enum OauthTokens {
    Table,
    Prefix,
    Hash,
    ClientId,
    Scopes,
    ExpiresAt,
}

const TOKEN_COLUMNS: [OauthTokens; 5] = [
    OauthTokens::Prefix,
    OauthTokens::Hash,
    OauthTokens::ClientId,
    OauthTokens::Scopes,
    OauthTokens::ExpiresAt,
];

/// The one place an `oauth_clients` row becomes an `OAuthClient`.
pub(super) fn client_from_row(row: &Row) -> Result<OAuthClient> {
    let r = RowReader::new(row, "oauth_clients");
    Ok(OAuthClient {
        id: OAuthClientId(r.id(OauthClients::Id)?),
        prefix: r.text(OauthClients::Prefix)?,
        hash: r.text(OauthClients::Hash)?,
        scopes: r.json_parsed_list(OauthClients::Scopes)?,
        tags: r.json_list(OauthClients::Tags)?,
        description: r.text(OauthClients::Description)?,
        created_at: r.time(OauthClients::CreatedAt)?,
    })
}

/// The one place an `OAuthClient` becomes column values: every column but `id`.
pub(super) fn client_values(c: &OAuthClient) -> Vec<(OauthClients, Expr)> {
    let scopes: Vec<String> = c.scopes.iter().map(ToString::to_string).collect();
    vec![
        (OauthClients::Prefix, c.prefix.as_str().into()),
        (OauthClients::Hash, c.hash.as_str().into()),
        (OauthClients::Scopes, rows::json_list(&scopes)),
        (OauthClients::Tags, rows::json_list(&c.tags)),
        (OauthClients::Description, c.description.as_str().into()),
        (OauthClients::CreatedAt, rows::time(c.created_at)),
    ]
}

fn token_from_row(row: &Row) -> Result<OAuthToken> {
    let r = RowReader::new(row, "oauth_tokens");
    Ok(OAuthToken {
        prefix: r.text(OauthTokens::Prefix)?,
        hash: r.text(OauthTokens::Hash)?,
        client_id: OAuthClientId(r.id(OauthTokens::ClientId)?),
        scopes: r.json_parsed_list(OauthTokens::Scopes)?,
        expires_at: r.time(OauthTokens::ExpiresAt)?,
    })
}

fn select_clients() -> sea_query::SelectStatement {
    Query::select()
        .columns(CLIENT_COLUMNS)
        .from(OauthClients::Table)
        .to_owned()
}

/// Inserts `client` (its `id` is ignored) and returns it with its id.
pub(super) async fn insert_client(db: &Db, client: &OAuthClient) -> Result<OAuthClient> {
    let stmt = rows::insert(OauthClients::Table, client_values(client))
        .returning(Query::returning().columns(CLIENT_COLUMNS))
        .to_owned();
    client_from_row(&rows::fetch_one(db.write(), &stmt).await?)
}

pub(super) async fn list_clients(db: &Db) -> Result<Vec<OAuthClient>> {
    let stmt = select_clients()
        .order_by(OauthClients::Id, Order::Asc)
        .to_owned();
    rows::read_all(db.read(), &stmt, client_from_row).await
}

pub(super) async fn find_client(db: &Db, prefix: &str) -> Result<Option<OAuthClient>> {
    let stmt = select_clients()
        .and_where(Expr::col(OauthClients::Prefix).eq(prefix))
        .to_owned();
    rows::read_optional(db.read(), &stmt, client_from_row).await
}

pub(super) async fn get_client(db: &Db, id: OAuthClientId) -> Result<Option<OAuthClient>> {
    let stmt = select_clients()
        .and_where(Expr::col(OauthClients::Id).eq(rows::id(id.0)))
        .to_owned();
    rows::read_optional(db.read(), &stmt, client_from_row).await
}

/// Deletes a client and, through the foreign key, its tokens.
pub(super) async fn delete_client(db: &Db, id: OAuthClientId) -> Result<()> {
    let stmt = Query::delete()
        .from_table(OauthClients::Table)
        .and_where(Expr::col(OauthClients::Id).eq(rows::id(id.0)))
        .to_owned();
    rows::execute_on_one(db.write(), &stmt, "OAuth client").await
}

/// Stores a new token and drops the tokens that expired before `now`.
pub(super) async fn insert_token(db: &Db, token: &OAuthToken, now: Timestamp) -> Result<()> {
    let sweep = Query::delete()
        .from_table(OauthTokens::Table)
        .and_where(Expr::col(OauthTokens::ExpiresAt).lt(rows::time(now)))
        .to_owned();
    rows::execute(db.write(), &sweep).await?;
    let scopes: Vec<String> = token.scopes.iter().map(ToString::to_string).collect();
    let stmt = rows::insert(
        OauthTokens::Table,
        vec![
            (OauthTokens::Prefix, token.prefix.as_str().into()),
            (OauthTokens::Hash, token.hash.as_str().into()),
            (OauthTokens::ClientId, rows::id(token.client_id.0)),
            (OauthTokens::Scopes, rows::json_list(&scopes)),
            (OauthTokens::ExpiresAt, rows::time(token.expires_at)),
        ],
    );
    rows::execute(db.write(), &stmt).await?;
    Ok(())
}

pub(super) async fn find_token(db: &Db, prefix: &str) -> Result<Option<OAuthToken>> {
    let stmt = Query::select()
        .columns(TOKEN_COLUMNS)
        .from(OauthTokens::Table)
        .and_where(Expr::col(OauthTokens::Prefix).eq(prefix))
        .to_owned();
    rows::read_optional(db.read(), &stmt, token_from_row).await
}

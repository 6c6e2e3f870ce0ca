//! The `nodes` table.

use super::exec::{Row, Tx};
use super::rows::{self, RowReader};
use super::{Db, Error, NewNode, Result, Taken, preauth_keys, users};
use crate::types::{GivenName, Node, NodeId, PreAuthKeyId, RegisterMethod, UserId};
use sea_query::{Expr, ExprTrait, Iden, Order, Query};
use std::net::SocketAddr;

#[derive(Clone, Copy, Iden)]
pub(super) enum Nodes {
    Table,
    Id,
    MachineKey,
    NodeKey,
    DiscoKey,
    Hostname,
    GivenName,
    UserId,
    Ipv4,
    Ipv6,
    Endpoints,
    HostInfo,
    Tags,
    Expiry,
    LastSeen,
    Ephemeral,
    RegisterMethod,
    AuthKeyId,
    CreatedAt,
    UpdatedAt,
}

const COLUMNS: [Nodes; 19] = [
    Nodes::Id,
    Nodes::MachineKey,
    Nodes::NodeKey,
    Nodes::DiscoKey,
    Nodes::Hostname,
    Nodes::GivenName,
    Nodes::UserId,
    Nodes::Ipv4,
    Nodes::Ipv6,
    Nodes::Endpoints,
    Nodes::HostInfo,
    Nodes::Tags,
    Nodes::Expiry,
    Nodes::LastSeen,
    Nodes::Ephemeral,
    Nodes::RegisterMethod,
    Nodes::AuthKeyId,
    Nodes::CreatedAt,
    Nodes::UpdatedAt,
];

/// The one place a `nodes` row becomes a `Node`.
pub(super) fn from_row(row: &Row) -> Result<Node> {
    let r = RowReader::new(row, "nodes");
    Ok(Node {
        id: NodeId(r.id(Nodes::Id)?),
        machine_key: r.parse(Nodes::MachineKey)?,
        node_key: r.parse(Nodes::NodeKey)?,
        disco_key: r.parse(Nodes::DiscoKey)?,
        hostname: r.text(Nodes::Hostname)?,
        // Given names were validated on the way in.
        given_name: GivenName::from_trusted(r.text(Nodes::GivenName)?),
        user_id: r.opt_id(Nodes::UserId)?.map(UserId),
        ipv4: r.opt_parse(Nodes::Ipv4)?,
        ipv6: r.opt_parse(Nodes::Ipv6)?,
        endpoints: r.json_parsed_list(Nodes::Endpoints)?,
        hostinfo: r.opt_text(Nodes::HostInfo)?,
        tags: r.json_list(Nodes::Tags)?,
        expiry: r.opt_time(Nodes::Expiry)?,
        last_seen: r.opt_time(Nodes::LastSeen)?,
        ephemeral: r.flag(Nodes::Ephemeral)?,
        register_method: RegisterMethod::from_stored(&r.text(Nodes::RegisterMethod)?),
        auth_key_id: r.opt_id(Nodes::AuthKeyId)?.map(PreAuthKeyId),
        created_at: r.time(Nodes::CreatedAt)?,
        updated_at: r.time(Nodes::UpdatedAt)?,
    })
}

/// The one place a `Node` becomes column values: every column but `id`.
pub(super) fn to_values(node: &Node) -> Vec<(Nodes, Expr)> {
    let endpoints: Vec<String> = node.endpoints.iter().map(SocketAddr::to_string).collect();
    vec![
        (Nodes::MachineKey, node.machine_key.to_string().into()),
        (Nodes::NodeKey, node.node_key.to_string().into()),
        (Nodes::DiscoKey, node.disco_key.to_string().into()),
        (Nodes::Hostname, node.hostname.as_str().into()),
        (Nodes::GivenName, node.given_name.as_str().into()),
        (Nodes::UserId, rows::opt_id(node.user_id.map(|u| u.0))),
        (Nodes::Ipv4, node.ipv4.map(|ip| ip.to_string()).into()),
        (Nodes::Ipv6, node.ipv6.map(|ip| ip.to_string()).into()),
        (Nodes::Endpoints, rows::json_list(&endpoints)),
        (Nodes::HostInfo, node.hostinfo.clone().into()),
        (Nodes::Tags, rows::json_list(&node.tags)),
        (Nodes::Expiry, rows::opt_time(node.expiry)),
        (Nodes::LastSeen, rows::opt_time(node.last_seen)),
        (Nodes::Ephemeral, node.ephemeral.into()),
        (Nodes::RegisterMethod, node.register_method.as_str().into()),
        (
            Nodes::AuthKeyId,
            rows::opt_id(node.auth_key_id.map(|k| k.0)),
        ),
        (Nodes::CreatedAt, rows::time(node.created_at)),
        (Nodes::UpdatedAt, rows::time(node.updated_at)),
    ]
}

/// Refuses a node whose user or pre-auth key is gone, with an error that says which.
///
/// SQLite's own FOREIGN KEY error would not name the column.
async fn check_references(tx: &mut Tx, node: &Node) -> Result<()> {
    if let Some(user_id) = node.user_id
        && !users::exists(tx, user_id).await?
    {
        return Err(Error::NotFound("user"));
    }
    if let Some(key_id) = node.auth_key_id
        && !preauth_keys::exists(tx, key_id).await?
    {
        return Err(Error::NotFound("pre-auth key"));
    }
    Ok(())
}

pub(super) async fn insert(
    db: &Db,
    new: &NewNode,
    consume_key: Option<PreAuthKeyId>,
) -> Result<Node> {
    let mut tx = db.begin_write().await?;
    if let Some(key_id) = consume_key {
        preauth_keys::consume(&mut tx, key_id).await?;
    }
    check_references(&mut tx, &new.node).await?;
    let stmt = rows::insert(Nodes::Table, to_values(&new.node))
        .returning(Query::returning().columns(COLUMNS))
        .to_owned();
    let node = from_row(&rows::fetch_one(tx.on(), &stmt).await?)?;
    tx.commit().await?;
    Ok(node)
}

pub(super) async fn save(db: &Db, node: &Node, consume_key: Option<PreAuthKeyId>) -> Result<()> {
    let mut tx = db.begin_write().await?;
    if !exists(&mut tx, node.id).await? {
        return Err(Error::NotFound("node"));
    }
    if let Some(key_id) = consume_key {
        preauth_keys::consume(&mut tx, key_id).await?;
    }
    check_references(&mut tx, node).await?;
    let stmt = Query::update()
        .table(Nodes::Table)
        .values(to_values(node))
        .and_where(Expr::col(Nodes::Id).eq(rows::id(node.id.0)))
        .to_owned();
    rows::execute(tx.on(), &stmt).await?;
    tx.commit().await
}

pub(super) async fn list(db: &Db) -> Result<Vec<Node>> {
    let stmt = Query::select()
        .columns(COLUMNS)
        .from(Nodes::Table)
        .order_by(Nodes::Id, Order::Asc)
        .to_owned();
    rows::read_all(db.read(), &stmt, from_row).await
}

/// Every stored node's addresses and given name.
pub(super) async fn taken(db: &Db) -> Result<Vec<Taken>> {
    let stmt = Query::select()
        .columns([Nodes::Ipv4, Nodes::Ipv6, Nodes::GivenName])
        .from(Nodes::Table)
        .to_owned();
    rows::fetch_all(db.read(), &stmt)
        .await?
        .iter()
        .map(|row| {
            let r = RowReader::new(row, "nodes");
            Ok(Taken {
                ipv4: r.opt_parse(Nodes::Ipv4)?,
                ipv6: r.opt_parse(Nodes::Ipv6)?,
                given_name: r.text(Nodes::GivenName)?,
            })
        })
        .collect()
}

pub(super) async fn get(db: &Db, id: NodeId) -> Result<Option<Node>> {
    let stmt = Query::select()
        .columns(COLUMNS)
        .from(Nodes::Table)
        .and_where(Expr::col(Nodes::Id).eq(rows::id(id.0)))
        .to_owned();
    rows::read_optional(db.read(), &stmt, from_row).await
}

pub(super) async fn delete(db: &Db, id: NodeId) -> Result<()> {
    // The node's routes go with it (ON DELETE CASCADE).
    let stmt = Query::delete()
        .from_table(Nodes::Table)
        .and_where(Expr::col(Nodes::Id).eq(rows::id(id.0)))
        .to_owned();
    rows::execute_on_one(db.write(), &stmt, "node").await
}

/// Whether a node with this id exists, seen from inside a write transaction.
pub(super) async fn exists(tx: &mut Tx, id: NodeId) -> Result<bool> {
    let stmt = Query::select()
        .column(Nodes::Id)
        .from(Nodes::Table)
        .and_where(Expr::col(Nodes::Id).eq(rows::id(id.0)))
        .to_owned();
    Ok(rows::fetch_optional(tx.on(), &stmt).await?.is_some())
}

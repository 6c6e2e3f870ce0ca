//! The `routes` table: one row per prefix of a node, flagged advertised and/or approved.

use super::exec::{Row, Tx};
use super::rows::{self, RowReader};
use super::{Db, Error, Result, nodes};
use crate::types::{NodeId, Route, RouteId, Timestamp};
use ipnet::IpNet;
use sea_query::{Expr, ExprTrait, Iden, Order, Query};

#[derive(Clone, Copy, Iden)]
pub(super) enum Routes {
    Table,
    Id,
    NodeId,
    Prefix,
    Advertised,
    Approved,
    ApprovedByPolicy,
    CreatedAt,
    UpdatedAt,
}

const COLUMNS: [Routes; 8] = [
    Routes::Id,
    Routes::NodeId,
    Routes::Prefix,
    Routes::Advertised,
    Routes::Approved,
    Routes::ApprovedByPolicy,
    Routes::CreatedAt,
    Routes::UpdatedAt,
];

/// The one place a `routes` row becomes a `Route`.
pub(super) fn from_row(row: &Row) -> Result<Route> {
    let r = RowReader::new(row, "routes");
    Ok(Route {
        id: RouteId(r.id(Routes::Id)?),
        node_id: NodeId(r.id(Routes::NodeId)?),
        prefix: r.parse(Routes::Prefix)?,
        advertised: r.flag(Routes::Advertised)?,
        approved: r.flag(Routes::Approved)?,
        approved_by_policy: r.flag(Routes::ApprovedByPolicy)?,
        created_at: r.time(Routes::CreatedAt)?,
        updated_at: r.time(Routes::UpdatedAt)?,
    })
}

/// The stored form of a prefix: host bits cleared, e.g. `10.0.0.1/24` → `10.0.0.0/24`,
/// so one network never gets two rows.
/// The one place a `Route` becomes column values: every column but `id`.
pub(super) fn to_values(r: &Route) -> Vec<(Routes, Expr)> {
    vec![
        (Routes::NodeId, rows::id(r.node_id.0)),
        (Routes::Prefix, r.prefix.to_string().into()),
        (Routes::Advertised, r.advertised.into()),
        (Routes::Approved, r.approved.into()),
        (Routes::ApprovedByPolicy, r.approved_by_policy.into()),
        (Routes::CreatedAt, rows::time(r.created_at)),
        (Routes::UpdatedAt, rows::time(r.updated_at)),
    ]
}

fn canonical(prefix: &IpNet) -> IpNet {
    prefix.trunc()
}

fn by_id(id: RouteId) -> Expr {
    Expr::col(Routes::Id).eq(rows::id(id.0))
}

pub(super) async fn list(db: &Db) -> Result<Vec<Route>> {
    let stmt = Query::select()
        .columns(COLUMNS)
        .from(Routes::Table)
        .order_by(Routes::Id, Order::Asc)
        .to_owned();
    rows::read_all(db.read(), &stmt, from_row).await
}

fn of_node_stmt(node_id: NodeId) -> sea_query::SelectStatement {
    Query::select()
        .columns(COLUMNS)
        .from(Routes::Table)
        .and_where(Expr::col(Routes::NodeId).eq(rows::id(node_id.0)))
        .order_by(Routes::Id, Order::Asc)
        .to_owned()
}

pub(super) async fn of_node(db: &Db, node_id: NodeId) -> Result<Vec<Route>> {
    rows::read_all(db.read(), &of_node_stmt(node_id), from_row).await
}

async fn list_for_node(tx: &mut Tx, node_id: NodeId) -> Result<Vec<Route>> {
    rows::read_all(tx.on(), &of_node_stmt(node_id), from_row).await
}

/// One prefix the node should have a row for, and whether that row exists yet.
struct Wanted {
    prefix: IpNet,
    advertised: bool,
    approved: bool,
    by_policy: bool,
    has_row: bool,
}

pub(super) async fn set_for_node(
    db: &Db,
    node_id: NodeId,
    advertised: &[IpNet],
    approved: &[IpNet],
    by_policy: &[IpNet],
    now: Timestamp,
) -> Result<Vec<Route>> {
    // The union of both lists in first-seen order, so new rows get ids in that order.
    let mut wanted: Vec<Wanted> = Vec::new();
    let flagged = advertised
        .iter()
        .map(|p| (p, true))
        .chain(approved.iter().map(|p| (p, false)));
    for (prefix, is_advertised) in flagged {
        let prefix = canonical(prefix);
        let index = match wanted.iter().position(|w| w.prefix == prefix) {
            Some(index) => index,
            None => {
                wanted.push(Wanted {
                    prefix,
                    advertised: false,
                    approved: false,
                    by_policy: false,
                    has_row: false,
                });
                wanted.len() - 1
            }
        };
        if is_advertised {
            wanted[index].advertised = true;
        } else {
            wanted[index].approved = true;
            wanted[index].by_policy = by_policy.iter().any(|p| canonical(p) == prefix);
        }
    }

    let mut tx = db.begin_write().await?;
    if !nodes::exists(&mut tx, node_id).await? {
        return Err(Error::NotFound("node"));
    }

    for route in list_for_node(&mut tx, node_id).await? {
        let prefix = canonical(&route.prefix);
        let keep = wanted.iter_mut().find(|w| w.prefix == prefix && !w.has_row);
        match keep {
            Some(w) => {
                w.has_row = true;
                if route.advertised != w.advertised
                    || route.approved != w.approved
                    || route.approved_by_policy != w.by_policy
                {
                    let stmt = Query::update()
                        .table(Routes::Table)
                        .value(Routes::Advertised, w.advertised)
                        .value(Routes::Approved, w.approved)
                        .value(Routes::ApprovedByPolicy, w.by_policy)
                        .value(Routes::UpdatedAt, rows::time(now))
                        .and_where(by_id(route.id))
                        .to_owned();
                    rows::execute(tx.on(), &stmt).await?;
                }
            }
            None => {
                let stmt = Query::delete()
                    .from_table(Routes::Table)
                    .and_where(by_id(route.id))
                    .to_owned();
                rows::execute(tx.on(), &stmt).await?;
            }
        }
    }

    for w in wanted.iter().filter(|w| !w.has_row) {
        let route = Route {
            id: RouteId(0),
            node_id,
            prefix: w.prefix,
            advertised: w.advertised,
            approved: w.approved,
            approved_by_policy: w.by_policy,
            created_at: now,
            updated_at: now,
        };
        rows::execute(tx.on(), &rows::insert(Routes::Table, to_values(&route))).await?;
    }

    let routes = list_for_node(&mut tx, node_id).await?;
    tx.commit().await?;
    Ok(routes)
}

pub(super) async fn delete(db: &Db, id: RouteId) -> Result<()> {
    let stmt = Query::delete()
        .from_table(Routes::Table)
        .and_where(by_id(id))
        .to_owned();
    rows::execute_on_one(db.write(), &stmt, "route").await
}

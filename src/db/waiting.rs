//! The `waiting_registrations` table (PostgreSQL): interactive registrations
//! waiting for an admin, so that an admin on any replica can register or reject a
//! client that waits on another, which reads the verdict from its row.

use super::exec::Row;
use super::rows::{self, RowReader};
use super::{Db, Result};
use crate::types::{MachineKey, NodeId, NodeKey, Timestamp};
use ipnet::IpNet;
use sea_query::{Expr, ExprTrait, Iden, Query};

#[derive(Clone, Copy, Iden)]
enum WaitingRegistrations {
    Table,
    Seq,
    Id,
    MachineKey,
    NodeKey,
    Hostname,
    Hostinfo,
    AdvertisedRoutes,
    RequestedTags,
    RequestedExpiry,
    CreatedAt,
    Replica,
    State,
    Verdict,
}

use WaitingRegistrations as W;

const COLUMNS: [W; 9] = [
    W::Id,
    W::MachineKey,
    W::NodeKey,
    W::Hostname,
    W::Hostinfo,
    W::AdvertisedRoutes,
    W::RequestedTags,
    W::RequestedExpiry,
    W::CreatedAt,
];

const WAITING: &str = "waiting";
const CLAIMED: &str = "claimed";
const REGISTERED: &str = "registered";
const REJECTED: &str = "rejected";

/// A client waiting for an admin, as every replica reads it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WaitingRegistration {
    /// `hskey-authreq-…`.
    pub id: String,
    pub machine_key: MachineKey,
    pub node_key: NodeKey,
    pub hostname: String,
    pub hostinfo: Option<String>,
    pub advertised_routes: Vec<IpNet>,
    pub requested_tags: Vec<String>,
    pub requested_expiry: Option<Timestamp>,
    pub created_at: Timestamp,
}

/// Which waiting registration an admin means.
#[derive(Clone, Debug)]
pub enum WaitingKey {
    Id(String),
    NodeKey(NodeKey),
    MachineKey(MachineKey),
}

/// How an admin decided a waiting registration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    Registered(NodeId),
    Rejected(String),
}

fn from_row(row: &Row) -> Result<WaitingRegistration> {
    let r = RowReader::new(row, "waiting_registrations");
    Ok(WaitingRegistration {
        id: r.text(W::Id)?,
        machine_key: r.parse(W::MachineKey)?,
        node_key: r.parse(W::NodeKey)?,
        hostname: r.text(W::Hostname)?,
        hostinfo: r.opt_text(W::Hostinfo)?,
        advertised_routes: r.json_parsed_list(W::AdvertisedRoutes)?,
        requested_tags: r.json_list(W::RequestedTags)?,
        requested_expiry: r.opt_time(W::RequestedExpiry)?,
        created_at: r.time(W::CreatedAt)?,
    })
}

fn verdict_from_row(row: &Row) -> Result<(String, Verdict)> {
    let r = RowReader::new(row, "waiting_registrations");
    let text = r.text(W::Verdict)?;
    let verdict = match r.text(W::State)?.as_str() {
        REGISTERED => Verdict::Registered(NodeId(r.parse_text(W::Verdict, &text)?)),
        _ => Verdict::Rejected(text),
    };
    Ok((r.text(W::Id)?, verdict))
}

/// Rows of `key`, still waiting, made after `since`.
fn waiting(key: &WaitingKey, since: Timestamp) -> sea_query::SelectStatement {
    let matches = match key {
        WaitingKey::Id(id) => Expr::col(W::Id).eq(id.as_str()),
        WaitingKey::NodeKey(k) => Expr::col(W::NodeKey).eq(k.to_string()),
        WaitingKey::MachineKey(k) => Expr::col(W::MachineKey).eq(k.to_string()),
    };
    Query::select()
        .columns(COLUMNS)
        .from(W::Table)
        .and_where(matches)
        .and_where(Expr::col(W::State).eq(WAITING))
        .and_where(Expr::col(W::CreatedAt).gt(rows::time(since)))
        .order_by(W::Seq, sea_query::Order::Asc)
        .limit(1)
        .to_owned()
}

impl Db {
    /// Records a client that waits on this replica.
    pub async fn insert_waiting(&self, reg: &WaitingRegistration) -> Result<()> {
        let routes: Vec<String> = reg.advertised_routes.iter().map(IpNet::to_string).collect();
        let values = vec![
            (W::Id, reg.id.as_str().into()),
            (W::MachineKey, reg.machine_key.to_string().into()),
            (W::NodeKey, reg.node_key.to_string().into()),
            (W::Hostname, reg.hostname.as_str().into()),
            (W::Hostinfo, reg.hostinfo.clone().into()),
            (W::AdvertisedRoutes, rows::json_list(&routes)),
            (W::RequestedTags, rows::json_list(&reg.requested_tags)),
            (W::RequestedExpiry, rows::opt_time(reg.requested_expiry)),
            (W::CreatedAt, rows::time(reg.created_at)),
            (W::Replica, self.replica().into()),
        ];
        rows::execute(self.write(), &rows::insert(W::Table, values)).await?;
        Ok(())
    }

    /// The registration `key` names if it still waits (made after `since`).
    pub async fn find_waiting(
        &self,
        key: &WaitingKey,
        since: Timestamp,
    ) -> Result<Option<WaitingRegistration>> {
        rows::read_optional(self.read(), &waiting(key, since), from_row).await
    }

    /// Takes the registration `key` names for this admin: of two replicas claiming
    /// one registration at once, one gets it and the other `None`.
    pub async fn claim_waiting(
        &self,
        key: &WaitingKey,
        since: Timestamp,
    ) -> Result<Option<WaitingRegistration>> {
        let stmt = Query::update()
            .table(W::Table)
            .value(W::State, CLAIMED)
            .and_where(
                Expr::col(W::Seq).in_subquery(
                    waiting(key, since)
                        .clear_selects()
                        .column(W::Seq)
                        .to_owned(),
                ),
            )
            // Read again after a concurrent claim commits: then no row matches.
            .and_where(Expr::col(W::State).eq(WAITING))
            .returning(Query::returning().columns(COLUMNS))
            .to_owned();
        rows::read_optional(self.write(), &stmt, from_row).await
    }

    /// Returns a claimed registration to the waiting ones (its admission failed).
    pub async fn release_waiting(&self, id: &str) -> Result<()> {
        self.set_waiting_state(id, WAITING, "").await
    }

    /// Records how a claimed registration ended, for the replica its client waits on.
    pub async fn decide_waiting(&self, id: &str, verdict: &Verdict) -> Result<()> {
        match verdict {
            Verdict::Registered(node) => {
                self.set_waiting_state(id, REGISTERED, &node.0.to_string())
                    .await
            }
            Verdict::Rejected(reason) => self.set_waiting_state(id, REJECTED, reason).await,
        }
    }

    async fn set_waiting_state(&self, id: &str, state: &str, verdict: &str) -> Result<()> {
        let stmt = Query::update()
            .table(W::Table)
            .value(W::State, state)
            .value(W::Verdict, verdict)
            .and_where(Expr::col(W::Id).eq(id))
            .to_owned();
        rows::execute(self.write(), &stmt).await?;
        Ok(())
    }

    /// The verdicts recorded for any of `ids`.
    pub async fn verdicts(&self, ids: &[String]) -> Result<Vec<(String, Verdict)>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let stmt = Query::select()
            .columns([W::Id, W::State, W::Verdict])
            .from(W::Table)
            .and_where(Expr::col(W::Id).is_in(ids.iter().map(String::as_str)))
            .and_where(Expr::col(W::State).is_in([REGISTERED, REJECTED]))
            .to_owned();
        rows::read_all(self.read(), &stmt, verdict_from_row).await
    }

    /// Deletes registrations: the one answered (`Some(id)`), or every one made
    /// before `before`; how many.
    pub async fn forget_waiting(&self, id: Option<&str>, before: Timestamp) -> Result<u64> {
        let mut stmt = Query::delete().from_table(W::Table).to_owned();
        match id {
            Some(id) => stmt.and_where(Expr::col(W::Id).eq(id)),
            None => stmt.and_where(Expr::col(W::CreatedAt).lt(rows::time(before))),
        };
        rows::execute(self.write(), &stmt).await
    }
}

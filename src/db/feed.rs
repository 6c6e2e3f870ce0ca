//! The change feed of a PostgreSQL database that several replicas share: which
//! rows were written since a sequence number (recorded by triggers, see
//! `migrations/postgres/0004_change_feed.sql`), a listener woken by every write,
//! and the single-row reads a replica needs to apply what another one wrote.
//! SQLite has one process and no feed.

use super::exec::Pools;
use super::rows::{self, RowReader};
use super::{Db, Result, nodes, routes, users};
use crate::types::{Node, NodeId, Route, User, UserId};
use sea_query::{Expr, ExprTrait, Func, Iden, Order, Query};
use sqlx::postgres::PgListener;

/// The channel the triggers notify.
const CHANNEL: &str = "headway_changes";

/// Which in-memory copy a recorded write touched.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Fed {
    User(UserId),
    Node(NodeId),
    /// Any route row of this node.
    RoutesOf(NodeId),
    /// A saved policy.
    Policy,
    /// Which replicas hold a map session of this node.
    SessionsOf(NodeId),
}

/// One recorded write.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FeedEntry {
    pub seq: u64,
    /// Written by this process (already applied to its memory).
    pub own: bool,
    pub what: Fed,
}

#[derive(Clone, Copy, Iden)]
enum Changes {
    Table,
    Seq,
    Origin,
    TableName,
    RowId,
    At,
}

impl Db {
    /// Whether other processes may write this database (PostgreSQL): only then
    /// is there a feed to follow.
    pub fn has_feed(&self) -> bool {
        matches!(self.pools, Pools::Postgres(_))
    }

    /// The newest recorded write (0: none yet).
    pub async fn feed_head(&self) -> Result<u64> {
        let stmt = Query::select()
            .expr_as(
                Func::coalesce([Func::max(Expr::col(Changes::Seq)).into(), Expr::val(0)]),
                Changes::Seq,
            )
            .from(Changes::Table)
            .to_owned();
        let row = rows::fetch_one(self.read(), &stmt).await?;
        RowReader::new(&row, "changes").id(Changes::Seq)
    }

    /// The oldest write still recorded, if any (older ones were pruned).
    pub async fn feed_tail(&self) -> Result<Option<u64>> {
        let stmt = Query::select()
            .expr_as(Func::min(Expr::col(Changes::Seq)), Changes::Seq)
            .from(Changes::Table)
            .to_owned();
        let row = rows::fetch_one(self.read(), &stmt).await?;
        RowReader::new(&row, "changes").opt_id(Changes::Seq)
    }

    /// Up to `limit` writes after `after`, oldest first. Rows of tables nothing
    /// keeps in memory are never recorded.
    pub async fn feed_since(&self, after: u64, limit: u64) -> Result<Vec<FeedEntry>> {
        let stmt = Query::select()
            .columns([
                Changes::Seq,
                Changes::Origin,
                Changes::TableName,
                Changes::RowId,
            ])
            .from(Changes::Table)
            .and_where(Expr::col(Changes::Seq).gt(rows::id(after)))
            .order_by(Changes::Seq, Order::Asc)
            .limit(limit)
            .to_owned();
        let mut entries = Vec::new();
        for row in rows::fetch_all(self.read(), &stmt).await? {
            let r = RowReader::new(&row, "changes");
            let id = r.id(Changes::RowId)?;
            let what = match r.text(Changes::TableName)?.as_str() {
                "users" => Fed::User(UserId(id)),
                "nodes" => Fed::Node(NodeId(id)),
                "routes" => Fed::RoutesOf(NodeId(id)),
                "policies" => Fed::Policy,
                "sessions" => Fed::SessionsOf(NodeId(id)),
                other => return Err(r.corrupt(Changes::TableName, format!("{other:?}"))),
            };
            entries.push(FeedEntry {
                seq: r.id(Changes::Seq)?,
                own: r.text(Changes::Origin)? == *self.replica,
                what,
            });
        }
        Ok(entries)
    }

    /// Forgets writes recorded more than `age` ago (by the database's clock); how many.
    pub async fn prune_feed(&self, age: std::time::Duration) -> Result<u64> {
        let stmt = Query::delete()
            .from_table(Changes::Table)
            .and_where(Expr::col(Changes::At).lt(rows::ago(age)))
            .to_owned();
        rows::execute(self.write(), &stmt).await
    }

    /// A connection that waits for writes (`None` on SQLite).
    pub async fn feed_listener(&self) -> Result<Option<FeedListener>> {
        let Pools::Postgres(pool) = &self.pools else {
            return Ok(None);
        };
        let mut listener = PgListener::connect_with(pool)
            .await
            .map_err(rows::from_sqlx)?;
        // Waiting must not fail when the pool closes at shutdown: the task ends then.
        listener.ignore_pool_close_event(true);
        listener.listen(CHANNEL).await.map_err(rows::from_sqlx)?;
        Ok(Some(FeedListener(listener)))
    }

    /// One node as stored now (`None`: deleted).
    pub async fn get_node(&self, id: NodeId) -> Result<Option<Node>> {
        nodes::get(self, id).await
    }

    /// One node's route rows as stored now, ordered by id.
    pub async fn routes_of(&self, id: NodeId) -> Result<Vec<Route>> {
        routes::of_node(self, id).await
    }

    /// One user as stored now (`None`: deleted).
    pub async fn get_user(&self, id: UserId) -> Result<Option<User>> {
        users::get(self, id).await
    }
}

/// Wakes when another connection records a write.
pub struct FeedListener(PgListener);

impl FeedListener {
    /// Returns at the next write anyone records. `Ok(false)`: the connection was
    /// lost and is being made again (writes meanwhile went unannounced: read the
    /// feed anyway).
    pub async fn wait(&mut self) -> Result<bool> {
        match self.0.try_recv().await {
            Ok(notification) => Ok(notification.is_some()),
            Err(err) => Err(rows::from_sqlx(err)),
        }
    }
}

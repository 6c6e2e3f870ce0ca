//! Presence across replicas sharing a PostgreSQL database: this process's row in
//! `replicas` (refreshed as a heartbeat; stale ones are deleted with their
//! sessions) and its `sessions` rows, one per node with an open map session here.

use super::rows::{self, RowReader};
use super::{Db, Result};
use crate::types::NodeId;
use sea_query::{Expr, ExprTrait, Iden, OnConflict, Query};
use std::time::Duration;

#[derive(Clone, Copy, Iden)]
enum Replicas {
    Table,
    Name,
    SeenAt,
    RelayRegion,
}

#[derive(Clone, Copy, Iden)]
enum Sessions {
    Table,
    NodeId,
    Replica,
}

impl Db {
    /// Records this process as a live replica (again, after it was taken for dead).
    pub async fn register_replica(&self) -> Result<()> {
        let stmt = Query::insert()
            .into_table(Replicas::Table)
            .columns([Replicas::Name])
            .values_panic([self.replica().into()])
            .on_conflict(
                OnConflict::column(Replicas::Name)
                    .value(Replicas::SeenAt, Expr::cust("now()"))
                    .to_owned(),
            )
            .to_owned();
        rows::execute(self.write(), &stmt).await?;
        Ok(())
    }

    /// Refreshes this replica's row and the relay region it announces to the
    /// others (tailcfg's JSON, opaque here); `false` when the row is gone (the others
    /// took this process for dead and deleted its sessions: register again and
    /// re-record them).
    pub async fn heartbeat(&self, relay_region: Option<&str>) -> Result<bool> {
        let stmt = Query::update()
            .table(Replicas::Table)
            .value(Replicas::SeenAt, Expr::cust("now()"))
            .value(Replicas::RelayRegion, relay_region)
            .and_where(Expr::col(Replicas::Name).eq(self.replica()))
            .to_owned();
        Ok(rows::execute(self.write(), &stmt).await? > 0)
    }

    /// Deletes replicas silent for longer than `silence` (by the database's clock),
    /// and with them their sessions; how many.
    pub async fn reap_replicas(&self, silence: Duration) -> Result<u64> {
        let stmt = Query::delete()
            .from_table(Replicas::Table)
            .and_where(Expr::col(Replicas::SeenAt).lt(rows::ago(silence)))
            .to_owned();
        rows::execute(self.write(), &stmt).await
    }

    /// Removes this replica and its sessions (a clean stop): its nodes go offline
    /// everywhere at once instead of when it would have been taken for dead.
    pub async fn leave(&self) -> Result<()> {
        let stmt = Query::delete()
            .from_table(Replicas::Table)
            .and_where(Expr::col(Replicas::Name).eq(self.replica()))
            .to_owned();
        rows::execute(self.write(), &stmt).await?;
        Ok(())
    }

    /// The relay region every live replica announced at its last heartbeat (its
    /// name, and the region as it wrote it), this one's included, by name.
    pub async fn relay_regions(&self) -> Result<Vec<(String, Option<String>)>> {
        let stmt = Query::select()
            .columns([Replicas::Name, Replicas::RelayRegion])
            .from(Replicas::Table)
            .order_by(Replicas::Name, sea_query::Order::Asc)
            .to_owned();
        rows::read_all(self.read(), &stmt, |row| {
            let r = RowReader::new(row, "replicas");
            Ok((r.text(Replicas::Name)?, r.opt_text(Replicas::RelayRegion)?))
        })
        .await
    }

    /// Records (or forgets) that node `id` has a map session on this replica.
    pub async fn set_session(&self, id: NodeId, open: bool) -> Result<()> {
        if open {
            let stmt = Query::insert()
                .into_table(Sessions::Table)
                .columns([Sessions::NodeId, Sessions::Replica])
                .values_panic([rows::id(id.0), self.replica().into()])
                .on_conflict(
                    OnConflict::columns([Sessions::NodeId, Sessions::Replica])
                        .do_nothing()
                        .to_owned(),
                )
                .to_owned();
            rows::execute(self.write(), &stmt).await?;
        } else {
            let stmt = Query::delete()
                .from_table(Sessions::Table)
                .and_where(Expr::col(Sessions::NodeId).eq(rows::id(id.0)))
                .and_where(Expr::col(Sessions::Replica).eq(self.replica()))
                .to_owned();
            rows::execute(self.write(), &stmt).await?;
        }
        Ok(())
    }

    /// The other replicas holding a session of node `id` (or of every node, `None`).
    pub async fn sessions_elsewhere(&self, id: Option<NodeId>) -> Result<Vec<(NodeId, String)>> {
        let mut stmt = Query::select()
            .columns([Sessions::NodeId, Sessions::Replica])
            .from(Sessions::Table)
            .and_where(Expr::col(Sessions::Replica).ne(self.replica()))
            .to_owned();
        if let Some(id) = id {
            stmt.and_where(Expr::col(Sessions::NodeId).eq(rows::id(id.0)));
        }
        rows::fetch_all(self.read(), &stmt)
            .await?
            .iter()
            .map(|row| {
                let r = RowReader::new(row, "sessions");
                Ok((NodeId(r.id(Sessions::NodeId)?), r.text(Sessions::Replica)?))
            })
            .collect()
    }
}

/// Holding this means this replica runs the periodic jobs of the whole cluster
/// (a session-level advisory lock on a connection of its own: PostgreSQL frees it
/// when the connection or the process dies, and another replica takes it).
pub struct Leadership(sqlx::PgConnection);

/// The advisory lock's key: the bytes of `headway` and a 1, fixed so that every
/// version of headway takes the same lock.
const JOBS_LOCK: i64 = 0x6865_6164_7761_7901;

impl Db {
    /// Takes the periodic jobs if no live replica holds them (`None`: another does,
    /// or this is SQLite, where the one process always runs them).
    pub async fn try_lead(&self) -> Result<Option<Leadership>> {
        let super::exec::Pools::Postgres(pool) = &self.pools else {
            return Ok(None);
        };
        let mut conn = pool.acquire().await.map_err(rows::from_sqlx)?.detach();
        let (taken,): (bool,) = sqlx::query_as("SELECT pg_try_advisory_lock($1)")
            .bind(JOBS_LOCK)
            .fetch_one(&mut conn)
            .await
            .map_err(rows::from_sqlx)?;
        Ok(taken.then_some(Leadership(conn)))
    }
}

impl Leadership {
    /// Whether the lock's connection still answers (else the lock is gone).
    pub async fn still_held(&mut self) -> bool {
        sqlx::query("SELECT 1").execute(&mut self.0).await.is_ok()
    }
}

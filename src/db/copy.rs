//! `headway db copy` and `headway import headscale`: every row headway keeps read
//! as a [`Dump`], and a dump written into a database (SQLite or PostgreSQL), ids
//! kept, in one transaction.

use super::exec::Tx;
use super::policy::Policies;
use super::{Db, Error, Result, api_keys, nodes, oauth, preauth_keys, routes, rows, users};
use crate::types::{ApiKey, Node, OAuthClient, PreAuthKey, Route, Timestamp, User};
use sea_query::{Expr, ExprTrait, Func, Iden, Query};

/// A saved policy: id, the text, created and updated.
pub type SavedPolicy = (u64, String, Timestamp, Timestamp);

/// Every row of the tables headway keeps (OAuth access tokens, which live an hour,
/// aside), each with its id.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Dump {
    pub users: Vec<User>,
    pub pre_auth_keys: Vec<PreAuthKey>,
    pub api_keys: Vec<ApiKey>,
    pub oauth_clients: Vec<OAuthClient>,
    pub nodes: Vec<Node>,
    pub routes: Vec<Route>,
    pub policies: Vec<SavedPolicy>,
}

/// How many rows of each table were copied.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Copied {
    pub users: usize,
    pub pre_auth_keys: usize,
    pub api_keys: usize,
    pub oauth_clients: usize,
    pub nodes: usize,
    pub routes: usize,
    pub policies: usize,
}

impl Copied {
    pub fn total(&self) -> usize {
        self.users
            + self.pre_auth_keys
            + self.api_keys
            + self.oauth_clients
            + self.nodes
            + self.routes
            + self.policies
    }
}

/// Rows per INSERT: PostgreSQL takes at most 65,535 parameters per statement, and
/// the widest table (nodes) has 19 columns.
const BATCH: usize = 1000;

/// Tables in the order their references allow inserting them; deleting goes backwards.
/// OAuth access tokens live an hour and are not copied; deleting their clients
/// deletes them.
const TABLES: [&str; 7] = [
    "users",
    "pre_auth_keys",
    "api_keys",
    "oauth_clients",
    "nodes",
    "routes",
    "policies",
];

impl Db {
    /// Rows in every table of headway's, summed.
    pub async fn count_rows(&self) -> Result<usize> {
        let mut total = 0;
        for table in TABLES {
            total += count(self, table).await?;
        }
        Ok(total)
    }

    /// Copies every row of `self` into `target`, keeping ids, in one transaction:
    /// either everything is there afterwards or nothing changed. A target that
    /// holds any row is refused (`Error::NotEmpty`) unless `replace` is given,
    /// which deletes its rows first. Every source row must read back (a corrupt
    /// row stops the copy before anything is written).
    pub async fn copy_to(&self, target: &Db, replace: bool) -> Result<Copied> {
        target.restore(&self.dump().await?, replace).await
    }

    /// Every row, read back into `types`.
    pub async fn dump(&self) -> Result<Dump> {
        Ok(Dump {
            users: self.list_users().await?,
            pre_auth_keys: self.list_preauth_keys().await?,
            api_keys: self.list_api_keys().await?,
            oauth_clients: self.list_oauth_clients().await?,
            nodes: self.list_nodes().await?,
            routes: self.list_routes().await?,
            policies: super::policy::list(self).await?,
        })
    }

    /// Writes `dump` into this database with its ids, in one transaction. A
    /// database that holds any row is refused (`Error::NotEmpty`) unless `replace`
    /// is given, which deletes its rows first.
    pub async fn restore(&self, dump: &Dump, replace: bool) -> Result<Copied> {
        let Dump {
            users,
            pre_auth_keys: keys,
            api_keys,
            oauth_clients,
            nodes,
            routes,
            policies,
        } = dump;
        let target = self;
        let mut tx = target.begin_write().await?;
        let present = target.count_rows().await?;
        if present > 0 && !replace {
            return Err(Error::NotEmpty(present));
        }
        for table in TABLES.iter().rev() {
            let stmt = Query::delete().from_table(Name(table)).to_owned();
            rows::execute(tx.on(), &stmt).await?;
        }

        let copied = Copied {
            users: insert_all(&mut tx, users::Users::Table, users::Users::Id, users, |u| {
                (u.id.0, users::to_values(u))
            })
            .await?,
            pre_auth_keys: insert_all(
                &mut tx,
                preauth_keys::PreAuthKeys::Table,
                preauth_keys::PreAuthKeys::Id,
                keys,
                |k| (k.id.0, preauth_keys::to_values(k)),
            )
            .await?,
            api_keys: insert_all(
                &mut tx,
                api_keys::ApiKeys::Table,
                api_keys::ApiKeys::Id,
                api_keys,
                |k| (k.id.0, api_keys::to_values(k)),
            )
            .await?,
            oauth_clients: insert_all(
                &mut tx,
                oauth::OauthClients::Table,
                oauth::OauthClients::Id,
                oauth_clients,
                |c| (c.id.0, oauth::client_values(c)),
            )
            .await?,
            nodes: insert_all(&mut tx, nodes::Nodes::Table, nodes::Nodes::Id, nodes, |n| {
                (n.id.0, nodes::to_values(n))
            })
            .await?,
            routes: insert_all(
                &mut tx,
                routes::Routes::Table,
                routes::Routes::Id,
                routes,
                |r| (r.id.0, routes::to_values(r)),
            )
            .await?,
            policies: insert_all(
                &mut tx,
                Policies::Table,
                Policies::Id,
                policies,
                super::policy::to_values,
            )
            .await?,
        };
        if target.backend() == "postgres" {
            for table in TABLES {
                continue_ids_after_copied_rows(&mut tx, table).await?;
            }
        }
        tx.commit().await?;
        Ok(copied)
    }
}

/// A table or column named at run time.
#[derive(Clone, Copy)]
struct Name(&'static str);

impl Iden for Name {
    fn unquoted(&self) -> &str {
        self.0
    }
}

async fn count(db: &Db, table: &'static str) -> Result<usize> {
    let stmt = Query::select()
        .expr_as(Func::count(Expr::col(sea_query::Asterisk)), Name("n"))
        .from(Name(table))
        .to_owned();
    let row = rows::fetch_one(db.read(), &stmt).await?;
    let n: i64 = rows::RowReader::new(&row, table).get(Name("n"))?;
    Ok(usize::try_from(n).unwrap_or(0))
}

/// Inserts `items` with their ids, `BATCH` rows per statement.
async fn insert_all<T, C: Iden + Copy + 'static>(
    tx: &mut Tx,
    table: C,
    id: C,
    items: &[T],
    values: impl Fn(&T) -> (u64, Vec<(C, Expr)>),
) -> Result<usize> {
    for batch in items.chunks(BATCH) {
        let mut stmt = Query::insert().into_table(table).to_owned();
        for (n, item) in batch.iter().enumerate() {
            let (item_id, mut row) = values(item);
            row.insert(0, (id, rows::id(item_id)));
            let (columns, values): (Vec<C>, Vec<Expr>) = row.into_iter().unzip();
            if n == 0 {
                stmt.columns(columns);
            }
            // Every row comes from the same mapping, so the counts match the columns.
            stmt.values_panic(values);
        }
        rows::execute(tx.on(), &stmt).await?;
    }
    Ok(items.len())
}

/// PostgreSQL's identity columns do not notice ids written explicitly: the next id
/// handed out must come after the highest copied one (SQLite's AUTOINCREMENT does
/// this by itself).
async fn continue_ids_after_copied_rows(tx: &mut Tx, table: &'static str) -> Result<()> {
    let stmt = Query::select()
        .expr(
            Func::cust(Name("setval")).args([
                Func::cust(Name("pg_get_serial_sequence"))
                    .args([Expr::val(table), Expr::val("id")])
                    .into(),
                Expr::expr(Func::coalesce([
                    Func::max(Expr::col(Name("id"))).into(),
                    Expr::val(0),
                ]))
                .add(1),
                Expr::val(false),
            ]),
        )
        .from(Name(table))
        .to_owned();
    rows::fetch_all(tx.on(), &stmt).await?;
    Ok(())
}

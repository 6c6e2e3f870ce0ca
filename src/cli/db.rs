//! `headway db`: the database itself, with no server involved: `copy` moves
//! every row into another database (SQLite to PostgreSQL, or back).

use crate::config::{self, Database};
use crate::db::Db;
use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use std::path::Path;

#[derive(Subcommand, Debug)]
pub enum DbCommand {
    /// Copy every row (users, nodes, keys, routes, policies) into another database,
    /// keeping ids, so clients notice nothing. Stop headway first.
    Copy(CopyArgs),
}

#[derive(Args, Debug)]
pub struct CopyArgs {
    /// The database to read: a SQLite file or a postgres:// URL. Default: the
    /// configured one (database.*).
    #[arg(long)]
    pub from: Option<String>,
    /// The database to write: a postgres://user:pass@host:port/name URL
    /// (?sslmode=…) or a SQLite file. It must be empty, unless --replace.
    #[arg(long)]
    pub to: String,
    /// Delete every row the target holds before copying.
    #[arg(long)]
    pub replace: bool,
}

pub fn run(command: DbCommand, config_flag: Option<&Path>) -> anyhow::Result<()> {
    let DbCommand::Copy(args) = command;
    let from = match &args.from {
        Some(text) => Database::from_location(text).map_err(anyhow::Error::msg)?,
        None => config::load(config_flag)?.config.database,
    };
    let to = Database::from_location(&args.to).map_err(anyhow::Error::msg)?;
    if from == to {
        bail!(
            "--from and --to name the same database ({})",
            from.describe()
        );
    }
    // Opening a SQLite path creates it: a source that is not there is a typo.
    if let Database::Sqlite { path, .. } = &from
        && !path.is_file()
    {
        bail!("--from {}: no such file", path.display());
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let source = Db::open(&from)
            .await
            .with_context(|| format!("the source {}", from.describe()))?;
        let target = Db::open(&to)
            .await
            .with_context(|| format!("the target {}", to.describe()))?;
        let copied = source
            .copy_to(&target, args.replace)
            .await
            .with_context(|| format!("copying into {}", to.describe()))?;
        println!(
            "copied {} users, {} pre-auth keys, {} API keys, {} OAuth clients, {} nodes, {} routes and {} saved policies from {} to {}",
            copied.users,
            copied.pre_auth_keys,
            copied.api_keys,
            copied.oauth_clients,
            copied.nodes,
            copied.routes,
            copied.policies,
            from.describe(),
            to.describe()
        );
        println!(
            "keep noise.private_key_path (and the relay's key) with the new database: clients know the server by that key"
        );
        Ok(())
    })
}

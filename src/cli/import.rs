//! `headway import headscale`: a Headscale installation (its config, database and
//! key files) moved into headway's database and key files, so every client keeps
//! working with no new login. The source is only read.

use crate::config::{self, Config, Database, PolicyMode};
use crate::db::headscale::{HeadscaleDb, Schema};
use crate::db::{Db, Dump};
use crate::import::{Plan, PolicySource, Report};
use crate::types::PrivateKey;
use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

#[derive(Subcommand, Debug)]
pub enum ImportCommand {
    /// Import a Headscale installation (v0.23 to v0.29): users, nodes, routes,
    /// pre-auth and API keys, the policy and the server keys. Stop Headscale first;
    /// its database and files are only read.
    Headscale(HeadscaleArgs),
}

#[derive(Args, Debug)]
pub struct HeadscaleArgs {
    /// Headscale's config file. Default: where Headscale looks ($HEADSCALE_CONFIG,
    /// /etc/headscale/config.yaml, ~/.headscale/config.yaml, ./config.yaml).
    /// (-c/--config stays headway's own.)
    #[arg(long, value_name = "PATH")]
    pub from: Option<PathBuf>,
    /// The database to write: a SQLite path or a postgres:// URL. Default: the
    /// one headway's config names (database.*).
    #[arg(long, value_name = "DATABASE")]
    pub to: Option<String>,
    /// Say what would be imported, and what cannot be, and change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Import into a database that already holds rows (they are deleted first),
    /// and overwrite headway's key files where they differ from Headscale's.
    #[arg(long)]
    pub replace: bool,
}

/// Where Headscale looks for its config when neither a flag nor
/// `HEADSCALE_CONFIG` names one.
fn headscale_search_path(home: Option<&Path>) -> Vec<PathBuf> {
    let mut dirs = vec![PathBuf::from("/etc/headscale")];
    dirs.extend(home.map(|h| h.join(".headscale")));
    dirs.push(PathBuf::from("."));
    dirs.iter().map(|d| d.join("config.yaml")).collect()
}

/// Headscale's config, as Headscale finds it; only `HEADSCALE_*` variables apply.
fn headscale_config(from: Option<&Path>) -> anyhow::Result<(PathBuf, Config)> {
    let home = std::env::var_os("HOME").map(PathBuf::from);
    let candidates = headscale_search_path(home.as_deref());
    let path = match from {
        Some(path) => path.to_path_buf(),
        None => match std::env::var("HEADSCALE_CONFIG") {
            Ok(path) if !path.trim().is_empty() => PathBuf::from(path),
            _ => candidates.iter().find(|p| p.is_file()).cloned().with_context(|| {
                format!(
                    "no Headscale config found (looked at $HEADSCALE_CONFIG, {}): name it with --from",
                    candidates
                        .iter()
                        .map(|p| p.display().to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            })?,
        },
    };
    let env = |name: &str| {
        name.starts_with("HEADSCALE_")
            .then(|| std::env::var(name).ok())
            .flatten()
    };
    let loaded = config::load_with(Some(&path), &[], &env)
        .with_context(|| format!("Headscale's config {}", path.display()))?;
    Ok((path, loaded.config))
}

pub fn run(command: ImportCommand, config_flag: Option<&Path>) -> anyhow::Result<()> {
    let ImportCommand::Headscale(args) = command;
    let (source_path, source) = headscale_config(args.from.as_deref())?;
    let headway = config::load(config_flag)?;
    let target = match &args.to {
        Some(text) => Database::from_location(text).map_err(anyhow::Error::msg)?,
        None => headway.config.database.clone(),
    };
    if same_database(&target, &source.database) {
        bail!(
            "headway's database is Headscale's own ({}): headway keeps its own and never \
             writes Headscale's. Name a new one with --to (a SQLite path or a postgres:// URL) \
             and set database.* in headway's config to it",
            target.describe()
        );
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let hs = HeadscaleDb::open(&source.database)
            .await
            .with_context(|| format!("Headscale's database, from {}", source_path.display()))?;
        let schema = hs.schema().await?;
        let rows = hs.read().await?;
        hs.close().await;
        let (policy_file, unreadable) = policy_file(&source);
        let source_policy = match source.policy.mode {
            PolicyMode::Database => PolicySource::Database,
            PolicyMode::File => PolicySource::File(policy_file.as_deref()),
        };
        let mut plan = crate::import::plan(&rows, source_policy);
        plan.report.left_behind.extend(unreadable);
        let mut out = String::new();
        let running = headscale_running(&source);
        describe_source(&mut out, &source_path, &source, &schema, running);
        let policy = policy_outcome(&mut plan, &source, &headway.config);
        if headway.config.server_url != source.server_url {
            plan.report.changed.push(format!(
                "headway's server_url is {}, Headscale's {}: clients keep using {}, so serve that URL",
                headway.config.server_url, source.server_url, source.server_url
            ));
        }
        let keys = key_files(&source, &headway.config);
        describe(&mut out, &plan, &policy, &keys);
        let conflicts: Vec<&KeyFile> = keys
            .iter()
            .filter(|k| matches!(k.action, KeyAction::Differs(_)))
            .collect();

        let _ = writeln!(out, "into {}: {}", target.describe(), target_state(&target));
        print!("{out}");

        if args.dry_run {
            println!("dry run: nothing was written");
            return Ok(());
        }
        if running {
            bail!("Headscale is still running (its socket {} answers): stop it first, so no change is lost", source.unix_socket.display());
        }
        if let Some(error) = &plan.report.policy_error {
            bail!("the policy saved in Headscale's database does not parse in headway: {error}\nfix it in Headscale (`headscale policy set`) and import again");
        }
        if !conflicts.is_empty() && !args.replace {
            bail!(
                "{} already exist with other keys than Headscale's: clients would see another server; pass --replace to overwrite them",
                conflicts.iter().map(|k| k.to.display().to_string()).collect::<Vec<_>>().join(" and ")
            );
        }
        let db = Db::open(&target)
            .await
            .with_context(|| format!("the target {}", target.describe()))?;
        let present = db.count_rows().await?;
        if present > 0 && !args.replace {
            if db.dump().await? == plan.dump {
                copy_keys(&keys)?;
                println!(
                    "already imported: {} holds exactly these rows; nothing written",
                    target.describe()
                );
                return Ok(());
            }
            bail!(
                "{} is not empty ({present} rows) and differs from this import: import into an \
                 empty database, or pass --replace to delete its rows first",
                target.describe()
            );
        }
        let copied = db.restore(&plan.dump, args.replace).await?;
        copy_keys(&keys)?;
        println!(
            "imported {} users, {} nodes, {} routes, {} pre-auth keys, {} API keys and {} policies into {}",
            copied.users,
            copied.nodes,
            copied.routes,
            copied.pre_auth_keys,
            copied.api_keys,
            copied.policies,
            target.describe()
        );
        println!(
            "next: start headway on Headscale's server_url ({}); clients reconnect by themselves",
            source.server_url
        );
        Ok(())
    })
}

/// Whether two locations are one database: the same SQLite file (however the path
/// is spelled) or the same PostgreSQL server and database.
fn same_database(a: &Database, b: &Database) -> bool {
    match (a, b) {
        (Database::Sqlite { path: a, .. }, Database::Sqlite { path: b, .. }) => {
            let canonical = |p: &Path| std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf());
            canonical(a) == canonical(b)
        }
        (Database::Postgres(a), Database::Postgres(b)) => {
            (&a.host, a.port, &a.name) == (&b.host, b.port, &b.name)
        }
        _ => false,
    }
}

/// Whether Headscale's admin socket answers: a running Headscale may still write.
fn headscale_running(source: &Config) -> bool {
    std::os::unix::net::UnixStream::connect(&source.unix_socket).is_ok()
}

fn describe_source(out: &mut String, path: &Path, source: &Config, schema: &Schema, running: bool) {
    let _ = writeln!(
        out,
        "Headscale {} database ({}, layout {}, {} migrations), from {}, read-only",
        schema.written_by.as_deref().unwrap_or(schema.layout),
        source.database.describe(),
        schema.layout,
        schema.migrations,
        path.display()
    );
    if running {
        let _ = writeln!(
            out,
            "Headscale is still running ({} answers): stop it before the real import",
            source.unix_socket.display()
        );
    }
}

/// What becomes of the policy: the saved one (database mode), or the file both
/// configs must name.
fn policy_outcome(plan: &mut Plan, source: &Config, headway: &Config) -> String {
    match source.policy.mode {
        PolicyMode::Database => {
            let line = match (plan.dump.policies.first(), &plan.report.policy_error) {
                (None, _) => "none saved (every node may reach every other)".to_owned(),
                (Some(_), None) => "the saved policy, which headway parses".to_owned(),
                (Some(_), Some(e)) => format!("the saved policy DOES NOT PARSE in headway: {e}"),
            };
            if headway.policy.mode != PolicyMode::Database {
                plan.report.changed.push(
                    "Headscale keeps its policy in the database (policy.mode: database); set the same in headway's config, or it reads policy.path".into(),
                );
            }
            format!("database mode: {line}")
        }
        PolicyMode::File => {
            let path = source.policy.path.as_ref();
            if headway.policy != source.policy {
                plan.report.changed.push(format!(
                    "headway's config must name the same policy: policy.mode: file, policy.path: {}",
                    path.map(|p| p.display().to_string()).unwrap_or_default()
                ));
            }
            format!(
                "file mode: {}",
                path.map(|p| p.display().to_string())
                    .unwrap_or_else(|| "no file (every node may reach every other)".into())
            )
        }
    }
}

/// The text of Headscale's policy file in file mode, or why it cannot be read.
fn policy_file(source: &Config) -> (Option<String>, Option<String>) {
    match (&source.policy.mode, &source.policy.path) {
        (PolicyMode::File, Some(path)) => match std::fs::read_to_string(path) {
            Ok(text) => (Some(text), None),
            Err(e) => (
                None,
                Some(format!(
                    "Headscale's policy file {} cannot be read: {e}",
                    path.display()
                )),
            ),
        },
        _ => (None, None),
    }
}

/// A key file of Headscale's and where headway reads the same key.
struct KeyFile {
    what: &'static str,
    from: PathBuf,
    to: PathBuf,
    action: KeyAction,
}

enum KeyAction {
    /// Both configs name the same file.
    Same,
    /// headway's file holds the same key already.
    Present,
    /// headway has no file there: copy it.
    Copy(PrivateKey),
    /// headway's file holds another key (Headscale's is kept here).
    Differs(PrivateKey),
    /// Headscale has no such file (or it does not parse): nothing to carry.
    Missing(String),
}

/// The Noise key, and the relay's key when Headscale ran its embedded relay.
fn key_files(source: &Config, headway: &Config) -> Vec<KeyFile> {
    let mut files = vec![(
        "Noise key",
        &source.noise_private_key_path,
        &headway.noise_private_key_path,
    )];
    if source.derp.server.enabled {
        files.push((
            "relay key",
            &source.derp.server.private_key_path,
            &headway.derp.server.private_key_path,
        ));
    }
    files
        .into_iter()
        .map(|(what, from, to)| {
            let read = |p: &Path| -> Result<PrivateKey, String> {
                std::fs::read_to_string(p)
                    .map_err(|e| e.to_string())?
                    .parse::<PrivateKey>()
                    .map_err(|e| e.to_string())
            };
            let action = match read(from) {
                _ if from == to => KeyAction::Same,
                Err(e) => KeyAction::Missing(e),
                Ok(key) => match read(to) {
                    Ok(theirs) if theirs.to_text() == key.to_text() => KeyAction::Present,
                    Ok(_) => KeyAction::Differs(key),
                    Err(_) if to.exists() => KeyAction::Differs(key),
                    Err(_) => KeyAction::Copy(key),
                },
            };
            KeyFile {
                what,
                from: from.clone(),
                to: to.clone(),
                action,
            }
        })
        .collect()
}

/// Writes the keys headway does not have yet (mode 0600), overwriting a
/// different one (only reached with `--replace`).
fn copy_keys(keys: &[KeyFile]) -> anyhow::Result<()> {
    for k in keys {
        if let KeyAction::Copy(key) | KeyAction::Differs(key) = &k.action {
            crate::server::write_private_key(&k.to, key, true)?;
        }
    }
    Ok(())
}

fn describe(out: &mut String, plan: &Plan, policy: &str, keys: &[KeyFile]) {
    let Dump {
        users,
        pre_auth_keys,
        api_keys,
        nodes,
        routes,
        ..
    } = &plan.dump;
    let tagged = nodes.iter().filter(|n| n.is_tagged()).count();
    let ephemeral = nodes.iter().filter(|n| n.ephemeral).count();
    let approved = routes.iter().filter(|r| r.approved).count();
    let _ = writeln!(out, "  users            {}", users.len());
    let _ = writeln!(
        out,
        "  nodes            {} ({tagged} tagged, {ephemeral} ephemeral)",
        nodes.len()
    );
    let _ = writeln!(
        out,
        "  routes           {} ({approved} approved)",
        routes.len()
    );
    let _ = writeln!(out, "  pre-auth keys    {}", pre_auth_keys.len());
    let _ = writeln!(out, "  API keys         {}", api_keys.len());
    let _ = writeln!(out, "  policy           {policy}");
    for k in keys {
        let what = match &k.action {
            KeyAction::Same => format!("{} (the same file headway reads)", k.from.display()),
            KeyAction::Present => {
                format!("{} → {}: already there", k.from.display(), k.to.display())
            }
            KeyAction::Copy(_) => format!("{} → {}: to copy", k.from.display(), k.to.display()),
            KeyAction::Differs(_) => format!(
                "{} → {}: headway's file holds ANOTHER key (--replace overwrites it)",
                k.from.display(),
                k.to.display()
            ),
            KeyAction::Missing(why) => format!("{}: not carried ({why})", k.from.display()),
        };
        let _ = writeln!(out, "  {:<16} {what}", k.what);
    }
    let Report {
        changed,
        left_behind,
        deleted_skipped,
        ..
    } = &plan.report;
    if *deleted_skipped > 0 {
        let _ = writeln!(
            out,
            "  ({deleted_skipped} rows Headscale had deleted are left out)"
        );
    }
    if !changed.is_empty() {
        let _ = writeln!(out, "changed on the way:");
        for line in changed {
            let _ = writeln!(out, "  - {line}");
        }
    }
    let _ = writeln!(
        out,
        "cannot be carried over: {}",
        if left_behind.is_empty() {
            "nothing"
        } else {
            ""
        }
    );
    for line in left_behind {
        let _ = writeln!(out, "  - {line}");
    }
}

/// What the target is, said without opening it (opening migrates it).
fn target_state(target: &Database) -> &'static str {
    match target {
        Database::Sqlite { path, .. } if !path.exists() => "a new database",
        _ => "an existing database (the import checks it is empty)",
    }
}

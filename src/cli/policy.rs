//! `policy get|set|check`: the ACL policy, always through the server
//! (the server answers UNIMPLEMENTED where it has no policy store yet).

use super::{Bypass, Ctx, PolicyCommand, rpc};
use crate::grpc::pb;
use std::path::{Path, PathBuf};

/// `policy-conformance DIR...`.
#[derive(clap::Args, Debug)]
pub struct ConformanceArgs {
    /// Folders (or files) of recorded cases.
    #[arg(required = true)]
    pub dirs: Vec<PathBuf>,
    /// Print every difference, not only the first of each case.
    #[arg(long)]
    pub verbose: bool,
    /// A file naming cases known to differ (one `case-id  reason` per line, `#`
    /// comments): those must differ, every other case must match.
    #[arg(long, value_name = "FILE")]
    pub expect_differences: Option<PathBuf>,
}

/// Runs every case, prints one line per mismatching case, then `N/M cases
/// match`; fails unless all match.
pub fn conformance(args: &ConformanceArgs) -> anyhow::Result<()> {
    let files = crate::conformance::case_files(&args.dirs)?;
    if files.is_empty() {
        anyhow::bail!("no case files (*.json) under {:?}", args.dirs);
    }
    let expected: std::collections::BTreeMap<String, String> = match &args.expect_differences {
        None => Default::default(),
        Some(path) => std::fs::read_to_string(path)
            .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .map(|l| match l.split_once(char::is_whitespace) {
                Some((id, why)) => (id.to_owned(), why.trim().to_owned()),
                None => (l.to_owned(), String::new()),
            })
            .collect(),
    };
    let mut matched = 0;
    let mut differing = Vec::new();
    for file in &files {
        let outcome = crate::conformance::run_file(file);
        if outcome.differences.is_empty() {
            matched += 1;
            continue;
        }
        differing.push(outcome.id.clone());
        let shown = if args.verbose {
            outcome.differences.len()
        } else {
            1
        };
        let more = outcome.differences.len() - shown;
        for d in &outcome.differences[..shown] {
            // One line per difference, even for messages of several lines.
            println!(
                "{}: {}",
                outcome.id,
                d.replace("\n\t", "; ").replace('\n', " ")
            );
        }
        if more > 0 {
            println!("{}: … and {more} more (--verbose shows them)", outcome.id);
        }
    }
    println!("{matched}/{} cases match", files.len());
    if args.expect_differences.is_none() {
        if matched != files.len() {
            anyhow::bail!("{} cases do not match", files.len() - matched);
        }
        return Ok(());
    }
    let ran: std::collections::BTreeSet<&String> = differing.iter().collect();
    let unexpected: Vec<&String> = differing
        .iter()
        .filter(|id| !expected.contains_key(*id))
        .collect();
    let now_matching: Vec<&String> = expected
        .keys()
        .filter(|id| {
            !ran.contains(id)
                && files
                    .iter()
                    .any(|f| f.file_stem().is_some_and(|s| s == id.as_str()))
        })
        .collect();
    println!(
        "{} differ as listed in {}",
        differing.len() - unexpected.len(),
        args.expect_differences
            .as_ref()
            .map_or(String::new(), |p| p.display().to_string())
    );
    if !unexpected.is_empty() || !now_matching.is_empty() {
        anyhow::bail!(
            "unexpected differences in {unexpected:?}; listed cases that now match (remove them from the list): {now_matching:?}"
        );
    }
    Ok(())
}

pub async fn run(command: PolicyCommand, ctx: &mut Ctx) -> anyhow::Result<()> {
    match command {
        PolicyCommand::Get(bypass) => {
            refuse_bypass(&bypass, ctx)?;
            let policy = rpc(ctx.client.get_policy(pb::GetPolicyRequest {}).await)?.policy;
            ctx.line(&policy);
        }
        PolicyCommand::Set { file, bypass } => {
            refuse_bypass(&bypass, ctx)?;
            let policy = read(&file)?;
            rpc(ctx.client.set_policy(pb::SetPolicyRequest { policy }).await)?;
            ctx.line("Policy updated.");
        }
        PolicyCommand::Check { file, bypass } => {
            refuse_bypass(&bypass, ctx)?;
            let policy = read(&file)?;
            rpc(ctx
                .client
                .check_policy(pb::CheckPolicyRequest { policy })
                .await)?;
            ctx.line("Policy is valid");
        }
    }
    Ok(())
}

fn read(file: &Path) -> anyhow::Result<String> {
    std::fs::read_to_string(file)
        .map_err(|e| anyhow::anyhow!("cannot read policy file {}: {e}", file.display()))
}

fn refuse_bypass(bypass: &Bypass, ctx: &Ctx) -> anyhow::Result<()> {
    if bypass.bypass {
        anyhow::bail!(
            "headway's CLI always goes through the server and never opens the database; start it with \"{} serve\"",
            ctx.prog
        );
    }
    Ok(())
}

//! `policy get|set|check`: the ACL policy, always through the server
//! (the server answers UNIMPLEMENTED where it has no policy store yet).

use super::{Bypass, Ctx, PolicyCommand, rpc};
use crate::grpc::pb;
use std::path::Path;

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

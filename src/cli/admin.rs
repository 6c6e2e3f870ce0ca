//! `admin …`: the web UI's one-time sign-in links.

use super::output::Value;
use super::{AdminCommand, Ctx, rpc};
use crate::grpc::headway::pb;

pub async fn run(command: AdminCommand, ctx: &mut Ctx) -> anyhow::Result<()> {
    match command {
        AdminCommand::LoginLink { expiration } => {
            let lifetime = crate::types::duration::parse(&expiration)?;
            let valid_seconds = u32::try_from(lifetime.as_secs())
                .ok()
                .filter(|s| *s > 0)
                .ok_or_else(|| anyhow::anyhow!("--expiration {expiration:?} must be 1s to 1h"))?;
            let answer = rpc(ctx
                .headway
                .create_login_link(pb::CreateLoginLinkRequest { valid_seconds })
                .await)?;
            let expires = answer
                .expiration
                .as_ref()
                .and_then(super::output::to_datetime)
                .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
                .unwrap_or_default();
            let url = answer.url;
            ctx.print(
                || {
                    Value::Obj(vec![
                        ("url", Value::Str(url.clone())),
                        ("expiration", Value::Str(expires.clone())),
                    ])
                },
                || format!("{url}\nOpen it in a browser to sign in to the web UI; it works once, until {expires}."),
            );
        }
    }
    Ok(())
}

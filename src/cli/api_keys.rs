//! `apikeys …`: keys for remote CLI and API access (`cli.api_key`).

use super::output::{self, Value};
use super::{ApiKeySelector, ApikeysCommand, Ctx, rpc};
use crate::grpc::pb;

pub async fn run(command: ApikeysCommand, ctx: &mut Ctx) -> anyhow::Result<()> {
    match command {
        ApikeysCommand::Create { expiration } => {
            let request = pb::CreateApiKeyRequest {
                expiration: Some(output::expires_in(&expiration)?),
            };
            let key = rpc(ctx.client.create_api_key(request).await)?.api_key;
            // Headscale marshals the bare string: `"hskey-api-…"` in JSON.
            ctx.print(|| Value::Str(key.clone()), || key.clone());
        }
        ApikeysCommand::List => {
            let keys = rpc(ctx.client.list_api_keys(pb::ListApiKeysRequest {}).await)?.api_keys;
            ctx.print(
                || output::list(&keys, output::api_key),
                || output::api_keys_table(&keys),
            );
        }
        ApikeysCommand::Expire(select) => {
            let (id, prefix) = one_of(select)?;
            rpc(ctx
                .client
                .expire_api_key(pb::ExpireApiKeyRequest { prefix, id })
                .await)?;
            ctx.done("Key expired");
        }
        ApikeysCommand::Delete(select) => {
            let (id, prefix) = one_of(select)?;
            rpc(ctx
                .client
                .delete_api_key(pb::DeleteApiKeyRequest { prefix, id })
                .await)?;
            ctx.done("Key deleted");
        }
    }
    Ok(())
}

/// Exactly one of `--id` and `--prefix`.
fn one_of(select: ApiKeySelector) -> anyhow::Result<(u64, String)> {
    match (select.id, select.prefix.filter(|p| !p.is_empty())) {
        (Some(id), None) => Ok((id, String::new())),
        (None, Some(prefix)) => Ok((0, prefix)),
        (None, None) => anyhow::bail!("either --id or --prefix must be given"),
        (Some(_), Some(_)) => anyhow::bail!("give only one of --id and --prefix"),
    }
}

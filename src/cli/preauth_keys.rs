//! `preauthkeys …`: keys that let `tailscale up --authkey` join without an admin step.

use super::output;
use super::{Ctx, PreauthkeysCommand, non_empty, rpc, users};
use crate::grpc::pb;
use crate::types::secret::{PrefixedSecret, Presented};

pub async fn run(command: PreauthkeysCommand, ctx: &mut Ctx) -> anyhow::Result<()> {
    match command {
        PreauthkeysCommand::Create {
            user,
            reusable,
            ephemeral,
            expiration,
            tags,
        } => {
            let tags = non_empty(tags);
            let user = match user {
                Some(text) => users::resolve(ctx, &text).await?.id,
                None if !tags.is_empty() => 0,
                None => anyhow::bail!(
                    "preauthkeys create needs --user USER (a name or an id) or --tags tag:…"
                ),
            };
            let request = pb::CreatePreAuthKeyRequest {
                user,
                reusable,
                ephemeral,
                expiration: Some(output::expires_in(&expiration)?),
                acl_tags: tags,
            };
            let key = rpc(ctx.client.create_pre_auth_key(request).await)?
                .pre_auth_key
                .ok_or_else(|| anyhow::anyhow!("the server created a key but did not return it"))?;
            ctx.print(|| output::preauth_key(&key), || key.key.clone());
        }
        PreauthkeysCommand::List { user } => {
            let mut keys = list(ctx).await?;
            if let Some(text) = user {
                let owner = users::resolve(ctx, &text).await?;
                keys.retain(|k| k.user.as_ref().is_some_and(|u| u.id == owner.id));
            }
            ctx.print(
                || output::list(&keys, output::preauth_key),
                || output::preauth_keys_table(&keys),
            );
        }
        PreauthkeysCommand::Expire { id, key, user } => {
            let id = match (id, key) {
                (Some(id), _) => id,
                (None, Some(key)) => {
                    let owner = match user {
                        Some(text) => Some(users::resolve(ctx, &text).await?.id),
                        None => None,
                    };
                    let keys = list(ctx).await?;
                    find_by_key(&keys, &key, owner).ok_or_else(|| {
                        anyhow::anyhow!(
                            "no pre-auth key matches {key:?} ({} preauthkeys list shows the keys; expire one with --id)",
                            ctx.prog
                        )
                    })?
                }
                (None, None) => anyhow::bail!("preauthkeys expire needs --id ID"),
            };
            rpc(ctx
                .client
                .expire_pre_auth_key(pb::ExpirePreAuthKeyRequest { id })
                .await)?;
            ctx.done("Key expired");
        }
        PreauthkeysCommand::Delete { id } => {
            rpc(ctx
                .client
                .delete_pre_auth_key(pb::DeletePreAuthKeyRequest { id })
                .await)?;
            ctx.done("Key deleted");
        }
    }
    Ok(())
}

async fn list(ctx: &mut Ctx) -> anyhow::Result<Vec<pb::PreAuthKey>> {
    Ok(rpc(ctx
        .client
        .list_pre_auth_keys(pb::ListPreAuthKeysRequest {})
        .await)?
    .pre_auth_keys)
}

/// The id of the key a full `hskey-auth-<prefix>-<secret>` (or an old plain key) names.
/// Listings only show `hskey-auth-<prefix>-***` (an imported plain key: its first
/// characters and `***`), so keys match by prefix, or by the whole text shown.
fn find_by_key(keys: &[pb::PreAuthKey], typed: &str, owner: Option<u64>) -> Option<u64> {
    let typed = typed.trim();
    let wanted =
        Presented::auth_key(typed).map(|s| PrefixedSecret::masked(PrefixedSecret::AUTH, &s.prefix));
    keys.iter()
        .filter(|k| owner.is_none_or(|id| k.user.as_ref().is_some_and(|u| u.id == id)))
        .find(|k| k.key == typed || wanted.as_ref().is_some_and(|masked| &k.key == masked))
        .map(|k| k.id)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(id: u64, shown: &str, user: u64) -> pb::PreAuthKey {
        pb::PreAuthKey {
            id,
            key: shown.into(),
            user: Some(pb::User {
                id: user,
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn full_key_is_found_by_its_prefix() {
        let keys = [
            key(1, "hskey-auth-AAAAAAAAAAAA-***", 1),
            key(2, "hskey-auth-BBBBBBBBBBBB-***", 2),
            key(3, "0123456789abcdef0123456789abcdef0123456789abcdef", 1),
            key(4, "fedcba9876543210***", 2),
        ];
        let full = format!("hskey-auth-BBBBBBBBBBBB-{}", "s".repeat(64));
        assert_eq!(find_by_key(&keys, &full, None), Some(2));
        assert_eq!(find_by_key(&keys, &full, Some(2)), Some(2));
        assert_eq!(find_by_key(&keys, &full, Some(1)), None);
        assert_eq!(
            find_by_key(
                &keys,
                "0123456789abcdef0123456789abcdef0123456789abcdef",
                None
            ),
            Some(3)
        );
        // A plain key imported from Headscale, listed by its first characters.
        assert_eq!(
            find_by_key(
                &keys,
                "fedcba98765432100123456789abcdef0123456789abcdef",
                None
            ),
            Some(4)
        );
        assert_eq!(find_by_key(&keys, "nope", None), None);
    }
}

//! `users …` (formerly `namespaces …`), and turning a `--user` argument into a user.

use super::output::{self, Obj};
use super::{Ctx, UserSelector, UsersCommand, rpc};
use crate::grpc::pb;

pub async fn run(command: UsersCommand, ctx: &mut Ctx) -> anyhow::Result<()> {
    match command {
        UsersCommand::Create {
            name,
            display_name,
            email,
            picture_url,
        } => {
            let request = pb::CreateUserRequest {
                name,
                display_name: display_name.unwrap_or_default(),
                email: email.unwrap_or_default(),
                picture_url: picture_url.unwrap_or_default(),
            };
            let user = rpc(ctx.client.create_user(request).await)?.user;
            ctx.print(
                || {
                    user.as_ref()
                        .map(output::user)
                        .unwrap_or(Obj::new().build())
                },
                || "User created".to_owned(),
            );
        }
        UsersCommand::List { select, email } => {
            // Headscale filters by one field at most: id, then name, then email.
            let request = match (select.id, select.name, email) {
                (Some(id), _, _) => pb::ListUsersRequest {
                    id,
                    ..Default::default()
                },
                (None, Some(name), _) => pb::ListUsersRequest {
                    name,
                    ..Default::default()
                },
                (None, None, email) => pb::ListUsersRequest {
                    email: email.unwrap_or_default(),
                    ..Default::default()
                },
            };
            let users = rpc(ctx.client.list_users(request).await)?.users;
            ctx.print(
                || output::list(&users, output::user),
                || output::users_table(&users),
            );
        }
        UsersCommand::Rename { select, new_name } => {
            let user = select_one(ctx, &select).await?;
            let request = pb::RenameUserRequest {
                old_id: user.id,
                new_name,
            };
            let renamed = rpc(ctx.client.rename_user(request).await)?.user;
            ctx.print(
                || {
                    renamed
                        .as_ref()
                        .map(output::user)
                        .unwrap_or(Obj::new().build())
                },
                || "User renamed".to_owned(),
            );
        }
        UsersCommand::Destroy { select } => {
            let user = select_one(ctx, &select).await?;
            rpc(ctx
                .client
                .delete_user(pb::DeleteUserRequest { id: user.id })
                .await)?;
            ctx.done("User destroyed");
        }
    }
    Ok(())
}

/// The one user `-i` / `-n` name.
async fn select_one(ctx: &mut Ctx, select: &UserSelector) -> anyhow::Result<pb::User> {
    let shown = match (select.id, &select.name) {
        (Some(id), _) => id.to_string(),
        (None, Some(name)) => name.clone(),
        (None, None) => anyhow::bail!("--name or --identifier is required"),
    };
    let request = pb::ListUsersRequest {
        id: select.id.unwrap_or(0),
        name: select.name.clone().unwrap_or_default(),
        email: String::new(),
    };
    let mut users = rpc(ctx.client.list_users(request).await)?.users;
    users.retain(|u| {
        select.id.is_none_or(|id| u.id == id) && select.name.as_ref().is_none_or(|n| &u.name == n)
    });
    match users.len() {
        0 => Err(not_found(&shown, &ctx.prog)),
        1 => Ok(users.remove(0)),
        _ => anyhow::bail!("several users match {shown:?}: name one by its id with -i"),
    }
}

/// Resolves `--user` as Headscale guides write it: a number is an id, anything else
/// an exact name. A numeric text that is no user's id may still be a user's name.
pub async fn resolve(ctx: &mut Ctx, text: &str) -> anyhow::Result<pb::User> {
    let users = rpc(ctx.client.list_users(pb::ListUsersRequest::default()).await)?.users;
    pick(&users, text).ok_or_else(|| not_found(text, &ctx.prog))
}

fn pick(users: &[pb::User], text: &str) -> Option<pb::User> {
    let by_id = text
        .parse::<u64>()
        .ok()
        .and_then(|id| users.iter().find(|u| u.id == id));
    by_id
        .or_else(|| users.iter().find(|u| u.name == text))
        .cloned()
}

fn not_found(text: &str, prog: &str) -> anyhow::Error {
    anyhow::anyhow!("user {text:?} not found ({prog} users list shows the users)")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(id: u64, name: &str) -> pb::User {
        pb::User {
            id,
            name: name.into(),
            ..Default::default()
        }
    }

    #[test]
    fn user_argument_is_an_id_or_a_name() {
        let users = [user(1, "default"), user(2, "42"), user(3, "bob")];
        assert_eq!(pick(&users, "1").unwrap().name, "default");
        assert_eq!(pick(&users, "bob").unwrap().id, 3);
        assert_eq!(pick(&users, "42").unwrap().id, 2);
        assert!(pick(&users, "alice").is_none());
        assert!(pick(&users, "Bob").is_none());
    }

    #[test]
    fn unknown_user_message_points_at_users_list() {
        assert_eq!(
            not_found("bob", "headway").to_string(),
            "user \"bob\" not found (headway users list shows the users)"
        );
    }
}

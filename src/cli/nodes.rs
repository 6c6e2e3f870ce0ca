//! `nodes …` and `auth …`: listing, registering, expiring, renaming, tagging nodes,
//! and approving their routes.

use super::output::{self, Obj};
use super::{AuthCommand, Ctx, MoveArgs, NodesCommand, non_empty, rpc, users};
use crate::grpc::pb;

pub async fn run(command: NodesCommand, ctx: &mut Ctx) -> anyhow::Result<()> {
    match command {
        NodesCommand::List { user } => {
            let user = match user {
                Some(text) => users::resolve(ctx, &text).await?.name,
                None => String::new(),
            };
            let nodes = rpc(ctx.client.list_nodes(pb::ListNodesRequest { user }).await)?.nodes;
            ctx.print(
                || output::list(&nodes, output::node),
                || output::nodes_table(&nodes, chrono::Utc::now()),
            );
        }
        NodesCommand::Register { user, key } => {
            // The server resolves the key as typed: a registration id, nodekey:… or mkey:….
            let user = users::resolve(ctx, &user).await?.name;
            let node = rpc(ctx
                .client
                .register_node(pb::RegisterNodeRequest { user, key })
                .await)?
            .node;
            print_registered(ctx, node.as_ref());
        }
        NodesCommand::Delete { node } => {
            rpc(ctx
                .client
                .delete_node(pb::DeleteNodeRequest { node_id: node.id })
                .await)?;
            // Headscale answers `{"Result": "Node deleted"}` here, not `{}`.
            ctx.print(
                || Obj::new().str("Result", "Node deleted").build(),
                || "Node deleted".to_owned(),
            );
        }
        NodesCommand::Expire {
            node,
            expiry,
            disable,
        } => {
            let now = chrono::Utc::now();
            let at = match expiry.as_deref().filter(|e| !e.is_empty()) {
                Some(text) => chrono::DateTime::parse_from_rfc3339(text)
                    .map_err(|e| {
                        anyhow::anyhow!(
                            "invalid --expiry {text:?}: {e}; use RFC 3339, e.g. 2025-08-27T10:00:00Z"
                        )
                    })?
                    .to_utc(),
                None => now,
            };
            let request = pb::ExpireNodeRequest {
                node_id: node.id,
                expiry: (!disable).then(|| output::from_datetime(at)),
                disable_expiry: disable,
            };
            let node = rpc(ctx.client.expire_node(request).await)?.node;
            let message = if disable {
                "Node expiry disabled"
            } else if at <= now {
                "Node expired"
            } else {
                "Node expiration updated"
            };
            print_node(ctx, node.as_ref(), message);
        }
        NodesCommand::Rename { node, new_name } => {
            let request = pb::RenameNodeRequest {
                node_id: node.id,
                new_name,
            };
            let node = rpc(ctx.client.rename_node(request).await)?.node;
            print_node(ctx, node.as_ref(), "Node renamed");
        }
        NodesCommand::Tag { node, tags } => {
            let request = pb::SetTagsRequest {
                node_id: node.id,
                tags: non_empty(tags),
            };
            let node = rpc(ctx.client.set_tags(request).await)?.node;
            print_node(ctx, node.as_ref(), "Node updated");
        }
        NodesCommand::ListRoutes { id } => {
            let mut nodes =
                rpc(ctx.client.list_nodes(pb::ListNodesRequest::default()).await)?.nodes;
            if let Some(id) = id {
                nodes.retain(|n| n.id == id);
            }
            nodes.retain(|n| {
                !(n.approved_routes.is_empty()
                    && n.available_routes.is_empty()
                    && n.subnet_routes.is_empty())
            });
            ctx.print(
                || output::list(&nodes, output::node),
                || output::node_routes_table(&nodes),
            );
        }
        NodesCommand::ApproveRoutes { node, routes } => {
            let node = set_approved_routes(ctx, node.id, non_empty(routes)).await?;
            print_node(ctx, node.as_ref(), "Node updated");
        }
        NodesCommand::Backfillips => {
            let changes = rpc(ctx
                .client
                .backfill_node_i_ps(pb::BackfillNodeIPsRequest { confirmed: true })
                .await)?
            .changes;
            ctx.print(
                || Obj::new().strs("changes", &changes).build(),
                || {
                    changes
                        .iter()
                        .map(String::as_str)
                        .chain(["Node IPs backfilled successfully"])
                        .collect::<Vec<_>>()
                        .join("\n")
                },
            );
        }
        NodesCommand::Move(args) => moved(&args, &ctx.prog)?,
    }
    Ok(())
}

pub async fn auth(command: AuthCommand, ctx: &mut Ctx) -> anyhow::Result<()> {
    match command {
        AuthCommand::Register { auth_id, user } => {
            let user = users::resolve(ctx, &user).await?.name;
            let node = rpc(ctx
                .client
                .auth_register(pb::AuthRegisterRequest { user, auth_id })
                .await)?
            .node;
            print_registered(ctx, node.as_ref());
        }
        AuthCommand::Approve { auth_id } => {
            rpc(ctx
                .client
                .auth_approve(pb::AuthApproveRequest { auth_id })
                .await)?;
            ctx.done("Auth request approved");
        }
        AuthCommand::Reject { auth_id } => {
            rpc(ctx
                .client
                .auth_reject(pb::AuthRejectRequest { auth_id })
                .await)?;
            ctx.done("Auth request rejected");
        }
    }
    Ok(())
}

/// `nodes move` existed until Headscale 0.27; say so instead of "unknown command".
pub fn moved(args: &MoveArgs, prog: &str) -> anyhow::Result<()> {
    let id = args
        .id
        .map_or_else(|| "<id>".to_owned(), |id| id.to_string());
    anyhow::bail!(
        "\"nodes move\" was removed in Headscale 0.28: a node's owner cannot change any more. \
         Register the node again as the other user, or make it a tagged node with \
         \"{prog} nodes tag -i {id} -t tag:<name>\""
    )
}

pub(super) async fn set_approved_routes(
    ctx: &mut Ctx,
    node_id: u64,
    routes: Vec<String>,
) -> anyhow::Result<Option<pb::Node>> {
    let request = pb::SetApprovedRoutesRequest { node_id, routes };
    Ok(rpc(ctx.client.set_approved_routes(request).await)?.node)
}

pub(super) async fn get_node(ctx: &mut Ctx, node_id: u64) -> anyhow::Result<pb::Node> {
    rpc(ctx.client.get_node(pb::GetNodeRequest { node_id }).await)?
        .node
        .ok_or_else(|| anyhow::anyhow!("node {node_id} not found"))
}

fn print_node(ctx: &mut Ctx, node: Option<&pb::Node>, message: &str) {
    ctx.print(
        || node.map_or_else(|| Obj::new().build(), output::node),
        || message.to_owned(),
    );
}

fn print_registered(ctx: &mut Ctx, node: Option<&pb::Node>) {
    let name = node.map(|n| n.given_name.as_str()).unwrap_or_default();
    print_node(ctx, node, &format!("Node {name} registered"));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn move_explains_its_removal() {
        let args = MoveArgs {
            id: Some(3),
            user: Some("bob".into()),
        };
        let text = moved(&args, "headway").unwrap_err().to_string();
        assert!(text.contains("removed in Headscale 0.28"), "{text}");
        assert!(text.contains("headway nodes tag -i 3"), "{text}");
    }
}

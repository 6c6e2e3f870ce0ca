//! `routes …`, removed from Headscale in 0.26 but still in guides, in both of its past
//! meanings: ≤0.17 took a node (`-i`) and prefixes (`-r CIDR`, or `-a` for all), and
//! 0.18–0.25 took route ids (`-r 1`). Prefix forms become today's approved routes;
//! route ids go to the legacy route RPCs.

use super::compat::{RouteArgs, classify_routes};
use super::nodes::{get_node, set_approved_routes};
use super::output;
use super::{Ctx, RouteChange, RoutesCommand, rpc};
use crate::grpc::pb;

pub async fn run(command: RoutesCommand, ctx: &mut Ctx) -> anyhow::Result<()> {
    match command {
        RoutesCommand::List { node } => {
            let routes = match node {
                Some(node_id) => {
                    rpc(ctx
                        .client
                        .get_node_routes(pb::GetNodeRoutesRequest { node_id })
                        .await)?
                    .routes
                }
                None => rpc(ctx.client.get_routes(pb::GetRoutesRequest {}).await)?.routes,
            };
            ctx.print(
                || output::list(&routes, output::route),
                || output::routes_table(&routes),
            );
        }
        RoutesCommand::Enable(change) => apply(ctx, change, true).await?,
        RoutesCommand::Disable(change) => apply(ctx, change, false).await?,
        RoutesCommand::Delete { route } => {
            rpc(ctx
                .client
                .delete_route(pb::DeleteRouteRequest { route_id: route })
                .await)?;
            ctx.done(&format!("Route {route} deleted"));
        }
    }
    Ok(())
}

async fn apply(ctx: &mut Ctx, change: RouteChange, enable: bool) -> anyhow::Result<()> {
    let verb = if enable { "enable" } else { "disable" };
    let plan = if change.all {
        None
    } else {
        Some(classify_routes(&change.routes).map_err(anyhow::Error::msg)?)
    };
    match plan {
        Some(RouteArgs::Ids(ids)) => {
            for route_id in ids {
                if enable {
                    rpc(ctx
                        .client
                        .enable_route(pb::EnableRouteRequest { route_id })
                        .await)?;
                } else {
                    rpc(ctx
                        .client
                        .disable_route(pb::DisableRouteRequest { route_id })
                        .await)?;
                }
                ctx.done(&format!("Route {route_id} {verb}d"));
            }
            Ok(())
        }
        Some(RouteArgs::Prefixes(prefixes)) if prefixes.is_empty() => anyhow::bail!(
            "routes {verb} needs -r: route ids (see \"{prog} routes list\"), or -i NODE with prefixes or -a",
            prog = ctx.prog
        ),
        prefixes => {
            let Some(node_id) = change.node else {
                anyhow::bail!(
                    "routes {verb} with prefixes or -a needs the node: add -i NODE_ID (see \"{} nodes list\")",
                    ctx.prog
                );
            };
            let node = get_node(ctx, node_id).await?;
            let given = match prefixes {
                Some(RouteArgs::Prefixes(prefixes)) => prefixes,
                // -a: everything the node announces, or everything approved when disabling.
                _ if enable => node.available_routes.clone(),
                _ => node.approved_routes.clone(),
            };
            let approved = merge(&node.approved_routes, &given, enable);
            let node = set_approved_routes(ctx, node_id, approved).await?;
            let shown = node.as_ref().map(|n| n.approved_routes.join(", "));
            ctx.print(
                || {
                    node.as_ref()
                        .map_or_else(|| output::Obj::new().build(), output::node)
                },
                || match shown.as_deref() {
                    Some("") | None => format!("Node {node_id} has no approved routes now"),
                    Some(list) => format!("Approved routes of node {node_id}: {list}"),
                },
            );
            Ok(())
        }
    }
}

/// Approved routes after adding (`enable`) or removing `given`, order kept, no duplicates.
fn merge(approved: &[String], given: &[String], enable: bool) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let keep = approved
        .iter()
        .filter(|r| enable || !given.contains(r))
        .chain(given.iter().filter(|_| enable));
    for route in keep {
        if !out.contains(route) {
            out.push(route.clone());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn enabling_adds_to_what_is_approved() {
        assert_eq!(
            merge(
                &v(&["10.0.0.0/8"]),
                &v(&["192.168.100.0/24", "10.0.0.0/8"]),
                true
            ),
            v(&["10.0.0.0/8", "192.168.100.0/24"])
        );
    }

    #[test]
    fn disabling_removes_only_the_given_prefixes() {
        assert_eq!(
            merge(
                &v(&["10.0.0.0/8", "192.168.100.0/24"]),
                &v(&["10.0.0.0/8"]),
                false
            ),
            v(&["192.168.100.0/24"])
        );
        assert!(merge(&v(&["10.0.0.0/8"]), &v(&["10.0.0.0/8"]), false).is_empty());
    }
}

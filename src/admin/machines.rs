//! The overview and the machines pages: every node with its addresses, owner,
//! client and routes; rename, tags, route approval, key expiry and delete.

use super::layout::{self, Live, Notice, Section, ago, button_form, csrf, when};
use super::{Session, Ui, back, form};
use crate::grpc::pb;
use crate::grpc::pb::headscale_service_server::HeadscaleService;
use crate::state::NodeView;
use crate::types::NodeId;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use maud::{Markup, html};
use serde::Deserialize;
use serde_json::Value;
use std::collections::BTreeMap;
use tonic::Request;

/// How soon a key expiry is "soon" on the overview.
const EXPIRES_SOON_DAYS: i64 = 14;

/// What a page needs from a node's Hostinfo.
struct Client {
    os: String,
    version: String,
    relay: Option<u64>,
}

fn client(view: &NodeView) -> Client {
    let info: Value = view
        .node
        .hostinfo
        .as_deref()
        .and_then(|text| serde_json::from_str(text).ok())
        .unwrap_or(Value::Null);
    let text = |field: &str| {
        info.get(field)
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_owned()
    };
    Client {
        os: text("OS"),
        // `1.102.5-t0123abcd-g…`: the release is what admins compare.
        version: text("IPNVersion")
            .split('-')
            .next()
            .unwrap_or_default()
            .to_owned(),
        relay: info
            .get("NetInfo")
            .and_then(|n| n.get("PreferredDERP"))
            .and_then(Value::as_u64)
            .filter(|r| *r != 0),
    }
}

/// A node's owner as the pages show it: its user, or its tags.
fn owner(view: &NodeView) -> Markup {
    html! {
        @if view.node.is_tagged() {
            @for tag in &view.node.tags { code { (tag) } " " }
        } @else if let Some(user) = &view.user {
            a href=(format!("/admin/users/{}", user.id)) { (user.name.as_str()) }
        } @else {
            span.muted { "no user" }
        }
    }
}

fn status(view: &NodeView, now: crate::types::Timestamp) -> Markup {
    html! {
        @if view.online {
            span.online { "online" }
        } @else {
            span.offline { "offline, " (ago(view.node.last_seen, now)) }
        }
    }
}

/// `GET /admin`: what needs attention.
pub async fn overview(
    State(ui): State<Ui>,
    session: Session,
    Query(notice): Query<Notice>,
) -> Response {
    let nodes = match ui.state.list_nodes(None).await {
        Ok(nodes) => nodes,
        Err(err) => return super::unavailable(&session, Section::Overview, err),
    };
    let now = chrono::Utc::now();
    let online = nodes.iter().filter(|v| v.online).count();
    let mut versions: BTreeMap<String, usize> = BTreeMap::new();
    for view in &nodes {
        let version = client(view).version;
        *versions
            .entry(if version.is_empty() {
                "unknown".into()
            } else {
                version
            })
            .or_default() += 1;
    }
    let soon = now + chrono::TimeDelta::days(EXPIRES_SOON_DAYS);
    let expiring: Vec<&NodeView> = nodes
        .iter()
        .filter(|v| v.node.expiry.is_some_and(|e| e <= soon))
        .collect();
    let waiting: Vec<(&NodeView, String)> = nodes
        .iter()
        .flat_map(|v| {
            v.routes
                .iter()
                .filter(|r| r.advertised && !r.approved)
                .map(move |r| (v, r.prefix.to_string()))
        })
        .collect();
    let content = html! {
        div.stats {
            div.stat { b #online-count { (online) } "online" }
            div.stat { b #offline-count { (nodes.len() - online) } "offline" }
            div.stat { b { (expiring.len()) } "keys expiring within " (EXPIRES_SOON_DAYS) " days" }
            div.stat { b { (waiting.len()) } "routes waiting for approval" }
        }
        h2 { "Client versions" }
        div.table { table #versions {
            thead { tr { th { "Version" } th { "Nodes" } } }
            tbody { @for (version, count) in &versions { tr { td { (version) } td { (count) } } } }
        } }
        h2 { "Keys expiring soon" }
        div.table { table #expiring {
            thead { tr { th { "Machine" } th { "Owner" } th { "Key expiry" } } }
            tbody {
                @for v in &expiring { tr data-node-id=(v.node.id) {
                    td { a href=(format!("/admin/machines/{}", v.node.id)) { (v.node.given_name.as_str()) } }
                    td { (owner(v)) }
                    td { @if v.node.is_expired(now) { span.warn { "expired " } } (when(v.node.expiry)) }
                } }
                @if expiring.is_empty() { tr { td.muted colspan="3" { "None." } } }
            }
        } }
        h2 { "Routes waiting for approval" }
        div.table { table #waiting-routes {
            thead { tr { th { "Machine" } th { "Route" } } }
            tbody {
                @for (v, prefix) in &waiting { tr data-node-id=(v.node.id) {
                    td { a href=(format!("/admin/machines/{}", v.node.id)) { (v.node.given_name.as_str()) } }
                    td { code { (prefix) } }
                } }
                @if waiting.is_empty() { tr { td.muted colspan="2" { "None." } } }
            }
        } }
    };
    layout::page(
        &session,
        Section::Overview,
        "Overview",
        &notice,
        Live::On,
        content,
    )
    .into_response()
}

#[derive(Debug, Default, Deserialize)]
pub struct Search {
    #[serde(default)]
    q: String,
    #[serde(default)]
    show: String,
    ok: Option<String>,
    error: Option<String>,
}

/// Whether `view` matches a search: name, hostname, owner, tag or address.
fn matches(view: &NodeView, q: &str) -> bool {
    if q.is_empty() {
        return true;
    }
    let q = q.to_lowercase();
    let node = &view.node;
    let hit = |s: &str| s.to_lowercase().contains(&q);
    hit(node.given_name.as_str())
        || hit(&node.hostname)
        || node.tags.iter().any(|t| hit(t))
        || view.user.as_ref().is_some_and(|u| hit(u.name.as_str()))
        || node.ip_addresses().iter().any(|a| hit(&a.to_string()))
}

/// `GET /admin/machines`: every node, searchable.
pub async fn list(
    State(ui): State<Ui>,
    session: Session,
    Query(search): Query<Search>,
) -> Response {
    let nodes = match ui.state.list_nodes(None).await {
        Ok(nodes) => nodes,
        Err(err) => return super::unavailable(&session, Section::Machines, err),
    };
    let now = chrono::Utc::now();
    let shown: Vec<&NodeView> = nodes
        .iter()
        .filter(|v| matches(v, search.q.trim()))
        .filter(|v| match search.show.as_str() {
            "online" => v.online,
            "offline" => !v.online,
            "expired" => v.node.is_expired(now),
            "routes" => v.routes.iter().any(|r| r.advertised),
            _ => true,
        })
        .collect();
    let filters = [
        ("", "All"),
        ("online", "Online"),
        ("offline", "Offline"),
        ("expired", "Expired"),
        ("routes", "Routers"),
    ];
    let content = html! {
        form #search method="get" action="/admin/machines" {
            div.row {
                label { "Search" input type="search" name="q" value=(search.q) placeholder="name, user, tag or address"; }
                label { "Show" select name="show" {
                    @for (value, label) in filters {
                        option value=(value) selected[search.show == value] { (label) }
                    }
                } }
                button.secondary type="submit" { "Filter" }
            }
        }
        p.muted { (shown.len()) " of " (nodes.len()) " machines" }
        div.table { table #machines {
            thead { tr {
                th { "Machine" } th { "Addresses" } th { "Owner" }
                th.wide { "OS / version" } th { "Status" } th.wide { "Routes" }
            } }
            tbody { @for v in &shown {
                @let c = client(v);
                tr data-node-id=(v.node.id) {
                    td { a href=(format!("/admin/machines/{}", v.node.id)) { (v.node.given_name.as_str()) }
                        @if v.node.ephemeral { " " span.muted { "ephemeral" } } }
                    td { @for a in v.node.ip_addresses() { code { (a) } br; } }
                    td { (owner(v)) }
                    td.wide { (c.os) " " span.muted { (c.version) } }
                    td { (status(v, now)) }
                    td.wide { @for r in v.routes.iter().filter(|r| r.advertised) {
                        code { (r.prefix) } @if !r.approved { " " span.warn { "waiting" } } br;
                    } }
                }
            } }
        } }
    };
    let notice = Notice {
        ok: search.ok,
        error: search.error,
    };
    layout::page(
        &session,
        Section::Machines,
        "Machines",
        &notice,
        Live::On,
        content,
    )
    .into_response()
}

/// `GET /admin/machines/{id}`: one node, and what can be done to it.
pub async fn show(
    State(ui): State<Ui>,
    session: Session,
    Path(id): Path<u64>,
    Query(notice): Query<Notice>,
) -> Response {
    let view = match ui.state.node_view(NodeId(id)).await {
        Ok(view) => view,
        Err(crate::state::Error::NotFound(_)) => {
            return back(
                "/admin/machines",
                Err(tonic::Status::not_found(format!("machine {id} not found"))),
            );
        }
        Err(err) => return super::unavailable(&session, Section::Machines, err),
    };
    let now = chrono::Utc::now();
    let node = &view.node;
    let c = client(&view);
    let relay = c.relay.map(|id| {
        let map = ui.derp.current();
        let name = map
            .regions
            .get(&(id as u32))
            .map(|r| r.region_name.clone())
            .unwrap_or_default();
        format!("{id} {name}")
    });
    let path = format!("/admin/machines/{id}");
    let approved = view.approved_routes();
    let mut offered = view.advertised_routes();
    for prefix in &approved {
        if !offered.contains(prefix) {
            offered.push(*prefix);
        }
    }
    let content = html! {
        section { dl.facts #details {
            dt { "Status" } dd { (status(&view, now)) }
            dt { "Hostname" } dd { (node.hostname) }
            dt { "Addresses" } dd { @for a in node.ip_addresses() { code { (a) } " " } }
            dt { "Owner" } dd { (owner(&view)) }
            dt { "OS" } dd { (c.os) }
            dt { "Client version" } dd { (c.version) }
            dt { "Last seen" } dd { @if view.online { "now" } @else { (when(node.last_seen)) } }
            dt { "Endpoints" } dd { @for e in &node.endpoints { code { (e) } " " } }
            dt { "Relay" } dd { (relay.unwrap_or_else(|| "none reported".into())) }
            dt { "Key expiry" } dd { (when(node.expiry)) @if node.is_expired(now) { " " span.warn { "(expired)" } } }
            dt { "Created" } dd { (when(Some(node.created_at))) }
            dt { "Registered with" } dd { (node.register_method.as_str()) @if node.ephemeral { ", ephemeral" } }
            dt { "Node key" } dd { code { (node.node_key) } }
        } }
        h2 { "Routes" }
        @if offered.is_empty() {
            p.muted { "This machine offers no routes (tailscale up --advertise-routes=…, --advertise-exit-node)." }
        } @else {
            form #routes method="post" action=(format!("{path}/routes")) {
                (csrf(&session))
                div.table { table #route-list {
                    thead { tr { th { "Approve" } th { "Route" } th { "State" } } }
                    tbody { @for prefix in &offered {
                        @let row = view.routes.iter().find(|r| r.prefix == *prefix);
                        @let is_approved = approved.contains(prefix);
                        tr data-route=(prefix) {
                            td { input type="checkbox" name="route" value=(prefix) checked[is_approved] aria-label=(format!("approve {prefix}")); }
                            td { code { (prefix) } @if prefix.prefix_len() == 0 { " " span.muted { "(exit node)" } } }
                            td {
                                @if is_approved {
                                    "approved"
                                    @if row.is_some_and(|r| r.approved_by_policy) { " by the policy" }
                                    @if view.primary_routes.contains(prefix) { ", serving" }
                                } @else { span.warn { "waiting" } }
                                @if row.is_some_and(|r| !r.advertised) { " " span.muted { "(no longer advertised)" } }
                            }
                        }
                    } }
                } }
                div.row { button type="submit" { "Save approvals" } }
            }
        }
        h2 { "Name" }
        form #rename method="post" action=(format!("{path}/rename")) {
            (csrf(&session))
            div.row {
                label { "MagicDNS name" input type="text" name="name" value=(node.given_name.as_str()) required; }
                button type="submit" { "Rename" }
            }
        }
        h2 { "Tags" }
        form #tags method="post" action=(format!("{path}/tags")) {
            (csrf(&session))
            div.row {
                label { "Tags, comma-separated (empty: none)" input type="text" name="tags" value=(node.tags.join(",")) placeholder="tag:server"; }
                button type="submit" { "Set tags" }
            }
        }
        p.muted { "A node moves to another user by logging in again with that user's key: Headscale 0.28 and later have no move." }
        h2 { "Key" }
        div.row {
            (button_form(&session, "expire", &format!("{path}/expire"), "Expire key now"))
            form.inline #delete method="post" action=(format!("{path}/delete")) {
                (csrf(&session))
                button.danger type="submit" { "Delete machine" }
            }
        }
    };
    layout::page(
        &session,
        Section::Machines,
        node.given_name.as_str(),
        &notice,
        Live::On,
        content,
    )
    .into_response()
}

/// `POST /admin/machines/{id}/rename`.
pub async fn rename(State(ui): State<Ui>, Path(id): Path<u64>, body: Bytes) -> Response {
    super::renamed(
        &body,
        &format!("/admin/machines/{id}"),
        |new_name| async move {
            let request = pb::RenameNodeRequest {
                node_id: id,
                new_name,
            };
            ui.admin.rename_node(Request::new(request)).await
        },
    )
    .await
}

/// `POST /admin/machines/{id}/tags`.
pub async fn set_tags(State(ui): State<Ui>, Path(id): Path<u64>, body: Bytes) -> Response {
    let tags: Vec<String> = form(&body)
        .get("tags")
        .unwrap_or_default()
        .split([',', ' '])
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .map(str::to_owned)
        .collect();
    let answer = ui
        .admin
        .set_tags(Request::new(pb::SetTagsRequest { node_id: id, tags }))
        .await
        .map(|_| "Tags saved".to_owned());
    back(&format!("/admin/machines/{id}"), answer)
}

/// `POST /admin/machines/{id}/routes`: the ticked routes are the approved set.
pub async fn set_routes(State(ui): State<Ui>, Path(id): Path<u64>, body: Bytes) -> Response {
    let routes = form(&body).all("route");
    let answer = ui
        .admin
        .set_approved_routes(Request::new(pb::SetApprovedRoutesRequest {
            node_id: id,
            routes: routes.clone(),
        }))
        .await
        .map(|_| match routes.len() {
            0 => "No routes approved".to_owned(),
            _ => format!("Approved: {}", routes.join(", ")),
        });
    back(&format!("/admin/machines/{id}"), answer)
}

/// `POST /admin/machines/{id}/expire`.
pub async fn expire(State(ui): State<Ui>, Path(id): Path<u64>) -> Response {
    let answer = ui
        .admin
        .expire_node(Request::new(pb::ExpireNodeRequest {
            node_id: id,
            ..Default::default()
        }))
        .await
        .map(|_| "Key expired: the machine must log in again".to_owned());
    back(&format!("/admin/machines/{id}"), answer)
}

/// `POST /admin/machines/{id}/delete`.
pub async fn delete(State(ui): State<Ui>, Path(id): Path<u64>) -> Response {
    let answer = ui
        .admin
        .delete_node(Request::new(pb::DeleteNodeRequest { node_id: id }))
        .await;
    match answer {
        Ok(_) => back("/admin/machines", Ok(format!("Machine {id} deleted"))),
        Err(status) => back(&format!("/admin/machines/{id}"), Err(status)),
    }
}

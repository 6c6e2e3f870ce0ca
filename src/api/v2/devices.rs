//! `/api/v2/device…` and `/api/v2/tailnet/-/devices`: devices as Tailscale's API
//! shows them, and the changes it allows (name, tags, key expiry, routes, delete).

use super::{Answer, ApiError, Caller, Ctx, ZERO_TIME, json_body, time};
use crate::grpc::pb;
use crate::grpc::pb::headscale_service_server::HeadscaleService;
use crate::state::NodeView;
use crate::types::NodeId;
use crate::types::oauth::{Access, Resource};
use axum::Extension;
use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use serde::Deserialize;
use serde_json::{Value, json};
use std::collections::HashMap;

/// A device id in a path: the node id (Tailscale's `id` and `nodeId` are both it).
fn device_id(text: &str) -> Result<NodeId, ApiError> {
    text.trim().parse().map_err(|_| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            format!(
                "device {text:?} not found: device ids are the node ids `headway nodes list` shows"
            ),
        )
    })
}

/// One device in Tailscale's JSON; `all` adds the client's connectivity.
fn device(ctx: &Ctx, view: &NodeView, all: bool) -> Value {
    let node = &view.node;
    let hostinfo: Value = node
        .hostinfo
        .as_deref()
        .and_then(|text| serde_json::from_str(text).ok())
        .unwrap_or(Value::Null);
    let text = |field: &str| hostinfo.get(field).and_then(Value::as_str).unwrap_or("");
    let name = if ctx.tailnet.base_domain.is_empty() {
        node.given_name.to_string()
    } else {
        format!("{}.{}", node.given_name, ctx.tailnet.base_domain)
    };
    let user = match &view.user {
        Some(user) => user.login_name(),
        None if node.is_tagged() => "tagged-devices".to_owned(),
        None => String::new(),
    };
    let now = chrono::Utc::now();
    let last_seen = if view.online {
        Some(now)
    } else {
        node.last_seen
    };
    let mut out = json!({
        "addresses": node.ip_addresses().iter().map(ToString::to_string).collect::<Vec<_>>(),
        "id": node.id.to_string(),
        "nodeId": node.id.to_string(),
        "user": user,
        "name": name,
        "hostname": node.hostname,
        "clientVersion": text("IPNVersion"),
        "updateAvailable": false,
        "os": text("OS"),
        "created": time(node.created_at),
        "lastSeen": last_seen.map(time),
        "keyExpiryDisabled": node.expiry.is_none(),
        "expires": node.expiry.map_or_else(|| ZERO_TIME.to_owned(), time),
        "authorized": true,
        "isExternal": false,
        "isEphemeral": node.ephemeral,
        "machineKey": node.machine_key.to_string(),
        "nodeKey": node.node_key.to_string(),
        "blocksIncomingConnections": false,
        "tailnetLockKey": "",
        "tailnetLockError": "",
        "tags": node.tags,
        "connectedToControl": view.online,
        "advertisedRoutes": texts(view.advertised_routes()),
        "enabledRoutes": texts(view.approved_routes()),
    });
    if all {
        out["clientConnectivity"] = json!({
            "endpoints": node.endpoints.iter().map(ToString::to_string).collect::<Vec<_>>(),
            "mappingVariesByDestIP": false,
            "latency": {},
            "clientSupports": {},
        });
        if !text("DistroName").is_empty() {
            out["distro"] = json!({
                "name": text("DistroName"),
                "version": text("DistroVersion"),
                "codeName": text("DistroCodeName"),
            });
        }
    }
    out
}

/// A change to one device: the caller may make it, and the id and the JSON
/// body parse.
fn change<T: serde::de::DeserializeOwned>(
    caller: &Caller,
    resource: Resource,
    id: &str,
    body: &[u8],
) -> Result<(NodeId, T), ApiError> {
    caller.require(resource, Access::Write)?;
    Ok((device_id(id)?, json_body(body)?))
}

fn all_fields(query: &HashMap<String, String>) -> bool {
    query.get("fields").is_some_and(|f| f == "all")
}

pub(super) async fn list(
    State(ctx): State<Ctx>,
    Extension(caller): Extension<Caller>,
    Query(query): Query<HashMap<String, String>>,
) -> Answer<Json<Value>> {
    caller.require(Resource::DevicesCore, Access::Read)?;
    let views = ctx.state.list_nodes(None).await?;
    let all = all_fields(&query);
    let devices: Vec<Value> = views.iter().map(|v| device(&ctx, v, all)).collect();
    Ok(Json(json!({ "devices": devices })))
}

pub(super) async fn get(
    State(ctx): State<Ctx>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    Query(query): Query<HashMap<String, String>>,
) -> Answer<Json<Value>> {
    caller.require(Resource::DevicesCore, Access::Read)?;
    let view = ctx.state.node_view(device_id(&id)?).await?;
    Ok(Json(device(&ctx, &view, all_fields(&query))))
}

pub(super) async fn delete(
    State(ctx): State<Ctx>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> Answer<StatusCode> {
    caller.require(Resource::DevicesCore, Access::Write)?;
    let node_id = device_id(&id)?.0;
    ctx.admin
        .delete_node(tonic::Request::new(pb::DeleteNodeRequest { node_id }))
        .await?;
    Ok(StatusCode::OK)
}

#[derive(Deserialize)]
struct Authorized {
    authorized: bool,
}

/// Every registered device is authorized: headway has no device approval, so
/// `true` changes nothing and `false` is refused with what to do instead.
pub(super) async fn authorize(
    State(ctx): State<Ctx>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    body: Bytes,
) -> Answer<StatusCode> {
    let (id, request): (_, Authorized) = change(&caller, Resource::DevicesCore, &id, &body)?;
    ctx.state.node_view(id).await?;
    if request.authorized {
        Ok(StatusCode::OK)
    } else {
        Err(ApiError::bad_request(
            "headway has no device approval: every registered device is authorized; delete the device, or expire its key, to cut it off",
        ))
    }
}

#[derive(Deserialize)]
struct Name {
    name: String,
}

/// Renames a device. The name may be the full MagicDNS name or its first label.
pub(super) async fn set_name(
    State(ctx): State<Ctx>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    body: Bytes,
) -> Answer<StatusCode> {
    let (id, request): (_, Name) = change(&caller, Resource::DevicesCore, &id, &body)?;
    let mut name = request.name.trim().trim_end_matches('.');
    let base = ctx.tailnet.base_domain.as_str();
    if !base.is_empty()
        && let Some(label) = name
            .strip_suffix(base)
            .and_then(|rest| rest.strip_suffix('.'))
    {
        name = label;
    }
    ctx.admin
        .rename_node(tonic::Request::new(pb::RenameNodeRequest {
            node_id: id.0,
            new_name: name.to_owned(),
        }))
        .await?;
    Ok(StatusCode::OK)
}

#[derive(Deserialize)]
struct Tags {
    tags: Vec<String>,
}

/// Sets a device's tags (empty: back to its user is not possible, as in Headscale).
/// An access token may give only its client's tags.
pub(super) async fn set_tags(
    State(ctx): State<Ctx>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    body: Bytes,
) -> Answer<StatusCode> {
    let (id, request): (_, Tags) = change(&caller, Resource::DevicesCore, &id, &body)?;
    super::keys::check_token_tags(&caller, &request.tags)?;
    ctx.admin
        .set_tags(tonic::Request::new(pb::SetTagsRequest {
            node_id: id.0,
            tags: request.tags,
        }))
        .await?;
    Ok(StatusCode::OK)
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Key {
    key_expiry_disabled: bool,
}

/// Turns a device's key expiry off, or on again: the key then expires after
/// `node.expiry` from now.
pub(super) async fn set_key(
    State(ctx): State<Ctx>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    body: Bytes,
) -> Answer<StatusCode> {
    let (id, request): (_, Key) = change(&caller, Resource::DevicesCore, &id, &body)?;
    let view = ctx.state.node_view(id).await?;
    let expiry = if request.key_expiry_disabled {
        None
    } else if view.node.expiry.is_some() {
        // Already expiring: nothing to change.
        return Ok(StatusCode::OK);
    } else {
        let lifetime = ctx.state.settings().node_expiry.ok_or_else(|| {
            ApiError::bad_request(
                "node.expiry is 0 on this server, so keys have no lifetime to return to; set node.expiry, or expire the key at a time of your choice with POST /api/v2/device/{id}/expire",
            )
        })?;
        Some(crate::grpc::convert::timestamp(
            chrono::Utc::now() + lifetime,
        ))
    };
    ctx.admin
        .expire_node(tonic::Request::new(pb::ExpireNodeRequest {
            node_id: id.0,
            expiry,
            disable_expiry: request.key_expiry_disabled,
        }))
        .await?;
    Ok(StatusCode::OK)
}

/// Expires a device's key now: the client must log in again.
pub(super) async fn expire(
    State(ctx): State<Ctx>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> Answer<StatusCode> {
    caller.require(Resource::DevicesCore, Access::Write)?;
    let node_id = device_id(&id)?.0;
    ctx.admin
        .expire_node(tonic::Request::new(pb::ExpireNodeRequest {
            node_id,
            expiry: None,
            disable_expiry: false,
        }))
        .await?;
    Ok(StatusCode::OK)
}

/// Prefixes as Tailscale's API writes them.
fn texts(prefixes: Vec<ipnet::IpNet>) -> Vec<String> {
    prefixes.iter().map(ToString::to_string).collect()
}

fn routes_of(view: &NodeView) -> Value {
    json!({
        "advertisedRoutes": texts(view.advertised_routes()),
        "enabledRoutes": texts(view.approved_routes()),
    })
}

pub(super) async fn routes(
    State(ctx): State<Ctx>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> Answer<Json<Value>> {
    caller.require(Resource::DevicesRoutes, Access::Read)?;
    let view = ctx.state.node_view(device_id(&id)?).await?;
    Ok(Json(routes_of(&view)))
}

#[derive(Deserialize)]
struct Routes {
    routes: Vec<String>,
}

/// Sets the routes a device may serve (its approved routes); answers with both lists.
pub(super) async fn set_routes(
    State(ctx): State<Ctx>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    body: Bytes,
) -> Answer<Json<Value>> {
    let (id, request): (_, Routes) = change(&caller, Resource::DevicesRoutes, &id, &body)?;
    ctx.admin
        .set_approved_routes(tonic::Request::new(pb::SetApprovedRoutesRequest {
            node_id: id.0,
            routes: request.routes,
        }))
        .await?;
    let view = ctx.state.node_view(id).await?;
    Ok(Json(routes_of(&view)))
}

//! `/api/v2/tailnet/-/users`, `/api/v2/users/{id}` and `/api/v2/tailnet/-/settings`:
//! the tailnet's people and the settings Tailscale's API reports, each taken
//! from what headway really does.

use super::{Answer, ApiError, Caller, Ctx, ZERO_TIME, json_body, time};
use crate::state::{NodeView, UserFilter};
use crate::types::oauth::{Access, Resource};
use crate::types::{User, UserId};
use axum::Extension;
use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use serde_json::{Map, Value, json};
use std::collections::HashMap;

/// A user in Tailscale's JSON, with what their devices say about them.
fn user(u: &User, nodes: &[NodeView]) -> Value {
    let own: Vec<&NodeView> = nodes
        .iter()
        .filter(|v| v.node.user_id == Some(u.id) && !v.node.is_tagged())
        .collect();
    let last_seen = own.iter().filter_map(|v| v.node.last_seen).max();
    json!({
        "id": u.id.to_string(),
        "displayName": u.display(),
        "loginName": u.login_name(),
        "profilePicUrl": u.profile_pic_url,
        "tailnetId": "-",
        "created": time(u.created_at),
        "type": "member",
        "role": "member",
        "status": "active",
        "deviceCount": own.len(),
        "lastSeen": last_seen.map_or_else(|| ZERO_TIME.to_owned(), time),
        "currentlyConnected": own.iter().any(|v| v.online),
    })
}

/// Every user; `type` and `role` filter as in Tailscale (every headway user is
/// a `member` with the role `member`).
pub(super) async fn users(
    State(ctx): State<Ctx>,
    Extension(caller): Extension<Caller>,
    Query(query): Query<HashMap<String, String>>,
) -> Answer<Json<Value>> {
    caller.require(Resource::Users, Access::Read)?;
    let matches = |key: &str| query.get(key).is_none_or(|v| v.is_empty() || v == "member");
    let mut users = Vec::new();
    if matches("type") && matches("role") {
        let nodes = ctx.state.list_nodes(None).await?;
        let all = ctx.state.list_users(&UserFilter::default()).await?;
        users = all.iter().map(|u| user(u, &nodes)).collect();
    }
    Ok(Json(json!({ "users": users })))
}

pub(super) async fn user_by_id(
    State(ctx): State<Ctx>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> Answer<Json<Value>> {
    caller.require(Resource::Users, Access::Read)?;
    let id: UserId = id
        .parse()
        .map_err(|_| ApiError::new(StatusCode::NOT_FOUND, format!("user {id:?} not found")))?;
    let found = ctx.state.get_user(id).await?;
    let nodes = ctx.state.list_nodes(None).await?;
    Ok(Json(user(&found, &nodes)))
}

/// The settings as headway has them, with where each comes from when the API
/// cannot change it.
fn current_settings(ctx: &Ctx) -> Vec<(&'static str, Value, &'static str)> {
    let key_days = ctx
        .state
        .settings()
        .node_expiry
        .map_or(0, |d| d.as_secs() / (24 * 60 * 60));
    vec![
        (
            "aclsExternallyManagedOn",
            json!(ctx.tailnet.policy_from_file),
            "policy.mode (file: the policy is managed outside the API)",
        ),
        (
            "aclsExternalLink",
            json!(""),
            "nothing: headway keeps no link",
        ),
        (
            "devicesApprovalOn",
            json!(false),
            "nothing: headway has no device approval",
        ),
        (
            "devicesAutoUpdatesOn",
            json!(false),
            "nothing: headway does not update clients",
        ),
        (
            "devicesKeyDurationDays",
            json!(key_days),
            "node.expiry in the configuration",
        ),
        (
            "usersApprovalOn",
            json!(false),
            "nothing: headway has no user approval",
        ),
        (
            "usersRoleAllowedToJoinExternalTailnets",
            json!("none"),
            "nothing: headway has no external tailnets",
        ),
        (
            "networkFlowLoggingOn",
            json!(false),
            "nothing: headway does not log network flows",
        ),
        (
            "regionalRoutingOn",
            json!(false),
            "nothing: headway has no regional routing",
        ),
        (
            "postureIdentityCollectionOn",
            json!(false),
            "nothing: headway collects no posture identity",
        ),
        (
            "httpsEnabled",
            json!(ctx.tailnet.https),
            "dns.authoritative in the configuration (tailscale cert)",
        ),
        (
            "routeSelection",
            json!("active-passive-failover"),
            "nothing: headway fails routes over between routers",
        ),
    ]
}

pub(super) async fn settings(
    State(ctx): State<Ctx>,
    Extension(caller): Extension<Caller>,
) -> Answer<Json<Value>> {
    caller.require(Resource::FeatureSettings, Access::Read)?;
    let map: Map<String, Value> = current_settings(&ctx)
        .into_iter()
        .map(|(k, v, _)| (k.to_owned(), v))
        .collect();
    Ok(Json(Value::Object(map)))
}

/// Accepts a change only where it is no change: every setting follows the
/// configuration, and a request to set one otherwise is refused naming where it
/// comes from (never accepted and ignored).
pub(super) async fn update_settings(
    State(ctx): State<Ctx>,
    Extension(caller): Extension<Caller>,
    body: Bytes,
) -> Answer<StatusCode> {
    caller.require(Resource::FeatureSettings, Access::Write)?;
    let request: Map<String, Value> = json_body(&body)?;
    let current = current_settings(&ctx);
    for (key, wanted) in &request {
        if wanted.is_null() {
            continue;
        }
        let Some((_, now, source)) = current.iter().find(|(k, _, _)| *k == key.as_str()) else {
            return Err(ApiError::bad_request(format!(
                "unknown tailnet setting {key:?}"
            )));
        };
        if wanted != now {
            return Err(ApiError::bad_request(format!(
                "{key} cannot be changed through the API: it follows {source}"
            )));
        }
    }
    Ok(StatusCode::OK)
}

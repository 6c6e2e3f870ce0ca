//! `/api/v2/tailnet/-/keys`: auth keys (headway's pre-auth keys, made through
//! the same operation as `preauthkeys create`) and OAuth clients (`keyType`
//! `client`), in Tailscale's JSON.

use super::{Answer, ApiError, Caller, Ctx, ZERO_TIME, json_body, time};
use crate::grpc::pb;
use crate::grpc::pb::headscale_service_server::HeadscaleService;
use crate::types::OAuthClient;
use crate::types::oauth::{Access, Resource};
use axum::Extension;
use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::Deserialize;
use serde_json::{Value, json};
use std::time::Duration;

/// An auth key's lifetime when the request names none: Tailscale's 90 days.
const DEFAULT_KEY_LIFETIME: Duration = Duration::from_secs(90 * 24 * 60 * 60);

/// Refuses tags an access token's client may not give.
pub(super) fn check_token_tags(caller: &Caller, tags: &[String]) -> Result<(), ApiError> {
    if let Caller::Token(grant) = caller
        && let Some(tag) = tags.iter().find(|t| !grant.tags.contains(t))
    {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            format!(
                "this OAuth client may only give its own tags ({}), not {tag}",
                grant.tags.join(", ")
            ),
        ));
    }
    Ok(())
}

fn pb_time(t: Option<&prost_types::Timestamp>) -> String {
    t.and_then(|t| crate::grpc::convert::from_timestamp("time", t).ok())
        .map_or_else(|| ZERO_TIME.to_owned(), time)
}

/// An auth key in Tailscale's JSON; `secret` only right after creation.
fn auth_key(key: &pb::PreAuthKey, secret: Option<&str>) -> Value {
    let now = chrono::Utc::now().timestamp();
    let expired = key.expiration.as_ref().is_some_and(|e| e.seconds <= now);
    json!({
        "id": key.id.to_string(),
        "keyType": "auth",
        "key": secret.unwrap_or(""),
        "description": "",
        "created": pb_time(key.created_at.as_ref()),
        "expires": pb_time(key.expiration.as_ref()),
        "revoked": ZERO_TIME,
        "invalid": expired || (key.used && !key.reusable),
        "capabilities": {"devices": {"create": {
            "reusable": key.reusable,
            "ephemeral": key.ephemeral,
            "tags": key.acl_tags,
            "preauthorized": true,
        }}},
        "userId": key.user.as_ref().map(|u| u.id.to_string()).unwrap_or_default(),
    })
}

/// An OAuth client in Tailscale's JSON: its id is the client id.
fn oauth_client(client: &OAuthClient, secret: Option<&str>) -> Value {
    json!({
        "id": client.prefix,
        "keyType": "client",
        "key": secret.unwrap_or(""),
        "description": client.description,
        "created": time(client.created_at),
        "expires": ZERO_TIME,
        "revoked": ZERO_TIME,
        "invalid": false,
        "scopes": client.scopes.iter().map(ToString::to_string).collect::<Vec<_>>(),
        "tags": client.tags,
        "userId": "",
    })
}

fn may(caller: &Caller, resource: Resource) -> bool {
    caller.require(resource, Access::Read).is_ok()
}

async fn auth_keys(ctx: &Ctx) -> Answer<Vec<pb::PreAuthKey>> {
    Ok(ctx
        .admin
        .list_pre_auth_keys(tonic::Request::new(pb::ListPreAuthKeysRequest {}))
        .await?
        .into_inner()
        .pre_auth_keys)
}

/// Auth keys and OAuth clients, as far as the caller may read them.
pub(super) async fn list(
    State(ctx): State<Ctx>,
    Extension(caller): Extension<Caller>,
) -> Answer<Json<Value>> {
    if !may(&caller, Resource::AuthKeys) && !may(&caller, Resource::OAuthKeys) {
        caller.require(Resource::AuthKeys, Access::Read)?;
    }
    let mut keys = Vec::new();
    if may(&caller, Resource::AuthKeys) {
        keys.extend(auth_keys(&ctx).await?.iter().map(|k| auth_key(k, None)));
    }
    if may(&caller, Resource::OAuthKeys) {
        let clients = ctx.state.list_oauth_clients().await?;
        keys.extend(clients.iter().map(|c| oauth_client(c, None)));
    }
    Ok(Json(json!({ "keys": keys })))
}

/// A key id: an auth key's number, or an OAuth client's id.
enum KeyId {
    Auth(u64),
    Client(String),
}

fn key_id(text: &str) -> KeyId {
    match text.trim().parse() {
        Ok(id) => KeyId::Auth(id),
        Err(_) => KeyId::Client(text.trim().to_owned()),
    }
}

pub(super) async fn get(
    State(ctx): State<Ctx>,
    Extension(caller): Extension<Caller>,
    Path((_, id)): Path<(String, String)>,
) -> Answer<Json<Value>> {
    match key_id(&id) {
        KeyId::Auth(id) => {
            caller.require(Resource::AuthKeys, Access::Read)?;
            let keys = auth_keys(&ctx).await?;
            let key = keys.iter().find(|k| k.id == id).ok_or_else(|| {
                ApiError::new(StatusCode::NOT_FOUND, format!("key {id} not found"))
            })?;
            Ok(Json(auth_key(key, None)))
        }
        KeyId::Client(id) => {
            caller.require(Resource::OAuthKeys, Access::Read)?;
            let client = ctx.state.find_oauth_client(&id).await?;
            Ok(Json(oauth_client(&client, None)))
        }
    }
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct Create {
    #[serde(rename = "keyType")]
    key_type: String,
    capabilities: Capabilities,
    #[serde(rename = "expirySeconds")]
    expiry_seconds: u64,
    description: String,
    scopes: Vec<String>,
    tags: Vec<String>,
    /// headway's addition: the owner of an untagged auth key (a user name or id),
    /// since an API key belongs to no user here.
    user: String,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct Capabilities {
    devices: DeviceCapabilities,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct DeviceCapabilities {
    create: CreateCapabilities,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct CreateCapabilities {
    reusable: bool,
    ephemeral: bool,
    tags: Vec<String>,
}

/// Makes an auth key (`keyType` `auth` or absent) or an OAuth client (`client`).
pub(super) async fn create(
    State(ctx): State<Ctx>,
    Extension(caller): Extension<Caller>,
    body: Bytes,
) -> Answer<Json<Value>> {
    let request: Create = json_body(&body)?;
    match request.key_type.as_str() {
        "" | "auth" => create_auth_key(&ctx, &caller, request).await,
        "client" => {
            caller.require(Resource::OAuthKeys, Access::Write)?;
            let made = ctx
                .state
                .create_oauth_client(&request.scopes, &request.tags, &request.description)
                .await?;
            Ok(Json(oauth_client(&made.record, Some(&made.secret))))
        }
        other => Err(ApiError::bad_request(format!(
            "keyType {other:?} is not supported by headway: use \"auth\" for auth keys or \"client\" for OAuth clients"
        ))),
    }
}

async fn create_auth_key(ctx: &Ctx, caller: &Caller, request: Create) -> Answer<Json<Value>> {
    caller.require(Resource::AuthKeys, Access::Write)?;
    let create = request.capabilities.devices.create;
    check_token_tags(caller, &create.tags)?;
    let user = if !create.tags.is_empty() {
        0
    } else if matches!(caller, Caller::Token(_)) {
        return Err(ApiError::bad_request(
            "an auth key made with an OAuth client must carry tags (capabilities.devices.create.tags)",
        ));
    } else if request.user.trim().is_empty() {
        return Err(ApiError::bad_request(
            "an auth key without tags needs an owner: name a user in \"user\" (a headway addition; API keys belong to no user), or give it tags",
        ));
    } else {
        owner(ctx, request.user.trim()).await?
    };
    let lifetime = match request.expiry_seconds {
        0 => DEFAULT_KEY_LIFETIME,
        seconds => Duration::from_secs(seconds),
    };
    let expiration = crate::grpc::convert::timestamp(chrono::Utc::now() + lifetime);
    let key = ctx
        .admin
        .create_pre_auth_key(tonic::Request::new(pb::CreatePreAuthKeyRequest {
            user,
            reusable: create.reusable,
            ephemeral: create.ephemeral,
            expiration: Some(expiration),
            acl_tags: create.tags,
        }))
        .await?
        .into_inner()
        .pre_auth_key
        .ok_or_else(|| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "no key made".into()))?;
    Ok(Json(auth_key(&key, Some(&key.key))))
}

/// The id of the user named `text` (a name, or an id).
async fn owner(ctx: &Ctx, text: &str) -> Answer<u64> {
    let filter = match text.parse::<u64>() {
        Ok(id) => pb::ListUsersRequest {
            id,
            ..Default::default()
        },
        Err(_) => pb::ListUsersRequest {
            name: text.to_owned(),
            ..Default::default()
        },
    };
    let users = ctx
        .admin
        .list_users(tonic::Request::new(filter))
        .await?
        .into_inner()
        .users;
    users
        .first()
        .map(|u| u.id)
        .ok_or_else(|| ApiError::bad_request(format!("user {text:?} not found")))
}

/// Deletes an auth key (nodes it admitted stay) or an OAuth client (its tokens
/// stop working at once).
pub(super) async fn delete(
    State(ctx): State<Ctx>,
    Extension(caller): Extension<Caller>,
    Path((_, id)): Path<(String, String)>,
) -> Answer<StatusCode> {
    match key_id(&id) {
        KeyId::Auth(id) => {
            caller.require(Resource::AuthKeys, Access::Write)?;
            ctx.admin
                .delete_pre_auth_key(tonic::Request::new(pb::DeletePreAuthKeyRequest { id }))
                .await?;
        }
        KeyId::Client(id) => {
            caller.require(Resource::OAuthKeys, Access::Write)?;
            let client = ctx.state.find_oauth_client(&id).await?;
            ctx.state.delete_oauth_client(client.id).await?;
        }
    }
    Ok(StatusCode::OK)
}

//! `/api/v2`: the part of Tailscale's public API a self-hosted tailnet needs,
//! with `{tailnet}` = `-`, so Tailscale's Go API client, its Terraform provider
//! and scripts written for Tailscale drive headway. Devices, keys (auth keys and
//! OAuth clients), the policy file, users, tailnet settings, and the OAuth
//! client-credentials grant.
//!
//! Every change goes through the same `headscale.v1` operations the gRPC API
//! serves (`grpc::AdminApi`); reads come from `state`. Auth is an API key
//! (Bearer, or Basic with the key as user name) or an OAuth access token,
//! whose scopes each route checks.

mod devices;
mod keys;
mod policy;
mod tailnet;
mod token;

use crate::grpc::AdminApi;
use crate::state::State;
use crate::state::oauth::TokenGrant;
use crate::types::oauth::{Access, Resource, Scope};
use axum::Router;
use axum::extract::{DefaultBodyLimit, Request};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use base64::Engine;
use serde::de::DeserializeOwned;
use std::sync::Arc;

/// The largest request body (a policy file is the largest thing sent).
const MAX_BODY_BYTES: usize = 4 << 20;

/// What `/api/v2` answers about the tailnet that is not in `state`.
#[derive(Clone, Debug, Default)]
pub struct Tailnet {
    /// `dns.base_domain`: devices are named `<name>.<base_domain>`.
    pub base_domain: String,
    /// Whether `tailscale cert` works (`dns.authoritative` is set).
    pub https: bool,
    /// Whether the policy comes from a file (`policy.mode: file`), so the API
    /// cannot set it.
    pub policy_from_file: bool,
}

/// What the routes share.
#[derive(Clone)]
struct Ctx {
    state: Arc<State>,
    admin: AdminApi,
    tailnet: Arc<Tailnet>,
}

/// The `/api/v2` routes. The token endpoint takes client credentials; every
/// other route an API key or an access token.
pub fn router(state: Arc<State>, admin: AdminApi, tailnet: Tailnet) -> Router {
    let ctx = Ctx {
        state,
        admin,
        tailnet: Arc::new(tailnet),
    };
    // Routes under `/api/v2/tailnet/{tailnet}`: the tailnet is checked once, here.
    let tailnet_routes = Router::new()
        .route("/api/v2/tailnet/{tailnet}/devices", get(devices::list))
        .route(
            "/api/v2/tailnet/{tailnet}/keys",
            get(keys::list).post(keys::create),
        )
        .route(
            "/api/v2/tailnet/{tailnet}/keys/{id}",
            get(keys::get).delete(keys::delete),
        )
        .route(
            "/api/v2/tailnet/{tailnet}/acl",
            get(policy::get).post(policy::set),
        )
        .route(
            "/api/v2/tailnet/{tailnet}/acl/validate",
            post(policy::validate),
        )
        .route("/api/v2/tailnet/{tailnet}/users", get(tailnet::users))
        .route(
            "/api/v2/tailnet/{tailnet}/settings",
            get(tailnet::settings).patch(tailnet::update_settings),
        )
        .route_layer(axum::middleware::from_fn_with_state(
            ctx.clone(),
            check_tailnet,
        ));
    let api = Router::new()
        .route(
            "/api/v2/device/{id}",
            get(devices::get).delete(devices::delete),
        )
        .route("/api/v2/device/{id}/authorized", post(devices::authorize))
        .route("/api/v2/device/{id}/name", post(devices::set_name))
        .route("/api/v2/device/{id}/tags", post(devices::set_tags))
        .route("/api/v2/device/{id}/key", post(devices::set_key))
        .route("/api/v2/device/{id}/expire", post(devices::expire))
        .route(
            "/api/v2/device/{id}/routes",
            get(devices::routes).post(devices::set_routes),
        )
        .route("/api/v2/users/{id}", get(tailnet::user_by_id))
        .merge(tailnet_routes)
        .route("/api/v2/{*rest}", axum::routing::any(not_found))
        .method_not_allowed_fallback(method_not_allowed)
        .route_layer(axum::middleware::from_fn_with_state(
            ctx.clone(),
            authenticate,
        ))
        .with_state(ctx.clone());
    Router::new()
        .route("/api/v2/oauth/token", post(token::issue))
        .with_state(ctx)
        .merge(api)
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
}

/// Who is calling: an admin API key may do anything; an access token what its
/// scopes allow.
#[derive(Clone, Debug)]
pub enum Caller {
    ApiKey,
    Token(TokenGrant),
}

impl Caller {
    /// Refuses with 403 unless the caller may `access` `resource`.
    fn require(&self, resource: Resource, access: Access) -> Result<(), ApiError> {
        match self {
            Caller::ApiKey => Ok(()),
            Caller::Token(grant) => {
                let wanted = Scope::new(resource, access);
                if crate::types::oauth::allows(&grant.scopes, wanted) {
                    Ok(())
                } else {
                    Err(ApiError::new(
                        StatusCode::FORBIDDEN,
                        format!("this access token lacks the scope {wanted}"),
                    ))
                }
            }
        }
    }
}

/// The decoded `user:password` text of an HTTP Basic `authorization` header;
/// `None` when the header is absent or of another scheme.
fn basic(headers: &HeaderMap) -> Option<Result<String, &'static str>> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?.trim();
    let (scheme, rest) = value.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD.decode(rest.trim());
    Some(
        decoded
            .map_err(|_| "Basic credentials are not base64")
            .and_then(|bytes| {
                String::from_utf8(bytes).map_err(|_| "Basic credentials are not text")
            }),
    )
}

/// The credential of a request: `Bearer <key or token>`, or `Basic` with the
/// key as user name (Tailscale's API clients send that), password empty.
fn credential(headers: &HeaderMap) -> Result<String, String> {
    let value = headers.get(header::AUTHORIZATION).ok_or(
        "missing authorization: send an API key (Bearer, or Basic as the user name) or an OAuth access token",
    )?;
    if let Some(text) = basic(headers) {
        let text = text?;
        let (user, password) = text.split_once(':').unwrap_or((&text, ""));
        let key = if user.is_empty() { password } else { user };
        if !key.is_empty() {
            return Ok(key.to_owned());
        }
        return Err("Basic credentials must carry the key as user name".into());
    }
    crate::grpc::auth::bearer(Some(value))
        .map(str::to_owned)
        .map_err(|status| status.message().to_owned())
}

/// Admits a request with a current API key or access token, and hands the
/// routes who called; refusals are logged with the client's address.
async fn authenticate(
    axum::extract::State(ctx): axum::extract::State<Ctx>,
    mut request: Request,
    next: Next,
) -> Response {
    let state = &ctx.state;
    let caller = match credential(request.headers()) {
        Err(why) => Err(why),
        Ok(text) if crate::state::oauth::is_oauth_token(&text) => state
            .authenticate_oauth_token(&text)
            .await
            .map(Caller::Token)
            .map_err(|e| e.to_string()),
        Ok(text) => state
            .authenticate_api_key(&text)
            .await
            .map(|_| Caller::ApiKey)
            .map_err(|e| e.to_string()),
    };
    match caller {
        Ok(caller) => {
            request.extensions_mut().insert(caller);
            next.run(request).await
        }
        Err(why) => {
            super::log_refused(&request, &why);
            let mut response = ApiError::new(StatusCode::UNAUTHORIZED, why).into_response();
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Basic realm=\"headway\""),
            );
            response
        }
    }
}

async fn not_found() -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "no such endpoint in headway's /api/v2".to_owned(),
    )
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "headway's /api/v2 does not serve this method here".to_owned(),
    )
}

/// An error as Tailscale's API writes it: `{"message", "data", "status"}`.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    message: String,
}

impl ApiError {
    fn new(status: StatusCode, message: String) -> ApiError {
        ApiError { status, message }
    }

    fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, message.into())
    }
}

impl From<tonic::Status> for ApiError {
    fn from(status: tonic::Status) -> ApiError {
        let code = super::v1::http_status(status.code());
        ApiError::new(code, status.message().to_owned())
    }
}

impl From<crate::state::Error> for ApiError {
    fn from(err: crate::state::Error) -> ApiError {
        crate::grpc::convert::status(err).into()
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({
            "message": self.message,
            "data": null,
            "status": self.status.as_u16(),
        });
        (self.status, axum::Json(body)).into_response()
    }
}

type Answer<T> = Result<T, ApiError>;

/// `{tailnet}` must be `-` (the tailnet of the credential) or the server's
/// own name for it; headway serves one tailnet.
async fn check_tailnet(
    axum::extract::State(ctx): axum::extract::State<Ctx>,
    params: axum::extract::RawPathParams,
    request: Request,
    next: Next,
) -> Response {
    let tailnet = params
        .iter()
        .find(|(name, _)| *name == "tailnet")
        .map_or("-", |(_, value)| value);
    let base = ctx.tailnet.base_domain.as_str();
    if tailnet == "-" || (!base.is_empty() && tailnet == base) {
        next.run(request).await
    } else {
        ApiError::new(
            StatusCode::NOT_FOUND,
            format!("tailnet {tailnet:?} not found: headway serves one tailnet, named \"-\""),
        )
        .into_response()
    }
}

/// A JSON body, with a 400 that names what is wrong.
fn json_body<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("invalid JSON body: {e}")))
}

/// An RFC 3339 time as Tailscale writes it (seconds, `Z`).
fn time(t: crate::types::Timestamp) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// Tailscale's zero time, for times that are not set.
const ZERO_TIME: &str = "0001-01-01T00:00:00Z";
